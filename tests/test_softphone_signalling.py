"""The softphone's signalling on the agent's events websocket (cti.web.softphone), in process: the
real aiohttp app with call control's BrowserPhones behind cti.ports, a websocket signed in with the
agent's session cookie, and an aiortc peer answering the offer it receives there."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from aiortc import RTCPeerConnection, RTCSessionDescription

from cti.http import build_api
from cti.web.keys import PHONES_KEY
from tests.agents_helpers import BEARER, PASSWORD, sign_in
from tests.cti.conftest import make_config
from tests.test_webrtc import ToneTrack, caller_leg
from voice.callcontrol.webrtc import BrowserPhones


@asynccontextmanager
async def app_with_phones(tmp_path: Path, phones: BrowserPhones | None
                          ) -> AsyncIterator[TestClient[Any, Any]]:
    app = build_api(make_config(f"sqlite+aiosqlite:///{tmp_path / 'voice.db'}"))
    if phones is not None:
        app[PHONES_KEY] = phones
    client = TestClient(TestServer(app, host="127.0.0.1", port=0))
    await client.start_server()
    try:
        resp = await client.post("/api/v1/agents", headers=BEARER, json={
            "id": "ann", "name": "Ann", "sip_uri": "browser:ann", "skills": ["support"],
            "password": PASSWORD})
        assert resp.status == 201, await resp.text()
        assert (await sign_in(client, "ann")).status == 302
        yield client
    finally:
        await client.close()


async def next_of(ws: aiohttp.ClientWebSocketResponse, kind: str, timeout: float = 10) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        msg = await ws.receive(timeout=max(0.01, deadline - loop.time()))
        assert msg.type == aiohttp.WSMsgType.TEXT, msg
        data: dict[str, Any] = json.loads(msg.data)
        if data.get("type") == kind:
            return data


async def test_a_registered_socket_gets_offers_answers_them_and_bad_messages_get_errors(
        tmp_path: Path) -> None:
    phones = BrowserPhones()
    async with app_with_phones(tmp_path, phones) as client:
        # the agent can say "browser:ann" as its phone; anything else is refused with the field named
        bad = await client.patch("/api/v1/agents/ann", headers=BEARER, json={"sip_uri": "tel:+1555"})
        assert bad.status == 422 and "sip_uri" in await bad.text()
        plain = await client.ws_connect("/api/v1/agents/ann/events")  # the desk's socket: never offered
        ws = await client.ws_connect("/api/v1/agents/ann/events")
        await next_of(ws, "hello")
        assert "ann" not in phones.pages
        await ws.send_json({"type": "rtc_register"})
        await next_of(ws, "rtc_registered")
        assert len(phones.pages["ann"]) == 1

        for message, field in (({"type": "rtc_hangup"}, "leg"),
                               ({"type": "rtc_hold", "leg": "no-such-leg", "on": True}, "leg")):
            await ws.send_json(message)
            error = await next_of(ws, "rtc_error")
            assert error["field"] == field and error["error"]
        await ws.send_str("not json")  # ignored, the socket stays
        await ws.send_json({"type": "ping"})
        await next_of(ws, "pong")

        async with caller_leg() as caller:
            ringing = asyncio.ensure_future(
                phones.connect(caller.call, caller.rtp, "browser:ann", timeout=10))
            offer = await next_of(ws, "rtc_offer")
            assert offer["caller"] == caller.call.info.caller and offer["ice_servers"] == []
            pc = RTCPeerConnection()
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer["sdp"], type="offer"))
            pc.addTrack(ToneTrack(500))
            await pc.setLocalDescription(await pc.createAnswer())
            await ws.send_json({"type": "rtc_answer", "leg": offer["leg"], "sdp": pc.localDescription.sdp})
            leg = await asyncio.wait_for(ringing, 15)
            assert leg.answered
            assert (await next_of(ws, "rtc_state"))["state"] in ("answering", "connected")
            await ws.send_json({"type": "rtc_dtmf", "leg": offer["leg"], "digits": "7 7"})
            assert (await next_of(ws, "rtc_error"))["field"] == "digits"
            await ws.send_json({"type": "rtc_hangup", "leg": offer["leg"]})
            assert (await next_of(ws, "rtc_end"))["leg"] == offer["leg"]
            end = await asyncio.wait_for(leg.wait_finished(), 5)
            assert end.hangup_by == "agent"
            await pc.close()
        await ws.close()
        await plain.close()
        for _ in range(100):
            if "ann" not in phones.pages:
                break
            await asyncio.sleep(0.02)
        assert "ann" not in phones.pages  # the closed socket is detached
    await phones.aclose()


@pytest.mark.timeout(30)
async def test_a_service_without_browser_phones_says_so(tmp_path: Path) -> None:
    async with app_with_phones(tmp_path, None) as client:
        ws = await client.ws_connect("/api/v1/agents/ann/events")
        await ws.send_json({"type": "rtc_register"})
        error = await next_of(ws, "rtc_error")
        assert error["field"] == "type" and "browser" in error["error"]
        await ws.close()
