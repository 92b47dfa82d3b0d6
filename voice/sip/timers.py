"""A deadline heap shared by every transaction and dialog of one SIP core.

Sans-IO: nothing here sleeps. The adapter asks `next_deadline()`, arms one loop
timer for it, and calls `fire(now)` when it expires (or whenever it likes).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

# RFC 3261 17.1.1.1 defaults (seconds); the core may scale them (tests use small T1).
T1 = 0.5
T2 = 4.0
T4 = 5.0


@dataclass(order=True)
class Timer:
    deadline: float
    seq: int
    callback: Callable[[float], None] = field(compare=False)
    name: str = field(compare=False, default="")
    cancelled: bool = field(compare=False, default=False)

    def cancel(self) -> None:
        self.cancelled = True
        self.callback = _nothing  # let go of what the callback holds (a call, a transaction) now


def _nothing(_now: float) -> None:
    return None


class TimerHeap:
    def __init__(self) -> None:
        self._heap: list[Timer] = []
        self._seq = itertools.count()

    def schedule(self, deadline: float, callback: Callable[[float], None], name: str = "") -> Timer:
        timer = Timer(deadline, next(self._seq), callback, name)
        heapq.heappush(self._heap, timer)
        if len(self._heap) > 1024 and len(self._heap) & 1023 == 0:
            self._compact()
        return timer

    def _compact(self) -> None:
        """Drop cancelled timers when they are most of the heap (cancelled long timers, e.g. the
        ring timeout of calls that ended, would otherwise wait for their deadline to leave)."""
        live = [t for t in self._heap if not t.cancelled]
        if len(live) * 2 < len(self._heap):
            heapq.heapify(live)
            self._heap = live

    def next_deadline(self) -> float | None:
        while self._heap and self._heap[0].cancelled:
            heapq.heappop(self._heap)
        return self._heap[0].deadline if self._heap else None

    def fire(self, now: float) -> int:
        """Run every timer due at `now`; returns how many ran."""
        ran = 0
        while self._heap and self._heap[0].deadline <= now:
            timer = heapq.heappop(self._heap)
            if not timer.cancelled:
                timer.cancelled = True
                timer.callback(now)
                ran += 1
        return ran

    def __len__(self) -> int:
        return sum(1 for t in self._heap if not t.cancelled)
