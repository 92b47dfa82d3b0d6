"""On-device text to speech (flite or espeak-ng), rendered once and cached.

Rendering runs the engine as a subprocess in a worker thread (never on the event loop),
converts to 8 kHz int16 mono and keeps the result in memory and on disk, keyed by
engine + voice + text, so a prompt is synthesised once per text for the life of the cache.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import soundfile as sf

log = logging.getLogger(__name__)

SAMPLE_RATE = 8000
ENGINES = ("flite", "espeak-ng")


class TtsError(Exception):
    pass


def to_8k_int16(data: np.ndarray, rate: int) -> np.ndarray:
    """Mono int16 at 8 kHz from float or int audio at any rate (low-pass, then resample)."""
    if rate == SAMPLE_RATE and data.dtype == np.int16 and data.ndim == 1:
        return data
    x = np.asarray(data, dtype=np.float64)
    if x.ndim > 1:
        x = x.mean(axis=1)
    if np.issubdtype(np.asarray(data).dtype, np.integer):
        x = x / 32768.0
    if rate != SAMPLE_RATE and len(x):
        if rate > SAMPLE_RATE:
            # windowed-sinc low-pass just under the new Nyquist (4 kHz) to avoid aliasing
            cutoff = 0.9 * (SAMPLE_RATE / 2) / rate
            n = np.arange(-32, 33)
            taps = 2 * cutoff * np.sinc(2 * cutoff * n) * np.hamming(len(n))
            x = np.convolve(x, taps / taps.sum(), mode="same")
        out_len = round(len(x) * SAMPLE_RATE / rate)
        x = np.interp(np.arange(out_len) * (rate / SAMPLE_RATE), np.arange(len(x)), x)
    return (np.clip(x, -1.0, 1.0) * 32767).astype(np.int16)


class Tts:
    """`await tts.render(text)` -> 8 kHz int16 speech; `cached(text)` is the no-wait fast path."""

    def __init__(self, engine: str, voice: str, cache_dir: Path, *, memory_items: int = 2000) -> None:
        if engine not in ENGINES:
            raise TtsError(f"unknown TTS engine {engine!r} (known: {', '.join(ENGINES)})")
        self.engine = engine
        self.voice = voice
        self.cache_dir = Path(cache_dir)
        self._memory: OrderedDict[str, np.ndarray] = OrderedDict()
        self._memory_items = memory_items
        self._pending: dict[str, asyncio.Future[np.ndarray]] = {}

    @staticmethod
    def available(engine: str) -> bool:
        return shutil.which(engine) is not None

    def _key(self, text: str) -> str:
        digest = hashlib.sha256(f"{self.engine}\0{self.voice}\0{text}".encode()).hexdigest()[:32]
        return f"{self.engine}-{self.voice}-{digest}"

    def cached(self, text: str) -> np.ndarray | None:
        """The rendered audio if it is in memory (no I/O, safe on the hot path)."""
        key = self._key(text)
        pcm = self._memory.get(key)
        if pcm is not None:
            self._memory.move_to_end(key)
        return pcm

    async def render(self, text: str) -> np.ndarray:
        text = " ".join(text.split())
        if not text:
            return np.zeros(0, dtype=np.int16)
        key = self._key(text)
        pcm = self._memory.get(key)
        if pcm is not None:
            self._memory.move_to_end(key)
            return pcm
        pending = self._pending.get(key)
        if pending is not None:  # the same text is being rendered for another call: share it
            return await asyncio.shield(pending)
        fut: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        self._pending[key] = fut
        try:
            pcm = await asyncio.to_thread(self._render_blocking, text, key)
            # Read-only: shared by every call that says this text, and the RTP layer encodes a
            # read-only prompt once per codec instead of on every playback.
            pcm.setflags(write=False)
            fut.set_result(pcm)
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # consumed here; waiters get it through shield
            raise
        finally:
            del self._pending[key]
        self._memory[key] = pcm
        if len(self._memory) > self._memory_items:
            self._memory.popitem(last=False)
        return pcm

    def _render_blocking(self, text: str, key: str) -> np.ndarray:
        path = self.cache_dir / f"{key}.wav"
        if path.is_file():
            try:
                data, rate = sf.read(path, dtype="int16")
                return to_8k_int16(data, rate)
            except (RuntimeError, sf.LibsndfileError):
                log.warning("unreadable TTS cache file %s; rendering again", path)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="tts-") as tmp:
            raw = Path(tmp) / "out.wav"
            if self.engine == "flite":
                cmd = ["flite", "-voice", self.voice, "-t", text, "-o", str(raw)]
                stdin = None
            else:
                cmd = ["espeak-ng", "-v", self.voice, "-w", str(raw), "--stdin"]
                stdin = text
            try:
                subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=30, check=True)
                data, rate = sf.read(raw, dtype="int16")
            except FileNotFoundError:
                raise TtsError(f"TTS engine {self.engine!r} is not installed") from None
            except subprocess.CalledProcessError as exc:
                raise TtsError(f"{self.engine} failed: {exc.stderr.strip()[:200]}") from None
            except subprocess.TimeoutExpired:
                raise TtsError(f"{self.engine} took longer than 30 s") from None
        pcm = to_8k_int16(data, rate)
        # write to a temp name then rename, so a concurrent reader never sees half a file
        tmp_path = path.with_suffix(f".{os.getpid()}.tmp")
        sf.write(tmp_path, pcm, SAMPLE_RATE, subtype="PCM_16", format="WAV")
        tmp_path.replace(path)
        return pcm
