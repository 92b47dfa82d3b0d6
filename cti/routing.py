"""The agent desk of one node: queues that wait for agents, offers, screen pops, agent states.

`AgentDesk.route_to_queue(call, queue)` is what the IVR's `transfer: queue:NAME` runs (through
`transfer_queue`, the interpreter's hook). The ACD decisions come from the pure `QueueEngine`;
this module adds the waiting, the database (states shared by every node, `reserve` as the
compare-and-set that stops two nodes offering one agent), the events, and the injected
`dial_agent(call, agent) -> bool` that rings the agent's phone and bridges the legs (the SIP side):
True once the agent answered and the legs are bridged, False for no answer, busy or failure.
It is cancelled (and must CANCEL its INVITE) when the ring timeout passes or the caller hangs up.

The screen pop is published just before `dial_agent` starts: the INVITE leaves at that moment,
so the page shows the caller while the phone rings.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, is_dataclass, replace
from datetime import datetime
from typing import Any

from cti.agents import AgentNotFound, AgentStore
from cti.events import EventBus
from cti.live import LiveCalls
from cti.lookup import lookup
from cti.ports import AgentConnection, AgentConnector
from cti.queues import AgentSlot, AgentState, QueueEngine
from cti.store import CustomerStore

log = logging.getLogger("cti.routing")

DialAgent = Callable[[Any, AgentSlot], Awaitable[bool]]
PositionHook = Callable[[Any, int], Awaitable[None]]
MAX_TRANSCRIPT = 100  # segments in a pop: the newest ones; the page can load the rest


@dataclass(frozen=True, kw_only=True)
class QueueOutcome:
    ok: bool
    reason: str  # connected | timeout | abandoned | no_agents | no_dialer
    queue: str
    agent_id: str | None = None
    waited: float = 0.0
    offers: int = 0
    talk_seconds: float = 0.0  # connected: how long the caller and the agent talked
    hangup_by: str | None = None  # connected: "agent" | "caller" | "shutdown"


def _wall(ts: str | datetime | None) -> float:
    if ts is None:
        return 0.0
    if isinstance(ts, str):
        ts = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    return ts.timestamp()


class AgentDesk:
    def __init__(self, *, store: CustomerStore, agents: AgentStore, bus: EventBus,
                 live: LiveCalls | None = None, engine: QueueEngine | None = None, recent: int = 10,
                 clock: Callable[[], float] = time.time, connector: AgentConnector | None = None) -> None:
        self.store = store
        self.agents = agents
        self.bus = bus
        self.live = live or LiveCalls()
        self.engine = engine or QueueEngine()
        self.recent = recent
        self.clock = clock  # wall time: agents' `since` comes from the shared database
        self.dial_agent: DialAgent | None = None
        self.connector = connector
        self._connections: dict[str, AgentConnection] = {}
        if connector is not None:
            self.dial_agent = self._connect
        self.on_position: PositionHook | None = None
        self.library: Any = None  # the service's FlowLibrary, for the admin page
        self._applied: dict[str, float] = {}  # agent -> `since` of the newest state applied
        self._wake: asyncio.Future[None] | None = None

    async def start(self) -> None:
        self.bus.add_listener(self._on_event)
        await self.bus.start()
        await self.reload_agents()

    async def close(self) -> None:
        await self.bus.close()

    async def reload_agents(self) -> None:
        for a in await self.agents.list_agents():
            self.apply_agent(a)
        self._poke()

    def apply_agent(self, a: dict[str, Any], *, with_state: bool = True) -> None:
        """Take an agent as read from the database (fresh: its state wins over older events)."""
        known = a["id"] in self.engine.agents
        slot = self.engine.upsert_agent(a["id"], name=a["name"], sip_uri=a["sip_uri"], skills=a["skills"])
        if with_state or not known:
            self._applied[a["id"]] = self.clock()
            slot.state, slot.since = AgentState(a["state"]), _wall(a["state_since"])
            slot.call_id = a.get("call_id")

    # ---- events ---------------------------------------------------------------------------
    def _on_event(self, agent_id: str | None, event: dict[str, Any]) -> None:
        """Every node hears every agent event: keep this node's engine in step with the database."""
        kind = event.get("type")
        if kind == "state" and agent_id is not None and agent_id in self.engine.agents:
            at = float(event.get("at", 0.0))
            if at >= self._applied.get(agent_id, 0.0):  # a late notification must not undo a newer one
                self._applied[agent_id] = at
                slot = self.engine.agents[agent_id]
                slot.state, slot.since = AgentState(event["state"]), float(event.get("since", at))
                slot.call_id = event.get("call_id")
                self._poke()
        elif kind == "agent" and isinstance(event.get("agent"), dict):
            self.apply_agent(event["agent"], with_state=False)
            self._poke()

    def _poke(self) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)
        self._wake = None

    def _wake_future(self) -> asyncio.Future[None]:
        if self._wake is None:
            self._wake = asyncio.get_running_loop().create_future()
        return self._wake

    async def publish_screen_pop(self, agent_id: str, payload: dict[str, Any]) -> None:
        """Send a screen pop to the agent's websockets, on whichever node they are."""
        await self.bus.publish(agent_id, {**payload, "type": "screen_pop", "agent_id": agent_id})

    async def set_agent_state(self, agent_id: str, state: AgentState | str,
                              call_id: str | None = None) -> None:
        """Record a state in the database, here, and on every other node (and the agent's page)."""
        state = AgentState(state)
        since = (await self.agents.set_state(agent_id, state, call_id)).timestamp()
        await self._state_changed(agent_id, state, since, call_id)

    async def _state_changed(self, agent_id: str, state: AgentState, since: float,
                             call_id: str | None) -> None:
        # `since` orders the idle agents; `at` (when the change happened) orders the events.
        event = {"type": "state", "agent_id": agent_id, "state": state.value, "since": since,
                 "call_id": call_id, "at": time.time()}
        self._on_event(agent_id, event)
        await self.bus.publish(agent_id, event)

    async def agent_call_ended(self, agent_id: str, *, wrap_up: bool = True) -> None:
        """The bridged call is over: the agent goes to wrap-up (and makes themself available)."""
        with contextlib.suppress(AgentNotFound):
            await self.set_agent_state(agent_id, AgentState.WRAP_UP if wrap_up else AgentState.AVAILABLE)

    # ---- screen pop -----------------------------------------------------------------------
    async def build_screen_pop(self, call: Any, agent_id: str, queue: str | None = None) -> dict[str, Any]:
        """Caller, customer (or None), IVR path and inputs, transcript so far, recent history.

        The customer is the one the IVR identified (`call.customer_id`, by account, ...) when it
        did, else the owner of the calling number; `identified_by` says which."""
        info = call.info
        entry = self.live.get(info.call_id)
        identified = getattr(call, "customer_id", None)
        found = await lookup(self.store, customer_id=identified, phone=info.caller,
                             recent=max(self.recent, 20))
        identified_by: str | None = None
        if found["found"]:
            identified_by = "caller_id"
            if identified and found["customer"]["id"] == identified:
                identified_by = getattr(call, "identified_by", None) or "unknown"
        interaction_id = entry.interaction_id if entry and entry.interaction_id else \
            await self.agents.interaction_for_call(info.call_id)
        # This very call is already in the history: the agent wants the ones before it.
        recent = [i for i in found["recent_interactions"] if i["id"] != interaction_id]
        by_channel: dict[str, dict[str, Any]] = {}
        for item in recent:
            by_channel.setdefault(item["channel"], item)
        transcript = [asdict(s) if is_dataclass(s) and not isinstance(s, type) else dict(s)
                      for s in list(getattr(call, "transcript", []))[-MAX_TRANSCRIPT:]]
        return {
            "type": "screen_pop", "call_id": info.call_id, "interaction_id": interaction_id,
            "agent_id": agent_id, "queue": queue,
            "caller": {"number": info.caller, "name": info.caller_name, "dialled": info.dialled},
            "customer": found["customer"], "found": found["found"], "identified_by": identified_by,
            "ivr": {"flow": entry.flow if entry else None, "node": entry.node if entry else None,
                    "path": list(entry.path) if entry else [], "inputs": list(entry.inputs) if entry else []},
            "transcript": transcript,
            "recent_interactions": recent[: self.recent],
            "last_by_channel": by_channel,
        }

    # ---- queues ---------------------------------------------------------------------------
    async def transfer_queue(self, call: Any, queue_name: str) -> QueueOutcome:
        """The interpreter's `transfer_queue` hook: not ok -> the transfer's on_failure (overflow).
        When connected, returns once the conversation with the agent is over."""
        outcome = await self.route_to_queue(call, queue_name, on_position=self.on_position)
        connection = self._connections.pop(call.key, None) if hasattr(call, "key") else None
        agent_id = outcome.agent_id
        if outcome.ok and connection is not None and agent_id is not None:
            try:
                end = await connection.wait_finished()
                outcome = replace(outcome, talk_seconds=end.talk_seconds, hangup_by=end.hangup_by)
            finally:
                await self.agent_call_ended(agent_id)
        return outcome

    async def _connect(self, call: Any, slot: AgentSlot) -> bool:
        assert self.connector is not None
        connection = await self.connector.connect(call, slot.sip_uri, timeout=120.0)
        if connection.answered:
            self._connections[call.key] = connection
        return connection.answered

    async def route_to_queue(self, call: Any, queue_name: str, *, on_position: PositionHook | None = None,
                             timeout: float | None = None) -> QueueOutcome:
        """Wait for an agent, offer, ring; returns when connected, timed out, or the caller hung up."""
        spec = self.engine.spec(queue_name)
        call_id = call.info.call_id
        if not self.engine.has_skill(spec.required_skill):
            return QueueOutcome(ok=False, reason="no_agents", queue=queue_name)
        if self.dial_agent is None:
            return QueueOutcome(ok=False, reason="no_dialer", queue=queue_name)
        t0 = self.clock()
        entry = self.engine.enqueue(call_id, queue_name, t0, timeout)
        self.live.update(call_id, queue=queue_name)
        ended = asyncio.ensure_future(call.wait_ended())
        announcer: asyncio.Task[None] | None = None
        last_position: int | None = None
        offers = 0

        def outcome(ok: bool, reason: str, agent_id: str | None = None) -> QueueOutcome:
            return QueueOutcome(ok=ok, reason=reason, queue=queue_name, agent_id=agent_id,
                                waited=self.clock() - t0, offers=offers)

        try:
            while True:
                if call.ended:
                    return outcome(False, "abandoned")
                now = self.clock()
                slot = self.engine.offer(call_id, now)
                if slot is not None:
                    if announcer is not None:
                        announcer.cancel()
                    offers += 1
                    result = await self._offer(call, slot, queue_name, ended)
                    if result is not None:
                        return outcome(result == "connected", result, slot.id)
                    last_position = None
                    continue
                if entry.deadline <= now:
                    return outcome(False, "timeout")
                position = self.engine.position(call_id)
                if on_position is not None and position is not None and position != last_position:
                    last_position = position
                    if announcer is not None:
                        announcer.cancel()
                    announcer = asyncio.ensure_future(on_position(call, position))
                await asyncio.wait({self._wake_future(), ended}, timeout=entry.deadline - now,
                                   return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.engine.abandon(call_id)
            ended.cancel()
            if announcer is not None:
                announcer.cancel()
            self.live.update(call_id, queue=None)
            self._poke()  # positions of the others changed

    async def _offer(self, call: Any, slot: AgentSlot, queue: str, ended: asyncio.Future[Any]) -> str | None:
        """Ring one agent: "connected", "abandoned", or None (try the next agent)."""
        call_id = call.info.call_id
        if not await self.agents.reserve(slot.id, call_id):
            self.engine.withdraw(call_id)  # another node was faster: learn the agent's real state
            agent = await self.agents.get_agent(slot.id)
            if agent is not None:
                self.apply_agent(agent)
            return None
        await self._state_changed(slot.id, AgentState.RINGING, slot.since, call_id)
        await self.publish_screen_pop(slot.id, await self.build_screen_pop(call, slot.id, queue))
        assert self.dial_agent is not None
        dial = asyncio.ensure_future(self.dial_agent(call, slot))
        spec = self.engine.spec(queue)
        done, _ = await asyncio.wait({dial, ended}, timeout=spec.ring_timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
        answered = False
        if dial in done:
            try:
                answered = bool(dial.result())
            except Exception:
                log.exception("call %s: dialling agent %s failed", call_id, slot.id)
        else:
            dial.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await dial
        if call.ended:
            # The caller left while the phone rang: the agent goes back to idle, keeping their place.
            await self.agents.release(slot.id, call_id, AgentState.AVAILABLE, keep_since=True)
            self.engine.abandon(call_id)
            agent = await self.agents.get_agent(slot.id)
            if agent is not None:
                await self._state_changed(slot.id, AgentState(agent["state"]), _wall(agent["state_since"]),
                                          agent["call_id"])
            return "abandoned"
        if answered:
            self.engine.answered(call_id, self.clock())
            self.live.update(call_id, agent_id=slot.id)
            await self.set_agent_state(slot.id, AgentState.ON_CALL, call_id)
            return "connected"
        after = self.engine.no_answer(call_id, self.clock())
        state = after.state if after is not None else AgentState.AWAY
        log.info("call %s: agent %s did not answer; agent now %s", call_id, slot.id, state.value)
        await self.bus.publish(slot.id, {"type": "missed", "agent_id": slot.id, "call_id": call_id})
        await self.set_agent_state(slot.id, state)
        return None

    def snapshot(self) -> dict[str, Any]:
        """Queue lengths, waiting positions and agent states as this node sees them."""
        return {"queues": self.engine.lengths(), "positions": self.engine.positions(),
                "agents": [{"id": a.id, "name": a.name, "state": a.state.value, "since": a.since,
                            "call_id": a.call_id, "skills": sorted(a.skills),
                            "connected": self.bus.connected(a.id)}
                           for a in sorted(self.engine.agents.values(), key=lambda a: a.id)]}


def position_announcer(tts: Any, text: str = "You are number {position} in line. Please hold.",
                       ) -> PositionHook:
    """An `on_position` that says the caller's place with the service's TTS (a voice.tts.Tts)."""

    async def announce(call: Any, position: int) -> None:
        pcm = await tts.render(text.format(position=position))
        try:
            await call.play(pcm, dtmf_barge_in=False)
        except asyncio.CancelledError:
            call.stop_playback()  # an agent is being rung: the caller hears them next
            raise

    return announce
