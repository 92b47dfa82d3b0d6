"""Callbacks (virtual hold) in the database: requested, claimed, placed, retried, done or failed.

Rules (the whole contract; the table is migration callbacks_0001):
- A callback is `queued` until a node claims it. Every move is a compare-and-set on `state`
  (`UPDATE ... WHERE id = ? AND state = ?`), so two nodes, or a node and its restarted self,
  never both place one: whoever's update hit one row goes on, the other drops it.
- `offering`: an agent's phone rings for it; the customer has not been called. A node that stops
  (or starts again after a crash) puts its own `offering` rows back to `queued` untouched.
- `dialing`: set *before* the customer's INVITE leaves, with `attempts` + 1; the record's id is
  written the moment the customer answers. A node that starts and finds its own `dialing` rows
  makes the answered ones `done` (never called again) and counts the others as an unanswered
  attempt (retried or failed by the retry rules). A graceful stop lets calls in progress end
  first (`CallbackDesk.drain`), so it leaves no `dialing` row at all.
- After an attempt: `done` (the customer answered and talked to the agent), else `queued` again
  with `earliest` = now + retry_interval while attempts <= retries and before `give_up_at`, else
  `failed`. `history` keeps one entry per attempt (time, agent, result).
- `cancelled` (the API's `POST .../cancel`): only from `queued`, by the same compare-and-set, so
  a callback already offered to an agent or being dialled is never cancelled under the node
  placing it (that answers 409); a node holding it in line drops it at its next look.
- `entered_at` is when the caller joined the queue (the request time for the API's callbacks):
  callbacks wait among callers in that order.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Column, ForeignKey, Index, Integer, String, Table, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from cti.agents import AGENTS
from cti.db import Database
from cti.models import Base, JsonType, UtcDateTime, new_id, utcnow
from cti.queues import AgentState
from cti.store import iso

CALLBACKS = Table(
    "callbacks", Base.metadata,
    Column("id", String(36), primary_key=True),
    Column("customer_id", String(36), ForeignKey("customers.id", ondelete="SET NULL")),
    Column("number", String(64), nullable=False),
    Column("name", String(200)),
    Column("queue", String(100), nullable=False),
    Column("reason", String(500)),
    Column("channel", String(40), nullable=False),  # what asked for it: voice (the waiting caller), chat...
    Column("state", String(16), nullable=False),  # queued | offering | dialing | done | failed | cancelled
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("earliest", UtcDateTime(), nullable=False),
    Column("entered_at", UtcDateTime(), nullable=False),
    Column("give_up_at", UtcDateTime(), nullable=False),
    Column("original_interaction_id", String(36)),
    Column("interaction_id", String(36)),  # the callback call's own record (set at the answer)
    Column("node", String(64)),  # the node that holds the claim
    Column("agent_id", String(64)),
    Column("last_result", String(200)),
    Column("history", JsonType, nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("placed_at", UtcDateTime()),
    Column("finished_at", UtcDateTime()),
    Column("idempotency_key", String(300), unique=True),
    Index("ix_callbacks_state", "state", "earliest"),
)

STATES = ("queued", "offering", "dialing", "done", "failed", "cancelled")
OPEN_STATES = ("queued", "offering", "dialing")


@dataclass(frozen=True, kw_only=True)
class RetryRules:
    retries: int = 2
    retry_interval: float = 300.0
    give_up_after: float = 86400.0


@dataclass(frozen=True, kw_only=True)
class NewCallback:
    number: str
    queue: str
    customer_id: str | None = None
    name: str | None = None
    reason: str | None = None
    channel: str = "voice"
    earliest: datetime | None = None  # None: now
    entered_at: datetime | None = None  # None: now
    original_interaction_id: str | None = None
    idempotency_key: str | None = None


def callback_dict(row: Any) -> dict[str, Any]:
    return {"id": row.id, "customer_id": row.customer_id, "number": row.number, "name": row.name,
            "queue": row.queue, "reason": row.reason, "channel": row.channel, "state": row.state,
            "attempts": row.attempts, "earliest": iso(row.earliest), "entered_at": iso(row.entered_at),
            "give_up_at": iso(row.give_up_at), "original_interaction_id": row.original_interaction_id,
            "interaction_id": row.interaction_id, "agent_id": row.agent_id, "last_result": row.last_result,
            "history": list(row.history or []), "created_at": iso(row.created_at),
            "placed_at": iso(row.placed_at), "finished_at": iso(row.finished_at)}


def _create(conn: Connection, item: NewCallback, rules: RetryRules) -> tuple[dict[str, Any], bool]:
    if item.idempotency_key:
        same = CALLBACKS.c.idempotency_key == item.idempotency_key
        row = conn.execute(select(CALLBACKS).where(same)).first()
        if row is not None:
            return callback_dict(row), False
    now = utcnow()
    earliest = item.earliest or now
    values: dict[str, Any] = {
              "id": new_id(), "customer_id": item.customer_id, "number": item.number, "name": item.name,
              "queue": item.queue, "reason": item.reason, "channel": item.channel, "state": "queued",
              "attempts": 0, "earliest": earliest, "entered_at": item.entered_at or now,
              "give_up_at": max(earliest, now) + timedelta(seconds=rules.give_up_after),
              "original_interaction_id": item.original_interaction_id, "history": [], "created_at": now,
              "idempotency_key": item.idempotency_key}
    conn.execute(CALLBACKS.insert().values(**values))
    row = conn.execute(select(CALLBACKS).where(CALLBACKS.c.id == values["id"])).one()
    return callback_dict(row), True


def _move(conn: Connection, callback_id: str, from_state: str, node: str | None,
          values: dict[str, Any]) -> bool:
    where = [CALLBACKS.c.id == callback_id, CALLBACKS.c.state == from_state]
    if node is not None:
        where.append(CALLBACKS.c.node == node)
    return bool(conn.execute(update(CALLBACKS).where(*where).values(**values)).rowcount)


def _claim(conn: Connection, callback_id: str, node: str, agent_id: str, key: str) -> str:
    """queued -> offering and the agent available -> ringing, in one transaction: "ok", "taken"
    (the callback is not queued any more) or "busy" (the agent is not available any more)."""
    if not _move(conn, callback_id, "queued", None,
                 {"state": "offering", "node": node, "agent_id": agent_id}):
        return "taken"
    reserved = conn.execute(update(AGENTS).where(
        AGENTS.c.id == agent_id, AGENTS.c.state == AgentState.AVAILABLE.value).values(
        state=AgentState.RINGING.value, call_id=key)).rowcount
    if not reserved:
        _move(conn, callback_id, "offering", node, {"state": "queued", "node": None, "agent_id": None})
        return "busy"
    return "ok"


def _dialing(conn: Connection, callback_id: str, node: str, agent_id: str, key: str) -> datetime | None:
    """offering -> dialing (attempt + 1) and the agent on_call, in one transaction; the agent's
    `state_since`, or None when the row is not this node's offering one any more."""
    row = conn.execute(select(CALLBACKS.c.attempts).where(
        CALLBACKS.c.id == callback_id, CALLBACKS.c.state == "offering", CALLBACKS.c.node == node)).first()
    now = utcnow()
    if row is None or not _move(conn, callback_id, "offering", node, {
            "state": "dialing", "attempts": row.attempts + 1, "agent_id": agent_id, "placed_at": now}):
        return None
    conn.execute(update(AGENTS).where(AGENTS.c.id == agent_id).values(
        state=AgentState.ON_CALL.value, state_since=now, call_id=key))
    return now


def _attempt_over(conn: Connection, callback_id: str, node: str | None, *, answered: bool, result: str,
                  interaction_id: str | None, rules: RetryRules, now: datetime) -> str | None:
    """After an attempt (state dialing): done, queued for the next attempt, or failed."""
    where = [CALLBACKS.c.id == callback_id, CALLBACKS.c.state == "dialing"]
    if node is not None:
        where.append(CALLBACKS.c.node == node)
    row = conn.execute(select(CALLBACKS).where(*where)).first()
    if row is None:
        return None
    entry = {"at": iso(now), "agent_id": row.agent_id, "result": result, "interaction_id": interaction_id}
    history = [*(row.history or []), entry]
    values: dict[str, Any] = {"history": history, "last_result": result[:200], "node": None}
    if interaction_id:
        values["interaction_id"] = interaction_id
    retry_at = now + timedelta(seconds=rules.retry_interval)
    if answered:
        state = "done"
    elif row.attempts <= rules.retries and retry_at < row.give_up_at:
        state = "queued"
        values["earliest"] = retry_at
    else:
        state = "failed"
    values["state"] = state
    if state in ("done", "failed"):
        values["finished_at"] = now
    conn.execute(update(CALLBACKS).where(*where).values(**values))
    return state


def _recover(conn: Connection, node: str, rules: RetryRules) -> dict[str, int]:
    """A node starting (or stopping): its offers go back in line (the agents rung for them go
    back to idle in their place); its dials were attempts (the agents on them go away)."""
    now = utcnow()
    offered = [r.id for r in conn.execute(select(CALLBACKS.c.id).where(
        CALLBACKS.c.state == "offering", CALLBACKS.c.node == node))]
    for callback_id in offered:
        _move(conn, callback_id, "offering", node, {"state": "queued", "node": None, "agent_id": None})
        conn.execute(update(AGENTS).where(AGENTS.c.call_id == f"callback:{callback_id}",
                                          AGENTS.c.state == AgentState.RINGING.value)
                     .values(state=AgentState.AVAILABLE.value, call_id=None))
    back = len(offered)
    counted = 0
    for row in conn.execute(select(CALLBACKS.c.id, CALLBACKS.c.interaction_id).where(
            CALLBACKS.c.state == "dialing", CALLBACKS.c.node == node)).all():
        busy = (AgentState.RINGING.value, AgentState.ON_CALL.value)
        conn.execute(update(AGENTS).where(AGENTS.c.call_id == f"callback:{row.id}", AGENTS.c.state.in_(busy))
                     .values(state=AgentState.AWAY.value, state_since=now, call_id=None))
        # Answered (its record exists): done, never placed again. Else the attempt counts.
        answered = row.interaction_id is not None
        _attempt_over(conn, row.id, node, answered=answered, interaction_id=row.interaction_id,
                      result="interrupted (the service stopped)" + (" after the answer" if answered else ""),
                      rules=rules, now=now)
        counted += 1
    return {"requeued": back, "interrupted": counted}


def _cancel(conn: Connection, callback_id: str, reason: str | None,
            now: datetime) -> tuple[bool, dict[str, Any] | None]:
    """queued -> cancelled: (True, the row) if it was queued; else (False, the row as it is, or
    None when there is no such callback)."""
    row = conn.execute(select(CALLBACKS).where(CALLBACKS.c.id == callback_id)).first()
    if row is None:
        return False, None
    result = f"cancelled: {reason}" if reason else "cancelled"
    entry = {"at": iso(now), "agent_id": None, "result": result, "interaction_id": None}
    if not _move(conn, callback_id, "queued", None, {
            "state": "cancelled", "finished_at": now, "last_result": result[:200], "node": None,
            "agent_id": None, "history": [*(row.history or []), entry]}):
        return False, callback_dict(row)
    return True, _get(conn, callback_id)


def _due(conn: Connection, until: datetime, limit: int) -> list[dict[str, Any]]:
    rows = conn.execute(select(CALLBACKS).where(CALLBACKS.c.state == "queued", CALLBACKS.c.earliest <= until)
                        .order_by(CALLBACKS.c.entered_at, CALLBACKS.c.id).limit(limit))
    return [callback_dict(r) for r in rows]


def _expire(conn: Connection, now: datetime) -> int:
    return conn.execute(update(CALLBACKS).where(CALLBACKS.c.state == "queued", CALLBACKS.c.give_up_at <= now)
                        .values(state="failed", finished_at=now, last_result="gave up (give_up_after)")
                        ).rowcount


def _list(conn: Connection, state: str | None, queue: str | None, limit: int) -> list[dict[str, Any]]:
    q = select(CALLBACKS)
    if state:
        q = q.where(CALLBACKS.c.state == state)
    if queue:
        q = q.where(CALLBACKS.c.queue == queue)
    return [callback_dict(r) for r in conn.execute(q.order_by(CALLBACKS.c.created_at.desc(),
                                                              CALLBACKS.c.id).limit(limit))]


def _get(conn: Connection, callback_id: str) -> dict[str, Any] | None:
    row = conn.execute(select(CALLBACKS).where(CALLBACKS.c.id == callback_id)).first()
    return callback_dict(row) if row is not None else None


class CallbackStore:
    """The callbacks table, as the desk and the API use it."""

    def __init__(self, db: Database, rules: RetryRules | None = None) -> None:
        self.db = db
        self.rules = rules or RetryRules()

    async def create(self, item: NewCallback) -> tuple[dict[str, Any], bool]:
        """The new row (and True), or the one made earlier with the same idempotency key (False)."""
        try:
            return await self.db.run_write(_create, item, self.rules)
        except IntegrityError:  # the same key, raced
            return await self.db.run_write(_create, item, self.rules)

    async def get(self, callback_id: str) -> dict[str, Any] | None:
        return await self.db.run_read(_get, callback_id)

    async def list_callbacks(self, *, state: str | None = None, queue: str | None = None,
                   limit: int = 100) -> list[dict[str, Any]]:
        return await self.db.run_read(_list, state, queue, limit)

    async def due(self, *, until: datetime | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        """Queued callbacks whose `earliest` has come, oldest place in line first."""
        return await self.db.run_read(_due, until or datetime.now(UTC), limit)

    async def claim(self, callback_id: str, node: str, agent_id: str, key: str | None = None) -> str:
        """queued -> offering for this node, and the agent reserved (available -> ringing with
        `key` as its call): "ok", "taken" (someone else has it, or it is not queued) or "busy"."""
        return await self.db.run_write(_claim, callback_id, node, agent_id, key or f"callback:{callback_id}")

    async def unclaim(self, callback_id: str, node: str, result: str | None = None) -> bool:
        """offering -> queued: the agent did not take it; the customer was not called."""
        values: dict[str, Any] = {"state": "queued", "node": None, "agent_id": None}
        if result:
            values["last_result"] = result[:200]
        return await self.db.run_write(_move, callback_id, "offering", node, values)

    async def dialing(self, callback_id: str, node: str, agent_id: str,
                      key: str | None = None) -> datetime | None:
        """offering -> dialing, attempts + 1, the agent on_call: the customer's INVITE leaves next.
        Returns the agent's on_call `since` (None: the row was not this node's offering one)."""
        return await self.db.run_write(_dialing, callback_id, node, agent_id,
                                       key or f"callback:{callback_id}")

    async def answered(self, callback_id: str, node: str, interaction_id: str | None) -> bool:
        """The customer answered (still dialing): a restart from now on counts it done."""
        return await self.db.run_write(_move, callback_id, "dialing", node,
                                       {"interaction_id": interaction_id or "answered"})

    async def attempt_over(self, callback_id: str, node: str | None, *, answered: bool, result: str,
                           interaction_id: str | None = None) -> str | None:
        """The new state (done / queued / failed), None when the row was not this node's dialing one."""
        return await self.db.run_write(functools.partial(
            _attempt_over, answered=answered, result=result, interaction_id=interaction_id, rules=self.rules,
            now=utcnow()), callback_id, node)

    async def cancel(self, callback_id: str, reason: str | None = None) -> tuple[bool, dict[str, Any] | None]:
        """Cancel a queued callback: (True, row); (False, row) when it is not queued any more
        (offered, being dialled, or ended); (False, None) when there is no such callback."""
        return await self.db.run_write(_cancel, callback_id, reason, utcnow())

    async def recover(self, node: str) -> dict[str, int]:
        return await self.db.run_write(_recover, node, self.rules)

    async def expire(self) -> int:
        return await self.db.run_write(_expire, utcnow())
