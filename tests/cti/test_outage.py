"""Telling a database outage (retry later, 503) from a query that is wrong (never retried)."""

from __future__ import annotations

import asyncpg
import pytest
from sqlalchemy import exc as sa_exc

from cti.outage import database_unavailable


def _wrapped(inner: BaseException) -> BaseException:
    try:
        try:
            raise inner
        except BaseException as cause:
            raise RuntimeError("while writing") from cause
    except RuntimeError as outer:
        return outer


@pytest.mark.parametrize("exc", [
    ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5432)"),
    asyncpg.AdminShutdownError("terminating connection due to administrator command"),
    asyncpg.CannotConnectNowError("the database system is starting up"),
    asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
    sa_exc.OperationalError("SELECT 1", {}, Exception("database is locked")),
    sa_exc.TimeoutError("QueuePool limit reached, connection timed out"),
    TimeoutError(),
])
def test_outages_are_recognised_also_when_wrapped(exc: BaseException) -> None:
    assert database_unavailable(exc)
    assert database_unavailable(_wrapped(exc))


@pytest.mark.parametrize("exc", [
    ValueError("bad value"),
    sa_exc.IntegrityError("INSERT", {}, Exception("duplicate key")),
    sa_exc.OperationalError("SELECT", {}, Exception("no such table: interactions")),
    FileNotFoundError("recordings/x.wav"),
    KeyError("customer"),
])
def test_wrong_queries_and_other_errors_are_not_outages(exc: BaseException) -> None:
    assert not database_unavailable(exc)
    assert not database_unavailable(_wrapped(exc))
