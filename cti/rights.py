"""Data rights: everything held about one customer (export), and erasing it (delete).

Delete removes the customer, their identities, interactions, transcript segments and agent notes
in one transaction, then the recording files those interactions named (only files inside the
configured recordings directory: a path in the database never makes us delete anything else).
An audit row keeps who erased which customer id and when, and how many rows and files went;
never a name, number or text.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Column, Integer, MetaData, String, Table, delete, insert, select
from sqlalchemy.engine import Connection

from cti import writes
from cti.agents import InteractionNote
from cti.models import JsonType, UtcDateTime, utcnow
from cti.store import _customer, iso

log = logging.getLogger(__name__)

NOTES: Table = InteractionNote.__table__  # type: ignore[assignment]
_audit_meta = MetaData()
AUDIT = Table("audit_log", _audit_meta,
              Column("id", Integer, primary_key=True, autoincrement=True),
              Column("at", UtcDateTime(), nullable=False),
              Column("actor", String(200), nullable=False),
              Column("action", String(60), nullable=False),
              Column("subject", String(64)),
              Column("details", JsonType, nullable=False))


def _interactions(conn: Connection, customer_id: str) -> list[Any]:
    t = writes.INTERACTIONS
    return list(conn.execute(select(t).where(t.c.customer_id == customer_id)
                             .order_by(t.c.started_at, t.c.id)).all())


def recording_names(row: Any) -> list[str]:
    """Every recording file an interaction names: the call recording and the flow's recordings."""
    names = [row.recording] if row.recording else []
    ivr = row.ivr or {}
    names += [str(r) for r in ivr.get("recordings") or [] if r]
    return list(dict.fromkeys(names))


def export(conn: Connection, customer_id: str) -> dict[str, Any] | None:
    """The customer, every identity, interaction (with transcript and notes) and recording name."""
    customer = _customer(conn, customer_id)
    if customer is None:
        return None
    rows = _interactions(conn, customer_id)
    ids = [r.id for r in rows]
    segments: dict[str, list[dict[str, Any]]] = {i: [] for i in ids}
    notes: dict[str, list[dict[str, Any]]] = {i: [] for i in ids}
    if ids:
        s = writes.SEGMENTS
        query = select(s).where(s.c.interaction_id.in_(ids)).order_by(s.c.interaction_id, s.c.seq)
        for g in conn.execute(query):
            segments[g.interaction_id].append({"start": g.start, "end": g.end, "speaker": g.speaker,
                                               "kind": g.kind, "text": g.text, "confidence": g.confidence,
                                               "engine": g.engine})
        for n in conn.execute(select(NOTES).where(NOTES.c.interaction_id.in_(ids)).order_by(NOTES.c.id)):
            notes[n.interaction_id].append({"agent_id": n.agent_id, "text": n.text,
                                            "disposition": n.disposition, "created_at": iso(n.created_at)})
    interactions = []
    recordings: list[str] = []
    for r in rows:
        names = recording_names(r)
        recordings += names
        interactions.append({
            "id": r.id, "channel": r.channel, "direction": r.direction, "status": r.status,
            "started_at": iso(r.started_at), "ended_at": iso(r.ended_at), "agent": r.agent,
            "subject": r.subject, "summary": r.summary, "content": r.content, "disposition": r.disposition,
            "metadata": r.metadata, "ivr": r.ivr, "recording": r.recording, "call_id": r.call_id,
            "created_at": iso(r.created_at), "transcript": segments[r.id], "notes": notes[r.id],
            "recordings": names})
    return {"customer": customer, "interactions": interactions, "recordings": recordings,
            "exported_at": iso(utcnow())}


@dataclass(frozen=True)
class Deleted:
    interactions: int
    segments: int
    notes: int
    identities: int
    recordings: list[str]


def delete_customer(conn: Connection, customer_id: str, actor: str) -> Deleted | None:
    """Erase the customer's rows (one transaction) and write the audit row; files come after."""
    c = writes.CUSTOMERS
    if conn.execute(select(c.c.id).where(c.c.id == customer_id)).first() is None:
        return None
    rows = _interactions(conn, customer_id)
    ids = [r.id for r in rows]
    recordings = [name for r in rows for name in recording_names(r)]
    segments = notes = 0
    if ids:
        segs = writes.SEGMENTS
        segments = conn.execute(delete(segs).where(segs.c.interaction_id.in_(ids))).rowcount
        notes = conn.execute(delete(NOTES).where(NOTES.c.interaction_id.in_(ids))).rowcount
        conn.execute(delete(writes.INTERACTIONS).where(writes.INTERACTIONS.c.id.in_(ids)))
    identities = conn.execute(delete(writes.IDENTITIES).where(
        writes.IDENTITIES.c.customer_id == customer_id)).rowcount
    conn.execute(delete(c).where(c.c.id == customer_id))
    result = Deleted(interactions=len(ids), segments=segments, notes=notes, identities=identities,
                     recordings=recordings)
    audit(conn, actor, "customer.delete", customer_id,
          {"interactions": len(ids), "segments": segments, "notes": notes, "identities": identities,
           "recordings": len(recordings)})
    return result


def audit(conn: Connection, actor: str, action: str, subject: str | None, details: dict[str, Any],
          at: datetime | None = None) -> None:
    conn.execute(insert(AUDIT), {"at": at or utcnow(), "actor": actor[:200], "action": action,
                                 "subject": subject, "details": details})


def audit_rows(conn: Connection, subject: str | None = None) -> list[dict[str, Any]]:
    query = select(AUDIT).order_by(AUDIT.c.id)
    if subject is not None:
        query = query.where(AUDIT.c.subject == subject)
    return [{"at": iso(r.at), "actor": r.actor, "action": r.action, "subject": r.subject,
             "details": r.details} for r in conn.execute(query)]


def remove_recordings(names: list[str], recordings_dir: Path) -> tuple[list[str], list[str]]:
    """Delete the files (blocking: run in a thread); (removed, refused or missing)."""
    root = recordings_dir.resolve()
    removed, kept = [], []
    for name in names:
        path = Path(name)
        candidate = (path if path.is_absolute() else Path.cwd() / path).resolve()
        if not candidate.is_relative_to(root) or not candidate.is_file():
            kept.append(name)
            continue
        try:
            candidate.unlink()
            removed.append(name)
        except OSError as exc:
            log.warning("could not delete a recording file: %s", exc.strerror)
            kept.append(name)
    return removed, kept
