"""Two real nodes behind real Kamailio (dispatcher) on one PostgreSQL, and one of them dies.

`voice cluster --nodes 2` on loopback: calls spread over both nodes; an agent talks on a call
one node owns; that node gets kill -9 during calls. New calls succeed on the other node within
5 s; after `[node] lost_after` (3 s here) the survivor, not a restart, marks the dead node's
calls `interrupted` and releases its agent (on_call -> away, with the reason on the agent's
websocket); the agent, signed in on the dead node, reconnects to the survivor with the same
session and gets that state back; a screen pop reaches an agent whose websocket is on the
survivor. A second test: a draining node's 503 sends the call to the other node; pike cuts a flood.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.peers import REPO, free_port
from tests.peers.cluster import RunningCluster, running_cluster
from tests.peers.rtp import RtpEndpoint
from tests.peers.sipp import run_sipp, sipp_background

pytestmark = [pytest.mark.peer, pytest.mark.postgres, pytest.mark.timeout(300)]

QUEUE_FLOW = """\
description: straight to the support queue (cluster tests)
start: hold
nodes:
  hold:
    say: Please hold.
    next: to_support
  to_support:
    transfer:
      to: queue:support
      on_failure: bye
      after_call: bye
  bye:
    hangup: Goodbye.
"""
ANN_CALLER = "+15550181"
BOB_CALLER = "+15550182"


async def _api(http: aiohttp.ClientSession, cl: RunningCluster, node: str, method: str, path: str,
               body: dict[str, Any] | None = None) -> Any:
    url = f"{cl.node(node).http_url}/api/v1{path}"
    async with http.request(method, url, json=body, headers={"Authorization": f"Bearer {cl.api_key}"}) as r:
        assert r.status < 300, await r.text()
        return await r.json()


async def _until(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await asyncio.to_thread(check)
        if value:
            return value
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


async def _next_event(ws: aiohttp.ClientWebSocketResponse, kind: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        msg = await ws.receive(timeout=max(0.1, deadline - time.monotonic()))
        assert msg.type == aiohttp.WSMsgType.TEXT, msg
        event = json.loads(msg.data)
        if event.get("type") == kind:
            return event


def _calls_by_node(cl: RunningCluster) -> dict[str, dict[str, int]]:
    rows = cl.sql("SELECT metadata->>'node', status, count(*) FROM interactions "
                  "WHERE channel = 'voice' GROUP BY 1, 2")
    out: dict[str, dict[str, int]] = {}
    for node, status, count in rows:
        out.setdefault(node, {})[status] = int(count)
    return out


def _node_of_caller(cl: RunningCluster, caller: str) -> str | None:
    rows = cl.sql(f"SELECT metadata->>'node' FROM interactions WHERE metadata->>'caller' LIKE '%{caller}%'")
    return rows[0][0] if rows else None


async def test_calls_spread_and_a_node_killed_mid_call_is_taken_over_by_the_survivor(tmp_path: Path) -> None:
    flows = tmp_path / "flows"
    shutil.copytree(REPO / "ivr_flows", flows)
    (flows / "cluster_queue.yaml").write_text(QUEUE_FLOW)
    with (
        running_cluster(tmp_path, ivr={"flows": flows, "routes": "200:cluster_queue"},
                        queues={"ring_timeout": 10}) as cl,
        RtpEndpoint() as media,
        sipp_background("agent_answer_hangup.xml", workdir=tmp_path / "ann", keys={"rtp_port": media.port},
                        replace={'milliseconds="1200"': 'milliseconds="120000"'}, timeout=200) as ann_phone,
        sipp_background("agent_answer_hangup.xml", workdir=tmp_path / "bob", keys={"rtp_port": media.port},
                        timeout=200) as bob_phone,
    ):
        first, second = (n.id for n in cl.nodes)
        # 1. calls spread over both nodes
        spread = await asyncio.to_thread(run_sipp, "uac", cl.sip_address, workdir=tmp_path / "spread",
                                         calls=8, rate=8, service="100", timeout=60,
                                         media_port=free_port(tcp=False, count=8))
        assert spread.ok and spread.successful == 8, spread.describe()

        def eight_records() -> dict[str, dict[str, int]] | None:
            counts = _calls_by_node(cl)
            return counts if sum(sum(v.values()) for v in counts.values()) == 8 else None

        by_node = await _until(eight_records, 20, "8 call records")
        assert set(by_node) == {first, second}, by_node
        assert all(counts.get("completed", 0) >= 2 for counts in by_node.values()), by_node

        async with aiohttp.ClientSession() as http:
            for agent, phone in (("ann", ann_phone), ("bob", bob_phone)):
                await _api(http, cl, first, "POST", "/agents", {
                    "id": agent, "name": agent.title(), "sip_uri": f"sip:{agent}@{phone.address}",
                    "skills": ["support"], "password": f"{agent}-secret-1"})
            await _api(http, cl, first, "PATCH", "/agents/ann", {"state": "available"})

            # 2. calls in progress on both nodes (the main menu waits for keys), and ann talking on one
            with (
                sipp_background("listen_call.xml", cl.sip_address, workdir=tmp_path / "long", calls=6,
                                rate=10, service="100", keys={"rtp_port": media.port}, timeout=90),
                sipp_background("listen_call.xml", cl.sip_address, workdir=tmp_path / "ann_call", calls=1,
                                service="200", keys={"rtp_port": media.port}, timeout=90,
                                replace={"<sip:sipp@[local_ip]": f"<sip:{ANN_CALLER}@[local_ip]"}),
            ):
                await _until(lambda: cl.sql("SELECT state FROM agents WHERE id = 'ann'") == [["on_call"]], 30,
                             "ann on the call")
                dead = await _until(lambda: _node_of_caller(cl, ANN_CALLER), 10, "the node of ann's call")
                survivor = second if dead == first else first
                in_progress = _calls_by_node(cl)
                assert in_progress.get(dead, {}).get("in_progress", 0) >= 2, in_progress  # ann's + long calls

                # ann signed in on the node that will die, bob on the survivor; the session is in the
                # database, so ann's page also has a connection to the survivor
                jars = {a: aiohttp.CookieJar(unsafe=True) for a in ("ann", "bob")}
                sessions = {a: aiohttp.ClientSession(cookie_jar=jars[a]) for a in jars}
                try:
                    sockets = {}
                    for agent, session in sessions.items():
                        login = {"agent": agent, "password": f"{agent}-secret-1"}
                        at = cl.node(dead if agent == "ann" else survivor).http_url
                        async with session.post(f"{at}/agent/login", data=login, allow_redirects=False) as r:
                            assert r.status == 302, await r.text()
                        sockets[agent] = await session.ws_connect(
                            f"{cl.node(survivor).http_url}/api/v1/agents/{agent}/events")
                        await _next_event(sockets[agent], "hello", 10)
                    on_dead = await sessions["ann"].ws_connect(
                        f"{cl.node(dead).http_url}/api/v1/agents/ann/events")
                    assert (await _next_event(on_dead, "hello", 10))["agent"]["state"] == "on_call"

                    # 3. kill -9 the node that owns ann's call
                    killed_at = cl.kill(dead)
                    answered_at = None
                    for i in range(3):
                        result = await asyncio.to_thread(
                            run_sipp, "uac", cl.sip_address, workdir=tmp_path / f"after{i}", calls=1,
                            service="100", timeout=20, media_port=free_port(tcp=False, count=8))
                        assert result.ok, result.describe()
                        answered_at = answered_at or time.monotonic()
                    assert answered_at is not None and answered_at - killed_at < 5.0, answered_at - killed_at
                    after = _calls_by_node(cl)
                    assert after[survivor].get("completed", 0) >= by_node[survivor]["completed"] + 3, after

                    # 4. the survivor takes the dead node over after lost_after: calls, agents
                    await _until(lambda: not _calls_by_node(cl)[dead].get("in_progress"), 15,
                                 "the dead node's calls marked interrupted")
                    taken_at = time.monotonic()
                    assert taken_at - killed_at > 2.4, taken_at - killed_at  # lost_after 3 s, beats 0.5 s
                    final = _calls_by_node(cl)[dead]
                    assert final.get("interrupted", 0) == in_progress[dead]["in_progress"], final
                    row = cl.sql(f"SELECT state, taken_over_by FROM cluster_nodes WHERE id = '{dead}'")
                    assert row == [["lost", survivor]], row
                    assert "gave no heartbeat" in cl.node(survivor).log
                    released = await _next_event(sockets["ann"], "released", 10)
                    assert released["state"] == "away" and released["was"] == "on_call"
                    assert dead in released["reason"] and released["node"] == dead
                    assert cl.sql("SELECT state, call_id FROM agents WHERE id = 'ann'") == [["away", ""]]
                    assert (await on_dead.receive(timeout=5)).type in (
                        aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)
                    # her page reconnects to the survivor and gets her state back
                    async with sessions["ann"].ws_connect(
                            f"{cl.node(survivor).http_url}/api/v1/agents/ann/events") as again:
                        hello = await _next_event(again, "hello", 10)
                        assert hello["agent"]["state"] == "away" and not hello["agent"].get("call_id")

                    # 5. a screen pop reaches bob, whose page is on the survivor
                    await _api(http, cl, survivor, "PATCH", "/agents/bob", {"state": "available"})
                    with sipp_background("listen_call.xml", cl.sip_address, workdir=tmp_path / "bob_call",
                                         calls=1, service="200", keys={"rtp_port": media.port}, timeout=60,
                                         replace={"<sip:sipp@[local_ip]": f"<sip:{BOB_CALLER}@[local_ip]"}):
                        pop = await _next_event(sockets["bob"], "screen_pop", 20)
                        assert pop["caller"]["number"] == BOB_CALLER
                        assert _node_of_caller(cl, BOB_CALLER) == survivor
                finally:
                    for ws in sockets.values():
                        await ws.close()
                    for session in sessions.values():
                        await session.close()
        assert "exited with -9" in cl.log


def _options_flood(target_port: int, source: str, count: int) -> int:
    """`count` OPTIONS from one socket on `source`, as fast as it goes; how many were answered."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind((source, 0))
        lport = sock.getsockname()[1]
        for i in range(count):
            sock.sendto((f"OPTIONS sip:127.0.0.1:{target_port} SIP/2.0\r\n"
                         f"Via: SIP/2.0/UDP {source}:{lport};branch=z9hG4bKflood{lport}x{i}\r\n"
                         f"Max-Forwards: 70\r\nFrom: <sip:flood@{source}>;tag=f{i}\r\n"
                         f"To: <sip:127.0.0.1:{target_port}>\r\nCall-ID: flood-{lport}-{i}@{source}\r\n"
                         "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode(), ("127.0.0.1", target_port))
        sock.settimeout(1.0)
        answered = 0
        with contextlib.suppress(TimeoutError):
            while True:
                sock.recv(65535)
                answered += 1
        return answered
    finally:
        sock.close()


async def test_a_draining_node_answers_503_and_kamailio_takes_the_call_elsewhere_and_pike_stops_floods(
        tmp_path: Path) -> None:
    with (
        running_cluster(tmp_path, sip={"drain_timeout": 20}, pike_density=80) as cl,
        RtpEndpoint() as media,
        sipp_background("listen_call.xml", cl.sip_address, workdir=tmp_path / "long", calls=4, rate=4,
                        service="100", keys={"rtp_port": media.port}, timeout=90),
    ):
        draining, other = cl.nodes

        def four_on_both() -> bool:
            counts = _calls_by_node(cl)
            total = sum(sum(c.values()) for c in counts.values())
            return set(counts) == {draining.id, other.id} and total == 4

        await _until(four_on_both, 15, "4 calls on both nodes")
        os.kill(draining.pid, signal.SIGTERM)  # drains: its calls go on, new INVITEs get 503
        await _until(lambda: "draining" in draining.log, 10, "the node draining")
        before = _calls_by_node(cl)
        result = await asyncio.to_thread(run_sipp, "uac", cl.sip_address, workdir=tmp_path / "during",
                                         calls=4, rate=2, service="100", timeout=30,
                                         media_port=free_port(tcp=False, count=8))
        assert result.ok and result.successful == 4, result.describe()
        after = _calls_by_node(cl)
        assert sum(after[other.id].values()) == sum(before[other.id].values()) + 4, (before, after)
        assert sum(after[draining.id].values()) == sum(before[draining.id].values())
        assert f"node sip:127.0.0.1:{draining.sip_port} answered 503" in cl.kamailio_log

        # a flood from one address is cut off; another address is still answered
        answered = await asyncio.to_thread(_options_flood, cl.sip_port, "127.0.0.1", 400)
        assert answered < 300, answered
        assert "pike: dropping OPTIONS from 127.0.0.1" in cl.kamailio_log
        assert await asyncio.to_thread(_options_flood, cl.sip_port, "127.0.0.2", 5) == 5
