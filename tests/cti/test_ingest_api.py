"""POST /api/v1/interactions through the real HTTP server, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import func, select

from cti.models import Customer, Identity, Interaction
from tests.cti.conftest import MAX_BODY, Api

URL = "/api/v1/interactions"


def body(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "channel": "chat", "direction": "inbound", "started_at": "2024-05-01T10:00:00Z",
        "customer": {"phone": "+49 30 1234567", "name": "Anna Schmidt"}, "content": "Where is my order?",
    }
    base.update(overrides)
    return base


async def counts(api: Api) -> tuple[int, int, int]:
    async with api.store.db.read() as s:
        return (
            (await s.execute(select(func.count()).select_from(Customer))).scalar_one(),
            (await s.execute(select(func.count()).select_from(Identity))).scalar_one(),
            (await s.execute(select(func.count()).select_from(Interaction))).scalar_one(),
        )


async def test_several_channels_land_on_one_customer_by_phone_and_by_email(api: Api) -> None:
    st, chat = await api.call("POST", URL, json=body())
    assert st == 201 and chat["created"] and chat["customer_created"]
    # The same person writes an email: known by email only after a later channel links both.
    st, call = await api.call("POST", URL, json=body(
        channel="voice", started_at="2024-05-02T09:00:00+02:00",
        customer={"phone": "tel:030-1234567", "email": "Anna@Example.com"}))
    assert st == 201 and call["customer_id"] == chat["customer_id"] and not call["customer_created"]
    st, mail = await api.call("POST", URL, json=body(
        channel="email", started_at="2024-05-03T08:00:00Z", subject="Invoice",
        customer={"email": "anna@example.COM"}))
    assert st == 201 and mail["customer_id"] == chat["customer_id"]
    st, sms = await api.call("POST", URL, json=body(
        channel="sms", direction="outbound", started_at="2024-05-04T08:00:00Z",
        customer={"phone": '"Anna" <sip:0301234567@pbx.local>'}))
    assert st == 201 and sms["customer_id"] == chat["customer_id"]

    st, customer = await api.call("GET", f"/api/v1/customers/{chat['customer_id']}")
    assert st == 200
    assert customer["name"] == "Anna Schmidt"
    assert customer["phones"] == ["+49301234567"] and customer["emails"] == ["anna@example.com"]
    st, page = await api.call("GET", f"/api/v1/customers/{chat['customer_id']}/interactions")
    assert [i["channel"] for i in page["interactions"]] == ["sms", "email", "voice", "chat"]
    assert page["interactions"][2]["started_at"] == "2024-05-02T07:00:00Z"
    assert await counts(api) == (1, 2, 4)


async def test_unknown_identity_creates_a_new_customer(api: Api) -> None:
    _, first = await api.call("POST", URL, json=body())
    st, other = await api.call("POST", URL, json=body(customer={"account": "A-77", "name": "Bob"}))
    assert st == 201 and other["customer_created"] and other["customer_id"] != first["customer_id"]


async def test_retry_with_idempotency_key_returns_the_first_result(api: Api) -> None:
    st1, first = await api.call("POST", URL, json=body(idempotency_key="chat-42"))
    st2, again = await api.call("POST", URL, json=body(idempotency_key="chat-42", content="changed"))
    assert (st1, st2) == (201, 200)
    assert again["interaction_id"] == first["interaction_id"] and again["customer_id"] == first["customer_id"]
    assert again["created"] is False
    # The channel's own message id works the same way, scoped to the channel.
    _, m1 = await api.call("POST", URL, json=body(channel="sms", message_id="SM123"))
    st, m2 = await api.call("POST", URL, json=body(channel="sms", message_id="SM123"))
    assert st == 200 and m2["interaction_id"] == m1["interaction_id"]
    st, m3 = await api.call("POST", URL, json=body(channel="chat", message_id="SM123"))
    assert st == 201 and m3["interaction_id"] != m1["interaction_id"]
    assert await counts(api) == (1, 1, 3)
    _, detail = await api.call("GET", f"{URL}/{first['interaction_id']}")
    assert detail["content"] == "Where is my order?"


async def test_concurrent_retries_store_one_interaction_and_one_customer(api: Api) -> None:
    # A brand-new caller and one key: every racer must end on the same customer and interaction.
    payload = body(idempotency_key="race-1", customer={"email": "new@example.com", "phone": "+15550001111"})
    results = await asyncio.gather(*(api.call("POST", URL, json=payload) for _ in range(12)))
    statuses = sorted(st for st, _ in results)
    assert statuses == [200] * 11 + [201]
    assert len({r["interaction_id"] for _, r in results}) == 1
    assert len({r["customer_id"] for _, r in results}) == 1
    assert await counts(api) == (1, 2, 1)


async def test_concurrent_new_customer_without_key_is_not_duplicated(api: Api) -> None:
    payload = body(customer={"phone": "+15550002222"})
    results = await asyncio.gather(*(api.call("POST", URL, json=payload) for _ in range(8)))
    assert all(st == 201 for st, _ in results)
    assert len({r["customer_id"] for _, r in results}) == 1
    assert await counts(api) == (1, 1, 8)


async def test_identities_of_two_customers_are_a_conflict_and_nothing_is_written(api: Api) -> None:
    _, anna = await api.call("POST", URL, json=body(customer={"phone": "+4930111111"}))
    _, bob = await api.call("POST", URL, json=body(customer={"email": "bob@example.com"}))
    before = await counts(api)
    st, err = await api.call("POST", URL, json=body(
        idempotency_key="c-1", customer={"phone": "+4930111111", "email": "bob@example.com",
                                         "account": "NEW-1"}))
    assert st == 409
    assert sorted(err["error"]["customer_ids"]) == sorted([anna["customer_id"], bob["customer_id"]])
    assert err["error"]["field"] in ("phone", "email")
    assert await counts(api) == before
    # The key was not consumed by the failed attempt.
    st, ok = await api.call("POST", URL, json=body(idempotency_key="c-1", customer={"account": "NEW-1"}))
    assert st == 201 and ok["customer_id"] not in err["error"]["customer_ids"]


@pytest.mark.parametrize(
    ("payload", "status", "field"),
    [
        ({"channel": "chat"}, 422, "direction"),
        (body(channel="fax"), 422, "channel"),
        (body(channel=7), 422, "channel"),
        (body(direction="sideways"), 422, "direction"),
        (body(started_at="yesterday"), 422, "started_at"),
        (body(started_at="2024-05-01T10:00:00"), 422, "started_at"),
        (body(started_at=1714557600), 422, "started_at"),
        (body(ended_at="2024-04-01T10:00:00Z"), 422, "ended_at"),
        (body(customer={"name": "Nobody"}), 422, "customer"),
        (body(customer={"phone": "call me maybe"}), 422, "customer.phone"),
        (body(customer={"email": ["ok@example.com", 5]}), 422, "customer.email[1]"),
        (body(customer={"phone": "+4930111", "shoe": 44}), 422, "customer.shoe"),
        (body(customer="+4930111"), 422, "customer"),
        (body(metadata=[1, 2]), 422, "metadata"),
        (body(content="a\x00b"), 422, "content"),
        (body(subject="x" * 501), 422, "subject"),
        (body(colour="red"), 422, "colour"),
        (body(transcript=[{"start": 0, "end": 1, "speaker": "caller", "kind": "mime"}]), 422,
         "transcript[0].kind"),
        (body(transcript=[{"start": 2, "end": 1, "speaker": "caller", "kind": "speech"}]), 422,
         "transcript[0].end"),
        ([body()], 422, "body"),
        (body(queue="support queue"), 422, "queue"),
        (body(queue="x" * 65), 422, "queue"),
        (body(status="done"), 422, "status"),
    ],
)
async def test_validation_errors_name_the_field(api: Api, payload: Any, status: int, field: str) -> None:
    st, err = await api.call("POST", URL, json=payload)
    assert (st, err["error"]["field"], err["error"]["status"]) == (status, field, status)
    assert err["error"]["message"]
    assert await counts(api) == (0, 0, 0)


async def test_queue_and_status_reach_the_timeline_and_the_lookup(api: Api) -> None:
    """A chat still open, handled by queue `billing`: what a caller's flow needs to continue it."""
    st, chat = await api.call("POST", URL, json=body(status="open", queue="billing", agent="ann",
                                                     subject="a late refund"))
    assert st == 201
    st, _done = await api.call("POST", URL, json=body(started_at="2024-04-01T10:00:00Z"))
    assert st == 201
    st, page = await api.call("GET", f"/api/v1/customers/{chat['customer_id']}/interactions")
    assert [(i["status"], i["queue"]) for i in page["interactions"]] == [("open", "billing"),
                                                                        ("completed", None)]
    st, found = await api.call("GET", "/api/v1/lookup", params={"phone": "+49 30 1234567"})
    assert st == 200 and found["recent_interactions"][0]["queue"] == "billing"
    assert found["recent_interactions"][0]["status"] == "open"
    st, one = await api.call("GET", f"{URL}/{chat['interaction_id']}")
    assert st == 200 and one["queue"] == "billing" and one["agent"] == "ann"


async def test_malformed_json_and_oversized_bodies(api: Api) -> None:
    st, err = await api.call("POST", URL, data=b'{"channel": "chat",', headers={
        **api.headers, "Content-Type": "application/json"})
    assert st == 400 and err["error"]["field"] == "body"
    st, err = await api.call("POST", URL, data=b"\xff\xfe", headers=api.headers)
    assert st == 400
    st, err = await api.call("POST", URL, json=body(content="x" * (MAX_BODY + 1)))
    assert st == 413 and err["error"]["status"] == 413
    assert await counts(api) == (0, 0, 0)


async def test_auth_is_required_on_every_route_but_the_openapi_document(api: Api) -> None:
    for method, path in [("POST", URL), ("GET", f"{URL}/x"), ("GET", "/api/v1/customers?phone=1"),
                         ("GET", "/api/v1/lookup?phone=1"), ("GET", "/api/v1/nothing-here")]:
        st, err = await api.call(method, path, json=body(), headers={})
        assert st == 401 and err["error"]["field"] == "Authorization", (method, path)
        st, _ = await api.call(method, path, json=body(), headers={"Authorization": "Bearer wrong-key"})
        assert st == 401
        st, _ = await api.call(method, path, json=body(), headers={"Authorization": api.headers[
            "Authorization"].replace("Bearer", "Basic")})
        assert st == 401
    assert await counts(api) == (0, 0, 0)
    st, doc = await api.call("GET", "/api/v1/openapi.json", headers={})
    assert st == 200 and doc["openapi"].startswith("3.")
