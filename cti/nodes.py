"""Node heartbeats in the shared database, and noticing a node that died.

Each node runs one `NodeMonitor`: every `interval` seconds one transaction bumps its own row
in `cluster_nodes` (`beats` + 1, `heartbeat_at`, how many calls it holds) and reads the
others'. A peer whose `beats` this monitor has watched stand still for `lost_after` seconds of
its own clock is lost: the monitor claims it (cti.takeover: compare-and-set, so one survivor
does it), its calls become `interrupted` and its agents are released, and the agents' pages
and every router hear of it. A node stopping cleanly writes `stopped`, and nobody takes it over.

Time is watched on this node's monotonic clock, never compared across machines. When this
node cannot reach the database itself, what it watched is forgotten: after an outage every
peer gets a full `lost_after` again to show it is alive, so an outage kills no one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Connection

from cti.db import Database
from cti.models import utcnow
from cti.nodes_table import NODES
from cti.outage import database_unavailable
from cti.takeover import Takeover, announce_released, claim_lost_node

log = logging.getLogger("cti.nodes")


@dataclass(frozen=True, kw_only=True)
class Peer:
    id: str
    state: str
    beats: int


def beat(conn: Connection, node: str, sip: str | None, http: str | None,
         calls: int) -> tuple[str | None, list[Peer]]:
    """Bump this node's row (made on first use); returns its previous state and every other row."""
    now = utcnow()
    row = conn.execute(select(NODES.c.state).where(NODES.c.id == node).with_for_update()).first()
    if row is None:
        conn.execute(NODES.insert().values(id=node, state="up", beats=1, started_at=now, heartbeat_at=now,
                                           sip=sip, http=http, calls=calls))
        previous = None
    else:
        previous = str(row[0])
        values: dict[str, Any] = {"state": "up", "beats": NODES.c.beats + 1, "heartbeat_at": now,
                                  "sip": sip, "http": http, "calls": calls}
        if previous != "up":
            values.update(started_at=now, lost_at=None, taken_over_by=None)
        conn.execute(update(NODES).where(NODES.c.id == node).values(**values))
    others = conn.execute(select(NODES.c.id, NODES.c.state, NODES.c.beats).where(NODES.c.id != node))
    peers = [Peer(id=r.id, state=r.state, beats=int(r.beats)) for r in others]
    return previous, peers


def mark_stopped(conn: Connection, node: str) -> None:
    conn.execute(update(NODES).where(NODES.c.id == node, NODES.c.state == "up")
                 .values(state="stopped", heartbeat_at=utcnow(), calls=0))


def nodes(conn: Connection) -> list[dict[str, Any]]:
    return [dict(r._mapping) for r in conn.execute(select(NODES).order_by(NODES.c.id))]


class NodeMonitor:
    """This node's heartbeat, and the watch over the others (see the module docstring)."""

    def __init__(self, db: Database, node: str, *, interval: float = 2.0, lost_after: float = 10.0,
                 bus: Any = None, sip: str | None = None, http: str | None = None,
                 calls: Callable[[], int] = lambda: 0, clock: Callable[[], float] = time.monotonic) -> None:
        self.db = db
        self.node = node
        self.interval = interval
        self.lost_after = lost_after
        self.bus = bus
        self.sip = sip
        self.http = http
        self.calls = calls
        self.clock = clock
        self.watched: dict[str, tuple[int, float]] = {}  # peer -> (beats seen, when it last changed)
        self.takeovers: list[Takeover] = []
        self.failing = False  # the last heartbeat could not reach the database
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """First heartbeat now (the database is up at start), then one every `interval`."""
        await self.step()
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        """A clean stop: nobody will take this node over."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        try:
            await asyncio.wait_for(self.db.run_write(mark_stopped, self.node), 5)
        except Exception as exc:
            log.warning("node %s: could not record the stop (%s)", self.node, type(exc).__name__)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.step()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("node %s: heartbeat step failed", self.node)

    async def step(self) -> list[Takeover]:
        """One heartbeat and one look at the peers; returns the takeovers this step made."""
        try:
            previous, peers = await asyncio.wait_for(
                self.db.run_write(beat, self.node, self.sip, self.http, self.calls()),
                max(self.interval, 1.0) * 2)
        except Exception as exc:
            if not database_unavailable(exc):
                raise
            if not self.failing:
                log.warning("node %s: heartbeat failed, the database is unavailable (%s)", self.node,
                            type(exc).__name__)
            self.failing = True
            self.watched.clear()  # we saw nothing meanwhile: nobody's silence counts
            return []
        if self.failing:
            log.info("node %s: heartbeat reaches the database again", self.node)
        self.failing = False
        if previous == "lost":
            log.error("node %s was taken for dead by another node (a stall longer than lost_after?): "
                      "its calls so far were marked interrupted", self.node)
        now = self.clock()
        made: list[Takeover] = []
        live = {p.id for p in peers if p.state == "up"}
        for gone in set(self.watched) - live:
            del self.watched[gone]
        for peer in peers:
            if peer.state != "up":
                continue
            seen = self.watched.get(peer.id)
            if seen is None or seen[0] != peer.beats:
                self.watched[peer.id] = (peer.beats, now)
                continue
            if now - seen[1] < self.lost_after:
                continue
            takeover = await self.db.run_write(claim_lost_node, peer.id, peer.beats, self.node, utcnow())
            self.watched.pop(peer.id, None)
            if takeover is None:
                continue
            log.warning("node %s: node %s gave no heartbeat for %.1f s: %d of its calls marked interrupted, "
                        "%d agents released", self.node, peer.id, now - seen[1], takeover.interrupted,
                        len(takeover.agents))
            self.takeovers.append(takeover)
            made.append(takeover)
            if self.bus is not None:
                try:
                    await announce_released(self.bus, takeover)
                except Exception:
                    log.exception("node %s: announcing the released agents of %s failed", self.node, peer.id)
        return made
