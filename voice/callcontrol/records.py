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

With a `WriteSpool` (voice.callcontrol.spool), every write that has to wait is on disk too (a
call's writes in order, from its first one not done), so a node stopped or killed during an
outage loses none of them: the next start `replay()`s them before marking its calls interrupted.
"""

from __future__ import annotations

import asyncio
import logging
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
from voice.callcontrol.spool import SpooledWrite, WriteSpool

if TYPE_CHECKING:
    from cti.history import CallHistory

log = logging.getLogger("voice.callcontrol")


RETRY_FIRST = 0.2  # seconds before the first retry of a write the database could not take
RETRY_MAX = 5.0


class CallRecorder:
    """Writes every answered call's one interaction."""

    def __init__(self, history: CallHistory, *, max_queued: int = 10000,
                 spool: WriteSpool | None = None) -> None:
        self.history = history
        self.max_queued = max_queued
        self.spool = spool
        self._waiting: dict[str, list[SpooledWrite]] = {}  # call key -> its writes not done, in order
        self._ids: dict[str, str] = {}  # call key -> its record's id as the history gave it
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
            info = call.info
            self._then(SpooledWrite(call.key, "call_started", {
                "interaction_id": call.interaction_id, "key": call.key, "call_id": info.call_id,
                "caller": info.caller, "caller_name": info.caller_name, "dialled": info.dialled,
                "node": event.node, "started_at": datetime.fromtimestamp(info.started_at, UTC),
                "customer_id": call.customer_id, "direction": event.direction,
                "metadata": event.metadata}, call=call))
        elif isinstance(event, CallIdentified):
            if call.interaction_id is not None:
                self._then(SpooledWrite(call.key, "call_identified", {
                    "interaction_id": call.interaction_id, "customer_id": event.customer_id, "by": event.by}))
        elif isinstance(event, CallTransferred):
            self._details.setdefault(call.key, {}).setdefault("transfers", []).append({
                "target": event.target, "ok": event.ok, "agent_id": event.agent_id,
                "waited": round(event.waited, 3), "talk_seconds": round(event.talk_seconds, 3),
                "hangup_by": event.hangup_by, **({"by_agent": event.by_agent} if event.by_agent else {}),
                **({"reason": event.reason} if event.reason else {})})
            if event.callback_id:  # the caller hung up to be called back: the callback's record links here
                self._details[call.key]["callback_id"] = event.callback_id
        elif isinstance(event, CallFinished):
            write = self._finish_write(event)
            if write is not None:
                self._then(write, last=True)

    def _finish_write(self, event: CallFinished) -> SpooledWrite | None:
        call = event.call
        details = self._details.pop(call.key, {})
        queued = [t for t in details.get("transfers", []) if str(t["target"]).startswith("queue:")]
        if queued:  # the CDR's queue facts: the agent who took the call, else the last queue tried
            last = next((t for t in reversed(queued) if t["ok"]), queued[-1])
            details.update(queue=str(last["target"]).removeprefix("queue:"), agent_id=last["agent_id"],
                           wait_seconds=last["waited"],
                           talk_seconds=last["talk_seconds"] if last["ok"] else None)
        if call.interaction_id is None:
            log.error("call %s ended without its record; nothing to complete", call.key)
            return None
        return SpooledWrite(call.key, "call_finished", {
            "interaction_id": call.interaction_id, "ended_at": datetime.now(UTC), "ended": event.cause,
            "ivr": event.ivr, "recording": event.recording,
            "transcript": [asdict(s) for s in call.transcript], "details": {**details, **event.details}})

    def _then(self, write: SpooledWrite, last: bool = False) -> None:
        key = write.key
        before = self._chains.get(key)
        self._open[key] = self._open.get(key, 0) + 1
        self._waiting.setdefault(key, []).append(write)
        if self.degraded:  # the database is away: on disk before it waits
            self._spool_call(key)

        async def run() -> None:
            try:
                if before is not None:
                    await asyncio.wait({before})
                await self._with_retries(write)
            finally:
                waiting = self._waiting.get(key, [])
                if write in waiting:
                    waiting.remove(write)
                if not waiting:
                    self._waiting.pop(key, None)
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

    def _spool_call(self, key: str) -> None:
        """Every write of this call not done yet onto the spool, in order (each once)."""
        if self.spool is not None:
            for write in self._waiting.get(key, []):
                self.spool.keep(write)

    async def _with_retries(self, write: SpooledWrite, *, replay: bool = False) -> None:
        delay = RETRY_FIRST
        waiting = False
        try:
            while True:
                try:
                    await self._apply(write, replay=replay)
                    break
                except Exception as exc:
                    if not database_unavailable(exc):
                        log.exception("call %s: history write %s failed", write.key, write.method)
                        break
                    if not waiting:
                        waiting = True
                        self.failing += 1
                        log.warning("call %s: the database is unavailable (%s); the write is kept and "
                                    "retried", write.key, type(exc).__name__)
                        self._spool_call(write.key)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)
        finally:
            if waiting:
                self.failing -= 1
        write.done = True
        if self.spool is not None:
            self.spool.done(write)

    async def _apply(self, write: SpooledWrite, *, replay: bool) -> None:
        """One write. Live, a call whose create failed for good gets no later writes; a replay
        writes what was kept (the history finds a record that already exists by its key)."""
        key, kw = write.key, write.kwargs
        if write.method == "call_started":
            # The id chosen at answer, unless this dialog already had a record (a replay).
            iid = self._ids[key] = await self.history.call_started(**kw)
            if write.call is not None:
                write.call.interaction_id = iid
            self._written.add(key)
            log.debug("call recorded call_id=%s interaction=%s node=%s key=%s", kw["call_id"],
                      kw["interaction_id"], kw["node"], key)
        elif not replay and key not in self._written:
            if write.method == "call_finished":
                log.error("call %s ended without its record (the create failed); nothing to complete", key)
        elif write.method == "call_identified":
            await self.history.call_identified(self._ids.get(key, kw["interaction_id"]),
                                               customer_id=kw["customer_id"], by=kw["by"])
        elif write.method == "call_finished":
            self._written.discard(key)
            iid = self._ids.pop(key, kw["interaction_id"])
            await self.history.call_finished(iid, **{k: v for k, v in kw.items() if k != "interaction_id"})
        else:
            log.error("call %s: unknown history write %r skipped", key, write.method)

    async def replay(self, timeout: float = 30.0) -> int:
        """At start: the writes a previous run of this node kept on its spool and did not finish,
        in order. Returns how many were made; what the database still refuses after `timeout`
        stays on the spool for the next start."""
        if self.spool is None:
            return 0
        writes = await asyncio.to_thread(self.spool.load)  # reading the file: off the loop
        made = 0
        try:
            async with asyncio.timeout(timeout):
                for write in writes:
                    await self._with_retries(write, replay=True)
                    made += 1
        except TimeoutError:
            log.error("history spool: %d of %d kept writes not made yet (the database refuses them); "
                      "kept for the next start", len(writes) - made, len(writes))
        if writes:
            log.warning("history spool: %d writes kept by the previous run were made", made)
        return made

    async def aclose(self, timeout: float = 10.0) -> None:
        if self.pending:
            _, left = await asyncio.wait(set(self.pending), timeout=timeout)
            if left:
                for key in list(self._waiting):
                    self._spool_call(key)
                kept = " (kept on the spool for the next start)" if self.spool is not None else ""
                log.error("%d history writes of %d calls could not be made before the stop%s", len(left),
                          len(self._open), kept)
        if self.spool is not None:
            await asyncio.to_thread(self.spool.flush)
