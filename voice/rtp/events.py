"""What a `voice.rtp.session.MediaSession` reports to its adapter (`next_event()`).

Events are frozen keyword-only records, as in h11. Requests that complete later (a prompt, a
DTMF digit to send) are named by the integer the request returned.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

Pcm = npt.NDArray[np.int16]


class Recorder(Protocol):
    """Where a session writes the call's audio (voice.audio.WavRecorder): time runs on our send
    clock, one `tick` per 20 ms frame time, so both directions stay aligned."""

    @property
    def both(self) -> bool:
        """True: stereo, caller left and us right; False: the caller only."""

    def caller_frame(self, pcm: Pcm) -> None:
        """One frame of received caller audio."""

    def tick(self, ours: Pcm | None) -> None:
        """One frame time passed; `ours` is what we sent in it (None: silence)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DigitReceived:
    """A key press, once per press: from RFC 4733 events or detected in the audio."""

    digit: str
    inband: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class AudioReceived:
    """One 20 ms frame (160 samples, 8 kHz int16) of the peer's audio, in sequence order."""

    frame: Pcm


@dataclass(frozen=True, slots=True, kw_only=True)
class PlaybackFinished:
    """The prompt `play()` returned `playback` for: sent to its end, or stopped (completed=False)."""

    playback: int
    completed: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class DtmfSent:
    """The digit `send_dtmf()` returned `request` for has been sent (or dropped by stop/close)."""

    request: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordingFailed:
    """The recorder raised (disk full, file removed): it is dropped, the call goes on."""

    recorder: Recorder
    error: Exception


MediaEvent = DigitReceived | AudioReceived | PlaybackFinished | DtmfSent | RecordingFailed
