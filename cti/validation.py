"""Request bodies to store inputs. Every problem raises ApiError naming the offending field."""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Any

from cti.identity import IDENTITY_KINDS, IdentityError, normalize_identity
from cti.records import INGEST_STATUSES
from cti.store import DIRECTIONS, SEGMENT_KINDS, NewInteraction, Segment

MAX_KEY = 200
# The name a flow uses in `transfer: queue:NAME` (the same rule as the config's [queue NAME]).
QUEUE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class ApiError(Exception):
    """An HTTP error with a JSON body: {"error": {"status", "field", "message"}}."""

    def __init__(self, status: int, message: str, field: str | None = None,
                 extra: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.extra = extra or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"status": self.status, "field": self.field, "message": self.message, **self.extra}}


def invalid(field: str, message: str) -> ApiError:
    return ApiError(422, message, field)


def check_text(value: Any, path: str) -> None:
    """Reject text the databases cannot store: NUL (PostgreSQL text) and lone surrogates (UTF-8)."""
    if isinstance(value, str):
        if "\x00" in value:
            raise invalid(path, "must not contain NUL characters")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise invalid(path, "must be valid Unicode text") from None
    elif isinstance(value, dict):
        for k, v in value.items():
            check_text(k, f"{path}.{k}" if path else str(k))
            check_text(v, f"{path}.{k}" if path else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            check_text(v, f"{path}[{i}]")
    elif isinstance(value, float) and not math.isfinite(value):
        raise invalid(path, "must be a finite number")


def require_object(body: Any, allowed: set[str], where: str = "") -> dict[str, Any]:
    if not isinstance(body, dict):
        raise invalid(where or "body", "must be a JSON object")
    for key in body:
        if key not in allowed:
            raise invalid(f"{where}.{key}" if where else key, "unknown field")
    return body


def opt_str(body: dict[str, Any], key: str, max_len: int, path: str | None = None) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise invalid(path or key, "must be a string")
    if len(value) > max_len:
        raise invalid(path or key, f"must be at most {max_len} characters")
    return value


def req_str(body: dict[str, Any], key: str, max_len: int) -> str:
    value = opt_str(body, key, max_len)
    if value is None or not value.strip():
        raise invalid(key, "is required")
    return value


def timestamp(body: dict[str, Any], key: str, required: bool) -> datetime | None:
    value = body.get(key)
    if value is None:
        if required:
            raise invalid(key, "is required (ISO 8601 with a UTC offset, e.g. 2024-05-01T09:30:00Z)")
        return None
    if not isinstance(value, str):
        raise invalid(key, "must be an ISO 8601 timestamp string")
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise invalid(key, f"not an ISO 8601 timestamp: {value[:60]!r}") from None
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise invalid(key, "needs a UTC offset (e.g. Z or +02:00)")
    return dt


def attributes(body: dict[str, Any], key: str) -> dict[str, Any] | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise invalid(key, "must be a JSON object")
    for k in value:
        if not k or len(k) > 100:
            raise invalid(f"{key}.{k}", "attribute names must be 1-100 characters")
    return value


def identities(body: dict[str, Any], default_country: str, where: str = "") -> list[tuple[str, str]]:
    """phone/email/account/external_id fields, each a string or a list of strings, normalized."""
    out: list[tuple[str, str]] = []
    for kind in IDENTITY_KINDS:
        value = body.get(kind)
        path = f"{where}.{kind}" if where else kind
        if value is None:
            continue
        values = value if isinstance(value, list) else [value]
        if len(values) > 20:
            raise invalid(path, "at most 20 values")
        for i, raw in enumerate(values):
            p = f"{path}[{i}]" if isinstance(value, list) else path
            if not isinstance(raw, str):
                raise invalid(p, "must be a string")
            if len(raw) > 320:
                raise invalid(p, "must be at most 320 characters")
            try:
                out.append((kind, normalize_identity(kind, raw, default_country)))
            except IdentityError as exc:
                raise invalid(p, str(exc)) from None
    return list(dict.fromkeys(out))


_INGEST_FIELDS = {
    "channel", "direction", "started_at", "ended_at", "customer", "agent", "subject", "summary", "content",
    "disposition", "metadata", "idempotency_key", "message_id", "transcript", "recording", "queue", "status",
}
_CUSTOMER_REF_FIELDS = {"name", *IDENTITY_KINDS}
_SEGMENT_FIELDS = {"start", "end", "speaker", "kind", "text", "confidence", "engine"}


def parse_ingest(body: Any, *, channels: tuple[str, ...], default_country: str) -> NewInteraction:
    body = require_object(body, _INGEST_FIELDS)
    check_text(body, "")
    channel = req_str(body, "channel", 40)
    if channel not in channels:
        raise invalid("channel", f"unknown channel {channel!r} (known: {', '.join(channels)})")
    direction = req_str(body, "direction", 10)
    if direction not in DIRECTIONS:
        raise invalid("direction", f"must be one of {', '.join(DIRECTIONS)}")
    started = timestamp(body, "started_at", required=True)
    assert started is not None
    ended = timestamp(body, "ended_at", required=False)
    if ended is not None and ended < started:
        raise invalid("ended_at", "is before started_at")
    if "customer" not in body:
        raise invalid("customer", "is required: name the customer by phone, email, account or external_id")
    ref = require_object(body["customer"], _CUSTOMER_REF_FIELDS, "customer")
    idents = identities(ref, default_country, "customer")
    if not idents:
        raise invalid("customer", "needs at least one of phone, email, account, external_id")
    metadata = body.get("metadata")
    metadata = {} if metadata is None else metadata
    if not isinstance(metadata, dict):
        raise invalid("metadata", "must be a JSON object")
    key = opt_str(body, "idempotency_key", MAX_KEY)
    message_id = opt_str(body, "message_id", MAX_KEY)
    # The channel's own message id is as good as a key: a redelivered webhook must not duplicate.
    idem = f"key:{key}" if key else (f"msg:{channel}:{message_id}" if message_id else None)
    if message_id:
        metadata = {**metadata, "message_id": message_id}
    queue = opt_str(body, "queue", 64)
    if queue is not None and not QUEUE_NAME.match(queue):
        raise invalid("queue", "a queue name is 1-64 letters, digits, '.', '_' and '-', starting with a "
                               "letter or digit (the NAME of transfer: queue:NAME)")
    status = opt_str(body, "status", 20) or "completed"
    if status not in INGEST_STATUSES:
        raise invalid("status", f"must be one of {', '.join(INGEST_STATUSES)}")
    return NewInteraction(
        channel=channel, direction=direction, started_at=started, ended_at=ended, identities=idents,
        name=opt_str(ref, "name", 200, "customer.name"), agent=opt_str(body, "agent", 200),
        subject=opt_str(body, "subject", 500), summary=opt_str(body, "summary", 20000),
        content=opt_str(body, "content", 10_000_000), disposition=opt_str(body, "disposition", 100),
        queue=queue, status=status, recording=opt_str(body, "recording", 1000), metadata=metadata,
        idempotency_key=idem,
        transcript=transcript(body.get("transcript")),
    )


def transcript(value: Any) -> list[Segment]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise invalid("transcript", "must be a list of segments")
    out = []
    for i, raw in enumerate(value):
        where = f"transcript[{i}]"
        seg = require_object(raw, _SEGMENT_FIELDS, where)
        nums: dict[str, float] = {}
        for key in ("start", "end"):
            v = seg.get(key)
            if isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v < 1e7:
                raise invalid(f"{where}.{key}", "must be a number of seconds from the start (>= 0)")
            nums[key] = float(v)
        if nums["end"] < nums["start"]:
            raise invalid(f"{where}.end", "is before start")
        kind = opt_str(seg, "kind", 20, f"{where}.kind")
        if kind not in SEGMENT_KINDS:
            raise invalid(f"{where}.kind", f"must be one of {', '.join(SEGMENT_KINDS)}")
        speaker = opt_str(seg, "speaker", 40, f"{where}.speaker")
        if not speaker:
            raise invalid(f"{where}.speaker", "is required")
        text = opt_str(seg, "text", 100_000, f"{where}.text") or ""
        conf = seg.get("confidence")
        if conf is not None and (isinstance(conf, bool) or not isinstance(conf, int | float)
                                 or not 0 <= conf <= 1):
            raise invalid(f"{where}.confidence", "must be a number from 0 to 1")
        out.append(Segment(start=nums["start"], end=nums["end"], speaker=speaker, kind=kind, text=text,
                           confidence=None if conf is None else float(conf),
                           engine=opt_str(seg, "engine", 100, f"{where}.engine")))
    return out


_CUSTOMER_FIELDS = {"name", "attributes", *IDENTITY_KINDS}


def parse_customer(body: Any, default_country: str, *, patch: bool = False
                   ) -> tuple[str | None, list[tuple[str, str]], dict[str, Any] | None]:
    """(name, identities, attributes) of a POST or PATCH /customers body."""
    body = require_object(body, _CUSTOMER_FIELDS)
    check_text(body, "")
    name = opt_str(body, "name", 200)
    idents = identities(body, default_country)
    attrs = attributes(body, "attributes")
    if not patch and not idents and not name:
        raise invalid("name", "a customer needs a name or at least one identity")
    if patch and name is None and not idents and attrs is None:
        raise invalid("body", "nothing to change: give name, attributes or identities")
    return name, idents, attrs
