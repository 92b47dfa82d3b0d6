"""What an operator's tools ask the service: `/metrics`, `/healthz`, `/readyz` (no API key).

- `/healthz`: the process answers HTTP (liveness). Always 200 while the loop runs.
- `/readyz`: every registered readiness check passes (database reachable; the service adds SIP
  listening and speech workers ready); 503 naming each failing check otherwise.
- `/metrics`: cti.metrics in the Prometheus text format.

Checks are named callables registered on the application: `add_readiness_check(app, name, fn)`;
`fn()` (sync or async) returns None or True when ready, or a string (the reason) / False when not;
raising counts as not ready with the exception as the reason. Each check gets READY_TIMEOUT s.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import web
from sqlalchemy import text
from sqlalchemy.engine import Connection

from cti import metrics
from cti.http import DATABASE_KEY, PREFIX, Handler, json_response
from cti.web.keys import DESK_KEY

READY_TIMEOUT = 2.0
ReadinessCheck = Callable[[], Any]


class Readiness:
    """Named readiness checks, run together by /readyz."""

    def __init__(self) -> None:
        self.checks: dict[str, ReadinessCheck] = {}

    def add(self, name: str, check: ReadinessCheck) -> None:
        self.checks[name] = check

    async def run(self) -> dict[str, str | None]:
        """{name: None when ready, else the reason}."""
        names = list(self.checks)
        results = await asyncio.gather(*(self._one(self.checks[n]) for n in names))
        return dict(zip(names, results, strict=True))

    @staticmethod
    async def _one(check: ReadinessCheck) -> str | None:
        try:
            result = check()
            if inspect.isawaitable(result):
                result = await asyncio.wait_for(_awaited(result), READY_TIMEOUT)
        except TimeoutError:
            return f"no answer within {READY_TIMEOUT:g} s"
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"[:300]
        if result is None or result is True:
            return None
        return "not ready" if result is False else str(result)


async def _awaited(value: Awaitable[Any]) -> Any:
    return await value


READINESS_KEY = web.AppKey("ops_readiness", Readiness)


def add_readiness_check(app: web.Application, name: str, check: ReadinessCheck) -> None:
    """Register a readiness input for /readyz (e.g. "sip", "speech"); the service calls this."""
    app[READINESS_KEY].add(name, check)


def _select_one(conn: Connection) -> int:
    return int(conn.execute(text("SELECT 1")).scalar_one())


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    results = await request.app[READINESS_KEY].run()
    failing = {name: reason for name, reason in results.items() if reason is not None}
    body = {"status": "not ready" if failing else "ready",
            "checks": {name: ("ok" if reason is None else reason) for name, reason in results.items()}}
    return json_response(body, status=503 if failing else 200)


async def metrics_page(request: web.Request) -> web.Response:
    # On the loop, not in a thread: the collectors read the desk, which only the loop may touch
    # (a scrape renders a few hundred samples in about a millisecond).
    body = metrics.render()
    return web.Response(body=body, headers={"Content-Type": metrics.CONTENT_TYPE})


def _route_label(request: web.Request) -> str:
    route = request.match_info.route
    resource = route.resource if route is not None else None
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Counts every request by route template (never the raw path: ids would make new series)."""
    start = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        seconds = time.perf_counter() - start
        route = _route_label(request)
        if route != "/metrics":
            metrics.HTTP_REQUESTS.labels(route, request.method, metrics.status_class(status)).inc()
            metrics.HTTP_LATENCY.labels(route, request.method).observe(seconds)
            if route == f"{PREFIX}/interactions" and request.method == "POST":
                metrics.INGEST_REQUESTS.labels(metrics.status_class(status)).inc()
                metrics.INGEST_LATENCY.observe(seconds)


def desk_snapshot(desk: Any) -> dict[str, Any]:
    """Queue lengths, longest current wait per queue and agents, for the DeskCollector."""
    snap = desk.snapshot()
    now = desk.clock()
    longest: dict[str, float] = {}
    for waiting in desk.engine.waiting():
        longest[waiting.queue] = max(longest.get(waiting.queue, 0.0), now - waiting.arrived)
    return {"queues": snap["queues"], "longest_wait": longest, "agents": snap["agents"]}


def _count_database_errors(db: Any) -> None:
    from sqlalchemy import event

    def on_error(context: Any) -> None:
        kind = type(context.sqlalchemy_exception).__name__ if context.sqlalchemy_exception else "other"
        metrics.database_error(kind)

    engines = {id(e): e for e in (db.read_engine.sync_engine, db.write_engine.sync_engine,
                                  db.sqlite_writer, db.sqlite_reader) if e is not None}
    for engine in engines.values():
        event.listen(engine, "handle_error", on_error)


def setup(app: web.Application) -> None:
    """Add /metrics, /healthz and /readyz, the request metrics, and the database readiness check."""
    app[READINESS_KEY] = Readiness()
    app.middlewares.insert(0, metrics_middleware)

    async def ops_ctx(app: web.Application) -> AsyncIterator[None]:
        # Runs after the database and desk contexts (appended after them).
        db = app[DATABASE_KEY]
        _count_database_errors(db)

        async def database() -> None:
            await db.run_read(_select_one)

        add_readiness_check(app, "database", database)
        desk = app.get(DESK_KEY)
        if desk is not None:
            metrics.add_desk(id(app), lambda: desk_snapshot(desk))
        try:
            yield
        finally:
            metrics.remove_desk(id(app))

    app.cleanup_ctx.append(ops_ctx)
    from cti.web import wallboard

    wallboard.setup(app)
    app.router.add_get("/metrics", metrics_page)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
