"""How long a realtime task loses its CPU on this machine: a floor under any pacing figure.

A SCHED_FIFO process (priority 12: above the service's pacer and transmitter) wakes every 2 ms,
does the same short piece of pure-Python work (about 0.1-0.2 ms), and times it. Nothing in user
space can preempt it, so what inflates that time is the kernel (interrupts and the softirqs run
on their way out: on loopback, other processes' packets) or the hypervisor taking the vCPU away.

    .venv/bin/python benchmarks/cpu_stalls.py [--seconds 10]

Run it alone for the machine's own floor, or beside `benchmarks/calls.py` for the floor under
load. Prints the work's time p50/p99/p99.9/max and the share of wakes where it took 3 times its
calibrated length or more. Without the right to SCHED_FIFO it says so and runs at normal priority.
"""

from __future__ import annotations

import argparse
import os
import time


def work() -> int:
    x = 0
    for i in range(4000):
        x += i
    return x


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(12))
        policy = "SCHED_FIFO 12"
    except (AttributeError, OSError) as exc:
        policy = f"normal priority (realtime refused: {exc})"
    t = time.perf_counter()
    for _ in range(50):
        work()
    base = (time.perf_counter() - t) / 50
    times: list[float] = []
    end = time.monotonic() + min(max(args.seconds, 1.0), 600.0)
    while time.monotonic() < end:
        time.sleep(0.002)
        t0 = time.perf_counter()
        work()
        times.append(time.perf_counter() - t0)
    times.sort()
    n = len(times)

    def us(q: float) -> str:
        return f"{times[min(n - 1, int(n * q))] * 1e6:.0f}"

    inflated = sum(d >= 3 * base for d in times) / n * 100
    print(f"{policy}, {n} wakes over {args.seconds:g} s; work calibrated at {base * 1e6:.0f} us")
    print(f"work took: p50 {us(0.5)} / p99 {us(0.99)} / p99.9 {us(0.999)} / max {times[-1] * 1e6:.0f} us; "
          f"3x or more: {inflated:.2f} % of wakes")


if __name__ == "__main__":
    main()
