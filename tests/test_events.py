"""The event bus: in-process delivery, and two nodes on one PostgreSQL through LISTEN/NOTIFY."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from cti.events import INLINE_LIMIT, SUBSCRIBER_BUFFER, EventBus, PostgresEventBus, asyncpg_dsn, make_bus
from tests.agents_helpers import (
    BEARER,
    desk_of,
    inbound_call,
    make_agent,
    next_of,
    running_app,
    seed_customer,
    sign_in,
)
from tests.cti.conftest import PG_DSN, PG_URL, Target
from tests.desk_fakes import FakeConnector


async def test_in_process_delivery_reaches_the_agents_subscribers_and_every_listener() -> None:
    bus = make_bus("sqlite+aiosqlite:///x.db")
    assert type(bus) is EventBus
    heard: list[tuple[str | None, str]] = []
    bus.add_listener(lambda agent, ev: heard.append((agent, ev["type"])))
    ann, ann2, bob = bus.subscribe("ann"), bus.subscribe("ann"), bus.subscribe("bob")
    await bus.publish("ann", {"type": "screen_pop", "call_id": "c1"})
    await bus.publish(None, {"type": "agent"})
    first, second = ann.queue.get_nowait(), ann2.queue.get_nowait()
    assert first is second and first["call_id"] == "c1" and first["id"] and first["sent_at"] > 0
    assert bob.queue.empty() and heard == [("ann", "screen_pop"), (None, "agent")]
    ann2.close()
    assert bus.connected("ann") == 1
    for i in range(SUBSCRIBER_BUFFER + 1):  # a websocket that never reads is cut off, not buffered forever
        await bus.publish("bob", {"type": "state", "n": i})
    assert bob.overflowed and bob.queue.qsize() == SUBSCRIBER_BUFFER


def test_the_asyncpg_dsn_comes_from_the_database_url() -> None:
    assert asyncpg_dsn("postgresql+asyncpg://u:p@db:5432/voice") == "postgresql://u:p@db:5432/voice"
    assert asyncpg_dsn("sqlite+aiosqlite:///data/voice.db") is None


@pytest.fixture
async def pg_schema() -> AsyncIterator[str]:
    schema = f"cti_test_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(PG_DSN)
    try:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
        yield schema
    finally:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()


async def _until(check: Any, timeout: float = 5.0) -> None:
    async def poll() -> None:
        while not check():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), timeout)


@pytest.mark.postgres
async def test_a_call_on_node_a_pops_on_node_b_through_listen_notify(pg_schema: str) -> None:
    target = Target("postgres", PG_URL, pg_schema)
    connector = FakeConnector({"ann": 0.0}, talk=None)
    async with running_app(target, connector=connector) as node_a, running_app(target) as node_b:
        desk_a, desk_b = desk_of(node_a), desk_of(node_b)
        assert isinstance(desk_a.bus, PostgresEventBus) and isinstance(desk_b.bus, PostgresEventBus)
        await seed_customer(node_a)
        await make_agent(node_a, "ann", ["support"])
        await _until(lambda: "ann" in desk_b.engine.agents)  # node B heard of the new agent
        await sign_in(node_b, "ann")  # the session is in the shared database: any node accepts it
        async with node_b.ws_connect("/api/v1/agents/ann/events") as ws:
            await next_of(ws, "hello")
            assert (await node_b.post("/agent/api/state", json={"state": "available"})).status == 200
            assert (await next_of(ws, "state"))["state"] == "available"
            await _until(lambda: desk_a.engine.agents["ann"].state == "available")

            call, interaction_id = await inbound_call(node_a, "pg-call@test")
            routed = asyncio.ensure_future(desk_a.transfer_queue(call, "support"))
            pop = await next_of(ws, "screen_pop")
            assert pop["call_id"] == call.key and pop["customer"]["name"] == "Anna Schmidt"
            assert pop["interaction_id"] == interaction_id and pop["ivr"]["path"][-1] == "support"
            await _until(lambda: desk_b.engine.agents["ann"].state == "on_call")
            # node B holds the page: a reload there shows the call node A is bridging
            async with node_b.ws_connect("/api/v1/agents/ann/events") as tab:
                assert (await next_of(tab, "hello"))["call"]["call_id"] == call.key
            # the page on node B accepts the call node A offered
            assert (await node_b.post("/agent/api/accept", json={"call_id": call.key})).status == 200
            connector.connections[0].finish("agent", 5.0)
            outcome = await asyncio.wait_for(routed, 5)
            assert outcome.ok and outcome.agent_id == "ann" and [d[1] for d in connector.dialled] == ["ann"]
            await _until(lambda: desk_b.engine.agents["ann"].state == "wrap_up")

            # Too big for a NOTIFY payload: it travels through agent_events by reference.
            big = {"call_id": "big@test", "transcript": [{"text": "x" * 100, "n": i} for i in range(200)]}
            await desk_a.publish_screen_pop("ann", big)
            got = await next_of(ws, "screen_pop")
            assert got["call_id"] == "big@test" and len(got["transcript"]) == 200
            assert got["transcript"][199] == {"text": "x" * 100, "n": 199}
        conn = await asyncpg.connect(PG_DSN, server_settings={"search_path": pg_schema})
        try:
            assert await conn.fetchval("SELECT count(*) FROM agent_events") == 1
            assert len(str(big)) > INLINE_LIMIT
        finally:
            await conn.close()
        queues = await (await node_b.get("/api/v1/queues", headers=BEARER)).json()
        assert queues["agents"][0]["state"] == "wrap_up"


@pytest.mark.postgres
async def test_two_nodes_never_give_one_agent_two_calls(pg_schema: str) -> None:
    target = Target("postgres", PG_URL, pg_schema)
    connector = FakeConnector({"ann": 0.0}, talk=None)
    async with running_app(target, connector=connector) as node_a, \
            running_app(target, connector=connector) as node_b:
        desk_a, desk_b = desk_of(node_a), desk_of(node_b)
        await make_agent(node_a, "ann", ["support"], state="available")
        await _until(lambda: desk_b.engine.agents.get("ann") is not None
                     and desk_b.engine.agents["ann"].state == "available")
        call_a, _ = await inbound_call(node_a, "race-a@test", caller="+4930111")
        call_b, _ = await inbound_call(node_b, "race-b@test", caller="+4930222")
        tasks = {asyncio.ensure_future(desk_a.route_to_queue(call_a, "support")): call_a,
                 asyncio.ensure_future(desk_b.route_to_queue(call_b, "support")): call_b}
        await _until(lambda: len(connector.connections) == 1, 10)
        await asyncio.sleep(0.3)  # the other node had time to offer ann too, if it were going to
        assert len(connector.dialled) == 1
        connector.connections[0].finish()
        done, pending = await asyncio.wait(tasks, timeout=10, return_when=asyncio.FIRST_COMPLETED)
        assert len(done) == 1
        winner = next(iter(done)).result()
        assert winner.ok and winner.agent_id == "ann"
        (loser_task,) = pending
        tasks[loser_task].hang_up()  # the other caller gives up waiting
        loser = await asyncio.wait_for(loser_task, 5)
        assert loser.reason == "abandoned" and len(connector.dialled) == 1
