"""Loop-wide media work shared by every RTP session: the 20 ms send schedule (`Pacer`) and
in-band DTMF classification (`InbandBatch`). One of each per event loop, so the per-packet
overhead of timers and numpy calls is paid once per wake-up or loop iteration, not per call.
Both only schedule: the work itself is the sans-IO `voice.rtp.session`'s.
"""

from __future__ import annotations

import asyncio
import math
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING

from voice.rtp.pacing import FRAME_SECONDS, FrameClock
from voice.rtp.session import detect_inband

if TYPE_CHECKING:
    from voice.aio.rtp import RtpSession

PACER_PHASES = 10  # send timers per loop, 2 ms apart: a phase's burst stays short
LATE_SECONDS = 0.005  # a packet that leaves this much after its deadline counts as late


class MediaTotals:
    """This process's RTP totals since start (for /metrics), and an optional observer of each
    wake's lateness: `observer(seconds_late, packets)`, called once per pacer wake."""

    sent = 0  # packets due (sessions woken to send), summed over wakes
    late = 0  # of those, due more than LATE_SECONDS before their wake
    received = 0  # datagrams received (RTP and RTCP)
    observer: Callable[[float, int], None] | None = None

    @classmethod
    def snapshot(cls) -> dict[str, int]:
        return {"sent": cls.sent, "received": cls.received, "late": cls.late}


class Pacer:
    """The 20 ms send schedule of every RTP session on one event loop.

    One timer per session costs a TimerHandle, a heap push and pop (with Python-level
    comparisons) and a callback dispatch per packet: at 500 calls that is 25,000 timer events
    a second. Here PACER_PHASES timers, spread evenly over the frame, each wake the sessions of
    their phase in a fixed order. Each session keeps its own FrameClock on the exact schedule
    of its phase (same t0, same arithmetic), so it counts due and skipped frames as before, and
    its packets leave at a steady offset within the burst: that offset costs no jitter.
    """

    _by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Pacer] = weakref.WeakKeyDictionary()

    def __init__(self, loop: asyncio.AbstractEventLoop, phases: int = PACER_PHASES) -> None:
        self.loop = loop
        start = loop.time()
        self.bases = [start + k * FRAME_SECONDS / phases for k in range(phases)]
        self.members: list[dict[RtpSession, None]] = [{} for _ in range(phases)]
        self.next_frame = [0] * phases  # index on the phase's schedule of its next wake-up
        self.timers: list[asyncio.TimerHandle | None] = [None] * phases

    @classmethod
    def for_loop(cls, loop: asyncio.AbstractEventLoop) -> Pacer:
        pacer = cls._by_loop.get(loop)
        if pacer is None:
            pacer = cls._by_loop[loop] = cls(loop)
        return pacer

    def _deadline(self, k: int, n: int) -> float:
        return self.bases[k] + n * FRAME_SECONDS  # FrameClock.deadline's arithmetic, bit for bit

    def join(self, session: RtpSession) -> tuple[int, FrameClock]:
        """Add `session` to the least busy phase; returns the phase and the session's clock,
        whose first deadline is the phase's next wake-up (within 20 ms)."""
        k = min(range(len(self.members)), key=lambda i: len(self.members[i]))
        if self.timers[k] is None:
            now = self.loop.time()
            self.next_frame[k] = max(0, math.ceil((now - self.bases[k]) / FRAME_SECONDS))
            self.timers[k] = self.loop.call_at(self._deadline(k, self.next_frame[k]), self._wake, k)
        self.members[k][session] = None
        clock = FrameClock(self.bases[k])
        clock.n = self.next_frame[k]
        return k, clock

    def leave(self, session: RtpSession, k: int) -> None:
        self.members[k].pop(session, None)
        timer = self.timers[k]
        if not self.members[k] and timer is not None:
            timer.cancel()
            self.timers[k] = None

    def _wake(self, k: int) -> None:
        deadline = self._deadline(k, self.next_frame[k])
        # asyncio may run a timer up to its clock resolution early; the frame is due all the same
        now = max(self.loop.time(), deadline)
        members = list(self.members[k])
        lateness = now - deadline
        MediaTotals.sent += len(members)
        if lateness > LATE_SECONDS:
            MediaTotals.late += len(members)
        if MediaTotals.observer is not None and members:
            MediaTotals.observer(lateness, len(members))
        for session in members:
            session._on_tick(now)
        if not self.members[k]:
            self.timers[k] = None
            return
        n = self.next_frame[k] + 1
        if self._deadline(k, n) <= now:  # a stall: the sessions' clocks skipped those frames too
            n = math.floor((now - self.bases[k]) / FRAME_SECONDS) + 1
        self.next_frame[k] = n
        self.timers[k] = self.loop.call_at(self._deadline(k, n), self._wake, k)


class InbandBatch:
    """In-band DTMF detection for every session on a loop, once per loop iteration.

    Sessions whose audio waits for detection register here; one callback (call_soon, so in the
    same loop iteration as the packets) runs `voice.rtp.session.detect_inband` over all of them,
    which classifies their blocks in one batch, then delivers each session's digits.
    """

    _by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, InbandBatch] = weakref.WeakKeyDictionary()

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.pending: dict[RtpSession, None] = {}

    @classmethod
    def for_loop(cls, loop: asyncio.AbstractEventLoop) -> InbandBatch:
        batch = cls._by_loop.get(loop)
        if batch is None:
            batch = cls._by_loop[loop] = cls(loop)
        return batch

    def add(self, session: RtpSession) -> None:
        if not self.pending:
            self.loop.call_soon(self.flush)
        self.pending[session] = None

    def flush(self) -> None:
        pending, self.pending = self.pending, {}
        detect_inband([s.core for s in pending], self.loop.time())
        for session in pending:
            if session.core.has_events:
                session._drain()
