"""Agent affinity and continued interactions through the whole desk (SQLite, the queue engine, a
fake connector), on virtual time: `transfer_queue(..., prefer_agent=, prefer_for=, continues=)`."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cti.agents import AgentStore
from cti.db import migrate, open_database
from cti.events import EventBus
from cti.queues import AgentState, QueueEngine, QueueSpec
from cti.routing import AgentDesk
from cti.store import CustomerStore, NewInteraction
from tests.desk_fakes import FakeCall, FakeConnector
from voice.ivr.vtime import run_virtual


async def desk_with_two_agents(tmp_path: Path, connector: FakeConnector) -> tuple[AgentDesk, Any]:
    loop = asyncio.get_running_loop()
    db = open_database(f"sqlite+aiosqlite:///{tmp_path / 'voice.db'}")
    await migrate(db)
    agents = AgentStore(db)
    for agent_id in ("ann", "bob"):
        await agents.create_agent(agent_id=agent_id, name=agent_id.title(),
                                  sip_uri=f"sip:{agent_id}@127.0.0.1", skills=["support"], password=None)
    desk = AgentDesk(store=CustomerStore(db), agents=agents, bus=EventBus(), connector=connector,
                     engine=QueueEngine([QueueSpec(name="support", timeout=120)]), clock=loop.time)
    await desk.start()
    return desk, db


def pops_of(desk: AgentDesk) -> list[dict[str, Any]]:
    pops: list[dict[str, Any]] = []
    desk.bus.add_listener(lambda _agent, event: pops.append(event) if event.get("type") == "screen_pop"
                          else None)
    return pops


def test_the_preferred_agent_rings_first_when_free_within_prefer_for(tmp_path: Path) -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        connector = FakeConnector({"ann": 1.0, "bob": 1.0})
        desk, db = await desk_with_two_agents(tmp_path, connector)
        pops = pops_of(desk)
        try:
            store = desk.store
            chat = await store.ingest(NewInteraction(
                channel="chat", direction="inbound", started_at=datetime.now(UTC), status="open",
                identities=[("phone", "+4930111")], agent="Ann", subject="a late refund",
                summary="refund not received", queue="support"))
            assert chat.customer_id is not None
            await desk.set_agent_state("bob", AgentState.AVAILABLE)
            await desk.set_agent_state("ann", AgentState.ON_CALL, "other-call")  # busy for now
            call = FakeCall("aff-1", "+4930111", customer_id=chat.customer_id, identified_by="caller_id")
            routed = asyncio.ensure_future(desk.transfer_queue(
                call, "support", prefer_agent="Ann", prefer_for=30, continues=chat.interaction_id))
            await asyncio.sleep(10)
            assert connector.dialled == []  # bob is free, but the caller waits for ann
            await desk.set_agent_state("ann", AgentState.AVAILABLE)
            outcome = await routed
            assert outcome.ok and outcome.agent_id == "ann" and 10 <= outcome.waited < 12
            assert [d[1] for d in connector.dialled] == ["ann"]
            pop = pops[-1]
            assert pop["agent_id"] == "ann" and pop["continues"] == chat.interaction_id
            assert pop["continued"]["channel"] == "chat"
            assert pop["continued"]["summary"] == "refund not received"
            assert pop["continued"]["queue"] == "support"

            # ann stays busy: after prefer_for seconds of waiting, anyone with the skill (bob)
            await desk.set_agent_state("ann", AgentState.ON_CALL, "other-call")
            await desk.set_agent_state("bob", AgentState.AVAILABLE)
            call = FakeCall("aff-2", "+4930111", customer_id=chat.customer_id)
            t0 = loop.time()
            outcome = await desk.transfer_queue(call, "support", prefer_agent="ann", prefer_for=30)
            assert outcome.ok and outcome.agent_id == "bob"
            assert 30 <= outcome.waited < 32 and loop.time() - t0 < 33
            assert "continues" not in pops[-1]  # nothing continued: no line on the pop
        finally:
            await desk.close()
            await db.dispose()

    run_virtual(scenario())


def test_another_customers_interaction_is_never_shown_as_continued(tmp_path: Path) -> None:
    async def scenario() -> None:
        connector = FakeConnector({"ann": 0.5})
        desk, db = await desk_with_two_agents(tmp_path, connector)
        pops = pops_of(desk)
        try:
            mine = await desk.store.ingest(NewInteraction(
                channel="chat", direction="inbound", started_at=datetime.now(UTC),
                identities=[("phone", "+4930111")], subject="mine"))
            theirs = await desk.store.ingest(NewInteraction(
                channel="chat", direction="inbound", started_at=datetime.now(UTC),
                identities=[("phone", "+4930999")], subject="someone else's"))
            await desk.set_agent_state("ann", AgentState.AVAILABLE)
            call = FakeCall("aff-3", "+4930111", customer_id=mine.customer_id)
            outcome = await desk.transfer_queue(call, "support", continues=theirs.interaction_id)
            assert outcome.ok and "continues" not in pops[-1] and pops[-1]["found"]
        finally:
            await desk.close()
            await db.dispose()

    run_virtual(scenario())
