"""Placing callbacks: when an agent of the queue is free, ring the agent, then call the customer.

Rules (the whole contract; the table's rules are in cti.callbacks):
- Every due callback (state queued, `earliest` passed) waits in the desk's `QueueEngine` as one
  more caller of its queue, keyed `callback:<id>`, arrived at its `entered_at`: the engine's
  matching (oldest first, across queues, longest-idle agent with the skill) decides between
  callers on the line and callbacks, so a caller who chose a callback keeps their place.
- The desk wakes on every agent change (the same wake-up the waiting callers use), on a new
  callback (this node's API, or another node's through the event bus) and every
  `poll_interval` s (retries coming due, rows released by other nodes).
- Serving one: claim the row (queued -> offering; losing the race drops it here), reserve the
  agent (the desk's compare-and-set), pop "callback for NAME, waited N min", ring the agent
  (`OutboundDialer.ring_agent`). Not answered: the no-answer policy as for a call, the row goes
  back to queued (no attempt counted: the customer was not called). Answered: the agent is
  on_call, the row `dialing` (attempt + 1), the customer is called through the trunk and bridged
  (`call_customer`); the attempt's result makes it done, queued for a retry, or failed.
- `drain(timeout)` (SIGTERM) stops placing new ones and lets those in progress end; `close()`
  cancels what is still in flight: the node's `offering` rows go back to queued, its `dialing`
  ones are done (answered) or count as an attempt (cti.callbacks `recover`), also at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from cti.agents import AgentNotFound
from cti.callbacks import CallbackStore, NewCallback
from cti.identity import IdentityError, normalize_phone
from cti.lookup import lookup
from cti.ports import CustomerNumber, OutboundDialer, OutboundLeg
from cti.queues import AgentSlot, AgentState, QueueSpec

if TYPE_CHECKING:
    from cti.routing import AgentDesk

log = logging.getLogger("cti.callbacks")

PREFIX = "callback:"
_RECENT_FIELDS = ("id", "channel", "direction", "started_at", "subject", "summary", "disposition")
DUE_LIMIT = 2000  # callbacks read per look at the table (the oldest places in line)


def _ts(value: str | None) -> float:
    return datetime.fromisoformat(value).timestamp() if value else time.time()


class CallbackDesk:
    """This node's callback scheduler, beside the `AgentDesk` whose engine and agents it shares."""

    def __init__(self, desk: AgentDesk, store: CallbackStore, dialer: OutboundDialer | None, *,
                 node: str, customer_ring_timeout: float = 30.0, poll_interval: float = 1.0) -> None:
        self.desk = desk
        self.store = store
        self.dialer = dialer
        self.node = node
        self.customer_ring_timeout = customer_ring_timeout
        self.poll_interval = poll_interval
        self.rows: dict[str, dict[str, Any]] = {}  # engine key -> the row, for the callbacks queued here
        self.serving: dict[str, asyncio.Task[None]] = {}  # engine key -> its offer/dial task
        self.placed: list[tuple[str, float, float]] = []  # (callback id, agent free at, customer INVITE)
        self._refresh = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.on_customer_ringing: Callable[[str], None] | None = None  # tests and benchmarks

    @staticmethod
    def key(callback_id: str) -> str:
        return PREFIX + callback_id

    # ---- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        """Put back what this node left half done (a crash, a restart), then schedule."""
        recovered = await self.store.recover(self.node)
        if any(recovered.values()):
            log.warning("callbacks left by the previous run of node %s: %d back in line, %d interrupted "
                        "attempts", self.node, recovered["requeued"], recovered["interrupted"])
        self.desk.bus.add_listener(self._on_event)
        if self.dialer is not None:
            self._task = asyncio.ensure_future(self._run())

    async def drain(self, timeout: float) -> None:
        """Stop placing new callbacks; let those in progress finish for up to `timeout` s."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        tasks = list(self.serving.values())
        if tasks:
            log.info("draining: %d callbacks in progress, up to %.0f s", len(tasks), timeout)
            await asyncio.wait(tasks, timeout=timeout)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        tasks = list(self.serving.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        for key in list(self.rows):
            self.desk.engine.abandon(key)
        self.rows.clear()
        with contextlib.suppress(Exception):
            await self.store.recover(self.node)

    def _on_event(self, _agent_id: str | None, event: dict[str, Any]) -> None:
        if event.get("type") == "callbacks_changed":
            self._refresh.set()

    # ---- requests ----------------------------------------------------------------------------
    async def request(self, item: NewCallback) -> tuple[dict[str, Any], bool]:
        """Store a callback (the API's, or a waiting caller's) and tell every node."""
        if item.customer_id is None:  # the number's owner, when the store knows them
            with contextlib.suppress(IdentityError):
                phone = normalize_phone(item.number, self.desk.store.default_country)
                found = await self.desk.store.find_customer_id("phone", phone)
                if found is not None:
                    item = replace(item, customer_id=found)
        row, created = await self.store.create(item)
        if created:
            log.info("callback %s requested for queue %s (channel %s)", row["id"], row["queue"],
                     row["channel"])
            self._refresh.set()
            await self.desk.bus.publish(None, {"type": "callbacks_changed", "at": time.time()})
        return row, created

    async def cancel(self, callback_id: str, reason: str | None = None) -> tuple[bool, dict[str, Any] | None]:
        """Cancel a queued callback (CallbackStore.cancel) and tell every node, so that the ones
        holding it in line drop it now rather than at their next look."""
        cancelled, row = await self.store.cancel(callback_id, reason)
        if cancelled and row is not None:
            log.info("callback %s cancelled (queue %s)", row["id"], row["queue"])
            self._refresh.set()
            await self.desk.bus.publish(None, {"type": "callbacks_changed", "at": time.time()})
        return cancelled, row

    # ---- scheduling --------------------------------------------------------------------------
    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_look = 0.0
        while True:
            try:
                if self._refresh.is_set() or loop.time() >= next_look - 0.001:
                    self._refresh.clear()
                    await self._load()
                    next_look = loop.time() + self.poll_interval
                self._dispatch()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database away: try again at the next look
                log.warning("callbacks: %s: %s", type(exc).__name__, exc)
                next_look = loop.time() + self.poll_interval
            refresh = asyncio.ensure_future(self._refresh.wait())
            waiters: set[asyncio.Future[Any]] = {self.desk._wake_future(), refresh}
            try:
                await asyncio.wait(waiters, timeout=max(0.0, next_look - loop.time()),
                                   return_when=asyncio.FIRST_COMPLETED)
            finally:
                refresh.cancel()

    async def _load(self) -> None:
        """The due rows, into the engine (and out of it when another node took them)."""
        await self.store.expire()
        rows = await self.store.due(limit=DUE_LIMIT)
        engine = self.desk.engine
        due = {self.key(r["id"]): r for r in rows}
        for key in list(self.rows):
            if key not in due and key not in self.serving:
                engine.abandon(key)
                del self.rows[key]
        for key, row in due.items():
            if key in self.rows or key in self.serving:
                continue
            # The place in line, on the desk's clock (the engine's): as long ago as the caller entered.
            entered = self.desk.clock() - max(0.0, time.time() - _ts(row["entered_at"]))
            engine.enqueue(key, row["queue"], entered,
                           timeout=_ts(row["give_up_at"]) - _ts(row["entered_at"]))
            self.rows[key] = row

    def _dispatch(self) -> None:
        """Start serving every callback the engine has a free agent for now."""
        engine = self.desk.engine
        for key, agent_id in engine.assignments().items():
            if not key.startswith(PREFIX) or key not in self.rows or key in self.serving:
                continue
            slot = engine.offer(key, self.desk.clock(), agent_id)
            if slot is None:
                continue
            row = self.rows[key]
            task = asyncio.ensure_future(self._serve(key, row, slot, engine.spec(row["queue"])))
            self.serving[key] = task
            task.add_done_callback(functools.partial(self._forget, key))

    def _forget(self, key: str, _task: asyncio.Task[None]) -> None:
        self.serving.pop(key, None)
        if key not in self.desk.engine.calls:
            self.rows.pop(key, None)
        self._refresh.set()  # a retry may be due later; the row's state changed

    # ---- one callback --------------------------------------------------------------------------
    async def _serve(self, key: str, row: dict[str, Any], slot: AgentSlot, spec: QueueSpec) -> None:
        loop = asyncio.get_running_loop()
        free_at = loop.time()
        desk, engine, cb_id = self.desk, self.desk.engine, row["id"]
        assert self.dialer is not None
        claim = await self.store.claim(cb_id, self.node, slot.id, key)  # and the agent reserved
        if claim == "taken":
            engine.abandon(key)  # another node has it (or it was cancelled)
            self.rows.pop(key, None)
            desk._poke()
            return
        if claim == "busy":
            engine.withdraw(key)  # another node was faster for this agent
            agent = await desk.agents.get_agent(slot.id)
            if agent is not None:
                desk.apply_agent(agent)
            return
        agent_leg: OutboundLeg | None = None
        dialing = False
        try:
            await desk._state_changed(slot.id, AgentState.RINGING, slot.since, key)
            who = row["name"] or row["number"]
            ring = asyncio.ensure_future(self.dialer.ring_agent(slot.sip_uri, timeout=spec.ring_timeout,
                                                                display=f"Callback {who}"[:60]))
            try:  # the pop is built and sent while the agent's phone rings
                await desk.publish_screen_pop(slot.id, await self.screen_pop(row, slot.id, spec))
            except Exception:
                log.exception("callback %s: no screen pop for agent %s", cb_id, slot.id)
            try:
                agent_leg = await ring
            except asyncio.CancelledError:
                ring.cancel()
                raise
            if not agent_leg.answered:
                await self._agent_missed(key, row, slot, spec, agent_leg)
                return
            engine.answered(key, desk.clock())
            self.rows.pop(key, None)
            since = await self.store.dialing(cb_id, self.node, slot.id, key)  # and the agent on_call
            if since is None:
                agent_leg.hangup()
                return
            dialing = True
            await desk._state_changed(slot.id, AgentState.ON_CALL, since.timestamp(), key)

            def ringing() -> None:
                if self.on_customer_ringing is not None:
                    self.on_customer_ringing(cb_id)

            customer = CustomerNumber(number=row["number"], customer_id=row["customer_id"], name=row["name"],
                                      metadata={"callback_id": cb_id,
                                                "callback_of": row["original_interaction_id"],
                                                "continues": row["original_interaction_id"],
                                                "queue": row["queue"], "agent_id": slot.id,
                                                "callback_reason": row["reason"]})
            invite_at = loop.time()
            self.placed.append((cb_id, free_at, invite_at))
            conn = await self.dialer.call_customer(agent_leg, customer, timeout=self.customer_ring_timeout,
                                                   on_ringing=ringing)
            if conn.answered:
                await self.store.answered(cb_id, self.node, conn.interaction_id)
                end = await conn.wait_finished()
                state = await self.store.attempt_over(
                    cb_id, self.node, answered=True, interaction_id=conn.interaction_id,
                    result=f"answered; talked {end.talk_seconds:.0f} s, {end.hangup_by} hung up")
            else:
                agent_leg.hangup()
                state = await self.store.attempt_over(
                    cb_id, self.node, answered=False,
                    result=f"customer not reached ({conn.status or '-'} {conn.reason})".strip())
            dialing = False
            log.info("callback %s: attempt by agent %s: %s", cb_id, slot.id, state)
            await desk.bus.publish(slot.id, {"type": "callback", "agent_id": slot.id, "callback_id": cb_id,
                                             "state": state, "at": time.time()})
        except (asyncio.CancelledError, Exception) as exc:
            if agent_leg is not None:
                agent_leg.hangup()
            stopped = isinstance(exc, asyncio.CancelledError)
            why = "the service stopped" if stopped else f"error: {exc!r}"[:150]
            if not isinstance(exc, asyncio.CancelledError):
                log.exception("callback %s: placing it failed", cb_id)
            if not dialing:  # stopped before the customer was called: back in line, untouched
                with contextlib.suppress(Exception):
                    await self.store.unclaim(cb_id, self.node, why)
                with contextlib.suppress(Exception):
                    await desk.agents.release(slot.id, key, AgentState.AVAILABLE, keep_since=True)
                engine.abandon(key)  # read again from the table at the next look
                self.rows.pop(key, None)
            elif not isinstance(exc, asyncio.CancelledError):
                with contextlib.suppress(Exception):
                    await self.store.attempt_over(cb_id, self.node, answered=False, result=why)
            if isinstance(exc, asyncio.CancelledError):
                raise
        finally:
            if agent_leg is not None and agent_leg.answered:
                with contextlib.suppress(AgentNotFound):
                    await desk.set_agent_state(slot.id, AgentState.WRAP_UP, key)

    async def _agent_missed(self, key: str, row: dict[str, Any], slot: AgentSlot, spec: QueueSpec,
                            leg: OutboundLeg) -> None:
        desk = self.desk
        await self.store.unclaim(row["id"], self.node, f"agent {slot.id} did not answer")
        after = desk.engine.no_answer(key, desk.clock())
        state = after.state if after is not None else AgentState.AWAY
        message = (f"You missed a callback for {row['name'] or row['number']}: your phone did not answer "
                   f"({leg.status or '-'} {leg.reason})".rstrip())
        message += (", so you were set to Away. Press Available to take calls again."
                    if state == AgentState.AWAY else ". You stay available.")
        await desk.bus.publish(slot.id, {"type": "missed", "agent_id": slot.id, "call_id": key,
                                         "queue": spec.name, "caller": row["number"], "status": leg.status,
                                         "state": state.value, "message": message, "at": time.time()})
        await desk.set_agent_state(slot.id, state)

    async def screen_pop(self, row: dict[str, Any], agent_id: str, spec: QueueSpec) -> dict[str, Any]:
        """The pop of a callback: who to call, how long they waited, their customer record and history."""
        store = self.desk.store
        customer: dict[str, Any] | None = None
        recent: list[dict[str, Any]] = []
        if row["customer_id"]:
            customer = await store.get_customer(row["customer_id"])
            if customer is not None:
                recent, _ = await store.timeline(row["customer_id"], limit=self.desk.recent)
        if customer is None:
            found = await lookup(store, phone=row["number"], recent=self.desk.recent)
            customer, recent = found["customer"], found["recent_interactions"]
        entry = self.desk.engine.calls.get(self.key(row["id"]))
        if entry is not None:
            since = self.desk.clock() - entry.arrived
        else:
            since = time.time() - _ts(row["entered_at"])
        waited = max(0, round(since / 60))
        who = row["name"] or (customer or {}).get("name") or row["number"]
        text = f"Callback for {who} ({row['number']}), waited {waited} min"
        if row["attempts"]:
            text += f", attempt {row['attempts'] + 1}"
        recent = [{k: i.get(k) for k in _RECENT_FIELDS} for i in recent
                  if i.get("id") != row["original_interaction_id"]]
        by_channel: dict[str, dict[str, Any]] = {}
        for item in recent:
            by_channel.setdefault(str(item["channel"]), item)
        return {
            "type": "screen_pop", "call_id": self.key(row["id"]), "sip_call_id": None,
            "interaction_id": row["original_interaction_id"], "agent_id": agent_id, "queue": spec.name,
            "caller": {"number": row["number"], "name": row["name"], "dialled": None},
            "customer": customer, "found": customer is not None,
            "identified_by": "callback" if customer else None,
            "ivr": {"flow": None, "node": None, "path": [], "inputs": []}, "transcript": [],
            "recent_interactions": recent, "last_by_channel": by_channel,
            "callback": {"id": row["id"], "number": row["number"], "name": row["name"],
                         "reason": row["reason"],
                         "waited_minutes": waited, "attempt": row["attempts"] + 1, "channel": row["channel"],
                         "text": text},
            "text": text,
        }
