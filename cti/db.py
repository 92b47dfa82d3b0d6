"""Engines, sessions and migrations for the customer store (SQLite or PostgreSQL, same code).

SQLite allows one writer at a time. Writes go through a separate one-connection engine whose
transactions start with BEGIN IMMEDIATE, so writers queue in-process instead of failing with
"database is locked" halfway through; reads use a pool of their own and never wait for writes
(WAL mode).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"


@dataclass
class Database:
    """The engines and session factories of one database."""

    url: str
    read_engine: AsyncEngine
    write_engine: AsyncEngine
    read: async_sessionmaker[AsyncSession]
    write: async_sessionmaker[AsyncSession]

    @property
    def dialect(self) -> str:
        return self.write_engine.dialect.name

    async def dispose(self) -> None:
        await self.read_engine.dispose()
        if self.write_engine is not self.read_engine:
            await self.write_engine.dispose()


def _sqlite_engine(url: str, *, writer: bool) -> AsyncEngine:
    kwargs: dict[str, Any] = {"pool_size": 1, "max_overflow": 0, "pool_timeout": 60} if writer else {}
    engine = create_async_engine(url, **kwargs)

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take BEGIN away from the driver so that we decide how transactions start (below).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across crashes of the process
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=10000")  # another process (an import) may hold the write lock
        cur.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if writer else "BEGIN")

    return engine


def open_database(url: str, *, schema: str | None = None, pool_size: int = 10) -> Database:
    """Create engines for `url`; `schema` (PostgreSQL only) sets the search_path (used by tests)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        writer = _sqlite_engine(url, writer=True)
        reader = _sqlite_engine(url, writer=False)
    else:
        connect_args: dict[str, Any] = {}
        if schema:
            connect_args["server_settings"] = {"search_path": schema}
        writer = reader = create_async_engine(
            url, pool_size=pool_size, max_overflow=pool_size, connect_args=connect_args
        )
    return Database(
        url=url,
        read_engine=reader,
        write_engine=writer,
        read=async_sessionmaker(reader, expire_on_commit=False),
        write=async_sessionmaker(writer, expire_on_commit=False),
    )


def _alembic_config(connection: Connection | None = None) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


async def migrate(db: Database) -> None:
    """Bring the schema up to the newest migration (idempotent)."""

    def run(sync_conn: Connection) -> None:
        command.upgrade(_alembic_config(sync_conn), "head")

    async with db.write_engine.begin() as conn:
        await conn.run_sync(run)


async def _upgrade(url: str) -> None:
    db = open_database(url)
    try:
        await migrate(db)
    finally:
        await db.dispose()


def upgrade_main(args: argparse.Namespace) -> int:
    """`voice db upgrade [--config FILE]`: apply the migrations to the configured database."""
    from voice.config import ConfigError, load_config

    try:
        config = load_config(getattr(args, "config", None))
    except ConfigError as exc:
        print(f"error: {exc}")
        return 2
    url = config.database.url
    asyncio.run(_upgrade(url))
    print(f"database is up to date: {make_url(url).render_as_string(hide_password=True)}")
    return 0
