"""An asyncio loop on virtual time, for tests and `voice simulate`: timers fire without waiting.

When the loop is idle (nothing ready, no socket readable) it jumps its clock to the next
timer instead of sleeping, so a 5 s no-input timeout takes microseconds. While work is
running in the thread pool (TTS, file loads, stdin) virtual time stands still and the loop
waits for real, so threads cannot be overtaken by timers. Not for real network peers.
"""

from __future__ import annotations

import asyncio
import selectors
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import Future as ThreadFuture
from typing import Any, TypeVar

T = TypeVar("T")


class _Selector(selectors.DefaultSelector):
    loop: VirtualTimeLoop

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        events: list[tuple[selectors.SelectorKey, int]] = super().select(0)
        if events or timeout == 0:
            return events
        if self.loop.busy_threads or timeout is None:
            return super().select(0.01 if timeout is None else min(timeout, 0.01))
        self.loop.advance(timeout)
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        selector = _Selector()
        selector.loop = self
        super().__init__(selector)
        self._now = time.monotonic()
        self.busy_threads = 0

    def time(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds

    def run_in_executor(  # type: ignore[override]
        self, executor: Any, func: Callable[..., T], *args: Any
    ) -> asyncio.Future[T]:
        self.busy_threads += 1
        fut = super().run_in_executor(executor, func, *args)

        def done(_: asyncio.Future[T] | ThreadFuture[T]) -> None:
            self.busy_threads -= 1

        fut.add_done_callback(done)
        return fut


def run_virtual(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion on a fresh virtual-time loop."""
    loop = VirtualTimeLoop()
    try:
        return loop.run_until_complete(coro)
    finally:
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            loop.close()
