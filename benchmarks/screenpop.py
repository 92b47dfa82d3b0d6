"""Benchmark: screen pop latency with 200 agents connected and calls arriving at 20 per second.

    .venv/bin/python benchmarks/screenpop.py [--db sqlite|postgres|both] [--agents 200] [--rate 20]
        [--seconds 15] [--hold 2.0]

Drives the real path of a queued call except the SIP leg: every call is an in-memory CallView
(tests.desk_fakes.FakeCall) whose interaction is written as the service writes it; it enters
`AgentDesk.route_to_queue("support")`, which picks the longest-idle agent, reserves them in the
database, publishes the state change, runs the CTI lookup, builds and publishes the screen pop, and
then calls the `AgentConnector` (here: one that notes the moment the INVITE would be sent and
answers at once). Agents hang up after `--hold` seconds (the desk puts them in wrap-up) and become
available again. Each agent is an aiohttp websocket client on
`/api/v1/agents/{id}/events`.

Reported, p50/p99/max in ms:
- "queue -> pop": from the call entering the queue to the pop arriving on the agent's websocket
  (includes the reservation write, the lookup and the delivery; an upper bound of the issue's figure);
- "INVITE -> pop": from the moment `connect` starts (the agent leg's INVITE) to the pop arriving.
  The pop is published just before `connect` is called, so this is the last hop's delivery time
  (negative would mean the pop was on screen before the INVITE left).

SQLite: one node, in-process delivery. PostgreSQL: two nodes (two applications, in this process)
on one database; calls land on node A, every websocket is connected to node B, so each pop
crosses LISTEN/NOTIFY. Target (issue 6): p99 < 100 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cti.history import CallHistory  # noqa: E402
from cti.http import build_api  # noqa: E402
from cti.routing import AgentDesk  # noqa: E402
from cti.store import NewInteraction  # noqa: E402
from cti.web import CONNECTOR_KEY, DESK_KEY  # noqa: E402
from tests.desk_fakes import FakeCall, FakeConnection  # noqa: E402
from voice.config import Config, CtiConfig, DatabaseConfig, HostPort, HttpConfig  # noqa: E402

PG_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"
KEY = "bench-key-0123456789abcdef"


class Connector:
    """Answers at once; the agent hangs up `hold` seconds later."""

    def __init__(self, hold: float) -> None:
        self.hold = hold
        self.invited: dict[str, float] = {}

    async def connect(self, call: Any, agent_uri: str, *, timeout: float) -> FakeConnection:
        self.invited[call.key] = time.perf_counter()
        conn = FakeConnection(answered=True, status=200, reason="OK")
        asyncio.get_running_loop().call_later(self.hold, conn.finish, "agent", self.hold)
        return conn


class Node:
    def __init__(self, url: str, schema: str | None, connector: Connector | None = None) -> None:
        config = Config(http=HttpConfig(listen=HostPort(host="127.0.0.1", port=0), api_keys=(KEY,)),
                        database=DatabaseConfig(url=url), cti=CtiConfig(default_country="DE"))
        self.app = build_api(config, schema=schema)
        if connector is not None:
            self.app[CONNECTOR_KEY] = connector
        self.runner = web.AppRunner(self.app, access_log=None)
        self.port = 0

    async def start(self) -> None:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    @property
    def desk(self) -> AgentDesk:
        return self.app[DESK_KEY]

    async def close(self) -> None:
        await self.runner.cleanup()


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def seed(desk: AgentDesk, agents: int, callers: int) -> None:
    now = datetime.now(UTC)
    for i in range(callers):
        for k, channel in enumerate(("chat", "email", "voice")):
            await desk.store.ingest(NewInteraction(
                channel=channel, direction="inbound", started_at=now - timedelta(days=k + 1),
                identities=[("phone", f"+49301{i:06d}")], name=f"Customer {i}",
                summary=f"{channel} about order {i}-{k}"))
    for i in range(agents):
        await desk.agents.create_agent(agent_id=f"agent{i:03d}", name=f"Agent {i}",
                                       sip_uri=f"sip:agent{i}@127.0.0.1", skills=["support"], password=None)
    await desk.reload_agents()


async def run(db: str, args: argparse.Namespace) -> dict[str, Any]:
    schema = None
    tmp = tempfile.TemporaryDirectory()
    if db == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp.name}/voice.db"
    else:
        url, schema = PG_URL, f"bench_{uuid.uuid4().hex[:10]}"
        conn = await asyncpg.connect(PG_DSN)
        await conn.execute(f'CREATE SCHEMA "{schema}"')
        await conn.close()
    connector = Connector(args.hold)
    node_a = Node(url, schema, connector)
    await node_a.start()
    node_b = node_a
    if db == "postgres":
        node_b = Node(url, schema)
        await node_b.start()
    desk_a = node_a.desk
    try:
        await seed(desk_a, args.agents, callers=200)
        if node_b is not node_a:
            await node_b.desk.reload_agents()
        for i in range(args.agents):
            await desk_a.set_agent_state(f"agent{i:03d}", "available")
        arrived: dict[str, float] = {}
        queued: dict[str, float] = {}
        invited = connector.invited
        session = aiohttp.ClientSession(headers={"Authorization": f"Bearer {KEY}"},
                                        connector=aiohttp.TCPConnector(limit=0))  # 200 sockets stay open
        sockets = []
        for i in range(args.agents):
            ws = await session.ws_connect(f"http://127.0.0.1:{node_b.port}/api/v1/agents/agent{i:03d}/events")
            sockets.append(ws)

        async def reader(ws: aiohttp.ClientWebSocketResponse) -> None:
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                t = time.perf_counter()
                if '"screen_pop"' in msg.data:
                    event = msg.json()
                    arrived[event["call_id"]] = t

        readers = [asyncio.ensure_future(reader(ws)) for ws in sockets]
        await asyncio.sleep(0.5)  # every socket past its hello

        history = CallHistory(desk_a.store)

        async def one_call(n: int) -> None:
            call_id = f"bench-{n}@{db}"
            caller = f"+49301{n % 200:06d}"
            iid = await history.call_started(call_id=call_id, caller=caller, caller_name=None, dialled="100",
                                             started_at=datetime.now(UTC))
            call = FakeCall(call_id, caller, interaction_id=iid)
            desk_a.live.add(call.key, call_id=call_id, caller=caller, dialled="100", flow="main",
                            interaction_id=iid)
            hook = desk_a.live.ivr_hook(call.key)
            for node in ("welcome", "menu", "support"):
                hook("node", {"flow": "main", "node": node})
            queued[call.key] = time.perf_counter()
            outcome = await desk_a.route_to_queue(call, "support", timeout=30)
            call.hang_up()
            if outcome.ok and outcome.agent_id:  # the desk put them in wrap-up: done at once
                await desk_a.set_agent_state(outcome.agent_id, "available")
            desk_a.live.remove(call.key)

        total = int(args.rate * args.seconds)
        tasks = []
        t_start = time.perf_counter()
        for n in range(total):
            # calls arrive on a fixed schedule, not after the previous one finished
            delay = t_start + n / args.rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(one_call(n)))
        await asyncio.gather(*tasks)
        await asyncio.sleep(0.5)
        for r in readers:
            r.cancel()
        for ws in sockets:
            await ws.close()
        await session.close()
        done = [c for c in queued if c in arrived]
        queue_to_pop = [(arrived[c] - queued[c]) * 1000 for c in done]
        invite_to_pop = [(arrived[c] - invited[c]) * 1000 for c in done if c in invited]
        return {"db": db, "calls": total, "pops": len(done),
                "queue_to_pop": queue_to_pop, "invite_to_pop": invite_to_pop}
    finally:
        if node_b is not node_a:
            await node_b.close()
        await node_a.close()
        if schema:
            conn = await asyncpg.connect(PG_DSN)
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            await conn.close()
        tmp.cleanup()


def report(r: dict[str, Any]) -> None:
    print(f"{r['db']}: {r['calls']} calls, {r['pops']} pops delivered")
    for name in ("queue_to_pop", "invite_to_pop"):
        v = r[name]
        if v:
            print(f"  {name.replace('_to_', ' -> '):14s} p50 {statistics.median(v):7.1f} ms   "
                  f"p99 {pct(v, 99):7.1f} ms   max {max(v):7.1f} ms")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--agents", type=int, default=200)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--hold", type=float, default=2.0)
    args = parser.parse_args()
    for db in (["sqlite", "postgres"] if args.db == "both" else [args.db]):
        report(await run(db, args))


if __name__ == "__main__":
    asyncio.run(main())
