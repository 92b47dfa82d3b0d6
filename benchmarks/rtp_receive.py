"""RTP receive-path cost: one RtpSession is fed speech packets directly (datagram in -> digit and
audio listeners, in-band DTMF detection on, as it is until a peer sends RFC 4733 events).

    .venv/bin/python benchmarks/rtp_receive.py [--packets 2000] [--runs 7]

Prints the CPU time per packet (best of the runs); no sockets are read, so this is the Python
and numpy work only (asyncio's own recvfrom comes on top). Binds two loopback UDP ports.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from voice.aio.rtp import RtpPortPool
from voice.rtp import g711
from voice.rtp.pacing import RtpSender


def packets(sender: RtpSender, speech: np.ndarray, n: int) -> list[bytes]:
    out = []
    for i in range(n):
        out.append(sender.build(0, g711.encode(speech[i * 160:(i + 1) * 160], "PCMU")))
        sender.advance()
    return out


async def run(n: int, runs: int) -> float:
    pool = RtpPortPool(40000, 60000)
    session = await pool.open_session("127.0.0.1")
    session.configure(remote=("127.0.0.1", 9), payload_type=0, codec="PCMU", dtmf_payload_type=101)
    session.set_listeners(lambda d: None, lambda f: None)
    speech = np.random.default_rng(1).normal(0, 3000, 160 * n).astype(np.int16)
    sender = RtpSender()
    best = float("inf")
    for _ in range(runs):
        batch = packets(sender, speech, n)
        t = time.process_time()
        for i, data in enumerate(batch):
            session._receive(data, ("127.0.0.1", 9), False)
            if i % 50 == 49:
                await asyncio.sleep(0)  # the loop's turn: batched in-band detection runs here
        await asyncio.sleep(0)
        best = min(best, (time.process_time() - t) / n)
    session.close()
    return best * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--packets", type=int, default=2000)
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    us = asyncio.run(run(args.packets, args.runs))
    print(f"receive path: {us:.2f} us CPU per packet (in-band DTMF on, best of {args.runs})")


if __name__ == "__main__":
    main()
