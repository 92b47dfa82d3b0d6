"""`voice cluster` as a subprocess: Kamailio's dispatcher in front of N real nodes on one
PostgreSQL database of the test's own (created on the shared server, dropped afterwards).

    with running_cluster(tmp_path, nodes=2) as cluster:
        run_sipp("uac", cluster.sip_address, ...)
        cluster.kill(cluster.nodes[0].id)          # kill -9

Ports come from this helper's own block: Kamailio on P and node i on P+i (SIP, 31000-31999),
HTTP on H+i-1 (32000-32199), one RTP range (32200-32999) that `voice cluster` cuts per node.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.peers import HOST, REPO, background, free_port, require

SIP_SPAN = (31000, 31999)
HTTP_SPAN = (32000, 32199)
RTP_SPAN = (32200, 32999)
BIG_RTP_SPAN = (33000, 44999)  # benchmarks with hundreds of calls: beyond this helper's block
PG_ADMIN = ["-h", "127.0.0.1", "-p", "5432", "-U", "postgres"]


def psql(sql: str, *, database: str = "test", port: int = 5432) -> str:
    out = subprocess.run([require("psql"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-d",
                          database, "-v", "ON_ERROR_STOP=1", "-qAtc", sql],
                         capture_output=True, text=True, timeout=60, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"psql {sql!r}: {out.stderr}")
    return out.stdout


@contextlib.contextmanager
def scratch_database(prefix: str = "cluster_test", port: int = 5432) -> Iterator[str]:
    """A database of our own on the PostgreSQL server at 127.0.0.1:`port`; dropped on exit."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    psql(f'CREATE DATABASE "{name}"', port=port)
    try:
        yield name
    finally:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', port=port)


@dataclass(frozen=True, kw_only=True)
class ClusterNode:
    id: str
    sip_port: int
    http_port: int
    pid: int
    log_path: Path

    @property
    def http_url(self) -> str:
        return f"http://{HOST}:{self.http_port}"

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@dataclass
class RunningCluster:
    sip_port: int
    nodes: list[ClusterNode]
    workdir: Path
    api_key: str
    database: str
    db_port: int
    proc: subprocess.Popen[bytes]

    @property
    def sip_address(self) -> str:
        return f"{HOST}:{self.sip_port}"

    @property
    def kamailio_log(self) -> str:
        return (self.workdir / "run" / "kamailio.log").read_text(errors="replace")

    @property
    def log(self) -> str:
        return (self.workdir / "cluster.log").read_text(errors="replace")

    def kamailio_pids(self) -> list[int]:
        """Kamailio's main process and its children (for CPU figures)."""
        main = int(json.loads((self.workdir / "run" / "cluster.json").read_text())["kamailio"]["pid"])
        pids = [main]
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == main:
                pids.append(int(stat.parent.name))
        return pids

    def node(self, node_id: str) -> ClusterNode:
        return next(n for n in self.nodes if n.id == node_id)

    def kill(self, node_id: str) -> float:
        """kill -9 one node; returns time.monotonic() of the kill."""
        node = self.node(node_id)
        os.kill(node.pid, signal.SIGKILL)
        return time.monotonic()

    def sql(self, query: str) -> list[list[str]]:
        """Rows of a query on the cluster's database (psql, unaligned, `|` between columns)."""
        text = psql(query, database=self.database, port=self.db_port)
        return [line.split("|") for line in text.splitlines() if line]


def write_base_config(workdir: Path, database_url: str, sections: Mapping[str, Mapping[str, object]],
                      rtp_ports: int = 200) -> tuple[Path, int, str]:
    sip_port = free_port(SIP_SPAN, count=4)
    http_port = free_port(HTTP_SPAN, count=4)
    span = RTP_SPAN if rtp_ports <= 600 else BIG_RTP_SPAN
    rtp_lo = free_port(span, tcp=False, count=rtp_ports)
    api_key = secrets.token_hex(16)
    config: dict[str, dict[str, str]] = {
        "node": {"id": "t", "heartbeat_interval": "0.5", "lost_after": "3"},
        "sip": {"listen": f"{HOST}:{sip_port}", "transports": "udp, tcp", "t1_ms": "100"},
        "rtp": {"ports": f"{rtp_lo}-{rtp_lo + rtp_ports - 1}"},
        "http": {"listen": f"{HOST}:{http_port}", "api_keys": api_key},
        "database": {"url": database_url},
        "ivr": {"flows": str(REPO / "ivr_flows"), "recordings": str(workdir / "recordings")},
        "asr": {"engine": "none"},
        "log": {"level": "info"},
    }
    if (REPO / "recordings" / "prompts").is_dir():
        config["ivr"]["prompts"] = str(REPO / "recordings" / "prompts")
    for section, values in sections.items():
        merged = config.setdefault(section, {})
        for key, value in values.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = str(value)
    (workdir / "recordings").mkdir(parents=True, exist_ok=True)
    path = workdir / "base.conf"
    path.write_text("".join(f"[{s}]\n" + "".join(f"{k} = {v}\n" for k, v in kv.items()) + "\n"
                            for s, kv in config.items()))
    return path, sip_port, api_key


@contextlib.contextmanager
def running_cluster(tmp_path: Path, *, nodes: int = 2, db_port: int = 5432, start_timeout: float = 90.0,
                    rtp_ports: int = 200, pike_density: int = 2000,
                    **sections: Mapping[str, object]) -> Iterator[RunningCluster]:
    """`voice cluster --nodes N` on a fresh database; stopped (SIGTERM, drains) on exit."""
    workdir = tmp_path / "cluster"
    workdir.mkdir(parents=True, exist_ok=True)
    with scratch_database(port=db_port) as database:
        url = f"postgresql+asyncpg://postgres@127.0.0.1:{db_port}/{database}"
        sections = {**sections, "sip": {"drain_timeout": "2", **dict(sections.get("sip", {}))}}
        base, sip_port, api_key = write_base_config(workdir, url, sections, rtp_ports)
        argv = [sys.executable, "-m", "voice.cli", "cluster", "--config", str(base), "--nodes", str(nodes),
                "--workdir", str(workdir / "run"), "--pike-density", str(pike_density)]
        with background(argv, cwd=REPO, log=workdir / "cluster.log", grace=30.0) as proc:
            state_file = workdir / "run" / "cluster.json"
            deadline = time.monotonic() + start_timeout
            while "voice cluster: ready" not in (workdir / "cluster.log").read_text(errors="replace"):
                if proc.poll() is not None or time.monotonic() > deadline:
                    logs = "".join(p.read_text(errors="replace")[-3000:]
                                   for p in (workdir / "run").glob("*.log"))
                    raise RuntimeError(f"voice cluster did not start:\n"
                                       f"{(workdir / 'cluster.log').read_text(errors='replace')}\n{logs}")
                time.sleep(0.2)
            state: dict[str, Any] = json.loads(state_file.read_text())
            members = [ClusterNode(id=n["id"], sip_port=n["sip_port"], http_port=n["http_port"], pid=n["pid"],
                                   log_path=Path(n["log"])) for n in state["nodes"]]
            yield RunningCluster(sip_port=sip_port, nodes=members, workdir=workdir, api_key=api_key,
                                 database=database, db_port=db_port, proc=proc)
