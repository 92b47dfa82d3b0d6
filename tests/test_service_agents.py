"""The whole path with real peers: a caller (sipp, media on a socket we own) presses 0 in the demo
flow, the queue picks the signed-in agent, the service rings the agent's phone (a second sipp),
the agent's websocket gets the screen pop with the right customer and IVR path, audio flows both
ways through the bridge, the agent hangs up, the flow says goodbye, and the agent's note lands on
the call's interaction."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import aiohttp
import numpy as np
import pytest

from tests.peers import HOST
from tests.peers.pcap import RtpStreamBuilder, dtmf_tone
from tests.peers.rtp import RtpEndpoint, heard_audio, inband_digits
from tests.peers.rtp import wait_sources as _wait_sources
from tests.peers.service import api_json as _json
from tests.peers.service import running_service
from tests.peers.sipp import run_sipp, sipp_background

pytestmark = pytest.mark.peer

CALLER = "+15550177"


async def test_queue_call_reaches_agent_with_screen_pop_audio_both_ways_and_notes(tmp_path: Path) -> None:
    with (
        running_service(tmp_path / "svc", sip={"t1_ms": 100}) as svc,
        RtpEndpoint() as caller_media,
        RtpEndpoint() as agent_media,
        sipp_background("agent_answer_hangup.xml", workdir=tmp_path / "agent",
                        keys={"rtp_port": agent_media.port},
                        replace={'milliseconds="1200"': 'milliseconds="2500"'}) as phone,
    ):
        api = f"{svc.http_url}/api/v1"
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(cookie_jar=jar) as http:
            customer = await _json(http, "POST", f"{api}/customers", svc.api_key,
                                   {"name": "Fox Mulder", "phone": CALLER})
            await _json(http, "POST", f"{api}/interactions", svc.api_key, {
                "channel": "chat", "direction": "inbound", "started_at": "2026-11-20T10:00:00Z",
                "customer": {"phone": CALLER}, "subject": "Lost parcel", "summary": "asked about order 77"})
            await _json(http, "POST", f"{api}/agents", svc.api_key, {
                "id": "a1", "name": "Agent One", "sip_uri": f"sip:a1@{phone.address}",
                "skills": ["agents", "support"], "password": "agent-secret-1"})
            await _json(http, "PATCH", f"{api}/agents/a1", svc.api_key, {"state": "available"})
            # the agent signs in on the agent page and keeps its websocket open
            login = {"agent": "a1", "password": "agent-secret-1"}
            async with http.post(f"{svc.http_url}/agent/login", data=login, allow_redirects=False) as r:
                assert r.status == 302 and r.headers["Location"] == "/agent"
            async with http.ws_connect(f"{api}/agents/a1/events") as ws:
                caller = asyncio.ensure_future(asyncio.to_thread(
                    run_sipp, "listen_call.xml", svc.sip_address, workdir=tmp_path / "caller", calls=1,
                    timeout=60, keys={"rtp_port": caller_media.port},
                    replace={"<sip:sipp@[local_ip]": f"<sip:{CALLER}@[local_ip]"}))
                service_rtp = await asyncio.to_thread(_wait_sources, caller_media, 15)
                caller_media.send(RtpStreamBuilder().silence(200).digits("0").packets, service_rtp)

                pop = None
                deadline = time.monotonic() + 30
                while pop is None and time.monotonic() < deadline:
                    msg = await ws.receive(timeout=deadline - time.monotonic())
                    event = json.loads(msg.data)
                    if event.get("type") == "screen_pop":
                        pop = event
                assert pop is not None, "no screen pop"
                assert pop["caller"]["number"] == CALLER
                assert pop["customer"]["name"] == "Fox Mulder" and pop["customer"]["id"] == customer["id"]
                assert [i["subject"] for i in pop["recent_interactions"]][:1] == ["Lost parcel"]
                nodes = [p["node"] if isinstance(p, dict) else p for p in pop["ivr"]["path"]]
                assert "main_menu" in nodes and "to_agent" in nodes
                assert [i["value"] for i in pop["ivr"]["inputs"]][:1] == ["0"]

                # audio both ways while bridged: the agent sends a '9' tone, the caller a '5' tone
                agent_service_rtp = await asyncio.to_thread(_wait_sources, agent_media, 15)
                heard_before = len(caller_media.received)
                agent_media.send(RtpStreamBuilder().audio(dtmf_tone("9", 400)).packets, agent_service_rtp)
                # (the same stream as the digit: sequence numbers go on, as a phone's would)
                tone = RtpStreamBuilder(seq=2000, timestamp=160000).audio(dtmf_tone("5", 400))
                caller_media.send(tone.packets, service_rtp)
                result = await caller  # the agent hangs up, the flow says goodbye and hangs up
                assert result.ok, result.describe()

                assert "9" in inband_digits(heard_audio(caller_media.received[heard_before:]))
                assert "5" in inband_digits(agent_media.audio())
                assert np.abs(agent_media.audio()).max() > 1000

                # the agent writes a note and a disposition on the call
                async with http.post(f"{svc.http_url}/agent/api/notes", json={
                        "call_id": pop["call_id"], "text": "Parcel re-sent", "disposition": "resolved"}) as r:
                    assert r.status == 201, await r.text()
        async with aiohttp.ClientSession() as http:
            timeline = await _json(http, "GET", f"{api}/customers/{customer['id']}/interactions", svc.api_key)
            call = next(i for i in timeline["interactions"] if i["channel"] == "voice")
            detail = await _json(http, "GET", f"{api}/interactions/{call['id']}", svc.api_key)
    assert detail["disposition"] == "resolved"
    assert "Parcel re-sent" in json.dumps(detail)
    assert detail["ivr"]["transfer_target"] == "queue:agents"
    assert [p["node"] for p in detail["ivr"]["path"]][-1] == "after_agent"
    assert phone.result is not None and phone.result.successful == 1, phone.result.describe()
    assert HOST in phone.address
