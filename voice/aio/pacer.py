"""Process-wide media work shared by every RTP session: the 20 ms send schedule (`Pacer`, on its
own thread) and in-band DTMF classification (`InbandBatch`, once per loop iteration).

Why a thread: on the event loop a packet waits behind whatever else the loop is doing when its
deadline comes (an INVITE burst being parsed, flow steps, handing audio to the recognizers): at
500 calls with 50 new calls a second that put the send-pacing p99 at 20 ms and more. The pacer
thread sleeps to each deadline on its own and takes the GIL for the burst (the switch interval is
lowered so that a busy loop hands it over within a millisecond); the loop only queues prompts and
live frames. Each session's sans-IO core is guarded by the session's own lock, held by either
side only for one short operation; the thread never holds two locks, so nothing can deadlock.
Events the ticks produce (prompt finished, a digit, a failed send) go back to the session's loop
with one `call_soon_threadsafe` per loop and wake.

With `[rtp] send_ahead_ms` (the default) the thread wakes that long before each deadline and
hands the packets to the RTP transmitter process (voice.aio.transmitter), which sends them at the
deadline: the GIL this thread shares with the loop then costs nothing on the wire unless it is
held for longer than that.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING

from voice.rtp.pacing import FRAME_SECONDS, FrameClock
from voice.rtp.session import detect_inband

if TYPE_CHECKING:
    import socket

    from voice.aio.rtp import RtpSession
    from voice.aio.transmitter import Item, Transmitter

log = logging.getLogger(__name__)

PACER_PHASES = 10  # wake-ups per frame, 2 ms apart: a phase's burst stays short
LATE_SECONDS = 0.005  # a packet that leaves this much after its deadline counts as late
REALTIME_PRIORITY = 10  # SCHED_FIFO 1-99: above normal processes, below the kernel's own threads
SWITCH_INTERVAL = 0.001  # s: how long a busy thread keeps the GIL when the pacer asks for it


class MediaTotals:
    """This process's RTP totals since start (for /metrics), and an optional observer of each
    wake's lateness: `observer(seconds_late, packets)`, called once per pacer wake (on the pacer
    thread: it must be cheap and thread-safe)."""

    sent = 0  # packets due (sessions woken to send), summed over wakes
    late = 0  # of those, due more than LATE_SECONDS before their wake
    received = 0  # datagrams received (RTP and RTCP)
    overdue = 0  # with a transmitter: packets made after their deadline (the pacer ran late)
    observer: Callable[[float, int], None] | None = None

    @classmethod
    def snapshot(cls) -> dict[str, int]:
        pacer = Pacer._shared
        tx = pacer.transmitter if pacer is not None else None
        return {"sent": cls.sent, "received": cls.received, "late": cls.late, "overdue": cls.overdue,
                "dropped": tx.dropped if tx is not None else 0}

    @classmethod
    def count_sent(cls, lateness: float, packets: int) -> None:
        cls.sent += packets
        if lateness > LATE_SECONDS:
            cls.late += packets
        if cls.observer is not None and packets:
            cls.observer(lateness, packets)


class Pacer:
    """The 20 ms send schedule of every RTP session in the process, run by one thread.

    PACER_PHASES phases spread evenly over the frame; a session joins the least busy one and is
    woken with it, in a fixed order. Each session keeps its own FrameClock on the exact schedule
    of its phase (same t0, same arithmetic), so it counts due and skipped frames as before, and its
    packets leave at a steady offset within the burst: that offset costs no jitter. Times are
    `time.monotonic()`, which is what asyncio's loop.time() is.
    """

    _shared: Pacer | None = None
    _shared_lock = threading.Lock()

    def __init__(self, phases: int = PACER_PHASES, *, realtime: str = "no") -> None:
        start = time.monotonic()
        self.bases = [start + k * FRAME_SECONDS / phases for k in range(phases)]
        self.members: list[dict[RtpSession, None]] = [{} for _ in range(phases)]
        self.next_frame = [0] * phases  # index on the phase's schedule of its next wake-up
        self.realtime = realtime
        self.ahead = 0.0  # s: [rtp] send_ahead; 0 sends from this thread, at each deadline
        self.transmitter: Transmitter | None = None  # the child process that sends, when ahead > 0
        self._lock = threading.Lock()  # members and next_frame
        self._changed = threading.Event()  # a phase became busy: its deadline may come first
        self._thread: threading.Thread | None = None
        self.wakes = 0

    @classmethod
    def shared(cls) -> Pacer:
        with cls._shared_lock:
            if cls._shared is None:
                cls._shared = cls()
            return cls._shared

    @classmethod
    def use(cls, *, realtime: str, send_ahead: float) -> None:
        """[rtp] realtime: `yes` or `auto` ask for SCHED_FIFO on the pacer thread and the
        transmitter (root or CAP_SYS_NICE; `yes` warns when refused, `auto` only says so at
        info), `no` leaves them at normal priority. [rtp] send_ahead (seconds): tick each session
        that much before its frame is due and let the transmitter process send it on time
        (voice.aio.transmitter); 0 sends from the pacer thread. Takes effect with the first
        call's media."""
        pacer = cls.shared()
        pacer.realtime, pacer.ahead = realtime, send_ahead
        if send_ahead > 0:
            pacer._start_transmitter()  # now, so that the first call does not wait for it

    def _start_transmitter(self) -> None:
        with self._lock:
            if self.transmitter is not None:
                return
            from voice.aio.transmitter import Transmitter

            try:
                self.transmitter = Transmitter(realtime=self.realtime, observer=MediaTotals.count_sent)
            except OSError as exc:
                log.error("RTP transmitter process did not start (%s); the pacer sends itself", exc)
                self.ahead = 0.0

    async def transmitter_ready(self) -> None:
        """Wait (off the loop) until the transmitter runs, if there is one: sessions opened
        before that send themselves."""
        tx = self.transmitter
        if tx is not None and self.ahead > 0:
            from voice.aio.transmitter import STARTUP_SECONDS

            if not await asyncio.to_thread(tx.ready.wait, STARTUP_SECONDS):
                log.warning("RTP transmitter process not running after %.0f s; sessions send themselves",
                            STARTUP_SECONDS)

    def live_transmitter(self) -> Transmitter | None:
        """The transmitter, while it runs and packets are made ahead for it."""
        tx = self.transmitter
        return tx if tx is not None and tx.alive and self.ahead > 0 else None

    def open_transmit(self, session: RtpSession, socks: list[socket.socket]) -> int | None:
        """Hand a session's sockets to the transmitter (started on first use); its id there,
        or None when this pacer sends itself. The loop's thread."""
        if self.ahead <= 0:
            return None
        self._start_transmitter()
        tx = self.live_transmitter()
        return tx.open(session, socks) if tx is not None else None

    def _deadline(self, k: int, n: int) -> float:
        return self.bases[k] + n * FRAME_SECONDS  # FrameClock.deadline's arithmetic, bit for bit

    def join(self, session: RtpSession) -> tuple[int, FrameClock]:
        """Add `session` to the least busy phase; returns the phase and the session's clock, whose
        first deadline is the phase's next wake-up (within 20 ms). Any thread."""
        with self._lock:
            k = min(range(len(self.members)), key=lambda i: len(self.members[i]))
            if not self.members[k]:
                now = time.monotonic()
                self.next_frame[k] = max(0, math.ceil((now - self.bases[k]) / FRAME_SECONDS))
            self.members[k][session] = None
            clock = FrameClock(self.bases[k])
            clock.n = self.next_frame[k]
            if self._thread is None:
                sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL))
                self._thread = threading.Thread(target=self._run, name="rtp-pacer", daemon=True)
                self._thread.start()
        self._changed.set()
        return k, clock

    def leave(self, session: RtpSession, k: int) -> None:
        with self._lock:
            self.members[k].pop(session, None)

    def _next(self) -> tuple[float, int] | None:
        with self._lock:
            due = [(self._deadline(k, self.next_frame[k]), k) for k, m in enumerate(self.members) if m]
        return min(due) if due else None

    def _run(self) -> None:
        if self.realtime in ("yes", "auto"):
            # The thread sleeps between bursts, so it takes little CPU; what the priority buys is
            # waking on time when other processes keep every core busy. Linux: 0 = this thread.
            try:
                os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(REALTIME_PRIORITY))
                log.info("RTP pacer thread runs at realtime priority (SCHED_FIFO %d)", REALTIME_PRIORITY)
            except (AttributeError, OSError) as exc:
                log.log(logging.WARNING if self.realtime == "yes" else logging.INFO,
                        "RTP pacer thread: realtime priority refused (%s); normal priority", exc)
        while True:
            nxt = self._next()
            if nxt is None:
                self._changed.wait()
                self._changed.clear()
                continue
            deadline, k = nxt
            delay = deadline - (self.ahead if self.live_transmitter() else 0.0) - time.monotonic()
            if delay > 0:
                self._changed.clear()
                if self._changed.wait(delay):
                    continue  # a phase joined: its deadline may be sooner
            try:
                self._wake(k, deadline)
            except Exception:  # the thread must outlive a bug in one wake
                log.exception("RTP pacer wake failed")

    def _wake(self, k: int, deadline: float) -> None:
        tx = self.live_transmitter()
        ahead = self.ahead if tx is not None else 0.0
        # Sleeping may end up to the timer slack early; the frame is due all the same. `at`: when
        # this wake's packets leave. With a transmitter that is the deadline, even when we are
        # late (but not later than `ahead`): the frames made are exactly those due by then.
        now = max(time.monotonic(), deadline - ahead)
        at = max(now, deadline)
        with self._lock:
            members = list(self.members[k])
        self.wakes += 1
        batch: list[Item] | None = None
        if tx is None:
            MediaTotals.count_sent(now - deadline, len(members))
        else:
            batch = []  # the transmitter reports when they actually left
        for_loops: dict[asyncio.AbstractEventLoop, list[RtpSession]] = {}
        for session in members:
            if session._tick(now, at - now, batch):
                for_loops.setdefault(session.loop, []).append(session)
        if batch and tx is not None:
            if time.monotonic() > at:  # the burst itself ran past the deadline
                MediaTotals.overdue += len(batch)
            tx.submit(at, batch)
        for loop, sessions in for_loops.items():
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody is listening
                loop.call_soon_threadsafe(_after_ticks, sessions)
        with self._lock:
            n = self.next_frame[k] + 1
            if self._deadline(k, n) <= at:  # a stall: the sessions' clocks skipped those frames too
                n = math.floor((at - self.bases[k]) / FRAME_SECONDS) + 1
            self.next_frame[k] = n


def _after_ticks(sessions: list[RtpSession]) -> None:
    for session in sessions:
        session._after_tick()


LOOP_PRIORITY = 1  # the event loop thread with [rtp] realtime_loop: below the pacer and transmitter


def realtime_loop_thread() -> bool:
    """[rtp] realtime_loop: put the calling thread (the event loop's) at SCHED_FIFO 1, with
    SCHED_RESET_ON_FORK so that the threads and processes it starts later (executor threads,
    speech workers) run at normal priority. Refused on a single CPU, where a saturated loop would
    starve everything else. True when it took effect."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    if cpus < 2:
        log.warning("[rtp] realtime_loop needs 2 or more CPUs (this process may use %d); not set", cpus)
        return False
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO | os.SCHED_RESET_ON_FORK, os.sched_param(LOOP_PRIORITY))
    except (AttributeError, OSError) as exc:
        log.warning("[rtp] realtime_loop refused (%s); the event loop runs at normal priority", exc)
        return False
    log.info("event loop thread runs at realtime priority (SCHED_FIFO %d, reset on fork)", LOOP_PRIORITY)
    return True


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
        pending, self.pending = list(self.pending), {}
        with contextlib.ExitStack() as held:  # the pacer thread holds at most one of them at a time
            for session in pending:
                held.enter_context(session._lock)
            detect_inband([s.core for s in pending], self.loop.time())
        for session in pending:
            session._drain()
