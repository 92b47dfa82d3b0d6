"""The customer store: customers with identities, and one interaction history for every channel.

Every public method is one transaction: it happens entirely or not at all. Writes are the sync
functions of cti.writes run by `Database.run_write`; reads are async.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select, tuple_
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from cti import writes
from cti.db import BatchFailed, Database, GroupCommit
from cti.identity import IDENTITY_KINDS
from cti.models import Customer, Identity, Interaction, InteractionNote, TranscriptSegment, UtcDateTime
from cti.records import (
    CHANNELS,
    DIRECTIONS,
    EXTRA_CHANNELS,
    SEGMENT_KINDS,
    IdentityConflict,
    IdentityPairs,
    IngestResult,
    NewInteraction,
    NotFound,
    Segment,
)

__all__ = [
    "CHANNELS", "DIRECTIONS", "EXTRA_CHANNELS", "SEGMENT_KINDS", "CustomerStore", "IdentityConflict",
    "IngestResult", "NewInteraction", "NotFound", "Segment",
]

log = logging.getLogger(__name__)
BATCH_ATTEMPTS = 2

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
    Interaction.queue,
)
_SUMMARY_KEYS = tuple(c.key for c in _TIMELINE_COLUMNS)


def _timeline_query(after_cursor: bool) -> Any:
    """The timeline statement, built once: a page costs a cache lookup, not a new construction."""
    table = writes.INTERACTIONS
    query = select(*(table.c[c.name] for c in _TIMELINE_COLUMNS)).where(
        table.c.customer_id == bindparam("customer_id"))
    if after_cursor:
        # Keyset pagination: a row-value comparison the (customer_id, started_at, id) index serves,
        # so page 1000 costs what page 1 does.
        query = query.where(tuple_(table.c.started_at, table.c.id) < tuple_(
            bindparam("c_at", type_=UtcDateTime()), bindparam("c_id")))
    return query.order_by(table.c.started_at.desc(), table.c.id.desc()).limit(bindparam("limit"))


_TIMELINE_FIRST = _timeline_query(False)
_TIMELINE_AFTER = _timeline_query(True)


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
    """The API's customer record from an ORM Customer (identities loaded)."""
    return customer_record(customer, [(i.kind, i.value) for i in customer.identities])


def customer_record(customer: Any, identities: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """The API's customer record from anything with the customer columns as attributes."""
    ids: dict[str, list[str]] = {k: [] for k in IDENTITY_KINDS}
    for kind, value in identities:
        ids.setdefault(kind, []).append(value)
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


def note_dict(note: InteractionNote) -> dict[str, Any]:
    return {"id": note.id, "agent_id": note.agent_id, "text": note.text, "disposition": note.disposition,
            "created_at": iso(note.created_at)}


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
        "queue": row.queue,
    }


def _timeline(conn: Connection, customer_id: str, limit: int,
              cursor: tuple[datetime, str] | None) -> tuple[list[dict[str, Any]], str | None]:
    params: dict[str, Any] = {"customer_id": customer_id, "limit": limit + 1}
    if cursor is not None:
        params.update(c_at=cursor[0], c_id=cursor[1])
    rows = conn.execute(_TIMELINE_FIRST if cursor is None else _TIMELINE_AFTER, params).all()
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = encode_cursor(rows[-1].started_at, rows[-1].id) if more and rows else None
    # Positional: a page is read far more often than anything else, and Row attribute access is slow.
    items = [dict(zip(_SUMMARY_KEYS, r, strict=True)) for r in rows]
    for item in items:
        item["started_at"] = iso(item["started_at"])
        item["ended_at"] = iso(item["ended_at"])
    return items, next_cursor


def _summary(conn: Connection, interaction_id: str) -> dict[str, Any] | None:
    table = writes.INTERACTIONS
    row = conn.execute(select(*(table.c[c.name] for c in _TIMELINE_COLUMNS))
                       .where(table.c.id == interaction_id)).first()
    if row is None:
        return None
    item = dict(zip(_SUMMARY_KEYS, row, strict=True))
    item["started_at"], item["ended_at"] = iso(item["started_at"]), iso(item["ended_at"])
    return item


def _customer(conn: Connection, customer_id: str) -> dict[str, Any] | None:
    row = conn.execute(select(writes.CUSTOMERS).where(writes.CUSTOMERS.c.id == customer_id)).first()
    if row is None:
        return None
    idents = conn.execute(select(writes.IDENTITIES.c.kind, writes.IDENTITIES.c.value)
                          .where(writes.IDENTITIES.c.customer_id == customer_id)
                          .order_by(writes.IDENTITIES.c.id)).all()
    return customer_record(row, [(i.kind, i.value) for i in idents])


def _customer_exists(conn: Connection, customer_id: str) -> bool:
    return conn.execute(select(writes.CUSTOMERS.c.id).where(writes.CUSTOMERS.c.id == customer_id)).first() \
        is not None


def _customer_id_of(conn: Connection, kind: str, value: str) -> str | None:
    return conn.execute(select(writes.IDENTITIES.c.customer_id).where(
        writes.IDENTITIES.c.kind == kind, writes.IDENTITIES.c.value == value)).scalar()


def _profile(conn: Connection, kind: str, value: str,
             recent: int) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
    customer_id = _customer_id_of(conn, kind, value)
    customer = _customer(conn, customer_id) if customer_id else None
    if customer is None:
        return None
    items = _timeline(conn, customer["id"], recent, None)[0] if recent > 0 else []
    return customer, items


class CustomerStore:
    """Customers, identities and interactions on one database."""

    def __init__(self, db: Database, *, default_country: str = "US",
                 channels: Iterable[str] = CHANNELS + EXTRA_CHANNELS) -> None:
        self.db = db
        self.default_country = default_country
        self.channels = tuple(dict.fromkeys(channels))
        # SQLite has one writer: one batch at a time. PostgreSQL: a few on their own connections.
        self._ingests: GroupCommit[NewInteraction, IngestResult | IdentityConflict] = GroupCommit(
            db, writes.ingest_batch, concurrency=1 if db.sqlite_writer is not None else 4)

    # -- interactions ---------------------------------------------------------------------------

    async def ingest(self, item: NewInteraction) -> IngestResult:
        """Store an interaction, attached to the customer its identities name (created if unknown).

        Optimistic: the insert itself detects a repeated idempotency key (unique constraint), which
        makes concurrent retries safe and costs first-time requests no extra query. A unique
        violation rolls everything back; then either the key's first result is returned, or a
        concurrent request created one of our new identities first and we resolve again.

        Concurrent ingests are written together (cti.db.GroupCommit, writes.ingest_batch). A batch
        that fails is rolled back as a whole; its items try a new batch (usually another batch
        created the same new identity first, and the next batch sees it), then run one by one.
        """
        for _ in range(BATCH_ATTEMPTS):
            try:
                outcome = await self._ingests.submit(item)
            except BatchFailed:
                continue
            if isinstance(outcome, IdentityConflict):
                raise outcome
            return outcome
        return await self._ingest_alone(item)

    async def _ingest_alone(self, item: NewInteraction) -> IngestResult:
        for attempt in range(5):
            try:
                return await self.db.run_write(writes.ingest, item)
            except IntegrityError:
                log.debug("ingest lost a race (attempt %d), looking again", attempt + 1)
                if item.idempotency_key is not None:
                    first = await self.db.run_write(writes.by_idempotency_key, item.idempotency_key)
                    if first is not None:
                        return first
                if attempt == 4:
                    raise
        raise AssertionError("unreachable")

    async def finish_interaction(self, interaction_id: str, *, ended_at: datetime, status: str,
                                 ivr: dict[str, Any] | None, recording: str | None,
                                 transcript: Sequence[Segment], outcome: str | None = None,
                                 disposition: str | None = None,
                                 metadata: dict[str, Any] | None = None) -> None:
        """Complete an interaction. `outcome`: how it ended; `disposition` is set only when given
        (an agent's disposition saved during the call stays); `metadata` is merged into its own."""
        await self.db.run_write(writes.finish, interaction_id, ended_at, status, disposition, ivr, recording,
                                list(transcript), outcome, metadata)

    async def attach_interaction(self, interaction_id: str, customer_id: str,
                                 metadata: dict[str, Any] | None = None) -> None:
        """Give the interaction to `customer_id` (NotFound when either does not exist)."""
        await self.db.run_write(writes.attach_interaction, interaction_id, customer_id, metadata or {})

    async def mark_interrupted(self, channel: str = "voice", key_prefix: str | None = None) -> int:
        """In-progress interactions of `channel` (whose idempotency key starts with `key_prefix`,
        if given) become `interrupted`; returns how many."""
        return await self.db.run_write(writes.mark_interrupted, channel, key_prefix)

    async def timeline(self, customer_id: str, *, limit: int = 20,
                       cursor: tuple[datetime, str] | None = None) -> tuple[list[dict[str, Any]], str | None]:
        """Newest first; returns (page, cursor of the next page or None)."""
        return await self.db.run_read(_timeline, customer_id, limit, cursor)

    async def interaction_summary(self, interaction_id: str) -> dict[str, Any] | None:
        """An interaction as the timeline lists it (no content, no transcript), in one read."""
        return await self.db.run_read(_summary, interaction_id)

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
                       created_at=iso(row.created_at), outcome=row.outcome)
            notes = (await s.execute(select(InteractionNote).where(
                InteractionNote.interaction_id == interaction_id).order_by(InteractionNote.id))).scalars()
            out["notes"] = [note_dict(n) for n in notes]
            out["transcript"] = [
                {"start": g.start, "end": g.end, "speaker": g.speaker, "kind": g.kind, "text": g.text,
                 "confidence": g.confidence, "engine": g.engine, "alternatives": g.alternatives} for g in segs
            ]
            return out

    # -- customers ------------------------------------------------------------------------------

    async def _conflict_after_race(self, customer_id: str | None,
                                   identities: IdentityPairs) -> IdentityConflict:
        """A unique violation on identities: a concurrent request took one first. Name its owner."""
        async with self.db.read_engine.connect() as conn:
            known = await conn.run_sync(writes.owners, identities)
        others = [(k, c) for (k, _), c in known.items() if c != customer_id]
        if not others:
            raise RuntimeError("unique violation without a conflicting identity")
        kind, owner = others[0]
        return IdentityConflict([customer_id, owner] if customer_id else [owner], kind)

    async def create_customer(self, *, name: str | None, identities: IdentityPairs,
                              attributes: dict[str, Any]) -> dict[str, Any]:
        """A new customer; IdentityConflict if any identity already belongs to someone."""
        try:
            customer_id = await self.db.run_write(writes.create_customer, name, identities, attributes)
        except IntegrityError:
            raise await self._conflict_after_race(None, identities) from None
        found = await self.get_customer(customer_id)
        assert found is not None
        return found

    async def get_customer(self, customer_id: str) -> dict[str, Any] | None:
        return await self.db.run_read(_customer, customer_id)

    async def customer_exists(self, customer_id: str) -> bool:
        return await self.db.run_read(_customer_exists, customer_id)

    async def find_customers(self, identities: IdentityPairs) -> list[dict[str, Any]]:
        """Customers owning any of these identities."""
        if not identities:
            return []
        async with self.db.read() as s:
            ids = select(Identity.customer_id).where(writes.identity_filter(identities))
            rows = await s.execute(select(Customer).where(Customer.id.in_(ids)).order_by(Customer.created_at))
            return [customer_dict(c) for c in rows.scalars()]

    async def find_customer_id(self, kind: str, value: str) -> str | None:
        return await self.db.run_read(_customer_id_of, kind, value)

    async def profile(self, kind: str, value: str,
                      recent: int) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
        """The customer owning this identity and their `recent` latest interactions, in one read."""
        return await self.db.run_read(_profile, kind, value, recent)

    async def update_customer(self, customer_id: str, *, name: str | None = None,
                              attributes: dict[str, Any] | None = None,
                              identities: IdentityPairs = ()) -> dict[str, Any]:
        """Merge-patch attributes (a None value deletes the key), set the name, add identities."""
        try:
            await self.db.run_write(writes.update_customer, customer_id, name, attributes, identities)
        except IntegrityError:
            raise await self._conflict_after_race(customer_id, identities) from None
        found = await self.get_customer(customer_id)
        assert found is not None
        return found

    async def upsert_customer(self, *, name: str | None, identities: IdentityPairs,
                              attributes: dict[str, Any]) -> tuple[str, bool]:
        """For imports: update the customer these identities name, or create one. (id, created)."""
        for attempt in range(3):
            try:
                return await self.db.run_write(writes.upsert_customer, name, identities, attributes)
            except IntegrityError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")
