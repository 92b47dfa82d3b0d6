"""Recorded prompt files: loaded once (off the event loop), then served from memory."""

from __future__ import annotations

import asyncio
import importlib
import logging
from pathlib import Path

import numpy as np
import soundfile as sf

from voice.ivr.validate import prompt_path
from voice.tts import to_8k_int16

log = logging.getLogger(__name__)

_cache: dict[tuple[Path, float], np.ndarray] = {}


def _load_blocking(path: Path) -> np.ndarray:
    try:  # the shared audio module when present (same cache as the rest of the service)
        audio = importlib.import_module("voice.audio")
        pcm = np.asarray(audio.load_prompt(path), dtype=np.int16)
        return pcm
    except ImportError:
        data, rate = sf.read(path, dtype="int16")
        return to_8k_int16(data, rate)


class PromptFiles:
    def __init__(self, prompts_dir: Path) -> None:
        self.prompts_dir = Path(prompts_dir)

    def cached(self, file: str) -> np.ndarray | None:
        path = prompt_path(self.prompts_dir, file)
        if path is None:
            return None
        return _cache.get((path, path.stat().st_mtime))

    async def load(self, file: str) -> np.ndarray:
        """8 kHz int16 audio of a prompt file; FileNotFoundError if it vanished since validation."""
        path = prompt_path(self.prompts_dir, file)
        if path is None:
            raise FileNotFoundError(f"prompt file {file!r} not found in {self.prompts_dir}")
        key = (path, path.stat().st_mtime)
        pcm = _cache.get(key)
        if pcm is None:
            pcm = await asyncio.to_thread(_load_blocking, path)
            _cache[key] = pcm
        return pcm
