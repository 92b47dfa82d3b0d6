"""Node heartbeats and taking over a lost node, on a moving clock (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from cti.agents import AgentStore
from cti.db import Database
from cti.events import EventBus
from cti.history import CallHistory
from cti.nodes import NodeMonitor, nodes
from cti.queues import AgentState
from cti.store import CustomerStore


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def _call(store: CustomerStore, node: str, call_id: str) -> str:
    history = CallHistory(store, node=node)
    return await history.call_started(key=f"{node}:{call_id};rt;lt", call_id=call_id, caller="+4930123456",
                                      caller_name=None, dialled="100", started_at=datetime.now(UTC))


async def _agent(agents: AgentStore, agent_id: str, state: AgentState, call_id: str | None) -> None:
    await agents.create_agent(agent_id=agent_id, name=agent_id, sip_uri=f"sip:{agent_id}@127.0.0.1",
                              skills=["support"], password=None)
    await agents.set_state(agent_id, state, call_id)


async def test_a_silent_node_is_taken_over_once_its_calls_interrupted_and_its_agents_released(
        db: Database, store: CustomerStore) -> None:
    agents = AgentStore(db)
    lost_call = await _call(store, "n1", "lost-1@x")
    await _call(store, "n1", "lost-2@x")
    kept_call = await _call(store, "n2", "kept@x")
    await _agent(agents, "ringer", AgentState.RINGING, "lost-1@x")
    await _agent(agents, "talker", AgentState.ON_CALL, "lost-2@x")
    await _agent(agents, "other", AgentState.ON_CALL, "kept@x")  # on a live node's call: untouched
    await _agent(agents, "idle", AgentState.WRAP_UP, None)

    bus = EventBus()
    heard: list[tuple[str | None, dict[str, Any]]] = []
    bus.add_listener(lambda agent, ev: heard.append((agent, ev)))
    clock_2, clock_3 = Clock(), Clock()
    n1 = NodeMonitor(db, "n1", interval=1, lost_after=5, clock=Clock())
    n2 = NodeMonitor(db, "n2", interval=1, lost_after=5, bus=bus, clock=clock_2)
    n3 = NodeMonitor(db, "n3", interval=1, lost_after=5, bus=bus, clock=clock_3)
    for monitor in (n1, n2, n3):
        assert await monitor.step() == []
    # n1 goes on beating: never lost, however long the others watch
    for _ in range(3):
        clock_2.now += 4
        clock_3.now += 4
        assert await n1.step() == []
        assert await n2.step() == [] and await n3.step() == []
    # n1 falls silent: after lost_after of n2's own clock, n2 claims it; n3 finds it taken
    clock_2.now += 4.9
    assert await n2.step() == []
    clock_2.now += 0.2
    clock_3.now += 5.1
    made = await n2.step()
    assert await n3.step() == []
    assert [t.node for t in made] == ["n1"] and made[0].by == "n2" and made[0].interrupted == 2
    assert {(a.agent_id, a.was, a.state) for a in made[0].agents} == {
        ("ringer", "ringing", "available"), ("talker", "on_call", "away")}

    lost = await store.get_interaction(lost_call)
    kept = await store.get_interaction(kept_call)
    assert lost is not None and lost["status"] == "interrupted"
    assert kept is not None and kept["status"] == "in_progress"
    states = {a["id"]: (a["state"], a["call_id"]) for a in await agents.list_agents()}
    assert states == {"ringer": ("available", None), "talker": ("away", None),
                      "other": ("on_call", "kept@x"), "idle": ("wrap_up", None)}
    released = [ev for agent, ev in heard if ev["type"] == "released"]
    assert {ev["agent_id"] for ev in released} == {"ringer", "talker"}
    assert all("n1" in ev["reason"] and ev["node"] == "n1" for ev in released)
    state_events = {ev["agent_id"]: ev["state"] for _, ev in heard if ev["type"] == "state"}
    assert state_events == {"ringer": "available", "talker": "away"}

    rows = {r["id"]: r for r in await db.run_read(nodes)}
    assert rows["n1"]["state"] == "lost" and rows["n1"]["taken_over_by"] == "n2"
    # n1 comes back (a restart): up again, watched afresh; n3 stops cleanly and is never taken over
    assert await n1.step() == []
    assert {r["id"]: r["state"] for r in await db.run_read(nodes)}["n1"] == "up"
    await n3.stop()
    clock_2.now += 1
    assert await n2.step() == []
    clock_2.now += 60
    again = await n2.step()  # n1 silent again: lost again (nothing left to interrupt); n3 stays stopped
    assert [(t.node, t.interrupted, t.agents) for t in again] == [("n1", 0, [])]
    rows = {r["id"]: r for r in await db.run_read(nodes)}
    assert rows["n3"]["state"] == "stopped" and rows["n3"]["taken_over_by"] is None
