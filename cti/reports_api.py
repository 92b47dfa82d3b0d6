"""Finding calls, the CDR, reports, and data rights, under /api/v1 (Bearer API key).

- GET /interactions?phone=&customer_id=&channel=&call_id=&since=&until=&limit=&cursor=
- GET /reports/calls.csv?since=&until=   the CDR (cti.cdr.CDR_COLUMNS), oldest first
- GET /reports/summary?since=&until=     totals, per day, per flow, per flow node (JSON)
- GET /customers/{id}/export             everything held about the customer
- DELETE /customers/{id}                 erase it (rows and recording files), audit row kept
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from datetime import UTC, datetime, timedelta

from aiohttp import web

from cti import cdr, rights
from cti.http import CONFIG_KEY, PREFIX, STORE_KEY, _int_param, _path_id, json_response
from cti.identity import IdentityError, normalize_phone
from cti.store import decode_cursor
from cti.validation import ApiError, invalid

# RFC 3339 date-time (what OpenAPI's format: date-time means): a time zone is required.
_RFC3339 = re.compile(r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
SEARCH_PARAMS = ("phone", "customer_id", "channel", "call_id", "since", "until", "limit", "cursor")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def parse_time(key: str, raw: str) -> datetime:
    m = _RFC3339.match(raw)
    if not m:
        raise invalid(key, "must be an RFC 3339 date-time with a time zone, e.g. 2026-01-31T00:00:00Z")
    year, month, day, hour, minute, second = (int(m.group(i)) for i in range(1, 7))
    zone = m.group(8).upper()
    try:
        offset = timedelta(0) if zone == "Z" else (
            (1 if zone[0] == "+" else -1) * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6])))
        micro = int((m.group(7) or ".0")[1:7].ljust(6, "0"))
        local = datetime(year, month, day, hour, minute, min(second, 59), micro)
    except ValueError as exc:
        raise invalid(key, f"not a valid date-time: {exc}") from None
    if offset >= timedelta(hours=24) or offset <= timedelta(hours=-24):
        raise invalid(key, "time zone offset out of range")
    try:
        return (local - offset).replace(tzinfo=UTC)
    except OverflowError:  # year 1 minus an offset, or year 9999 plus one: the ends of time
        return datetime.min.replace(tzinfo=UTC) if offset > timedelta(0) else datetime.max.replace(tzinfo=UTC)


def _range(request: web.Request, allowed: tuple[str, ...]) -> tuple[datetime | None, datetime | None]:
    for key in request.query:
        if key not in allowed:
            raise invalid(key, f"unknown query parameter (use {', '.join(allowed)})")
    since = parse_time("since", request.query["since"]) if "since" in request.query else None
    until = parse_time("until", request.query["until"]) if "until" in request.query else None
    if since is not None and until is not None and until < since:
        raise invalid("until", "must not be before since")
    return since, until


def _one(request: web.Request, key: str, limit: int = 300) -> str | None:
    values = request.query.getall(key, [])
    if not values:
        return None
    if len(values) > 1:
        raise invalid(key, "give it once")
    value = values[0]
    if not value or "\x00" in value or len(value) > limit:
        raise invalid(key, f"must be 1 to {limit} characters without NUL")
    return value


async def list_interactions(request: web.Request) -> web.Response:
    store = request.app[STORE_KEY]
    since, until = _range(request, SEARCH_PARAMS)
    limit = _int_param(request, "limit", 50, 1, 200)
    raw_cursor = _one(request, "cursor", 200)
    try:
        cursor = decode_cursor(raw_cursor) if raw_cursor else None
    except ValueError as exc:
        raise invalid("cursor", str(exc)) from None
    channel = _one(request, "channel", 40)
    if channel is not None and channel not in store.channels:
        raise invalid("channel", f"must be one of {', '.join(store.channels)}")
    customer_id = _one(request, "customer_id", 36)
    if customer_id is not None and not _UUID.match(customer_id):
        raise invalid("customer_id", "must be a customer id (UUID)")
    customer_ids: tuple[str, ...] | None = (customer_id.lower(),) if customer_id else None
    phone = _one(request, "phone", 40)
    if phone is not None:
        try:
            e164 = normalize_phone(phone, store.default_country)
        except IdentityError as exc:
            raise invalid("phone", str(exc)) from None
        owners = await store.db.run_read(cdr.customers_with_phone, e164)
        customer_ids = owners if customer_ids is None else tuple(set(owners) & set(customer_ids))
    filters = cdr.Filters(customer_ids=customer_ids, channel=channel, call_id=_one(request, "call_id"),
                          since=since, until=until)
    items, next_cursor = await store.db.run_read(cdr.search, filters, limit, cursor)
    return json_response({"interactions": items, "next_cursor": next_cursor})


async def _calls(request: web.Request) -> tuple[list[cdr.CallRow], bool]:
    since, until = _range(request, ("since", "until"))
    return await request.app[STORE_KEY].db.run_read(cdr.calls_between, since, until)


async def calls_csv(request: web.Request) -> web.Response:
    rows, cut = await _calls(request)
    body = await asyncio.to_thread(cdr.cdr_csv, rows)
    headers = {"Content-Disposition": 'attachment; filename="calls.csv"'}
    if cut:
        headers["X-Truncated"] = f"more than {cdr.MAX_REPORT_ROWS} calls; give a shorter range"
    return web.Response(text=body, content_type="text/csv", charset="utf-8", headers=headers)


async def summary(request: web.Request) -> web.Response:
    rows, cut = await _calls(request)
    data = await asyncio.to_thread(cdr.report, rows)
    return json_response({**data, "truncated": cut})


async def export_customer(request: web.Request) -> web.Response:
    customer_id = _path_id(request, "customer")
    found = await request.app[STORE_KEY].db.run_read(rights.export, customer_id)
    if found is None:
        raise ApiError(404, "no such customer", "id")
    return json_response(found, headers={
        "Content-Disposition": f'attachment; filename="customer-{customer_id}.json"'})


def actor_of(request: web.Request) -> str:
    """Who is asking, without the secret: the first 12 hex digits of the API key's SHA-256."""
    token = request.headers.get("Authorization", "").partition(" ")[2].strip()
    if token:
        return "api-key:" + hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()[:12]
    return "admin-session"


async def delete_customer(request: web.Request) -> web.Response:
    customer_id = _path_id(request, "customer")
    store = request.app[STORE_KEY]
    deleted = await store.db.run_write(rights.delete_customer, customer_id, actor_of(request))
    if deleted is None:
        raise ApiError(404, "no such customer", "id")
    removed, kept = await asyncio.to_thread(rights.remove_recordings, deleted.recordings,
                                            request.app[CONFIG_KEY].ivr.recordings)
    return json_response({"deleted": customer_id, "interactions": deleted.interactions,
                          "segments": deleted.segments, "notes": deleted.notes,
                          "identities": deleted.identities, "recordings_removed": len(removed),
                          "recordings_not_found": len(kept)})


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get(f"{PREFIX}/interactions", list_interactions)
    r.add_get(f"{PREFIX}/reports/calls.csv", calls_csv)
    r.add_get(f"{PREFIX}/reports/summary", summary)
    r.add_get(f"{PREFIX}/customers/{{id}}/export", export_customer)
    r.add_delete(f"{PREFIX}/customers/{{id}}", delete_customer)
