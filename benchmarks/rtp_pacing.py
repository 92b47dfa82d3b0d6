"""RTP pacing benchmark: N sessions play prompts to N receiver sockets on loopback.

    .venv/bin/python benchmarks/rtp_pacing.py [--sessions 200] [--seconds 10] [--ports 40000-41999]

The senders are real `voice.aio.rtp.RtpSession`s on one event loop in this
process; the receivers run in a child process (plain sockets + epoll) so their
work does not disturb the senders' timers. Printed:
- deadline lateness: how late each 20 ms timer callback ran after its absolute deadline;
- inter-arrival deviation: |arrival gap - 20 ms| per stream, from kernel receive timestamps;
- sequence/timestamp errors seen by the receiver (must be 0);
- CPU% of the sending process (100% = one core).
Everything stays on 127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import multiprocessing as mp
import selectors
import socket
import struct
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from voice.aio.rtp import RtpPortPool, RtpSession
from voice.audio import tone

MAX_SESSIONS = 1000
# Linux: kernel receive timestamps, so the receiver's own scheduling delay is not counted as jitter
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
SCM_TIMESTAMPNS = SO_TIMESTAMPNS


def pct(values: list[float] | np.ndarray, q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if len(values) else float("nan")


def receiver(n: int, seconds: float, conn: mp.connection.Connection) -> None:
    """Child process: bind n sockets, report their ports, record arrivals, send back statistics."""
    sel = selectors.DefaultSelector()
    socks = []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
        if sys.platform == "linux":
            s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        sel.register(s, selectors.EVENT_READ, len(socks))
        socks.append(s)
    conn.send([s.getsockname()[1] for s in socks])
    last: list[tuple[float, int, int] | None] = [None] * n
    gaps: list[float] = []
    seq_errors = ts_errors = packets = 0
    cpu0 = time.process_time()
    start = time.monotonic()
    deadline = start + seconds + 60  # hard cap; normally the parent says stop
    while time.monotonic() < deadline and not conn.poll():
        for key, _ in sel.select(timeout=0.1):
            s = key.fileobj
            i = key.data
            while True:
                try:
                    data, anc, _flags, _addr = s.recvmsg(2048, 64)  # type: ignore[union-attr]
                except BlockingIOError:
                    break
                now = time.time()
                for level, kind, value in anc:
                    if level == socket.SOL_SOCKET and kind == SCM_TIMESTAMPNS and len(value) >= 16:
                        sec, nsec = struct.unpack("qq", value[:16])
                        now = sec + nsec / 1e9
                if len(data) < 12 or 192 <= data[1] <= 223:
                    continue
                seq, ts = struct.unpack_from("!HI", data, 2)
                packets += 1
                prev = last[i]
                if prev is not None:
                    if (seq - prev[1]) & 0xFFFF != 1:
                        seq_errors += 1
                    elif (ts - prev[2]) & 0xFFFFFFFF != 160:
                        ts_errors += 1
                    else:
                        gaps.append(now - prev[0])
                last[i] = (now, seq, ts)
    cpu = time.process_time() - cpu0
    dev = np.abs(np.asarray(gaps) - 0.02) * 1000
    conn.send({"packets": packets, "seq_errors": seq_errors, "ts_errors": ts_errors,
               "dev_p50": pct(dev, 50), "dev_p99": pct(dev, 99),
               "dev_max": float(dev.max()) if len(dev) else 0.0,
               "cpu": cpu / (time.monotonic() - start) * 100})


async def run(n: int, seconds: float, lo: int, hi: int, ports: list[int]) -> dict[str, float]:
    lateness: list[float] = []
    gc_pauses: list[float] = []
    gc_start = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            gc_start[0] = time.perf_counter()
        else:
            gc_pauses.append(time.perf_counter() - gc_start[0])

    gc.callbacks.append(on_gc)
    orig = RtpSession._tick

    def timed_tick(self: RtpSession, now: float) -> bool:
        clock = self.core.clock
        if clock is not None:
            lateness.append(time.monotonic() - clock.deadline())
        return orig(self, now)

    RtpSession._tick = timed_tick  # type: ignore[method-assign]
    pool = RtpPortPool(lo, hi)
    prompt = tone(440, 3000, amplitude=0.3)
    prompt.setflags(write=False)  # shared and read-only: encoded once per codec
    sessions = []
    loop = asyncio.get_running_loop()
    for i, port in enumerate(ports):
        s = await pool.open_session("127.0.0.1")
        s.configure(remote=("127.0.0.1", port), payload_type=0 if i % 2 else 8,
                    codec="PCMU" if i % 2 else "PCMA", dtmf_payload_type=101)
        sessions.append(s)
        if i % 20 == 19:
            await asyncio.sleep(0.003)  # spread start phases like real call arrivals

    async def player(s: RtpSession) -> None:
        while not s.closed:
            await s.play(prompt)

    tasks = [asyncio.create_task(player(s)) for s in sessions]
    await asyncio.sleep(0.5)  # warm-up
    lateness.clear()
    gc_pauses.clear()
    sent0 = sum(s.stats["packets_sent"] for s in sessions)
    skipped0 = sum(s.stats["skipped_frames"] for s in sessions)
    cpu0, t0 = time.process_time(), loop.time()
    await asyncio.sleep(seconds)
    cpu_s = time.process_time() - cpu0
    cpu = cpu_s / (loop.time() - t0) * 100
    sent = sum(s.stats["packets_sent"] for s in sessions) - sent0
    skipped = sum(s.stats["skipped_frames"] for s in sessions) - skipped0
    gc_max = max(gc_pauses, default=0.0) * 1000
    for s in sessions:
        s.close()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    RtpSession._tick = orig  # type: ignore[method-assign]
    late_ms = np.asarray(lateness) * 1000
    return {"gc_max": gc_max, "gc_count": len(gc_pauses), "cpu": cpu,
            "cpu_us_per_packet": cpu_s / max(sent, 1) * 1e6,
            "late_p50": pct(late_ms, 50), "late_p99": pct(late_ms, 99),
            "late_max": float(late_ms.max()), "ticks": len(lateness), "sent": sent, "skipped": skipped}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sessions", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--ports", default="40000-41999", help="sender RTP port range")
    args = ap.parse_args()
    n = max(1, min(args.sessions, MAX_SESSIONS))
    seconds = max(1.0, min(args.seconds, 60.0))
    lo, hi = (int(x) for x in args.ports.split("-"))
    if (hi - lo) // 2 < n:
        raise SystemExit(f"port range {args.ports} is too small for {n} sessions")
    parent, child = mp.Pipe()
    proc = mp.get_context("fork").Process(target=receiver, args=(n, seconds + 0.5, child), daemon=True)
    proc.start()
    ports = parent.recv()
    sender = asyncio.run(run(n, seconds, lo, hi, ports))
    parent.send("stop")
    rx = parent.recv()
    proc.join(10)
    print(f"sessions={n} seconds={seconds:.0f} packets sent in the window={sender['sent']} "
          f"received overall={rx['packets']}")
    print(f"deadline lateness ms: p50={sender['late_p50']:.3f} p99={sender['late_p99']:.3f} "
          f"max={sender['late_max']:.3f} (ticks={sender['ticks']}, skipped frames={sender['skipped']})")
    print(f"inter-arrival deviation from 20 ms, ms: p50={rx['dev_p50']:.3f} p99={rx['dev_p99']:.3f} "
          f"max={rx['dev_max']:.3f}")
    print(f"receiver: sequence errors={rx['seq_errors']} timestamp jumps (frames skipped after a stall)="
          f"{rx['ts_errors']}")
    print(f"CPU: sender process {sender['cpu']:.1f}% of one core "
          f"({sender['cpu'] / n:.3f}% per session, {sender['cpu_us_per_packet']:.1f} us per packet sent), "
          f"receiver process {rx['cpu']:.1f}%")
    print(f"GC runs in the window={sender['gc_count']} longest={sender['gc_max']:.2f} ms")
    print(f"linear estimate for 500 sessions: {sender['cpu'] / n * 500:.0f}% of one core")


if __name__ == "__main__":
    main()
