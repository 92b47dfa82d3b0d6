"""CTI lookup: from a caller ID or an account number to the customer and their recent history.

The IVR's lookup action and the agent screen pop both call `lookup`; the IVR receives it as a
`CustomerLookup` callable taking the keywords `phone=` and/or `account=`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from cti.identity import IdentityError, normalize_phone, normalize_token
from cti.store import CustomerStore

CustomerLookup = Callable[..., Awaitable[dict[str, Any]]]

_RECENT_FIELDS = ("id", "channel", "direction", "status", "started_at", "ended_at", "agent", "subject",
                  "summary", "disposition", "queue")


def empty_result() -> dict[str, Any]:
    return {"found": False, "customer": None, "attributes": {}, "recent_interactions": []}


async def lookup(store: CustomerStore, *, phone: str | None = None, account: str | None = None,
                 customer_id: str | None = None, recent: int = 10) -> dict[str, Any]:
    """The customer named by `customer_id` (one already identified, e.g. by the IVR), `phone`
    (any caller-ID form) or `account`, tried in that order.

    Unknown or unparsable callers (withheld numbers, "anonymous") give the empty result,
    never an exception: the IVR must go on with the call either way.
    """
    found = None
    if customer_id:
        customer = await store.get_customer(customer_id)
        if customer is not None:
            found = (customer, (await store.timeline(customer_id, limit=recent))[0] if recent > 0 else [])
    if found is None and phone:
        try:
            found = await store.profile("phone", normalize_phone(phone, store.default_country), recent)
        except IdentityError:
            found = None
    if found is None and account:
        try:
            found = await store.profile("account", normalize_token(account, "account"), recent)
        except IdentityError:
            found = None
    if found is None:
        return empty_result()
    customer, items = found
    return {
        "found": True,
        "customer": customer,
        "attributes": dict(customer["attributes"]),
        "recent_interactions": [{k: item[k] for k in _RECENT_FIELDS} for item in items],
    }


def make_lookup(store: CustomerStore, recent: int = 10) -> CustomerLookup:
    """A `CustomerLookup` bound to a store, for handing to the IVR."""

    async def bound(*, phone: str | None = None, account: str | None = None) -> dict[str, Any]:
        return await lookup(store, phone=phone, account=account, recent=recent)

    return bound
