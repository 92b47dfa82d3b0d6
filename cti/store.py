"""The customer store: customers with identities, and one interaction history for every channel.

Every public method is one transaction: it either happens entirely or not at all.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, func, insert, or_, select, tuple_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from cti.db import Database
from cti.identity import IDENTITY_KINDS
from cti.models import Customer, Identity, Interaction, TranscriptSegment, UtcDateTime, new_id, utcnow

log = logging.getLogger(__name__)

# Channels every deployment knows. EXTRA_CHANNELS is where more names go until the config has a key.
CHANNELS = ("voice", "chat", "email", "sms", "web", "social")
EXTRA_CHANNELS: tuple[str, ...] = ()
DIRECTIONS = ("inbound", "outbound")
SEGMENT_KINDS = ("speech", "dtmf", "prompt")

IdentityPairs = Sequence[tuple[str, str]]  # (kind, normalized value)

_TIMELINE_COLUMNS = (
    Interaction.id,
    Interaction.customer_id,
    Interaction.channel,
    Interaction.direction,
    Interaction.status,
    Interaction.started_at,
    Interaction.ended_at,
    Interaction.agent,
    Interaction.subject,
    Interaction.summary,
    Interaction.disposition,
)


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
    metadata: dict[str, Any] = field(default_factory=dict)
    ivr: dict[str, Any] | None = None
    recording: str | None = None
    call_id: str | None = None
    idempotency_key: str | None = None
    transcript: list[Segment] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class IngestResult:
    interaction_id: str
    customer_id: str | None
    created: bool  # False: an earlier request with the same idempotency key made it
    customer_created: bool = False


def iso(dt: datetime | None) -> str | None:
    return dt.isoformat().replace("+00:00", "Z") if dt else None


def encode_cursor(started_at: datetime, interaction_id: str) -> str:
    raw = f"{started_at.isoformat()}|{interaction_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """Raise ValueError for anything that is not a cursor this store made."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        when, _, ident = raw.partition("|")
        started = datetime.fromisoformat(when)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ValueError("not a valid cursor") from None
    if started.tzinfo is None or not ident or len(ident) > 36:
        raise ValueError("not a valid cursor")
    return started, ident


def customer_dict(customer: Customer) -> dict[str, Any]:
    ids: dict[str, list[str]] = {k: [] for k in IDENTITY_KINDS}
    for ident in customer.identities:
        ids.setdefault(ident.kind, []).append(ident.value)
    return {
        "id": customer.id,
        "name": customer.name,
        "phones": ids["phone"],
        "emails": ids["email"],
        "accounts": ids["account"],
        "external_ids": ids["external_id"],
        "attributes": dict(customer.attributes or {}),
        "created_at": iso(customer.created_at),
        "updated_at": iso(customer.updated_at),
    }


def summary_dict(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "customer_id": row.customer_id,
        "channel": row.channel,
        "direction": row.direction,
        "status": row.status,
        "started_at": iso(row.started_at),
        "ended_at": iso(row.ended_at),
        "agent": row.agent,
        "subject": row.subject,
        "summary": row.summary,
        "disposition": row.disposition,
    }


def _identity_filter(identities: IdentityPairs) -> Any:
    return or_(*(and_(Identity.kind == k, Identity.value == v) for k, v in identities))


class CustomerStore:
    """Customers, identities and interactions on one database."""

    def __init__(self, db: Database, *, default_country: str = "US",
                 channels: Iterable[str] = CHANNELS + EXTRA_CHANNELS) -> None:
        self.db = db
        self.default_country = default_country
        self.channels = tuple(dict.fromkeys(channels))

    # -- identities -----------------------------------------------------------------------------

    async def _owners(self, s: AsyncSession, identities: IdentityPairs) -> dict[tuple[str, str], str]:
        if not identities:
            return {}
        rows = await s.execute(
            select(Identity.kind, Identity.value, Identity.customer_id).where(_identity_filter(identities))
        )
        return {(r.kind, r.value): r.customer_id for r in rows}

    async def _attach(self, s: AsyncSession, customer_id: str, identities: IdentityPairs,
                      owners: dict[tuple[str, str], str]) -> None:
        missing = [{"customer_id": customer_id, "kind": k, "value": v}
                   for k, v in dict.fromkeys(identities) if (k, v) not in owners]
        if missing:
            await s.execute(insert(Identity), missing)

    async def _resolve(self, s: AsyncSession, identities: IdentityPairs, name: str | None,
                       attributes: dict[str, Any] | None = None) -> tuple[str, bool]:
        """The one customer these identities name, created if none; IdentityConflict if several."""
        owners = await self._owners(s, identities)
        found = list(dict.fromkeys(owners.values()))
        if len(found) > 1:
            kinds = sorted({k for (k, _), c in owners.items() if c != found[0]})
            raise IdentityConflict(found, kinds[0])
        if found:
            customer_id = found[0]
            if name:
                await s.execute(update(Customer).where(Customer.id == customer_id, Customer.name.is_(None))
                                .values(name=name))
            await self._attach(s, customer_id, identities, owners)
            return customer_id, False
        customer_id = new_id()
        now = utcnow()
        await s.execute(insert(Customer).values(id=customer_id, name=name, attributes=attributes or {},
                                                created_at=now, updated_at=now))
        await self._attach(s, customer_id, identities, owners)
        return customer_id, True

    # -- interactions ---------------------------------------------------------------------------

    async def ingest(self, item: NewInteraction) -> IngestResult:
        """Store an interaction, attached to the customer its identities name (created if unknown).

        A unique violation means a concurrent request won a race (same idempotency key or the same
        new identity); the retry then finds its result and answers like a sequential retry would.
        """
        for attempt in range(5):
            try:
                return await self._ingest_once(item)
            except IntegrityError:
                log.debug("ingest lost a race (attempt %d), looking again", attempt + 1)
                if attempt == 4:
                    raise
        raise AssertionError("unreachable")

    async def _ingest_once(self, item: NewInteraction) -> IngestResult:
        async with self.db.write() as s, s.begin():
            if item.idempotency_key is not None:
                row = (await s.execute(
                    select(Interaction.id, Interaction.customer_id)
                    .where(Interaction.idempotency_key == item.idempotency_key)
                )).first()
                if row is not None:
                    return IngestResult(interaction_id=row.id, customer_id=row.customer_id, created=False)
            customer_id: str | None = None
            created = False
            if item.identities:
                customer_id, created = await self._resolve(s, item.identities, item.name)
            interaction_id = new_id()
            await s.execute(insert(Interaction).values(
                id=interaction_id, customer_id=customer_id, channel=item.channel, direction=item.direction,
                status=item.status, started_at=item.started_at, ended_at=item.ended_at, agent=item.agent,
                subject=item.subject, summary=item.summary, content=item.content,
                disposition=item.disposition, meta=item.metadata, ivr=item.ivr, recording=item.recording,
                call_id=item.call_id, idempotency_key=item.idempotency_key, created_at=utcnow(),
            ))
            await self._add_segments(s, interaction_id, item.transcript)
        return IngestResult(interaction_id=interaction_id, customer_id=customer_id, created=True,
                            customer_created=created)

    async def _add_segments(self, s: AsyncSession, interaction_id: str, segments: Sequence[Segment],
                            first_seq: int = 0) -> None:
        if segments:
            await s.execute(insert(TranscriptSegment), [
                {"interaction_id": interaction_id, "seq": first_seq + i, "start": g.start, "end": g.end,
                 "speaker": g.speaker, "kind": g.kind, "text": g.text, "confidence": g.confidence,
                 "engine": g.engine}
                for i, g in enumerate(segments)
            ])

    async def finish_interaction(self, interaction_id: str, *, ended_at: datetime, status: str,
                                 disposition: str | None, ivr: dict[str, Any] | None,
                                 recording: str | None, transcript: Sequence[Segment]) -> None:
        async with self.db.write() as s, s.begin():
            result = await s.execute(
                update(Interaction).where(Interaction.id == interaction_id).values(
                    ended_at=ended_at, status=status, disposition=disposition, ivr=ivr, recording=recording)
            )
            if result.rowcount == 0:  # type: ignore[attr-defined]
                raise NotFound(interaction_id)
            last = (await s.execute(select(func.max(TranscriptSegment.seq))
                                    .where(TranscriptSegment.interaction_id == interaction_id))).scalar()
            await self._add_segments(s, interaction_id, transcript, 0 if last is None else last + 1)

    async def mark_interrupted(self, channel: str = "voice") -> int:
        async with self.db.write() as s, s.begin():
            result = await s.execute(
                update(Interaction).where(Interaction.status == "in_progress", Interaction.channel == channel)
                .values(status="interrupted")
            )
            return int(result.rowcount)  # type: ignore[attr-defined]

    async def timeline(self, customer_id: str, *, limit: int = 20,
                       cursor: tuple[datetime, str] | None = None) -> tuple[list[dict[str, Any]], str | None]:
        """Newest first; returns (page, cursor of the next page or None)."""
        query = select(*_TIMELINE_COLUMNS).where(Interaction.customer_id == customer_id)
        if cursor is not None:
            # Keyset pagination: a row-value comparison the (customer_id, started_at, id) index serves,
            # so page 1000 costs what page 1 does.
            query = query.where(tuple_(Interaction.started_at, Interaction.id) < tuple_(
                bindparam("c_at", cursor[0], type_=UtcDateTime()), bindparam("c_id", cursor[1])))
        query = query.order_by(Interaction.started_at.desc(), Interaction.id.desc()).limit(limit + 1)
        async with self.db.read() as s:
            rows = (await s.execute(query)).all()
        more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = encode_cursor(rows[-1].started_at, rows[-1].id) if more and rows else None
        return [summary_dict(r) for r in rows], next_cursor

    async def get_interaction(self, interaction_id: str) -> dict[str, Any] | None:
        async with self.db.read() as s:
            row = await s.get(Interaction, interaction_id)
            if row is None:
                return None
            segs = (await s.execute(
                select(TranscriptSegment).where(TranscriptSegment.interaction_id == interaction_id)
                .order_by(TranscriptSegment.seq))).scalars()
            out = summary_dict(row)
            out.update(content=row.content, metadata=row.meta, ivr=row.ivr, recording=row.recording,
                       call_id=row.call_id, idempotency_key=row.idempotency_key,
                       created_at=iso(row.created_at))
            out["transcript"] = [
                {"start": g.start, "end": g.end, "speaker": g.speaker, "kind": g.kind, "text": g.text,
                 "confidence": g.confidence, "engine": g.engine} for g in segs
            ]
            return out

    # -- customers ------------------------------------------------------------------------------

    async def create_customer(self, *, name: str | None, identities: IdentityPairs,
                              attributes: dict[str, Any]) -> dict[str, Any]:
        """A new customer; IdentityConflict if any identity already belongs to someone."""
        try:
            async with self.db.write() as s, s.begin():
                owners = await self._owners(s, identities)
                if owners:
                    (kind, _), owner = next(iter(owners.items()))
                    raise IdentityConflict([owner], kind)
                customer_id, _ = await self._resolve(s, identities, name, attributes)
        except IntegrityError:  # a concurrent request took one of the identities first
            async with self.db.read() as s:
                owners = await self._owners(s, identities)
            (kind, _), owner = next(iter(owners.items()))
            raise IdentityConflict([owner], kind) from None
        found = await self.get_customer(customer_id)
        assert found is not None
        return found

    async def get_customer(self, customer_id: str) -> dict[str, Any] | None:
        async with self.db.read() as s:
            customer = await s.get(Customer, customer_id)
            return customer_dict(customer) if customer else None

    async def find_customers(self, identities: IdentityPairs) -> list[dict[str, Any]]:
        """Customers owning any of these identities."""
        if not identities:
            return []
        async with self.db.read() as s:
            ids = select(Identity.customer_id).where(_identity_filter(identities))
            rows = await s.execute(select(Customer).where(Customer.id.in_(ids)).order_by(Customer.created_at))
            return [customer_dict(c) for c in rows.scalars()]

    async def find_customer_id(self, kind: str, value: str) -> str | None:
        async with self.db.read() as s:
            return (await s.execute(select(Identity.customer_id).where(
                Identity.kind == kind, Identity.value == value))).scalar()

    async def update_customer(self, customer_id: str, *, name: str | None = None,
                              attributes: dict[str, Any] | None = None,
                              identities: IdentityPairs = ()) -> dict[str, Any]:
        """Merge-patch attributes (a None value deletes the key), set the name, add identities."""
        try:
            async with self.db.write() as s, s.begin():
                customer = await s.get(Customer, customer_id, with_for_update=True)
                if customer is None:
                    raise NotFound(customer_id)
                owners = await self._owners(s, identities)
                others = [(k, c) for (k, _), c in owners.items() if c != customer_id]
                if others:
                    raise IdentityConflict([customer_id, others[0][1]], others[0][0])
                await self._attach(s, customer_id, identities, owners)
                if name is not None:
                    customer.name = name
                if attributes:
                    merged = dict(customer.attributes or {})
                    for key, value in attributes.items():
                        if value is None:
                            merged.pop(key, None)
                        else:
                            merged[key] = value
                    customer.attributes = merged
                customer.updated_at = utcnow()
        except IntegrityError:
            async with self.db.read() as s:
                owners = await self._owners(s, identities)
            others = [(k, c) for (k, _), c in owners.items() if c != customer_id]
            if not others:
                raise
            raise IdentityConflict([customer_id, others[0][1]], others[0][0]) from None
        found = await self.get_customer(customer_id)
        assert found is not None
        return found

    async def upsert_customer(self, *, name: str | None, identities: IdentityPairs,
                              attributes: dict[str, Any]) -> tuple[str, bool]:
        """For imports: update the customer these identities name, or create one. (id, created)."""
        for attempt in range(3):
            try:
                async with self.db.write() as s, s.begin():
                    customer_id, created = await self._resolve(s, identities, None, attributes)
                    if not created and (name or attributes):
                        customer = await s.get(Customer, customer_id)
                        assert customer is not None
                        if name:
                            customer.name = name
                        if attributes:
                            customer.attributes = {**(customer.attributes or {}), **attributes}
                        customer.updated_at = utcnow()
                    elif created and name:
                        await s.execute(update(Customer).where(Customer.id == customer_id).values(name=name))
                return customer_id, created
            except IntegrityError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")
