"""Records under a burst: every call sipp saw answered must leave exactly one interaction.

    .venv/bin/python benchmarks/call_records.py --calls 5000 --rate 300

Starts the service (SQLite by default, `--db postgres` for the machine's PostgreSQL) with keys-only
speech, floods it with sipp's built-in UAC (INVITE, ACK and BYE at once, no pause: the BYE races
the answer path), then counts: calls sipp saw answered (200 to its INVITE), calls it completed,
voice interactions in the database, distinct keys and Call-IDs among them, and how many are still
in progress. Prints one JSON object. Bounded: `--calls` calls at `--rate` per second, at most
`--limit` at once, sipp stops after `--timeout` seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.peers import free_port
from tests.peers.service import running_service
from tests.peers.sipp import run_sipp

PG_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"


def rows_sqlite(db: Path) -> list[tuple[str, str, str]]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT idempotency_key, call_id, status FROM interactions "
                            "WHERE channel = 'voice'").fetchall()


def rows_postgres(node: str) -> list[tuple[str, str, str]]:
    import asyncio

    import asyncpg

    async def read() -> list[tuple[str, str, str]]:
        conn = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/test")
        try:
            records = await conn.fetch(
                "SELECT idempotency_key, call_id, status FROM interactions "
                "WHERE channel = 'voice' AND idempotency_key LIKE $1", f"call:{node}:%")
            return [(r[0], r[1], r[2]) for r in records]
        finally:
            await conn.close()

    return asyncio.run(read())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--rate", type=int, default=200)
    ap.add_argument("--limit", type=int, default=100, help="most calls at once (sipp -l)")
    ap.add_argument("--timeout", type=float, default=180.0)
    ap.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    args = ap.parse_args()
    node = f"bench-{os.getpid()}"
    with tempfile.TemporaryDirectory(prefix="call-records-") as tmp:
        workdir = Path(tmp)
        # sipp is one source: exempt loopback from the per-source INVITE rate ([throttle])
        sections: dict[str, dict[str, object]] = {"asr": {"engine": "none"}, "node": {"id": node},
                                                  "sip": {"max_calls": 100000}, "log": {"level": "warning"},
                                                  "throttle": {"exempt": "127.0.0.0/8"}}
        if args.db == "postgres":
            sections["database"] = {"url": PG_URL}
        with running_service(workdir, rtp_pairs=args.limit + 20, **sections) as svc:
            load0 = os.getloadavg()
            started = time.monotonic()
            result = run_sipp("uac", svc.sip_address, workdir=workdir / "sipp", calls=args.calls,
                              rate=args.rate, limit=args.limit, timeout=args.timeout, service="100",
                              media_port=free_port(tcp=False, count=8))
            sipp_s = time.monotonic() - started
            read = (lambda: rows_postgres(node)) if args.db == "postgres" else (
                lambda: rows_sqlite(svc.workdir / "voice.db"))
            deadline = time.monotonic() + 60
            rows = read()
            while time.monotonic() < deadline and any(r[2] == "in_progress" for r in rows):
                time.sleep(0.5)
                rows = read()
            load1 = os.getloadavg()
        report: dict[str, Any] = {
            "calls": args.calls, "rate": args.rate, "limit": args.limit, "db": args.db,
            "sipp_seconds": round(sipp_s, 1), "sipp_created": result.created,
            "answered": result.counts.get("4_200_Recv", 0), "completed_by_sipp": result.successful,
            "failed_by_sipp": result.failed, "failures": result.failures,
            "records": len(rows), "distinct_keys": len({r[0] for r in rows}),
            "distinct_call_ids": len({r[1] for r in rows}),
            "in_progress": sum(1 for r in rows if r[2] == "in_progress"),
            "loadavg_before": [round(x, 2) for x in load0], "loadavg_after": [round(x, 2) for x in load1],
        }
        report["records_match_answered"] = report["records"] == report["answered"] == report["distinct_keys"]
        print(json.dumps(report, indent=2))
        return 0 if report["records_match_answered"] else 1


if __name__ == "__main__":
    sys.exit(main())
