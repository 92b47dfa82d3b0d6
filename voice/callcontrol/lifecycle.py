"""A call's lifecycle as events, and the subscribers that follow it (history, logs, metrics).

The answer path publishes, in this order and once each: `CallAnswered` when the 2xx went out
(so a call answered and ended before its ACK still has its record), `CallIdentified` when the
IVR found the customer (may come again with another customer), `CallTransferred` per queue or
blind transfer, `CallFinished` when the call is over. Subscribers are synchronous callables;
one that writes to a database queues the work itself and waits for it in `aclose()`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from voice.callcontrol.call import Call

log = logging.getLogger("voice.callcontrol")


@dataclass(frozen=True, kw_only=True)
class CallAnswered:
    call: Call
    node: str


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


class Lifecycle:
    """Fans each event out to every subscriber; a failing subscriber never stops the others."""

    def __init__(self, subscribers: Sequence[Subscriber] = ()) -> None:
        self.subscribers: list[Subscriber] = list(subscribers)

    def subscribe(self, subscriber: Subscriber) -> None:
        self.subscribers.append(subscriber)

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
        log.info("call transferred key=%s target=%s ok=%s agent=%s waited=%.1fs talk=%.1fs", call.key,
                 event.target, event.ok, event.agent_id, event.waited, event.talk_seconds)
    elif isinstance(event, CallFinished):
        log.info("call ended call_id=%s interaction=%s node=%s cause=%s duration=%.1fs key=%s",
                 call.info.call_id, call.interaction_id, event.node, event.cause, call.elapsed(), call.key)
