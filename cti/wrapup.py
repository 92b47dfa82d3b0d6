"""After-call work: the desk's disposition codes, the wrap-up timer and the away reasons.

`AgentPolicy` is what [agents] in the config says (voice.config AgentsConfig): the disposition
codes an agent picks from after a call, how long wrap-up lasts (0: until the agent presses
Available), and the reasons an agent may give for being away. `WrapUpTimers` returns an agent
to available when their wrap-up time is over: one timer per agent, on the node that put them in
wrap-up, on the loop's clock (tests move it); the end is a compare-and-set in the database
(cti.agents `end_wrap_up`), so an agent who pressed Available or Away meanwhile keeps that.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

log = logging.getLogger("cti.routing")

DEFAULT_DISPOSITIONS = ("resolved", "callback", "escalated", "wrong_number")
DEFAULT_AWAY_REASONS = ("break", "lunch", "training", "meeting")


@dataclass(frozen=True, kw_only=True)
class AgentPolicy:
    dispositions: tuple[str, ...] = DEFAULT_DISPOSITIONS  # empty: any text up to 100 characters
    wrap_up_seconds: float = 0.0  # 0: wrap-up lasts until the agent presses Available
    away_reasons: tuple[str, ...] = DEFAULT_AWAY_REASONS  # empty: no reason asked for

    def page_form(self) -> dict[str, object]:
        """What the agent page needs to draw its selects and the countdown."""
        return {"dispositions": list(self.dispositions), "away_reasons": list(self.away_reasons),
                "wrap_up_seconds": self.wrap_up_seconds}


class WrapUpTimers:
    """One wrap-up countdown per agent; `end(agent_id, call_id)` runs when it is over."""

    def __init__(self, seconds: float, end: Callable[[str, str | None], Awaitable[None]]) -> None:
        self.seconds = seconds
        self._end = end
        self._timers: dict[str, tuple[asyncio.Task[None], float]] = {}  # agent -> (task, loop deadline)

    def start(self, agent_id: str, call_id: str | None) -> float | None:
        """(Re)start the agent's countdown; its length in seconds, None when wrap-up is manual."""
        self.cancel(agent_id)
        if self.seconds <= 0:
            return None
        loop = asyncio.get_running_loop()
        task = loop.create_task(self._run(agent_id, call_id))
        self._timers[agent_id] = (task, loop.time() + self.seconds)
        task.add_done_callback(lambda t: self._forget(agent_id, t))
        return self.seconds

    def left(self, agent_id: str) -> float | None:
        """Seconds of the agent's wrap-up still to go (None: no countdown here)."""
        timer = self._timers.get(agent_id)
        if timer is None:
            return None
        return max(0.0, timer[1] - asyncio.get_running_loop().time())

    def cancel(self, agent_id: str) -> None:
        timer = self._timers.pop(agent_id, None)
        if timer is not None and timer[0] is not asyncio.current_task():
            timer[0].cancel()

    async def aclose(self) -> None:
        tasks = [t for t, _ in self._timers.values()]
        self._timers.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _forget(self, agent_id: str, task: asyncio.Task[None]) -> None:
        timer = self._timers.get(agent_id)
        if timer is not None and timer[0] is task:
            del self._timers[agent_id]

    async def _run(self, agent_id: str, call_id: str | None) -> None:
        await asyncio.sleep(self.seconds)
        try:
            await self._end(agent_id, call_id)
        except Exception:  # the database away: the agent presses Available themselves
            log.exception("agent %s: wrap-up could not end", agent_id)
