"""Engines, sessions and migrations for the customer store (SQLite or PostgreSQL, same code).

Every write is one sync function of a Core `Connection` (see cti.writes), run by
`Database.run_write` in one transaction:
- PostgreSQL: on the asyncpg engine through `AsyncConnection.run_sync` (each statement still
  awaits the network; the event loop is never blocked);
- SQLite: on a single writer thread with the plain sqlite3 driver. SQLite allows one writer at
  a time anyway, and one thread hop per transaction costs a third of what aiosqlite's hop per
  statement does. Transactions start with BEGIN IMMEDIATE, so another process holding the
  write lock makes us wait (busy_timeout) instead of failing halfway through.
Concurrent ingests share a transaction (`GroupCommit`): while one batch is written the next
gathers, so the commit (and on SQLite the thread hop) is paid once per batch, not per request.
Hot reads (`run_read`) run like writes: asyncpg via run_sync, or a few SQLite reader
threads (WAL mode: readers never wait for the writer). `read` sessions (aiosqlite) serve the rest.

`write` (an async session factory) remains for code that prefers ORM sessions; on SQLite its
one connection also begins IMMEDIATE and takes turns with the writer thread through SQLite's
lock (busy_timeout), so it is correct but slower than `run_write`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
T = TypeVar("T")
ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")
READ_THREADS = 3  # SQLite reader threads: reads overlap in WAL mode; more would only fight for the GIL


@dataclass
class Database:
    """The engines of one database: async reads, and `run_write` for transactions that write."""

    url: str
    read_engine: AsyncEngine
    read: async_sessionmaker[AsyncSession]
    write_engine: AsyncEngine
    write: async_sessionmaker[AsyncSession]
    sqlite_writer: Engine | None = None
    sqlite_reader: Engine | None = None
    _executor: ThreadPoolExecutor | None = None
    _read_executor: ThreadPoolExecutor | None = None

    @property
    def dialect(self) -> str:
        return self.read_engine.dialect.name

    async def run_write(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(connection, *args)` in one transaction: committed if it returns, rolled back if not."""
        if self.sqlite_writer is not None:
            writer = self.sqlite_writer

            def in_transaction() -> T:
                with writer.begin() as conn:
                    return fn(conn, *args)

            return await asyncio.get_running_loop().run_in_executor(self._executor, in_transaction)
        async with self.read_engine.begin() as conn:
            return await conn.run_sync(fn, *args)

    async def run_read(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(connection, *args)` for reading (SQLite: on a reader thread, one hop per call)."""
        if self.sqlite_reader is not None:
            reader = self.sqlite_reader

            def in_thread() -> T:
                with reader.connect() as conn:
                    return fn(conn, *args)

            return await asyncio.get_running_loop().run_in_executor(self._read_executor, in_thread)
        async with self.read_engine.connect() as conn:
            return await conn.run_sync(fn, *args)

    async def dispose(self) -> None:
        await self.read_engine.dispose()
        if self.write_engine is not self.read_engine:
            await self.write_engine.dispose()
        if self.sqlite_writer is not None:
            writer = self.sqlite_writer
            await asyncio.get_running_loop().run_in_executor(self._executor, writer.dispose)
        if self.sqlite_reader is not None:
            reader = self.sqlite_reader
            await asyncio.get_running_loop().run_in_executor(self._read_executor, reader.dispose)
        for executor in (self._executor, self._read_executor):
            if executor is not None:
                executor.shutdown(wait=False)


class BatchFailed(Exception):
    """The batch's transaction raised and was rolled back: run this item on its own."""


class GroupCommit(Generic[ItemT, ResultT]):
    """Group commit: concurrent callers' items are written together, one transaction per batch.

    `fn(connection, items)` returns one result per item. While a batch is being written the next
    one gathers, so a lone request waits for nobody and a busy server commits many items at once
    (SQLite: one writer-thread hop and one commit per batch instead of per item). If `fn` raises,
    the batch is rolled back and every caller of it gets BatchFailed, to try again.

    `concurrency` batches may be in flight at once (PostgreSQL: each on its own pooled connection;
    a batch's statements are round trips, so one batch at a time leaves the server waiting on the
    network and the commit). A second batch starts only when a full one is waiting.
    """

    def __init__(self, db: Database, fn: Callable[[Connection, list[ItemT]], list[ResultT]],
                 max_batch: int = 64, concurrency: int = 1) -> None:
        self.db = db
        self.fn = fn
        self.max_batch = max_batch
        self.concurrency = max(1, concurrency)
        self._pending: list[tuple[ItemT, asyncio.Future[ResultT]]] = []
        self._active = 0  # drainers running (counted down synchronously as each one ends)
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, item: ItemT) -> ResultT:
        future: asyncio.Future[ResultT] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        busy = len(self._pending) >= self.max_batch // 2
        if not self._active or (self._active < self.concurrency and busy):
            self._active += 1
            task = asyncio.create_task(self._drain())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await future

    async def _drain(self) -> None:
        try:
            await self._drain_batches()
        finally:
            # No await between the empty check in the loop and this: an item submitted later
            # finds no drainer only when none is left, and starts one.
            self._active -= 1

    async def _drain_batches(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:self.max_batch], self._pending[self.max_batch:]
            try:
                results = await self.db.run_write(self.fn, [item for item, _ in batch])
            except Exception as exc:  # handed to every caller of the batch
                log.debug("batch of %d rolled back: %r", len(batch), exc)
                for _, future in batch:
                    if not future.done():
                        future.set_exception(BatchFailed(repr(exc)))
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)


def _sqlite_setup(engine: Engine, *, writer: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take BEGIN away from the driver so that we decide how transactions start (below).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a process crash loses nothing committed
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=10000")  # another process (an import) may hold the write lock
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if writer else "BEGIN")


def open_database(url: str, *, schema: str | None = None, pool_size: int = 10) -> Database:
    """Create engines for `url`; `schema` (PostgreSQL only) sets the search_path (used by tests)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            raise ValueError("the customer store needs a SQLite file, not an in-memory database")
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        reader = create_async_engine(url)
        _sqlite_setup(reader.sync_engine, writer=False)
        async_writer = create_async_engine(url, pool_size=1, max_overflow=0, pool_timeout=60)
        _sqlite_setup(async_writer.sync_engine, writer=True)
        # check_same_thread off: the pool is created here but used only by the one writer thread.
        writer = create_engine(parsed.set(drivername="sqlite"), pool_size=1, max_overflow=0,
                               connect_args={"check_same_thread": False})
        _sqlite_setup(writer, writer=True)
        sync_reader = create_engine(parsed.set(drivername="sqlite"), pool_size=READ_THREADS,
                                    max_overflow=0, connect_args={"check_same_thread": False})
        _sqlite_setup(sync_reader, writer=False)
        return Database(url=url, read_engine=reader, read=async_sessionmaker(reader, expire_on_commit=False),
                        write_engine=async_writer,
                        write=async_sessionmaker(async_writer, expire_on_commit=False),
                        sqlite_writer=writer,
                        _executor=ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-writer"),
                        sqlite_reader=sync_reader,
                        _read_executor=ThreadPoolExecutor(max_workers=READ_THREADS,
                                                          thread_name_prefix="sqlite-reader"))
    connect_args: dict[str, Any] = {}
    if schema:
        connect_args["server_settings"] = {"search_path": schema}
    engine = create_async_engine(url, pool_size=pool_size, max_overflow=pool_size, connect_args=connect_args)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    return Database(url=url, read_engine=engine, read=sessions, write_engine=engine, write=sessions)


def _alembic_config(connection: Connection | None = None) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def _upgrade_head(conn: Connection) -> None:
    command.upgrade(_alembic_config(conn), "head")


async def migrate(db: Database) -> None:
    """Bring the schema up to the newest migration (idempotent)."""
    await db.run_write(_upgrade_head)


async def _upgrade(url: str) -> None:
    db = open_database(url)
    try:
        await migrate(db)
    finally:
        await db.dispose()


def upgrade(url: str) -> str:
    """Apply the migrations to the database at `url`; returns the URL without its password."""
    asyncio.run(_upgrade(url))
    return make_url(url).render_as_string(hide_password=True)
