"""Speech engines: one small ABC, one module per engine, a factory that fails loudly.

An engine is loaded once per worker process (the expensive part: acoustic model,
dictionary, graph). Each utterance gets an `EngineStream` that is fed 8 kHz int16
audio as it arrives and returns an `EngineResult` when the endpointer says stop.
"""

from __future__ import annotations

import logging
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from voice.config import AsrConfig

log = logging.getLogger(__name__)

ENGINES = ("whisper", "vosk", "pocketsphinx")


class EngineError(Exception):
    """The engine or its model cannot be used (bad name, missing model, bad grammar)."""


@dataclass(frozen=True, kw_only=True)
class Word:
    word: str
    start: float  # seconds from the start of the utterance audio
    end: float
    confidence: float


@dataclass(frozen=True, kw_only=True)
class EngineResult:
    text: str
    confidence: float  # 0..1, the engine's own estimate for the whole utterance
    words: tuple[Word, ...] = ()
    cpu_seconds: float = 0.0  # decoder CPU time spent on this utterance (for the benchmark)
    audio_seconds: float = 0.0
    # other readings, best first, as (text, confidence): the n-best kept in the IVR record
    alternatives: tuple[tuple[str, float], ...] = ()
    batch: int = 1  # utterances decoded together in the pass that produced this result


@dataclass(frozen=True, kw_only=True)
class EngineSpec:
    """What a worker needs to load an engine; small and picklable."""

    name: str  # "whisper" | "vosk" | "pocketsphinx"
    model: str | None = None  # Whisper: tiny.en | base | directory; Vosk: directory or language code
    language: str = "en-us"
    device: str = "auto"  # Whisper only, from [asr] whisper_*
    compute_type: str = "auto"
    threads: int = 1
    window: str = "short"


class EngineStream(ABC):
    """One utterance being decoded."""

    @abstractmethod
    def accept(self, pcm: np.ndarray) -> None:
        """Feed 8 kHz int16 mono samples (any length)."""

    @abstractmethod
    def finish(self) -> EngineResult:
        """No more audio: return the final result. The stream is unusable afterwards."""

    def cancel(self) -> None:
        """Abandon the utterance (caller hung up); default: finish and drop the result."""
        self.finish()


class SpeechEngine(ABC):
    name: str = ""
    streaming: bool = True  # decodes as audio arrives; False: decodes whole ended utterances

    def decode_utterances(
        self, pcms: Sequence[np.ndarray], options: Sequence[str] | None
    ) -> list[EngineResult]:
        """Decode whole utterances (8 kHz int16) that share one grammar; default: one stream each."""
        out = []
        for pcm in pcms:
            stream = self.open_stream(options)
            stream.accept(pcm)
            out.append(stream.finish())
        return out

    @abstractmethod
    def open_stream(self, options: Sequence[str] | None) -> EngineStream:
        """Start an utterance: grammar mode with `options`, free form when None."""

    def stats(self) -> dict[str, int]:
        """Counters for tests and the benchmark (e.g. decoders created)."""
        return {}


_LANG_CODE = re.compile(r"^[a-z]{2,3}(-[a-z]{2,4})?$")


def looks_like_language_code(text: str) -> bool:
    return bool(_LANG_CODE.match(text)) and not Path(text).exists()


def vosk_model_available(model: str | None) -> bool:
    """True when `model` is an existing directory or a language code already in Vosk's cache."""
    if not model:
        return False
    if Path(model).is_dir():
        return True
    if not looks_like_language_code(model):
        return False
    import vosk  # lazy: the CLI must not pay for it

    pattern = re.compile(rf"vosk-model(-small)?-{re.escape(model)}")
    for directory in vosk.MODEL_DIRS:
        d = Path(directory) if directory is not None else None
        if d is not None and d.is_dir() and any(pattern.match(p.name) for p in d.iterdir()):
            return True
    return False


def resolve_engine(
    engine: str,
    vosk_model: str | None,
    language: str = "en-us",
    *,
    whisper_model: str | None = None,
    device: str = "auto",
    compute_type: str = "auto",
    threads: int = 1,
    window: str = "short",
) -> EngineSpec:
    """Apply `[asr] engine = auto`: Vosk when its model is configured and present (an explicit
    choice, e.g. Korean), else Whisper when its model is installed and fits the language,
    else PocketSphinx (the wheel's own model)."""
    from voice.asr.whisper_models import whisper_available

    whisper = EngineSpec(name="whisper", model=whisper_model, language=language, device=device,
                         compute_type=compute_type, threads=threads, window=window)
    english = language.lower().startswith("en")
    if engine == "auto":
        if vosk_model_available(vosk_model):
            spec = EngineSpec(name="vosk", model=vosk_model, language=language)
            log.info("asr: engine auto -> vosk (model %s)", vosk_model)
        elif english and whisper_available(whisper_model):
            spec = whisper
            log.info("asr: engine auto -> whisper (model %s)", whisper_model or "tiny.en")
        else:
            spec = EngineSpec(name="pocketsphinx", language=language)
            why = "vosk model not found" if vosk_model else "no whisper model installed"
            log.info("asr: engine auto -> pocketsphinx (%s)", why)
        return spec
    if engine not in ENGINES:
        raise EngineError(f"unknown speech engine {engine!r} (known: auto, {', '.join(ENGINES)})")
    if engine == "vosk" and not vosk_model:
        raise EngineError("engine vosk needs [asr] vosk_model (a model directory or a language code)")
    if engine == "whisper":
        log.info("asr: engine whisper (model %s)", whisper_model or "tiny.en")
        return whisper
    spec = EngineSpec(name=engine, model=vosk_model if engine == "vosk" else None, language=language)
    log.info("asr: engine %s%s", engine, f" (model {vosk_model})" if engine == "vosk" else "")
    return spec


def spec_from_config(cfg: AsrConfig, engine: str | None = None) -> EngineSpec:
    """resolve_engine with every [asr] setting (engine overridable, e.g. by a CLI flag)."""
    return resolve_engine(
        engine or cfg.engine, cfg.vosk_model, cfg.language, whisper_model=cfg.whisper_model,
        device=cfg.whisper_device, compute_type=cfg.whisper_compute_type, threads=cfg.whisper_threads,
        window=cfg.whisper_window,
    )


def create_engine(spec: EngineSpec) -> SpeechEngine:
    """Load the engine named by `spec` (slow: call once per worker)."""
    if spec.name == "whisper":
        from voice.asr.whisper_engine import WhisperEngine

        return WhisperEngine(spec.model, device=spec.device, compute_type=spec.compute_type,
                             cpu_threads=spec.threads, window=spec.window)
    if spec.name == "vosk":
        from voice.asr.vosk_engine import VoskEngine

        return VoskEngine(spec.model)
    if spec.name == "pocketsphinx":
        from voice.asr.pocketsphinx_engine import PocketSphinxEngine

        return PocketSphinxEngine(spec.model)
    raise EngineError(f"unknown speech engine {spec.name!r} (known: {', '.join(ENGINES)})")
