"""Shared helpers for the agent-side tests: a running API app, agents made through the API, calls."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient, TestServer

from cti.http import build_api
from cti.routing import AgentDesk
from cti.web import DESK_KEY
from tests.cti.conftest import API_KEY, Target, make_config
from voice.callcontrol.call import Call, CallInfo, TranscriptSegment
from voice.callcontrol.fake import FakeMedia, FakeSignalling

BEARER = {"Authorization": f"Bearer {API_KEY}"}
PASSWORD = "correct horse battery"


@asynccontextmanager
async def running_app(target: Target, **config: Any) -> AsyncIterator[TestClient[Any, Any]]:
    app = build_api(make_config(target.url), schema=target.schema)
    client = TestClient(TestServer(app, host="127.0.0.1", port=0))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()


def desk_of(client: TestClient[Any, Any]) -> AgentDesk:
    return client.server.app[DESK_KEY]  # type: ignore[union-attr]


async def make_agent(client: TestClient[Any, Any], agent_id: str, skills: list[str],
                     state: str | None = None) -> dict[str, Any]:
    resp = await client.post("/api/v1/agents", headers=BEARER, json={
        "id": agent_id, "name": agent_id.title(), "sip_uri": f"sip:{agent_id}@127.0.0.1:5099",
        "skills": skills, "password": PASSWORD})
    assert resp.status == 201, await resp.text()
    if state:
        resp = await client.patch(f"/api/v1/agents/{agent_id}", headers=BEARER, json={"state": state})
        assert resp.status == 200, await resp.text()
    agent: dict[str, Any] = await resp.json()
    return agent


async def sign_in(client: TestClient[Any, Any], agent_id: str,
                  password: str = PASSWORD) -> aiohttp.ClientResponse:
    return await client.post("/agent/login", data={"agent": agent_id, "password": password},
                             allow_redirects=False)


async def seed_customer(client: TestClient[Any, Any], phone: str = "+4930123456") -> tuple[str, str]:
    """Anna, with a chat yesterday and an email last week; returns (customer id, chat interaction id)."""
    now = datetime.now(UTC)
    chat = await client.post("/api/v1/interactions", headers=BEARER, json={
        "channel": "chat", "direction": "inbound", "started_at": (now - timedelta(days=1)).isoformat(),
        "customer": {"phone": phone, "name": "Anna Schmidt", "email": "anna@example.org"},
        "summary": "Asked about the router refund", "content": "Where is my refund?"})
    assert chat.status == 201, await chat.text()
    body = await chat.json()
    mail = await client.post("/api/v1/interactions", headers=BEARER, json={
        "channel": "email", "direction": "inbound", "started_at": (now - timedelta(days=7)).isoformat(),
        "customer": {"email": "anna@example.org"}, "subject": "Invoice 4711", "summary": "Invoice question"})
    assert mail.status == 201, await mail.text()
    return body["customer_id"], body["interaction_id"]


async def inbound_call(client: TestClient[Any, Any], call_id: str,
                       caller: str = "+4930123456") -> tuple[Call, str]:
    """A Call as the IVR sees it, with its interaction written the way the service writes it."""
    from cti.history import CallHistory

    desk = desk_of(client)
    info = CallInfo(call_id=call_id, caller=caller, caller_name=None, dialled="100", remote="127.0.0.1:5060")
    call = Call(info, FakeMedia(), FakeSignalling())
    interaction_id = await CallHistory(desk.store).call_started(
        key=f"test:{call_id};caller;local", call_id=call_id, caller=caller, caller_name=None, dialled="100",
        started_at=datetime.now(UTC))
    desk.live.add(call_id, caller=caller, dialled="100", flow="main", interaction_id=interaction_id)
    hook = desk.live.ivr_hook(call_id)
    for node in ("welcome", "menu", "support"):
        hook("node", {"flow": "main", "node": node})
    hook("input", {"node": "menu", "kind": "dtmf", "value": "2", "status": "match"})
    hook("input", {"node": "pin", "kind": "dtmf", "var": "pin", "value": "***", "status": "match"})
    call.add_segment(TranscriptSegment(start=0.0, end=2.0, speaker="system", kind="prompt", text="Welcome"))
    call.add_segment(TranscriptSegment(start=3.0, end=4.0, speaker="caller", kind="speech",
                                       text="I want my refund", confidence=0.9))
    return call, interaction_id


async def next_of(ws: aiohttp.ClientWebSocketResponse, kind: str, timeout: float = 5.0) -> dict[str, Any]:
    """The next message of this type (others, like state changes, are skipped)."""
    async def read() -> dict[str, Any]:
        while True:
            msg: dict[str, Any] = await ws.receive_json()
            if msg.get("type") == kind:
                return msg

    return await asyncio.wait_for(read(), timeout)
