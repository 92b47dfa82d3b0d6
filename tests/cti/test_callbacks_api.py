"""POST/GET /api/v1/callbacks: another channel (a chat bot's "call me") asks for a callback; bad
input gets a 4xx naming the field; the same idempotency key gives the same callback."""

from __future__ import annotations

from tests.cti.conftest import Api

NOBODY = "00000000-0000-4000-8000-000000000000"


async def test_a_chat_asks_for_a_callback_for_a_known_customer(api: Api) -> None:
    status, customer = await api.call("POST", "/api/v1/customers",
                                      json={"name": "Dana Doe", "phone": "+49 30 1234567"})
    assert status == 201
    body = {"customer_id": customer["id"], "queue": "support", "reason": "invoice question",
            "earliest": "2030-01-02T09:30:00+01:00", "channel": "chat", "idempotency_key": "chat-77"}
    status, made = await api.call("POST", "/api/v1/callbacks", json=body)
    assert status == 201, made
    assert made["number"] == "+49301234567" and made["name"] == "Dana Doe"  # the customer's phone
    assert made["state"] == "queued" and made["channel"] == "chat" and made["attempts"] == 0
    assert made["earliest"].startswith("2030-01-02T08:30:00")
    status, again = await api.call("POST", "/api/v1/callbacks", json=body)
    assert status == 200 and again["id"] == made["id"]  # the retry got the same one
    status, listed = await api.call("GET", "/api/v1/callbacks",
                                    params={"state": "queued", "queue": "support"})
    assert status == 200 and [c["id"] for c in listed["callbacks"]] == [made["id"]]
    status, one = await api.call("GET", f"/api/v1/callbacks/{made['id']}")
    assert status == 200 and one["reason"] == "invoice question"


async def test_bad_callback_requests_name_the_field(api: Api) -> None:
    cases = [({"phone": "+4930123456"}, 422, "queue"),
             ({"queue": "support"}, 422, "phone"),
             ({"queue": "sup port", "phone": "+4930123456"}, 422, "queue"),
             ({"queue": "support", "phone": "12"}, 422, "phone"),
             ({"queue": "support", "phone": "+4930123456", "earliest": "tomorrow"}, 422, "earliest"),
             ({"queue": "support", "phone": "+4930123456", "colour": "red"}, 422, "colour"),
             ({"queue": "support", "customer_id": NOBODY}, 404, "customer_id")]
    for body, want, field in cases:
        status, err = await api.call("POST", "/api/v1/callbacks", json=body)
        assert (status, (err.get("error") or {}).get("field")) == (want, field), (body, err)
    status, err = await api.call("GET", "/api/v1/callbacks", params={"state": "lost"})
    assert status == 422 and err["error"]["field"] == "state"
    status, err = await api.call("GET", "/api/v1/callbacks/00000000-0000-4000-8000-000000000000")
    assert status == 404
    status, _ = await api.call("GET", "/api/v1/callbacks", headers={})
    assert status == 401
