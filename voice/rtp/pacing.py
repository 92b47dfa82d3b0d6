"""Send-side clock and RTP header state, without I/O.

`FrameClock` holds a fixed schedule t0 + n * 20 ms: the adapter asks for the
next deadline, sleeps until it with `loop.call_at`, and asks how many frames are
due at `now`. Because deadlines are absolute, a late wake-up does not shift the
schedule (no drift as with `sleep(0.02)`), and a long stall is skipped rather
than sent as a burst (receivers' jitter buffers would discard a burst anyway).

`RtpSender` owns SSRC, sequence number and timestamp (RFC 3550 section 5.1:
random initial values), advances the timestamp by 160 for every 20 ms tick
whether or not a packet goes out, and sets the marker bit on the first packet
after a gap (RFC 3551 section 4.1: the first packet of a talkspurt).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from voice.rtp.packet import HEADER_STRUCT as _HEADER

FRAME_SECONDS = 0.02
FRAME_SAMPLES = 160


@dataclass(slots=True)
class Due:
    send: int  # frames to send now (1 normally, up to max_catchup after a late wake-up)
    skipped: int  # frames whose deadline is too far gone: their time passes without a packet


class FrameClock:
    """Absolute-deadline 20 ms schedule."""

    def __init__(self, start: float, period: float = FRAME_SECONDS, max_catchup: int = 3) -> None:
        self.t0 = start
        self.period = period
        self.max_catchup = max_catchup
        self.n = 0  # index of the next frame to send

    def deadline(self) -> float:
        """When frame n is due."""
        return self.t0 + self.n * self.period

    def lateness(self, now: float) -> float:
        return now - self.deadline()

    def take(self, now: float) -> int:
        """How many frames are due at `now` (0 when early); advances the schedule past them."""
        n = self.n
        if now < self.t0 + n * self.period:
            return 0
        # at least one: float rounding of (now - t0) / period must not stall an exactly-on-time wake-up
        count = int((now - self.t0) / self.period) - n + 1
        if count < 1:
            count = 1
        self.n = n + count
        return count

    def due(self, now: float) -> Due:
        """Frames due at `now`, split into those to send and those to skip; advances the schedule."""
        count = self.take(now)
        send = min(count, self.max_catchup)
        return Due(send, count - send)


class RtpSender:
    """Sequence/timestamp/marker state of one outgoing RTP stream."""

    def __init__(self, rng: random.Random | None = None) -> None:
        r = rng or random.SystemRandom()
        self.ssrc = r.getrandbits(32)
        self.seq = r.getrandbits(16)
        self.ts = r.getrandbits(32)
        self.marker_next = True  # the first packet of the stream starts a talkspurt
        self.packets = 0
        self.octets = 0

    def advance(self, frames: int = 1, samples: int = FRAME_SAMPLES) -> None:
        """Let `frames` frame times pass (sent or not): the timestamp follows the clock."""
        self.ts = (self.ts + frames * samples) & 0xFFFFFFFF

    def gap(self) -> None:
        """We stopped sending (hold, stall): the next packet starts a talkspurt."""
        self.marker_next = True

    def frame(self, payload_type: int, payload: bytes) -> bytes:
        """The packet of this frame time, which then passes: `build` + `advance`, in one call
        because it runs 50 times a second per call."""
        m, self.marker_next = self.marker_next, False
        seq, ts = self.seq, self.ts
        self.seq, self.ts = (seq + 1) & 0xFFFF, (ts + FRAME_SAMPLES) & 0xFFFFFFFF
        self.packets += 1
        self.octets += len(payload)
        return _HEADER.pack(0x80, (0x80 if m else 0) | payload_type, seq, ts, self.ssrc) + payload

    def build(self, payload_type: int, payload: bytes, *, timestamp: int | None = None,
              marker: bool | None = None) -> bytes:
        """Serialize the next packet (seq + 1); `timestamp` overrides for RFC 4733 events."""
        m = self.marker_next if marker is None else marker
        self.marker_next = False
        seq = self.seq
        self.seq = (seq + 1) & 0xFFFF
        self.packets += 1
        self.octets += len(payload)
        return _HEADER.pack(0x80, (0x80 if m else 0) | payload_type, seq,
                            self.ts if timestamp is None else timestamp, self.ssrc) + payload
