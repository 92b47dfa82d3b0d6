"""Automatic call distribution as a pure object: no I/O, no clock of its own.

Rules (the whole contract):
- An agent is in one state: available, ringing (offered a call), on_call, wrap_up, away.
  `since` is when the agent entered that state; longest idle = available for the longest time.
  Ringing keeps the `since` of available, so an offer that comes to nothing (the caller hung up)
  leaves the agent's place in the idle order as it was.
- Callers wait in a named queue; a queue's skill is its name unless configured otherwise.
  Waiting callers are served in the order they arrived, across queues: the greedy matching walks
  the callers oldest first and gives each the longest-idle available agent with the skill that no
  older caller took. A caller's position is its rank among the callers of its own queue.
- An offer moves the agent to ringing and the caller out of the waiting line. Agent answers:
  on_call. Agent does not answer (RONA): the caller goes back to the front of its line (it keeps
  its arrival time) and the agent becomes `away` (policy "away", the default: a phone nobody
  answers should not get the next caller either) or `available` again at the back of the idle
  order (policy "available").
- A caller who hangs up is forgotten; a caller whose deadline passes times out (the flow's
  overflow branch takes over).
- Agent affinity: a caller may prefer one agent (the one who handled their last contact) for
  the first `prefer_for` seconds of waiting. While the preference holds, that agent is offered
  to them before anyone else (even before older callers), and nobody else is: the caller waits
  for them. It ends at `prefer_until`, when that agent lets the caller ring out, or when the
  agent cannot take the call at all (unknown, without the queue's skill, or away: signed out
  or not taking calls); from then on the caller is matched like everyone else, keeping their
  place in the line.

Every method takes `now` (seconds, any monotonic clock), so tests move the clock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from enum import StrEnum


class AgentState(StrEnum):
    AVAILABLE = "available"
    RINGING = "ringing"
    ON_CALL = "on_call"
    WRAP_UP = "wrap_up"
    AWAY = "away"


NO_ANSWER_POLICIES = ("away", "available")


class QueueError(Exception):
    pass


@dataclass(kw_only=True)
class AgentSlot:
    id: str
    name: str
    sip_uri: str
    skills: frozenset[str]
    state: AgentState = AgentState.AWAY
    since: float = 0.0
    call_id: str | None = None  # the call offered to or connected with the agent


@dataclass(frozen=True, kw_only=True)
class QueueSpec:
    name: str
    skill: str = ""  # empty: the queue's name
    timeout: float = 300.0  # seconds a caller waits before the overflow branch
    ring_timeout: float = 20.0  # seconds an agent's phone rings before the next agent
    no_answer: str = "away"
    music: str | None = None  # music on hold file (None: the built-in tune)
    announce_interval: float = 30.0  # seconds between position announcements (0: on change only)
    ringing: str = "music"  # while an agent's phone rings the caller hears: music | ringback
    overflow: str | None = None  # the queue a caller moves to when the timeout passes
    service_level: float = 20.0  # seconds: answered within counts as within the service level
    callback_key: str = ""  # the key a waiting caller presses to be called back ("": not offered)

    @property
    def required_skill(self) -> str:
        return self.skill or self.name


@dataclass(kw_only=True)
class Waiting:
    call_id: str
    queue: str
    skill: str
    arrived: float  # order of service; kept when an offer fails
    deadline: float
    offered_to: str | None = None
    tried: set[str] = field(default_factory=set)  # agents that let it ring out: offered last
    prefer_agent: str | None = None  # agent affinity: the agent this caller waits for first...
    prefer_until: float = 0.0  # ...until this time
    accepts: Callable[[AgentSlot], bool] | None = None  # which agents may take it (None: any with the skill)


class QueueEngine:
    def __init__(self, specs: Iterable[QueueSpec] = (), *, default_timeout: float = 300.0,
                 ring_timeout: float = 20.0, no_answer: str = "away",
                 defaults: QueueSpec | None = None) -> None:
        """`defaults` (the config's [queues]) is the spec of every queue not in `specs`; without
        it, the keywords give one."""
        self.specs = {s.name: s for s in specs}
        self.defaults = defaults or QueueSpec(name="", timeout=default_timeout, ring_timeout=ring_timeout,
                                              no_answer=no_answer)
        self.agents: dict[str, AgentSlot] = {}
        self.calls: dict[str, Waiting] = {}  # waiting or being offered

    # ---- configuration -------------------------------------------------------------------
    def spec(self, queue: str) -> QueueSpec:
        return self.specs.get(queue) or replace(self.defaults, name=queue, skill="")

    def upsert_agent(self, agent_id: str, *, name: str, sip_uri: str, skills: Iterable[str],
                     state: AgentState | str | None = None, since: float = 0.0) -> AgentSlot:
        slot = self.agents.get(agent_id)
        if slot is None:
            slot = self.agents[agent_id] = AgentSlot(id=agent_id, name=name, sip_uri=sip_uri,
                                                     skills=frozenset(skills), since=since)
        slot.name, slot.sip_uri, slot.skills = name, sip_uri, frozenset(skills)
        if state is not None and AgentState(state) != slot.state:
            slot.state, slot.since = AgentState(state), since
        return slot

    def remove_agent(self, agent_id: str) -> None:
        self.agents.pop(agent_id, None)

    def has_skill(self, skill: str) -> bool:
        """Is there any agent (in any state) who could ever take this queue?"""
        return any(skill in a.skills for a in self.agents.values())

    # ---- agent states --------------------------------------------------------------------
    def set_state(self, agent_id: str, state: AgentState | str, now: float) -> AgentSlot:
        slot = self.agents.get(agent_id)
        if slot is None:
            raise QueueError(f"no agent {agent_id!r}")
        state = AgentState(state)
        if state != slot.state:
            slot.state, slot.since = state, now
        if state in (AgentState.AVAILABLE, AgentState.AWAY):
            slot.call_id = None
        return slot

    # ---- callers -------------------------------------------------------------------------
    def enqueue(self, call_id: str, queue: str, now: float, timeout: float | None = None, *,
                prefer_agent: str | None = None, prefer_for: float = 0.0) -> Waiting:
        """A caller enters `queue`; `prefer_agent` (an agent's id or name) is offered to them first
        for up to `prefer_for` seconds (see the module doc)."""
        if call_id in self.calls:
            raise QueueError(f"call {call_id!r} is already queued")
        spec = self.spec(queue)
        preferred = self.find_agent(prefer_agent) if prefer_agent and prefer_for > 0 else None
        entry = Waiting(call_id=call_id, queue=queue, skill=spec.required_skill, arrived=now,
                        deadline=now + (spec.timeout if timeout is None else timeout),
                        prefer_agent=preferred.id if preferred else None,
                        prefer_until=now + prefer_for if preferred else 0.0)
        self.calls[call_id] = entry
        return entry

    def find_agent(self, ref: str) -> AgentSlot | None:
        """The agent `ref` names: their id, else the one agent with that name (any case)."""
        slot = self.agents.get(ref)
        if slot is not None:
            return slot
        named = [a for a in self.agents.values() if a.name.strip().lower() == ref.strip().lower()]
        return named[0] if len(named) == 1 else None

    def preferred_agent(self, call_id: str, now: float | None = None) -> str | None:
        """The agent this caller is waiting for now (affinity still holds), else None. `now`
        None: the time limit is not checked, only the agent's state."""
        entry = self.calls.get(call_id)
        return None if entry is None else self._preference(entry, now)

    def _preference(self, w: Waiting, now: float | None) -> str | None:
        if w.prefer_agent is None or (now is not None and now >= w.prefer_until):
            return None
        slot = self.agents.get(w.prefer_agent)
        if slot is None or w.skill not in slot.skills or slot.state == AgentState.AWAY or slot.id in w.tried:
            return None
        return slot.id

    def abandon(self, call_id: str) -> None:
        """The caller hung up (or timed out, or was connected): forget them."""
        entry = self.calls.pop(call_id, None)
        if entry is not None and entry.offered_to:
            slot = self.agents.get(entry.offered_to)
            if slot is not None and slot.state == AgentState.RINGING and slot.call_id == call_id:
                slot.state, slot.call_id = AgentState.AVAILABLE, None  # ringing kept the idle `since`

    def waiting(self, queue: str | None = None) -> list[Waiting]:
        """Callers not being offered, oldest first."""
        out = [w for w in self.calls.values() if w.offered_to is None and (queue is None or w.queue == queue)]
        return sorted(out, key=lambda w: (w.arrived, w.call_id))

    def position(self, call_id: str) -> int | None:
        """1 = next in line; None while being offered or when not queued."""
        entry = self.calls.get(call_id)
        if entry is None or entry.offered_to is not None:
            return None
        return [w.call_id for w in self.waiting(entry.queue)].index(call_id) + 1

    def positions(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for queue in {w.queue for w in self.calls.values()}:
            out.update({w.call_id: i + 1 for i, w in enumerate(self.waiting(queue))})
        return out

    def lengths(self) -> dict[str, int]:
        """Callers waiting per queue: every configured queue and every agent skill, even when empty."""
        names = set(self.specs) | {s for a in self.agents.values() for s in a.skills}
        out = {name: 0 for name in sorted(names)}
        for w in self.calls.values():
            if w.offered_to is None:
                out[w.queue] = out.get(w.queue, 0) + 1
        return out

    def timed_out(self, now: float) -> list[str]:
        """Callers (not being offered) whose deadline has passed; they stay queued until abandoned."""
        return [w.call_id for w in self.waiting() if w.deadline <= now]

    def next_deadline(self) -> float | None:
        return min((w.deadline for w in self.waiting()), default=None)

    # ---- matching ------------------------------------------------------------------------
    def _idle_order(self) -> list[AgentSlot]:
        idle = [a for a in self.agents.values() if a.state == AgentState.AVAILABLE]
        return sorted(idle, key=lambda a: (a.since, a.id))

    def assignments(self, now: float | None = None) -> dict[str, str]:
        """call_id -> agent_id for the callers that an agent is free for now (greedy, oldest first;
        callers waiting for their preferred agent first, see the module doc)."""
        free = self._idle_order()
        out: dict[str, str] = {}
        waiting = self.waiting()
        held: set[str] = set()  # callers whose affinity holds: only their agent will do
        for w in waiting:
            agent_id = self._preference(w, now)
            if agent_id is None:
                continue
            held.add(w.call_id)
            slot = next((a for a in free if a.id == agent_id), None)
            if slot is not None:
                out[w.call_id] = agent_id
                free.remove(slot)
        for w in waiting:
            if w.call_id in held:
                continue
            able = [a for a in free if w.skill in a.skills and (w.accepts is None or w.accepts(a))]
            # An agent who let this caller ring out comes after everyone who has not, not never.
            fresh = [a for a in able if a.id not in w.tried]
            if able:
                agent = (fresh or able)[0]
                out[w.call_id] = agent.id
                free.remove(agent)
        return out

    def offer(self, call_id: str, now: float, agent_id: str | None = None) -> AgentSlot | None:
        """Reserve this caller's agent, if one is free for them now: agent -> ringing. `agent_id`:
        the one `assignments(now)` just gave (saves computing the matching again)."""
        if agent_id is None or self.agents.get(agent_id) is None or \
                self.agents[agent_id].state != AgentState.AVAILABLE or call_id not in self.calls or \
                self.calls[call_id].offered_to is not None:
            agent_id = self.assignments(now).get(call_id)
        if agent_id is None:
            return None
        slot = self.agents[agent_id]
        slot.state, slot.call_id = AgentState.RINGING, call_id
        self.calls[call_id].offered_to = agent_id
        return slot

    def withdraw(self, call_id: str) -> None:
        """The offer could not even start (another node took the agent): back in line, agent untouched."""
        entry = self.calls.get(call_id)
        if entry is not None:
            entry.offered_to = None

    def answered(self, call_id: str, now: float) -> AgentSlot:
        entry = self.calls.get(call_id)
        if entry is None or entry.offered_to is None:
            raise QueueError(f"call {call_id!r} was not offered to anyone")
        del self.calls[call_id]
        slot = self.agents[entry.offered_to]
        slot.state, slot.since, slot.call_id = AgentState.ON_CALL, now, call_id
        return slot

    def no_answer(self, call_id: str, now: float, policy: str | None = None) -> AgentSlot | None:
        """RONA: the caller returns to the front of its line; the agent goes away or back to idle."""
        entry = self.calls.get(call_id)
        if entry is None or entry.offered_to is None:
            return None
        slot = self.agents.get(entry.offered_to)
        entry.tried.add(entry.offered_to)
        entry.offered_to = None
        if slot is None:
            return None
        policy = policy or self.spec(entry.queue).no_answer
        if policy not in NO_ANSWER_POLICIES:
            raise QueueError(f"unknown no-answer policy {policy!r} (use {', '.join(NO_ANSWER_POLICIES)})")
        slot.state = AgentState.AWAY if policy == "away" else AgentState.AVAILABLE
        slot.since, slot.call_id = now, None
        return slot

    def call_finished(self, agent_id: str, now: float, *, wrap_up: bool = True) -> AgentSlot:
        """The agent's call ended: wrap-up (the agent makes themself available) or available."""
        return self.set_state(agent_id, AgentState.WRAP_UP if wrap_up else AgentState.AVAILABLE, now)

    def snapshot(self) -> dict[str, object]:
        return {
            "queues": self.lengths(),
            "agents": {a.id: {"state": a.state.value, "since": a.since, "call_id": a.call_id}
                       for a in self.agents.values()},
        }
