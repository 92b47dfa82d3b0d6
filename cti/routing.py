"""The agent desk of one node: queues that wait for agents, offers, screen pops, agent states.

`AgentDesk.transfer_queue(call, queue)` is what the IVR's `transfer: queue:NAME` runs. It owns the
whole queue transfer, so control runs one way (interpreter -> desk -> connector) and returns once:
1. the caller waits (hearing music, their position, see cti.waiting) until the pure `QueueEngine`
   picks an agent, the timeout passes (then the queue's `overflow` queue, else the flow's
   on_failure), or the caller hangs up;
2. the agent is reserved in the database (`reserve`: the compare-and-set that stops two nodes
   offering one agent), the screen pop is published, and the `AgentConnector` (call control, see
   cti.ports) rings the agent's URI for the ring timeout; it is cancelled when the caller hangs up;
3. answered: the desk awaits the bridged conversation (`connection.wait_finished()`), puts the
   agent in wrap-up (the countdown of cti.wrapup), and returns the `QueueOutcome` with who hung
   up and the talk time; when the agent handed the caller on from the softphone (the end's
   `transfer_to`), the desk runs that blind transfer first (cti.transfers) and the outcome lists it.
   Not answered: the no-answer policy, a "missed" event explaining it, and the next agent.

The screen pop is published just before `connect` starts: the INVITE leaves at that moment, so
the page shows the caller while the phone rings. Calls are known by `CallView.key` (unique per
dialog and node) in the engine, the agents' `call_id` and the live calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, is_dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from cti.agents import AgentNotFound, AgentStore
from cti.callbacks import NewCallback
from cti.events import EventBus
from cti.live import LiveCalls
from cti.lookup import lookup
from cti.ports import AgentConnection, AgentConnector, CallView
from cti.queues import AgentSlot, AgentState, QueueEngine, QueueSpec
from cti.store import CustomerStore
from cti.transfers import AgentTransfer, blind_transfer
from cti.virtual_hold import ask_callback_number, say_goodbye
from cti.waiting import CallerHold, MusicLibrary, SpeechRenderer
from cti.wrapup import AgentPolicy, WrapUpTimers

if TYPE_CHECKING:
    from cti.callback_desk import CallbackDesk

log = logging.getLogger("cti.routing")

MAX_TRANSCRIPT = 100  # segments in a pop: the newest ones; the page can load the rest
RING_GRACE = 5.0  # seconds past the ring timeout before the desk itself gives up on `connect`
_RECENT_FIELDS = ("id", "channel", "direction", "started_at", "subject", "summary", "disposition")


@dataclass(frozen=True, kw_only=True)
class QueueOutcome:
    ok: bool
    reason: str  # connected | timeout | abandoned | no_agents | no_connector | callback
    queue: str  # the queue the caller was in last (an overflow queue, if they moved)
    agent_id: str | None = None
    waited: float = 0.0  # seconds from entering the queue to the agent answering (or giving up)
    offers: int = 0
    hangup_by: str | None = None  # connected: "agent" | "caller" | "shutdown"
    talk_seconds: float | None = None  # connected: length of the conversation
    callback_id: str | None = None  # reason "callback": the caller hangs up, the desk calls back
    # Blind transfers from the agents' softphones after that conversation (cti.transfers), in order.
    transfers: tuple[AgentTransfer, ...] = ()


@dataclass(kw_only=True)
class QueueStats:
    """This node's counts for one queue since start (the service level of GET /api/v1/queues)."""

    offered: int = 0  # callers who entered
    answered: int = 0
    within_service_level: int = 0
    abandoned: int = 0
    timed_out: int = 0
    callbacks: int = 0  # callers who chose to be called back
    waits: list[float] = field(default_factory=list)  # the last answered callers' waits

    def to_json(self, service_level: float) -> dict[str, Any]:
        done = self.answered + self.abandoned + self.timed_out
        return {"offered": self.offered, "answered": self.answered, "abandoned": self.abandoned,
                "timed_out": self.timed_out, "service_level_seconds": service_level,
                "service_level": round(self.within_service_level / done, 3) if done else None,
                "average_wait": round(sum(self.waits) / len(self.waits), 1) if self.waits else None}


def _wall(ts: str | datetime | None) -> float:
    if ts is None:
        return 0.0
    if isinstance(ts, str):
        ts = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    return ts.timestamp()


class AgentDesk:
    def __init__(self, *, store: CustomerStore, agents: AgentStore, bus: EventBus,
                 connector: AgentConnector | None, voice: SpeechRenderer | None = None,
                 live: LiveCalls | None = None, engine: QueueEngine | None = None, recent: int = 10,
                 music: MusicLibrary | None = None, clock: Callable[[], float] = time.time,
                 policy: AgentPolicy | None = None) -> None:
        """`connector`: call control's agent connector (None: an API-only process; queue transfers
        then fail with reason "no_connector"). `voice`: the TTS that says the caller's position
        (None: music only). `policy`: dispositions, wrap-up time, away reasons ([agents])."""
        self.store = store
        self.agents = agents
        self.bus = bus
        self.connector = connector
        self.voice = voice
        self.live = live or LiveCalls()
        self.engine = engine or QueueEngine()
        self.recent = recent
        self.music = music or MusicLibrary()
        self.clock = clock  # wall time: agents' `since` comes from the shared database
        self.stats: dict[str, QueueStats] = {}
        self._applied: dict[str, float] = {}  # agent -> `since` of the newest state applied
        self._pops: dict[str, dict[str, Any]] = {}  # agent -> the last pop (for hello)
        self._missed: dict[str, dict[str, Any]] = {}  # agent -> the last missed call (for hello)
        self._wake: asyncio.Future[None] | None = None
        self._continues: dict[str, str] = {}  # call key -> the interaction the call continues
        self.callbacks: CallbackDesk | None = None  # set by cti.web.setup: where virtual hold puts callbacks
        self.policy = policy or AgentPolicy()
        self.wrap_up = WrapUpTimers(self.policy.wrap_up_seconds, self._wrap_up_over)
        self._reasons: dict[str, str | None] = {}  # agent -> why away (for the snapshot)

    async def start(self) -> None:
        self.bus.add_listener(self._on_event)
        await self.bus.start()
        await self.reload_agents()
        specs = [self.engine.defaults, *self.engine.specs.values()]
        await self.music.preload([s.music for s in specs])

    async def close(self) -> None:
        await self.wrap_up.aclose()
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
            self._reasons[a["id"]] = a.get("reason")

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
                self._reasons[agent_id] = event.get("reason")
                if slot.state != AgentState.WRAP_UP:  # another node moved them on: no countdown here
                    self.wrap_up.cancel(agent_id)
                self._poke()
        elif kind == "agent" and isinstance(event.get("agent"), dict):
            self.apply_agent(event["agent"], with_state=False)
            self._poke()
        elif kind == "screen_pop" and agent_id is not None:
            self._pops[agent_id] = event
            self._missed.pop(agent_id, None)
        elif kind == "missed" and agent_id is not None:
            self._missed[agent_id] = event

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

    def current_for(self, agent: dict[str, Any]) -> dict[str, Any]:
        """What a newly connected page must show (the websocket's hello): the pop of the call the
        agent is offered, talking on or wrapping up, and the last missed call while they are away."""
        out: dict[str, Any] = {"call": None, "missed": None, "wrap_up_left": None}
        if agent["state"] == AgentState.WRAP_UP.value:
            out["wrap_up_left"] = self.wrap_up.left(agent["id"])
        pop = self._pops.get(agent["id"])
        if (pop is not None and agent["state"] in ("ringing", "on_call", "wrap_up")
                and agent.get("call_id") == pop.get("call_id")):
            out["call"] = pop
        missed = self._missed.get(agent["id"])
        if missed is not None and agent["state"] == AgentState.AWAY.value:
            out["missed"] = missed
        return out

    async def set_agent_state(self, agent_id: str, state: AgentState | str,
                              call_id: str | None = None, *, reason: str | None = None) -> None:
        """Record a state in the database, here, and on every other node (and the agent's page).
        `reason`: why the agent is away. Wrap-up starts the countdown ([agents] wrap_up_seconds)."""
        state = AgentState(state)
        reason = reason if state == AgentState.AWAY else None
        since = (await self.agents.set_state(agent_id, state, call_id, reason=reason)).timestamp()
        await self._state_changed(agent_id, state, since, call_id, reason)

    async def accept_offer(self, agent_id: str, call_id: str) -> bool:
        """The agent took the call on the page: on_call, only if this call is offered to them
        (or they already talk on it). False (nothing changed) for any other call."""
        since = await self.agents.accept(agent_id, call_id)
        if since is None:
            return False
        await self._state_changed(agent_id, AgentState.ON_CALL, since.timestamp(), call_id)
        return True

    async def _state_changed(self, agent_id: str, state: AgentState, since: float,
                             call_id: str | None, reason: str | None = None) -> None:
        # `since` orders the idle agents; `at` (when the change happened) orders the events.
        left = self.wrap_up.start(agent_id, call_id) if state == AgentState.WRAP_UP else None
        if state != AgentState.WRAP_UP:
            self.wrap_up.cancel(agent_id)
        event = {"type": "state", "agent_id": agent_id, "state": state.value, "since": since,
                 "call_id": call_id, "at": time.time(), "reason": reason, "wrap_up_left": left}
        self._on_event(agent_id, event)
        await self.bus.publish(agent_id, event)

    async def _wrap_up_over(self, agent_id: str, call_id: str | None) -> None:
        """The wrap-up countdown ended: available, unless the agent moved on meanwhile."""
        since = await self.agents.end_wrap_up(agent_id, call_id)
        if since is not None:
            log.info("agent %s: wrap-up over, available", agent_id)
            await self._state_changed(agent_id, AgentState.AVAILABLE, since.timestamp(), None)

    # ---- screen pop -----------------------------------------------------------------------
    async def build_screen_pop(self, call: CallView, agent_id: str,
                               queue: str | None = None) -> dict[str, Any]:
        """Caller, customer (the one the IVR identified, else the caller ID's owner, or None),
        IVR path and inputs, transcript so far, recent history."""
        info = call.info
        entry = self.live.get(call.key)
        interaction_id = call.interaction_id or (entry.interaction_id if entry else None) or \
            await self.agents.interaction_for_call(info.call_id)
        customer, recent, identified_by = await self._pop_customer(call)
        # This very call is already in the history: the agent wants the ones before it.
        recent = [i for i in recent if i["id"] != interaction_id]
        by_channel: dict[str, dict[str, Any]] = {}
        for item in recent:
            by_channel.setdefault(item["channel"], item)
        transcript = [asdict(s) if is_dataclass(s) and not isinstance(s, type) else dict(s)
                      for s in list(call.transcript)[-MAX_TRANSCRIPT:]]
        return {
            "type": "screen_pop", "call_id": call.key, "sip_call_id": info.call_id,
            "interaction_id": interaction_id, "agent_id": agent_id, "queue": queue,
            "caller": {"number": info.caller, "name": info.caller_name, "dialled": info.dialled},
            "customer": customer, "found": customer is not None, "identified_by": identified_by,
            "ivr": {"flow": entry.flow if entry else None, "node": entry.node if entry else None,
                    "path": list(entry.path) if entry else [], "inputs": list(entry.inputs) if entry else []},
            "transcript": transcript,
            "recent_interactions": recent[: self.recent],
            "last_by_channel": by_channel,
            **await self._continued(call.key, customer),
        }

    async def _continued(self, key: str, customer: dict[str, Any] | None) -> dict[str, Any]:
        """`continues` (the id) and `continued` (what the page shows of it) for a call that
        continues an earlier interaction of the same customer; nothing otherwise."""
        continues = self._continues.get(key)
        if not continues:
            return {}
        item = await self.store.interaction_summary(continues)
        if item is None or customer is None or item.get("customer_id") != customer["id"]:
            log.warning("call %s: continues an interaction that is not this customer's; not shown", key)
            return {}
        return {"continues": continues,
                "continued": {k: item.get(k) for k in ("id", "channel", "subject", "summary", "agent",
                                                       "queue", "status", "started_at")}}

    async def _pop_customer(
            self, call: CallView) -> tuple[dict[str, Any] | None, list[dict[str, Any]], str | None]:
        want = max(self.recent, 20)
        if call.customer_id:
            customer = await self.store.get_customer(call.customer_id)
            if customer is not None:
                items, _ = await self.store.timeline(customer["id"], limit=want)
                return (customer, [{k: i[k] for k in _RECENT_FIELDS} for i in items],
                        call.identified_by or "ivr")
            log.warning("call %s: the identified customer is gone; looking up the caller ID", call.key)
        found = await lookup(self.store, phone=call.info.caller, recent=want)
        if not found["found"]:
            return None, [], None
        return found["customer"], found["recent_interactions"], "caller_id"

    # ---- queues ---------------------------------------------------------------------------
    async def transfer_queue(self, call: CallView, queue_name: str, *, prefer_agent: str | None = None,
                             prefer_for: float = 0.0, continues: str | None = None) -> QueueOutcome:
        """The interpreter's `transfer_queue` hook: returns after the conversation with the agent
        (connected) or when the caller could not be served (then the transfer's on_failure).
        `prefer_agent`/`prefer_for`: agent affinity (cti.queues); `continues`: the id of the
        earlier interaction this call continues (the agent's pop shows it)."""
        if continues:
            self._continues[call.key] = continues
        try:
            return await self.route_to_queue(call, queue_name, prefer_agent=prefer_agent,
                                             prefer_for=prefer_for)
        finally:
            self._continues.pop(call.key, None)

    async def route_to_queue(self, call: CallView, queue_name: str, *, timeout: float | None = None,
                             prefer_agent: str | None = None, prefer_for: float = 0.0) -> QueueOutcome:
        """Wait (moving to the overflow queue at the timeout), offer, ring, talk; see the module doc.
        The agent affinity holds in the first queue only."""
        t0 = self.clock()
        visited: list[str] = []
        name = queue_name
        while True:
            visited.append(name)
            first = len(visited) == 1
            outcome = await self._serve(call, name, t0, timeout if first else None,
                                        (prefer_agent, prefer_for) if first and prefer_agent else None)
            overflow = self.engine.spec(name).overflow
            if outcome.reason == "timeout" and overflow and overflow.removeprefix("queue:") not in visited:
                name = overflow.removeprefix("queue:")
                log.info("call %s: %s timed out, overflow to %s", call.key, visited[-1], name)
                continue
            return outcome

    async def _serve(self, call: CallView, queue_name: str, t0: float, timeout: float | None,
                     prefer: tuple[str, float] | None = None) -> QueueOutcome:
        spec = self.engine.spec(queue_name)
        stats = self.stats.setdefault(queue_name, QueueStats())
        call_id = call.key
        if not self.engine.has_skill(spec.required_skill):
            return QueueOutcome(ok=False, reason="no_agents", queue=queue_name)
        if self.connector is None:
            return QueueOutcome(ok=False, reason="no_connector", queue=queue_name)
        stats.offered += 1
        entered = self.clock()
        entry = self.engine.enqueue(call_id, queue_name, entered, timeout,
                                    prefer_agent=prefer[0] if prefer else None,
                                    prefer_for=prefer[1] if prefer else 0.0)
        if prefer and prefer[1] > 0 and entry.prefer_agent is None:
            log.info("call %s: preferred agent %r is not an agent here; any agent of %s", call_id,
                     prefer[0][:64], queue_name)
        self.live.update(call_id, queue=queue_name)
        # Virtual hold needs somewhere to keep the callback and a voice to ask for the number.
        callback_key = spec.callback_key if self.callbacks is not None and self.voice is not None else ""

        def holding() -> CallerHold:
            hold = CallerHold(call, music=self.music.get(spec.music),
                              ringback=self.music.ringback if spec.ringing == "ringback" else None,
                              voice=self.voice, announce_interval=spec.announce_interval,
                              callback_key=callback_key)
            hold.start()
            return hold

        hold = holding()
        ended: asyncio.Future[Any] = asyncio.ensure_future(call.wait_ended())
        keypress: asyncio.Future[str | None] | None = None
        offers = 0

        def outcome(ok: bool, reason: str, agent_id: str | None = None,
                    callback_id: str | None = None) -> QueueOutcome:
            return QueueOutcome(ok=ok, reason=reason, queue=queue_name, agent_id=agent_id,
                                waited=self.clock() - t0, offers=offers, callback_id=callback_id)

        try:
            while True:
                if call.ended:
                    stats.abandoned += 1
                    return outcome(False, "abandoned")
                if keypress is not None and keypress.done():
                    key, keypress = keypress.result(), None
                    if key == callback_key and not call.ended:
                        await hold.close()
                        callback_id = await self._virtual_hold(call, queue_name, entered)
                        if callback_id is not None:
                            stats.callbacks += 1
                            return outcome(False, "callback", callback_id=callback_id)
                        hold = holding()
                        continue
                now = self.clock()
                slot = self.engine.offer(call_id, now)
                if slot is not None:
                    if keypress is not None:  # keys pressed now are for the agent, not the queue
                        keypress.cancel()
                        keypress = None
                    offers += 1
                    hold.ringing()
                    result = await self._offer(call, slot, spec, ended)
                    if isinstance(result, str):  # "abandoned"
                        stats.abandoned += 1
                        return outcome(False, "abandoned", slot.id)
                    if result is not None:
                        await hold.close()
                        connected = outcome(True, "connected", slot.id)
                        return await self._talk(call, slot.id, spec, result, connected,
                                                self.clock() - entered)
                    hold.waiting()
                    continue
                if entry.deadline <= now:
                    stats.timed_out += 1
                    return outcome(False, "timeout")
                hold.position(self.engine.position(call_id))
                if callback_key and keypress is None:
                    keypress = asyncio.ensure_future(call.receive_digit(None))
                wake: set[asyncio.Future[Any]] = {self._wake_future(), ended}
                if keypress is not None:
                    wake.add(keypress)
                # waiting for the preferred agent: look again when the affinity runs out
                until = entry.prefer_until if self.engine.preferred_agent(call_id, now) else entry.deadline
                await asyncio.wait(wake, timeout=max(0.0, min(until, entry.deadline) - now),
                                   return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.engine.abandon(call_id)
            ended.cancel()
            if keypress is not None:
                keypress.cancel()
            await hold.close()
            self.live.update(call_id, queue=None)
            self._poke()  # positions of the others changed

    async def _virtual_hold(self, call: CallView, queue_name: str, entered: float) -> str | None:
        """The caller pressed the callback key: the number confirmed, the callback stored with the
        caller's place (their entry time) and linked to this call; None when they keep waiting."""
        return await self.request_callback(
            call, queue_name, entered_at=datetime.fromtimestamp(time.time() - (self.clock() - entered), UTC),
            reason="asked while waiting", waiting=True)

    async def request_callback(self, call: CallView, queue_name: str, *, earliest: datetime | None = None,
                               entered_at: datetime | None = None, reason: str = "asked in the IVR",
                               waiting: bool = False) -> str | None:
        """Ask the caller for the number (their caller ID confirmed, or keyed in), store a callback
        for `queue_name` linked to this call (placed from `earliest`, in line from `entered_at`,
        default now) and say goodbye; the callback's id, or None (no callbacks here, no number)."""
        if self.callbacks is None or self.voice is None:
            return None
        number = await ask_callback_number(call, self.voice, waiting=waiting)
        if number is None or call.ended:
            return None
        row, _ = await self.callbacks.request(NewCallback(
            number=number, queue=queue_name, customer_id=call.customer_id, channel="voice", reason=reason,
            earliest=earliest, entered_at=entered_at, original_interaction_id=call.interaction_id,
            idempotency_key=f"hold:{call.key}"))
        log.info("call %s: callback %s requested (%s) for %s", call.key, row["id"], reason, queue_name)
        await say_goodbye(call, self.voice, number, waiting=waiting)
        return str(row["id"])

    async def _offer(self, call: CallView, slot: AgentSlot, spec: QueueSpec,
                     ended: asyncio.Future[Any]) -> AgentConnection | str | None:
        """Ring one agent: the connection when answered, "abandoned", or None (try the next agent)."""
        assert self.connector is not None
        call_id = call.key
        if not await self.agents.reserve(slot.id, call_id):
            self.engine.withdraw(call_id)  # another node was faster: learn the agent's real state
            agent = await self.agents.get_agent(slot.id)
            if agent is not None:
                self.apply_agent(agent)
            return None
        await self._state_changed(slot.id, AgentState.RINGING, slot.since, call_id)
        await self.publish_screen_pop(slot.id, await self.build_screen_pop(call, slot.id, spec.name))
        dial = asyncio.ensure_future(self.connector.connect(call, slot.sip_uri, timeout=spec.ring_timeout))
        try:
            done, _ = await asyncio.wait({dial, ended}, timeout=spec.ring_timeout + RING_GRACE,
                                         return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # the transfer itself is cancelled (shutdown): stop ringing
            dial.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await dial
            with contextlib.suppress(Exception):
                await self.agents.release(slot.id, call_id, AgentState.AVAILABLE, keep_since=True)
            raise
        connection: AgentConnection | None = None
        why = f"your phone did not answer within {spec.ring_timeout:g} s"
        if dial in done:
            try:
                connection = dial.result()
            except Exception as exc:
                log.exception("call %s: connecting agent %s failed", call_id, slot.id)
                why = f"your phone could not be reached ({type(exc).__name__})"
        else:
            dial.cancel()  # the connector CANCELs the INVITE
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await dial
        if connection is not None and connection.answered and not call.ended:
            self.engine.answered(call_id, self.clock())
            self.live.update(call_id, agent_id=slot.id)
            await self.set_agent_state(slot.id, AgentState.ON_CALL, call_id)
            return connection
        if connection is not None and connection.answered:
            connection.hangup()  # answered just as the caller left
        if call.ended:
            # The caller left while the phone rang: the agent goes back to idle, keeping their place.
            await self.agents.release(slot.id, call_id, AgentState.AVAILABLE, keep_since=True)
            self.engine.abandon(call_id)
            agent = await self.agents.get_agent(slot.id)
            if agent is not None:
                await self._state_changed(slot.id, AgentState(agent["state"]), _wall(agent["state_since"]),
                                          agent["call_id"])
            return "abandoned"
        if connection is not None and connection.status not in (None, 408, 480, 487):
            why = f"your phone refused the call ({connection.status} {connection.reason})".rstrip()
        after = self.engine.no_answer(call_id, self.clock())
        state = after.state if after is not None else AgentState.AWAY
        log.info("call %s: agent %s did not answer (%s); agent now %s", call_id, slot.id,
                 connection.status if connection else "no result", state.value)
        message = f"You missed a call from {call.info.caller or 'a withheld number'}: {why}"
        message += (", so you were set to Away. Press Available to take calls again."
                    if state == AgentState.AWAY else ". You stay available.")
        await self.bus.publish(slot.id, {
            "type": "missed", "agent_id": slot.id, "call_id": call_id, "queue": spec.name,
            "caller": call.info.caller, "status": connection.status if connection else None,
            "state": state.value, "message": message, "at": time.time()})
        await self.set_agent_state(slot.id, state)
        return None

    async def _talk(self, call: CallView, agent_id: str, spec: QueueSpec, connection: AgentConnection,
                    connected: QueueOutcome, wait: float) -> QueueOutcome:
        """Until the bridged conversation is over; then the agent wraps up (keeping the call id, so
        a reloaded page shows the call it is writing notes for)."""
        stats = self.stats.setdefault(spec.name, QueueStats())
        stats.answered += 1
        stats.within_service_level += wait <= spec.service_level
        stats.waits = [*stats.waits[-99:], wait]
        try:
            end = await connection.wait_finished()
        finally:
            connection.hangup()  # idempotent; cancelled (shutdown): the agent's leg ends too
            with contextlib.suppress(AgentNotFound):
                await self.set_agent_state(agent_id, AgentState.WRAP_UP, call.key)
            self.live.update(call.key, agent_id=None)
        log.info("call %s: %s with agent %s for %.1fs, %s hung up", call.key, spec.name, agent_id,
                 end.talk_seconds, end.hangup_by)
        outcome = replace(connected, hangup_by=end.hangup_by, talk_seconds=end.talk_seconds)
        if end.transfer_to and not call.ended:  # the agent, in wrap-up now, handed the caller on
            return await blind_transfer(self, call, outcome, agent_id, end.transfer_to)
        return outcome

    def snapshot(self) -> dict[str, Any]:
        """Queue lengths, waiting positions, service levels and agent states as this node sees them."""
        return {"queues": self.engine.lengths(), "positions": self.engine.positions(),
                "service": {name: st.to_json(self.engine.spec(name).service_level)
                            for name, st in sorted(self.stats.items())},
                "agents": [{"id": a.id, "name": a.name, "state": a.state.value, "since": a.since,
                            "call_id": a.call_id, "skills": sorted(a.skills),
                            "reason": self._reasons.get(a.id) if a.state == AgentState.AWAY else None,
                            "connected": self.bus.connected(a.id)}
                           for a in sorted(self.engine.agents.values(), key=lambda a: a.id)]}
