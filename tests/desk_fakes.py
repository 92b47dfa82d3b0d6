"""In-memory stand-ins for call control, as the desk sees it (cti.ports): a `FakeCall` (CallView)
that plays audio in loop time and remembers what the caller heard, and a `FakeConnector` whose
agents answer, ring out or refuse as the test says. The real ones are voice's call-control legs."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cti.ports import ConversationEnd

SAMPLE_RATE = 8000


@dataclass(frozen=True)
class FakeCallerInfo:
    call_id: str
    caller: str
    caller_name: str | None = None
    dialled: str = "100"


@dataclass(frozen=True)
class Heard:
    """One `play`: from `start` to `end` (loop time), the audio, and whether it played to its end."""

    start: float
    end: float
    pcm: np.ndarray
    complete: bool


@dataclass
class Segment:
    start: float
    end: float
    speaker: str
    kind: str
    text: str
    confidence: float | None = None


class FakeCall:
    """A CallView: one playback at a time (a second concurrent `play` is recorded as an overlap)."""

    def __init__(self, call_id: str, caller: str = "+4930123456", *, interaction_id: str | None = None,
                 customer_id: str | None = None, identified_by: str | None = None) -> None:
        self.info = FakeCallerInfo(call_id=call_id, caller=caller)
        self.key = f"{call_id};node-test"
        self.interaction_id = interaction_id
        self.customer_id = customer_id
        self.identified_by = identified_by
        self.transcript: list[Segment] = []
        self.heard: list[Heard] = []
        self.overlaps = 0
        self._ended: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._stop: asyncio.Future[None] | None = None
        self.digits: asyncio.Queue[str] = asyncio.Queue()
        self._barge_in = False

    @property
    def ended(self) -> bool:
        return self._ended.done()

    def hang_up(self, cause: str = "caller_hangup") -> None:
        if not self._ended.done():
            self._ended.set_result(cause)

    async def wait_ended(self) -> str:
        return await asyncio.shield(self._ended)

    def press(self, keys: str) -> None:
        """The caller presses keys (they wait for `receive_digit`; a barge-in prompt stops)."""
        for key in keys:
            self.digits.put_nowait(key)
        if self._barge_in and self._stop is not None and not self._stop.done():
            self._stop.set_result(None)

    async def receive_digit(self, timeout: float | None) -> str | None:
        if not self.digits.empty():
            return self.digits.get_nowait()
        if self.ended:
            return None
        get = asyncio.ensure_future(self.digits.get())
        try:
            done, _ = await asyncio.wait({get, self._ended}, timeout=timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not get.done():
                get.cancel()
        return get.result() if get in done else None

    async def play(self, pcm: np.ndarray, *, dtmf_barge_in: bool = False) -> bool:
        if dtmf_barge_in and not self.digits.empty():
            return False
        self._barge_in = dtmf_barge_in
        if self.ended:
            return False
        if self._stop is not None and not self._stop.done():
            self.overlaps += 1
        loop = asyncio.get_running_loop()
        stop = self._stop = loop.create_future()
        start = loop.time()
        timer = asyncio.ensure_future(asyncio.sleep(len(pcm) / SAMPLE_RATE))
        complete = False
        try:
            await asyncio.wait({timer, stop, self._ended}, return_when=asyncio.FIRST_COMPLETED)
            complete = timer.done() and not timer.cancelled() and not self.ended
        finally:
            timer.cancel()
            if not stop.done():
                stop.set_result(None)
            self.heard.append(Heard(start, loop.time(), pcm, complete))
        return complete

    def stop_playback(self) -> None:
        if self._stop is not None and not self._stop.done():
            self._stop.set_result(None)

    # ---- what the caller heard -----------------------------------------------------------------
    def gaps(self, since: float, until: float) -> list[tuple[float, float]]:
        """Stretches in [since, until] when nothing was playing."""
        out, at = [], since
        for h in sorted(self.heard, key=lambda h: h.start):
            if h.start > at:
                out.append((at, h.start))
            at = max(at, h.end)
        if until > at:
            out.append((at, until))
        return out

    def audio(self, since: float, until: float) -> np.ndarray:
        """The caller's ear from `since` to `until`: what played, where it played (silence elsewhere)."""
        out = np.zeros(int((until - since) * SAMPLE_RATE), dtype=np.int16)
        for h in self.heard:
            a = round((h.start - since) * SAMPLE_RATE)
            n = min(len(h.pcm), round((h.end - h.start) * SAMPLE_RATE))
            lo, hi = max(a, 0), min(a + n, len(out))
            if hi > lo:
                out[lo:hi] = h.pcm[lo - a:hi - a]
        return out


@dataclass
class FakeConnection:
    answered: bool
    status: int | None
    reason: str = ""
    hung_up: bool = False
    _finished: asyncio.Future[ConversationEnd] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future())

    async def wait_finished(self) -> ConversationEnd:
        return await asyncio.shield(self._finished)

    def finish(self, hangup_by: str = "agent", talk_seconds: float = 42.0) -> None:
        if not self._finished.done():
            self._finished.set_result(ConversationEnd(hangup_by=hangup_by, talk_seconds=talk_seconds))

    def hangup(self) -> None:
        self.hung_up = True
        self.finish("shutdown", 0.0)


class FakeConnector:
    """Agents by the user part of their URI: `answer_after` seconds of ringing, then answered (an
    agent not listed, or with None, never answers: 408 at the timeout); `refuse` answers with a
    status instead; `gate`, when given, must be set before anyone answers. `talk` seconds after the
    answer the agent hangs up (None: the test calls `finish`)."""

    def __init__(self, answer_after: dict[str, float | None] | None = None, *,
                 refuse: dict[str, int] | None = None, talk: float | None = 0.0,
                 gate: asyncio.Event | None = None) -> None:
        self.answer_after = answer_after or {}
        self.refuse = refuse or {}
        self.talk = talk
        self.gate = gate
        self.dialled: list[tuple[str, str, float]] = []  # (call key, agent, timeout)
        self.cancelled: list[str] = []
        self.connections: list[FakeConnection] = []

    async def connect(self, call: Any, agent_uri: str, *, timeout: float) -> FakeConnection:
        agent = agent_uri.removeprefix("sip:").split("@")[0]
        self.dialled.append((call.key, agent, timeout))
        try:
            if agent in self.refuse:
                return FakeConnection(answered=False, status=self.refuse[agent], reason="Busy Here")
            after = self.answer_after.get(agent)
            ring = asyncio.ensure_future(self._ring(after))
            ended = asyncio.ensure_future(call.wait_ended())
            try:
                done, _ = await asyncio.wait({ring, ended}, timeout=timeout,
                                             return_when=asyncio.FIRST_COMPLETED)
            finally:
                ring.cancel()
                ended.cancel()
                await asyncio.gather(ring, ended, return_exceptions=True)
            if call.ended:
                return FakeConnection(answered=False, status=487, reason="Request Terminated")
            if ring not in done:
                return FakeConnection(answered=False, status=408, reason="Request Timeout")
        except asyncio.CancelledError:
            self.cancelled.append(agent)
            raise
        conn = FakeConnection(answered=True, status=200, reason="OK")
        self.connections.append(conn)
        if self.talk is not None:
            asyncio.get_running_loop().call_later(self.talk, conn.finish)
        return conn

    async def _ring(self, after: float | None) -> None:
        if after is None:
            await asyncio.Event().wait()
        await asyncio.sleep(after or 0.0)
        if self.gate is not None:
            await self.gate.wait()


def plays(call: FakeCall, sound: np.ndarray) -> Sequence[Heard]:
    """The plays of `call` that were (slices of) `sound`."""
    return [h for h in call.heard if len(h.pcm) and np.shares_memory(h.pcm, sound)]
