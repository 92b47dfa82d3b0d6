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


async def test_a_supervisor_listens_in_silently_and_hears_both_sides(tmp_path: Path) -> None:
    import numpy as np

    from tests.peers.pcap import PCMU, RtpStreamBuilder
    from tests.test_webrtc import HOST, FakePage, dominant_hz
    from voice.audio import tone

    phones = BrowserPhones()
    page = FakePage(phones)
    detach = phones.attach("ann", page.send)
    async with app_with_phones(tmp_path, phones) as client, caller_leg() as caller:
        ringing = asyncio.ensure_future(phones.connect(caller.call, caller.rtp, "browser:ann", timeout=10))
        await page.answer(await asyncio.wait_for(page.offers.get(), 10), hz=400)
        leg = await asyncio.wait_for(ringing, 15)
        assert leg.answered

        pc = RTCPeerConnection()
        pc.addTransceiver("audio", direction="recvonly")
        heard: list[np.ndarray] = []

        @pc.on("track")
        def on_track(track: Any) -> None:
            async def listen() -> None:
                while True:
                    try:
                        frame = await track.recv()
                    except Exception:
                        return
                    heard.append(frame.to_ndarray().reshape(-1)[::2])

            page.tasks.append(asyncio.ensure_future(listen()))

        await pc.setLocalDescription(await pc.createOffer())
        offer = pc.localDescription.sdp
        # no key, an unknown call, bad input: refused with the field named
        assert (await client.post("/admin/api/listen", json={"call_id": "x", "sdp": offer})).status == 401
        missing = await client.post("/admin/api/listen", headers=BEARER,
                                    json={"call_id": "nope", "sdp": offer})
        assert missing.status == 404 and "call_id" in await missing.text()
        empty = await client.post("/admin/api/listen", headers=BEARER, json={"call_id": "x"})
        assert empty.status == 422 and "sdp" in await empty.text()

        resp = await client.post("/admin/api/listen", headers=BEARER,
                                 json={"call_id": caller.call.info.call_id, "sdp": offer})
        assert resp.status == 201, await resp.text()
        body = await resp.json()
        await pc.setRemoteDescription(RTCSessionDescription(sdp=body["sdp"], type="answer"))
        sent_to_caller = len(caller.peer.received)
        up = RtpStreamBuilder(codec=PCMU, ssrc=0x1111).audio(tone(1000, 2000, 0.3))
        caller.peer.send(up.packets, (HOST, caller.rtp.local_port))
        await asyncio.sleep(up.duration + 1.0)
        mix = np.concatenate(heard[-60:]).astype(np.float64)  # 48 kHz left channel
        spectrum = np.abs(np.fft.rfft(mix * np.hanning(len(mix))))
        freqs = np.fft.rfftfreq(len(mix), 1 / 48000)

        def band(hz: float) -> float:
            return float(spectrum[(freqs > hz - 30) & (freqs < hz + 30)].max())

        noise = float(np.median(spectrum))
        assert band(1000) > 50 * noise and band(400) > 50 * noise  # the caller and the agent, both
        assert abs(dominant_hz(np.concatenate(heard[-60:])[::6]) - 700) > 200  # two tones, not one
        # the supervisor is silent: the caller still hears the agent only
        assert len(caller.peer.received) > sent_to_caller

        stop = await client.delete(f"/admin/api/listen/{body['listen']}", headers=BEARER)
        assert stop.status == 204
        assert (await client.delete(f"/admin/api/listen/{body['listen']}", headers=BEARER)).status == 404
        assert not leg.monitors and not phones.monitors
        await pc.close()
        leg.hangup()
    await page.close()
    detach()
    await phones.aclose()
