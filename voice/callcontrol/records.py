"""The call's record in the customer history, as a subscriber to the call lifecycle.

Each call's writes run in order on their own chain of tasks (create on answer, attach to the
customer the IVR identified, complete at the end), so a BYE processed before the ACK, or a
finish that comes before the create was written, still leaves exactly one complete record.
`aclose()` waits for every write still on its way (shutdown, drain).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from cti.models import new_id
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


class CallRecorder:
    """Writes every answered call's one interaction."""

    def __init__(self, history: CallHistory) -> None:
        self.history = history
        self._chains: dict[str, asyncio.Task[None]] = {}
        self._details: dict[str, dict[str, Any]] = {}
        self._written: set[str] = set()  # calls whose record exists
        self.pending: set[asyncio.Task[None]] = set()

    def __call__(self, event: LifecycleEvent) -> None:
        call = event.call
        if isinstance(event, CallAnswered):
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
                "hangup_by": event.hangup_by})
        elif isinstance(event, CallFinished):
            self._then(call.key, lambda: self._finished(event), last=True)

    def _then(self, key: str, step: Callable[[], Awaitable[None]], last: bool = False) -> None:
        before = self._chains.get(key)

        async def run() -> None:
            if before is not None:
                await asyncio.wait({before})
            try:
                await step()
            except Exception:
                log.exception("call %s: history write failed", key)

        task = asyncio.ensure_future(run())
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)
        if last:
            self._chains.pop(key, None)
        else:
            self._chains[key] = task

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
            await asyncio.wait(set(self.pending), timeout=timeout)
