"""Call-load benchmark: sipp places N concurrent calls that each play audio plus an RFC 4733 digit
and stay up for --hold seconds; we report what the answering side sustained.

    .venv/bin/python benchmarks/calls.py --calls 500 --rate 50 --hold 20        # starts the service
    .venv/bin/python benchmarks/calls.py --target 127.0.0.1:5060 ...          # a service already running
    .venv/bin/python benchmarks/calls.py --standin ...                        # sipp -sn uas -rtp_echo
    .venv/bin/python benchmarks/calls.py --pyvoip ...                         # pyVoIP answerer via Kamailio
    .venv/bin/python benchmarks/calls.py --cluster 2 ...                      # Kamailio + 2 nodes, PostgreSQL

Printed: concurrent calls held (peak of sipp's CurrentCall), calls per second (INVITEs on the wire),
failed calls (sipp), INVITE->200 latency p50/p99 (from a loopback capture, microseconds; sipp's own
-trace_rtt figures are whole milliseconds and shown beside), RTP send-pacing error p50/p99 measured
on the receiving side (|inter-arrival - RTP timestamp delta| per stream, kernel timestamps from
dumpcap), and the answering process's CPU use. Everything stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import heapq
import json
import os
import re
import selectors
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.peers import REPO, background, free_port, sip_options
from tests.peers.capture import capture, capture_summary
from tests.peers.cluster import running_cluster, scratch_database
from tests.peers.kamailio import running_kamailio
from tests.peers.pcap import PCMU, RtpStreamBuilder, read_pcap, read_udp, speak
from tests.peers.rtp import pacing_stats
from tests.peers.service import running_service
from tests.peers.sipp import run_sipp, sipp_background

SCENARIO = (REPO / "tests" / "sipp" / "dtmf_call.xml").read_text()


PLAY_PCAP = """  <nop>
    <action>
      <exec play_pcap_audio="pcap/call.pcap"/>
    </action>
  </nop>
"""


def bench_files(workdir: Path, hold_s: float, audio_s: float, digit: str,
                sipp_plays: bool = True) -> tuple[Path, Path]:
    """dtmf_call.xml with the hold time as its BYE wait, and the pcap of what callers say (speech +
    digit). `sipp_plays`: sipp replays it from raw sockets; otherwise the scenario plays nothing
    and offers [auto_media_port+4] (the ports CallerMedia binds: sipp itself binds the first)."""
    scenario = workdir / "bench_call.xml"
    text = SCENARIO.replace('timeout="30000"', f'timeout="{round(hold_s * 1000)}"').replace(
        'name="dtmf_call"', 'name="bench_call"')
    if not sipp_plays:
        assert PLAY_PCAP in text, "dtmf_call.xml no longer plays pcap/call.pcap as expected"
        text = text.replace(PLAY_PCAP, "").replace("[auto_media_port]", "[auto_media_port+4]")
    scenario.write_text(text)
    speech = speak("Hello, I would like to check the balance of my account, please.", workdir / "speech.wav")
    stream = RtpStreamBuilder(codec=PCMU).wav(speech)
    while stream.duration < audio_s:
        stream.silence(200).wav(speech)
    stream.silence(300).digits(digit)
    return scenario, stream.write(workdir / "bench.pcap")


def cpu_seconds(pid: int) -> float:
    """utime+stime of a process and its reaped children, from /proc (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def with_children(pids: list[int]) -> list[int]:
    """`pids` and their child processes (RTP transmitter, speech workers), each after its parent."""
    out: list[int] = []
    for pid in pids:
        out.append(pid)
        for task in Path(f"/proc/{pid}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                out.extend(int(c) for c in task.read_text().split())
    return out


def sink_socket(port: int) -> socket.socket:
    """A bound UDP socket with a small buffer that nothing reads: a full one drops quietly, as a
    phone ignoring the audio would (OSError if the port is taken)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.setblocking(False)
        s.bind(("127.0.0.1", port))
    except OSError:
        s.close()
        raise
    return s


@contextlib.contextmanager
def media_sinks(lo: int, hi: int) -> Iterator[int]:
    """Bound UDP sockets on the callers' media ports that sipp leaves closed (it sends its pcaps
    from raw sockets): a phone listens on the port in its SDP. Without them every packet the
    answerer sends on loopback comes back as an ICMP port unreachable, whose cost (and its
    delivery to each of sipp's raw sockets) lands on the sender. Yields how many were bound."""
    socks = []
    try:
        for p in range(lo, hi + 1):
            with contextlib.suppress(OSError):
                socks.append(sink_socket(p))
        yield len(socks)
    finally:
        for s in socks:
            s.close()


class CallerMedia(threading.Thread):
    """The callers' media as phones have it: a bound UDP socket on each port the callers' SDP
    offers (sipp's [auto_media_port+4]: ports lo, lo + 4, ..., and RTCP on each + 1). When the
    service's first packet reaches a port (its prompt: the call is up), that caller plays the
    pcap's datagrams at their recorded times from that port to where the packet came from
    (symmetric RTP), then stays silent; nothing it receives after that first packet is read.

    Why not sipp's play_pcap_audio: it sends from a raw IPPROTO_UDP socket per playing call, and
    the kernel gives each of those a copy of every UDP datagram on the machine. With ~150 callers
    talking at once during a 50/s ramp, each packet the service sent on loopback was also cloned
    to ~150 sockets, in the sender's own system call: a cost a real network never puts on it."""

    def __init__(self, lo: int, calls: int, pcap: Path) -> None:
        super().__init__(name="caller-media", daemon=True)
        datagrams = list(read_udp(pcap))
        self.packets = [d.payload for d in datagrams]
        self.offsets = [d.time for d in datagrams]
        # raises if one is taken: the benchmark needs them all. The RTCP port beside each one
        # only sinks the service's reports (unbound, each would come back as an ICMP).
        self.socks = [sink_socket(lo + 4 * i) for i in range(calls)]
        self.rtcp = [sink_socket(lo + 4 * i + 1) for i in range(calls)]
        self.started_calls = 0
        self.sent = 0
        self.send_errors = 0
        self._done = threading.Event()

    def run(self) -> None:
        sel = selectors.DefaultSelector()
        for i, s in enumerate(self.socks):
            sel.register(s, selectors.EVENT_READ, i)
        starts = [0.0] * len(self.socks)
        heap: list[tuple[float, int, int, tuple[str, int]]] = []  # due, call, packet, address
        packets, offsets, last = self.packets, self.offsets, len(self.packets) - 1
        while not self._done.is_set():
            wait = min(max(0.0, heap[0][0] - time.monotonic()), 0.05) if heap else 0.05
            if sel.get_map():
                events = sel.select(wait)
            elif heap:  # every caller talks: only sending is left
                events = []
                time.sleep(wait)
            else:
                break
            for key, _ in events:
                try:
                    _, addr = key.fileobj.recvfrom(2048)  # type: ignore[union-attr]
                except OSError:
                    continue
                sel.unregister(key.fileobj)
                i = key.data
                starts[i] = time.monotonic()
                self.started_calls += 1
                heapq.heappush(heap, (starts[i], i, 0, addr))
            now = time.monotonic()
            while heap and heap[0][0] <= now:
                _, i, k, addr = heapq.heappop(heap)
                try:
                    self.socks[i].sendto(packets[k], addr)
                    self.sent += 1
                except OSError:
                    self.send_errors += 1
                if k < last:
                    heapq.heappush(heap, (starts[i] + offsets[k + 1], i, k + 1, addr))

    def close(self) -> None:
        self._done.set()
        self.join(5)
        for s in self.socks + self.rtcp:
            s.close()


@contextlib.contextmanager
def caller_media(lo: int, calls: int, pcap: Path) -> Iterator[CallerMedia]:
    player = CallerMedia(lo, calls, pcap)
    player.start()
    try:
        yield player
    finally:
        player.close()


def peak_concurrent(stats_csv: Path) -> int:
    rows = list(csv.DictReader(stats_csv.read_text(errors="replace").splitlines(), delimiter=";"))
    return max((int(r.get("CurrentCall") or 0) for r in rows), default=0)


_CALL_ID = re.compile(rb"^(?:Call-ID|i)\s*:\s*(\S+)", re.I | re.M)


def sip_latencies(pcap: Path, target_port: int) -> tuple[list[float], list[float]]:
    """(INVITE->200 latencies in ms, INVITE send times) from a capture of the target's SIP port."""
    invites: dict[bytes, float] = {}
    answered: dict[bytes, float] = {}
    for d in read_udp(pcap):
        m = _CALL_ID.search(d.payload)
        if m is None:
            continue
        call_id = m.group(1)
        if (
            d.dst_port == target_port
            and d.payload.startswith(b"INVITE ")
            and b"\nCSeq: 1 INVITE" in d.payload
        ):
            invites.setdefault(call_id, d.time)
        elif d.src_port == target_port and d.payload.startswith(b"SIP/2.0 200") and b" INVITE" in d.payload:
            answered.setdefault(call_id, d.time)
    lat = [(answered[c] - t) * 1000 for c, t in invites.items() if c in answered]
    return lat, sorted(invites.values())


METRICS: list[str] = []  # /metrics of the service the benchmark started, read before it stops


def pacer_lateness(url: str) -> dict[str, float]:
    """The pacer's own view (voice_rtp_send_lateness_seconds): share of packets that left within
    each bound of their deadline, from the service's /metrics (cumulative since it started)."""
    import urllib.request

    text = urllib.request.urlopen(url, timeout=10).read().decode()
    buckets = dict(re.findall(r'voice_rtp_send_lateness_seconds_bucket\{le="([^"]+)"\} (\S+)', text))
    total = float(buckets.get("+Inf", 0)) or 1.0
    shares = {le: float(n) / total for le, n in buckets.items() if le != "+Inf"}
    overdue = re.search(r"^voice_rtp_packets_overdue_total (\S+)", text, re.M)
    sent = re.search(r"^voice_rtp_packets_sent_total (\S+)", text, re.M)
    if overdue and sent and float(sent.group(1)):  # made after their deadline (transmitter only)
        shares["overdue"] = float(overdue.group(1)) / float(sent.group(1))
    return shares


def gc_pauses(url: str) -> dict[str, Any]:
    """Garbage collections of the service since it started (voice_gc_pause_seconds): per
    generation, how many, their total seconds, and how many took longer than 20 / 40 / 80 ms."""
    import urllib.request

    text = urllib.request.urlopen(url, timeout=10).read().decode()
    out: dict[str, Any] = {}
    for gen in ("0", "1", "2"):
        pattern = rf'voice_gc_pause_seconds_bucket\{{generation="{gen}",le="([^"]+)"\}} (\S+)'
        b = dict(re.findall(pattern, text))
        total = re.search(rf'voice_gc_pause_seconds_sum\{{generation="{gen}"\}} (\S+)', text)
        if not b:
            continue
        count = float(b["+Inf"])
        out[gen] = {"count": int(count), "seconds": float(total.group(1)) if total else None,
                    **{f"over_{ms}ms": int(count - float(b.get(repr(ms / 1000), count)))
                       for ms in (20, 40, 80)}}
    return out


def pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


@contextlib.contextmanager
def target(args: argparse.Namespace, workdir: Path) -> Iterator[tuple[str, list[int], str]]:
    """Yields (sip address, pids of the answering processes (none: not measured), label)."""
    if args.target:
        yield args.target, [args.pid] if args.pid else [], f"existing target {args.target}"
    elif args.cluster:
        sections: dict[str, dict[str, object]] = {
            "sip": {"max_calls": args.calls * 2}, "log": {"level": "warning"},
            "node": {"heartbeat_interval": 2, "lost_after": 10}}
        if args.full_gc_interval is not None:
            sections["node"]["full_gc_interval"] = args.full_gc_interval
        if args.flow:
            flow = Path(args.flow).resolve()
            sections["ivr"] = {"flows": flow.parent, "default_flow": flow.stem}
        if args.send_ahead is not None:
            sections["rtp"] = {"send_ahead_ms": args.send_ahead}
        # RTP: 2 ports per call, spread over the nodes, with room to spare
        with running_cluster(workdir, nodes=args.cluster, rtp_ports=4 * args.calls + 400,
                             **sections) as cl:  # type: ignore[arg-type]
            pids = [n.pid for n in cl.nodes] + cl.kamailio_pids()
            yield cl.sip_address, pids, f"Kamailio dispatcher + {args.cluster} voice nodes on PostgreSQL"
    elif args.standin:
        with sipp_background(
            "uas",
            workdir=workdir / "standin",
            rtp_echo=True,
            timeout=args.hold * 4 + 600,
            extra=["-max_socket", "10000"],
        ) as uas:
            yield uas.address, [uas.proc.pid], "stand-in: sipp -sn uas -rtp_echo"
    elif args.pyvoip:
        with running_kamailio(workdir / "kamailio") as kam:
            rtp_lo = free_port((30000, 39999), tcp=False, count=4 * args.calls + 8)
            argv = [
                sys.executable,
                str(REPO / "benchmarks" / "pyvoip_answerer.py"),
                "--registrar",
                kam.address,
                "--user",
                "ivr",
                "--wav",
                str(workdir / "speech.wav"),
                "--hold",
                str(args.hold + 30),
                "--rtp-ports",
                f"{rtp_lo}-{rtp_lo + 4 * args.calls + 7}",
                "--seconds",
                str(args.hold * 4 + 600),
            ]
            with background(argv, cwd=REPO, log=workdir / "pyvoip_answerer.log", grace=10) as proc:
                deadline = time.monotonic() + 20
                while not kam.registered("ivr"):
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError((workdir / "pyvoip_answerer.log").read_text())
                    time.sleep(0.2)
                yield (
                    kam.address,
                    [proc.pid],
                    "pyVoIP 1.6.8 answerer behind Kamailio (latency includes the proxy)",
                )
    else:
        sections: dict[str, dict[str, object]] = {
            "sip": {"max_calls": args.calls * 2},
            "log": {"level": "warning"},
        }
        if args.flow:  # e.g. benchmarks/flows/dtmf_hold.yaml: keys only, no speech recognition
            flow = Path(args.flow).resolve()
            sections["ivr"] = {"flows": flow.parent, "default_flow": flow.stem}
        if args.asr:
            sections["asr"] = {"engine": args.asr}
        if args.full_gc_interval is not None:
            sections["node"] = {"full_gc_interval": args.full_gc_interval}
        if args.send_ahead is not None:
            sections["rtp"] = {"send_ahead_ms": args.send_ahead}
        if args.realtime_loop:
            sections.setdefault("rtp", {})["realtime_loop"] = "yes"
        with contextlib.ExitStack() as stack:
            label = "voice service (started by the benchmark)"
            if args.postgres:  # the history on PostgreSQL (a database of its own) instead of SQLite
                name = stack.enter_context(scratch_database("bench_calls"))
                sections["database"] = {"url": f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"}
                label += " on PostgreSQL"
            svc = stack.enter_context(running_service(workdir, rtp_pairs=args.calls + 20,
                                                      **sections))  # type: ignore[arg-type]
            METRICS.append(f"{svc.http_url}/metrics")
            yield svc.sip_address, [svc.pid], label


def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench-calls-"))
    workdir.mkdir(parents=True, exist_ok=True)
    sipp_plays = args.raw_callers or args.no_sinks
    scenario, pcap = bench_files(workdir, args.hold, args.audio, args.digit, sipp_plays=sipp_plays)
    if args.calls > 2400:  # sipp's [auto_media_port] wraps at +10000
        raise SystemExit("at most 2400 calls per run (one media port block each)")
    media = free_port((20000, 29999), tcp=False, count=args.calls + 2, step=4)
    media_hi = media + 4 * (args.calls + 2)
    with target(args, workdir) as (address, pids, label), contextlib.ExitStack() as sinks:
        player = None
        if not sipp_plays:  # the callers talk from bound sockets (sipp binds -mp and -mp + 2)
            player = sinks.enter_context(caller_media(media + 4, args.calls, pcap))
        elif not args.no_sinks:
            # sipp binds -mp and -mp + 2 itself (its first call's ports); the +4 per call after that
            # are in SDP only
            sinks.enter_context(media_sinks(media + 4, media_hi + 1))
        host, port = address.rsplit(":", 1)
        if args.target and sip_options(int(port), host) is None:  # sipp's UAS ignores OPTIONS
            raise RuntimeError(f"{address} does not answer OPTIONS")
        bpf = f"udp and ((dst portrange {media}-{media_hi}) or port {port})"
        pids = with_children(pids)
        cpu0, t0 = [cpu_seconds(p) for p in pids], time.monotonic()
        with capture(workdir / "capture.pcap", bpf, snaplen=0, buffer_mb=256):
            result = run_sipp(
                scenario,
                address,
                workdir=workdir / "sipp",
                calls=args.calls,
                limit=args.concurrent or args.calls,
                rate=args.rate,
                transport=args.transport,
                media_port=media,
                service="ivr",
                timeout=args.calls / args.rate + args.hold + args.audio + 60,
                pcaps={"call.pcap": pcap},
                extra=["-max_socket", "10000"],
            )
        wall = time.monotonic() - t0
        talking = ({"calls": player.started_calls, "packets": player.sent, "send_errors": player.send_errors}
                   if player else None)
        lateness = pacer_lateness(METRICS[-1]) if METRICS and not args.target else {}
        collections = gc_pauses(METRICS[-1]) if METRICS and not args.target else {}
        if args.send_ahead == 0:
            lateness.pop("overdue", None)  # no transmitter: nothing is made ahead
        cpus = [(cpu_seconds(p) - c) / wall * 100 for p, c in zip(pids, cpu0, strict=True)]
        cpu = sum(cpus) if pids else None
    latency, invite_times = sip_latencies(workdir / "capture.pcap", int(port))
    rtp = [p for p in read_pcap(workdir / "capture.pcap") if media <= p.dst_port <= media_hi]
    pacing = pacing_stats(rtp)
    cps = (len(invite_times) - 1) / (invite_times[-1] - invite_times[0]) if len(invite_times) > 1 else None
    return {
        "target": label,
        "flow": args.flow or "ivr_flows/main.yaml",
        "calls": args.calls,
        "rate": args.rate,
        "hold_s": args.hold,
        "transport": args.transport,
        "concurrent_held": peak_concurrent(workdir / "sipp" / "stats.csv"),
        "calls_per_second": cps,
        "successful": result.successful,
        "failed": result.failed,
        "failures": result.failures,
        "invite_200_ms_p50": pct(latency, 50),
        "invite_200_ms_p99": pct(latency, 99),
        "sipp_rtd_ms_p50": result.rtt_percentile(50),
        "sipp_rtd_ms_p99": result.rtt_percentile(99),
        "rtp_streams": pacing.streams,
        "rtp_intervals": pacing.packets,
        "pacing_error_ms_p50": pacing.p50_ms,
        "pacing_error_ms_p99": pacing.p99_ms,
        "pacing_error_ms_max": pacing.max_ms,
        "pacer_within": lateness,
        "gc_pauses": collections,
        "caller_media": talking or "sipp play_pcap_audio (raw sockets)",
        "answerer_cpu_percent": cpu,
        "answerer_cpu_percent_each": cpus,
        "load_average": os.getloadavg(),
        "workdir": str(workdir),
        "sipp_exit": result.returncode,
        "capture": capture_summary(workdir / "capture.pcap"),
    }


def within(shares: dict[str, float]) -> str:
    if not shares:
        return "n/a"
    overdue = shares.get("overdue")
    text = ", ".join(f"{float(le) * 1000:g} ms: {share * 100:.2f} %" for le, share in shares.items()
                     if le != "overdue") + " of packets sent within that of their deadline"
    return text + (f"; {overdue * 100:.2f} % made after it (pacer later than send_ahead)"
                   if overdue is not None else "")


def collected(gens: dict[str, Any]) -> str:
    if not gens:
        return "n/a"
    return "; ".join(f"gen{g} {v['count']} ({v['seconds']:.2f} s in all, {v['over_20ms']} over 20 ms, "
                     f"{v['over_40ms']} over 40, {v['over_80ms']} over 80)" for g, v in gens.items())


def talking(media: Any) -> str:
    if isinstance(media, str):
        return media
    return (f"{media['calls']} callers talked from bound sockets, {media['packets']} packets "
            f"({media['send_errors']} send errors)")


def show(r: dict[str, Any]) -> str:
    def f(v: Any, unit: str = " ms") -> str:
        return "n/a" if v is None else (f"{v:.2f}{unit}" if isinstance(v, float) else f"{v}{unit}")

    calls = f"{r['calls']} at {r['rate']}/s, hold {r['hold_s']} s, transport {r['transport']}"
    latency = f"p50 {f(r['invite_200_ms_p50'])}, p99 {f(r['invite_200_ms_p99'])}"
    sipp_rtd = f"(sipp rtd: p50 {f(r['sipp_rtd_ms_p50'])}, p99 {f(r['sipp_rtd_ms_p99'])})"
    pacing = f"p50 {f(r['pacing_error_ms_p50'])}, p99 {f(r['pacing_error_ms_p99'])}"
    pacing += f", max {f(r['pacing_error_ms_max'])}"
    streams = f"over {r['rtp_streams']} streams / {r['rtp_intervals']} intervals"
    return "\n".join(
        [
            f"target:                 {r['target']}, flow {r['flow']}",
            f"calls:                  {calls}",
            f"concurrent calls held:  {r['concurrent_held']}",
            f"calls per second:       {f(r['calls_per_second'], '')}",
            f"failed calls:           {r['failed']} (successful {r['successful']}) {r['failures'] or ''}",
            f"INVITE->200 latency:    {latency}  {sipp_rtd}",
            f"RTP pacing error:       {pacing} {streams}",
            f"pacer's own view:       {within(r['pacer_within'])}",
            f"callers' media:         {talking(r['caller_media'])}",
            f"garbage collections:    {collected(r['gc_pauses'])}",
            f"answerer CPU:           {f(r['answerer_cpu_percent'], ' % of one core')} "
            f"(each process, then its children: RTP transmitter, speech workers: "
            f"{', '.join(f'{c:.0f}' for c in r['answerer_cpu_percent_each'])})",
            f"load average after:     {' '.join(f'{x:.2f}' for x in r['load_average'])}",
            f"capture:                {r['capture']}",
            f"files:                  {r['workdir']}",
        ]
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    who = ap.add_mutually_exclusive_group()
    who.add_argument("--target", help="host:port of a running service (not started here)")
    who.add_argument("--standin", action="store_true", help="benchmark sipp's own UAS (harness check)")
    who.add_argument("--pyvoip", action="store_true", help="benchmark a pyVoIP answerer behind Kamailio")
    who.add_argument("--cluster", type=int, default=0, metavar="N",
                     help="`voice cluster --nodes N`: Kamailio's dispatcher and N nodes on a PostgreSQL "
                          "database of its own (latency includes the proxy)")
    ap.add_argument("--asr", help="[asr] engine of the started service (default: the tests' pocketsphinx; "
                                  "none: keys only, as --cluster's nodes)")
    ap.add_argument("--send-ahead", type=int, metavar="MS",
                    help="[rtp] send_ahead_ms of the started service (default: the service's)")
    ap.add_argument("--full-gc-interval", type=float, metavar="S",
                    help="[node] full_gc_interval of the started service (0: Python's own schedule)")
    ap.add_argument("--realtime-loop", action="store_true",
                    help="[rtp] realtime_loop = yes for the started service")
    ap.add_argument("--raw-callers", action="store_true",
                    help="sipp plays the callers' audio from raw sockets (play_pcap_audio) and the "
                         "callers' ports are bare sinks (the harness of 2026-12-01 17:50-19:15 UTC)")
    ap.add_argument("--no-sinks", action="store_true",
                    help="leave the callers' media ports closed, as sipp does (each packet sent to "
                         "them comes back as ICMP; the harness before 2026-12-01 17:50 UTC)")
    ap.add_argument("--postgres", action="store_true",
                    help="the started service keeps its history on PostgreSQL (127.0.0.1:5432), not SQLite")
    ap.add_argument("--pid", type=int, default=0, help="with --target: process to measure CPU of")
    ap.add_argument("--calls", type=int, default=50, help="concurrent calls (sipp -m and -l)")
    ap.add_argument("--concurrent", type=int, default=0,
                    help="at most this many at once (sipp -l; default --calls): calls end and new ones "
                         "arrive, as a contact center's steady state")
    ap.add_argument("--rate", type=float, default=10.0, help="new calls per second")
    ap.add_argument("--hold", type=float, default=10.0, help="seconds each call stays up after its audio")
    ap.add_argument("--audio", type=float, default=3.0,
                    help="seconds of caller speech before the digit (keep it under --hold: the callers' "
                         "player does not see the BYE and would go on sending to closed ports)")
    ap.add_argument("--digit", default="1")
    ap.add_argument("--transport", default="u1", help="sipp -t: u1 (one socket) or un (one per call)")
    ap.add_argument("--flow", help="flow file the started service runs for every call (default: ivr_flows)")
    ap.add_argument("--workdir", help="keep files here (default: a new temp dir)")
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args()
    result = run(args)
    print(show(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0 if result["failed"] == 0 and result["successful"] == args.calls else 1


if __name__ == "__main__":
    sys.exit(main())
