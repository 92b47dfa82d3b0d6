"""Call: the object an IVR flow (or any call logic) drives. No sockets in sight.

A Call joins two narrow ports:
- a `MediaPort` (the RTP session in production, `voice.callcontrol.fake.FakeMedia` in tests)
  that plays 8 kHz 16-bit PCM, reports received digits and audio frames;
- a `SignallingPort` (the call's leg in production) that hangs up, transfers, and owns the
  call's one end state (`end`, a future resolved with the cause). The Call keeps no copy of it.

Everything the flow does is an awaitable on the Call. When the caller hangs up,
every pending and future await raises `CallEnded`, so flow code needs no checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from voice.callcontrol.masking import mask_segment

SAMPLE_RATE = 8000
FRAME_SAMPLES = 160  # 20 ms at 8 kHz

AudioListener = Callable[[np.ndarray], None]


def release_frames(exc: BaseException | None) -> None:
    """Drop the traceback of `exc` (and of the exceptions it was raised while handling), so that
    the frames it went through go as soon as nothing else holds them.

    A call's end travels up as CallEnded through the flow's awaits, and asyncio keeps an exception
    in every task it passed: the traceback holds those frames, the frames hold the tasks, the tasks
    hold the exception. Left alone, each ended call leaves ~100 objects in such cycles, and only a
    full garbage collection (which stops the media for tens of ms) frees them. Only the
    exception-to-traceback links are cut: clearing the frames themselves (traceback.clear_frames)
    would, on Python 3.11, also close any coroutine still suspended in one of them."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        exc.__traceback__ = None
        exc = exc.__context__


TIMED_OUT = object()  # Call._until_ended's result when its timeout passed first


class CallEnded(Exception):
    """The call is over (caller hung up, or we did); raised from any await on the Call."""

    def __init__(self, cause: str) -> None:
        super().__init__(cause)
        self.cause = cause


@dataclass(frozen=True, kw_only=True)
class CallInfo:
    call_id: str
    caller: str  # caller ID: user part of From (a number when the caller sends one)
    caller_name: str | None
    dialled: str  # user part of the Request-URI / To
    remote: str  # "ip:port" of the signalling peer
    started_at: float = field(default_factory=time.time)


@dataclass(frozen=True, kw_only=True)
class TranscriptSegment:
    """One timed entry of the call's transcript (times in seconds from call start)."""

    start: float
    end: float
    speaker: str  # "caller" | "system" | "agent"
    kind: str  # "speech" | "dtmf" | "prompt"
    text: str  # already masked when the input was sensitive
    confidence: float | None = None
    engine: str | None = None
    alternatives: tuple[tuple[str, float], ...] = ()  # the recognizer's n-best (text, confidence)


@dataclass(frozen=True, kw_only=True)
class PlayResult:
    completed: bool  # played to the end
    interrupted_by: str | None = None  # "dtmf", "speech", "stop" or None


@dataclass(frozen=True, kw_only=True)
class TransferResult:
    ok: bool
    target: str
    reason: str = ""


class MediaPort(Protocol):
    """What a Call needs from its media leg."""

    def play(self, pcm: np.ndarray) -> Awaitable[bool]:
        """Queue 8 kHz int16 mono audio; resolves True when fully sent, False if stopped."""

    def stop_playback(self) -> None: ...

    def send_dtmf(self, digit: str, duration_ms: int = 100) -> Awaitable[None]: ...

    def set_listeners(
        self, on_digit: Callable[[str], None], on_audio: Callable[[np.ndarray], None]
    ) -> None:
        """Install callbacks: on_digit(digit) once per key press, on_audio(frame) per 20 ms frame."""

    def start_recording(self, path: Path, both_directions: bool) -> None: ...

    def stop_recording(self) -> Path | None: ...


class SignallingPort(Protocol):
    """What a Call needs from its leg: the one end state, hang-up and transfer."""

    @property
    def end(self) -> asyncio.Future[str]:
        """Resolves with the call's end cause ("bye", "cancel", "flow", "shutdown"...), once."""

    async def hangup(self, reason: str) -> None:
        """End the call from our side; `end` resolves with `reason` before this returns."""

    async def transfer(self, target: str) -> TransferResult: ...


class Call:
    """A live call as seen by flow logic."""

    def __init__(
        self,
        info: CallInfo,
        media: MediaPort,
        signalling: SignallingPort,
        *,
        clock: Callable[[], float] = time.monotonic,
        key: str | None = None,
        node: str = "",
        on_identified: Callable[[Call], None] | None = None,
    ) -> None:
        self.info = info
        self.media = media
        self.signalling = signalling
        self.clock = clock
        self._digits: asyncio.Queue[str] = asyncio.Queue()
        self._audio_listeners: list[AudioListener] = []
        self._ended = signalling.end
        self._play_interrupt: str | None = None
        self._playing = False
        self._dtmf_barge_in = False
        self.speech_barge_in = False  # read by the speech endpointer: may speech stop this prompt?
        self.speech_in_progress = False  # set by the speech listener between start and end of speech
        self._digit_listeners: list[Callable[[str], None]] = []
        self.transcript: list[TranscriptSegment] = []
        # > 0 while the call is in a sensitive context (a sensitive input, a sensitive transfer):
        # every digit the caller says is masked in the transcript (voice.callcontrol.masking).
        self.sensitive = 0
        self._segment_listeners: list[Callable[[TranscriptSegment], None]] = []  # live captions
        self.interaction_id: str | None = None  # the call's record in the interaction history
        self.key = key or info.call_id  # unique on this service: the dialog and the node
        self.node = node  # the [node] id of the service that owns the call
        self.customer_id: str | None = None  # the customer the IVR identified
        self.identified_by: str | None = None  # "caller_id", "account", ...
        self._on_identified = on_identified
        self._t0 = clock()
        media.set_listeners(self._on_digit, self._on_audio)
        self._ended.add_done_callback(lambda _f: media.stop_playback())

    # ---- state -------------------------------------------------------------
    @property
    def ended(self) -> bool:
        return self._ended.done()

    @property
    def end_cause(self) -> str | None:
        return self._ended.result() if self._ended.done() else None

    def identify(self, customer_id: str, by: str) -> None:
        """The IVR found who is calling: the history, the live view and the pop follow."""
        if customer_id == self.customer_id:
            return
        self.customer_id, self.identified_by = customer_id, by
        if self._on_identified is not None:
            self._on_identified(self)

    async def wait_ended(self) -> str:
        return await asyncio.shield(self._ended)

    def _check(self) -> None:
        if self._ended.done():
            raise CallEnded(self._ended.result())

    async def _until_ended(self, aw: Awaitable[object], timeout: float | None = None) -> object:
        """Await `aw` unless the call ends first (then raise CallEnded) or `timeout` seconds pass
        (then `aw` is cancelled and TIMED_OUT returned).

        Not asyncio.wait_for: its inner task would keep the CallEnded, and the exception's
        traceback the wait_for frame that holds that task (a cycle per call)."""
        self._check()
        task = asyncio.ensure_future(aw)
        waiters: set[asyncio.Future[Any]] = {task, self._ended}
        try:
            done, _ = await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            task.cancel()
            raise
        if task in done:
            return task.result()
        task.cancel()  # e.g. an orphaned Queue.get() would swallow the next key
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        # The CancelledError just suppressed (kept by the task) has this frame in its traceback:
        # holding the task here too would make a cycle.
        del task, done, waiters
        self._check()
        return TIMED_OUT

    def elapsed(self) -> float:
        """Seconds since the call was answered (transcript time base)."""
        return self.clock() - self._t0

    def add_segment(self, segment: TranscriptSegment) -> None:
        """Into the transcript, card numbers masked (all digits while `sensitive`: see masking)."""
        segment = mask_segment(segment, sensitive=self.sensitive > 0)
        self.transcript.append(segment)
        for listener in list(self._segment_listeners):
            listener(segment)

    def add_segment_listener(self, listener: Callable[[TranscriptSegment], None]) -> Callable[[], None]:
        """Every segment as it enters the transcript (masked): live captions. Returns a remover."""
        listeners = self._segment_listeners
        listeners.append(listener)
        return lambda: listeners.remove(listener) if listener in listeners else None

    # ---- media in ----------------------------------------------------------
    def deliver_digit(self, digit: str) -> None:
        """A key press that arrived by signalling (SIP INFO) rather than media."""
        self._on_digit(digit)

    def _on_digit(self, digit: str) -> None:
        self._digits.put_nowait(digit)
        for listener in list(self._digit_listeners):
            listener(digit)
        if self._playing and self._dtmf_barge_in:
            self.interrupt_playback("dtmf")

    def _on_audio(self, frame: np.ndarray) -> None:
        for listener in list(self._audio_listeners):
            listener(frame)

    def add_audio_listener(self, listener: AudioListener) -> Callable[[], None]:
        """Receive every 20 ms frame of caller audio (int16, 8 kHz); returns a remover."""
        self._audio_listeners.append(listener)
        return lambda: self._audio_listeners.remove(listener) if listener in self._audio_listeners else None

    def add_digit_listener(self, listener: Callable[[str], None]) -> Callable[[], None]:
        self._digit_listeners.append(listener)
        return lambda: self._digit_listeners.remove(listener) if listener in self._digit_listeners else None

    async def receive_digit(self, timeout: float | None) -> str | None:
        """Next key the caller pressed (type-ahead is kept), or None after `timeout` seconds."""
        self._check()
        if not self._digits.empty():
            return self._digits.get_nowait()
        result = await self._until_ended(self._digits.get(), timeout)
        if result is TIMED_OUT:
            return None
        assert isinstance(result, str)
        return result

    def pending_digits(self) -> int:
        return self._digits.qsize()

    def clear_digits(self) -> None:
        while not self._digits.empty():
            self._digits.get_nowait()

    # ---- media out ---------------------------------------------------------
    async def play(
        self, pcm: np.ndarray, *, dtmf_barge_in: bool = True, speech_barge_in: bool = False
    ) -> PlayResult:
        """Play 8 kHz int16 audio; returns early when interrupted (barge-in or stop)."""
        self._check()
        if dtmf_barge_in and not self._digits.empty():
            return PlayResult(completed=False, interrupted_by="dtmf")
        self._play_interrupt = None
        self._playing = True
        self._dtmf_barge_in = dtmf_barge_in
        self.speech_barge_in = speech_barge_in
        try:
            completed = await self._until_ended(self.media.play(pcm))
        finally:
            self._playing = False
        return PlayResult(completed=bool(completed), interrupted_by=self._play_interrupt)

    def interrupt_playback(self, reason: str) -> None:
        """Stop the prompt now (speech start, key press, or flow decision)."""
        if self._playing:
            self._play_interrupt = reason
            self.media.stop_playback()

    async def send_dtmf(self, digits: str, duration_ms: int = 100) -> None:
        for d in digits:
            await self._until_ended(self.media.send_dtmf(d, duration_ms))

    # ---- recording ---------------------------------------------------------
    def start_recording(self, path: Path, *, both_directions: bool = False) -> None:
        self._check()
        self.media.start_recording(path, both_directions)

    def stop_recording(self) -> Path | None:
        return self.media.stop_recording()

    async def sleep(self, seconds: float) -> None:
        await self._until_ended(asyncio.sleep(seconds))

    # ---- signalling --------------------------------------------------------
    async def hangup(self, reason: str = "flow") -> None:
        if self.ended:
            return
        await self.signalling.hangup(reason)

    async def transfer(self, target: str) -> TransferResult:
        self._check()
        return await self.signalling.transfer(target)
