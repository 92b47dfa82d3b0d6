"""Flow step latency: from the caller's DTMF digit to the first RTP packet of the next prompt, under
call load (sipp callers, the voice service with benchmarks/flows/flow_step.yaml).

    .venv/bin/python benchmarks/flow_step.py --calls 200 --rate 50 --digits 4

Each sipp call replays a pcap: silence while the menu prompt (a 400 Hz tone) plays, then an RFC 4733
digit "1" (100 ms: 5 packets, the last three with the end bit), then silence, again and again. The
flow answers every "1" with a different recorded prompt (an 800 Hz tone) and returns to the menu.
From a loopback capture (dumpcap, kernel timestamps) of both directions of every call's media:

- step from end bit: first packet of the next prompt minus the caller's first end-bit packet of the
  digit (the figure issue 3 asks for). It can be negative: the service acts on the first packet of
  an event (RFC 4733 section 2.5.2), which leaves 80 ms before the end bit of a 100 ms digit.
- step from first event packet: the same prompt packet minus the digit's first packet, that is the
  service's whole reaction time (receive, flow step, prompt start on the next 20 ms tick).

"First packet of the next prompt" = the first packet after the digit whose payload is exactly the
first 20 ms of the next prompt as the service encodes it (voice.audio.load_prompt + G.711).
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.calls import SCENARIO, cpu_seconds, pct, peak_concurrent, sip_latencies
from tests.peers import free_port
from tests.peers.capture import capture, capture_summary
from tests.peers.pcap import PCMU, RtpStreamBuilder, read_pcap
from tests.peers.rtp import pacing_stats
from tests.peers.service import running_service
from tests.peers.sipp import run_sipp
from voice.audio import load_prompt
from voice.rtp import g711

FLOWS = Path(__file__).resolve().parent / "flows"
EVENT_PT = 101
MENU_HZ, NEXT_HZ = 400, 800
PROMPT_S = 0.4


def write_prompts(prompts: Path) -> bytes:
    """The two tone prompts; returns the first 20 ms of the next prompt as PCMU on the wire."""
    prompts.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(8000 * PROMPT_S)) / 8000
    for name, hz in (("step_menu", MENU_HZ), ("step_next", NEXT_HZ)):
        # starts at full level on sample 0 (a sine from phase 90 degrees): no leading near-silence
        sf.write(prompts / f"{name}.wav", 0.3 * np.cos(2 * np.pi * hz * t), 8000, subtype="PCM_16")
    return g711.encode(load_prompt(prompts / "step_next.wav")[:160], "PCMU")


def caller_pcap(workdir: Path, digits: int, gap_ms: int) -> tuple[Path, float]:
    """Silence, then `digits` times: digit "1" (100 ms), `gap_ms` of silence."""
    stream = RtpStreamBuilder(codec=PCMU).silence(gap_ms)
    for _ in range(digits):
        stream.digits("1", duration_ms=100, gap_ms=gap_ms)
    return stream.write(workdir / "steps.pcap"), stream.duration


def steps(rtp: list[Any], service_ports: tuple[int, int], first_frame: bytes
          ) -> tuple[list[float], list[float]]:
    """(ms from end bit, ms from first event packet) for every digit followed by the next prompt."""
    lo, hi = service_ports
    caller: dict[int, list[Any]] = collections.defaultdict(list)  # by service RTP port
    ours: dict[int, list[Any]] = collections.defaultdict(list)
    for p in rtp:
        if lo <= p.dst_port <= hi and p.payload_type == EVENT_PT:
            caller[p.dst_port].append(p)
        elif lo <= p.src_port <= hi and p.payload == first_frame:
            ours[p.src_port].append(p)
    from_end: list[float] = []
    from_start: list[float] = []
    for port, events in caller.items():
        events.sort(key=lambda p: p.time)
        by_event: dict[int, list[Any]] = collections.defaultdict(list)
        for e in events:
            by_event[e.timestamp].append(e)
        prompt_starts = sorted(p.time for p in ours.get(port, []))
        for pkts in by_event.values():
            first = pkts[0].time
            end = next((p.time for p in pkts if p.payload[1] & 0x80), None)
            start = next((t for t in prompt_starts if t > first), None)
            if end is None or start is None:
                continue
            from_end.append((start - end) * 1000)
            from_start.append((start - first) * 1000)
    return from_end, from_start


def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench-flowstep-"))
    workdir.mkdir(parents=True, exist_ok=True)
    first_frame = write_prompts(workdir / "prompts")
    pcap, audio_s = caller_pcap(workdir, args.digits, args.gap)
    scenario = workdir / "step_call.xml"
    scenario.write_text(SCENARIO.replace('timeout="30000"', f'timeout="{round((audio_s + 2) * 1000)}"'))
    media = free_port((20000, 29999), tcp=False, count=args.calls + 2, step=4)
    media_hi = media + 4 * (args.calls + 2)
    ivr = {"flows": FLOWS, "default_flow": "flow_step", "prompts": workdir / "prompts"}
    with running_service(workdir, rtp_pairs=args.calls + 20, sip={"max_calls": args.calls * 2},
                         ivr=ivr, log={"level": "warning"}) as svc:
        lo, hi = svc.rtp_ports
        port = svc.sip_port
        bpf = f"udp and ((dst portrange {media}-{media_hi}) or (dst portrange {lo}-{hi}) or port {port})"
        cpu0, t0 = cpu_seconds(svc.pid), time.monotonic()
        with capture(workdir / "capture.pcap", bpf, snaplen=0, buffer_mb=256):
            result = run_sipp(scenario, svc.sip_address, workdir=workdir / "sipp", calls=args.calls,
                              limit=args.calls, rate=args.rate, transport="u1", media_port=media,
                              service="ivr", timeout=args.calls / args.rate + audio_s + 60,
                              pcaps={"call.pcap": pcap}, extra=["-max_socket", "10000"])
        cpu = (cpu_seconds(svc.pid) - cpu0) / (time.monotonic() - t0) * 100
    packets = list(read_pcap(workdir / "capture.pcap"))
    from_end, from_start = steps(packets, (lo, hi), first_frame)
    latency, _ = sip_latencies(workdir / "capture.pcap", port)
    pacing = pacing_stats([p for p in packets if media <= p.dst_port <= media_hi])
    return {
        "calls": args.calls, "rate": args.rate, "digits_per_call": args.digits,
        "concurrent_held": peak_concurrent(workdir / "sipp" / "stats.csv"),
        "successful": result.successful, "failed": result.failed, "failures": result.failures,
        "steps_measured": len(from_end), "steps_expected": args.calls * args.digits,
        "step_from_end_ms_p50": pct(from_end, 50), "step_from_end_ms_p99": pct(from_end, 99),
        "step_from_end_ms_max": max(from_end, default=None),
        "step_from_first_ms_p50": pct(from_start, 50), "step_from_first_ms_p99": pct(from_start, 99),
        "step_from_first_ms_max": max(from_start, default=None),
        "invite_200_ms_p50": pct(latency, 50), "invite_200_ms_p99": pct(latency, 99),
        "pacing_error_ms_p50": pacing.p50_ms, "pacing_error_ms_p99": pacing.p99_ms,
        "answerer_cpu_percent": cpu, "capture": capture_summary(workdir / "capture.pcap"),
        "workdir": str(workdir),
    }


def show(r: dict[str, Any]) -> str:
    def f(v: Any) -> str:
        return "n/a" if v is None else f"{v:.2f}"

    end = f"p50 {f(r['step_from_end_ms_p50'])} ms, p99 {f(r['step_from_end_ms_p99'])} ms"
    first = f"p50 {f(r['step_from_first_ms_p50'])} ms, p99 {f(r['step_from_first_ms_p99'])} ms"
    return "\n".join([
        f"calls:                  {r['calls']} at {r['rate']}/s, {r['digits_per_call']} digits each",
        f"concurrent calls held:  {r['concurrent_held']}",
        f"failed calls:           {r['failed']} (successful {r['successful']}) {r['failures'] or ''}",
        f"steps measured:         {r['steps_measured']} of {r['steps_expected']}",
        f"step from end bit:      {end}, max {f(r['step_from_end_ms_max'])} ms",
        f"step from first packet: {first}, max {f(r['step_from_first_ms_max'])} ms",
        f"INVITE->200 latency:    p50 {f(r['invite_200_ms_p50'])} ms, p99 {f(r['invite_200_ms_p99'])} ms",
        f"RTP pacing error:       p50 {f(r['pacing_error_ms_p50'])} ms, p99 {f(r['pacing_error_ms_p99'])} ms",
        f"answerer CPU:           {f(r['answerer_cpu_percent'])} % of one core",
        f"capture:                {r['capture']}",
        f"files:                  {r['workdir']}",
    ])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--rate", type=float, default=50.0)
    ap.add_argument("--digits", type=int, default=4, help="digits each caller presses")
    ap.add_argument("--gap", type=int, default=1500, help="ms of silence before each digit")
    ap.add_argument("--workdir")
    ap.add_argument("--json")
    args = ap.parse_args()
    result = run(args)
    print(show(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0 if result["failed"] == 0 and result["steps_measured"] == result["steps_expected"] else 1


if __name__ == "__main__":
    sys.exit(main())
