"""In-memory stand-ins for a call's media and signalling ports, for tests and `voice simulate`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import numpy as np

from voice.callcontrol.call import SAMPLE_RATE, TransferResult


class FakeMedia:
    """A media port that keeps what was played; `realtime` scales playback duration (0 = instant)."""

    def __init__(self, realtime: float = 0.0) -> None:
        self.realtime = realtime
        self.played: list[np.ndarray] = []
        self.sent_dtmf: list[str] = []
        self.recording: tuple[Path, bool] | None = None
        self._stop: asyncio.Event | None = None
        self._on_digit: Callable[[str], None] = lambda d: None
        self._on_audio: Callable[[np.ndarray], None] = lambda f: None

    def set_listeners(self, on_digit: Callable[[str], None], on_audio: Callable[[np.ndarray], None]) -> None:
        self._on_digit, self._on_audio = on_digit, on_audio

    async def play(self, pcm: np.ndarray) -> bool:
        self.played.append(pcm)
        self._stop = stop = asyncio.Event()
        try:
            await asyncio.wait_for(stop.wait(), len(pcm) / SAMPLE_RATE * self.realtime)
            return False
        except TimeoutError:
            return True
        finally:
            self._stop = None

    def stop_playback(self) -> None:
        if self._stop is not None:
            self._stop.set()

    async def send_dtmf(self, digit: str, duration_ms: int = 100) -> None:
        self.sent_dtmf.append(digit)

    def start_recording(self, path: Path, both_directions: bool) -> None:
        self.recording = (path, both_directions)

    def stop_recording(self) -> Path | None:
        rec, self.recording = self.recording, None
        return rec[0] if rec else None

    # what the "caller" does
    def press(self, digits: str) -> None:
        for d in digits:
            self._on_digit(d)

    def speak(self, pcm: np.ndarray) -> None:
        for i in range(0, len(pcm) - 159, 160):
            self._on_audio(pcm[i : i + 160])


class FakeSignalling:
    """A leg without a network: `remote_hangup(cause)` is the caller hanging up."""

    def __init__(self) -> None:
        self.hung_up: str | None = None
        self.transfers: list[str] = []
        self._end: asyncio.Future[str] | None = None

    @property
    def end(self) -> asyncio.Future[str]:
        if self._end is None:
            self._end = asyncio.get_running_loop().create_future()
        return self._end

    def remote_hangup(self, cause: str = "bye") -> None:
        if not self.end.done():
            self.end.set_result(cause)

    async def hangup(self, reason: str) -> None:
        if not self.end.done():
            self.end.set_result(reason)
        self.hung_up = reason

    async def transfer(self, target: str) -> TransferResult:
        self.transfers.append(target)
        return TransferResult(ok=True, target=target)
