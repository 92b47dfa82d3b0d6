"""What a caller hears while waiting for an agent: music on hold, their place in line, ringback.

Rules (the whole contract):
- One `CallerHold` per waiting caller, one task, and every sound goes through `CallView.play` /
  `stop_playback`: music (looped from where it stopped, never restarted), the position, and, while
  an agent's phone rings, ringback or the music going on (the queue's `ringing`).
- The position is said at once when it changes and again every `announce_interval` seconds
  (measured from the end of the last announcement; 0: only on change). The music goes on while the
  announcement is rendered; the rendered speech then interrupts it, so the caller never waits in
  silence for the TTS.
- Music slices end when the next announcement is due, so a repeat needs no interruption.
- A caller who hangs up ends the task (`play` returns False for a call that ended).

The default tune (`hold_music()`) is synthesised here from a fixed chord loop: reproducible, no
licence to worry about; `python -m cti.waiting FILE` writes it as the WAV under recordings/moh/.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import sys
from pathlib import Path
from typing import Protocol

import numpy as np

from cti.ports import CallView

log = logging.getLogger("cti.waiting")

SAMPLE_RATE = 8000
POSITION_TEXT = "You are number {position} in line. Please hold."
NEXT_TEXT = "You are next in line. Please hold."
MIN_SLICE = 0.25  # seconds: shortest music slice, so a due announcement cannot make a busy loop


class SpeechRenderer(Protocol):
    """Text to 8 kHz int16 speech (voice.tts.Tts fits)."""

    async def render(self, text: str) -> np.ndarray: ...


def position_text(position: int, callback_key: str = "") -> str:
    """The announcement; with a `callback_key`, the virtual hold offer after it (cti.virtual_hold)."""
    from cti.virtual_hold import OFFER_TEXT

    text = NEXT_TEXT if position == 1 else POSITION_TEXT.format(position=position)
    if callback_key:
        key = {"*": "star", "#": "pound"}.get(callback_key, callback_key)
        text += OFFER_TEXT.format(key=key)
    return text


# ---- sounds ------------------------------------------------------------------------------------
@functools.cache
def hold_music(seconds_per_chord: float = 2.0) -> np.ndarray:
    """A calm 16-second loop (C, Am, F, G): a soft pad under an arpeggio; no silent stretch.
    Computed once per process (read-only: every waiting caller shares it)."""
    chords = [(261.63, 329.63, 392.00), (220.00, 261.63, 329.63), (174.61, 220.00, 261.63),
              (196.00, 246.94, 293.66)] * 2
    n = int(seconds_per_chord * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    # The pad dips (never to silence) at each chord change, so its phase jump does not click.
    dip = 0.3 + 0.7 * np.minimum(1.0, np.minimum(t, t[-1] - t) / 0.03)
    out = []
    for chord in chords:
        pad = sum(np.sin(2 * np.pi * (f / 2) * t) for f in chord) / 3 * dip
        arp = np.zeros(n)
        step = n // 4
        for k in range(4):
            f = chord[k % 3] * (2 if k == 3 else 1)
            tt = t[: n - k * step]
            note = np.sin(2 * np.pi * f * tt) + 0.25 * np.sin(2 * np.pi * 2 * f * tt)
            env = np.minimum(tt / 0.02, 1.0) * np.exp(-tt * 2.5)
            arp[k * step:] += note * env
        out.append(0.45 * pad + 0.35 * arp)
    x = np.concatenate(out)
    x = x / np.abs(x).max() * 0.25  # about -12 dBFS peak: music on hold should not shout
    out_pcm: np.ndarray = np.round(x * 32767).astype(np.int16)
    out_pcm.flags.writeable = False
    return out_pcm


@functools.cache
def ringback(seconds: float = 6.0) -> np.ndarray:
    """North American ringback: 440 + 480 Hz, 2 s on, 4 s off (one cadence per 6 s)."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    tone = (np.sin(2 * np.pi * 440 * t) + np.sin(2 * np.pi * 480 * t)) * 0.2
    tone[(t % 6.0) >= 2.0] = 0.0
    pcm: np.ndarray = np.round(tone * 32767).astype(np.int16)
    pcm.flags.writeable = False
    return pcm


def load_music(path: Path) -> np.ndarray:
    """A WAV (or any file libsndfile reads) as 8 kHz int16 mono. Blocking: run it in a thread."""
    import soundfile as sf

    data, rate = sf.read(str(path), dtype="float64", always_2d=True)
    x = data.mean(axis=1)
    if rate != SAMPLE_RATE and len(x):
        if rate > SAMPLE_RATE:  # a crude low-pass (moving average) against aliasing
            k = max(1, round(rate / SAMPLE_RATE))
            x = np.convolve(x, np.ones(k) / k, mode="same")
        out_len = round(len(x) * SAMPLE_RATE / rate)
        x = np.interp(np.arange(out_len) * (rate / SAMPLE_RATE), np.arange(len(x)), x)
    if len(x) < SAMPLE_RATE:
        raise ValueError(f"{path}: music on hold shorter than one second")
    pcm: np.ndarray = np.round(np.clip(x, -1.0, 1.0) * 32767).astype(np.int16)
    return pcm


class MusicLibrary:
    """Music on hold by file name, loaded once (in a thread); the built-in tune when a file fails."""

    def __init__(self) -> None:
        self.builtin = hold_music()
        self.ringback = ringback()
        self._loaded: dict[str, np.ndarray] = {}

    async def preload(self, paths: list[str | None]) -> None:
        for path in dict.fromkeys(p for p in paths if p):
            if path in self._loaded:
                continue
            try:
                self._loaded[path] = await asyncio.to_thread(load_music, Path(path))
            except Exception as exc:  # a missing or broken file must not keep callers from queueing
                log.warning("music on hold %s: %s; playing the built-in tune instead", path, exc)
                self._loaded[path] = self.builtin

    def get(self, path: str | None) -> np.ndarray:
        return self._loaded.get(path, self.builtin) if path else self.builtin


# ---- one waiting caller ------------------------------------------------------------------------
class CallerHold:
    """Plays to one waiting caller until closed. `position(n)` while waiting, `ringing()` while an
    agent's phone rings (`waiting()` again if they did not answer), `close()` when done."""

    def __init__(self, call: CallView, *, music: np.ndarray, ringback: np.ndarray | None,
                 voice: SpeechRenderer | None, announce_interval: float, callback_key: str = "") -> None:
        self.call = call
        self.callback_key = callback_key
        self.music = music
        self.ringback = ringback  # None: the music goes on while an agent's phone rings
        self.voice = voice
        self.interval = announce_interval
        self._loop = asyncio.get_running_loop()
        self._ringing = False
        self._position: int | None = None
        self._said: int | None = None  # the position last announced
        self._said_at = -math.inf  # loop time the last announcement ended
        self._speech: dict[int, np.ndarray] = {}
        self._rendering: dict[int, asyncio.Task[None]] = {}
        self._playing: str | None = None  # "music" | "position" | "ringback"
        self._saying: int | None = None  # the position being announced now
        self._music_at = 0  # sample offset of the music: it resumes where it stopped
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    def position(self, position: int | None) -> None:
        self._position = position
        if position is not None and position != self._said and not self._ringing:
            self._prepare(position)

    def ringing(self) -> None:
        self._ringing = True
        if self.ringback is not None and self._playing != "ringback":
            self._interrupt()
        elif self._playing == "position":
            self._interrupt()  # the caller is about to be connected: their place no longer matters

    def waiting(self) -> None:
        self._ringing = False
        if self._playing == "ringback":
            self._interrupt()
        elif self._due() and self._position is not None:
            self._prepare(self._position)  # an announcement skipped while ringing is said now

    async def close(self) -> None:
        for task in self._rendering.values():
            task.cancel()
        if self._task is not None:
            self._task.cancel()
            if self._playing is not None:
                self._interrupt()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    # ---- internals -----------------------------------------------------------------------------
    def _interrupt(self) -> None:
        if self._playing is not None:
            self.call.stop_playback()

    def _interrupt_for(self, position: int) -> None:
        """Stop the music, or an announcement of a place that is no longer the caller's."""
        if self._playing == "music" or (self._playing == "position" and self._saying != position):
            self.call.stop_playback()

    def _prepare(self, position: int) -> None:
        """Render the announcement in the background; when ready it interrupts the music."""
        if position in self._speech:
            self._interrupt_for(position)
            return
        if self.voice is None or position in self._rendering:
            return

        async def render() -> None:
            try:
                assert self.voice is not None
                self._speech[position] = await self.voice.render(position_text(position, self.callback_key))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("position announcement not rendered: %s", exc)
                return
            finally:
                self._rendering.pop(position, None)
            if self._position == position and not self._ringing:
                self._interrupt_for(position)

        self._rendering[position] = asyncio.ensure_future(render())

    def _due(self) -> bool:
        pos = self._position
        if pos is None or self.voice is None or self._ringing:
            return False
        if pos != self._said:
            return True
        return self.interval > 0 and self._loop.time() - self._said_at >= self.interval

    def _next(self) -> tuple[str, np.ndarray]:
        if self._ringing and self.ringback is not None:
            return "ringback", self.ringback
        seconds = len(self.music) / SAMPLE_RATE
        if self._due():
            assert self._position is not None
            speech = self._speech.get(self._position)
            if speech is not None and len(speech):
                return "position", speech
            self._prepare(self._position)
            seconds = MIN_SLICE  # until the speech is rendered (it interrupts the music then)
        elif (self._position is not None and self.voice is not None and self.interval > 0
              and not self._ringing):
            seconds = self._said_at + self.interval - self._loop.time()  # > 0: not due yet
        start = self._music_at % len(self.music)
        end = min(len(self.music), start + max(1, int(seconds * SAMPLE_RATE)))
        return "music", self.music[start:end]

    async def _run(self) -> None:
        try:
            await self._play_until_closed()
        except asyncio.CancelledError:
            raise
        except Exception:  # call control misbehaving must not take the queue transfer down with it
            log.exception("call %s: hold audio stopped", self.call.key)

    async def _play_until_closed(self) -> None:
        while not self.call.ended:
            kind, pcm = self._next()
            position = self._position
            self._playing, self._saying = kind, position if kind == "position" else None
            began = self._loop.time()
            try:
                await self.call.play(pcm)
            finally:
                self._playing = self._saying = None
            if kind == "music":
                played = min(len(pcm), round((self._loop.time() - began) * SAMPLE_RATE))
                self._music_at = (self._music_at % len(self.music) + played) % len(self.music)
            elif kind == "position":
                self._said, self._said_at = position, self._loop.time()
            if self._loop.time() == began:
                await asyncio.sleep(0)  # nothing was played (stopped at once): let the others run


def main(argv: list[str]) -> int:
    """`python -m cti.waiting FILE`: write the built-in hold music (8 kHz, G.711 mu-law WAV)."""
    import soundfile as sf

    if len(argv) != 1:
        print("usage: python -m cti.waiting FILE.wav", file=sys.stderr)
        return 2
    path = Path(argv[0])
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), hold_music(), SAMPLE_RATE, subtype="ULAW", format="WAV")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
