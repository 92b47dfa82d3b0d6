"""Callback throughput: N queued callbacks, M agents, a restart of the service half way.

    .venv/bin/python benchmarks/callbacks.py [--callbacks 200] [--agents 20] [--talk-ms 300]
        [--restart-at 100]

The real service (subprocess, SQLite) with one sipp UAS answering every agent's phone at once
(uas_answer.xml) and one sipp UAS as the trunk (uas_trunk_auth.xml: digest challenge, checks
the number and the caller ID, answers, hangs up after --talk-ms). The callbacks are requested
through POST /api/v1/callbacks, the agents made available through PATCH /api/v1/agents/ID; a
driver makes each agent available again as soon as it is in wrap-up (polling every 20 ms).

Measured: agent free (the PATCH leaving) -> the trunk receiving the customer's (authorised)
INVITE, i.e. the customer's phone starting to ring, from sipp's message trace (same wall
clock); p50 / p99 / max. When --restart-at callbacks are done, the service is stopped (SIGTERM:
it stops placing callbacks, lets the calls in progress end) and started again on the same
database. At the end: every callback done, and each number got exactly one answered call
(distinct Call-IDs of authorised INVITEs per number at the trunk): none lost, none twice.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import tempfile
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.peers.rtp import RtpEndpoint
from tests.peers.service import RunningService, running_service
from tests.peers.sipp import sipp_background

CALLER_ID = "15551230000"


def number(i: int) -> str:
    return f"+1555{2000000 + i:07d}"


def trunk_invites(trace: Path) -> dict[str, list[tuple[float, str]]]:
    """number -> [(wall time, Call-ID)] of the authorised INVITEs the trunk received."""
    text = trace.read_text(errors="replace") if trace.exists() else ""
    out: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for block in re.split(r"\n-{20,} ", text):
        head, _, body = block.partition("\n")
        if "message received" not in body.split("\n", 1)[0] or not re.search(r"^INVITE sip:", body, re.M):
            continue
        if "Authorization:" not in body:
            continue
        stamp = re.match(r"(\d{4}-\d\d-\d\d)\s+(\d\d:\d\d:\d\d\.\d+)", head.strip())
        ruri = re.search(r"INVITE sip:(\+?\d+)@", body)
        call_id = re.search(r"\nCall-ID:\s*(\S+)", body, re.IGNORECASE)
        if stamp and ruri and call_id:
            at = datetime.fromisoformat(f"{stamp.group(1)} {stamp.group(2)}").timestamp()
            out[ruri.group(1)].append((at, call_id.group(1)))
    return out


async def api(http: aiohttp.ClientSession, svc: RunningService, method: str, path: str,
              body: dict[str, Any] | None = None) -> Any:
    async with http.request(method, f"{svc.http_url}/api/v1{path}", json=body,
                            headers={"Authorization": f"Bearer {svc.api_key}"}) as r:
        if r.status >= 300:
            raise RuntimeError(f"{method} {path}: {r.status} {await r.text()}")
        return await r.json()


async def drive(svc: RunningService, agents: int, frees: dict[str, list[float]], stop_when_done: int,
                deadline: float) -> int:
    """Make agents available whenever they are in wrap-up (or away/available at the start) until
    `stop_when_done` callbacks are done; returns how many are done."""
    async with aiohttp.ClientSession() as http:
        async def free(agent_id: str) -> None:
            frees[agent_id].append(time.time())
            await api(http, svc, "PATCH", f"/agents/{agent_id}", {"state": "available"})

        listed = await api(http, svc, "GET", "/agents")
        await asyncio.gather(*(free(a["id"]) for a in listed["agents"]
                               if a["state"] in ("away", "wrap_up", "available")))
        done = 0
        last_count = 0.0
        while time.monotonic() < deadline:
            listed = await api(http, svc, "GET", "/agents")
            wrapping = [a["id"] for a in listed["agents"] if a["state"] == "wrap_up"]
            await asyncio.gather(*(free(a) for a in wrapping))
            if time.monotonic() - last_count > 0.25:
                last_count = time.monotonic()
                rows = await api(http, svc, "GET", "/callbacks?state=done&limit=1000")
                done = len(rows["callbacks"])
                if done >= stop_when_done:
                    return done
            await asyncio.sleep(0.02)
        return done


async def final_rows(svc: RunningService) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as http:
        return list((await api(http, svc, "GET", "/callbacks?limit=1000"))["callbacks"])


async def request_all(svc: RunningService, n: int) -> None:
    async with aiohttp.ClientSession() as http:
        for i in range(n):
            await api(http, svc, "POST", "/callbacks", {"phone": number(i), "queue": "support",
                                                         "reason": "benchmark", "channel": "chat",
                                                         "idempotency_key": f"bench-{i}"})


async def create_agents(svc: RunningService, n: int, phone: str) -> None:
    async with aiohttp.ClientSession() as http:
        for i in range(n):
            await api(http, svc, "POST", "/agents", {
                "id": f"a{i:02d}", "name": f"Agent {i}", "sip_uri": f"sip:a{i:02d}@{phone}",
                "skills": ["support"]})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--callbacks", type=int, default=200)
    ap.add_argument("--agents", type=int, default=20)
    ap.add_argument("--talk-ms", type=int, default=300)
    ap.add_argument("--restart-at", type=int, default=100,
                    help="restart the service once this many are done (at most --callbacks)")
    args = ap.parse_args()
    if not 0 <= args.restart_at <= args.callbacks:
        ap.error("--restart-at must be from 0 to --callbacks (the run would wait for callbacks "
                 "that were never requested)")
    tmp = Path(tempfile.mkdtemp(prefix="bench-callbacks-"))
    trace = tmp / "trunk" / "messages.log"
    frees: dict[str, list[float]] = defaultdict(list)
    restart: dict[str, float] = {}
    with (
        RtpEndpoint() as sink,
        sipp_background("uas_answer.xml", workdir=tmp / "agents", keys={"rtp_port": sink.port},
                        timeout=600) as phones,
        sipp_background("uas_trunk_auth.xml", workdir=tmp / "trunk", keys={"rtp_port": sink.port},
                        replace={"[number]": r"\+1555[0-9]+", "[caller_id]": CALLER_ID,
                                 'milliseconds="1500"': f'milliseconds="{args.talk_ms}"'},
                        timeout=600, extra=["-trace_msg", "-message_file", str(trace)]) as trunk,
    ):
        sections: dict[str, Any] = {
            "sip": {"t1_ms": 100}, "asr": {"engine": "none"}, "log": {"level": "warning"},
            "queue support": {"ring_timeout": "10"},
            "trunk": {"uri": f"sip:{trunk.address}", "username": "trunkuser", "password": "trunk-secret",
                      "caller_id": CALLER_ID},
            "callbacks": {"retries": "2", "retry_interval": "5"}}
        deadline = time.monotonic() + 300
        with running_service(tmp, rtp_pairs=2 * args.agents + 20, **sections) as svc:
            asyncio.run(create_agents(svc, args.agents, phones.address))
            asyncio.run(request_all(svc, args.callbacks))
            asyncio.run(drive(svc, args.agents, frees, args.restart_at, deadline))
            restart["stop"] = time.time()
        with running_service(tmp, rtp_pairs=2 * args.agents + 20, **sections) as svc:
            restart["up"] = time.time()
            asyncio.run(drive(svc, args.agents, frees, args.callbacks, deadline))
            rows = asyncio.run(final_rows(svc))
            log_tail = svc.log[-2000:]
        trunk_result = trunk.stop()
    invites = trunk_invites(trace)
    lat: list[float] = []
    by_number = {r["number"]: r for r in rows}
    for num, row in by_number.items():
        got = invites.get(num, [])
        if not got or not row["history"]:
            continue
        agent = row["history"][-1]["agent_id"]
        at = got[0][0]
        before = [t for t in frees.get(agent, []) if t <= at]
        if before:
            lat.append(at - max(before))
    states = defaultdict(int)
    for r in rows:
        states[r["state"]] += 1
    calls_per_number = {n: len({c for _, c in invites.get(n, [])}) for n in by_number}
    twice = [n for n, c in calls_per_number.items() if c > 1]
    never = [n for n, c in calls_per_number.items() if c == 0]
    attempts = sum(r["attempts"] for r in rows)
    load = os.getloadavg()
    print(f"callbacks: {len(rows)} requested, states {dict(states)}, attempts {attempts}")
    print(f"restart: stopped after {args.restart_at} done, up again in "
          f"{restart['up'] - restart['stop']:.1f} s")
    print(f"trunk: {sum(len(v) for v in invites.values())} authorised INVITEs for {len(invites)} numbers; "
          f"numbers called twice: {len(twice)}; never called: {len(never)}; "
          f"sipp trunk {trunk_result.successful} ok / {trunk_result.failed} failed")
    if lat:
        ms = np.array(lat) * 1000
        print(f"agent free -> customer INVITE at the trunk ({len(ms)} callbacks): "
              f"p50 {np.percentile(ms, 50):.0f} ms, p99 {np.percentile(ms, 99):.0f} ms, "
              f"max {ms.max():.0f} ms")
    print(f"load average during the run (1/5/15 min): {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
          f"{os.cpu_count()} cores")
    ok = states.get("done", 0) == args.callbacks and not twice and not never
    if not ok:
        print(log_tail)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
