"""RTP send-path cost: N sessions playing a prompt are ticked directly, frame after frame, and their
packets go out on loopback (real sendto syscalls) to one socket nobody reads (the kernel drops
what overflows its buffer).

    .venv/bin/python benchmarks/rtp_send.py [--sessions 500] [--frames 100] [--runs 7]

Prints the CPU time per packet, best of the runs: the Python work of a tick plus the syscall,
without the timers (benchmarks/rtp_pacing.py measures those, and lateness). Being CPU time of
one process, the figure holds up on a machine busy with other work, where wall-clock pacing
figures do not. Binds ports from --ports (default 27000-27999) on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from voice.aio.rtp import RtpPortPool
from voice.audio import tone


async def run(n: int, frames: int, runs: int, lo: int, hi: int) -> float:
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    port = sink.getsockname()[1]
    pool = RtpPortPool(lo, hi)
    sessions = [await pool.open_session("127.0.0.1") for _ in range(n)]
    prompt = tone(440, 60_000, amplitude=0.3)
    prompt.setflags(write=False)
    for i, s in enumerate(sessions):
        s.configure(remote=("127.0.0.1", port), payload_type=0 if i % 2 else 8,
                    codec="PCMU" if i % 2 else "PCMA", dtmf_payload_type=101)
        s.play(prompt)
        s._pacer.leave(s, s._phase)  # ticked by hand below, not also by the pacer thread
    clocks = [s.clock if hasattr(s, "clock") else s.core.clock for s in sessions]
    best = float("inf")
    for _ in range(runs):
        t = time.process_time()
        for _ in range(frames):
            for s, clock in zip(sessions, clocks, strict=True):
                s._tick(clock.deadline())
        best = min(best, (time.process_time() - t) / (frames * n))
        await asyncio.sleep(0)
    for s in sessions:
        s.close()
    sink.close()
    return best * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sessions", type=int, default=500)
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--ports", default="27000-27999")
    args = ap.parse_args()
    lo, hi = (int(x) for x in args.ports.split("-"))
    n = max(1, min(args.sessions, (hi - lo) // 2))
    us = asyncio.run(run(n, max(1, min(args.frames, 1000)), max(1, min(args.runs, 50)), lo, hi))
    print(f"send path: {us:.2f} us CPU per packet ({n} sessions, best of {args.runs})")


if __name__ == "__main__":
    main()
