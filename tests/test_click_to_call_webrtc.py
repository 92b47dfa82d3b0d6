"""Click-to-call by a browser agent, real peers through the real service: the agent's page is an
aiortc peer on the agent events websocket (rtc_register, rtc_offer, rtc_answer, as the page's
softphone.js does it); the trunk is a sipp UAS with digest auth. The service rings the page
first (an outbound WebRTC leg), then calls the customer through the trunk and bridges the two;
the customer's timeline holds the outbound call with the agent on it."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription

from tests.peers.pcap import PCMU
from tests.peers.rtp import RtpEndpoint, heard_audio
from tests.peers.service import api_json as _json
from tests.peers.service import running_service
from tests.peers.sipp import sipp_background
from tests.test_webrtc import ToneTrack, dominant_hz, record_track

pytestmark = [pytest.mark.peer, pytest.mark.timeout(120)]

CUSTOMER = "+15550177"
PASSWORD = "correct horse battery"


async def _next(ws: aiohttp.ClientWebSocketResponse, kind: str, seen: list[dict[str, Any]],
                timeout: float = 20.0) -> dict[str, Any]:
    async def read() -> dict[str, Any]:
        while True:
            msg = await ws.receive()
            assert msg.type == aiohttp.WSMsgType.TEXT, msg
            event: dict[str, Any] = json.loads(msg.data)
            seen.append(event)
            if event.get("type") == kind:
                return event

    return await asyncio.wait_for(read(), timeout)


async def test_a_browser_agent_calls_a_customer_the_page_rings_first_then_the_trunk(tmp_path: Path) -> None:
    heard: list[np.ndarray] = []
    tasks: list[asyncio.Task[None]] = []

    async def listen(track: MediaStreamTrack) -> None:
        await record_track(track, heard)

    with (
        RtpEndpoint() as customer_media,
        sipp_background("uas_trunk_auth.xml", workdir=tmp_path / "trunk",
                        keys={"rtp_port": customer_media.port},
                        replace={"[number]": r"\+15550177", "[caller_id]": "15551230000",
                                 'milliseconds="1500"': 'milliseconds="3000"'},
                        timeout=60) as trunk,
        running_service(tmp_path / "svc", sip={"t1_ms": 100},
                        trunk={"uri": f"sip:{trunk.address}", "username": "trunkuser",
                               "password": "trunk-secret", "caller_id": "15551230000"}) as svc,
    ):
        api = f"{svc.http_url}/api/v1"
        pc = RTCPeerConnection()
        pc.on("track", lambda track: tasks.append(asyncio.ensure_future(listen(track))))
        seen: list[dict[str, Any]] = []
        try:
            async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
                customer = await _json(http, "POST", f"{api}/customers", svc.api_key,
                                       {"name": "Dana Scully", "phone": CUSTOMER})
                await _json(http, "POST", f"{api}/agents", svc.api_key, {
                    "id": "ann", "name": "Ann", "sip_uri": "browser:ann", "skills": ["support"],
                    "password": PASSWORD})
                signin = {"agent": "ann", "password": PASSWORD}
                async with http.post(f"{svc.http_url}/agent/login", data=signin, allow_redirects=False) as r:
                    assert r.status == 302, await r.text()
                async with http.ws_connect(f"{api}/agents/ann/events") as ws:
                    await _next(ws, "hello", seen)
                    await ws.send_json({"type": "rtc_register"})
                    await _next(ws, "rtc_registered", seen)
                    await _json(http, "POST", f"{svc.http_url}/agent/api/state", body={"state": "available"})
                    placed = await _json(http, "POST", f"{svc.http_url}/agent/api/calls",
                                         body={"customer_id": customer["id"]}, status=202)
                    offer = await _next(ws, "rtc_offer", seen)
                    assert offer["outbound"] is True and offer["caller"] == "Call Dana Scully"
                    await pc.setRemoteDescription(RTCSessionDescription(sdp=offer["sdp"], type="offer"))
                    pc.addTrack(ToneTrack(400))
                    await pc.setLocalDescription(await pc.createAnswer())
                    await ws.send_json({"type": "rtc_answer", "leg": offer["leg"],
                                        "sdp": pc.localDescription.sdp})
                    talking = await _next(ws, "outbound", seen)
                    while talking["state"] != "talking":
                        talking = await _next(ws, "outbound", seen)
                    ended = await _next(ws, "outbound", seen)
                    while ended["state"] != "ended":
                        ended = await _next(ws, "outbound", seen)
                    assert "caller hung up" in ended["message"]
                    if not any(e.get("type") == "rtc_end" for e in seen):  # the page's call is over
                        await _next(ws, "rtc_end", seen)

                deadline = time.monotonic() + 20
                outbound: list[dict[str, Any]] = []
                while time.monotonic() < deadline:
                    timeline = await _json(http, "GET", f"{api}/customers/{customer['id']}/interactions",
                                           svc.api_key)
                    outbound = [i for i in timeline["interactions"] if i["direction"] == "outbound"]
                    if outbound and outbound[0]["status"] == "completed":
                        break
                    await asyncio.sleep(0.3)
                assert outbound and outbound[0]["status"] == "completed", (outbound, svc.log[-3000:])
                record = await _json(http, "GET", f"{api}/interactions/{outbound[0]['id']}", svc.api_key)
                agent = await _json(http, "GET", f"{api}/agents/ann", svc.api_key)
        finally:
            await pc.close()
            for t in tasks:
                t.cancel()
        customer_call = trunk.stop()
    assert customer_call.ok, customer_call.describe()  # challenged, right number and caller ID, BYE
    steps = [e["state"] for e in seen if e.get("type") == "outbound"]
    assert steps == ["ringing_agent", "dialing", "talking", "ended"]
    assert talking["interaction_id"] == record["id"] == ended["interaction_id"]
    assert record["metadata"]["agent_id"] == "ann"
    assert record["metadata"]["click_to_call"] == placed["call_id"]
    assert agent["state"] == "wrap_up"
    # audio crossed the bridge both ways: the page's 400 Hz at the trunk, and the page heard sound
    pcmu = [p for p in customer_media.received if p.payload_type == PCMU]
    to_customer = heard_audio(pcmu[-100:])
    assert np.abs(to_customer).max() > 1000 and abs(dominant_hz(to_customer) - 400) < 20
    assert len(heard) > 50
