"""Group commit of ingests: a batch gives what the same requests one by one would, on both databases."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from cti import writes
from cti.db import BatchFailed, Database, GroupCommit
from cti.records import IdentityConflict, IngestResult, NewInteraction
from cti.store import CustomerStore

T0 = datetime(2024, 5, 1, 9, 30, tzinfo=UTC)


def item(*identities: tuple[str, str], key: str | None = None, name: str | None = None) -> NewInteraction:
    return NewInteraction(channel="chat", direction="inbound", started_at=T0, identities=list(identities),
                          idempotency_key=key, name=name, content="hello")


def counts(conn: Connection) -> list[int]:
    """Rows in customers, identities, interactions."""
    return [conn.execute(select(func.count()).select_from(t)).scalar_one()
            for t in (writes.CUSTOMERS, writes.IDENTITIES, writes.INTERACTIONS)]


async def test_a_batch_decides_each_item_as_if_alone(db: Database) -> None:
    phone, email, other = ("phone", "+4930123456"), ("email", "a@example.com"), ("phone", "+4930999999")
    first = await db.run_write(writes.ingest, item(other))  # someone who already exists
    batch = [
        item(phone, name=None),                 # new customer
        item(phone, email, name="Alice"),       # same person: email added, name set (was none)
        item(email, key="k1"),                  # found by the email added just before
        item(email, key="k1"),                  # retry inside the same batch: the first result
        item(phone, other),                     # two customers: conflict, nothing written
        item(("account", "A-1"), name="Bob"),   # another new customer
    ]
    results = await db.run_write(writes.ingest_batch, batch)
    r = results
    assert isinstance(r[0], IngestResult) and r[0].customer_created
    alice = r[0].customer_id
    assert isinstance(r[1], IngestResult) and r[1].customer_id == alice and not r[1].customer_created
    assert isinstance(r[2], IngestResult) and r[2].customer_id == alice and r[2].created
    assert r[3] == IngestResult(interaction_id=r[2].interaction_id, customer_id=alice, created=False)
    assert isinstance(r[4], IdentityConflict)
    assert set(r[4].customer_ids) == {r[0].customer_id, first.customer_id}
    assert isinstance(r[5], IngestResult) and r[5].customer_created
    assert await db.run_read(counts) == [3, 4, 5]  # the conflict wrote nothing
    store = CustomerStore(db)
    record = await store.get_customer(alice or "")
    assert record is not None and record["name"] == "Alice" and record["emails"] == ["a@example.com"]
    # A later batch sees the key: still the first result, no duplicate.
    again = await db.run_write(writes.ingest_batch, [item(email, key="k1")])
    assert again == [r[3]]


async def test_concurrent_ingests_share_a_transaction(store: CustomerStore,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    sizes: list[int] = []
    real = store._ingests.fn

    def recording(conn: Connection, items: list[NewInteraction]) -> list[Any]:
        sizes.append(len(items))
        return real(conn, items)

    monkeypatch.setattr(store._ingests, "fn", recording)
    results = await asyncio.gather(*(store.ingest(item(("phone", f"+49301234{i:02d}"))) for i in range(20)))
    assert len({r.interaction_id for r in results}) == 20
    assert sizes == [20]  # all twenty waited on one another's commit, none alone


async def test_a_failed_batch_writes_nothing_and_its_items_are_retried(
        store: CustomerStore, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = store._ingests.fn

    def fails_once_after_writing(conn: Connection, items: list[NewInteraction]) -> list[Any]:
        results = real(conn, items)  # everything inserted...
        calls.append(len(items))
        if len(calls) == 1:
            raise RuntimeError("commit failed")  # ...then the transaction rolls back
        return results

    monkeypatch.setattr(store._ingests, "fn", fails_once_after_writing)
    batch = [item(("phone", "+4930555000"), key=f"k{i}") for i in range(5)]
    results = await asyncio.gather(*(store.ingest(x) for x in batch))
    assert calls == [5, 5]
    assert all(r.created for r in results) and len({r.customer_id for r in results}) == 1
    assert await store.db.run_read(counts) == [1, 1, 5]  # nothing of the failed attempt remains


async def test_conflict_through_the_store_is_raised_for_that_caller_only(store: CustomerStore) -> None:
    a = await store.ingest(item(("phone", "+4930111111")))
    b = await store.ingest(item(("email", "b@example.com")))
    ok, bad = await asyncio.gather(store.ingest(item(("phone", "+4930111111"))),
                                   store.ingest(item(("phone", "+4930111111"), ("email", "b@example.com"))),
                                   return_exceptions=True)
    assert isinstance(ok, IngestResult) and ok.customer_id == a.customer_id
    assert isinstance(bad, IdentityConflict) and set(bad.customer_ids) == {a.customer_id, b.customer_id}


async def test_group_commit_hands_a_failure_to_every_caller_of_the_batch(db: Database) -> None:
    def fn(conn: Connection, items: list[int]) -> list[int]:
        if 13 in items:
            raise ValueError("unlucky")
        return [i * 2 for i in items]

    group = GroupCommit(db, fn, max_batch=3)
    results = await asyncio.gather(*(group.submit(i) for i in (1, 2, 3, 13, 5, 6, 7)), return_exceptions=True)
    # Batches of three in order: [1, 2, 3] [13, 5, 6] [7].
    assert results[:3] == [2, 4, 6] and results[6] == 14
    assert all(isinstance(r, BatchFailed) for r in results[3:6])
    assert await group.submit(4) == 8  # a new drainer starts after the last one finished


class SlowDb:
    """Database.run_write's shape: each batch takes a while, as a round-trip-bound one does."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.most = 0
        self.batches: list[int] = []

    async def run_write(self, fn: Any, items: list[int]) -> list[int]:
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        try:
            await asyncio.sleep(0.02)
            self.batches.append(len(items))
            return fn(None, items)
        finally:
            self.in_flight -= 1


async def test_several_batches_in_flight_when_full_ones_wait_and_no_item_left_behind() -> None:
    db = SlowDb()
    commit: GroupCommit[int, int] = GroupCommit(db, lambda _c, xs: [x * 2 for x in xs],  # type: ignore[arg-type]
                                                max_batch=8, concurrency=3)
    results = await asyncio.gather(*(commit.submit(n) for n in range(100)))
    assert results == [n * 2 for n in range(100)]
    assert db.most == 3 and sum(db.batches) == 100 and max(db.batches) == 8
    # a trickle: one batch at a time, and an item that comes as the last drainer ends still lands
    db.most = 0
    for n in range(5):
        assert await commit.submit(n) == n * 2
    assert db.most == 1 and commit._active == 0
