"""The call's record in the customer history, as a subscriber to the call lifecycle.

Each call's writes run in order on their own chain of tasks (create on answer, attach to the
customer the IVR identified, complete at the end), so a BYE processed before the ACK, or a
finish that comes before the create was written, still leaves exactly one complete record.
`aclose()` waits for every write still on its way (shutdown, drain).

While the database is away (cti.outage.database_unavailable), a write is retried with backoff
and the call's later writes wait behind it on its chain, so they land in order when it returns.
At most `max_queued` calls wait like that; the records of calls answered beyond it are dropped
(counted in `dropped`, logged), so an outage cannot grow memory without bound. `degraded` is
True while writes are failing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from cti.models import new_id
from cti.outage import database_unavailable
from voice.callcontrol.lifecycle import (
    CallAnswered,
    CallFinished,
    CallIdentified,
    CallTransferred,
    LifecycleEvent,
)

if TYPE_CHECKING:
    from cti.history import CallHistory

log = logging.getLogger("voice.callcontrol")


RETRY_FIRST = 0.2  # seconds before the first retry of a write the database could not take
RETRY_MAX = 5.0


class CallRecorder:
    """Writes every answered call's one interaction."""

    def __init__(self, history: CallHistory, *, max_queued: int = 10000) -> None:
        self.history = history
        self.max_queued = max_queued
        self._chains: dict[str, asyncio.Task[None]] = {}
        self._details: dict[str, dict[str, Any]] = {}
        self._written: set[str] = set()  # calls whose record exists
        self._open: dict[str, int] = {}  # call key -> its writes not done yet
        self._dropped_keys: set[str] = set()
        self.pending: set[asyncio.Task[None]] = set()
        self.failing = 0  # writes waiting to be retried now
        self.dropped = 0  # calls whose record was dropped (too many queued while the database was away)

    @property
    def degraded(self) -> bool:
        """History writes are failing (the database is away) and queue in memory."""
        return self.failing > 0

    @property
    def queued(self) -> int:
        """Calls with writes not done yet."""
        return len(self._open)

    def __call__(self, event: LifecycleEvent) -> None:
        call = event.call
        if call.key in self._dropped_keys:
            if isinstance(event, CallFinished):
                self._dropped_keys.discard(call.key)
            return
        if isinstance(event, CallAnswered):
            if len(self._open) >= self.max_queued:
                self.dropped += 1
                self._dropped_keys.add(call.key)
                log.error("call %s: no record: %d calls already wait for the database", call.key,
                          len(self._open))
                return
            self._details[call.key] = {}
            # The record's id is known at once (the flow's first log line, the live view and the
            # screen pop carry it) though the row is written a moment later.
            call.interaction_id = new_id()
            self._then(call.key, lambda: self._created(event))
        elif isinstance(event, CallIdentified):
            self._then(call.key, lambda: self._identified(event))
        elif isinstance(event, CallTransferred):
            self._details.setdefault(call.key, {}).setdefault("transfers", []).append({
                "target": event.target, "ok": event.ok, "agent_id": event.agent_id,
                "waited": round(event.waited, 3), "talk_seconds": round(event.talk_seconds, 3),
                "hangup_by": event.hangup_by, **({"by_agent": event.by_agent} if event.by_agent else {}),
                **({"reason": event.reason} if event.reason else {})})
        elif isinstance(event, CallFinished):
            self._then(call.key, lambda: self._finished(event), last=True)

    def _then(self, key: str, step: Callable[[], Awaitable[None]], last: bool = False) -> None:
        before = self._chains.get(key)
        self._open[key] = self._open.get(key, 0) + 1

        async def run() -> None:
            try:
                if before is not None:
                    await asyncio.wait({before})
                await self._with_retries(key, step)
            finally:
                left = self._open.get(key, 1) - 1
                if left:
                    self._open[key] = left
                else:
                    self._open.pop(key, None)

        task = asyncio.ensure_future(run())
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)
        if last:
            self._chains.pop(key, None)
        else:
            self._chains[key] = task

    async def _with_retries(self, key: str, step: Callable[[], Awaitable[None]]) -> None:
        delay = RETRY_FIRST
        waiting = False
        try:
            while True:
                try:
                    await step()
                    return
                except Exception as exc:
                    if not database_unavailable(exc):
                        log.exception("call %s: history write failed", key)
                        return
                    if not waiting:
                        waiting = True
                        self.failing += 1
                        log.warning("call %s: the database is unavailable (%s); the write is kept and "
                                    "retried", key, type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)
        finally:
            if waiting:
                self.failing -= 1

    async def _created(self, event: CallAnswered) -> None:
        call = event.call
        info = call.info
        call.interaction_id = await self.history.call_started(
            interaction_id=call.interaction_id, key=call.key, call_id=info.call_id, caller=info.caller,
            caller_name=info.caller_name, dialled=info.dialled, node=event.node,
            started_at=datetime.fromtimestamp(info.started_at, UTC), customer_id=call.customer_id)
        self._written.add(call.key)
        log.debug("call recorded call_id=%s interaction=%s node=%s key=%s", info.call_id, call.interaction_id,
                  event.node, call.key)

    async def _identified(self, event: CallIdentified) -> None:
        if event.call.interaction_id is not None and event.call.key in self._written:
            await self.history.call_identified(event.call.interaction_id, customer_id=event.customer_id,
                                               by=event.by)

    async def _finished(self, event: CallFinished) -> None:
        call = event.call
        details = self._details.pop(call.key, {})
        queued = [t for t in details.get("transfers", []) if str(t["target"]).startswith("queue:")]
        if queued:  # the CDR's queue facts: the agent who took the call, else the last queue tried
            last = next((t for t in reversed(queued) if t["ok"]), queued[-1])
            details.update(queue=str(last["target"]).removeprefix("queue:"), agent_id=last["agent_id"],
                           wait_seconds=last["waited"],
                           talk_seconds=last["talk_seconds"] if last["ok"] else None)
        if call.interaction_id is None or call.key not in self._written:
            log.error("call %s ended without its record (the create failed); nothing to complete", call.key)
            return
        self._written.discard(call.key)
        await self.history.call_finished(
            call.interaction_id, ended_at=datetime.now(UTC), ended=event.cause, ivr=event.ivr,
            recording=event.recording, transcript=[asdict(s) for s in call.transcript],
            details={**details, **event.details})

    async def aclose(self, timeout: float = 10.0) -> None:
        if self.pending:
            _, left = await asyncio.wait(set(self.pending), timeout=timeout)
            if left:
                log.error("%d history writes of %d calls could not be made before the stop", len(left),
                          len(self._open))
