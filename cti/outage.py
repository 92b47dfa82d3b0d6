"""The database is away: how to tell (`database_unavailable`) and what HTTP clients hear then.

A stopped or restarting PostgreSQL shows up as refused connections, connections the server
closed (admin shutdown), invalidated pooled connections or pool timeouts. Those are worth
retrying later; a constraint violation or a bad query is not. `outage_middleware` turns the
retryable kind into 503 with Retry-After for every HTTP route (ingest included), instead of 500.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator

import asyncpg
from aiohttp import web
from sqlalchemy import exc as sa_exc

RETRY_AFTER = 5  # seconds a client is asked to wait while the database is away

_OUTAGE_WORDS = ("connect", "connection", "server closed", "terminat", "shutdown", "locked",
                 "unable to open", "disk i/o", "timeout")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    item: BaseException | None = exc
    while item is not None and id(item) not in seen:
        seen.add(id(item))
        yield item
        if isinstance(item, sa_exc.DBAPIError) and isinstance(item.orig, BaseException):
            yield item.orig
        item = item.__cause__ or item.__context__


def database_unavailable(exc: BaseException) -> bool:
    """Whether `exc` says the database cannot be reached now (retry later), not that a query is wrong."""
    for item in _chain(exc):
        if isinstance(item, sa_exc.DBAPIError) and item.connection_invalidated:
            return True
        if isinstance(item, (ConnectionError, TimeoutError, asyncio.TimeoutError, sa_exc.TimeoutError,
                             asyncpg.PostgresConnectionError, asyncpg.OperatorInterventionError,
                             asyncpg.ConnectionDoesNotExistError)):
            return True
        if isinstance(item, OSError) and not isinstance(item, (FileNotFoundError, PermissionError)):
            return True
        if isinstance(item, sa_exc.OperationalError) and any(
                word in str(item).lower() for word in _OUTAGE_WORDS):
            return True  # (an OperationalError is also SQLite's "no such table": not worth a retry)
    return False


@web.middleware
async def outage_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """503 + Retry-After while the database is away (any route); every other error passes on."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except Exception as exc:
        if not database_unavailable(exc):
            raise
        return web.json_response(
            {"error": {"status": 503, "field": None,
                       "message": "the database is unavailable; retry later"}},
            status=503, headers={"Retry-After": str(RETRY_AFTER)})
