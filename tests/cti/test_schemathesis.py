"""schemathesis against /api/v1/openapi.json on a real server, both ways: every check (no 5xx,
responses match the document, schema-valid requests accepted, schema-violating ones rejected),
with the few exceptions OpenAPI 3.0 cannot state listed in tests/cti/schemathesis.toml.

The server runs in a thread with its own event loop; schemathesis runs as its own process,
so nothing here shares a loop with pytest-asyncio.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from aiohttp import web

from cti.http import build_api
from tests.cti.conftest import API_KEY, PG_DSN, PG_URL, make_config


class ServerThread:
    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self._ready = threading.Event()
        self._runner = web.AppRunner(app, access_log=None)
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._start())
        self._ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self._runner.cleanup())
        self.loop.close()

    async def _start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def __enter__(self) -> ServerThread:
        self._thread.start()
        assert self._ready.wait(30)
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(30)


def _pg_schema(action: str, schema: str) -> None:
    async def run() -> None:
        conn = await asyncpg.connect(PG_DSN)
        try:
            cascade = " CASCADE" if action.startswith("DROP") else ""
            await conn.execute(f'{action} SCHEMA "{schema}"{cascade}')
        finally:
            await conn.close()

    asyncio.run(run())


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServerThread]:
    if request.param == "sqlite":
        app = build_api(make_config(f"sqlite+aiosqlite:///{tmp_path / 'voice.db'}"))
        with ServerThread(app) as srv:
            yield srv
        return
    schema = f"cti_fuzz_{uuid.uuid4().hex[:12]}"
    _pg_schema("CREATE", schema)
    try:
        with ServerThread(build_api(make_config(PG_URL), schema=schema)) as srv:
            yield srv
    finally:
        _pg_schema("DROP", schema)


CONFIG = Path(__file__).with_name("schemathesis.toml")


@pytest.mark.timeout(300)
def test_the_server_and_its_openapi_document_agree(server: ServerThread, tmp_path: Path) -> None:
    base = f"http://127.0.0.1:{server.port}"
    report = tmp_path / "report.json"
    proc = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "--config-file", str(CONFIG), "run",
         f"{base}/api/v1/openapi.json",
         "--checks", "all", "--max-examples", "25", "--seed", "1",
         "--phases", "examples,coverage,fuzzing", "--workers", "2", "--generation-database", "none",
         "--header", f"Authorization: Bearer {API_KEY}", "--no-color",
         "--report", "json", "--report-json-path", str(report)],
        capture_output=True, text=True, timeout=280, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    data = json.loads(report.read_text())
    assert data["operations"]["tested"] == data["operations"]["total"] - 1 == 25  # all but the websocket
    assert data["test_cases"]["generated"] > 1000 and data["failures"] == [] and data["errors"] == []


def test_every_route_is_in_the_document(tmp_path: Path) -> None:
    app = build_api(make_config(f"sqlite+aiosqlite:///{tmp_path / 'voice.db'}"))
    from cti.openapi import openapi_document

    documented = {(path, method.upper()) for path, ops in openapi_document(("voice",))["paths"].items()
                  for method in ops}
    served = {(r.resource.canonical, r.method) for r in app.router.routes()
              if r.resource is not None and r.method != "HEAD"
              and r.resource.canonical.startswith(("/api/v1", "/metrics", "/healthz", "/readyz"))}
    assert served - documented == set()
    assert documented - served == set()
