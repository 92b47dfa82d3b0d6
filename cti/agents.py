"""Agents in the customer store: who they are, how they sign in, their state, their call notes.

Passwords are kept as scrypt hashes (salted, hashlib.scrypt n=2**14 r=8 p=1), never in plain
text; hashing runs in a worker thread, it takes tens of milliseconds on purpose. Sessions are
random tokens of which only the SHA-256 is stored, so a stolen database opens no session.
States live in the database too, so every node sees the same agent: `reserve` is the
compare-and-set (available -> ringing) that keeps two nodes from offering one agent two calls.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import ForeignKey, String, Table, delete, func, or_, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from cti.db import Database
from cti.models import Base, Customer, Identity, Interaction, InteractionNote, JsonType, UtcDateTime, utcnow
from cti.queues import AgentState
from cti.store import customer_dict, iso, note_dict

__all__ = ["Agent", "AgentSession", "AgentStore", "InteractionNote"]

AGENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
SESSION_HOURS = 12
_SCRYPT = {"n": 2**14, "r": 8, "p": 1, "dklen": 32}


class Agent(Base):
    __tablename__ = "agents"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    sip_uri: Mapped[str] = mapped_column(String(500))
    skills: Mapped[list[str]] = mapped_column(JsonType, default=list)
    password_hash: Mapped[str | None] = mapped_column(String(200))
    state: Mapped[str] = mapped_column(String(20), default="away")
    state_since: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    call_id: Mapped[str | None] = mapped_column(String(300))
    state_reason: Mapped[str | None] = mapped_column(String(40))  # why away (break, lunch, ...)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)


class AgentSession(Base):
    __tablename__ = "agent_sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"), index=True)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime())


class AgentExists(Exception):
    pass


class AgentNotFound(Exception):
    pass


# The hash of a random password nobody kept, with the same parameters as real ones: checked
# against for unknown agent ids, so that they cost one scrypt like a wrong password does.
_DUMMY_HASH = ("scrypt$16384$8$1$afe2ab1092962ef92ccae4d1611b83cb$"
               "f7ee2a63546244a7cf53d1fe978551f35736ec73b8eabfa79565429b85d30812")


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, **_SCRYPT)
    return f"scrypt$16384$8$1${salt.hex()}${digest.hex()}"


def check_password(password: str, stored: str | None) -> bool:
    if not stored:
        return False
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        got = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p),
                             dklen=len(digest) // 2)
    except ValueError:
        return False
    return scheme == "scrypt" and hmac.compare_digest(got.hex(), digest)


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def agent_dict(a: Agent) -> dict[str, Any]:
    return {"id": a.id, "name": a.name, "sip_uri": a.sip_uri, "skills": list(a.skills or []),
            "state": a.state, "state_since": iso(a.state_since), "call_id": a.call_id,
            "reason": a.state_reason}


class AgentStore:
    """Agents, sessions, states and notes on the customer store's database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # ---- agents --------------------------------------------------------------------------
    async def create_agent(self, *, agent_id: str, name: str, sip_uri: str, skills: list[str],
                           password: str | None) -> dict[str, Any]:
        hashed = await asyncio.to_thread(hash_password, password) if password else None
        try:
            async with self.db.write() as s, s.begin():
                agent = Agent(id=agent_id, name=name, sip_uri=sip_uri, skills=list(skills),
                              password_hash=hashed, state=AgentState.AWAY.value, state_since=utcnow(),
                              created_at=utcnow())
                s.add(agent)
        except IntegrityError:
            raise AgentExists(agent_id) from None
        return agent_dict(agent)

    async def update_agent(self, agent_id: str, *, name: str | None = None, sip_uri: str | None = None,
                           skills: list[str] | None = None, password: str | None = None) -> dict[str, Any]:
        hashed = await asyncio.to_thread(hash_password, password) if password else None
        async with self.db.write() as s, s.begin():
            agent = await s.get(Agent, agent_id)
            if agent is None:
                raise AgentNotFound(agent_id)
            if name is not None:
                agent.name = name
            if sip_uri is not None:
                agent.sip_uri = sip_uri
            if skills is not None:
                agent.skills = list(skills)
            if hashed is not None:
                agent.password_hash = hashed
                await s.execute(delete(AgentSession).where(AgentSession.agent_id == agent_id))
        return agent_dict(agent)

    async def get_agent(self, agent_id: str) -> dict[str, Any] | None:
        return await self.db.run_read(_get_agent, agent_id)

    async def list_agents(self) -> list[dict[str, Any]]:
        return await self.db.run_read(_list_agents)

    # ---- sign-in -------------------------------------------------------------------------
    async def sign_in(self, agent_id: str, password: str) -> str | None:
        """A new session token, or None for a wrong id or password (same cost either way)."""
        async with self.db.read() as s:
            stored = (await s.execute(select(Agent.password_hash).where(Agent.id == agent_id))).scalar()
        # Hash even for unknown agents, in the worker thread like any other: the answer and its
        # time must not tell which ids exist, and no scrypt runs on the event loop.
        ok = await asyncio.to_thread(check_password, password, stored or _DUMMY_HASH)
        if not ok or not stored:
            return None
        token = secrets.token_urlsafe(32)
        async with self.db.write() as s, s.begin():
            await s.execute(delete(AgentSession).where(AgentSession.expires_at < utcnow()))  # old ones go
            s.add(AgentSession(token_hash=_token_hash(token), agent_id=agent_id,
                               expires_at=utcnow() + timedelta(hours=SESSION_HOURS)))
        return token

    async def session_agent(self, token: str) -> str | None:
        if not token or len(token) > 100:
            return None
        async with self.db.read() as s:
            row = (await s.execute(select(AgentSession.agent_id, AgentSession.expires_at)
                                   .where(AgentSession.token_hash == _token_hash(token)))).first()
        if row is None or row.expires_at <= utcnow():
            return None
        return str(row.agent_id)

    async def sign_out(self, token: str) -> None:
        async with self.db.write() as s, s.begin():
            await s.execute(delete(AgentSession).where(AgentSession.token_hash == _token_hash(token)))

    # ---- states (one short transaction each, on the store's writer: see cti.db) ----------------
    async def set_state(self, agent_id: str, state: AgentState | str, call_id: str | None = None, *,
                        reason: str | None = None) -> datetime:
        """`reason`: why the agent is away (kept with the state; any other state clears it)."""
        state = AgentState(state)
        return await self.db.run_write(_set_state, agent_id, state.value, call_id,
                                       reason if state == AgentState.AWAY else None, utcnow())

    async def end_wrap_up(self, agent_id: str, call_id: str | None) -> datetime | None:
        """wrap_up (for `call_id`) -> available, only if the agent still wraps up that call (they
        may have pressed Available or Away already, or taken another call); the new `since`."""
        return await self.db.run_write(_end_wrap_up, agent_id, call_id, utcnow())

    async def reserve(self, agent_id: str, call_id: str) -> bool:
        """available -> ringing, only if still available (another node may have taken the agent).

        `state_since` stays: ringing keeps the agent's place in the idle order (see cti.queues).
        """
        return await self.db.run_write(_reserve, agent_id, call_id)

    async def accept(self, agent_id: str, call_id: str) -> datetime | None:
        """ringing for `call_id` -> on_call; the new `since`, or None when this call is not (or no
        longer) offered to the agent. An agent already on this call stays as they are."""
        return await self.db.run_write(_accept, agent_id, call_id, utcnow())

    async def release(self, agent_id: str, call_id: str, state: AgentState, *,
                      keep_since: bool = False) -> None:
        """ringing -> `state` if the agent still rings for this call (an offer withdrawn or refused)."""
        await self.db.run_write(_release, agent_id, call_id, state.value, None if keep_since else utcnow())

    # ---- notes ---------------------------------------------------------------------------
    async def interaction_for_call(self, call_id: str) -> str | None:
        return await self.db.run_read(_interaction_for_call, call_id)

    async def add_note(self, interaction_id: str, *, agent_id: str, text: str,
                       disposition: str | None) -> dict[str, Any]:
        """Keep the note, and put the agent, disposition and newest note summary on the interaction."""
        now = utcnow()
        async with self.db.write() as s, s.begin():
            values: dict[str, Any] = {"agent": agent_id}
            if disposition:
                values["disposition"] = disposition
            if text:
                values["summary"] = text[:2000]
            result = await s.execute(
                update(Interaction).where(Interaction.id == interaction_id).values(**values))
            if result.rowcount == 0:  # type: ignore[attr-defined]
                raise AgentNotFound(f"interaction {interaction_id}")
            note = InteractionNote(interaction_id=interaction_id, agent_id=agent_id, text=text,
                                   disposition=disposition, created_at=now)
            s.add(note)
        return {"id": note.id, "interaction_id": interaction_id, "agent_id": agent_id, "text": text,
                "disposition": disposition, "created_at": iso(now)}

    async def notes(self, interaction_id: str) -> list[dict[str, Any]]:
        async with self.db.read() as s:
            rows = (await s.execute(select(InteractionNote).where(
                InteractionNote.interaction_id == interaction_id).order_by(InteractionNote.id))).scalars()
            return [note_dict(n) for n in rows]

    # ---- customer search (agent page) ----------------------------------------------------
    async def search_customers(self, query: str, limit: int = 20) -> list[dict[str, Any]]:
        """Customers whose name contains `query`, or with an identity starting with it (case-insensitive)."""
        q = query.strip().lower()
        if not q:
            return []
        like = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        prefix = like[1:]
        async with self.db.read() as s:
            by_identity = select(Identity.customer_id).where(
                func.lower(Identity.value).like(prefix, escape="\\"))
            rows = await s.execute(select(Customer).where(or_(
                func.lower(Customer.name).like(like, escape="\\"), Customer.id.in_(by_identity)))
                .order_by(Customer.name).limit(limit))
            return [customer_dict(c) for c in rows.scalars()]


# ---- the statements (sync functions of a Core connection, run by Database.run_read/run_write) ----
AGENTS = cast(Table, Agent.__table__)


def _agent_row(row: Any) -> dict[str, Any]:
    return {"id": row.id, "name": row.name, "sip_uri": row.sip_uri, "skills": list(row.skills or []),
            "state": row.state, "state_since": iso(row.state_since), "call_id": row.call_id,
            "reason": row.state_reason}


def _get_agent(conn: Connection, agent_id: str) -> dict[str, Any] | None:
    row = conn.execute(select(AGENTS).where(AGENTS.c.id == agent_id)).first()
    return _agent_row(row) if row is not None else None


def _list_agents(conn: Connection) -> list[dict[str, Any]]:
    return [_agent_row(r) for r in conn.execute(select(AGENTS).order_by(AGENTS.c.id))]


def _set_state(conn: Connection, agent_id: str, state: str, call_id: str | None, reason: str | None,
               now: datetime) -> datetime:
    result = conn.execute(update(AGENTS).where(AGENTS.c.id == agent_id).values(
        state=state, state_since=now, call_id=call_id, state_reason=reason))
    if result.rowcount == 0:
        raise AgentNotFound(agent_id)
    return now


def _end_wrap_up(conn: Connection, agent_id: str, call_id: str | None, now: datetime) -> datetime | None:
    same_call = AGENTS.c.call_id.is_(None) if call_id is None else AGENTS.c.call_id == call_id
    result = conn.execute(update(AGENTS).where(
        AGENTS.c.id == agent_id, AGENTS.c.state == AgentState.WRAP_UP.value, same_call).values(
        state=AgentState.AVAILABLE.value, state_since=now, call_id=None, state_reason=None))
    return now if result.rowcount else None


def _reserve(conn: Connection, agent_id: str, call_id: str) -> bool:
    result = conn.execute(update(AGENTS).where(
        AGENTS.c.id == agent_id, AGENTS.c.state == AgentState.AVAILABLE.value).values(
        state=AgentState.RINGING.value, call_id=call_id))
    return bool(result.rowcount)


def _accept(conn: Connection, agent_id: str, call_id: str, now: datetime) -> datetime | None:
    result = conn.execute(update(AGENTS).where(
        AGENTS.c.id == agent_id, AGENTS.c.call_id == call_id,
        AGENTS.c.state == AgentState.RINGING.value).values(state=AgentState.ON_CALL.value, state_since=now))
    if result.rowcount:
        return now
    row = conn.execute(select(AGENTS.c.state, AGENTS.c.call_id, AGENTS.c.state_since)
                       .where(AGENTS.c.id == agent_id)).first()
    if row is not None and row.state == AgentState.ON_CALL.value and row.call_id == call_id:
        since: datetime = row.state_since
        return since
    return None


def _release(conn: Connection, agent_id: str, call_id: str, state: str, since: datetime | None) -> None:
    values: dict[str, Any] = {"state": state, "call_id": None}
    if since is not None:  # None: the agent goes back to idle in the place they had
        values["state_since"] = since
    conn.execute(update(AGENTS).where(AGENTS.c.id == agent_id, AGENTS.c.call_id == call_id,
                                      AGENTS.c.state == AgentState.RINGING.value).values(**values))


def _interaction_for_call(conn: Connection, call_id: str) -> str | None:
    """`call_id`: a call's key (`<node>:<Call-ID>;<tags>`, what pops carry: one record) or a SIP
    Call-ID (the newest call that used it)."""
    table = cast(Table, Interaction.__table__)
    found: str | None = conn.execute(select(table.c.id).where(table.c.idempotency_key == f"call:{call_id}")
                                     ).scalar()
    if found is None:
        found = conn.execute(select(table.c.id).where(table.c.call_id == call_id)
                             .order_by(table.c.started_at.desc()).limit(1)).scalar()
    return found
