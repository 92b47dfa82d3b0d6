# ruff: noqa: F811  (the `target` fixture is imported from tests.cti.conftest and taken as an argument)
"""Agents through the real HTTP server on SQLite and PostgreSQL: admin API, sign-in, websocket,
queue routing with screen pops, notes, search, the admin page."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime

from sqlalchemy import select

from cti.agents import Agent
from cti.history import CallHistory
from tests.agents_helpers import (
    BEARER,
    PASSWORD,
    desk_of,
    inbound_call,
    make_agent,
    next_of,
    running_app,
    seed_customer,
    sign_in,
)
from tests.cti.conftest import API_KEY, Target, target  # noqa: F401  (fixture: SQLite and PostgreSQL)
from tests.desk_fakes import FakeConnector


async def test_agents_are_created_with_an_api_key_and_no_plaintext_password(target: Target) -> None:
    async with running_app(target) as client:
        body = {"id": "ann", "name": "Ann", "sip_uri": "sip:ann@pbx", "skills": ["support"],
                "password": PASSWORD}
        assert (await client.post("/api/v1/agents", json=body)).status == 401
        assert (await client.post("/api/v1/agents", json=body,
                                  headers={"Authorization": "Bearer wrong-key-0000000000"})).status == 401
        resp = await client.post("/api/v1/agents", json=body, headers=BEARER)
        assert resp.status == 201
        created = await resp.json()
        assert created["state"] == "away" and created["skills"] == ["support"]
        assert "password" not in str(created)
        assert (await client.post("/api/v1/agents", json=body, headers=BEARER)).status == 409
        bad = await client.post("/api/v1/agents", json={**body, "id": "bob", "sip_uri": "http://x"},
                                headers=BEARER)
        assert bad.status == 422 and (await bad.json())["error"]["field"] == "sip_uri"
        short = await client.post("/api/v1/agents", json={**body, "id": "bob", "password": "short"},
                                  headers=BEARER)
        assert short.status == 422 and (await short.json())["error"]["field"] == "password"
        listed = await (await client.get("/api/v1/agents", headers=BEARER)).json()
        assert [a["id"] for a in listed["agents"]] == ["ann"]
        async with desk_of(client).agents.db.read() as s:
            stored = (await s.execute(select(Agent.password_hash))).scalar()
        assert stored is not None and stored.startswith("scrypt$") and PASSWORD not in stored
        patched = await client.patch("/api/v1/agents/ann", json={"skills": ["support", "billing"],
                                                                 "state": "available"}, headers=BEARER)
        assert patched.status == 200
        assert (await patched.json())["state"] == "available"
        assert desk_of(client).engine.agents["ann"].skills == {"support", "billing"}
        assert (await client.patch("/api/v1/agents/nobody", json={"name": "x"}, headers=BEARER)).status == 404


async def test_the_agent_page_needs_a_sign_in_with_a_strict_http_only_cookie(target: Target) -> None:
    async with running_app(target) as client:
        await make_agent(client, "ann", ["support"])
        page = await client.get("/agent", allow_redirects=False)
        assert page.status == 302 and page.headers["Location"] == "/agent/login"
        wrong = await sign_in(client, "ann", "not the password")
        assert wrong.status == 302 and wrong.headers["Location"].endswith("failed=1")
        assert (await sign_in(client, "nobody")).headers["Location"].endswith("failed=1")
        ok = await sign_in(client, "ann")
        assert ok.status == 302 and ok.headers["Location"] == "/agent"
        cookie = ok.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
        page = await client.get("/agent")
        assert page.status == 200 and "Agent desk" in await page.text()
        assert "script-src 'self'" in page.headers["Content-Security-Policy"]
        me = await (await client.get("/agent/api/me")).json()
        assert me["agent"]["id"] == "ann"
        await client.post("/agent/logout", allow_redirects=False)
        assert (await client.get("/agent/api/me")).status == 401


async def test_the_events_websocket_admits_the_agent_or_an_api_key_only(target: Target) -> None:
    async with running_app(target) as client:
        await make_agent(client, "ann", ["support"])
        await make_agent(client, "bob", ["support"])
        resp = await client.get("/api/v1/agents/ann/events")
        assert resp.status == 401
        await sign_in(client, "bob")
        assert (await client.get("/api/v1/agents/ann/events")).status == 401  # bob's cookie is not ann's
        async with client.ws_connect("/api/v1/agents/bob/events") as ws:
            hello = await next_of(ws, "hello")
            assert hello["agent"]["id"] == "bob"
            await ws.send_json({"type": "ping"})
            assert (await next_of(ws, "pong"))["type"] == "pong"
        client.session.cookie_jar.clear()
        async with client.ws_connect("/api/v1/agents/ann/events", headers=BEARER) as ws:
            await desk_of(client).publish_screen_pop("ann", {"call_id": "x1", "caller": {"number": "+1"}})
            pop = await next_of(ws, "screen_pop")
            assert pop["call_id"] == "x1" and pop["agent_id"] == "ann"
        assert (await client.get("/api/v1/agents/nobody/events", headers=BEARER)).status == 404


async def test_a_queued_call_pops_on_the_agents_screen_rings_out_to_the_next_and_takes_notes(
        target: Target) -> None:
    connector = FakeConnector({"bob": 0.05}, talk=None)  # ann lets it ring out
    async with running_app(target, connector=connector) as client:
        desk = desk_of(client)
        desk.engine.defaults = replace(desk.engine.defaults, ring_timeout=0.3)
        await seed_customer(client)
        await make_agent(client, "ann", ["support"], state="available")  # idle longest: offered first
        await make_agent(client, "bob", ["support"], state="available")
        await sign_in(client, "bob")
        async with client.ws_connect("/api/v1/agents/bob/events") as bob_ws, \
                client.ws_connect("/api/v1/agents/ann/events", headers=BEARER) as ann_ws:
            await next_of(bob_ws, "hello")
            call, interaction_id = await inbound_call(client, "call-1@test")
            routed = asyncio.ensure_future(desk.transfer_queue(call, "support"))
            missed = await next_of(ann_ws, "missed")
            assert missed["call_id"] == call.key and missed["state"] == "away"
            assert "did not answer within 0.3 s" in missed["message"] and "Away" in missed["message"]
            pop = await next_of(bob_ws, "screen_pop")
            while len(connector.connections) < 1:
                await asyncio.sleep(0.01)
            assert [d[1] for d in connector.dialled] == ["ann", "bob"]
            assert connector.dialled[0][2] == 0.3  # the queue's ring timeout reaches the connector
            assert not routed.done()  # the desk waits for the conversation itself
            states = {a["id"]: a["state"] for a in await desk.agents.list_agents()}
            assert states == {"ann": "away", "bob": "on_call"}  # RONA policy "away"

            # accept: only the call offered to (or taken by) this agent
            accepted = await client.post("/agent/api/accept", json={"call_id": call.key})
            assert accepted.status == 200 and (await accepted.json())["state"] == "on_call"
            other = await client.post("/agent/api/accept", json={"call_id": "not-this-one"})
            assert other.status == 409 and (await other.json())["error"]["field"] == "call_id"
            saved = await client.post("/agent/api/notes", json={
                "call_id": call.key, "text": "Refund sent again", "disposition": "resolved"})
            assert saved.status == 201, await saved.text()
            assert (await saved.json())["interaction_id"] == interaction_id
            # a new tab while talking: hello carries the call
            async with client.ws_connect("/api/v1/agents/bob/events") as tab:
                hello = await next_of(tab, "hello")
                assert hello["call"]["call_id"] == call.key
                assert hello["call"]["interaction_id"] == interaction_id
            connector.connections[0].finish("caller", 61.5)
            outcome = await asyncio.wait_for(routed, 5)
        assert outcome.ok and outcome.reason == "connected" and outcome.agent_id == "bob"
        assert outcome.offers == 2 and outcome.hangup_by == "caller" and outcome.talk_seconds == 61.5
        assert (await desk.agents.get_agent("bob"))["state"] == "wrap_up"  # type: ignore[index]
        assert pop["call_id"] == call.key and pop["sip_call_id"] == "call-1@test"
        assert pop["interaction_id"] == interaction_id
        assert pop["caller"]["number"] == "+4930123456" and pop["queue"] == "support"
        assert pop["found"] and pop["customer"]["name"] == "Anna Schmidt"
        assert pop["identified_by"] == "caller_id"
        assert pop["ivr"]["path"] == ["welcome", "menu", "support"]
        pin = {"node": "pin", "kind": "dtmf", "var": "pin", "value": "***", "status": "match"}
        assert pin in pop["ivr"]["inputs"]
        assert [s["text"] for s in pop["transcript"]] == ["Welcome", "I want my refund"]
        assert pop["last_by_channel"]["chat"]["summary"] == "Asked about the router refund"
        assert pop["last_by_channel"]["email"]["subject"] == "Invoice 4711"
        assert interaction_id not in [i["id"] for i in pop["recent_interactions"]]  # not this call itself

        # the call ends after the agent's note: the disposition stays, the end has its own field
        await CallHistory(desk.store).call_finished(interaction_id, ended_at=datetime.now(UTC),
                                                    ended="caller_hangup", ivr=None, recording=None,
                                                    transcript=[])
        detail = await (await client.get(f"/agent/api/interactions/{interaction_id}")).json()
        assert detail["disposition"] == "resolved" and detail["outcome"] == "caller_hangup"
        assert detail["summary"] == "Refund sent again"
        assert detail["agent"] == "bob" and detail["notes"][0]["text"] == "Refund sent again"
        api_doc = await (await client.get(f"/api/v1/interactions/{interaction_id}", headers=BEARER)).json()
        assert [n["text"] for n in api_doc["notes"]] == ["Refund sent again"]
        assert api_doc["notes"][0]["agent_id"] == "bob" and api_doc["notes"][0]["disposition"] == "resolved"
        bad = await client.post("/agent/api/notes", json={"call_id": "call-1@test"})
        assert bad.status == 422
        # wrap-up: a reload still shows the call the notes are for
        async with client.ws_connect("/api/v1/agents/bob/events") as tab:
            assert (await next_of(tab, "hello"))["call"]["call_id"] == call.key
        # ann is away because of the missed call: her page says why, even after a reload
        await sign_in(client, "ann")
        async with client.ws_connect("/api/v1/agents/ann/events") as tab:
            hello = await next_of(tab, "hello")
            assert hello["call"] is None and hello["missed"]["call_id"] == call.key
        assert (await client.post("/agent/api/accept", json={"call_id": call.key})).status == 409
        assert (await desk.agents.get_agent("ann"))["state"] == "away"  # type: ignore[index]


async def test_accepting_an_abandoned_call_answers_409_and_changes_nothing(target: Target) -> None:
    connector = FakeConnector({"ann": None})  # rings until the caller gives up
    async with running_app(target, connector=connector) as client:
        desk = desk_of(client)
        await make_agent(client, "ann", ["support"], state="available")
        await sign_in(client, "ann")
        async with client.ws_connect("/api/v1/agents/ann/events") as ws:
            await next_of(ws, "hello")
            call, _ = await inbound_call(client, "gone@test")
            routed = asyncio.ensure_future(desk.transfer_queue(call, "support"))
            pop = await next_of(ws, "screen_pop")
            async with client.ws_connect("/api/v1/agents/ann/events") as reload:  # reload while ringing
                hello = await next_of(reload, "hello")
                assert hello["agent"]["state"] == "ringing" and hello["call"]["call_id"] == pop["call_id"]
            call.hang_up()
            outcome = await asyncio.wait_for(routed, 5)
            assert outcome.reason == "abandoned" and outcome.offers == 1
        before = await desk.agents.get_agent("ann")
        assert before is not None and before["state"] == "available" and before["call_id"] is None
        late = await client.post("/agent/api/accept", json={"call_id": pop["call_id"]})
        assert late.status == 409
        assert await desk.agents.get_agent("ann") == before
        assert (await client.post("/agent/api/accept", json={"call_id": "never-was"})).status == 409
        assert (await client.post("/agent/api/accept", json={})).status == 422


async def test_the_pop_shows_the_customer_the_ivr_identified_not_the_phones_owner(target: Target) -> None:
    connector = FakeConnector({"ann": 0.0})
    async with running_app(target, connector=connector) as client:
        desk = desk_of(client)
        await seed_customer(client)  # Anna owns +4930123456
        made = await client.post("/api/v1/interactions", headers=BEARER, json={
            "channel": "email", "direction": "inbound", "started_at": "2026-11-20T10:00:00Z",
            "customer": {"account": "ACC-77", "name": "Bert Brecht"}, "subject": "Contract"})
        bert = (await made.json())["customer_id"]
        await make_agent(client, "ann", ["support"], state="available")
        async with client.ws_connect("/api/v1/agents/ann/events", headers=BEARER) as ws:
            await next_of(ws, "hello")
            # Bert calls from Anna's phone and types his account number in the IVR
            call, _ = await inbound_call(client, "acct@test", customer_id=bert, identified_by="account")
            outcome = await desk.transfer_queue(call, "support")
            pop = await next_of(ws, "screen_pop")
        assert outcome.ok and outcome.hangup_by == "agent"
        assert pop["customer"]["id"] == bert and pop["customer"]["name"] == "Bert Brecht"
        assert pop["identified_by"] == "account" and pop["found"]
        assert [i["subject"] for i in pop["recent_interactions"]] == ["Contract"]
        assert pop["caller"]["number"] == "+4930123456"


async def test_callers_wait_in_line_and_are_forgotten_when_they_hang_up(target: Target) -> None:
    connector = FakeConnector({"cara": 0.0}, talk=None)
    async with running_app(target, connector=connector) as client:
        desk = desk_of(client)
        await make_agent(client, "cara", ["sales"])  # away: nobody free
        first, _ = await inbound_call(client, "first@test", caller="+4930111")
        second, _ = await inbound_call(client, "second@test", caller="+4930222")
        t1 = asyncio.ensure_future(desk.route_to_queue(first, "sales"))
        for _ in range(50):
            await asyncio.sleep(0)
        t2 = asyncio.ensure_future(desk.route_to_queue(second, "sales"))
        while desk.engine.positions().get(second.key) != 2:
            await asyncio.sleep(0.01)
        assert desk.engine.positions()[first.key] == 1 and desk.engine.lengths()["sales"] == 2
        first.hang_up()
        gone = await asyncio.wait_for(t1, 5)
        assert not gone.ok and gone.reason == "abandoned"
        while desk.engine.positions().get(second.key) != 1:
            await asyncio.sleep(0.01)
        await sign_in(client, "cara")
        assert (await client.post("/agent/api/state", json={"state": "available"})).status == 200
        while not connector.connections:
            await asyncio.sleep(0.01)
        assert desk.engine.lengths()["sales"] == 0 and desk.engine.calls == {}
        connector.connections[0].finish("agent", 3.0)
        served = await asyncio.wait_for(t2, 5)
        assert served.ok and served.agent_id == "cara" and served.hangup_by == "agent"

        third, _ = await inbound_call(client, "third@test", caller="+4930333")
        late = await desk.route_to_queue(third, "sales", timeout=0)  # cara wraps up: overflow now
        assert not late.ok and late.reason == "timeout"
        nobody = await desk.route_to_queue(third, "no-such-skill")
        assert not nobody.ok and nobody.reason == "no_agents"
        service = (await (await client.get("/api/v1/queues", headers=BEARER)).json())["service"]["sales"]
        counts = (service["offered"], service["answered"], service["abandoned"], service["timed_out"])
        assert counts == (3, 1, 1, 1)


async def test_without_call_control_a_queue_transfer_fails_at_once(target: Target) -> None:
    async with running_app(target) as client:
        await make_agent(client, "ann", ["support"], state="available")
        call, _ = await inbound_call(client, "api-only@test")
        outcome = await desk_of(client).transfer_queue(call, "support")
        assert not outcome.ok and outcome.reason == "no_connector"
        assert (await desk_of(client).agents.get_agent("ann"))["state"] == "available"  # type: ignore[index]


async def test_agents_search_customers_and_open_any_timeline(target: Target) -> None:
    async with running_app(target) as client:
        customer_id, chat_id = await seed_customer(client)
        await make_agent(client, "ann", ["support"])
        assert (await client.get("/agent/api/customers?q=anna")).status == 401
        await sign_in(client, "ann")
        found = await (await client.get("/agent/api/customers", params={"q": "schmi"})).json()
        assert [c["id"] for c in found["customers"]] == [customer_id]
        by_mail = await (await client.get("/agent/api/customers", params={"q": "ANNA@EXAMPLE"})).json()
        assert [c["id"] for c in by_mail["customers"]] == [customer_id]
        none = await (await client.get("/agent/api/customers", params={"q": "100%_"})).json()
        assert none["customers"] == []
        timeline = await (await client.get(f"/agent/api/customers/{customer_id}")).json()
        assert [i["channel"] for i in timeline["interactions"]] == ["chat", "email"]
        chat = await (await client.get(f"/agent/api/interactions/{chat_id}")).json()
        assert chat["content"] == "Where is my refund?" and chat["notes"] == []


async def test_the_admin_page_shows_flows_live_calls_queues_and_agents(target: Target) -> None:
    async with running_app(target) as client:
        await make_agent(client, "ann", ["support"], state="available")
        page = await client.get("/admin", allow_redirects=False)
        assert page.status == 302 and page.headers["Location"] == "/admin/login"
        assert (await client.get("/admin/api/overview")).status == 401
        wrong = await client.post("/admin/login", data={"key": "nope"}, allow_redirects=False)
        assert wrong.headers["Location"].endswith("failed=1")
        ok = await client.post("/admin/login", data={"key": API_KEY}, allow_redirects=False)
        assert ok.status == 302 and "HttpOnly" in ok.headers["Set-Cookie"]
        assert (await client.get("/admin")).status == 200
        await inbound_call(client, "live@test")
        data = await (await client.get("/admin/api/overview")).json()
        main = next(f for f in data["flows"] if f["name"] == "main")
        assert main["valid"] and main["svg"].startswith("<svg") and main["nodes"] > 3
        assert [(c["call_id"], c["node"]) for c in data["calls"]] == [("live@test", "support")]
        assert data["agents"][0]["id"] == "ann" and data["agents"][0]["state"] == "available"
        client.session.cookie_jar.clear()
        with_key = await client.get("/admin/api/overview", headers=BEARER)
        assert with_key.status == 200
        queues = await (await client.get("/api/v1/queues", headers=BEARER)).json()
        assert queues["agents"][0]["state"] == "available"
