"""Vosk engine: Kaldi streaming recognition, grammar (phrase list) or free form.

The Model is loaded once per worker and shared by all its KaldiRecognizers.
Grammar JSON is written with ensure_ascii=False: Vosk matches the raw UTF-8 words
and does not unescape \\uXXXX, so escaped Hangul would silently match nothing.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from voice.asr.audio import Upsampler2x
from voice.asr.engine import (
    EngineError,
    EngineResult,
    EngineStream,
    SpeechEngine,
    Word,
    looks_like_language_code,
)
from voice.asr.matching import normalize

log = logging.getLogger(__name__)


def _model_rate(model_dir: Path) -> int:
    """Sample rate the model's features expect (Kaldi's default is 16 kHz)."""
    for name in ("mfcc.conf", "fbank.conf"):
        conf = model_dir / "conf" / name
        if conf.exists():
            m = re.search(r"--sample-frequency=(\d+)", conf.read_text())
            return int(m.group(1)) if m else 16000
    return 16000


class VoskEngine(SpeechEngine):
    name = "vosk"

    def __init__(self, model: str | None) -> None:
        import vosk

        vosk.SetLogLevel(-1)
        if not model:
            raise EngineError("vosk needs a model directory or a language code ([asr] vosk_model)")
        self._vosk = vosk
        if Path(model).is_dir():
            self.model_dir = Path(model)
            self.model = vosk.Model(str(model))
        elif looks_like_language_code(model):
            try:  # Vosk's downloader: fetches the small model for the language once, into ~/.cache/vosk
                self.model = vosk.Model(lang=model)
            except SystemExit:  # vosk calls sys.exit() for an unknown language
                raise EngineError(f"vosk has no model for language {model!r}") from None
            except Exception as exc:
                raise EngineError(f"vosk model for {model!r} could not be loaded: {exc}") from None
            self.model_dir = Path(self.model.get_model_path(None, model))
        else:
            raise EngineError(f"vosk model {model!r}: no such directory (and not a language code)")
        self.rate = _model_rate(self.model_dir)
        self.has_unk = self.model.vosk_model_find_word("[unk]") >= 0

    def known(self, word: str) -> bool:
        return bool(self.model.vosk_model_find_word(word) >= 0)

    def grammar_json(self, options: Sequence[str]) -> str:
        phrases = []
        for option in options:
            words = normalize(option).split()
            missing = [w for w in words if not self.known(w)]
            if missing:
                log.warning("vosk: option %r dropped: not in the model's vocabulary: %s", option, missing)
            elif words:
                phrases.append(" ".join(words))
        if not phrases:
            raise EngineError(f"no grammar option is in the vosk model's vocabulary: {list(options)}")
        # "[unk]" lets out-of-grammar speech land somewhere other than an option.
        return json.dumps([*phrases, "[unk]"] if self.has_unk else phrases, ensure_ascii=False)

    def open_stream(self, options: Sequence[str] | None) -> EngineStream:
        if options is None:
            rec = self._vosk.KaldiRecognizer(self.model, self.rate)
        else:
            rec = self._vosk.KaldiRecognizer(self.model, self.rate, self.grammar_json(options))
        rec.SetWords(True)
        return _VoskStream(rec, upsample=self.rate == 16000)


class _VoskStream(EngineStream):
    def __init__(self, rec: Any, upsample: bool) -> None:
        self.rec = rec
        self.up = Upsampler2x() if upsample else None
        self.parts: list[dict[str, Any]] = []  # Vosk's own endpointer may split an utterance
        self.samples = 0
        self.cpu = 0.0

    def accept(self, pcm: np.ndarray) -> None:
        t = time.thread_time()
        self.samples += len(pcm)
        data = self.up.process(pcm) if self.up is not None else pcm.astype(np.int16)
        if self.rec.AcceptWaveform(data.tobytes()):
            self.parts.append(json.loads(self.rec.Result()))
        self.cpu += time.thread_time() - t

    def finish(self) -> EngineResult:
        t = time.thread_time()
        self.parts.append(json.loads(self.rec.FinalResult()))
        words = [
            Word(word=w["word"], start=float(w["start"]), end=float(w["end"]), confidence=float(w["conf"]))
            for part in self.parts
            for w in part.get("result", [])
        ]
        spoken = [w for w in words if w.word != "[unk]"]
        text = " ".join(w.word for w in spoken)
        # Out-of-grammar speech shows up as [unk]: it counts against the utterance.
        confidence = sum(w.confidence for w in spoken) / len(words) if words else 0.0
        self.cpu += time.thread_time() - t
        return EngineResult(
            text=text,
            confidence=confidence,
            words=tuple(words),
            cpu_seconds=self.cpu,
            audio_seconds=self.samples / 8000,
        )
