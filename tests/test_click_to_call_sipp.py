"""Click-to-call with real peers on loopback, through the real service: an agent signed in on the
agent page (session cookie) calls a customer from their record; the service rings the agent's
phone first (a sipp UAS), then calls the customer's number through the trunk (a sipp UAS that
challenges with digest auth and checks the number and the caller ID), bridges them until the
customer hangs up; the customer's timeline holds the outbound call, with the agent on it."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.peers.rtp import RtpEndpoint
from tests.peers.service import api_json as _json
from tests.peers.service import running_service
from tests.peers.sipp import sipp_background

pytestmark = [pytest.mark.peer, pytest.mark.timeout(120)]

CUSTOMER = "+15550177"
PASSWORD = "correct horse battery"


async def test_an_agent_calls_a_customer_from_their_record_through_the_trunk(tmp_path: Path) -> None:
    with (
        RtpEndpoint() as agent_media,
        RtpEndpoint() as customer_media,
        sipp_background("uas_answer.xml", workdir=tmp_path / "agent",
                        keys={"rtp_port": agent_media.port}, timeout=60) as agent_phone,
        sipp_background("uas_trunk_auth.xml", workdir=tmp_path / "trunk",
                        keys={"rtp_port": customer_media.port},
                        replace={"[number]": r"\+15550177", "[caller_id]": "15551230000"},
                        timeout=60) as trunk,
        running_service(tmp_path / "svc", sip={"t1_ms": 100},
                        trunk={"uri": f"sip:{trunk.address}", "username": "trunkuser",
                               "password": "trunk-secret", "caller_id": "15551230000",
                               "caller_name": "Example Support"}) as svc,
    ):
        api = f"{svc.http_url}/api/v1"
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            customer = await _json(http, "POST", f"{api}/customers", svc.api_key,
                                   {"name": "Dana Scully", "phone": CUSTOMER})
            await _json(http, "POST", f"{api}/agents", svc.api_key, {
                "id": "a1", "name": "Agent One", "sip_uri": f"sip:a1@{agent_phone.address}",
                "skills": ["support"], "password": PASSWORD})
            await _json(http, "POST", f"{svc.http_url}/agent/api/calls", body={"customer_id": customer["id"]},
                        status=401)  # not signed in
            async with http.post(f"{svc.http_url}/agent/login", data={"agent": "a1", "password": PASSWORD},
                                 allow_redirects=False) as r:
                assert r.status == 302 and r.headers["Location"] == "/agent", await r.text()
            refused = await _json(http, "POST", f"{svc.http_url}/agent/api/calls",
                                  body={"customer_id": customer["id"]}, status=409)  # away
            assert refused["error"]["field"] == "state"
            await _json(http, "POST", f"{svc.http_url}/agent/api/state", body={"state": "available"})
            placed = await _json(http, "POST", f"{svc.http_url}/agent/api/calls",
                                 body={"customer_id": customer["id"]}, status=202)
            assert placed["number"] == CUSTOMER and placed["customer_id"] == customer["id"]

            deadline = time.monotonic() + 30
            outbound: list[dict[str, Any]] = []
            while time.monotonic() < deadline:
                timeline = await _json(http, "GET", f"{api}/customers/{customer['id']}/interactions",
                                       svc.api_key)
                outbound = [i for i in timeline["interactions"]
                            if i["channel"] == "voice" and i["direction"] == "outbound"]
                if outbound and outbound[0]["status"] == "completed":
                    break
                await asyncio.sleep(0.3)
            assert outbound and outbound[0]["status"] == "completed", (outbound, svc.log[-3000:])
            record = await _json(http, "GET", f"{api}/interactions/{outbound[0]['id']}", svc.api_key)
            agent = await _json(http, "GET", f"{api}/agents/a1", svc.api_key)
            while agent["state"] != "wrap_up" and time.monotonic() < deadline + 10:
                await asyncio.sleep(0.2)
                agent = await _json(http, "GET", f"{api}/agents/a1", svc.api_key)
            # audio crossed the bridge: both far ends heard the service
            assert agent_media.received and customer_media.received
        agent_call = agent_phone.stop()
        customer_call = trunk.stop()
    assert customer_call.ok, customer_call.describe()  # challenged, right number and caller ID, BYE
    assert agent_call.ok, agent_call.describe()  # the agent's phone rang first and got the BYE at the end
    assert record["metadata"]["agent_id"] == "a1" and record["metadata"]["click_to_call"] == placed["call_id"]
    assert record["subject"] == f"Outbound call to {CUSTOMER}" and record["metadata"]["dialled"] == CUSTOMER
    assert agent["state"] == "wrap_up" and agent["call_id"] == placed["call_id"]  # [agents]: until Available
