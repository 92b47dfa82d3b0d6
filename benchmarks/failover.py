"""Failover benchmark: Kamailio + N nodes under call load, one node gets kill -9, what callers see.

    .venv/bin/python benchmarks/failover.py [--nodes 2] [--rate 20] [--seconds 30] [--kill-at 10]
        [--hold-ms 3000] [--lost-after 5]

sipp's built-in UAC places calls through Kamailio at --rate for --seconds (each held --hold-ms);
at --kill-at seconds the first node is killed (SIGKILL). From a loopback capture of Kamailio's
port (a marker datagram stamps the moment of the kill):
- first call answered by another node: kill -> the first 200 to an INVITE sent after the kill;
- last INVITE still forwarded to the dead node (Kamailio marks it down on a timeout or a probe);
- INVITE->200 latency after the kill, p50 / p99 / max (calls that tried the dead node first wait
  for Kamailio's INVITE timeout, then go to the next node);
- calls lost: sipp's failed calls (calls the dead node held when it died, whose BYE finds nobody),
  and new calls that failed (should be 0);
- when the survivor took the node over (cluster_nodes.lost_at) and how many calls it interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.peers import HOST, free_port
from tests.peers.capture import capture
from tests.peers.cluster import running_cluster
from tests.peers.pcap import read_udp
from tests.peers.sipp import run_sipp

_CALL_ID = re.compile(rb"^(?:Call-ID|i)\s*:\s*(\S+)", re.I | re.M)
MARK = b"voice-failover-kill"


def pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def analyse(pcap: Path, kam_port: int, node_ports: dict[int, str], dead_port: int) -> dict[str, Any]:
    kill_t: float | None = None
    invites: dict[bytes, float] = {}  # caller -> Kamailio, first transmission
    answered: dict[bytes, float] = {}  # Kamailio -> caller, 200 to the INVITE
    answered_by: dict[bytes, int] = {}  # node port that sent the 200
    to_dead: dict[bytes, float] = {}  # Kamailio -> the dead node, first transmission per call
    for d in read_udp(pcap):
        if d.payload == MARK:
            kill_t = d.time
            continue
        m = _CALL_ID.search(d.payload)
        if m is None:
            continue
        cid = m.group(1)
        is_invite = d.payload.startswith(b"INVITE ") and b"\nCSeq: 1 INVITE" in d.payload
        is_200 = d.payload.startswith(b"SIP/2.0 200") and b" INVITE" in d.payload
        if is_invite and d.dst_port == kam_port and d.src_port not in node_ports:
            invites.setdefault(cid, d.time)
        elif is_invite and d.src_port == kam_port and d.dst_port == dead_port:
            to_dead.setdefault(cid, d.time)
        elif is_200 and d.src_port in node_ports and d.dst_port == kam_port:
            answered_by.setdefault(cid, d.src_port)
        elif is_200 and d.src_port == kam_port and d.dst_port not in node_ports:
            answered.setdefault(cid, d.time)
    if kill_t is None:
        raise RuntimeError("the kill marker is not in the capture")
    after = {c: t for c, t in invites.items() if t >= kill_t}
    dead_after = [t - kill_t for t in to_dead.values() if t >= kill_t]
    lat_after = [(answered[c] - t) * 1000 for c, t in after.items() if c in answered]
    first_other = min((answered[c] for c in after if c in answered and answered_by.get(c) != dead_port),
                      default=None)
    return {
        "invites_after_kill": len(after),
        "answered_after_kill": sum(1 for c in after if c in answered),
        "first_new_call_answered_by_other_s": None if first_other is None else first_other - kill_t,
        "last_invite_to_dead_node_s": max(dead_after, default=None),
        "invites_to_dead_node_after_kill": len(dead_after),
        "latency_after_kill_ms_p50": pct(lat_after, 50),
        "latency_after_kill_ms_p99": pct(lat_after, 99),
        "latency_after_kill_ms_max": max(lat_after, default=None),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench-failover-"))
    workdir.mkdir(parents=True, exist_ok=True)
    calls = int(args.rate * args.seconds)
    sections: dict[str, dict[str, object]] = {
        "log": {"level": "warning"}, "sip": {"max_calls": calls * 2},
        "node": {"heartbeat_interval": args.lost_after / 5, "lost_after": args.lost_after}}
    rtp_ports = max(400, 8 * int(args.rate * args.hold_ms / 1000) + 200)
    with running_cluster(workdir, nodes=args.nodes, rtp_ports=rtp_ports, **sections) as cl:  # type: ignore[arg-type]
        dead = cl.nodes[0]
        marker_port = free_port(tcp=False)
        node_ports = {n.sip_port: n.id for n in cl.nodes}
        bpf = f"udp and (port {cl.sip_port} or port {marker_port})"
        result_box: dict[str, Any] = {}

        def load() -> None:
            result_box["sipp"] = run_sipp(
                "uac", cl.sip_address, workdir=workdir / "sipp", calls=calls, rate=args.rate, service="100",
                timeout=args.seconds + args.hold_ms / 1000 + 60, media_port=free_port(tcp=False, count=8),
                extra=["-d", str(args.hold_ms), "-max_socket", "10000"])

        with capture(workdir / "capture.pcap", bpf, snaplen=0, buffer_mb=128):
            loader = threading.Thread(target=load)
            loader.start()
            time.sleep(args.kill_at)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.sendto(MARK, (HOST, marker_port))
                cl.kill(dead.id)
                killed_wall = time.time()
            loader.join(args.seconds + args.hold_ms / 1000 + 120)
        sipp = result_box["sipp"]
        rows = cl.sql(f"SELECT extract(epoch FROM lost_at), taken_over_by FROM cluster_nodes "
                      f"WHERE id = '{dead.id}'")
        interrupted = cl.sql(f"SELECT count(*) FROM interactions WHERE status = 'interrupted' "
                             f"AND metadata->>'node' = '{dead.id}'")
    figures = analyse(workdir / "capture.pcap", cl.sip_port, node_ports, dead.sip_port)
    taken = float(rows[0][0]) - killed_wall if rows and rows[0][0] else None
    return {
        "nodes": args.nodes, "rate": args.rate, "calls": calls, "hold_ms": args.hold_ms,
        "kill_at_s": args.kill_at, "lost_after_s": args.lost_after,
        "successful": sipp.successful, "failed": sipp.failed, "failures": sipp.failures,
        **figures,
        "taken_over_after_s": taken, "taken_over_by": rows[0][1] if rows else None,
        "interrupted_calls": int(interrupted[0][0]) if interrupted else 0,
        "load_average": os.getloadavg(), "workdir": str(workdir),
    }


def show(r: dict[str, Any]) -> str:
    def f(v: Any, unit: str = "") -> str:
        return "n/a" if v is None else (f"{v:.3f}{unit}" if isinstance(v, float) else f"{v}{unit}")

    return "\n".join([
        f"cluster:                 {r['nodes']} nodes; {r['calls']} calls at {r['rate']}/s, "
        f"held {r['hold_ms']} ms; kill -9 at {r['kill_at_s']} s; lost_after {r['lost_after_s']} s",
        f"calls:                   {r['successful']} ok, {r['failed']} failed {r['failures'] or ''}",
        f"after the kill:          {r['invites_after_kill']} INVITEs, {r['answered_after_kill']} answered",
        f"first new call answered by another node: "
        f"{f(r['first_new_call_answered_by_other_s'], ' s')} after the kill",
        f"new calls still sent to the dead node: {r['invites_to_dead_node_after_kill']}, "
        f"the last {f(r['last_invite_to_dead_node_s'], ' s')} after the kill",
        f"INVITE->200 after kill:  p50 {f(r['latency_after_kill_ms_p50'], ' ms')}, "
        f"p99 {f(r['latency_after_kill_ms_p99'], ' ms')}, max {f(r['latency_after_kill_ms_max'], ' ms')}",
        f"taken over:              by {r['taken_over_by']} "
        f"{f(r['taken_over_after_s'], ' s')} after the kill, "
        f"{r['interrupted_calls']} calls marked interrupted",
        f"load average after:      {' '.join(f'{x:.2f}' for x in r['load_average'])}",
        f"files:                   {r['workdir']}",
    ])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nodes", type=int, default=2)
    ap.add_argument("--rate", type=float, default=20.0, help="new calls per second")
    ap.add_argument("--seconds", type=float, default=30.0, help="how long calls are placed")
    ap.add_argument("--kill-at", type=float, default=10.0, help="seconds into the load")
    ap.add_argument("--hold-ms", type=int, default=3000, help="how long each call stays up")
    ap.add_argument("--lost-after", type=float, default=5.0, help="[node] lost_after, seconds")
    ap.add_argument("--workdir")
    ap.add_argument("--json")
    args = ap.parse_args()
    result = run(args)
    print(show(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
