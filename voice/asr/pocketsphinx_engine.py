"""PocketSphinx engine: the embedded default (the wheel ships a US English model).

Loaded once per worker: the pronunciation dictionary is parsed into memory. Each
concurrent utterance needs its own C decoder (the library cannot share one acoustic
model between decoders), so decoders are pooled and reused across calls. Grammar
decoders are built with a one-word dictionary and get only the grammar's words
added, which makes them 5 MB / 15 ms each instead of 27 MB / 170 ms.

Grammar mode is JSGF: one alternative per flow option. A finite-state grammar
always finds *some* path, so confidence comes from how much of the utterance's
speech (frames above the energy floor) the matched words explain: unrelated speech
leaves long stretches aligned to silence, or never reaches the grammar's end.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from voice.asr.audio import Upsampler2x, energy_profile_db
from voice.asr.engine import EngineError, EngineResult, EngineStream, SpeechEngine, Word
from voice.asr.matching import normalize

log = logging.getLogger(__name__)

_FILLERS = {"<s>", "</s>", "<sil>", "(NULL)", "[NOISE]", "[SPEECH]", "[BREATH]", "[COUGH]"}
_FRAME_RATE = 100  # PocketSphinx frames per second
_SAMPLES_8K_PER_FRAME = 8000 // _FRAME_RATE
_MAX_CACHED_GRAMMARS = 32  # per decoder; flows have a handful of menus
# Cepstral mean prior for telephone audio (8 kHz, upsampled to 16 kHz): the model's own
# prior is for wideband speech, and live CMN needs a second or more of speech to get
# here. Measured by letting live CMN converge over six utterances (flite voices, unrelated
# to the test phrases) through G.711. Every utterance starts from it, so a result does
# not depend on which call used the pooled decoder before.
TELEPHONE_CMN = "45.05,22.96,-20.56,38.11,-19.73,9.86,6.02,-13.08,8.99,-8.69,10.26,0.91,0.06"


def _default_model_dir() -> Path:
    import pocketsphinx

    return Path(pocketsphinx.get_model_path()) / "en-us"


class PocketSphinxEngine(SpeechEngine):
    name = "pocketsphinx"

    def __init__(self, model_dir: str | None = None) -> None:
        from pocketsphinx import Decoder

        self._Decoder = Decoder
        root = Path(model_dir) if model_dir else _default_model_dir()
        self.hmm = root / "en-us"
        self.dict_path = root / "cmudict-en-us.dict"
        self.lm_path = root / "en-us.lm.bin"
        for p in (self.hmm, self.dict_path):
            if not p.exists():
                raise EngineError(f"pocketsphinx model file missing: {p}")
        self.prons: dict[str, list[str]] = {}
        with open(self.dict_path, encoding="utf-8") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) >= 2:
                    self.prons.setdefault(parts[0].split("(")[0], []).append(" ".join(parts[1:]))
        fd, tiny = tempfile.mkstemp(prefix="voice-ps-", suffix=".dict")
        with os.fdopen(fd, "w") as fh:
            fh.write("a AH\n")  # a decoder needs a dictionary file; grammar words are added per decoder
        self._tiny_dict = tiny
        self._free_grammar: list[_GrammarDecoder] = []
        self._free_lm: list[Any] = []
        self.decoders_created = 0

    def stats(self) -> dict[str, int]:
        return {"decoders_created": self.decoders_created}

    def close(self) -> None:
        Path(self._tiny_dict).unlink(missing_ok=True)

    # ---- decoder pool ------------------------------------------------------
    def _new_decoder(self, **kwargs: Any) -> Any:
        self.decoders_created += 1
        decoder = self._Decoder(samprate=16000, hmm=str(self.hmm), loglevel="FATAL", **kwargs)
        return decoder

    def _grammar_decoder(self) -> _GrammarDecoder:
        if self._free_grammar:
            return self._free_grammar.pop()
        return _GrammarDecoder(self._new_decoder(lm=None, dict=self._tiny_dict))

    def _lm_decoder(self) -> Any:
        if self._free_lm:
            return self._free_lm.pop()
        if not self.lm_path.exists():
            raise EngineError(f"pocketsphinx language model missing: {self.lm_path}")
        return self._new_decoder(lm=str(self.lm_path), dict=str(self.dict_path))

    def release(self, decoder: Any) -> None:
        if isinstance(decoder, _GrammarDecoder):
            self._free_grammar.append(decoder)
        else:
            self._free_lm.append(decoder)

    # ---- streams -----------------------------------------------------------
    def open_stream(self, options: Sequence[str] | None) -> EngineStream:
        if options is None:
            dec = self._lm_decoder()
            return _PsStream(self, dec, dec, None)
        phrases: list[list[str]] = []
        for option in options:
            words = normalize(option).split()
            missing = [w for w in words if w not in self.prons]
            if missing:
                log.warning("pocketsphinx: option %r dropped: not in the dictionary: %s", option, missing)
            elif words:
                phrases.append(words)
        if not phrases:
            raise EngineError(f"no grammar option is pronounceable by pocketsphinx: {list(options)}")
        gdec = self._grammar_decoder()
        gdec.activate(phrases, self.prons)
        return _PsStream(self, gdec, gdec.decoder, [" ".join(p) for p in phrases])


class _GrammarDecoder:
    """A decoder plus what it already knows (added words, compiled grammars)."""

    def __init__(self, decoder: Any) -> None:
        self.decoder = decoder
        self.words: set[str] = set()
        self.grammars: list[str] = []

    def activate(self, phrases: list[list[str]], prons: dict[str, list[str]]) -> None:
        d = self.decoder
        for w in {w for p in phrases for w in p} - self.words:
            for i, pron in enumerate(prons[w]):
                d.add_word(w if i == 0 else f"{w}({i + 1})", pron, False)
            self.words.add(w)
        body = " | ".join(" ".join(p) for p in phrases)
        name = "g" + hashlib.sha1(body.encode()).hexdigest()[:16]
        if name not in self.grammars:
            if len(self.grammars) >= _MAX_CACHED_GRAMMARS:
                d.remove_search(self.grammars.pop(0))
            jsgf = f"#JSGF V1.0;\ngrammar menu;\npublic <menu> = {body};\n"
            try:
                d.add_jsgf_string(name, jsgf)
            except RuntimeError as exc:
                raise EngineError(f"pocketsphinx rejected the grammar {body!r}: {exc}") from None
            self.grammars.append(name)
        d.activate_search(name)


class _PsStream(EngineStream):
    def __init__(
        self, engine: PocketSphinxEngine, owner: Any, decoder: Any, phrases: list[str] | None
    ) -> None:
        self.engine = engine
        self.owner = owner
        self.d = decoder
        self.phrases = phrases
        self.up = Upsampler2x()
        self.audio: list[np.ndarray] = []
        self.samples = 0
        t = time.thread_time()
        self.d.set_cmn(TELEPHONE_CMN)
        self.d.start_utt()
        self.cpu = time.thread_time() - t

    def accept(self, pcm: np.ndarray) -> None:
        t = time.thread_time()
        self.audio.append(pcm)
        self.samples += len(pcm)
        self.d.process_raw(self.up.process(pcm).tobytes(), False, False)
        self.cpu += time.thread_time() - t

    def finish(self) -> EngineResult:
        t = time.thread_time()
        d = self.d
        try:
            d.end_utt()
            hyp = d.hyp()
            segs = [s for s in (d.seg() or []) if s.word not in _FILLERS]
            text = hyp.hypstr if hyp is not None else ""
            if self.phrases is not None:
                confidence = self._grammar_confidence(text, segs)
            else:
                # The utterance posterior shrinks with every word; its per-word geometric
                # mean is comparable across lengths.
                n = max(1, len(text.split()))
                confidence = float(d.get_prob()) ** (1.0 / n) if text else 0.0
        finally:
            self.engine.release(self.owner)
        words = tuple(
            Word(
                word=s.word.split("(")[0],
                start=s.start_frame / _FRAME_RATE,
                end=(s.end_frame + 1) / _FRAME_RATE,
                confidence=confidence,
            )
            for s in segs
        )
        self.cpu += time.thread_time() - t
        return EngineResult(
            text=text,
            confidence=confidence,
            words=words,
            cpu_seconds=self.cpu,
            audio_seconds=self.samples / 8000,
        )

    def _grammar_confidence(self, text: str, segs: list[Any]) -> float:
        # A hypothesis that is not a whole option means the search never reached the
        # grammar's final state (PocketSphinx then returns the best partial path).
        if not text or text not in (self.phrases or []):
            return 0.0
        levels = energy_profile_db(np.concatenate(self.audio), _SAMPLES_8K_PER_FRAME) if self.audio else None
        if levels is None or len(levels) == 0:
            return 0.0
        speech = levels > max(-55.0, float(levels.max()) - 30.0)
        covered = np.zeros(len(levels), dtype=bool)
        for s in segs:
            covered[s.start_frame : s.end_frame + 1] = True
        coverage = float((speech & covered).sum()) / max(1, int(speech.sum()))
        # Half the speech unexplained is as bad as none: map coverage 0.5..1 onto 0..1.
        return float(min(1.0, max(0.0, (coverage - 0.5) / 0.5)))
