"""PostgreSQL stopped and started again under a running node (a server the test owns).

While it is down: calls are still answered and the IVR serves them (prompt audio, the lookup
finds nothing, the flow hangs up); their history writes wait in memory and are retried; ingest
answers 503 with Retry-After. When it is back, every queued record lands complete and ingest
works again.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.peers.postgres import PgServer, running_postgres
from tests.peers.rtp import RtpEndpoint, heard_audio, rms
from tests.peers.service import RunningService, running_service
from tests.peers.sipp import run_sipp

pytestmark = [pytest.mark.peer, pytest.mark.timeout(240)]

FLOW = """\
description: a short IVR for the database outage test
start: hello
nodes:
  hello:
    say: Hello, you are through to Example Corp.
    next: identify
  identify:
    lookup: caller
    next: bye
  bye:
    hangup: Thank you for calling. Goodbye.
"""
INTERACTION = {"channel": "chat", "direction": "inbound", "started_at": "2026-11-20T10:00:00Z",
               "customer": {"phone": "+15550123"}, "subject": "Where is my parcel?"}


def _records(pg: PgServer) -> list[tuple[str, str]]:
    out = subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(pg.port), "-U", "postgres", "-d", "postgres",
                          "-qAtc", "SELECT status, coalesce(outcome, '') FROM interactions "
                          "WHERE channel = 'voice' ORDER BY started_at"],
                         capture_output=True, text=True, timeout=30, check=False)
    assert out.returncode == 0, out.stderr
    return [tuple(line.split("|")) for line in out.stdout.splitlines() if line]  # type: ignore[misc]


async def _ingest(svc: RunningService) -> tuple[int, dict[str, str], Any]:
    async with aiohttp.ClientSession() as http, http.post(
            f"{svc.http_url}/api/v1/interactions", json=INTERACTION,
            headers={"Authorization": f"Bearer {svc.api_key}"}) as r:
        return r.status, dict(r.headers), await r.json()


def _call(svc: RunningService, media: RtpEndpoint, workdir: Path, calls: int) -> Any:
    return run_sipp("listen_call.xml", svc.sip_address, workdir=workdir, calls=calls, rate=5, limit=calls,
                    service="100", keys={"rtp_port": media.port}, timeout=60)


async def test_calls_are_served_while_postgresql_is_down_and_their_records_land_when_it_is_back(
        tmp_path: Path) -> None:
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "main.yaml").write_text(FLOW)
    with (
        running_postgres() as pg,
        running_service(tmp_path, database={"url": pg.url}, asr={"engine": "none"}, ivr={"flows": flows},
                        node={"id": "solo", "heartbeat_interval": "0.5", "lost_after": "3"},
                        sip={"t1_ms": "100"}) as svc,
        RtpEndpoint() as media,
    ):
        before = await asyncio.to_thread(_call, svc, media, tmp_path / "before", 1)
        assert before.ok, before.describe()
        assert _records(pg) == [("completed", "flow")]

        pg.stop()
        heard = len(media.received)
        during = await asyncio.to_thread(_call, svc, media, tmp_path / "during", 5)
        assert during.ok and during.successful == 5, during.describe()
        assert during.count("BYE") == 5, during.counts  # the IVR ran each flow to its hang-up
        assert rms(heard_audio(media.received[heard:])) > 300  # and its prompts were heard
        status, headers, body = await _ingest(svc)
        assert status == 503 and headers.get("Retry-After") == "5", (status, body)
        assert "database" in body["error"]["message"]
        assert "the write is kept and retried" in svc.log
        assert "heartbeat failed, the database is unavailable" in svc.log

        pg.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            records = _records(pg)
            if len(records) == 6 and all(r == ("completed", "flow") for r in records):
                break
            await asyncio.sleep(0.2)
        assert records == [("completed", "flow")] * 6, records
        deadline = time.monotonic() + 15
        while (status := (await _ingest(svc))[0]) == 503 and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
        assert status == 201, status
        assert "heartbeat reaches the database again" in svc.log
        assert "could not be made" not in svc.log and "history write failed" not in svc.log


async def test_a_node_killed_while_postgresql_is_down_loses_no_record(tmp_path: Path) -> None:
    """The calls' writes wait on the node's spool as well as in memory: kill -9 the node during the
    outage, bring the database back, start the node again: the calls are complete, not interrupted."""
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "main.yaml").write_text(FLOW)
    common: dict[str, Any] = {"asr": {"engine": "none"}, "ivr": {"flows": flows}, "sip": {"t1_ms": "100"},
                              "node": {"id": "solo", "spool": tmp_path / "spool"}}
    with running_postgres() as pg, RtpEndpoint() as media:
        with running_service(tmp_path / "run1", database={"url": pg.url}, **common) as svc:
            pg.stop()
            during = await asyncio.to_thread(_call, svc, media, tmp_path / "during", 3)
            assert during.ok and during.successful == 3, during.describe()
            spool = tmp_path / "spool" / "solo.jsonl"
            deadline = time.monotonic() + 10
            while spool.read_text().count('"call_finished"') < 3 if spool.exists() else True:
                assert time.monotonic() < deadline, "the calls' writes never reached the spool"
                await asyncio.sleep(0.1)
            os.kill(svc.pid, signal.SIGKILL)
        pg.start()
        with running_service(tmp_path / "run2", database={"url": pg.url}, **common) as again:
            assert _records(pg) == [("completed", "flow")] * 3, _records(pg)
            assert "writes kept by the previous run were made" in again.log
            assert "previous run were interrupted" not in again.log
        assert spool.read_text() == ""
