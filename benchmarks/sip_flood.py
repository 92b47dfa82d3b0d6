"""INVITE-flood benchmark: sipp floods the service with INVITEs from loopback while a probe sends
OPTIONS every few milliseconds from another port; we report what signalling did meanwhile.

    .venv/bin/python benchmarks/sip_flood.py                      # 3000 INVITEs at 600/s, max_calls 50
    .venv/bin/python benchmarks/sip_flood.py --invites 10000 --rate 1000 --max-calls 100

Printed: OPTIONS round trip p50/p99/max and probes lost, before / during / after the flood; how
the INVITEs were answered (from sipp's per-message counts and the service's log); the service's
resident memory (VmRSS) before, at its peak during, and after the flood once transactions expired
(--settle seconds). The flood is bounded in count (--invites) and time (--rate, sipp's -timeout).
The service's [throttle] defaults apply (invite_rate 100/s, burst 200, flood_block 10 s): a flood
from one address gets 503 + Retry-After statelessly once over the rate; calls over max_calls get
503 + Retry-After before any provisional response.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.peers import HOST
from tests.peers.service import running_service
from tests.peers.sipp import sipp_background

FLOOD = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="flood">
  <send retrans="500"><![CDATA[
INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
From: flood <sip:flood@[local_ip]:[local_port]>;tag=[pid]F[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: 1 INVITE
Contact: <sip:flood@[local_ip]:[local_port]>
Max-Forwards: 70
User-Agent: friendly-scanner
Content-Type: application/sdp
Content-Length: [len]

v=0
o=- 1 1 IN IP4 [local_ip]
s=-
c=IN IP4 [media_ip]
t=0 0
m=audio [media_port] RTP/AVP 0
a=rtpmap:0 PCMU/8000
]]></send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="503" optional="true" next="refused"/>
  <recv response="403" optional="true" next="refused"/>
  <recv response="200" rrs="true"/>
  <send><![CDATA[
ACK [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
From: flood <sip:flood@[local_ip]:[local_port]>;tag=[pid]F[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
Call-ID: [call_id]
CSeq: 1 ACK
Max-Forwards: 70
Content-Length: 0
]]></send>
  <pause milliseconds="1000"/>
  <send retrans="500"><![CDATA[
BYE [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
From: flood <sip:flood@[local_ip]:[local_port]>;tag=[pid]F[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
Call-ID: [call_id]
CSeq: 2 BYE
Max-Forwards: 70
Content-Length: 0
]]></send>
  <recv response="200" next="end"/>
  <label id="refused"/>
  <send><![CDATA[
ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch-10];rport
From: flood <sip:flood@[local_ip]:[local_port]>;tag=[pid]F[call_number]
[last_To:]
Call-ID: [call_id]
CSeq: 1 ACK
Max-Forwards: 70
Content-Length: 0
]]></send>
  <label id="end"/>
</scenario>
"""


class OptionsProbe(threading.Thread):
    """Sends an OPTIONS every `interval` s from its own socket; records round trips (ms) per phase."""

    def __init__(self, port: int, interval: float) -> None:
        super().__init__(daemon=True)
        self.target = (HOST, port)
        self.interval = interval
        self.phase = "before"
        self.rtts: dict[str, list[float]] = {}
        self.lost: dict[str, int] = {}
        self._halt = threading.Event()

    def run(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((HOST, 0))
        sock.settimeout(1.0)
        port = sock.getsockname()[1]
        n = 0
        try:
            while not self._halt.is_set():
                n += 1
                call_id = f"probe-{n}-{uuid.uuid4().hex[:8]}"
                msg = (f"OPTIONS sip:probe@{HOST}:{self.target[1]} SIP/2.0\r\n"
                       f"Via: SIP/2.0/UDP {HOST}:{port};branch=z9hG4bKp{n}x{uuid.uuid4().hex[:6]};rport\r\n"
                       f"From: <sip:probe@{HOST}>;tag=p{n}\r\nTo: <sip:probe@{HOST}>\r\n"
                       f"Call-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
                       "Content-Length: 0\r\n\r\n")
                phase = self.phase
                sent = time.perf_counter()
                sock.sendto(msg.encode(), self.target)
                got = False
                while time.perf_counter() - sent < 1.0:
                    try:
                        data = sock.recv(65535)
                    except TimeoutError:
                        break
                    if call_id.encode() in data:
                        self.rtts.setdefault(phase, []).append((time.perf_counter() - sent) * 1000)
                        got = True
                        break
                if not got:
                    self.lost[phase] = self.lost.get(phase, 0) + 1
                self._halt.wait(self.interval)
        finally:
            sock.close()

    def stop(self) -> None:
        self._halt.set()
        self.join(5)


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--invites", type=int, default=3000, help="INVITEs in the flood")
    ap.add_argument("--rate", type=float, default=600.0, help="INVITEs per second")
    ap.add_argument("--max-calls", type=int, default=50, help="[sip] max_calls of the service")
    ap.add_argument("--probe-ms", type=float, default=20.0, help="OPTIONS probe interval")
    ap.add_argument("--settle", type=float, default=40.0, help="seconds after each flood before 'after'")
    ap.add_argument("--rounds", type=int, default=2, help="floods in a row (memory must not grow per round)")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--json", action="store_true", help="print the figures as one JSON object too")
    args = ap.parse_args()
    import tempfile

    work = args.workdir or Path(tempfile.mkdtemp(prefix="sip_flood_"))
    scenario = work / "flood.xml"
    work.mkdir(parents=True, exist_ok=True)
    scenario.write_text(FLOOD)
    sections: dict[str, dict[str, object]] = {
        "sip": {"max_calls": args.max_calls},
        "asr": {"engine": "none"},
        "log": {"level": "warning"},
        "throttle": {"invite_rate": 100, "invite_burst": 200, "flood_block": 10},
    }
    result: dict[str, Any] = {"invites": args.invites, "rate": args.rate, "max_calls": args.max_calls}
    with running_service(work / "svc", rtp_pairs=args.max_calls + 10, **sections) as svc:
        probe = OptionsProbe(svc.sip_port, args.probe_ms / 1000)
        probe.start()
        time.sleep(3.0)
        result["rss_before_kb"] = rss_kb(svc.pid)
        peak = result["rss_before_kb"]
        flood_s = args.invites / args.rate
        floods = []
        result["rss_after_kb"] = []
        for n in range(args.rounds):
            probe.phase = "during"
            started = time.monotonic()
            with sipp_background(scenario, svc.sip_address, workdir=work / f"sipp{n}", calls=args.invites,
                                 rate=args.rate, timeout=flood_s + 60, limit=args.invites) as sipp:
                while sipp.proc.poll() is None and time.monotonic() - started < flood_s + 60:
                    peak = max(peak, rss_kb(svc.pid))
                    time.sleep(0.2)
                floods.append(sipp.stop())
            result.setdefault("flood_wall_s", []).append(round(time.monotonic() - started, 1))
            probe.phase = "after"
            settle_end = time.monotonic() + args.settle
            while time.monotonic() < settle_end:
                peak = max(peak, rss_kb(svc.pid))
                time.sleep(0.5)
            result["rss_after_kb"].append(rss_kb(svc.pid))
        result["rss_peak_kb"] = peak
        probe.stop()
        log = svc.log
    result["sipp_counts"] = [f.counts for f in floods]
    result["log_lines"] = len(log.splitlines())
    result["security_lines"] = sum(" SECURITY " in ln for ln in log.splitlines())
    result["tracebacks"] = log.count("Traceback")
    for phase in ("before", "during", "after"):
        rtts = probe.rtts.get(phase, [])
        result[f"options_{phase}"] = {
            "probes": len(rtts) + probe.lost.get(phase, 0), "lost": probe.lost.get(phase, 0),
            "p50_ms": round(pct(rtts, 50), 2), "p99_ms": round(pct(rtts, 99), 2),
            "max_ms": round(max(rtts), 2) if rtts else None,
            "mean_ms": round(statistics.fmean(rtts), 2) if rtts else None}
    print(f"INVITE flood: {args.rounds} x {args.invites} INVITEs at {args.rate:g}/s from one address "
          f"(sipp, took {result['flood_wall_s']} s), service max_calls {args.max_calls}")
    for n, flood in enumerate(floods, 1):
        print(f"sipp round {n}: per message: "
              + ", ".join(f"{k}={v}" for k, v in sorted(flood.counts.items()) if v))
    for phase in ("before", "during", "after"):
        o = result[f"options_{phase}"]
        print(f"OPTIONS {phase:>6}: {o['probes']} probes, {o['lost']} lost, p50 {o['p50_ms']} ms, "
              f"p99 {o['p99_ms']} ms, max {o['max_ms']} ms")
    after = ", ".join(f"{kb / 1024:.1f}" for kb in result["rss_after_kb"])
    print(f"RSS: before {result['rss_before_kb'] / 1024:.1f} MiB, peak {peak / 1024:.1f} MiB, "
          f"{args.settle:g} s after each round {after} MiB")
    print(f"service log: {result['log_lines']} lines, {result['security_lines']} SECURITY, "
          f"{result['tracebacks']} tracebacks")
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
