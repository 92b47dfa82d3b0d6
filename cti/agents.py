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
from typing import Any

from sqlalchemy import ForeignKey, Integer, String, Text, delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from cti.db import Database
from cti.models import Base, Customer, Identity, Interaction, JsonType, UtcDateTime, utcnow
from cti.queues import AgentState
from cti.store import customer_dict, iso

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
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)


class AgentSession(Base):
    __tablename__ = "agent_sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"), index=True)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime())


class InteractionNote(Base):
    __tablename__ = "interaction_notes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    interaction_id: Mapped[str] = mapped_column(ForeignKey("interactions.id", ondelete="CASCADE"), index=True)
    agent_id: Mapped[str | None] = mapped_column(String(64))
    text: Mapped[str] = mapped_column(Text)
    disposition: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)


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
            "state": a.state, "state_since": iso(a.state_since), "call_id": a.call_id}


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
        async with self.db.read() as s:
            agent = await s.get(Agent, agent_id)
            return agent_dict(agent) if agent else None

    async def list_agents(self) -> list[dict[str, Any]]:
        async with self.db.read() as s:
            return [agent_dict(a) for a in (await s.execute(select(Agent).order_by(Agent.id))).scalars()]

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

    # ---- states --------------------------------------------------------------------------
    async def set_state(self, agent_id: str, state: AgentState | str, call_id: str | None = None) -> datetime:
        state = AgentState(state)
        now = utcnow()
        async with self.db.write() as s, s.begin():
            result = await s.execute(update(Agent).where(Agent.id == agent_id).values(
                state=state.value, state_since=now, call_id=call_id))
            if result.rowcount == 0:  # type: ignore[attr-defined]
                raise AgentNotFound(agent_id)
        return now

    async def reserve(self, agent_id: str, call_id: str) -> bool:
        """available -> ringing, only if still available (another node may have taken the agent).

        `state_since` stays: ringing keeps the agent's place in the idle order (see cti.queues).
        """
        async with self.db.write() as s, s.begin():
            result = await s.execute(update(Agent).where(
                Agent.id == agent_id, Agent.state == AgentState.AVAILABLE.value).values(
                state=AgentState.RINGING.value, call_id=call_id))
            return bool(result.rowcount)  # type: ignore[attr-defined]

    async def release(self, agent_id: str, call_id: str, state: AgentState, *,
                      keep_since: bool = False) -> None:
        """ringing -> `state` if the agent still rings for this call (an offer withdrawn or refused)."""
        values: dict[str, Any] = {"state": state.value, "call_id": None}
        if not keep_since:  # keep_since: the agent goes back to idle in the place they had
            values["state_since"] = utcnow()
        async with self.db.write() as s, s.begin():
            await s.execute(update(Agent).where(Agent.id == agent_id, Agent.call_id == call_id,
                                                Agent.state == AgentState.RINGING.value).values(**values))

    # ---- notes ---------------------------------------------------------------------------
    async def interaction_for_call(self, call_id: str) -> str | None:
        async with self.db.read() as s:
            return (await s.execute(select(Interaction.id).where(Interaction.call_id == call_id)
                                    .order_by(Interaction.started_at.desc()).limit(1))).scalar()

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
            return [{"id": n.id, "agent_id": n.agent_id, "text": n.text, "disposition": n.disposition,
                     "created_at": iso(n.created_at)} for n in rows]

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
