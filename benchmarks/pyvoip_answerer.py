"""A pyVoIP 1.6.8 answering machine, the side-by-side baseline for benchmarks/calls.py --pyvoip.

    .venv/bin/python benchmarks/pyvoip_answerer.py --registrar 127.0.0.1:5060 --user ivr \
        --wav prompt.wav --hold 10 --rtp-ports 30000-31999 [--seconds 120]

Registers as `--user` (pyVoIP needs a registrar: it sends everything to it), answers every call,
plays the WAV (looped, as pyVoIP's 8-bit audio), reads what the caller sends, and hangs up after
`--hold` seconds unless the caller hangs up first. pyVoIP runs three threads per call (call
callback, RTP receive, RTP transmit, each with its own sleep-based pacing). Exits after `--seconds`.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.peers.pcap import read_wav
from tests.peers.pyvoip_phone import PyVoipPhone, to_u8


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--registrar", required=True, help="host:port of the registrar/proxy (Kamailio)")
    ap.add_argument("--user", default="ivr")
    ap.add_argument("--wav", required=True)
    ap.add_argument("--hold", type=float, default=10.0, help="seconds before we hang up")
    ap.add_argument("--sip-port", type=int, default=0)
    ap.add_argument("--rtp-ports", default="30000-31999")
    ap.add_argument("--seconds", type=float, default=600.0, help="run time before exiting")
    args = ap.parse_args()

    host, port = args.registrar.rsplit(":", 1)
    lo, hi = (int(p) for p in args.rtp_ports.split("-"))
    audio = to_u8(read_wav(Path(args.wav)))
    stats = {"answered": 0, "ended": 0, "errors": 0}
    lock = threading.Lock()

    def on_call(call: Any) -> None:
        try:
            call.answer()
            with lock:
                stats["answered"] += 1
            deadline = time.monotonic() + args.hold
            next_write = 0.0
            while time.monotonic() < deadline and call.state.value == "ANSWERED":
                if time.monotonic() >= next_write:  # keep the transmit buffer fed
                    call.write_audio(audio)
                    next_write = time.monotonic() + len(audio) / 8000 - 0.5
                call.read_audio(160, blocking=False)
                time.sleep(0.02)
            if call.state.value == "ANSWERED":
                call.hangup()
            with lock:
                stats["ended"] += 1
        except Exception as exc:
            with lock:
                stats["errors"] += 1
            print(f"pyvoip_answerer: call error: {exc!r}", file=sys.stderr, flush=True)

    phone = PyVoipPhone(
        (host, int(port)), args.user, on_call=on_call, sip_port=args.sip_port or None, rtp_ports=(lo, hi)
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    phone.start()
    print(
        f"pyvoip_answerer: registered {args.user} at {args.registrar} from port {phone.sip_port}", flush=True
    )
    stop.wait(args.seconds)
    phone.stop()
    print(f"pyvoip_answerer: {stats}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
