"""The store's writes: each a sync function of one Core `Connection`, run in one transaction
by `Database.run_write` (asyncpg via run_sync, or the SQLite writer thread). Raising rolls the
whole transaction back, so nothing is ever half-written.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import ARRAY, String, Table, and_, any_, bindparam, func, insert, or_, select, update
from sqlalchemy.engine import Connection

from cti.models import Customer, Identity, Interaction, TranscriptSegment, new_id, utcnow
from cti.records import IdentityConflict, IdentityPairs, IngestResult, NewInteraction, NotFound, Segment

CUSTOMERS = cast(Table, Customer.__table__)
IDENTITIES = cast(Table, Identity.__table__)
INTERACTIONS = cast(Table, Interaction.__table__)
SEGMENTS = cast(Table, TranscriptSegment.__table__)


def identity_filter(identities: IdentityPairs) -> Any:
    return or_(*(and_(IDENTITIES.c.kind == k, IDENTITIES.c.value == v) for k, v in identities))


def one_of(conn: Connection, column: Any, values: Sequence[str]) -> Any:
    """`column IN values` as one statement whatever the number of values.

    PostgreSQL: `= ANY(array)`, so asyncpg prepares it once per connection instead of once per
    list length; SQLite prepares statements cheaply, and takes the expanding IN.
    """
    if conn.dialect.name == "postgresql":
        return column == any_(bindparam(None, list(values), type_=ARRAY(String())))
    return column.in_(list(values))


def owners(conn: Connection, identities: IdentityPairs) -> dict[tuple[str, str], str]:
    """Which customer owns each of these identities (absent: nobody)."""
    if not identities:
        return {}
    wanted = set(identities)
    # Both columns by list (the (kind, value) index serves it), the exact pairs picked out here.
    rows = conn.execute(select(IDENTITIES.c.kind, IDENTITIES.c.value, IDENTITIES.c.customer_id).where(
        one_of(conn, IDENTITIES.c.kind, sorted({k for k, _ in wanted})),
        one_of(conn, IDENTITIES.c.value, sorted({v for _, v in wanted}))))
    return {(r.kind, r.value): r.customer_id for r in rows if (r.kind, r.value) in wanted}


def attach(conn: Connection, customer_id: str, identities: IdentityPairs,
           known: dict[tuple[str, str], str]) -> None:
    missing = [{"customer_id": customer_id, "kind": k, "value": v}
               for k, v in dict.fromkeys(identities) if (k, v) not in known]
    if missing:
        conn.execute(insert(IDENTITIES), missing)


def new_customer(conn: Connection, name: str | None, attributes: dict[str, Any] | None) -> str:
    customer_id, now = new_id(), utcnow()
    conn.execute(insert(CUSTOMERS), {"id": customer_id, "name": name, "attributes": attributes or {},
                                     "created_at": now, "updated_at": now})
    return customer_id


def resolve(conn: Connection, identities: IdentityPairs, name: str | None,
            attributes: dict[str, Any] | None = None) -> tuple[str, bool]:
    """The one customer these identities name, created if none: (id, created).

    Identities of two customers are an IdentityConflict, never a merge. New identities given
    alongside known ones are added to the customer (they were used together by that person).
    """
    known = owners(conn, identities)
    found = list(dict.fromkeys(known.values()))
    if len(found) > 1:
        kinds = sorted({k for (k, _), c in known.items() if c != found[0]})
        raise IdentityConflict(found, kinds[0])
    if found:
        customer_id = found[0]
        if name:
            conn.execute(update(CUSTOMERS).where(CUSTOMERS.c.id == customer_id, CUSTOMERS.c.name.is_(None))
                         .values(name=name))
        attach(conn, customer_id, identities, known)
        return customer_id, False
    customer_id = new_customer(conn, name, attributes)
    attach(conn, customer_id, identities, known)
    return customer_id, True


def add_segments(conn: Connection, interaction_id: str, segments: Sequence[Segment],
                 first_seq: int = 0) -> None:
    if segments:
        conn.execute(insert(SEGMENTS), [
            {"interaction_id": interaction_id, "seq": first_seq + i, "start": g.start, "end": g.end,
             "speaker": g.speaker, "kind": g.kind, "text": g.text, "confidence": g.confidence,
             "engine": g.engine,
             "alternatives": [list(a) for a in g.alternatives] if g.alternatives else None}
            for i, g in enumerate(segments)
        ])


def ingest(conn: Connection, item: NewInteraction) -> IngestResult:
    """One interaction in its own transaction (what a batch that failed falls back to)."""
    outcome = ingest_batch(conn, [item])[0]
    if isinstance(outcome, IdentityConflict):
        raise outcome
    return outcome


def ingest_batch(conn: Connection, items: Sequence[NewInteraction]) -> list[IngestResult | IdentityConflict]:
    """Several ingests in one transaction, in order, with a few statements for the whole batch.

    The same outcome as `ingest` run for each item in turn: everything an item needs to know
    (identity owners, idempotency keys seen) is read for the whole batch first and kept up to date
    in memory as items are decided, then the rows are inserted together. A conflict is decided
    before anything of its item is written, so it is returned for that item alone. Anything
    raising (a unique violation from a concurrent writer) rolls the whole batch back; the caller
    then runs the items one by one.
    """
    keys = list({i.idempotency_key for i in items if i.idempotency_key is not None})
    seen: dict[str, IngestResult] = {}
    if keys:
        rows = conn.execute(select(INTERACTIONS.c.id, INTERACTIONS.c.customer_id,
                                   INTERACTIONS.c.idempotency_key)
                            .where(one_of(conn, INTERACTIONS.c.idempotency_key, keys)))
        seen = {r.idempotency_key: IngestResult(interaction_id=r.id, customer_id=r.customer_id, created=False)
                for r in rows}
    known = owners(conn, list(dict.fromkeys(p for i in items for p in i.identities)))
    new_customers: dict[str, dict[str, Any]] = {}
    new_identities: list[dict[str, Any]] = []
    names: dict[str, str] = {}  # existing customer -> the first name given (set if theirs is NULL)
    rows_out: list[dict[str, Any]] = []
    segments: list[tuple[str, Sequence[Segment]]] = []
    results: list[IngestResult | IdentityConflict] = []
    now = utcnow()
    for item in items:
        if item.idempotency_key is not None and item.idempotency_key in seen:
            results.append(seen[item.idempotency_key])
            continue
        customer_id: str | None = None
        created = False
        if item.identities:
            found = list(dict.fromkeys(known[p] for p in item.identities if p in known))
            if len(found) > 1:
                kinds = sorted({k for (k, v) in item.identities if known.get((k, v), found[0]) != found[0]})
                results.append(IdentityConflict(found, kinds[0]))
                continue
            if found:
                customer_id = found[0]
                if item.name:
                    if customer_id in new_customers:
                        new_customers[customer_id]["name"] = new_customers[customer_id]["name"] or item.name
                    else:
                        names.setdefault(customer_id, item.name)
            else:
                customer_id, created = new_id(), True
                new_customers[customer_id] = {"id": customer_id, "name": item.name, "attributes": {},
                                              "created_at": now, "updated_at": now}
            for pair in dict.fromkeys(item.identities):
                if pair not in known:
                    known[pair] = customer_id
                    new_identities.append({"customer_id": customer_id, "kind": pair[0], "value": pair[1]})
        interaction_id = item.id or new_id()
        rows_out.append({
            "id": interaction_id, "customer_id": customer_id, "channel": item.channel,
            "direction": item.direction, "status": item.status, "started_at": item.started_at,
            "ended_at": item.ended_at, "agent": item.agent, "subject": item.subject, "summary": item.summary,
            "content": item.content, "disposition": item.disposition, "queue": item.queue,
            "metadata": item.metadata,
            "ivr": item.ivr, "recording": item.recording, "call_id": item.call_id,
            "idempotency_key": item.idempotency_key, "created_at": now,
        })
        if item.transcript:
            segments.append((interaction_id, item.transcript))
        result = IngestResult(interaction_id=interaction_id, customer_id=customer_id, created=True,
                              customer_created=created)
        if item.idempotency_key is not None:
            seen[item.idempotency_key] = IngestResult(interaction_id=interaction_id, customer_id=customer_id,
                                                      created=False)
        results.append(result)
    # Sorted inserts: two batches racing on the same new identities wait in the same order (no deadlock).
    if new_customers:
        conn.execute(insert(CUSTOMERS), list(new_customers.values()))
    if new_identities:
        conn.execute(insert(IDENTITIES), sorted(new_identities, key=lambda r: (r["kind"], r["value"])))
    for customer_id, name in names.items():
        conn.execute(update(CUSTOMERS).where(CUSTOMERS.c.id == customer_id, CUSTOMERS.c.name.is_(None))
                     .values(name=name))
    if rows_out:
        conn.execute(insert(INTERACTIONS), sorted(rows_out, key=lambda r: r["idempotency_key"] or ""))
    for interaction_id, transcript in segments:
        add_segments(conn, interaction_id, transcript)
    return results


def by_idempotency_key(conn: Connection, key: str) -> IngestResult | None:
    row = conn.execute(select(INTERACTIONS.c.id, INTERACTIONS.c.customer_id)
                       .where(INTERACTIONS.c.idempotency_key == key)).first()
    return None if row is None else IngestResult(interaction_id=row.id, customer_id=row.customer_id,
                                                 created=False)


def finish(conn: Connection, interaction_id: str, ended_at: datetime, status: str, disposition: str | None,
           ivr: dict[str, Any] | None, recording: str | None, transcript: Sequence[Segment],
           outcome: str | None = None, metadata: dict[str, Any] | None = None) -> None:
    values: dict[str, Any] = {"ended_at": ended_at, "status": status, "ivr": ivr, "recording": recording,
                              "outcome": outcome}
    if disposition is not None:  # None keeps what an agent saved during the call
        values["disposition"] = disposition
    if metadata:
        meta = conn.execute(select(INTERACTIONS.c.metadata)
                            .where(INTERACTIONS.c.id == interaction_id)).scalar()
        values["metadata"] = {**(meta or {}), **metadata}
        # The queue and the agent that handled the call: where a caller continuing it goes back to.
        if metadata.get("queue"):
            values["queue"] = str(metadata["queue"])[:100]
        if metadata.get("agent_id"):
            values["agent"] = func.coalesce(INTERACTIONS.c.agent, str(metadata["agent_id"])[:200])
    result = conn.execute(update(INTERACTIONS).where(INTERACTIONS.c.id == interaction_id).values(**values))
    if result.rowcount == 0:
        raise NotFound(interaction_id)
    last = conn.execute(select(func.max(SEGMENTS.c.seq)).where(SEGMENTS.c.interaction_id == interaction_id)
                        ).scalar()
    add_segments(conn, interaction_id, transcript, 0 if last is None else last + 1)


def attach_interaction(conn: Connection, interaction_id: str, customer_id: str,
                       metadata: dict[str, Any]) -> None:
    """The interaction belongs to `customer_id` (e.g. the customer a call's IVR identified)."""
    if not _customer_exists_for_update(conn, customer_id):
        raise NotFound(customer_id)
    meta = conn.execute(select(INTERACTIONS.c.metadata).where(INTERACTIONS.c.id == interaction_id)).first()
    if meta is None:
        raise NotFound(interaction_id)
    conn.execute(update(INTERACTIONS).where(INTERACTIONS.c.id == interaction_id).values(
        customer_id=customer_id, metadata={**(meta[0] or {}), **metadata}))


def _customer_exists_for_update(conn: Connection, customer_id: str) -> bool:
    return conn.execute(select(CUSTOMERS.c.id).where(CUSTOMERS.c.id == customer_id)).first() is not None


def mark_interrupted(conn: Connection, channel: str, key_prefix: str | None) -> int:
    query = update(INTERACTIONS).where(INTERACTIONS.c.status == "in_progress",
                                       INTERACTIONS.c.channel == channel)
    if key_prefix:
        query = query.where(INTERACTIONS.c.idempotency_key.startswith(key_prefix, autoescape=True))
    result = conn.execute(query.values(status="interrupted"))
    return int(result.rowcount)


def create_customer(conn: Connection, name: str | None, identities: IdentityPairs,
                    attributes: dict[str, Any]) -> str:
    known = owners(conn, identities)
    if known:
        (kind, _), owner = next(iter(known.items()))
        raise IdentityConflict([owner], kind)
    customer_id = new_customer(conn, name, attributes)
    attach(conn, customer_id, identities, known)
    return customer_id


def update_customer(conn: Connection, customer_id: str, name: str | None, attributes: dict[str, Any] | None,
                    identities: IdentityPairs) -> None:
    """Set the name, merge-patch attributes (None deletes a key), add identities."""
    # FOR UPDATE (PostgreSQL): two concurrent PATCHes merge one after the other, neither is lost.
    row = conn.execute(select(CUSTOMERS.c.attributes).where(CUSTOMERS.c.id == customer_id)
                       .with_for_update()).first()
    if row is None:
        raise NotFound(customer_id)
    known = owners(conn, identities)
    others = [(k, c) for (k, _), c in known.items() if c != customer_id]
    if others:
        raise IdentityConflict([customer_id, others[0][1]], others[0][0])
    attach(conn, customer_id, identities, known)
    values: dict[str, Any] = {"updated_at": utcnow()}
    if name is not None:
        values["name"] = name
    if attributes:
        merged = dict(row.attributes or {})
        for key, value in attributes.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
        values["attributes"] = merged
    conn.execute(update(CUSTOMERS).where(CUSTOMERS.c.id == customer_id).values(**values))


def upsert_customer(conn: Connection, name: str | None, identities: IdentityPairs,
                    attributes: dict[str, Any]) -> tuple[str, bool]:
    """For imports: the customer these identities name gets the row's name and attributes."""
    customer_id, created = resolve(conn, identities, None, attributes)
    if created:
        if name:
            conn.execute(update(CUSTOMERS).where(CUSTOMERS.c.id == customer_id).values(name=name))
        return customer_id, True
    row = conn.execute(select(CUSTOMERS.c.attributes).where(CUSTOMERS.c.id == customer_id)
                       .with_for_update()).one()
    values: dict[str, Any] = {"updated_at": utcnow(), "attributes": {**(row.attributes or {}), **attributes}}
    if name:
        values["name"] = name
    conn.execute(update(CUSTOMERS).where(CUSTOMERS.c.id == customer_id).values(**values))
    return customer_id, False
