"""DTMF: RFC 4733 telephone-event receive and send, and in-band tone detection.

Receive rules (RFC 4733 section 2.5.2): an event is identified by its RTP
timestamp, which stays the same in every packet of one key press, including the
(usually three) end packets. So a digit is reported on the *first* packet seen
for a new timestamp, whatever it is (start, update or end): losing the first
packets, or every packet but one, loses nothing, and retransmitted end packets
or reordered updates of an event already reported are ignored.
"""

from __future__ import annotations

import functools
import struct
from collections import deque
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

# RFC 4733 section 3.2 table 3: events 0-15 are the DTMF keys.
EVENT_DIGITS = "0123456789*#ABCD"
DIGIT_EVENTS = {d: i for i, d in enumerate(EVENT_DIGITS)}
_EVENT = struct.Struct("!BBH")


@dataclass(frozen=True, slots=True, kw_only=True)
class TelephoneEvent:
    event: int
    end: bool
    volume: int
    duration: int

    @classmethod
    def parse(cls, payload: bytes) -> TelephoneEvent | None:
        """RFC 4733 section 2.3 payload; None when shorter than 4 bytes."""
        if len(payload) < 4:
            return None
        event, flags, duration = _EVENT.unpack_from(payload)
        return cls(event=event, end=bool(flags & 0x80), volume=flags & 0x3F, duration=duration)

    def serialize(self) -> bytes:
        return _EVENT.pack(self.event, (0x80 if self.end else 0) | (self.volume & 0x3F), self.duration)


class Rfc4733Receiver:
    """Turns telephone-event payloads into digits, once per key press."""

    def __init__(self, memory: int = 16) -> None:
        self._seen: deque[int] = deque(maxlen=memory)  # timestamps already reported (or ignored)
        self._last: tuple[int, int, int, bool] | None = None  # (timestamp, event, duration, ended)

    def receive(self, payload: bytes, timestamp: int) -> str | None:
        """Feed one telephone-event payload with its RTP timestamp; returns a new digit or None."""
        ev = TelephoneEvent.parse(payload)
        if ev is None:
            return None
        last = self._last
        if last is not None and last[0] == timestamp:
            self._last = (timestamp, last[1], max(last[2], ev.duration), last[3] or ev.end)
            return None
        if timestamp in self._seen:
            return None  # a late packet of an older event
        # RFC 4733 2.5.1.3: an event longer than the 16-bit duration field continues in a new
        # segment with a new timestamp; that is the same key press, not a new digit.
        continuation = (
            last is not None and not last[3] and last[1] == ev.event and last[2] >= 0xFFFF - 1600
            and 0 < (timestamp - last[0]) & 0xFFFFFFFF <= 0xFFFF + 1600
        )
        self._seen.append(timestamp)
        self._last = (timestamp, ev.event, ev.duration, ev.end)
        if continuation or ev.event >= len(EVENT_DIGITS):
            return None  # other events (flash = 16, tones 17-255) are not keys: ignored
        return EVENT_DIGITS[ev.event]

    def reset(self) -> None:
        self._seen.clear()
        self._last = None


@dataclass(frozen=True, slots=True)
class EventPacket:
    offset: float  # seconds after the start of the event when this packet is due
    payload: bytes
    marker: bool


def rfc4733_packets(digit: str, duration_ms: int, interval_ms: int = 50, volume: int = 10,
                    clock_rate: int = 8000) -> list[EventPacket]:
    """The packets of one key press: updates every `interval_ms` with a growing duration,
    then the final packet three times (RFC 4733 2.5.1.4), marker on the first (2.5.1.2).
    All share one RTP timestamp, chosen by the sender at the start."""
    try:
        event = DIGIT_EVENTS[digit.upper()]
    except KeyError:
        raise ValueError(f"not a DTMF digit: {digit!r} (expected one of {EVENT_DIGITS})") from None
    total = max(1, min(duration_ms * clock_rate // 1000, 0xFFFF))
    step = interval_ms * clock_rate // 1000
    out: list[EventPacket] = []
    k = 0
    while (k + 1) * step < total:
        ev = TelephoneEvent(event=event, end=False, volume=volume, duration=(k + 1) * step)
        out.append(EventPacket(k * interval_ms / 1000, ev.serialize(), marker=k == 0))
        k += 1
    end = TelephoneEvent(event=event, end=True, volume=volume, duration=total).serialize()
    for i in range(3):
        out.append(EventPacket((k + i) * interval_ms / 1000, end, marker=(k + i) == 0))
    return out


class Rfc4733Sender:
    """One key press on a clock: which event packets are due at `now`, and when the next one is.

    The RTP timestamp of every packet is `timestamp`, the sender's clock at the start
    of the event (RFC 4733 2.5.1.2); sequence numbers come from the stream's sender.
    """

    def __init__(self, digit: str, duration_ms: int, *, start: float, timestamp: int,
                 interval_ms: int = 50, volume: int = 10) -> None:
        self.digit = digit
        self.start = start
        self.timestamp = timestamp
        self._packets = rfc4733_packets(digit, duration_ms, interval_ms, volume)
        self._next = 0

    @property
    def done(self) -> bool:
        return self._next >= len(self._packets)

    def next_deadline(self) -> float | None:
        return None if self.done else self.start + self._packets[self._next].offset

    def due(self, now: float) -> list[EventPacket]:
        """Packets whose time has come (all of them, in order, after a late wake-up)."""
        out: list[EventPacket] = []
        while not self.done and self.start + self._packets[self._next].offset <= now:
            out.append(self._packets[self._next])
            self._next += 1
        return out


# ---- in-band detection ------------------------------------------------------------------------
VECTOR_MIN = 8  # blocks from which the checks run as array operations
ROWS = (697.0, 770.0, 852.0, 941.0)
COLS = (1209.0, 1336.0, 1477.0, 1633.0)
KEYPAD = ("123A", "456B", "789C", "*0#D")


@functools.cache
def _basis(sample_rate: int, block: int) -> npt.NDArray[np.float64]:
    n = np.arange(block)
    w = 2 * np.pi * np.array(ROWS + COLS)[:, None] * n[None, :] / sample_rate
    basis = np.concatenate([np.cos(w), np.sin(w)])
    basis.setflags(write=False)
    return basis


class GoertzelDetector:
    """In-band DTMF detection on 8 kHz int16 audio, for peers without telephone-event.

    Blocks of 102 samples (12.75 ms, as spandsp and Asterisk use) are scored at the
    8 DTMF frequencies. The Goertzel recurrence yields |X(f)|^2 for one frequency;
    here the same single-bin DFT is computed for all 8 at once as a matrix product,
    which in numpy is far cheaper than a per-sample Python loop and gives identical
    powers. A block is a hit when (ITU-T Q.24-style checks):
      - its energy is above `min_level` (about -36 dBm0),
      - the strongest row and column hold most of the block energy (speech and noise
        spread theirs; `min_purity`),
      - each beats the other tones of its group by `relative_peak` dB,
      - twist: column vs row within +`reverse_twist` / -`normal_twist` dB.
    A digit is reported once, after `min_blocks` consecutive hits of the same key
    (>= 2 blocks: a 40 ms tone always covers two whole blocks), and re-armed after
    `release_blocks` blocks without it.
    """

    BLOCK = 102

    def __init__(self, *, sample_rate: int = 8000, min_level: float = 500.0, min_purity: float = 0.75,
                 relative_peak_db: float = 6.0, normal_twist_db: float = 8.0,
                 reverse_twist_db: float = 4.0, min_blocks: int = 2, release_blocks: int = 2) -> None:
        self._basis = _basis(sample_rate, self.BLOCK)  # (16, BLOCK), shared: every call makes one
        self.min_energy = self.BLOCK * min_level**2  # sum of squares for an RMS of min_level
        self.min_purity = min_purity
        self.relative_peak = 10 ** (relative_peak_db / 10)
        self.normal_twist = 10 ** (normal_twist_db / 10)
        self.reverse_twist = 10 ** (reverse_twist_db / 10)
        self.min_blocks = min_blocks
        self.release_blocks = release_blocks
        self._pending = np.zeros(0, dtype=np.float64)
        self._candidate: str | None = None
        self._hits = 0
        self._misses = 0
        self._reported: str | None = None

    def classify(self, block: npt.NDArray[np.float64]) -> str | None:
        """The key a single block holds, or None."""
        return self.classify_blocks(block.reshape(1, self.BLOCK))[0]

    @property
    def settings(self) -> tuple[float, ...]:
        """What `classify_blocks` depends on: detectors with equal settings classify alike."""
        return (self.min_energy, self.min_purity, self.relative_peak, self.normal_twist, self.reverse_twist)

    def classify_blocks(self, blocks: npt.NDArray[np.float64]) -> list[str | None]:
        """The key each row of a (n, BLOCK) array holds, or None: `classify` for many blocks.

        This runs on every received frame of every call until its peer sends RFC 4733 events.
        For the one or two blocks of a frame it makes three numpy calls (energies, one matrix
        product, one conversion to lists) and checks the 8 scores per block in plain Python;
        for a batch (blocks of many calls at once, see voice.aio.rtp) it does the checks as
        array operations, whose fixed cost is then shared by every block."""
        if len(blocks) >= VECTOR_MIN:
            return self._classify_vector(blocks)
        energies = np.einsum("ij,ij->i", blocks, blocks).tolist()
        if max(energies, default=0.0) < self.min_energy:  # silence and quiet noise stop here
            return [None] * len(energies)
        projections = (blocks @ self._basis.T).tolist()  # (n, 16): cos, sin parts at the 8 tones
        keys: list[str | None] = []
        scale = self.BLOCK / 2
        for energy, proj in zip(energies, projections, strict=True):
            keys.append(self._key(proj, energy * scale) if energy >= self.min_energy else None)
        return keys

    def _classify_vector(self, blocks: npt.NDArray[np.float64]) -> list[str | None]:
        keys: list[str | None] = [None] * len(blocks)
        energy = np.einsum("ij,ij->i", blocks, blocks)
        loud = np.flatnonzero(energy >= self.min_energy)
        if not len(loud):
            return keys
        proj = blocks[loud] @ self._basis.T
        rel = (proj[:, :8] ** 2 + proj[:, 8:] ** 2) / (energy[loud, None] * (self.BLOCK / 2))
        rows, cols = rel[:, :4], rel[:, 4:]
        r, c = rows.argmax(axis=1), cols.argmax(axis=1)
        rows_sorted, cols_sorted = np.sort(rows, axis=1), np.sort(cols, axis=1)
        row, col = rows_sorted[:, -1], cols_sorted[:, -1]
        ok = ((row + col >= self.min_purity)
              & (row >= self.relative_peak * rows_sorted[:, -2])
              & (col >= self.relative_peak * cols_sorted[:, -2])
              & (col <= row * self.reverse_twist) & (row <= col * self.normal_twist))
        for i in np.flatnonzero(ok).tolist():
            keys[int(loud[i])] = KEYPAD[int(r[i])][int(c[i])]
        return keys

    def _key(self, proj: list[float], norm: float) -> str | None:
        # |X(f)|^2 relative to the block energy; a pure sine of energy E gives N*E/2, hence `norm`
        rel = [(proj[k] ** 2 + proj[k + 8] ** 2) / norm for k in range(8)]
        rows, cols = rel[:4], rel[4:]
        row, col = max(rows), max(cols)
        if row + col < self.min_purity:
            return None
        r, c = rows.index(row), cols.index(col)
        if row < self.relative_peak * max(rows[:r] + rows[r + 1:]):
            return None
        if col < self.relative_peak * max(cols[:c] + cols[c + 1:]):
            return None
        if col > row * self.reverse_twist or row > col * self.normal_twist:
            return None
        return KEYPAD[r][c]

    def process(self, pcm: npt.NDArray[np.int16]) -> list[str]:
        """Feed audio of any length; returns the digits whose press was just recognised."""
        blocks = self.take_blocks(pcm)
        return self.advance(self.classify_blocks(blocks)) if len(blocks) else []

    def take_blocks(self, pcm: npt.NDArray[np.int16]) -> npt.NDArray[np.float64]:
        """Append audio; returns the whole blocks now available as a (n, BLOCK) array (the rest
        waits for more). `advance` must then get their keys, in order."""
        buf = np.concatenate([self._pending, pcm.astype(np.float64)])
        nblocks = len(buf) // self.BLOCK
        self._pending = buf[nblocks * self.BLOCK:]
        return buf[:nblocks * self.BLOCK].reshape(nblocks, self.BLOCK)

    def advance(self, keys: list[str | None]) -> list[str]:
        """Run the press/release rules over the keys of consecutive blocks; returns new digits."""
        out: list[str] = []
        for key in keys:
            if key is not None and key == self._candidate:
                self._hits += 1
                self._misses = 0
            elif key is not None:
                self._candidate, self._hits, self._misses = key, 1, 0
            else:
                self._misses += 1
                if self._misses >= self.release_blocks:
                    self._candidate, self._hits, self._reported = None, 0, None
                continue
            if self._hits >= self.min_blocks and self._reported != key:
                self._reported = key
                out.append(key)
        return out


def dtmf_frequencies(digit: str) -> tuple[float, float]:
    """(row, column) frequencies of a key, for tone generation."""
    for r, line in enumerate(KEYPAD):
        c = line.find(digit.upper())
        if c >= 0 and digit:
            return ROWS[r], COLS[c]
    raise ValueError(f"not a DTMF digit: {digit!r}")


def key_tone(digit: str, ms: int, amplitude: float = 0.25, sample_rate: int = 8000) -> npt.NDArray[np.int16]:
    """The dual tone of a key as int16 PCM, both components at `amplitude` (what
    voice.audio.dtmf_tone makes, here without that module's file and asyncio imports)."""
    low, high = dtmf_frequencies(digit)
    n = np.arange(sample_rate * ms // 1000)
    x = amplitude * (np.sin(2 * np.pi * low * n / sample_rate) + np.sin(2 * np.pi * high * n / sample_rate))
    out: npt.NDArray[np.int16] = np.clip(np.round(x * 32767), -32768, 32767).astype(np.int16)
    return out
