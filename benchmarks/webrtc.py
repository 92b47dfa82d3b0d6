"""Browser-agent bridge benchmark: N concurrent callers bridged to N WebRTC "browsers".

    .venv/bin/python benchmarks/webrtc.py [--calls 10] [--seconds 20] [--codec opus]

The service side runs here, as in production: `voice.callcontrol.webrtc.BrowserPhones` on one event
loop, each caller a real `voice.aio.rtp.RtpSession` (PCMU) bridged to a browser leg (aiortc:
ICE on host candidates, DTLS-SRTP, Opus or G.711 to the browser). The far ends run in a child
process: N plain-socket callers sending PCMU on a 20 ms clock and N aiortc peers standing in for
browsers (signalling through a pipe, as the page's websocket would carry it). Each caller sends
a 60 ms burst once a second, and so does each browser. Printed:
- service CPU (all threads: the loop, aiortc's encoder executor and decoder threads), per call;
- event-loop lag (a 10 ms probe timer's lateness) and our on-loop costs per frame (building
  frames for the browser, resampling the browser's 48 kHz audio to 8 kHz);
- added latency caller -> browser: a burst's first PCMU packet leaving the caller to the SRTP
  packet carrying it reaching the browser's socket (the service's clock, queue, Opus encoder);
- latency browser -> caller: the burst handed to the browser's encoder to its first PCMU packet
  at the caller (includes the browser's encoder, the service's jitter buffer and decoder);
- continuity: packets per stream against 50/s, and gaps over 40 ms between packets.
Everything stays on this machine and stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import fractions
import itertools
import multiprocessing as mp
import os
import socket
import struct
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

MAX_CALLS = 200
BURST_EVERY = 1.0
BURST_FRAMES = 3
PCMU_SILENCE = b"\xff" * 160


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


# ---- the far ends (child process) ------------------------------------------------------------
def far_ends(conn: Any, n: int, seconds: float) -> None:
    asyncio.run(_far_ends(conn, n, seconds))


async def _far_ends(conn: Any, n: int, seconds: float) -> None:
    import av
    from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
    from aiortc.mediastreams import MediaStreamError
    from aiortc.rtcrtpreceiver import RTCRtpReceiver

    from voice.rtp import g711

    loop = asyncio.get_running_loop()
    # SRTP packets as they reach each browser, by RTP timestamp: the arrival side of the latency.
    arrivals: dict[int, dict[int, float]] = {}
    original = RTCRtpReceiver._handle_rtp_packet

    first_ts: dict[int, int] = {}

    async def handle(self: Any, packet: Any, arrival_time_ms: int) -> None:
        # aiortc's decoded frames count pts from the stream's first RTP timestamp
        first = first_ts.setdefault(id(self._track), packet.timestamp)
        arrivals.setdefault(id(self._track), {})[(packet.timestamp - first) & 0xFFFFFFFF] = time.monotonic()
        await original(self, packet, arrival_time_ms)

    RTCRtpReceiver._handle_rtp_packet = handle  # type: ignore[method-assign]

    socks = []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
        socks.append(s)
    conn.send([s.getsockname()[1] for s in socks])
    service_ports: list[int] = conn.recv()

    caller_bursts: list[list[float]] = [[] for _ in range(n)]  # send times
    caller_rx: list[list[float]] = [[] for _ in range(n)]  # arrival times of PCMU from the service
    browser_bursts_heard_at_caller: list[list[float]] = [[] for _ in range(n)]
    browser_burst_sent: list[list[float]] = [[] for _ in range(n)]
    browser_heard: list[list[float]] = [[] for _ in range(n)]  # latency samples caller -> browser
    stop_at = [0.0]

    def on_caller_packet(i: int) -> None:
        s = socks[i]
        while True:
            try:
                data = s.recv(2048)
            except BlockingIOError:
                return
            now = time.monotonic()
            caller_rx[i].append(now)
            if len(data) > 12 and data[1] & 0x7F == 0:
                pcm = g711.decode(data[12:], "PCMU")
                if np.abs(pcm).max() > 3000:
                    heard = browser_bursts_heard_at_caller[i]
                    if not heard or now - heard[-1] > 0.5:
                        heard.append(now)

    for i in range(n):
        loop.add_reader(socks[i].fileno(), on_caller_packet, i)

    async def caller(i: int) -> None:
        wave = np.sin(2 * np.pi * 1000 * np.arange(160) / 8000) * 12000
        burst = g711.encode(wave.astype(np.int16), "PCMU")
        seq, ts, ssrc = 0, 0, 0x1000 + i
        t0 = loop.time() + (i % 50) * 0.0004
        k = 0
        offset = (i * 37) % 50  # bursts of different calls at different moments
        while loop.time() < stop_at[0]:
            wait = t0 + k * 0.02 - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            in_burst = (k - offset) % 50 < BURST_FRAMES and k > 100
            if in_burst and (k - offset) % 50 == 0:
                caller_bursts[i].append(time.monotonic())
            header = struct.pack("!BBHII", 0x80, 0, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc)
            socks[i].sendto(header + (burst if in_burst else PCMU_SILENCE), ("127.0.0.1", service_ports[i]))
            seq, ts, k = seq + 1, ts + 160, k + 1

    class BurstTrack(MediaStreamTrack):
        kind = "audio"

        def __init__(self, i: int) -> None:
            super().__init__()
            self.i, self.k, self.t0 = i, 0, 0.0
            self.offset = (i * 37 + 25) % 50

        async def recv(self) -> av.AudioFrame:
            if self.k == 0:
                self.t0 = loop.time()
            wait = self.t0 + self.k * 0.02 - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            phase = (self.k - self.offset) % 50
            if phase < BURST_FRAMES and self.k > 100:
                pcm = (np.sin(2 * np.pi * 700 * np.arange(960) / 48000) * 12000).astype(np.int16)
                if phase == 0:
                    browser_burst_sent[self.i].append(time.monotonic())
            else:
                pcm = np.zeros(960, dtype=np.int16)
            frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = 48000, self.k * 960, fractions.Fraction(1, 48000)
            self.k += 1
            return frame

    pcs: list[RTCPeerConnection] = []
    listeners: list[asyncio.Future[None]] = []

    async def listen(i: int, track: Any) -> None:
        last = 0.0
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            if np.abs(frame.to_ndarray()).max() > 3000 and time.monotonic() - last > 0.5:
                last = time.monotonic()
                sent = [t for t in caller_bursts[i] if t < last]
                # arrival of the packet that carried it (the decoded frame's pts is its RTP timestamp)
                arrived = arrivals.get(id(track), {}).get(int(frame.pts))
                if sent and arrived is not None and 0 < arrived - sent[-1] < 0.5:
                    browser_heard[i].append(arrived - sent[-1])

    async def answer(i: int, leg: str, sdp: str) -> None:
        pc = RTCPeerConnection()
        pcs.append(pc)

        @pc.on("track")
        def on_track(track: Any) -> None:
            listeners.append(asyncio.ensure_future(listen(i, track)))

        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        pc.addTrack(BurstTrack(i))
        await pc.setLocalDescription(await pc.createAnswer())
        conn.send(("answer", leg, pc.localDescription.sdp))

    stop_at[0] = loop.time() + 3600
    callers = [asyncio.ensure_future(caller(i)) for i in range(n)]
    offers = asyncio.Queue[Any]()
    loop.add_reader(conn.fileno(), lambda: offers.put_nowait(conn.recv()))
    answered = 0
    while answered < n:
        msg = await offers.get()
        if msg[0] == "offer":
            await answer(msg[1], msg[2], msg[3])
            answered += 1
    msg = await offers.get()  # ("measure", start) once every call is bridged
    assert msg[0] == "measure"
    start_rx = [len(x) for x in caller_rx]
    t_start = time.monotonic()
    stop_at[0] = loop.time() + seconds
    await asyncio.gather(*callers)
    t_end = time.monotonic()
    gaps = 0
    rates = []
    for i in range(n):
        rx = [t for t in caller_rx[i][start_rx[i]:] if t <= t_end]
        rates.append(len(rx) / (t_end - t_start))
        gaps += sum(1 for a, b in itertools.pairwise(rx) if b - a > 0.04)
    back: list[float] = []
    for i in range(n):
        for heard in browser_bursts_heard_at_caller[i]:
            sent = [t for t in browser_burst_sent[i] if t < heard]
            if sent and heard - sent[-1] < 0.5:
                back.append(heard - sent[-1])
    loop.remove_reader(conn.fileno())
    conn.send({"to_browser": [x for xs in browser_heard for x in xs], "to_caller": back,
               "caller_rate": rates, "caller_gaps": gaps})
    for pc in pcs:
        await pc.close()


# ---- the service side (this process) -----------------------------------------------------------
async def service(n: int, seconds: float, codec: str, jitter: int) -> dict[str, Any]:
    from voice.aio.rtp import RtpPortPool
    from voice.callcontrol.call import Call, CallInfo
    from voice.callcontrol.fake import FakeSignalling
    from voice.callcontrol.webrtc import BrowserPhones, WebRtcSettings

    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=far_ends, args=(child, n, seconds), daemon=True)
    proc.start()
    loop = asyncio.get_running_loop()
    peer_ports: list[int] = await loop.run_in_executor(None, parent.recv)
    pool = RtpPortPool(34000, 34000 + 4 * n + 4)
    codecs = (codec, *(c for c in ("opus", "PCMU") if c != codec))
    phones = BrowserPhones(WebRtcSettings(codecs=codecs, connect_timeout=30, jitter_frames=jitter))
    calls = []
    for i in range(n):
        rtp = await pool.open_session("127.0.0.1")
        rtp.configure(remote=("127.0.0.1", peer_ports[i]), payload_type=0, codec="PCMU",
                      dtmf_payload_type=None)
        call = Call(CallInfo(call_id=f"bench-{i}", caller=f"+1555{i:04d}", caller_name=None, dialled="1",
                             remote="127.0.0.1:5060"), rtp, FakeSignalling())
        calls.append((call, rtp))
    parent.send([rtp.local_port for _, rtp in calls])

    async def page_send(message: dict[str, Any]) -> None:
        if message["type"] == "rtc_offer":
            parent.send(("offer", int(message["call_id"].split("-")[1]), message["leg"], message["sdp"]))

    phones.attach("bench", page_send)
    inbox = asyncio.Queue[Any]()
    loop.add_reader(parent.fileno(), lambda: inbox.put_nowait(parent.recv()))

    async def answers() -> None:
        while True:
            msg = await inbox.get()
            if isinstance(msg, tuple) and msg[0] == "answer":
                await phones.receive("bench", {"type": "rtc_answer", "leg": msg[1], "sdp": msg[2]})
            else:
                results.put_nowait(msg)

    results = asyncio.Queue[Any]()
    pump = asyncio.ensure_future(answers())
    t0 = time.monotonic()
    legs = await asyncio.gather(*(phones.connect(c, r, "browser:bench", timeout=60) for c, r in calls))
    setup = time.monotonic() - t0
    answered = sum(1 for leg in legs if leg.answered)
    await asyncio.sleep(3)  # warm up: jitter buffers fill, encoders settle

    lags: list[float] = []

    async def probe() -> None:
        while True:
            due = loop.time() + 0.01
            await asyncio.sleep(0.01)
            lags.append(max(0.0, loop.time() - due))

    prober = asyncio.ensure_future(probe())
    build0 = sum(leg.track.build_seconds for leg in legs)
    frames0 = sum(leg.track.frames_sent for leg in legs)
    res0 = sum(leg.resample_seconds for leg in legs)
    wait0 = sum(leg.track.queue_seconds for leg in legs)
    queued0 = sum(leg.track.queued for leg in legs)
    rx0 = sum(leg.frames_received for leg in legs)
    parent.send(("measure", time.monotonic()))
    cpu0, wall0 = time.process_time(), time.monotonic()
    far = await results.get()
    cpu1, wall1 = time.process_time(), time.monotonic()
    loop.remove_reader(parent.fileno())
    prober.cancel()
    frames = sum(leg.track.frames_sent for leg in legs) - frames0
    rx = sum(leg.frames_received for leg in legs) - rx0
    out = {
        "calls": n, "answered": answered, "setup_s": setup, "seconds": wall1 - wall0,
        "cpu_pct": 100 * (cpu1 - cpu0) / (wall1 - wall0),
        "build_us": 1e6 * (sum(leg.track.build_seconds for leg in legs) - build0) / max(1, frames),
        "resample_us": 1e6 * (sum(leg.resample_seconds for leg in legs) - res0) / max(1, rx),
        "queue_ms": 1000 * (sum(leg.track.queue_seconds for leg in legs) - wait0)
        / max(1, sum(leg.track.queued for leg in legs) - queued0),
        "lag_p50_ms": 1000 * pct(lags, 50), "lag_p99_ms": 1000 * pct(lags, 99),
        "lag_max_ms": 1000 * max(lags, default=0.0), **far,
    }
    for leg in legs:
        leg.hangup()
    await phones.aclose()
    pump.cancel()
    for _, rtp in calls:
        rtp.close()
    proc.join(10)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--codec", choices=("opus", "PCMU"), default="opus")
    ap.add_argument("--jitter", type=int, default=2,
                    help="frames aiortc holds before decoding (its own default: 4)")
    args = ap.parse_args()
    if not 1 <= args.calls <= MAX_CALLS or not 1 <= args.seconds <= 300:
        ap.error(f"--calls 1-{MAX_CALLS}, --seconds 1-300")
    r = asyncio.run(service(args.calls, args.seconds, args.codec, args.jitter))
    to_b, to_c = [x * 1000 for x in r["to_browser"]], [x * 1000 for x in r["to_caller"]]
    print(f"calls {r['answered']}/{r['calls']} bridged ({args.codec} to the browsers) in "
          f"{r['setup_s']:.1f} s; measured {r['seconds']:.1f} s; load average {os.getloadavg()[0]:.1f}")
    print(f"service CPU {r['cpu_pct']:.1f}% of one core = {r['cpu_pct'] / r['calls']:.2f}% per bridged call "
          "(loop + aiortc's encoder and decoder threads)")
    print(f"event loop lag p50 {r['lag_p50_ms']:.2f} ms, p99 {r['lag_p99_ms']:.2f} ms, "
          f"max {r['lag_max_ms']:.1f} ms; loop CPU per frame: frame for the browser {r['build_us']:.0f} us, "
          f"48->8 kHz resample {r['resample_us']:.0f} us")
    print(f"caller -> browser (service's clock, queue, encoder): n={len(to_b)} p50 {pct(to_b, 50):.1f} ms, "
          f"p99 {pct(to_b, 99):.1f} ms; waiting for the browser leg's clock: mean {r['queue_ms']:.1f} ms")
    print(f"browser -> caller (browser encoder, service jitter buffer, decoder, caller clock): n={len(to_c)} "
          f"p50 {pct(to_c, 50):.1f} ms, p99 {pct(to_c, 99):.1f} ms")
    rates = r["caller_rate"]
    print(f"continuity at the callers: {min(rates):.1f}-{max(rates):.1f} packets/s per stream (50 expected), "
          f"{r['caller_gaps']} gaps > 40 ms")


if __name__ == "__main__":
    main()
