"""A minimal reorder buffer: out-of-order RTP packets reach listeners in order.

Not a playout buffer (we are an IVR, nothing is played back to a loudspeaker):
it holds at most `depth` packets (3 = 60 ms at 20 ms ptime) waiting for a gap
to fill. When the buffer is full, or the oldest held packet has waited
`max_delay` seconds, the gap is declared lost and delivery moves on. A packet
older than what was already delivered is late and dropped.
"""

from __future__ import annotations

from typing import Generic, TypeVar

T = TypeVar("T")

# A jump this large (either way) is a restarted or switched stream, not reordering.
_RESYNC = 100


def seq_diff(a: int, b: int) -> int:
    """a - b in 16-bit sequence space, in -32768..32767 (RFC 3550 appendix A.1 arithmetic)."""
    return ((a - b + 0x8000) & 0xFFFF) - 0x8000


class ReorderBuffer(Generic[T]):
    def __init__(self, depth: int = 3, max_delay: float = 0.06) -> None:
        self.depth = depth
        self.max_delay = max_delay
        self._expected: int | None = None
        self.held: dict[int, tuple[float, T]] = {}  # seq -> (arrival, packet), waiting for a gap
        self.late = 0  # arrived after their slot was given up, or duplicates
        self.skipped = 0  # sequence numbers given up as lost

    def reset(self) -> list[T]:
        """Forget the stream (new SSRC); returns what was held, in order."""
        out = [self.held[s][1] for s in sorted(self.held, key=lambda s: seq_diff(s, self._expected or 0))]
        self.held.clear()
        self._expected = None
        return out

    def push(self, seq: int, item: T, now: float) -> list[T]:
        """Add one packet; returns the packets now deliverable, in sequence order."""
        if seq == self._expected and not self.held:  # in order with nothing waiting: the usual case
            self._expected = (seq + 1) & 0xFFFF
            return [item]
        if self._expected is None:
            self._expected = seq
        d = seq_diff(seq, self._expected)
        if abs(d) > _RESYNC:
            out = self.reset()
            self._expected = seq
            d = 0
            return out + self._accept(seq, item, now)
        if d < 0 or seq in self.held:
            self.late += 1
            return []
        return self._accept(seq, item, now)

    def _accept(self, seq: int, item: T, now: float) -> list[T]:
        self.held[seq] = (now, item)
        out = self._drain()
        while len(self.held) > self.depth:
            out += self._skip_gap()
        return out + self.poll(now)

    def poll(self, now: float) -> list[T]:
        """Give up on a gap whose oldest waiting packet is older than max_delay."""
        out: list[T] = []
        while self.held and now - min(t for t, _ in self.held.values()) >= self.max_delay:
            out += self._skip_gap()
        return out

    def deadline(self) -> float | None:
        """When `poll` next gives up on a gap (None while nothing is held)."""
        if not self.held:
            return None
        return min(t for t, _ in self.held.values()) + self.max_delay

    def _drain(self) -> list[T]:
        out: list[T] = []
        assert self._expected is not None
        while self._expected in self.held:
            out.append(self.held.pop(self._expected)[1])
            self._expected = (self._expected + 1) & 0xFFFF
        return out

    def _skip_gap(self) -> list[T]:
        assert self._expected is not None
        first = min(self.held, key=lambda s: seq_diff(s, self._expected or 0))
        self.skipped += seq_diff(first, self._expected)
        self._expected = first
        return self._drain()

    def __len__(self) -> int:
        return len(self.held)
