"""Fixtures for the customer store: every test runs on SQLite and on PostgreSQL.

PostgreSQL tests get a schema of their own (dropped afterwards), so concurrent runs and
other helpers' tests never see each other's rows.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from cti.db import Database, migrate, open_database
from cti.http import STORE_KEY, build_api
from cti.store import CustomerStore
from voice.config import Config, CtiConfig, DatabaseConfig, HttpConfig

PG_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"
API_KEY = "test-key-0123456789abcdef"
MAX_BODY = 64 * 1024


@dataclass
class Target:
    name: str
    url: str
    schema: str | None


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def target(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Target]:
    if request.param == "sqlite":
        yield Target("sqlite", f"sqlite+aiosqlite:///{tmp_path / 'data' / 'voice.db'}", None)
        return
    schema = f"cti_test_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(PG_DSN)
    try:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
        yield Target("postgres", PG_URL, schema)
    finally:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()


def make_config(url: str, **http: Any) -> Config:
    http.setdefault("api_keys", (API_KEY,))
    http.setdefault("max_body", MAX_BODY)
    return Config(http=HttpConfig(**http), database=DatabaseConfig(url=url),
                  cti=CtiConfig(default_country="DE", recent_interactions=5))


@pytest.fixture
async def db(target: Target) -> AsyncIterator[Database]:
    database = open_database(target.url, schema=target.schema)
    await migrate(database)
    yield database
    await database.dispose()


@pytest.fixture
async def store(db: Database) -> CustomerStore:
    return CustomerStore(db, default_country="DE")


class Api:
    """A test client that sends the API key unless told otherwise."""

    def __init__(self, client: TestClient[Any, Any]) -> None:
        self.client = client
        self.headers = {"Authorization": f"Bearer {API_KEY}"}

    @property
    def store(self) -> CustomerStore:
        return self.client.server.app[STORE_KEY]  # type: ignore[union-attr]

    async def call(self, method: str, path: str, *, json: Any = None, data: Any = None,
                   params: Any = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        resp = await self.client.request(method, path, json=json, data=data, params=params,
                                         headers=self.headers if headers is None else headers)
        assert resp.content_type == "application/json", await resp.text()
        return resp.status, await resp.json()


@pytest.fixture
async def api(target: Target) -> AsyncIterator[Api]:
    app = build_api(make_config(target.url), schema=target.schema)
    client = TestClient(TestServer(app, host="127.0.0.1", port=0))
    await client.start_server()
    try:
        yield Api(client)
    finally:
        await client.close()
