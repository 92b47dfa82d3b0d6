"""When full garbage collections run: on a schedule of ours, not whenever Python decides.

A full (generation 2) collection holds the GIL for as long as it takes to walk every tracked
object, and the RTP pacer thread waits for it: at 500 calls that is 45-75 ms of one core
(measured with voice_gc_pause_seconds on a 2-vCPU VM: pointer chasing through ~100,000 objects),
more than `[rtp] send_ahead_ms`, so each one delays a frame of every call. Python starts one each
time ten generation-1 collections have run and the long-lived objects have grown by a quarter:
under steady call churn that is every 10-20 s. Calls' objects live for the call, so the cycles
they leave behind are all old by the time they become garbage; only a full collection frees them.

`FullCollections` leaves generations 0 and 1 to Python (they are short) and runs the full
collection itself every `interval` seconds (`[node] full_gc_interval`), on the event loop: one
pause a minute instead of several, and the garbage kept meanwhile is bounded by the interval.
"""

from __future__ import annotations

import asyncio
import gc
import time

NEVER = 2**31 - 1  # a generation-2 threshold that Python's own schedule never reaches


class FullCollections:
    def __init__(self, loop: asyncio.AbstractEventLoop, interval: float) -> None:
        self.loop = loop
        self.interval = interval
        self.runs = 0
        self.last_seconds = 0.0
        self._handle: asyncio.TimerHandle | None = None
        self._saved: tuple[int, int, int] | None = None

    def start(self) -> None:
        if self._saved is None:
            self._saved = gc.get_threshold()
            gc.set_threshold(self._saved[0], self._saved[1], NEVER)
        self._handle = self.loop.call_later(self.interval, self._collect)

    def _collect(self) -> None:
        started = time.perf_counter()
        gc.collect()
        self.last_seconds = time.perf_counter() - started
        self.runs += 1
        self._handle = self.loop.call_later(self.interval, self._collect)

    def stop(self) -> None:
        """Back to Python's own schedule."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._saved is not None:
            gc.set_threshold(*self._saved)
            self._saved = None
