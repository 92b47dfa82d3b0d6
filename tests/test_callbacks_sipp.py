"""Callbacks with real peers on loopback, through the real service: a sipp caller waiting in the
support queue presses 9 (the callback key), confirms their number with 1 and is hung up on; an
agent (a sipp UAS) becomes available; the service rings the agent first, then calls the
customer's number through the trunk (a sipp UAS that challenges with digest auth and checks the
number and the caller ID), bridges them until the customer hangs up; the customer's timeline
holds the original call and the callback, linked both ways."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest

from tests.peers import HOST
from tests.peers.pcap import RtpStreamBuilder
from tests.peers.rtp import RtpEndpoint
from tests.peers.rtp import wait_sources as _wait_sources
from tests.peers.service import api_json as _json
from tests.peers.service import running_service
from tests.peers.sipp import run_sipp, sipp_background

pytestmark = [pytest.mark.peer, pytest.mark.timeout(120)]

CALLER = "+15550177"
FLOW = """\
description: straight to the support queue (tests/test_callbacks_sipp.py)
start: to_support
nodes:
  to_support:
    transfer:
      to: queue:support
      on_failure: bye
  bye:
    hangup: Goodbye.
"""


async def test_the_caller_asks_for_a_callback_and_the_agent_is_bridged_to_them_through_the_trunk(
        tmp_path: Path) -> None:
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "main.yaml").write_text(FLOW)
    with (
        RtpEndpoint() as caller_media,
        RtpEndpoint() as agent_media,
        RtpEndpoint() as customer_media,
        sipp_background("uas_answer.xml", workdir=tmp_path / "agent",
                        keys={"rtp_port": agent_media.port}, timeout=90) as agent_phone,
        sipp_background("uas_trunk_auth.xml", workdir=tmp_path / "trunk",
                        keys={"rtp_port": customer_media.port},
                        replace={"[number]": r"\+15550177", "[caller_id]": "15551230000"},
                        timeout=90) as trunk,
        running_service(tmp_path / "svc", sip={"t1_ms": 100}, ivr={"flows": str(flows)},
                        **{"queue support": {"callback_key": "9", "announce_interval": "0",
                                             "ring_timeout": "10"},
                           "trunk": {"uri": f"sip:{trunk.address}", "username": "trunkuser",
                                     "password": "trunk-secret", "caller_id": "15551230000",
                                     "caller_name": "Example Support"},
                           "callbacks": {"poll_interval": "0.5", "retries": "0"}}) as svc,
    ):
        api = f"{svc.http_url}/api/v1"
        async with aiohttp.ClientSession() as http:
            customer = await _json(http, "POST", f"{api}/customers", svc.api_key,
                                   {"name": "Dana Scully", "phone": CALLER})
            await _json(http, "POST", f"{api}/agents", svc.api_key, {
                "id": "a1", "name": "Agent One", "sip_uri": f"sip:a1@{agent_phone.address}",
                "skills": ["support"]})  # away for now: the caller waits

            caller = asyncio.ensure_future(asyncio.to_thread(
                run_sipp, "listen_call.xml", svc.sip_address, workdir=tmp_path / "caller", calls=1,
                timeout=60, keys={"rtp_port": caller_media.port},
                replace={"<sip:sipp@[local_ip]": f"<sip:{CALLER}@[local_ip]"}))
            service_rtp = await asyncio.to_thread(_wait_sources, caller_media, 15)
            await asyncio.sleep(3)  # "You are next in line ... press 9 ..."
            caller_media.send(RtpStreamBuilder().silence(200).digits("9").packets, service_rtp)
            await asyncio.sleep(2)  # "We will call you back at ... To confirm, press 1 ..."
            caller_media.send(RtpStreamBuilder(seq=3000, timestamp=300000).silence(100).digits("1").packets,
                              service_rtp)
            result = await caller  # the goodbye, then the service hangs up
            assert result.ok, result.describe()

            (callback,) = (await _json(http, "GET", f"{api}/callbacks", svc.api_key))["callbacks"]
            assert callback["state"] == "queued" and callback["number"] == CALLER
            assert callback["customer_id"] == customer["id"] and callback["channel"] == "voice"

            await _json(http, "PATCH", f"{api}/agents/a1", svc.api_key, {"state": "available"})
            deadline = time.monotonic() + 40
            while callback["state"] not in ("done", "failed") and time.monotonic() < deadline:
                await asyncio.sleep(0.3)
                callback = await _json(http, "GET", f"{api}/callbacks/{callback['id']}", svc.api_key)
            assert callback["state"] == "done", (callback, svc.log[-3000:])
            assert callback["attempts"] == 1 and callback["history"][0]["agent_id"] == "a1"

            # audio crossed the bridge: both far ends heard the service
            assert agent_media.received and customer_media.received

            timeline = await _json(http, "GET", f"{api}/customers/{customer['id']}/interactions", svc.api_key)
            voice = {i["direction"]: i for i in timeline["interactions"] if i["channel"] == "voice"}
            assert set(voice) == {"inbound", "outbound"}, timeline
            original = await _json(http, "GET", f"{api}/interactions/{voice['inbound']['id']}", svc.api_key)
            back = await _json(http, "GET", f"{api}/interactions/{voice['outbound']['id']}", svc.api_key)
        agent = agent_phone.stop()
        customer_call = trunk.stop()
    assert customer_call.ok, customer_call.describe()  # challenged, right number and caller ID, BYE
    assert agent.ok, agent.describe()  # the agent's phone was rung and got the BYE at the end
    assert original["outcome"] == "callback" and original["metadata"]["callback_id"] == callback["id"]
    assert back["metadata"]["callback_of"] == original["id"]
    assert back["metadata"]["callback_id"] == callback["id"]
    assert callback["interaction_id"] == back["id"] and callback["original_interaction_id"] == original["id"]
    assert back["subject"] == f"Callback to {CALLER}" and back["status"] == "completed"
    assert HOST in agent_phone.address
