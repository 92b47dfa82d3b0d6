"""The call recorder while the database is away: writes wait and are retried, in order per call,
a bounded number of calls queue, and everything queued lands when the database is back."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from voice.callcontrol import records
from voice.callcontrol.lifecycle import CallAnswered, CallFinished, CallIdentified
from voice.callcontrol.records import CallRecorder
from voice.callcontrol.spool import WriteSpool


@dataclass
class Info:
    call_id: str
    caller: str = "+15550100"
    caller_name: str | None = None
    dialled: str = "100"
    started_at: float = 1_700_000_000.0


@dataclass
class FakeCall:
    key: str
    info: Info
    interaction_id: str | None = None
    customer_id: str | None = None
    transcript: list[Any] = field(default_factory=list)


class FlakyHistory:
    """CallHistory's three writes; refuses connections while `down`."""

    def __init__(self) -> None:
        self.down = False
        self.writes: list[tuple[str, str]] = []
        self.refused = 0

    def _check(self) -> None:
        if self.down:
            self.refused += 1
            raise ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5432)")

    async def call_started(self, *, key: str, **_: Any) -> str:
        self._check()
        self.writes.append(("started", key))
        return f"i-{key}"

    async def call_identified(self, interaction_id: str, **_: Any) -> None:
        self._check()
        self.writes.append(("identified", interaction_id))

    async def call_finished(self, interaction_id: str, **_: Any) -> None:
        self._check()
        self.writes.append(("finished", interaction_id))


def _call(n: int) -> FakeCall:
    return FakeCall(key=f"node:c{n};a;b", info=Info(call_id=f"c{n}"))


async def test_writes_wait_for_the_database_and_land_in_order_when_it_returns(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(records, "RETRY_FIRST", 0.01)
    monkeypatch.setattr(records, "RETRY_MAX", 0.02)
    history = FlakyHistory()
    recorder = CallRecorder(history, max_queued=3)  # type: ignore[arg-type]
    history.down = True
    calls = [_call(n) for n in range(5)]
    for call in calls:
        recorder(CallAnswered(call=call, node="node"))  # type: ignore[arg-type]
    for call in calls[:3]:
        recorder(CallIdentified(call=call, customer_id="cust", by="caller_id"))  # type: ignore[arg-type]
        recorder(CallFinished(call=call, cause="bye"))  # type: ignore[arg-type]
    for call in calls[3:]:  # beyond the bound: dropped, with everything that follows for them
        recorder(CallFinished(call=call, cause="bye"))  # type: ignore[arg-type]
    await asyncio.sleep(0.1)
    assert history.writes == [] and history.refused >= 3
    assert recorder.degraded and recorder.queued == 3 and recorder.dropped == 2

    history.down = False
    await recorder.aclose(timeout=5)
    assert not recorder.degraded and recorder.queued == 0
    for call in calls[:3]:
        mine = [w for w in history.writes if call.key in w[1]]
        assert mine == [("started", call.key), ("identified", f"i-{call.key}"), ("finished", f"i-{call.key}")]
    assert not [w for w in history.writes if any(c.key in w[1] for c in calls[3:])]


async def test_a_write_that_is_wrong_is_not_retried() -> None:
    class Broken(FlakyHistory):
        async def call_started(self, *, key: str, **_: Any) -> str:
            raise ValueError("bad row")

    history = Broken()
    recorder = CallRecorder(history)  # type: ignore[arg-type]
    call = _call(1)
    recorder(CallAnswered(call=call, node="node"))  # type: ignore[arg-type]
    recorder(CallFinished(call=call, cause="bye"))  # type: ignore[arg-type]
    await recorder.aclose(timeout=2)
    assert not recorder.degraded and recorder.queued == 0 and history.writes == []


async def test_writes_kept_on_the_spool_survive_a_killed_node_and_land_once_at_the_next_start(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Database away, calls answered, identified and ended, then the node dies (no aclose): the
    spool holds their writes; the next run's recorder replays them, in order, once."""
    monkeypatch.setattr(records, "RETRY_FIRST", 0.01)
    monkeypatch.setattr(records, "RETRY_MAX", 0.02)
    path = tmp_path / "spool" / "node.jsonl"
    history = FlakyHistory()
    history.down = True
    dead = CallRecorder(history, spool=WriteSpool(path))  # type: ignore[arg-type]
    calls = [_call(n) for n in range(3)]
    for call in calls:
        dead(CallAnswered(call=call, node="node"))  # type: ignore[arg-type]
    await asyncio.sleep(0.05)  # the creates fail: from here on every write goes to disk first
    for call in calls:
        dead(CallIdentified(call=call, customer_id="cust", by="caller_id"))  # type: ignore[arg-type]
        dead(CallFinished(call=call, cause="bye"))  # type: ignore[arg-type]
    assert dead.spool is not None and dead.spool.flush(5) and dead.spool.outstanding == 9
    for task in dead.pending:  # kill -9: the process is gone with what it had in memory
        task.cancel()
    await asyncio.sleep(0)

    history.down = False
    spool = WriteSpool(path)
    assert [w.method for w in spool.load()] == ["call_started"] * 3 + ["call_identified", "call_finished"] * 3
    fresh = CallRecorder(history, spool=WriteSpool(path))  # type: ignore[arg-type]
    assert await fresh.replay(timeout=5) == 9
    for call in calls:
        mine = [w for w in history.writes if call.key in w[1]]
        assert mine == [("started", call.key), ("identified", f"i-{call.key}"), ("finished", f"i-{call.key}")]
    assert fresh.spool is not None and fresh.spool.flush(5)
    assert path.read_text() == "" and WriteSpool(path).load() == []  # emptied once all were made
    assert await CallRecorder(history, spool=WriteSpool(path)).replay() == 0  # type: ignore[arg-type]
    assert len(history.writes) == 9


async def test_a_healthy_database_leaves_the_spool_empty_and_a_torn_line_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "node.jsonl"
    history = FlakyHistory()
    recorder = CallRecorder(history, spool=WriteSpool(path))  # type: ignore[arg-type]
    call = _call(1)
    recorder(CallAnswered(call=call, node="node"))  # type: ignore[arg-type]
    recorder(CallFinished(call=call, cause="bye"))  # type: ignore[arg-type]
    await recorder.aclose(timeout=2)
    assert history.writes == [("started", call.key), ("finished", f"i-{call.key}")]
    assert not path.exists() or path.read_text() == ""  # nothing had to wait: nothing written

    path.write_text('{"seq":1,"key":"k","method":"call_started","kwargs":{"started_at":'
                    '{"$datetime":"2026-12-01T10:00:00+00:00"}}}\n{"seq":2,"key":"k","meth')
    kept = WriteSpool(path).load()
    assert [(w.seq, w.method) for w in kept] == [(1, "call_started")]
    assert kept[0].kwargs["started_at"] == datetime(2026, 12, 1, 10, tzinfo=UTC)
