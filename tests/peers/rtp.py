"""A tiny Python RTP endpoint for tests: records what a peer sends, sends a prepared stream back
from the same socket (symmetric RTP, so a strictly latching peer accepts it), and measures pacing."""

from __future__ import annotations

import itertools
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from tests.peers import HOST, free_rtp_port
from tests.peers.pcap import PCMA, PCMU, RtpPacket, decode, events


class RtpEndpoint:
    """UDP socket on 127.0.0.1 with a receive thread; use as a context manager."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port if port is not None else free_rtp_port()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.sock.bind((HOST, self.port))
        self.sock.settimeout(0.1)
        self.received: list[RtpPacket] = []
        self.sources: set[tuple[str, int]] = set()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._receive, name=f"rtp-recv-{self.port}", daemon=True)]

    def __enter__(self) -> RtpEndpoint:
        self._threads[0].start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(5)
        self.sock.close()

    def _receive(self) -> None:
        while not self._stop.is_set():
            try:
                data, addr = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            packet = RtpPacket.parse(data, time.monotonic(), addr[1], self.port)
            if packet is not None:
                self.sources.add(addr)
                self.received.append(packet)

    def send(
        self, packets: Sequence[RtpPacket], dest: tuple[str, int], *, wait: bool = False
    ) -> threading.Thread:
        """Send `packets` to `dest` from this socket at their `time` offsets (absolute deadlines)."""

        def run() -> None:
            start = time.monotonic()
            for p in packets:
                delay = start + p.time - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    return
                try:
                    self.sock.sendto(p.serialize(), dest)
                except OSError:
                    return

        t = threading.Thread(target=run, name=f"rtp-send-{self.port}", daemon=True)
        self._threads.append(t)
        t.start()
        if wait:
            t.join()
        return t

    def wait_packets(self, count: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return len(self.received) >= count

    def digits(self) -> str:
        return events(self.received)

    def audio(self) -> np.ndarray:
        return heard_audio(self.received)


def heard_audio(packets: Iterable[RtpPacket]) -> np.ndarray:
    """Concatenated decoded G.711 payloads, in arrival order."""
    chunks = [decode(p.payload_type, p.payload) for p in packets if p.payload_type in (PCMU, PCMA)]
    return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)


def rms(pcm: np.ndarray) -> float:
    return float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2))) if len(pcm) else 0.0


@dataclass(frozen=True, kw_only=True)
class PacingStats:
    streams: int
    packets: int
    p50_ms: float
    p99_ms: float
    max_ms: float


def pacing_errors_ms(packets: Iterable[RtpPacket]) -> list[float]:
    """Per stream (SSRC and ports), |inter-arrival time - RTP timestamp delta| of consecutive audio
    packets, in ms.

    This is the receiver's view of the sender's pacing (RFC 3550 section 6.4.1 uses the same
    difference, smoothed, for its jitter figure); packets after a sequence gap are skipped.
    """
    by_ssrc: dict[tuple[int, int, int], list[RtpPacket]] = defaultdict(list)
    for p in packets:
        if p.payload_type in (PCMU, PCMA):
            by_ssrc[p.ssrc, p.src_port, p.dst_port].append(p)
    errors: list[float] = []
    for stream in by_ssrc.values():
        stream.sort(key=lambda p: p.time)
        for a, b in itertools.pairwise(stream):
            if (b.seq - a.seq) & 0xFFFF != 1:
                continue
            expected = ((b.timestamp - a.timestamp) & 0xFFFFFFFF) / 8000
            errors.append(abs((b.time - a.time) - expected) * 1000)
    return errors


def pacing_stats(packets: Sequence[RtpPacket]) -> PacingStats:
    errors = pacing_errors_ms(packets)
    arr = np.array(errors) if errors else np.zeros(1)
    return PacingStats(
        streams=len({(p.ssrc, p.src_port, p.dst_port) for p in packets if p.payload_type in (PCMU, PCMA)}),
        packets=len(errors),
        p50_ms=float(np.percentile(arr, 50)),
        p99_ms=float(np.percentile(arr, 99)),
        max_ms=float(arr.max()),
    )


_ROWS, _COLS, _KEYS = (697, 770, 852, 941), (1209, 1336, 1477, 1633), "123A456B789C*0#D"


def _goertzel(block: np.ndarray, freq: float) -> float:
    coeff = 2 * np.cos(2 * np.pi * freq / 8000)
    s1 = s2 = 0.0
    for x in block:
        s1, s2 = x + coeff * s1 - s2, s1
    return float(s2 * s2 + s1 * s1 - coeff * s1 * s2)


def inband_digits(pcm: np.ndarray, block: int = 320) -> str:
    """DTMF tone pairs found in 40 ms blocks (a plain Goertzel check, to verify what a peer sent)."""
    out, last = [], ""
    x = pcm.astype(np.float64) / 32768
    for i in range(0, len(x) - block + 1, block):
        b = x[i : i + block]
        energy = float(np.dot(b, b))
        rows = [_goertzel(b, f) for f in _ROWS]
        cols = [_goertzel(b, f) for f in _COLS]
        r, c = int(np.argmax(rows)), int(np.argmax(cols))
        # both tones must carry most of the block's energy (Goertzel power ~ (N/2)^2 * A^2 / 4)
        tonal = (rows[r] + cols[c]) * 2 / block
        key = _KEYS[r * 4 + c] if energy > 1e-3 and tonal > 0.6 * energy else ""
        if key and key != last:
            out.append(key)
        last = key
    return "".join(out)


def wait_sources(ep: RtpEndpoint, timeout: float) -> tuple[str, int]:
    """The first address RTP reached `ep` from, waiting up to `timeout` s for one."""
    deadline = time.monotonic() + timeout
    while not ep.sources and time.monotonic() < deadline:
        time.sleep(0.02)
    assert ep.sources, "no RTP arrived"
    return next(iter(ep.sources))
