"""Events for agents (screen pops, state changes), delivered to whichever node holds their websocket.

`EventBus` delivers in-process: the embedded SQLite default, one node. `PostgresEventBus`
sends every event through PostgreSQL: `NOTIFY voice_events, '<json>'`; every node LISTENs on a
connection of its own and delivers to its local subscribers, so the node that took the call
and the node holding the agent's websocket need not be the same. The publishing node gets its
own notification back and delivers from there too: one path, no duplicates.

NOTIFY payloads must stay under 8000 bytes. A screen pop with a long transcript and history
can be bigger, so an event larger than `INLINE_LIMIT` is written to `agent_events` and the
notification carries only its id (`{"ref": id}`); receivers read the row. Small events (state
changes, most pops) cost no table write. Rows older than an hour are deleted now and then.

An event is a JSON object with a "type"; `agent_id` names the agent it is for (None: every node's
listeners, e.g. agent state changes the routers of other nodes must learn about).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import asyncpg

log = logging.getLogger("cti.events")

CHANNEL = "voice_events"
INLINE_LIMIT = 7000  # bytes of JSON; PostgreSQL refuses NOTIFY payloads of 8000 bytes and more
SUBSCRIBER_BUFFER = 256  # events kept for a slow websocket before it is dropped

Listener = Callable[[str | None, dict[str, Any]], None]


class Subscription:
    """One websocket's feed of events for one agent."""

    def __init__(self, bus: EventBus, agent_id: str) -> None:
        self.bus = bus
        self.agent_id = agent_id
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(SUBSCRIBER_BUFFER)
        self.overflowed = False

    async def get(self) -> dict[str, Any]:
        return await self.queue.get()

    def close(self) -> None:
        self.bus._unsubscribe(self)


class EventBus:
    """In-process delivery (one node)."""

    def __init__(self) -> None:
        self._subs: dict[str, set[Subscription]] = {}
        self._listeners: list[Listener] = []

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def subscribe(self, agent_id: str) -> Subscription:
        sub = Subscription(self, agent_id)
        self._subs.setdefault(agent_id, set()).add(sub)
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        subs = self._subs.get(sub.agent_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subs[sub.agent_id]

    def connected(self, agent_id: str) -> int:
        return len(self._subs.get(agent_id, ()))

    def add_listener(self, listener: Listener) -> None:
        """Called with (agent_id, event) for every event this node receives (routers, admin)."""
        self._listeners.append(listener)

    async def publish(self, agent_id: str | None, event: dict[str, Any]) -> None:
        event = {"id": event.get("id") or str(uuid.uuid4()), "sent_at": time.time(), **event}
        self._deliver(agent_id, event, origin=True)

    def _deliver(self, agent_id: str | None, event: dict[str, Any], *, origin: bool) -> None:
        for listener in list(self._listeners):
            try:
                listener(agent_id, event)
            except Exception:
                log.exception("event listener failed on %s", event.get("type"))
        if agent_id is None:
            return
        for sub in list(self._subs.get(agent_id, ())):
            try:
                sub.queue.put_nowait(event)
            except asyncio.QueueFull:
                # A websocket that reads nothing must not grow memory without bound: drop it, the
                # page reconnects and asks for its state again.
                sub.overflowed = True
                log.warning("agent %s: websocket not reading, %d events dropped", agent_id, sub.queue.qsize())


class PostgresEventBus(EventBus):
    """Delivery through PostgreSQL LISTEN/NOTIFY (several nodes on one database)."""

    def __init__(self, dsn: str, *, schema: str | None = None, channel: str = CHANNEL) -> None:
        super().__init__()
        self.dsn = dsn
        self.schema = schema
        self.channel = channel
        self._listen: asyncpg.Connection | None = None
        self._send: asyncpg.Connection | None = None
        self._send_lock = asyncio.Lock()
        self._closing = False
        self._reconnect: asyncio.Task[None] | None = None
        self._fetches: set[asyncio.Task[None]] = set()
        self._fetch_lock = asyncio.Lock()
        self._last_cleanup = 0.0

    async def _connect(self) -> asyncpg.Connection:
        settings = {"search_path": self.schema} if self.schema else {}
        return await asyncpg.connect(self.dsn, server_settings=settings)

    async def start(self) -> None:
        self._send = await self._connect()
        await self._start_listening()

    async def _start_listening(self) -> None:
        self._listen = await self._connect()
        await self._listen.add_listener(self.channel, self._on_notify)
        self._listen.add_termination_listener(self._on_lost)

    def _on_lost(self, _conn: asyncpg.Connection) -> None:
        if not self._closing and self._reconnect is None:
            log.warning("LISTEN connection lost; reconnecting")
            self._reconnect = asyncio.ensure_future(self._relisten())

    async def _relisten(self) -> None:
        delay = 0.2
        try:
            while not self._closing:
                try:
                    await self._start_listening()
                    log.info("LISTEN %s again", self.channel)
                    return
                except (OSError, asyncpg.PostgresError) as exc:
                    log.warning("LISTEN reconnect failed (%s); retrying in %.1fs", exc, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
        finally:
            self._reconnect = None

    async def close(self) -> None:
        self._closing = True
        if self._reconnect is not None:
            self._reconnect.cancel()
        for task in list(self._fetches):
            task.cancel()
        for conn in (self._listen, self._send):
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()

    async def publish(self, agent_id: str | None, event: dict[str, Any]) -> None:
        event = {"id": event.get("id") or str(uuid.uuid4()), "sent_at": time.time(), **event}
        body = json.dumps({"agent_id": agent_id, "event": event}, separators=(",", ":"), ensure_ascii=False)
        async with self._send_lock:  # one asyncpg connection runs one query at a time
            conn = self._send
            if conn is None or conn.is_closed():
                conn = self._send = await self._connect()
            if len(body.encode()) > INLINE_LIMIT:
                await conn.execute("INSERT INTO agent_events (id, agent_id, payload, created_at) "
                                   "VALUES ($1, $2, $3, now())", event["id"], agent_id, body)
                body = json.dumps({"ref": event["id"]})
                await self._maybe_cleanup(conn)
            await conn.execute("SELECT pg_notify($1, $2)", self.channel, body)

    async def _maybe_cleanup(self, conn: asyncpg.Connection) -> None:
        now = time.monotonic()
        if now - self._last_cleanup > 60:
            self._last_cleanup = now
            await conn.execute("DELETE FROM agent_events WHERE created_at < now() - interval '1 hour'")

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        try:
            data = json.loads(payload)
        except ValueError:
            log.warning("ignoring a malformed %s notification", self.channel)
            return
        if "ref" in data:
            task = asyncio.ensure_future(self._fetch(str(data["ref"])))
            self._fetches.add(task)
            task.add_done_callback(self._fetches.discard)
            return
        self._deliver(data.get("agent_id"), data.get("event") or {}, origin=False)

    async def _fetch(self, ref: str) -> None:
        conn = self._listen
        if conn is None:
            return
        # The LISTEN connection is idle between notifications, so it can serve this read.
        async with self._fetch_lock:
            body = await conn.fetchval("SELECT payload FROM agent_events WHERE id = $1", ref)
        if body is None:
            log.warning("event %s not found (cleaned up?)", ref)
            return
        data = json.loads(body)
        self._deliver(data.get("agent_id"), data.get("event") or {}, origin=False)


def asyncpg_dsn(url: str) -> str | None:
    """The asyncpg DSN of a SQLAlchemy PostgreSQL URL; None for other databases."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        return None
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


def make_bus(url: str, *, schema: str | None = None) -> EventBus:
    """LISTEN/NOTIFY on PostgreSQL, in-process otherwise. Tests with a schema get their own channel."""
    dsn = asyncpg_dsn(url)
    if dsn is None:
        return EventBus()
    return PostgresEventBus(dsn, schema=schema, channel=f"{CHANNEL}_{schema}" if schema else CHANNEL)
