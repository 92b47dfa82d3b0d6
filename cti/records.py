"""What the store takes and gives: inputs, results and errors (no database in here)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

# Channels every deployment knows. EXTRA_CHANNELS is where more names go until the config has a key.
CHANNELS = ("voice", "chat", "email", "sms", "web", "social")
EXTRA_CHANNELS: tuple[str, ...] = ()
DIRECTIONS = ("inbound", "outbound")
SEGMENT_KINDS = ("speech", "dtmf", "prompt")
# What the ingest API takes as `status`: open/pending (the conversation goes on: a caller may
# continue it) or completed/closed (done with). Calls write in_progress, completed, interrupted.
INGEST_STATUSES = ("open", "pending", "completed", "closed")

IdentityPairs = Sequence[tuple[str, str]]  # (kind, normalized value)


class IdentityConflict(Exception):
    """The identities given belong to different customers (or to another customer than intended)."""

    def __init__(self, customer_ids: Sequence[str], field: str) -> None:
        super().__init__(f"identities belong to different customers: {', '.join(customer_ids)}")
        self.customer_ids = list(customer_ids)
        self.field = field


class NotFound(Exception):
    pass


@dataclass(kw_only=True)
class Segment:
    start: float
    end: float
    speaker: str
    kind: str
    text: str
    confidence: float | None = None
    engine: str | None = None
    alternatives: list[tuple[str, float]] | None = None  # the recognizer's n-best, best first


@dataclass(kw_only=True)
class NewInteraction:
    """An interaction to ingest; identities already normalized."""

    channel: str
    direction: str
    started_at: datetime
    identities: IdentityPairs
    name: str | None = None
    ended_at: datetime | None = None
    status: str = "completed"
    agent: str | None = None
    subject: str | None = None
    summary: str | None = None
    content: str | None = None
    disposition: str | None = None
    queue: str | None = None  # the queue that handled it
    metadata: dict[str, Any] = field(default_factory=dict)
    ivr: dict[str, Any] | None = None
    recording: str | None = None
    call_id: str | None = None
    idempotency_key: str | None = None
    transcript: list[Segment] = field(default_factory=list)
    id: str | None = None  # chosen by the caller (a call knows its record's id before it is written)


@dataclass(frozen=True, kw_only=True)
class IngestResult:
    interaction_id: str
    customer_id: str | None
    created: bool  # False: an earlier request with the same idempotency key made it
    customer_created: bool = False
