"""Audio files and generated audio: prompts in, call recordings out, 8 kHz int16 mono.

Prompts (WAV, FLAC, anything libsndfile reads) are converted once (mixed to mono,
resampled with a windowed-sinc polyphase filter, scaled to int16) and cached by
(path, mtime): a prompt played to 500 callers is read and converted once, and the
returned array is read-only so the RTP layer may cache its G.711 encoding too.
"""

from __future__ import annotations

import asyncio
import math
import os
import threading
from pathlib import Path

import numpy as np
import numpy.typing as npt
import soundfile as sf

from voice.rtp.dtmf import dtmf_frequencies

SAMPLE_RATE = 8000
Pcm = npt.NDArray[np.int16]

_cache: dict[tuple[str, int], Pcm] = {}
_cache_lock = threading.Lock()


def _kaiser_sinc_table(up: int, down: int, zero_crossings: int = 16, beta: float = 8.0
                       ) -> tuple[npt.NDArray[np.float64], int]:
    """Polyphase table: row p holds the taps for an output at input offset p/up."""
    fc = 0.5 * min(1.0, up / down) * 0.94  # cutoff in cycles per input sample, a little below Nyquist
    half = math.ceil(zero_crossings / (2 * fc))
    j = np.arange(-half + 1, half + 1)
    t = j[None, :] - (np.arange(up)[:, None] / up)  # input index minus the output's exact position
    # Kaiser window evaluated at the exact (fractional) tap positions over [-half, half]
    w = np.i0(beta * np.sqrt(np.clip(1 - (t / half) ** 2, 0, 1))) / np.i0(beta)
    h = 2 * fc * np.sinc(2 * fc * t) * w
    h /= h.sum(axis=1, keepdims=True)  # unity DC gain for every phase
    return h, half


def resample(x: npt.NDArray[np.float64], src_rate: int, dst_rate: int) -> npt.NDArray[np.float64]:
    """Band-limited rational resampling (Kaiser-windowed sinc, polyphase), float in, float out."""
    if src_rate == dst_rate:
        return x.astype(np.float64)
    g = math.gcd(src_rate, dst_rate)
    up, down = dst_rate // g, src_rate // g
    table, half = _kaiser_sinc_table(up, down)
    n_out = (len(x) * up) // down
    padded = np.concatenate([np.zeros(half), x.astype(np.float64), np.zeros(half + 1)])
    taps = np.arange(-half + 1, half + 1)
    out = np.empty(n_out)
    chunk = 4096
    for start in range(0, n_out, chunk):
        m = np.arange(start, min(start + chunk, n_out))
        base = (m * down) // up
        phase = (m * down) % up
        idx = base[:, None] + taps[None, :] + half
        out[start:start + len(m)] = np.einsum("ij,ij->i", padded[idx], table[phase])
    return out


def to_pcm16(x: npt.NDArray[np.float64]) -> Pcm:
    """Float in [-1, 1] -> int16 with clipping."""
    out: Pcm = np.clip(np.round(x * 32767), -32768, 32767).astype(np.int16)
    return out


def _read(path: Path) -> Pcm:
    data, rate = sf.read(str(path), dtype="float64", always_2d=True)
    mono = data.mean(axis=1)
    pcm = to_pcm16(resample(mono, int(rate), SAMPLE_RATE))
    pcm.setflags(write=False)
    return pcm


def load_prompt(path: str | Path) -> Pcm:
    """Read a prompt as 8 kHz int16 mono (read-only array), cached by (path, mtime)."""
    p = Path(path).resolve()
    key = (str(p), os.stat(p).st_mtime_ns)
    with _cache_lock:
        hit = _cache.get(key)
    if hit is not None:
        return hit
    pcm = _read(p)
    with _cache_lock:
        for old in [k for k in _cache if k[0] == key[0]]:
            del _cache[old]  # a re-recorded prompt replaces the stale version
        _cache[key] = pcm
    return pcm


async def load_prompt_async(path: str | Path) -> Pcm:
    """load_prompt off the event loop (file read and resampling are blocking work)."""
    return await asyncio.to_thread(load_prompt, path)


def tone(freq: float, ms: int, amplitude: float = 0.5, sample_rate: int = SAMPLE_RATE) -> Pcm:
    """A sine tone; amplitude is a fraction of full scale."""
    n = np.arange(sample_rate * ms // 1000)
    return to_pcm16(amplitude * np.sin(2 * np.pi * freq * n / sample_rate))


def dtmf_tone(digit: str, ms: int, amplitude: float = 0.25, sample_rate: int = SAMPLE_RATE) -> Pcm:
    """The dual tone of a key (both components at `amplitude`)."""
    low, high = dtmf_frequencies(digit)
    n = np.arange(sample_rate * ms // 1000)
    return to_pcm16(amplitude * (np.sin(2 * np.pi * low * n / sample_rate)
                                 + np.sin(2 * np.pi * high * n / sample_rate)))


def silence(ms: int, sample_rate: int = SAMPLE_RATE) -> Pcm:
    return np.zeros(sample_rate * ms // 1000, dtype=np.int16)


class WavRecorder:
    """Writes a call to a 16-bit WAV file as it happens.

    Mono: the caller. Stereo (`both_directions`): left the caller, right us. Time is
    driven by our 20 ms send clock (`tick`), so both channels stay aligned and
    gaps in the caller's stream (silence suppression, loss, hold) become silence
    instead of shortening the file. Frames are written in blocks of one second:
    16-32 KB into the page cache, tens of microseconds, never an fsync, so doing it
    on the event loop costs less than handing it to a thread would.
    """

    MAX_QUEUE = 10  # caller frames waiting for a tick; more means clock drift: drop the oldest

    def __init__(self, path: str | Path, *, both_directions: bool = False, frame: int = 160,
                 flush_frames: int = 50) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.both = both_directions
        self.frame = frame
        self.flush_frames = flush_frames
        self._file = sf.SoundFile(str(self.path), mode="w", samplerate=SAMPLE_RATE,
                                  channels=2 if both_directions else 1, subtype="PCM_16", format="WAV")
        self._queue: list[Pcm] = []
        self._blocks: list[Pcm] = []
        self._silence = np.zeros(frame, dtype=np.int16)
        self.frames = 0

    def caller_frame(self, pcm: Pcm) -> None:
        """One frame of received caller audio."""
        self._queue.append(pcm)
        if len(self._queue) > self.MAX_QUEUE:
            del self._queue[0]

    def tick(self, ours: Pcm | None = None) -> None:
        """One frame time passed; `ours` is what we sent in it (None: nothing/silence)."""
        caller = self._queue.pop(0) if self._queue else self._silence
        if self.both:
            right = self._silence if ours is None or len(ours) == 0 else ours
            if len(right) < self.frame:
                right = np.concatenate([right, self._silence[: self.frame - len(right)]])
            self._blocks.append(np.column_stack([caller, right]))
        else:
            self._blocks.append(caller)
        self.frames += 1
        if len(self._blocks) >= self.flush_frames:
            self.flush()

    def flush(self) -> None:
        if self._blocks and not self._file.closed:
            self._file.write(np.concatenate(self._blocks))
            self._blocks.clear()

    def close(self) -> Path:
        if not self._file.closed:
            self.flush()
            self._file.close()
        return self.path
