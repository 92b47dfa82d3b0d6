"""What operations cost on the hot paths: per SIP message (metrics + security checks, trace off),
per RTP lateness observation, per flow step counter, and one /metrics scrape.

    .venv/bin/python benchmarks/ops_overhead.py --messages 200000

Prints microseconds per call (best of 5 rounds, `time.perf_counter`), and the size and render
time of a scrape with 20 queues and 200 agents on the desk.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from cti import metrics
from voice import sipwire
from voice.sip.transaction import Address

INVITE = (b"INVITE sip:100@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bK1\r\n"
          b"From: <sip:+4930123@10.0.0.9>;tag=a\r\nTo: <sip:100@127.0.0.1>\r\nCall-ID: abc@10.0.0.9\r\n"
          b"CSeq: 2 INVITE\r\nContent-Length: 0\r\n\r\n")
OK = b"SIP/2.0 200 OK\r\nCall-ID: abc@10.0.0.9\r\nCSeq: 2 INVITE\r\nContent-Length: 0\r\n\r\n"
PEER = Address("10.0.0.9", 5060, "udp")


def per_call(fn: Callable[[], None], n: int) -> float:
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, time.perf_counter() - t0)
    return best / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=200_000)
    args = parser.parse_args()
    n = args.messages
    received = per_call(lambda: sipwire.received(INVITE, PEER), n)
    print(f"SIP request in (metrics, trace off): {received:.2f} us")
    sent = per_call(lambda: sipwire.sent(OK, PEER), n)
    print(f"SIP response out (metrics, trace off): {sent:.2f} us")
    print(f"RTP send lateness observation: {per_call(lambda: metrics.rtp_send_lateness(0.0007), n):.3f} us")
    print(f"flow step counter: {per_call(lambda: metrics.flow_step('main'), n):.2f} us")
    agents = [{"state": ("available", "on_call", "away")[i % 3]} for i in range(200)]
    queues = {f"queue{i}": i % 4 for i in range(20)}
    waits = {q: 12.0 for q in queues}
    metrics.add_desk(1, lambda: {"queues": queues, "longest_wait": waits, "agents": agents})
    body = metrics.render()
    scrape = per_call(lambda: metrics.render() and None, 200)
    lines = body.count(b"\n")
    print(f"/metrics scrape: {len(body)} bytes, {lines} lines, {scrape / 1000:.2f} ms to render")


if __name__ == "__main__":
    main()
