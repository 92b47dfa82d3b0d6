"""Finding calls and counting them: interaction search, the CDR (calls.csv), daily/flow reports.

Everything is read from what the interactions table holds: the columns, the `metadata` the call
wrote at start (caller, dialled) and the IVR record at the end (flow, path, transfer target).
Call control may add to `metadata` what only it knows; these keys are read when present:
`answered_at`/`offered_at` (ISO times), `queue`, `agent_id`, `wait_seconds` (time in queue until an
agent answered or the caller left), `talk_seconds` (agent talk time), `outcome` (one of OUTCOMES).
Without them, queue and outcome are derived from the IVR record and the times are left empty.

The functions taking a `Connection` are run by `Database.run_read` (one read, off the loop).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, tuple_, update
from sqlalchemy.engine import Connection

from cti import writes
from cti.store import encode_cursor, iso

MAX_REPORT_ROWS = 200_000  # a CDR or report over more calls than this is cut (and says so)
OUTCOMES = ("contained", "agent", "abandoned", "transferred", "error", "interrupted", "in_progress")
CDR_COLUMNS = ("interaction_id", "call_id", "start", "answer", "end", "caller", "dialled", "flow",
               "last_node", "queue", "agent", "wait_seconds", "talk_seconds", "duration_seconds",
               "outcome")

T = writes.INTERACTIONS
_LIST_COLUMNS = (T.c.id, T.c.customer_id, T.c.channel, T.c.direction, T.c.status, T.c.started_at,
                 T.c.ended_at, T.c.agent, T.c.subject, T.c.summary, T.c.disposition, T.c.call_id)


@dataclass(frozen=True, kw_only=True)
class Filters:
    customer_ids: tuple[str, ...] | None = None  # None: any; (): nobody (an unknown phone)
    channel: str | None = None
    call_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def _where(query: Any, f: Filters) -> Any:
    if f.customer_ids is not None:
        query = query.where(T.c.customer_id.in_(list(f.customer_ids)))
    if f.channel is not None:
        query = query.where(T.c.channel == f.channel)
    if f.call_id is not None:
        query = query.where(T.c.call_id == f.call_id)
    if f.since is not None:
        query = query.where(T.c.started_at >= f.since)
    if f.until is not None:
        query = query.where(T.c.started_at < f.until)
    return query


def search(conn: Connection, f: Filters, limit: int,
           cursor: tuple[datetime, str] | None) -> tuple[list[dict[str, Any]], str | None]:
    """One page of interactions matching `f`, newest first, and the cursor of the next page."""
    if f.customer_ids == ():
        return [], None
    query = _where(select(*_LIST_COLUMNS), f)
    if cursor is not None:
        query = query.where(tuple_(T.c.started_at, T.c.id) < tuple_(cursor[0], cursor[1]))
    rows = conn.execute(query.order_by(T.c.started_at.desc(), T.c.id.desc()).limit(limit + 1)).all()
    more = len(rows) > limit
    rows = rows[:limit]
    items = [{"id": r.id, "customer_id": r.customer_id, "channel": r.channel, "direction": r.direction,
              "status": r.status, "started_at": iso(r.started_at), "ended_at": iso(r.ended_at),
              "agent": r.agent, "subject": r.subject, "summary": r.summary, "disposition": r.disposition,
              "call_id": r.call_id} for r in rows]
    return items, encode_cursor(rows[-1].started_at, rows[-1].id) if more and rows else None


CALL_FACTS = ("offered_at", "answered_at", "queue", "agent_id", "wait_seconds", "talk_seconds", "outcome")


def add_call_facts(conn: Connection, interaction_id: str, facts: dict[str, Any]) -> bool:
    """Merge what call control knows about a call into its interaction's metadata (one
    transaction); False when there is no such interaction. Unknown keys are an error."""
    unknown = set(facts) - set(CALL_FACTS)
    if unknown:
        raise ValueError(f"not a call fact: {sorted(unknown)} (known: {', '.join(CALL_FACTS)})")
    if "outcome" in facts and facts["outcome"] not in OUTCOMES:
        raise ValueError(f"outcome must be one of {', '.join(OUTCOMES)}")
    row = conn.execute(select(T.c["metadata"]).where(T.c.id == interaction_id)).first()
    if row is None:
        return False
    clean = {k: (iso(v) if isinstance(v, datetime) else v) for k, v in facts.items() if v is not None}
    values: dict[str, Any] = {"metadata": {**(row[0] or {}), **clean}}
    if clean.get("queue"):
        values["queue"] = str(clean["queue"])  # the queue that handled the call: where a continuation goes
    conn.execute(update(T).where(T.c.id == interaction_id).values(values))
    return True


def customers_with_phone(conn: Connection, phone: str) -> tuple[str, ...]:
    ids = writes.IDENTITIES
    return tuple(conn.execute(select(ids.c.customer_id).where(ids.c.kind == "phone",
                                                              ids.c.value == phone)).scalars())


# ---- one call, as the CDR and the reports see it ----------------------------------------------
@dataclass(frozen=True, kw_only=True)
class CallRow:
    interaction_id: str
    call_id: str | None
    start: datetime
    answer: datetime | None
    end: datetime | None
    caller: str
    dialled: str
    flow: str | None
    last_node: str | None
    path: tuple[str, ...]
    queue: str | None
    agent: str | None
    wait_seconds: float | None
    talk_seconds: float | None
    outcome: str

    @property
    def duration_seconds(self) -> float | None:
        return (self.end - self.start).total_seconds() if self.end is not None else None


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _queue_of(target: Any) -> str | None:
    if isinstance(target, str) and target.startswith("queue:"):
        return target.removeprefix("queue:")
    return None


def call_row(row: Any) -> CallRow:
    meta: dict[str, Any] = row.metadata or {}
    ivr: dict[str, Any] = row.ivr or {}
    path = tuple(str(p.get("node")) for p in ivr.get("path", []) if isinstance(p, dict))
    queue = meta.get("queue") or _queue_of(ivr.get("transfer_target"))
    if queue is None:
        failed = [q for q in map(_queue_of, ivr.get("transfers_failed") or []) if q]
        queue = failed[-1] if failed else None
    agent = row.agent or meta.get("agent_id")
    outcome = meta.get("outcome")
    if outcome not in OUTCOMES:
        outcome = _derive_outcome(row.status, ivr.get("ended"), queue, agent, ivr.get("transfer_target"))
    answer = _time(meta.get("answered_at")) or row.started_at
    return CallRow(interaction_id=row.id, call_id=row.call_id,
                   start=_time(meta.get("offered_at")) or row.started_at, answer=answer, end=row.ended_at,
                   caller=str(meta.get("caller") or ""), dialled=str(meta.get("dialled") or ""),
                   flow=ivr.get("flow"), last_node=path[-1] if path else None, path=path,
                   queue=str(queue) if queue else None, agent=str(agent) if agent else None,
                   wait_seconds=_number(meta.get("wait_seconds")),
                   talk_seconds=_number(meta.get("talk_seconds")), outcome=outcome)


def _derive_outcome(status: str, ended: Any, queue: str | None, agent: Any, target: Any) -> str:
    if status == "in_progress":
        return "in_progress"
    if status == "interrupted":
        return "interrupted"
    if agent or (ended == "transfer" and _queue_of(target)):
        return "agent"
    if ended == "transfer":
        return "transferred"
    if ended == "error":
        return "error"
    if queue is not None and ended == "caller_hangup":
        return "abandoned"  # left while waiting (or after an overflow) without reaching an agent
    return "contained"


def calls_between(conn: Connection, since: datetime | None, until: datetime | None,
                  limit: int = MAX_REPORT_ROWS) -> tuple[list[CallRow], bool]:
    """Voice interactions started in [since, until), oldest first; (rows, cut at `limit`)."""
    query = _where(select(T.c.id, T.c.call_id, T.c.status, T.c.started_at, T.c.ended_at, T.c.agent,
                          T.c["metadata"], T.c.ivr),
                   Filters(channel="voice", since=since, until=until))
    rows = conn.execute(query.order_by(T.c.started_at, T.c.id).limit(limit + 1)).all()
    return [call_row(r) for r in rows[:limit]], len(rows) > limit


def _seconds(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


def cdr_csv(rows: Iterable[CallRow]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CDR_COLUMNS)
    for r in rows:
        writer.writerow([_cell(v) for v in (
            r.interaction_id, r.call_id or "", iso(r.start), iso(r.answer) or "", iso(r.end) or "", r.caller,
            r.dialled, r.flow or "", r.last_node or "", r.queue or "", r.agent or "",
            _seconds(r.wait_seconds), _seconds(r.talk_seconds), _seconds(r.duration_seconds), r.outcome)])
    return out.getvalue()


def _cell(value: Any) -> str:
    # A caller ID or node name starting with = + - @ would be a formula in a spreadsheet (CSV injection).
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") and not _is_number(text) else text


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# ---- reports ----------------------------------------------------------------------------------
@dataclass
class Totals:
    calls: int = 0
    contained: int = 0
    agent: int = 0
    abandoned: int = 0
    answered_in_sla: int = 0
    queued: int = 0
    wait_sum: float = 0.0
    wait_n: int = 0
    handle_sum: float = 0.0
    handle_n: int = 0

    def add(self, r: CallRow, service_level: float) -> None:
        self.calls += 1
        self.contained += r.outcome == "contained"
        self.agent += r.outcome == "agent"
        self.abandoned += r.outcome == "abandoned"
        if r.queue is not None:
            self.queued += 1
            if r.outcome == "agent" and r.wait_seconds is not None and r.wait_seconds <= service_level:
                self.answered_in_sla += 1
        if r.outcome == "agent" and r.wait_seconds is not None:
            self.wait_sum += r.wait_seconds
            self.wait_n += 1
        handle = r.talk_seconds if r.talk_seconds is not None else (
            r.duration_seconds if r.outcome == "agent" else None)
        if handle is not None:
            self.handle_sum += handle
            self.handle_n += 1

    def to_json(self) -> dict[str, Any]:
        def share(n: int, of: int) -> float | None:
            return round(n / of, 4) if of else None

        return {"calls": self.calls, "contained": self.contained, "agent": self.agent,
                "abandoned": self.abandoned,
                "containment_rate": share(self.contained, self.calls),
                "abandonment_rate": share(self.abandoned, self.queued),
                "service_level": share(self.answered_in_sla, self.queued),
                "asa_seconds": round(self.wait_sum / self.wait_n, 1) if self.wait_n else None,
                "aht_seconds": round(self.handle_sum / self.handle_n, 1) if self.handle_n else None}


def report(rows: list[CallRow], *, service_level: float = 20.0) -> dict[str, Any]:
    """Totals, per day (UTC), per flow, and per flow node: how many calls reached it, left there."""
    total, days, flows = Totals(), dict[str, Totals](), dict[str, Totals]()
    nodes: dict[str, dict[str, dict[str, int]]] = {}
    for r in rows:
        total.add(r, service_level)
        days.setdefault(r.start.astimezone(UTC).date().isoformat(), Totals()).add(r, service_level)
        flow = r.flow or "(none)"
        flows.setdefault(flow, Totals()).add(r, service_level)
        per_node = nodes.setdefault(flow, {})
        for node in dict.fromkeys(r.path):  # a node visited twice in one call counts once
            per_node.setdefault(node, {"reached": 0, "left": 0})["reached"] += 1
        if r.last_node is not None:
            per_node.setdefault(r.last_node, {"reached": 0, "left": 0})["left"] += 1
    return {"totals": total.to_json(),
            "days": [{"day": d, **t.to_json()} for d, t in sorted(days.items())],
            "flows": [{"flow": f, **t.to_json(), "nodes": nodes.get(f, {})}
                      for f, t in sorted(flows.items())]}


def today_start(now: datetime | None = None) -> datetime:
    now = now or datetime.now(UTC)
    return now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
