"""The ACD engine as a pure object: longest idle first, order of arrival, positions, RONA, timeouts."""

from __future__ import annotations

import pytest

from cti.queues import AgentState, QueueEngine, QueueError, QueueSpec


def engine_with(*agents: tuple[str, set[str], float], specs: tuple[QueueSpec, ...] = ()) -> QueueEngine:
    engine = QueueEngine(specs)
    for agent_id, skills, since in agents:
        engine.upsert_agent(agent_id, name=agent_id.title(), sip_uri=f"sip:{agent_id}@pbx", skills=skills)
        engine.set_state(agent_id, AgentState.AVAILABLE, since)
    return engine


def test_the_longest_idle_agent_with_the_skill_gets_the_call() -> None:
    engine = engine_with(("ann", {"support"}, 30.0), ("bob", {"support", "billing"}, 10.0),
                         ("cid", {"billing"}, 5.0))
    engine.enqueue("c1", "support", now=100.0)
    slot = engine.offer("c1", now=100.0)
    assert slot is not None and slot.id == "bob"  # idle since 10, ann only since 30; cid lacks the skill
    assert slot.state == AgentState.RINGING and slot.call_id == "c1"
    engine.enqueue("c2", "support", now=101.0)
    second = engine.offer("c2", now=101.0)
    assert second is not None and second.id == "ann"
    engine.enqueue("c3", "support", now=102.0)
    assert engine.offer("c3", now=102.0) is None  # nobody left with the skill
    assert engine.position("c3") == 1


def test_callers_are_served_in_order_of_arrival_across_queues() -> None:
    engine = engine_with(("bob", {"support", "billing"}, 10.0))
    engine.set_state("bob", AgentState.AWAY, 11.0)
    engine.enqueue("early", "billing", now=50.0)
    engine.enqueue("late", "support", now=60.0)
    engine.set_state("bob", AgentState.AVAILABLE, 70.0)
    # The later caller asks first, but the older one has the claim on the only agent.
    assert engine.offer("late", now=70.0) is None
    assert engine.assignments() == {"early": "bob"}
    slot = engine.offer("early", now=70.0)
    assert slot is not None and slot.id == "bob"


def test_positions_move_up_as_callers_ahead_leave() -> None:
    engine = engine_with(("ann", {"support"}, 0.0))
    engine.set_state("ann", AgentState.ON_CALL, 1.0)
    for i, t in enumerate((10.0, 11.0, 12.0)):
        engine.enqueue(f"c{i}", "support", now=t)
    engine.enqueue("other", "billing", now=9.0)
    assert engine.positions() == {"c0": 1, "c1": 2, "c2": 3, "other": 1}
    assert engine.lengths() == {"support": 3, "billing": 1}
    engine.abandon("other")
    assert engine.lengths() == {"support": 3}  # ann's skill is a queue even when nobody waits
    engine.abandon("c0")  # the caller hung up: forgotten
    assert engine.position("c1") == 1 and engine.position("c2") == 2
    assert engine.position("c0") is None
    engine.set_state("ann", AgentState.AVAILABLE, 20.0)
    slot = engine.offer("c1", now=20.0)
    assert slot is not None and engine.position("c1") is None  # being offered: out of the line
    assert engine.position("c2") == 1


def test_timeout_is_reported_when_the_clock_passes_the_deadline() -> None:
    engine = engine_with(specs=(QueueSpec(name="support", timeout=60.0),))
    engine.enqueue("c1", "support", now=0.0)
    engine.enqueue("c2", "support", now=30.0, timeout=10.0)
    assert engine.next_deadline() == 40.0
    assert engine.timed_out(39.9) == []
    assert engine.timed_out(40.0) == ["c2"]
    assert engine.timed_out(60.0) == ["c1", "c2"]


def test_no_answer_puts_the_caller_back_in_front_and_the_agent_away() -> None:
    engine = engine_with(("ann", {"support"}, 1.0), ("bob", {"support"}, 2.0))
    engine.enqueue("c1", "support", now=10.0)
    engine.enqueue("c2", "support", now=11.0)
    first = engine.offer("c1", now=12.0)
    assert first is not None and first.id == "ann"
    after = engine.no_answer("c1", now=32.0)
    assert after is not None and after.state == AgentState.AWAY and after.since == 32.0
    # c1 keeps its place ahead of c2 and gets the next agent.
    assert engine.position("c1") == 1 and engine.position("c2") == 2
    nxt = engine.offer("c1", now=32.0)
    assert nxt is not None and nxt.id == "bob"
    connected = engine.answered("c1", now=35.0)
    assert connected.state == AgentState.ON_CALL and "c1" not in engine.calls


def test_no_answer_policy_available_sends_the_agent_to_the_back_and_tries_someone_else() -> None:
    engine = engine_with(("ann", {"support"}, 1.0), ("bob", {"support"}, 2.0),
                         specs=(QueueSpec(name="support", no_answer="available"),))
    engine.enqueue("c1", "support", now=10.0)
    assert engine.offer("c1", now=10.0).id == "ann"  # type: ignore[union-attr]
    after = engine.no_answer("c1", now=30.0)
    assert after is not None and after.state == AgentState.AVAILABLE and after.since == 30.0
    assert engine.offer("c1", now=30.0).id == "bob"  # type: ignore[union-attr]
    engine.no_answer("c1", now=50.0)
    # Everyone has had a go: the round starts again with the longest idle (ann, since 30).
    assert engine.offer("c1", now=50.0).id == "ann"  # type: ignore[union-attr]


def test_a_caller_hanging_up_while_ringing_frees_the_agent_without_losing_their_place() -> None:
    engine = engine_with(("ann", {"support"}, 1.0), ("bob", {"support"}, 2.0))
    engine.enqueue("c1", "support", now=10.0)
    engine.offer("c1", now=10.0)
    engine.abandon("c1")
    ann = engine.agents["ann"]
    assert ann.state == AgentState.AVAILABLE and ann.call_id is None
    engine.enqueue("c2", "support", now=11.0)
    assert engine.offer("c2", now=11.0).id == "ann"  # type: ignore[union-attr]


def test_withdrawn_offer_and_errors() -> None:
    engine = engine_with(("ann", {"support"}, 1.0))
    engine.enqueue("c1", "support", now=10.0)
    with pytest.raises(QueueError):
        engine.enqueue("c1", "support", now=11.0)
    with pytest.raises(QueueError):
        engine.answered("c1", now=11.0)  # never offered
    engine.offer("c1", now=10.0)
    engine.agents["ann"].state = AgentState.ON_CALL  # another node took her: the database said so
    engine.withdraw("c1")
    assert engine.position("c1") == 1 and engine.offer("c1", now=12.0) is None
    with pytest.raises(QueueError):
        engine.set_state("nobody", AgentState.AVAILABLE, 1.0)
    engine.set_state("ann", AgentState.AVAILABLE, 13.0)
    assert engine.offer("c1", now=13.0) is not None
    with pytest.raises(QueueError):
        engine.no_answer("c1", 14.0, policy="ignore")
    assert engine.has_skill("support") and not engine.has_skill("sales")
    finished = engine.call_finished("ann", now=99.0)
    assert finished.state == AgentState.WRAP_UP and finished.since == 99.0


def test_an_agent_who_missed_the_caller_gets_them_again_when_nobody_else_is_free() -> None:
    engine = engine_with(("ann", {"support"}, 1.0), ("bob", {"support"}, 2.0))
    engine.set_state("bob", AgentState.ON_CALL, 3.0)
    engine.enqueue("c1", "support", now=10.0)
    assert engine.offer("c1", now=10.0).id == "ann"  # type: ignore[union-attr]
    engine.no_answer("c1", now=30.0)  # ann goes away
    assert engine.offer("c1", now=30.0) is None
    engine.set_state("ann", AgentState.AVAILABLE, 40.0)  # back; bob is still busy
    assert engine.offer("c1", now=40.0).id == "ann"  # type: ignore[union-attr]


# ---- agent affinity -----------------------------------------------------------------------
def test_a_caller_waits_for_their_preferred_agent_then_takes_anyone_with_the_skill() -> None:
    engine = engine_with(("ann", {"support"}, 10.0), ("bob", {"support"}, 5.0))
    engine.set_state("ann", AgentState.ON_CALL, 20.0)  # busy: soon free again
    engine.enqueue("back", "support", now=100.0, prefer_agent="ann", prefer_for=30.0)
    assert engine.preferred_agent("back", 100.0) == "ann"
    # bob is free and longest idle, but the caller waits for ann...
    assert engine.offer("back", now=110.0) is None and engine.position("back") == 1
    engine.set_state("ann", AgentState.AVAILABLE, 120.0)
    slot = engine.offer("back", now=120.0)
    assert slot is not None and slot.id == "ann"
    # ...for up to prefer_for seconds of waiting: then bob (anyone with the skill) will do
    engine.enqueue("later", "support", now=200.0, prefer_agent="ann", prefer_for=30.0)
    assert engine.offer("later", now=229.9) is None
    assert engine.preferred_agent("later", 230.0) is None
    slot = engine.offer("later", now=230.0)
    assert slot is not None and slot.id == "bob"


def test_the_preferred_agent_goes_to_their_caller_before_older_callers() -> None:
    engine = engine_with(("ann", {"support"}, 50.0), ("bob", {"support"}, 10.0))
    engine.enqueue("old", "support", now=100.0)
    engine.enqueue("back", "support", now=101.0, prefer_agent="Ann", prefer_for=30.0)  # by name
    # bob is idle longest and would go to the oldest caller anyway; ann is reserved for "back"
    assert engine.assignments(101.0) == {"back": "ann", "old": "bob"}
    engine.set_state("bob", AgentState.AWAY, 102.0)
    # only ann is free: the caller who asked for her gets her, the older caller waits
    assert engine.assignments(102.0) == {"back": "ann"}
    assert engine.assignments(131.0) == {"old": "ann"}  # affinity over: order of arrival again


@pytest.mark.parametrize(("prefer", "state", "skills"), [
    ("zoe", AgentState.ON_CALL, {"support"}),  # no such agent
    ("ann", AgentState.AWAY, {"support"}),  # signed out / not taking calls: nothing to wait for
    ("ann", AgentState.ON_CALL, {"billing"}),  # cannot take this queue
])
def test_no_waiting_for_an_agent_who_cannot_take_the_call(prefer: str, state: AgentState,
                                                          skills: set[str]) -> None:
    engine = engine_with(("ann", skills, 10.0), ("bob", {"support"}, 5.0))
    engine.set_state("ann", state, 20.0)
    engine.enqueue("back", "support", now=100.0, prefer_agent=prefer, prefer_for=30.0)
    assert engine.preferred_agent("back", 100.0) is None
    slot = engine.offer("back", now=100.0)
    assert slot is not None and slot.id == "bob"


def test_an_unanswered_preferred_agent_ends_the_affinity() -> None:
    engine = engine_with(("ann", {"support"}, 10.0), ("bob", {"support"}, 5.0))
    engine.set_state("bob", AgentState.ON_CALL, 6.0)
    engine.enqueue("back", "support", now=100.0, prefer_agent="ann", prefer_for=60.0)
    slot = engine.offer("back", now=100.0)
    assert slot is not None and slot.id == "ann"
    engine.no_answer("back", 120.0, policy="available")  # ann let it ring out, stays available
    engine.set_state("bob", AgentState.AVAILABLE, 121.0)
    slot = engine.offer("back", now=121.0)
    assert slot is not None and slot.id == "bob"  # not ann again, although 60 s have not passed
