"""Energy-based voice activity detection and endpointing, sans-IO, on audio time.

Frames (20 ms, 8 kHz int16) go in, events come out; time is the amount of audio
seen, so tests are exact and do not sleep. Rules:
- speech starts after `start_frames` consecutive frames above the threshold
  (60 ms: fast enough to stop a prompt within 200 ms of the first syllable);
  the start time is the first of those frames;
- the threshold follows the line's noise floor (floor + 15 dB, never below -45 dBFS);
  the floor starts at the first frame's level (capped at -40 dBFS),
  and is 6 dB lower once speech has started (hysteresis keeps soft endings);
- speech ends after `end_silence` seconds below the threshold (VoiceXML's
  complete/incomplete timeouts), or when it has lasted `max_speech` seconds;
- no speech within `no_input_timeout` seconds of listening is no-input.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from voice.asr.audio import frame_energy_db

FRAME_SECONDS = 0.02


@dataclass(frozen=True, kw_only=True)
class SpeechStarted:
    at: float  # seconds of audio since listening began


@dataclass(frozen=True, kw_only=True)
class SpeechEnded:
    at: float  # end of the last voiced frame
    reason: str  # "silence" | "max_speech"


@dataclass(frozen=True, kw_only=True)
class NoInput:
    at: float


EndpointEvent = SpeechStarted | SpeechEnded | NoInput


class Endpointer:
    def __init__(
        self,
        *,
        no_input_timeout: float,
        end_silence: float,
        max_speech: float,
        start_frames: int = 3,
        min_threshold_db: float = -45.0,
        margin_db: float = 15.0,
    ) -> None:
        self.no_input_timeout = no_input_timeout
        self.end_silence = end_silence
        self.max_speech = max_speech
        self.start_frames = start_frames
        self.min_threshold_db = min_threshold_db
        self.margin_db = margin_db
        self.noise_db: float | None = None  # set from the first frame (a line may be noisy from the start)
        self.frames = 0
        self.state = "waiting"  # waiting -> speech -> done
        self._run = 0  # consecutive voiced frames while waiting
        self.speech_start: float | None = None
        self._last_voiced_end = 0.0

    @property
    def now(self) -> float:
        return self.frames * FRAME_SECONDS

    @property
    def threshold_db(self) -> float:
        floor = self.noise_db if self.noise_db is not None else -90.0
        return max(self.min_threshold_db, floor + self.margin_db)

    def feed(self, frame: np.ndarray) -> list[EndpointEvent]:
        if self.state == "done":
            return []
        level = frame_energy_db(frame)
        if self.noise_db is None:
            # Capped: a caller already talking in the first frame must not become the floor.
            self.noise_db = min(level, -40.0)
        start_of_frame = self.now
        self.frames += 1
        if self.state == "waiting":
            return self._waiting(level, start_of_frame)
        return self._speaking(level)

    def _waiting(self, level: float, start_of_frame: float) -> list[EndpointEvent]:
        if level > self.threshold_db:
            self._run += 1
            if self._run >= self.start_frames:
                self.state = "speech"
                self.speech_start = start_of_frame - (self.start_frames - 1) * FRAME_SECONDS
                self._last_voiced_end = self.now
                return [SpeechStarted(at=self.speech_start)]
        else:
            self._run = 0
            # Track the floor: fall fast, rise slowly (a long noisy line raises it over ~1 s).
            assert self.noise_db is not None
            step = 0.5 if level < self.noise_db else 0.05
            self.noise_db += step * (level - self.noise_db)
        if self.now >= self.no_input_timeout:
            self.state = "done"
            return [NoInput(at=self.now)]
        return []

    def _speaking(self, level: float) -> list[EndpointEvent]:
        assert self.speech_start is not None
        if level > self.threshold_db - 6.0:
            self._last_voiced_end = self.now
        if self.now - self.speech_start >= self.max_speech:
            self.state = "done"
            return [SpeechEnded(at=self.now, reason="max_speech")]
        if self.now - self._last_voiced_end >= self.end_silence:
            self.state = "done"
            return [SpeechEnded(at=self._last_voiced_end, reason="silence")]
        return []
