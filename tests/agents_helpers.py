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
from cti.ports import AgentConnector, OutboundDialer
from cti.routing import AgentDesk
from cti.waiting import SpeechRenderer
from cti.web import CONNECTOR_KEY, DESK_KEY, VOICE_KEY
from tests.cti.conftest import API_KEY, Target, make_config
from tests.desk_fakes import FakeCall, Segment

BEARER = {"Authorization": f"Bearer {API_KEY}"}
PASSWORD = "correct horse battery"


@asynccontextmanager
async def running_app(target: Target, *, connector: AgentConnector | None = None,
                      voice: SpeechRenderer | None = None, dialer: OutboundDialer | None = None,
                      config: Any = None) -> AsyncIterator[TestClient[Any, Any]]:
    """The API app as the service runs it: call control's connector and TTS set before startup."""
    from voice.ivr.catalog import config_catalog

    config = config or make_config(target.url)
    app = build_api(config, schema=target.schema, flows=config_catalog(config), dialer=dialer)
    if connector is not None:
        app[CONNECTOR_KEY] = connector
    if voice is not None:
        app[VOICE_KEY] = voice
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


async def inbound_call(client: TestClient[Any, Any], call_id: str, caller: str = "+4930123456", *,
                       customer_id: str | None = None,
                       identified_by: str | None = None) -> tuple[FakeCall, str]:
    """A call as the desk sees it (a CallView), with its interaction written the way the service
    writes it and its IVR path in the live calls."""
    from cti.history import CallHistory

    desk = desk_of(client)
    interaction_id = await CallHistory(desk.store, node="test").call_started(
        key=f"test:{call_id};peer;ours", call_id=call_id, caller=caller, caller_name=None, dialled="100",
        started_at=datetime.now(UTC))
    call = FakeCall(call_id, caller, interaction_id=interaction_id, customer_id=customer_id,
                    identified_by=identified_by)
    desk.live.add(call.key, call_id=call_id, caller=caller, dialled="100", flow="main",
                  interaction_id=interaction_id)
    hook = desk.live.ivr_hook(call.key)
    for node in ("welcome", "menu", "support"):
        hook("node", {"flow": "main", "node": node})
    hook("input", {"node": "menu", "kind": "dtmf", "value": "2", "status": "match"})
    hook("input", {"node": "pin", "kind": "dtmf", "var": "pin", "value": "***", "status": "match"})
    call.transcript.append(Segment(start=0.0, end=2.0, speaker="system", kind="prompt", text="Welcome"))
    call.transcript.append(Segment(start=3.0, end=4.0, speaker="caller", kind="speech",
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
