"""Continuing a conversation with real peers: a chat still open is ingested over the HTTP API for a
number, a caller (sipp) phones from that number, hears the offer to continue it and presses 1, and
goes straight to the queue that handled the chat (no main menu), to the chat's agent (a second
sipp), whose screen pop carries `continues` with the chat."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest

from tests.peers.pcap import RtpStreamBuilder
from tests.peers.rtp import RtpEndpoint
from tests.peers.rtp import wait_sources as _wait_sources
from tests.peers.service import api_json as _json
from tests.peers.service import running_service
from tests.peers.sipp import run_sipp, sipp_background

pytestmark = pytest.mark.peer

CALLER = "+15550188"


async def test_a_caller_continues_an_open_chat_straight_to_its_queue_and_agent(tmp_path: Path) -> None:
    with (
        running_service(tmp_path / "svc", sip={"t1_ms": 100}) as svc,
        RtpEndpoint() as caller_media,
        RtpEndpoint() as agent_media,
        sipp_background("agent_answer_hangup.xml", workdir=tmp_path / "agent",
                        keys={"rtp_port": agent_media.port}) as phone,
    ):
        api = f"{svc.http_url}/api/v1"
        async with aiohttp.ClientSession() as http:
            # the chat system posts the conversation it is still having with this number
            chat = await _json(http, "POST", f"{api}/interactions", svc.api_key, {
                "channel": "chat", "direction": "inbound", "status": "open", "queue": "support",
                "agent": "a2", "started_at": (datetime.now(UTC) - timedelta(hours=2)).isoformat(),
                "customer": {"phone": CALLER, "name": "Dana Scully"}, "subject": "a late refund",
                "summary": "refund for order 81 not received"})
            for agent_id, skills in (("a1", ["agents"]), ("a2", ["support"])):
                await _json(http, "POST", f"{api}/agents", svc.api_key, {
                    "id": agent_id, "name": agent_id.upper(), "sip_uri": f"sip:{agent_id}@{phone.address}",
                    "skills": skills, "password": "agent-secret-1"})
                await _json(http, "PATCH", f"{api}/agents/{agent_id}", svc.api_key, {"state": "available"})
            async with http.ws_connect(f"{api}/agents/a2/events",
                                       headers={"Authorization": f"Bearer {svc.api_key}"}) as ws:
                caller = asyncio.ensure_future(asyncio.to_thread(
                    run_sipp, "listen_call.xml", svc.sip_address, workdir=tmp_path / "caller", calls=1,
                    timeout=60, keys={"rtp_port": caller_media.port},
                    replace={"<sip:sipp@[local_ip]": f"<sip:{CALLER}@[local_ip]"}))
                service_rtp = await asyncio.to_thread(_wait_sources, caller_media, 15)
                # "... Press 1 or say yes to continue with that.": 1, typed ahead as callers do
                caller_media.send(RtpStreamBuilder().silence(200).digits("1").packets, service_rtp)

                pop = None
                deadline = time.monotonic() + 30
                while pop is None and time.monotonic() < deadline:
                    msg = await ws.receive(timeout=deadline - time.monotonic())
                    event = json.loads(msg.data)
                    if event.get("type") == "screen_pop":
                        pop = event
                assert pop is not None, "no screen pop"
                assert pop["continues"] == chat["interaction_id"] and pop["queue"] == "support"
                assert pop["continued"]["channel"] == "chat"
                assert pop["continued"]["summary"] == "refund for order 81 not received"
                nodes = [p["node"] if isinstance(p, dict) else p for p in pop["ivr"]["path"]]
                assert "offer_continue" in nodes and "to_last_queue" in nodes and "main_menu" not in nodes
                result = await caller  # the agent hangs up, the flow says goodbye and hangs up
                assert result.ok, result.describe()
            timeline = await _json(http, "GET", f"{api}/customers/{chat['customer_id']}/interactions",
                                   svc.api_key)
            call = next(i for i in timeline["interactions"] if i["channel"] == "voice")
            detail = await _json(http, "GET", f"{api}/interactions/{call['id']}", svc.api_key)
    assert detail["ivr"]["transfer_target"] == "queue:support" and detail["queue"] == "support"
    assert detail["agent"] == "a2"  # the chat's agent took the call (affinity), not a1
    assert phone.result is not None and phone.result.successful == 1, phone.result.describe()
