"""`voice cluster --nodes N`: N voice nodes and Kamailio's dispatcher in front, on one machine.

This is how one machine uses all its cores (one node is one process on one core) and how a
node can die without taking the phones with it. From one base config file it writes one config
per node into the work directory: `[node] id = <id>-<i>`, SIP on the base `[sip] listen` port
+ i, HTTP on the base `[http] listen` port + i - 1, and the base `[rtp] ports` range cut into N
blocks; everything else (the one PostgreSQL in `[database] url`, flows, keys, `[rtp]
send_ahead_ms`: each node has its RTP transmitter unless the base sets 0) is shared. Kamailio
(contrib/kamailio/kamailio.cfg) takes the base SIP address itself and dispatches to the nodes.

The database is migrated once, the nodes start (each must answer OPTIONS), then Kamailio;
`cluster.json` in the work directory names every process, its pid and its ports. A node that
dies is not restarted here (Kamailio routes around it, and its peers take its calls and agents
over); SIGTERM drains the nodes (each finishes or ends its calls) and then stops Kamailio,
which their BYEs pass through.
"""

from __future__ import annotations

import argparse
import configparser
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from voice.config import ConfigError, load_config

REPO = Path(__file__).resolve().parents[1]
KAMAILIO_CFG = REPO / "contrib" / "kamailio" / "kamailio.cfg"
KAMAILIO_MODULES = Path("/usr/lib/x86_64-linux-gnu/kamailio/modules/")


@dataclass(frozen=True, kw_only=True)
class NodePlan:
    id: str
    sip_port: int
    http_port: int
    rtp_ports: tuple[int, int]
    config: str
    log: str


@dataclass(frozen=True, kw_only=True)
class ClusterPlan:
    host: str
    sip_port: int  # Kamailio's
    nodes: list[NodePlan]
    workdir: str
    database: str


def plan_cluster(base_config: Path, count: int, workdir: Path) -> ClusterPlan:
    """Write one config per node into `workdir`; ConfigError if the base config cannot be split."""
    if count < 1:
        raise ConfigError("--nodes: at least 1")
    base = load_config(base_config)
    if count > 1 and not base.database.url.startswith("postgresql"):
        raise ConfigError(f"{base_config}: [database] url: several nodes need one PostgreSQL "
                          f"(postgresql+asyncpg://...), found {base.database.url.split(':', 1)[0]}")
    host, sip_port = base.sip.listen.host, base.sip.listen.port
    if host in ("0.0.0.0", "::"):
        raise ConfigError(f"{base_config}: [sip] listen: give the address Kamailio listens on, "
                          f"not {host}")
    lo, hi = base.rtp.port_min, base.rtp.port_max
    block = ((hi - lo + 1) // count) & ~1
    if block < 4:
        raise ConfigError(f"{base_config}: [rtp] ports {lo}-{hi} is too small for {count} nodes")
    raw = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=("#", ";"))
    raw.read(base_config, encoding="utf-8")
    workdir.mkdir(parents=True, exist_ok=True)
    nodes: list[NodePlan] = []
    for i in range(1, count + 1):
        node_id = f"{base.node.id}-{i}"[:64]
        start = lo + (lo % 2) + (i - 1) * block
        plan = NodePlan(id=node_id, sip_port=sip_port + i, http_port=base.http.listen.port + i - 1,
                        rtp_ports=(start, start + block - 1), config=str(workdir / f"{node_id}.conf"),
                        log=str(workdir / f"{node_id}.log"))
        node_cfg = configparser.ConfigParser(interpolation=None)
        node_cfg.read_dict({s: dict(raw.items(s)) for s in raw.sections()})
        for section in ("node", "sip", "rtp", "http"):
            if not node_cfg.has_section(section):
                node_cfg.add_section(section)
        node_cfg.set("node", "id", node_id)
        node_cfg.set("sip", "listen", f"{host}:{plan.sip_port}")
        node_cfg.set("rtp", "ports", f"{plan.rtp_ports[0]}-{plan.rtp_ports[1]}")
        node_cfg.set("http", "listen", f"{base.http.listen.host}:{plan.http_port}")
        with open(plan.config, "w", encoding="utf-8") as fh:
            node_cfg.write(fh)
        load_config(plan.config)  # the node would refuse it: say so now
        nodes.append(plan)
    return ClusterPlan(host=host, sip_port=sip_port, nodes=nodes, workdir=str(workdir),
                       database=base.database.url.split("@")[-1])


def sip_ping(host: str, port: int, timeout: float = 0.5) -> str | None:
    """One OPTIONS over UDP; the status line of the answer, or None."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind((host, 0))
        sock.settimeout(timeout)
        lport = sock.getsockname()[1]
        tag = random.randrange(1 << 30)
        msg = (f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
               f"Via: SIP/2.0/UDP {host}:{lport};branch=z9hG4bKvc{tag}\r\n"
               f"Max-Forwards: 70\r\nFrom: <sip:cluster@{host}>;tag={tag}\r\nTo: <sip:{host}:{port}>\r\n"
               f"Call-ID: cluster-{tag}@{host}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n")
        sock.sendto(msg.encode(), (host, port))
        return sock.recv(65535).split(b"\r\n", 1)[0].decode(errors="replace")
    except OSError:
        return None
    finally:
        sock.close()


def kamailio_argv(plan: ClusterPlan, *, binary: str, pike_density: int, children: int) -> list[str]:
    work = Path(plan.workdir)
    listen = f"{plan.host}:{plan.sip_port}"
    defines = {"LISTEN": f"udp:{listen}", "LISTEN_TCP": f"tcp:{listen}",
               "DISPATCHER_LIST": f'"{work / "dispatcher.list"}"',
               "CTL_SOCKET": f'"unix:{work / "kamailio_ctl"}"',
               "PIKE_DENSITY": str(pike_density), "CHILDREN": str(children)}
    if KAMAILIO_MODULES.is_dir():
        defines["MPATH"] = f'"{KAMAILIO_MODULES}"'
    argv = [binary, "-DD", "-E", "-f", str(KAMAILIO_CFG), "-Y", str(work), "-w", str(work),
            "-m", "128", "-M", "16", "-P", str(work / "kamailio.pid")]
    for name, value in defines.items():
        argv += ["-A", f"{name}={value}"]
    return argv


class Cluster:
    """The running processes (a supervisor with no restarts)."""

    def __init__(self, plan: ClusterPlan) -> None:
        self.plan = plan
        self.nodes: dict[str, subprocess.Popen[bytes]] = {}
        self.kamailio: subprocess.Popen[bytes] | None = None
        self._logs: list[IO[bytes]] = []

    def _spawn(self, argv: list[str], log: str) -> subprocess.Popen[bytes]:
        out = open(log, "ab")  # noqa: SIM115 (kept open for the child's whole life)
        self._logs.append(out)
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=REPO, start_new_session=True)

    def start(self, *, kamailio: str, pike_density: int, children: int, timeout: float = 60.0) -> None:
        work = Path(self.plan.workdir)
        # Migrate once before the nodes start: N nodes migrating a fresh database at once would race.
        upgrade = subprocess.run([sys.executable, "-m", "voice.cli", "db", "upgrade", "--config",
                                  self.plan.nodes[0].config], capture_output=True, text=True, cwd=REPO,
                                 timeout=120, check=False)
        if upgrade.returncode != 0:
            raise RuntimeError(f"database migration failed:\n{upgrade.stderr[-3000:]}")
        for node in self.plan.nodes:
            argv = [sys.executable, "-m", "voice.cli", "run", "--config", node.config]
            self.nodes[node.id] = self._spawn(argv, node.log)
        deadline = time.monotonic() + timeout
        for node in self.plan.nodes:
            while (sip_ping(self.plan.host, node.sip_port) or "").split(" ")[1:2] != ["200"]:
                proc = self.nodes[node.id]
                if proc.poll() is not None:
                    raise RuntimeError(f"node {node.id} exited with {proc.returncode}; see {node.log}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"node {node.id} did not answer OPTIONS in {timeout:.0f} s; "
                                       f"see {node.log}")
                time.sleep(0.2)
        (work / "dispatcher.list").write_text(
            "".join(f"1 sip:{self.plan.host}:{n.sip_port} 0 0 node={n.id}\n" for n in self.plan.nodes))
        argv = kamailio_argv(self.plan, binary=kamailio, pike_density=pike_density, children=children)
        check = subprocess.run([*argv, "-c"], capture_output=True, text=True, timeout=30, check=False)
        if check.returncode != 0:
            raise RuntimeError(f"kamailio rejected {KAMAILIO_CFG}:\n{check.stderr[-3000:]}")
        self.kamailio = self._spawn(argv, str(work / "kamailio.log"))
        while (sip_ping(self.plan.host, self.plan.sip_port) or "").split(" ")[1:2] != ["200"]:
            if self.kamailio.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"kamailio did not start; see {work / 'kamailio.log'}")
            time.sleep(0.2)
        self.write_state()

    def write_state(self) -> None:
        state: dict[str, Any] = {
            "kamailio": {"sip": f"{self.plan.host}:{self.plan.sip_port}",
                         "pid": self.kamailio.pid if self.kamailio else None},
            "nodes": [{**asdict(n), "pid": self.nodes[n.id].pid if n.id in self.nodes else None}
                      for n in self.plan.nodes],
            "database": self.plan.database,
        }
        path = Path(self.plan.workdir) / "cluster.json"
        path.write_text(json.dumps(state, indent=2))

    def watch(self, stop: list[int]) -> None:
        """Until a stop signal: say when a node or Kamailio exits."""
        reported: set[str] = set()
        while not stop:
            for node_id, proc in self.nodes.items():
                if proc.poll() is not None and node_id not in reported:
                    reported.add(node_id)
                    print(f"voice cluster: node {node_id} exited with {proc.returncode} "
                          "(not restarted; its peers take over its calls and agents)", flush=True)
            if self.kamailio is not None and self.kamailio.poll() is not None:
                print(f"voice cluster: kamailio exited with {self.kamailio.returncode}; stopping", flush=True)
                return
            time.sleep(0.2)

    def stop(self, drain: float) -> None:
        """Drain the nodes (SIGTERM), then stop Kamailio; SIGKILL what outlives its time."""
        for proc in self.nodes.values():
            _signal(proc, signal.SIGTERM)
        deadline = time.monotonic() + drain + 15
        for proc in self.nodes.values():
            _wait(proc, deadline)
        if self.kamailio is not None:
            _signal(self.kamailio, signal.SIGTERM)
            _wait(self.kamailio, time.monotonic() + 5)
        for out in self._logs:
            out.close()


def _signal(proc: subprocess.Popen[bytes], sig: int) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass


def _wait(proc: subprocess.Popen[bytes], deadline: float) -> None:
    try:
        proc.wait(max(0.1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        _signal(proc, signal.SIGKILL)
        proc.wait(5)


def main(args: argparse.Namespace) -> int:
    binary = shutil.which(args.kamailio) or (args.kamailio if Path(args.kamailio).exists() else None)
    if binary is None:
        print(f"voice cluster: {args.kamailio} not found (install the kamailio package)", file=sys.stderr)
        return 2
    try:
        plan = plan_cluster(Path(args.config), args.nodes, Path(args.workdir))
    except ConfigError as exc:
        print(f"voice cluster: configuration error: {exc}", file=sys.stderr)
        return 2
    stop: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda s, _f: stop.append(s))
    cluster = Cluster(plan)
    drain = load_config(args.config).sip.drain_timeout
    try:
        cluster.start(kamailio=binary, pike_density=args.pike_density, children=args.children)
        nodes = ", ".join(f"{n.id} (SIP {plan.host}:{n.sip_port}, HTTP {n.http_port})" for n in plan.nodes)
        print(f"voice cluster: ready (Kamailio {plan.host}:{plan.sip_port}; nodes: {nodes})", flush=True)
        cluster.watch(stop)
    except RuntimeError as exc:
        print(f"voice cluster: {exc}", file=sys.stderr)
        cluster.stop(0)
        return 1
    cluster.stop(drain)
    return 0
