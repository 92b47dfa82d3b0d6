"""A call's lifecycle as events, and the subscribers that follow it (history, logs, metrics).

The answer path publishes, in this order and once each: `CallAnswered` when the 2xx went out
(so a call answered and ended before its ACK still has its record), `CallIdentified` when the
IVR found the customer (may come again with another customer), `CallTransferred` per queue or
blind transfer, `CallFinished` when the call is over. Subscribers are synchronous callables;
one that writes to a database queues the work itself and waits for it in `aclose()`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from voice.callcontrol.call import Call

log = logging.getLogger("voice.callcontrol")
calls_log = logging.getLogger("voice.calls")


@dataclass(frozen=True, kw_only=True)
class CallAnswered:
    call: Call
    node: str
    direction: str = "inbound"  # outbound: a call the service placed (a callback)
    metadata: dict[str, Any] = field(default_factory=dict)  # merged into the record (callback_of...)


@dataclass(frozen=True, kw_only=True)
class CallIdentified:
    call: Call
    customer_id: str
    by: str  # "caller_id", "account", "email", ...


@dataclass(frozen=True, kw_only=True)
class CallTransferred:
    call: Call
    target: str  # "queue:support" or a SIP URI
    ok: bool
    agent_id: str | None = None
    waited: float = 0.0  # seconds in the queue
    talk_seconds: float = 0.0
    hangup_by: str | None = None  # "agent" | "caller" | "shutdown" once the conversation is over
    callback_id: str | None = None  # the caller chose a callback (virtual hold) instead of waiting
    by_agent: str | None = None  # a blind transfer from this agent's softphone (else the flow's)
    reason: str | None = None  # an agent's transfer nobody took: why (no_agents, agent_busy, ...)


@dataclass(frozen=True, kw_only=True)
class CallFinished:
    call: Call
    cause: str  # the leg's end cause: bye, cancel, no_ack, flow, flow_end, shutdown, media_failed...
    ivr: dict[str, Any] | None = None
    recording: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    node: str = ""


LifecycleEvent = CallAnswered | CallIdentified | CallTransferred | CallFinished


class Subscriber(Protocol):
    def __call__(self, event: LifecycleEvent) -> None: ...


class RefusalSubscriber(Protocol):
    def __call__(self, event: LifecycleEvent | CallRefused) -> None: ...


class Lifecycle:
    """Fans each event out to every subscriber; a failing subscriber never stops the others."""

    def __init__(self, subscribers: Sequence[Subscriber] = ()) -> None:
        self.subscribers: list[Subscriber] = list(subscribers)
        self.refusals: list[RefusalSubscriber] = []

    def subscribe(self, subscriber: Subscriber) -> None:
        self.subscribers.append(subscriber)

    def subscribe_refusals(self, subscriber: RefusalSubscriber) -> None:
        """Also told of calls refused before any answer (they have no Call and no record)."""
        self.refusals.append(subscriber)

    def refused(self, event: CallRefused) -> None:
        for subscriber in self.refusals:
            try:
                subscriber(event)
            except Exception:
                log.exception("lifecycle subscriber failed on CallRefused")

    def publish(self, event: LifecycleEvent) -> None:
        for subscriber in self.subscribers:
            try:
                subscriber(event)
            except Exception:
                log.exception("lifecycle subscriber failed on %s", type(event).__name__)


def log_lifecycle(event: LifecycleEvent) -> None:
    """A line per step of a call: ids and causes, no personal data (no numbers, no names). The
    start line, with the interaction id, comes from the recorder once the record exists."""
    call = event.call
    if isinstance(event, CallAnswered):
        log.debug("call answered key=%s call_id=%s node=%s", call.key, call.info.call_id, event.node)
    elif isinstance(event, CallIdentified):
        log.info("call identified key=%s interaction=%s by=%s", call.key, call.interaction_id, event.by)
    elif isinstance(event, CallTransferred):
        # An agent's transfer may be to a number someone gave them: only queue names are logged.
        target = event.target if event.by_agent is None or event.target.startswith("queue:") else "phone"
        log.info("call transferred key=%s target=%s ok=%s agent=%s by=%s waited=%.1fs talk=%.1fs", call.key,
                 target, event.ok, event.agent_id, event.by_agent, event.waited, event.talk_seconds)
    elif isinstance(event, CallFinished):
        log.debug("call finished call_id=%s interaction=%s node=%s cause=%s duration=%.1fs key=%s",
                  call.info.call_id, call.interaction_id, event.node, event.cause, call.elapsed(), call.key)
        if event.ivr is None:
            # No flow ran (the call ended before its ACK): its end line comes from here, in the
            # flow's format (voice.calls), so every answered call logs one.
            line = {"event": "call_end", "call_id": call.info.call_id, "interaction_id": call.interaction_id,
                    "node_id": event.node, "ended": event.cause, "duration": round(call.elapsed(), 3)}
            calls_log.info(json.dumps(line, separators=(",", ":")),
                           extra={"fields": {"msg": "call ended", **line}})


@dataclass(frozen=True, kw_only=True)
class CallRefused:
    """A call refused before it was answered (488, 503, drain, CANCEL while ringing): no record."""

    call_id: str
    status: int
    reason: str


# How a call's end cause reads as a metrics outcome when no flow said more (see cti.metrics).
_CAUSE_OUTCOMES = {"bye": "caller_hangup", "cancel": "caller_hangup", "no_ack": "error",
                   "media_failed": "error", "bad_answer": "error", "error": "error",
                   "shutdown": "interrupted", "flow": "hangup", "flow_end": "hangup", "callback": "hangup",
                   "agent_hangup": "agent"}


class CallMetrics:
    """Calls active and ended by outcome, for /metrics (cti.metrics)."""

    def __init__(self) -> None:
        self._agent: set[str] = set()  # calls that reached an agent

    def __call__(self, event: LifecycleEvent | CallRefused) -> None:
        from cti import metrics

        if isinstance(event, CallRefused):
            metrics.call_refused("cancelled" if event.status == 487 else "rejected")
        elif isinstance(event, CallAnswered):
            metrics.call_started()
        elif isinstance(event, CallTransferred):
            if event.ok and event.agent_id:
                self._agent.add(event.call.key)
        elif isinstance(event, CallFinished):
            if event.call.key in self._agent:
                self._agent.discard(event.call.key)
                outcome = "agent"
            elif event.cause in ("shutdown", "media_failed"):
                outcome = _CAUSE_OUTCOMES[event.cause]
            else:
                ended = (event.ivr or {}).get("ended")
                outcome = (str(ended) if ended in metrics.CALL_OUTCOMES
                           else _CAUSE_OUTCOMES.get(event.cause, "other"))
            metrics.call_ended(outcome)
