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


async def test_a_queued_callback_is_cancelled_and_then_never_placed(api: Api) -> None:
    from sqlalchemy import update

    from cti.callbacks import CALLBACKS
    from cti.web.keys import CALLBACKS_KEY

    desk = api.client.server.app[CALLBACKS_KEY]  # type: ignore[union-attr]
    status, made = await api.call("POST", "/api/v1/callbacks",
                                  json={"queue": "support", "phone": "+4930123456"})
    assert status == 201
    status, gone = await api.call("POST", f"/api/v1/callbacks/{made['id']}/cancel",
                                  json={"reason": "the customer called in"})
    assert status == 200, gone
    assert gone["state"] == "cancelled" and gone["finished_at"]
    assert gone["last_result"] == "cancelled: the customer called in"
    assert [h["result"] for h in gone["history"]] == ["cancelled: the customer called in"]
    # no node takes it: not due, and a claim finds it gone
    assert made["id"] not in [r["id"] for r in await desk.store.due()]
    assert await desk.store.claim(made["id"], "node-a", "agent-1") == "taken"
    status, err = await api.call("POST", f"/api/v1/callbacks/{made['id']}/cancel")  # again, no body
    assert status == 409 and err["error"]["field"] == "state" and err["error"]["state"] == "cancelled"

    # one being offered to an agent or dialled is the placing node's: 409 says which
    status, busy = await api.call("POST", "/api/v1/callbacks",
                                  json={"queue": "support", "phone": "+4930123457"})
    assert status == 201
    for state, words in (("offering", "an agent is being offered it now"),
                         ("dialing", "the customer is being called now")):
        await desk.store.db.run_write(lambda conn, s=state: conn.execute(
            update(CALLBACKS).where(CALLBACKS.c.id == busy["id"]).values(state=s, node="node-a")))
        status, err = await api.call("POST", f"/api/v1/callbacks/{busy['id']}/cancel")
        assert status == 409 and err["error"]["state"] == state and words in err["error"]["message"], err
        status, row = await api.call("GET", f"/api/v1/callbacks/{busy['id']}")
        assert row["state"] == state  # untouched


async def test_bad_cancel_requests_name_the_field(api: Api) -> None:
    status, made = await api.call("POST", "/api/v1/callbacks",
                                  json={"queue": "support", "phone": "+4930123456"})
    assert status == 201
    cases = [(f"/api/v1/callbacks/{NOBODY}/cancel", None, 404, "id"),
             ("/api/v1/callbacks/not-an-id/cancel", None, 404, "id"),
             (f"/api/v1/callbacks/{made['id']}/cancel", {"reason": 7}, 422, "reason"),
             (f"/api/v1/callbacks/{made['id']}/cancel", {"why": "x"}, 422, "why"),
             (f"/api/v1/callbacks/{made['id']}/cancel", ["reason"], 422, None)]
    for path, body, want, field in cases:
        status, err = await api.call("POST", path, json=body)
        assert status == want and (field is None or err["error"]["field"] == field), (path, body, err)
    status, _ = await api.call("POST", f"/api/v1/callbacks/{made['id']}/cancel", headers={})
    assert status == 401
    status, row = await api.call("GET", f"/api/v1/callbacks/{made['id']}")
    assert row["state"] == "queued"  # none of those cancelled it
