"""Benchmark of the customer store's HTTP API: ingest throughput and timeline read latency.

    .venv/bin/python benchmarks/ingest.py [--db sqlite|postgres|both] [--requests 10000]
        [--concurrency 32] [--rows 1000000] [--workers 1] [--client-procs 1]

For each database: a fresh store served by `--workers` server processes (the service runs one),
`--concurrency` keep-alive HTTP/1.1 connections post interactions (several channels, returning
and new customers, some retries with an idempotency key) and report interactions/s with p50/p99
latency, and the CPU time per request of the server processes and of the client. The client is
a lean asyncio protocol with the bodies serialized beforehand: it shares the CPUs with the
server, and aiohttp's client cost about as much CPU per request as the server itself.
Then `--rows` interactions are bulk-inserted (core executemany on SQLite, COPY on PostgreSQL)
and timelines are read over HTTP: first pages and deep pages (by cursor), p50/p99.
Targets (issue 5): 2,000/s SQLite, 5,000/s PostgreSQL, p99 < 50 ms; timeline p99 < 20 ms.
Measured figures: benchmarks/RESULTS-ingest.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cti.db import migrate, open_database  # noqa: E402

PG_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"
KEY = "bench-key-0123456789abcdef"
CHANNELS = ["voice", "chat", "email", "sms", "web", "social"]


# -- server side --------------------------------------------------------------------------------

def serve(url: str, schema: str | None, port: int) -> None:
    from aiohttp import web

    from cti.http import build_api
    from voice.config import Config, DatabaseConfig, HttpConfig

    config = Config(http=HttpConfig(api_keys=(KEY,)), database=DatabaseConfig(url=url))
    app = build_api(config, schema=schema or None)

    async def run() -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, reuse_port=True).start()
        print("listening", flush=True)  # start_servers waits for this line from each process
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_ready(port: int) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(300):
            try:
                async with http.get(f"http://127.0.0.1:{port}/api/v1/openapi.json") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError("server did not start")


def start_servers(url: str, schema: str | None, workers: int) -> tuple[list[subprocess.Popen[bytes]], int]:
    """`workers` processes on one SO_REUSEPORT port, each listening before the next starts (the
    first runs the migrations). Waiting for the port to answer is not enough past the first: it
    answers from the first process, and clients that connect before the others listen all stay
    on it (before 2026-12-01 20:30 UTC `--workers 2` could run on one process)."""
    port = free_port()
    procs = []
    for _ in range(workers):
        proc = subprocess.Popen([sys.executable, __file__, "serve", "--url", url, "--schema",
                                 schema or "", "--port", str(port)], cwd=ROOT, stdout=subprocess.PIPE)
        procs.append(proc)
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != b"listening":
            raise RuntimeError("an API server process did not start")
    asyncio.run(wait_ready(port))
    return procs, port


def cpu_seconds(procs: list[subprocess.Popen[bytes]]) -> float:
    """User+system CPU time of the server processes so far (Linux /proc)."""
    total = 0
    for p in procs:
        fields = Path(f"/proc/{p.pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def stop_servers(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        p.wait(30)


# -- load ---------------------------------------------------------------------------------------

def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] * 1000


def payload(i: int, rnd: random.Random) -> dict[str, Any]:
    person = rnd.randrange(2000)
    customer: dict[str, Any] = ({"phone": f"+1555{person:07d}"} if rnd.random() < 0.6
                                else {"email": f"user{person}@example.com"})
    if rnd.random() < 0.1:
        customer = {"phone": f"+1666{i:07d}", "name": f"New {i}"}  # a first-time contact
    body: dict[str, Any] = {
        "channel": rnd.choice(CHANNELS), "direction": "inbound",
        "started_at": (datetime(2024, 1, 1, tzinfo=UTC) + timedelta(seconds=i)).isoformat(),
        "customer": customer, "subject": f"message {i}", "content": "x" * rnd.randrange(50, 500),
    }
    if i % 3 == 0:
        body["idempotency_key"] = f"bench-{i}"
    return body


def ingest_work(requests: int) -> list[bytes]:
    """The JSON bodies to post, in order; 5% are retries of earlier keyed requests."""
    rnd = random.Random(1)
    bodies = [payload(i, rnd) for i in range(requests)]
    # Retries must come back 200 with the first result, not make duplicates.
    retries = [bodies[i] for i in range(0, requests, 3)][: requests // 20]
    return [json.dumps(b).encode() for b in bodies + retries]


class HttpConnection(asyncio.Protocol):
    """A minimal HTTP/1.1 keep-alive client connection, one request at a time.

    The client shares the machine's CPUs with the server; aiohttp's client spends about as much
    CPU per request as the server does, so the load comes from this lean one instead.
    """

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0 or self.waiter is None:
            return
        head = bytes(self.buffer[:end]).decode("latin-1").lower()
        length = int(head.split("content-length:", 1)[1].split("\r\n", 1)[0])
        if len(self.buffer) >= end + 4 + length:
            status = int(head[9:12])
            body = bytes(self.buffer[end + 4:end + 4 + length])
            del self.buffer[:end + 4 + length]
            self.waiter.set_result((status, body))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError(f"server closed the connection: {exc}"))

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(raw)
        return await self.waiter


async def ingest_load(port: int, bodies: list[bytes], concurrency: int) -> dict[str, Any]:
    """Post `bodies` from `concurrency` keep-alive connections; latencies in seconds."""
    head = (f"POST /api/v1/interactions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Authorization: Bearer {KEY}\r\nContent-Type: application/json\r\n").encode()
    work = [head + b"Content-Length: %d\r\n\r\n" % len(b) + b for b in bodies]
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    queue = iter(work)
    loop = asyncio.get_running_loop()
    conns = [(await loop.create_connection(HttpConnection, "127.0.0.1", port))[1] for _ in range(concurrency)]

    async def client(conn: HttpConnection) -> None:
        for raw in queue:
            t0 = time.perf_counter()
            status, body = await conn.request(raw)
            latencies.append(time.perf_counter() - t0)
            statuses[status] = statuses.get(status, 0) + 1
            if status not in (200, 201):
                print(f"unexpected {status}: {body[:300]!r}", file=sys.stderr)

    cpu0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(client(c) for c in conns))
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    for c in conns:
        assert c.transport is not None
        c.transport.close()
    return {"latencies": latencies, "statuses": statuses, "elapsed": elapsed, "cpu": cpu}


def ingest_client_process(port: int, bodies: list[bytes], concurrency: int) -> dict[str, Any]:
    return asyncio.run(ingest_load(port, bodies, concurrency))


def run_ingest(port: int, requests: int, concurrency: int, client_procs: int) -> dict[str, float]:
    """The load from `client_procs` processes (1: this one), each with its share of connections."""
    work = ingest_work(requests)
    t0 = time.perf_counter()
    if client_procs == 1:
        parts = [ingest_client_process(port, work, concurrency)]
    else:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(client_procs) as pool:
            # Each process takes every n-th body; keyed retries still follow their first request.
            share = concurrency // client_procs
            jobs = [pool.submit(ingest_client_process, port, work[i::client_procs], share)
                    for i in range(client_procs)]
            parts = [j.result() for j in jobs]
    elapsed = max(p["elapsed"] for p in parts) if client_procs == 1 else time.perf_counter() - t0
    latencies = [x for p in parts for x in p["latencies"]]
    statuses: dict[int, int] = {}
    for p in parts:
        for k, v in p["statuses"].items():
            statuses[k] = statuses.get(k, 0) + v
    return {"requests": len(work), "per_s": len(work) / elapsed, "p50_ms": pct(latencies, 0.5),
            "p99_ms": pct(latencies, 0.99), "ok": statuses.get(201, 0), "retried": statuses.get(200, 0),
            "other": sum(v for k, v in statuses.items() if k not in (200, 201)),
            "client_cpu_ms": sum(p["cpu"] for p in parts) / len(work) * 1000}


# -- bulk rows and timelines ----------------------------------------------------------------------

async def bulk_insert(url: str, schema: str | None, rows: int) -> tuple[list[str], str, float]:
    """`rows` interactions: one heavy customer (10%), the rest over 10,000 customers."""
    db = open_database(url, schema=schema)
    t0 = time.perf_counter()
    customers = [str(uuid.uuid4()) for _ in range(10_000)]
    heavy = customers[0]
    now = datetime.now(UTC)
    base = datetime(2020, 1, 1, tzinfo=UTC)
    rnd = random.Random(2)
    try:
        await migrate(db)
        if db.dialect == "postgresql":
            import asyncpg

            conn = await asyncpg.connect(PG_DSN, server_settings={"search_path": schema or "public"})
            try:
                await conn.copy_records_to_table(
                    "customers", columns=["id", "name", "attributes", "created_at", "updated_at"],
                    records=[(c, f"bulk {i}", "{}", now, now) for i, c in enumerate(customers)])
                chunk = 100_000
                for start in range(0, rows, chunk):
                    recs = []
                    for i in range(start, min(rows, start + chunk)):
                        cust = heavy if i % 10 == 0 else customers[rnd.randrange(1, len(customers))]
                        recs.append((str(uuid.uuid4()), cust, CHANNELS[i % 6], "inbound", "completed",
                                     base + timedelta(seconds=i * 7), f"bulk {i}", "{}", now))
                    await conn.copy_records_to_table(
                        "interactions", records=recs,
                        columns=["id", "customer_id", "channel", "direction", "status", "started_at",
                                 "subject", "metadata", "created_at"])
                await conn.execute("ANALYZE interactions")
            finally:
                await conn.close()
        else:
            from sqlalchemy import insert, text

            from cti.models import Customer, Interaction

            async with db.write() as s, s.begin():
                await s.execute(insert(Customer), [
                    {"id": c, "name": f"bulk {i}", "attributes": {}, "created_at": now, "updated_at": now}
                    for i, c in enumerate(customers)])
            chunk = 50_000
            for start in range(0, rows, chunk):
                recs = []
                for i in range(start, min(rows, start + chunk)):
                    cust = heavy if i % 10 == 0 else customers[rnd.randrange(1, len(customers))]
                    recs.append({"id": str(uuid.uuid4()), "customer_id": cust, "channel": CHANNELS[i % 6],
                                 "direction": "inbound", "status": "completed",
                                 "started_at": base + timedelta(seconds=i * 7), "subject": f"bulk {i}",
                                 "meta": {}, "created_at": now})
                async with db.write() as s, s.begin():
                    await s.execute(insert(Interaction), recs)
            async with db.write() as s, s.begin():
                await s.execute(text("ANALYZE"))
    finally:
        await db.dispose()
    return customers, heavy, time.perf_counter() - t0


async def timeline_load(port: int, customers: list[str], heavy: str, reads: int,
                        concurrency: int) -> dict[str, float]:
    base = "/api/v1/customers"
    rnd = random.Random(3)
    first: list[float] = []
    deep: list[float] = []
    loop = asyncio.get_running_loop()
    conns = [(await loop.create_connection(HttpConnection, "127.0.0.1", port))[1] for _ in range(concurrency)]

    async def get(conn: HttpConnection, path: str) -> Any:
        status, body = await conn.request(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {KEY}\r\n\r\n".encode())
        data = json.loads(body)
        assert status == 200 and data["interactions"], data
        return data

    # a cursor 50 pages (of 200) deep into the heavy customer's history
    cursor = None
    for _ in range(50):
        query = "limit=200" + (f"&cursor={cursor}" if cursor else "")
        cursor = (await get(conns[0], f"{base}/{heavy}/interactions?{query}"))["next_cursor"]
    jobs = iter(range(reads))

    async def client(conn: HttpConnection) -> None:
        for n in jobs:
            who = heavy if n % 5 == 0 else rnd.choice(customers[1:])
            query, sink = "limit=20", first
            if n % 10 == 5 and cursor:
                who, query, sink = heavy, f"limit=20&cursor={cursor}", deep
            t0 = time.perf_counter()
            await get(conn, f"{base}/{who}/interactions?{query}")
            sink.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(client(c) for c in conns))
    elapsed = time.perf_counter() - t0
    for c in conns:
        assert c.transport is not None
        c.transport.close()
    both = first + deep
    return {"reads": reads, "per_s": reads / elapsed, "p50_ms": pct(both, 0.5), "p99_ms": pct(both, 0.99),
            "first_page_p99_ms": pct(first, 0.99), "deep_page_p99_ms": pct(deep, 0.99) if deep else 0.0}


# -- driver ---------------------------------------------------------------------------------------

def pg_schema(sql: str) -> None:
    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(PG_DSN)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


def run_one(name: str, args: argparse.Namespace) -> None:
    tmp = tempfile.TemporaryDirectory(prefix="cti-bench-")
    schema = None
    if name == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp.name}/voice.db"
    else:
        url, schema = PG_URL, f"cti_bench_{uuid.uuid4().hex[:8]}"
        pg_schema(f'CREATE SCHEMA "{schema}"')
    try:
        procs, port = start_servers(url, schema, args.workers)
        try:
            cpu0 = cpu_seconds(procs)
            res = run_ingest(port, args.requests, args.concurrency, args.client_procs)
            cpu_ms = (cpu_seconds(procs) - cpu0) / res["requests"] * 1000
        finally:
            stop_servers(procs)
        print(f"[{name}] ingest: {res['requests']} requests, {args.concurrency} clients, "
              f"{args.workers} server process(es): {res['per_s']:.0f}/s, p50 {res['p50_ms']:.1f} ms, "
              f"p99 {res['p99_ms']:.1f} ms (201: {res['ok']:.0f}, 200 retries: {res['retried']:.0f}, "
              f"other: {res['other']:.0f}); CPU per request: server {cpu_ms:.2f} ms, "
              f"client {res['client_cpu_ms']:.2f} ms ({args.client_procs} process(es))", flush=True)
        if args.rows:
            customers, heavy, took = asyncio.run(bulk_insert(url, schema, args.rows))
            print(f"[{name}] bulk-inserted {args.rows} interactions in {took:.1f} s", flush=True)
            procs, port = start_servers(url, schema, args.workers)
            try:
                results = [(c, asyncio.run(timeline_load(port, customers, heavy, args.reads, c)))
                           for c in sorted({1, args.read_concurrency})]
            finally:
                stop_servers(procs)
            for clients, tl in results:
                    print(f"[{name}] timeline with {args.rows + args.requests} interactions stored: "
                      f"{tl['reads']} reads, {clients} client(s): {tl['per_s']:.0f}/s, "
                      f"p50 {tl['p50_ms']:.1f} ms, p99 {tl['p99_ms']:.1f} ms "
                      f"(first pages p99 {tl['first_page_p99_ms']:.1f} ms, "
                      f"page 51 of the 100k-interaction customer p99 {tl['deep_page_p99_ms']:.1f} ms)",
                      flush=True)
    finally:
        if schema:
            pg_schema(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        tmp.cleanup()


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        p = argparse.ArgumentParser()
        p.add_argument("serve")
        p.add_argument("--url", required=True)
        p.add_argument("--schema", default="")
        p.add_argument("--port", type=int, required=True)
        a = p.parse_args()
        serve(a.url, a.schema, a.port)
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    p.add_argument("--requests", type=int, default=10_000)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--workers", type=int, default=1, help="server processes (SO_REUSEPORT)")
    p.add_argument("--client-procs", type=int, default=1, help="client processes sharing --concurrency")
    p.add_argument("--rows", type=int, default=1_000_000, help="interactions bulk-inserted for reads")
    p.add_argument("--reads", type=int, default=5000)
    p.add_argument("--read-concurrency", type=int, default=8, help="also measured with 1 client")
    args = p.parse_args()
    print(f"cpus: {os.cpu_count()}, python {sys.version.split()[0]}", flush=True)
    for name in (["sqlite", "postgres"] if args.db == "both" else [args.db]):
        run_one(name, args)


if __name__ == "__main__":
    main()
