"""Whisper engine (faster-whisper / CTranslate2): decodes an utterance once it has ended.

Whisper is not a streaming recognizer: the endpointer (voice/asr/endpoint.py) stays
streaming on the event loop, the stream here only buffers audio, and `finish()` runs one
encoder pass and one greedy decode in the worker process (voice/asr/pool.py).

Grammar mode has two guards, because a caller at a menu must never be routed on a guess:
1. decoding is constrained to the options' words: every text token that does not spell
   (part of) an option word is suppressed, so the decoder can only say option words;
2. the decoded text must then be an option or within a small edit distance of one.
The confidence is the per-token probability of the decoded text (exp of the mean token
log-probability, end of text included) times (1 - no-speech probability), mapped so that
the decoder's usual score on out-of-grammar speech lands below `[asr] min_confidence`:
forced onto menu words, unrelated speech scores a low per-token probability.

Free form decodes without constraints; its confidence is the same per-token probability.
"""

from __future__ import annotations

import logging
import math
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from voice.asr.audio import Upsampler2x
from voice.asr.engine import EngineError, EngineResult, EngineStream, SpeechEngine, Word
from voice.asr.matching import edit_distance, match_option, normalize
from voice.asr.whisper_models import resolve_model_dir

log = logging.getLogger(__name__)

MAX_SECONDS = 30.0  # Whisper's window; the endpointer's max_speech is far below it
MIN_SAMPLES = 800  # under 100 ms of audio: nothing a person said
MAX_NEW_TOKENS = 48  # a sentence, free form; bounds a runaway decode
FREE_CHECK_TOKENS = 6  # grammar mode: tokens the free decode may say beyond the longest option
# Calibration (benchmarks/asr.py, development set: ktuberling words, Asterisk prompts):
# in grammar mode in-grammar answers score a per-token probability of 0.6-0.99, speech
# forced onto the menu's words mostly below 0.45. Scores are mapped linearly from
# [GRAMMAR_FLOOR, 1] onto [0, 1], so min_confidence 0.3 rejects below p = 0.56.
GRAMMAR_FLOOR = 0.0
FREE_FLOOR = 0.2
MAX_EDIT_RATIO = 0.25  # closest option accepted when at most a quarter of its letters differ
WINDOW_MARGIN = 100  # feature frames (1 s) of padding after the utterance
MIN_WINDOW = 1000  # 10 s: shorter windows lost words on the development set (calibration)
PUNCTUATION = (".", ",", "?", "!")
EXTRA_WORD = 0.6  # confidence kept per word the caller said beyond the option ("billing please")
MAX_NEAR = 0.5  # the free decode's spelling of a lone word counts as support up to half its letters off
NEAR_WEIGHT = 0.5  # kept (times 1 - distance) when the free decode heard nothing or something else
DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def pick_device(device: str) -> str:
    if device != "auto":
        return device
    try:
        import ctranslate2

        return "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
    except Exception:  # no CUDA runtime at all
        return "cpu"


def pick_compute_type(compute_type: str, device: str) -> str:
    if compute_type != "auto":
        return compute_type
    return "float16" if device == "cuda" else "int8"


@dataclass(frozen=True, kw_only=True)
class Decoded:
    text: str
    token_prob: float  # exp(mean token log-probability)
    no_speech: float


@dataclass(frozen=True, kw_only=True)
class Hypotheses:
    constrained: Decoded | None  # grammar mode only
    free: Decoded


class WhisperEngine(SpeechEngine):
    name = "whisper"
    streaming = False

    def __init__(
        self,
        model: str | None = None,
        *,
        device: str = "auto",
        compute_type: str = "auto",
        cpu_threads: int = 1,
        window: str = "short",
        beam_size: int = 1,
    ) -> None:
        try:
            from faster_whisper import WhisperModel
            from faster_whisper.tokenizer import Tokenizer
        except ImportError as exc:  # pragma: no cover - make setup installs it
            raise EngineError(f"whisper needs faster-whisper (run make setup): {exc}") from None
        t0 = time.monotonic()
        self.model_dir = resolve_model_dir(model)
        self.device = pick_device(device)
        self.compute_type = pick_compute_type(compute_type, self.device)
        try:
            self.model = WhisperModel(
                str(self.model_dir),
                device=self.device,
                compute_type=self.compute_type,
                cpu_threads=cpu_threads,
                num_workers=1,
                local_files_only=True,
            )
        except (RuntimeError, ValueError, OSError) as exc:
            raise EngineError(f"whisper could not load {self.model_dir}: {exc}") from None
        self.window = window
        self.beam_size = beam_size
        self.multilingual = bool(self.model.model.is_multilingual)
        self.tokenizer = Tokenizer(
            self.model.hf_tokenizer, self.multilingual, task="transcribe", language="en"
        )
        self.prompt = [*self.tokenizer.sot_sequence, self.tokenizer.no_timestamps]
        self._free_suppress = self._base_suppress() + list(self.tokenizer.non_speech_tokens)
        self._grammar_cache: dict[tuple[str, ...], tuple[list[int], int]] = {}
        self.load_seconds = time.monotonic() - t0
        self.decodes = 0
        self.full_window_retries = 0
        log.info(
            "asr: whisper %s on %s/%s loaded in %.2fs", self.model_dir, self.device, self.compute_type,
            self.load_seconds,
        )

    def stats(self) -> dict[str, int]:
        return {
            "decodes": self.decodes,
            "grammars": len(self._grammar_cache),
            "full_window_retries": self.full_window_retries,
        }

    def open_stream(self, options: Sequence[str] | None) -> EngineStream:
        if options is not None:
            words = [w for o in options for w in normalize(o).split()]
            if not words:
                raise EngineError(f"no grammar option has a word: {list(options)}")
        return _WhisperStream(self, list(options) if options is not None else None)

    def decode_utterances(
        self, pcms: Sequence[np.ndarray], options: Sequence[str] | None
    ) -> list[EngineResult]:
        short = [len(p) < MIN_SAMPLES for p in pcms]
        todo = [p for p, s in zip(pcms, short, strict=True) if not s]
        hyps = iter(self.decode_batch(todo, options) if todo else [])
        return [
            _engine_result("", 0.0, len(p) / 8000) if s else self.result(next(hyps), options, len(p) / 8000)
            for p, s in zip(pcms, short, strict=True)
        ]

    # ---- decoding --------------------------------------------------------------------------
    def _base_suppress(self) -> list[int]:
        t = self.tokenizer
        return [t.transcribe, t.translate, t.sot, t.sot_prev, t.sot_lm, t.no_speech]

    def grammar_suppress(self, options: Sequence[str]) -> tuple[list[int], int]:
        """Every text token except those that spell the options' words (any case, with or
        without a leading space), punctuation and end of text; and the most tokens an option takes."""
        key = tuple(sorted(normalize(o) for o in options))
        cached = self._grammar_cache.get(key)
        if cached is not None:
            return cached
        enc = self.tokenizer.encode
        allowed: set[int] = set()
        longest = 1
        for option in key:
            for form in (option, option.capitalize(), option.title()):
                for spelled in (form, " " + form):
                    tokens = enc(spelled)
                    allowed.update(tokens)
                    longest = max(longest, len(tokens))
        for p in PUNCTUATION:
            allowed.update(enc(p))
        eot = self.tokenizer.eot
        suppress = [i for i in range(eot) if i not in allowed] + self._base_suppress()
        if len(self._grammar_cache) >= 64:
            self._grammar_cache.pop(next(iter(self._grammar_cache)))
        self._grammar_cache[key] = (suppress, longest + 1)
        return suppress, longest + 1

    def features(self, pcm8k: np.ndarray, frames: int | None = None) -> np.ndarray:
        """Log-Mel features padded (or cut) to `frames` (default: the engine's window)."""
        audio = Upsampler2x().process(pcm8k).astype(np.float32) / 32768.0
        audio = audio[: int(MAX_SECONDS * 16000)]
        fe = self.model.feature_extractor
        feats = fe(audio)
        n = frames or self.window_frames(len(pcm8k))
        if feats.shape[-1] < n:
            feats = np.pad(feats, ((0, 0), (0, n - feats.shape[-1])))
        return np.ascontiguousarray(feats[:, :n], dtype=np.float32)

    def window_frames(self, samples8k: int) -> int:
        """Encoder window for an utterance: Whisper's 30 s, or (window = "short") the audio
        plus WINDOW_MARGIN, at least MIN_WINDOW (the encoder's cost grows with the window)."""
        full = int(self.model.feature_extractor.nb_max_frames)
        if self.window == "full":
            return full
        frames = int(samples8k / 80) + WINDOW_MARGIN  # 100 feature frames per second
        return min(full, max(MIN_WINDOW, frames + frames % 2))

    def decode_batch(self, pcms: Sequence[np.ndarray], options: Sequence[str] | None) -> list[Hypotheses]:
        """Decode several utterances that share one grammar (or free form) in one encoder pass.

        Grammar mode decodes twice on the same encoder output: constrained to the options'
        words, and free; the free hypothesis tells whether the caller said more than the option.
        A short window sometimes makes the decoder loop; those utterances (Whisper's own test:
        text that compresses more than 2.4x) are decoded again in the full 30 s window.
        """
        frames = max(self.window_frames(len(p)) for p in pcms)
        self.decodes += len(pcms)
        out = self._decode(pcms, options, frames)
        full = int(self.model.feature_extractor.nb_max_frames)
        # grammar mode collapses repeats itself (_dedupe) and its free decode is short: no retry
        loops = [i for i, h in enumerate(out) if options is None and frames < full and _loops(h.free.text)]
        if loops:
            self.full_window_retries += len(loops)
            again = self._decode([pcms[i] for i in loops], options, full)
            for i, h in zip(loops, again, strict=True):
                out[i] = h
        return out

    def _decode(
        self, pcms: Sequence[np.ndarray], options: Sequence[str] | None, frames: int
    ) -> list[Hypotheses]:
        import ctranslate2

        feats = np.stack([self.features(p, frames) for p in pcms])
        encoded = self.model.model.encode(ctranslate2.StorageView.from_array(feats), to_cpu=False)
        if options is None:
            free = self._generate(encoded, len(pcms), self._free_suppress, MAX_NEW_TOKENS)
            return [Hypotheses(constrained=None, free=f) for f in free]
        suppress, longest = self.grammar_suppress(options)
        constrained = self._generate(encoded, len(pcms), suppress, longest + 2)
        # the free decode only has to tell an option from a longer or other phrase: a few words do
        free = self._generate(encoded, len(pcms), self._free_suppress, longest + FREE_CHECK_TOKENS)
        return [Hypotheses(constrained=c, free=f) for c, f in zip(constrained, free, strict=True)]

    def _generate(self, encoded: Any, n: int, suppress: list[int], max_new: int) -> list[Decoded]:
        results = self.model.model.generate(
            encoded,
            [self.prompt] * n,
            beam_size=self.beam_size,
            max_length=len(self.prompt) + max_new,
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=suppress,
        )
        out = []
        for res in results:
            tokens = [t for t in res.sequences_ids[0] if t < self.tokenizer.eot]
            # scores[0] is the cumulative log-probability over len(tokens) (length_penalty 1);
            # +1 counts the end-of-text token, as faster-whisper does.
            avg = res.scores[0] * max(1, len(tokens)) / (len(tokens) + 1)
            out.append(
                Decoded(
                    text=self.tokenizer.decode(tokens).strip(),
                    token_prob=math.exp(avg),
                    no_speech=float(res.no_speech_prob),
                )
            )
        return out

    def result(self, hyp: Hypotheses, options: Sequence[str] | None, audio_seconds: float) -> EngineResult:
        """Text, words, calibrated confidence and alternatives of one utterance."""
        free_words = spoken_words(hyp.free.text)
        free_text = " ".join(free_words)
        free_conf = _scale(hyp.free.token_prob, FREE_FLOOR) if free_words else 0.0
        if options is None:
            return _engine_result(free_text, free_conf, audio_seconds)
        norm = {normalize(o): o for o in options}
        # short windows can make Whisper loop ("alpha alpha alpha ..."): one word said once
        heard = _dedupe(free_words)
        choice, conf = None, 0.0
        if hyp.constrained is not None:
            said = _dedupe(spoken_words(hyp.constrained.text))
            found = match_option(said, options)
            if found is not None and found.n_words == len(said):
                choice = normalize(found.option)
                conf = _scale(hyp.constrained.token_prob, GRAMMAR_FLOOR) * _agreement(heard, choice)
        if choice is None:
            # the constrained decode found no option: the free one may still name exactly one
            found = match_option(heard, options)
            if found is not None:
                choice = normalize(found.option)
                extra = len(heard) - found.n_words
                conf = _scale(hyp.free.token_prob, GRAMMAR_FLOOR) * (EXTRA_WORD**extra)
        alternatives = ((free_text, round(free_conf, 3)),) if free_text and free_text != choice else ()
        if choice is None:
            return _engine_result(free_text, 0.0, audio_seconds, alternatives=())
        assert choice in norm
        return _engine_result(choice, conf, audio_seconds, alternatives=alternatives)


def spoken_words(text: str) -> list[str]:
    """Normalized words with numbers spelled out ("10" -> "ten", "555" -> "five five five"):
    Whisper writes numbers as digits, flows and references spell them."""
    out: list[str] = []
    for w in normalize(text).split():
        if w.isdigit():
            out.extend(number_words(w))
        else:
            out.append(w)
    return out


_TEENS = ("ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
          "nineteen")
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")


def number_words(digits: str) -> list[str]:
    """0-99 as a number ("42" -> forty two); longer digit strings digit by digit (phone numbers)."""
    if len(digits) > 2 or digits.startswith("0"):
        return [DIGIT_NAMES[int(c)] for c in digits]
    n = int(digits)
    if n < 10:
        return [DIGIT_NAMES[n]]
    if n < 20:
        return [_TEENS[n - 10]]
    return [_TENS[n // 10]] + ([DIGIT_NAMES[n % 10]] if n % 10 else [])


def _loops(text: str) -> bool:
    raw = text.encode()
    return len(raw) > 24 and len(raw) / len(zlib.compress(raw)) > 2.4


def _dedupe(words: list[str]) -> list[str]:
    """"flower flower flower" -> "flower": a constrained decoder may loop on the one word it may say."""
    out: list[str] = []
    for w in words:
        if not out or out[-1] != w:
            out.append(w)
    return out


def _agreement(free_words: list[str], choice: str) -> float:
    """How far the free hypothesis supports the constrained choice (1: it says just that).

    The free decode is worse at lone words ("code" for "coat") but tells whether the caller
    said a whole sentence: words it hears beyond the option cost EXTRA_WORD each.
    """
    n_option = len(choice.split())
    found = match_option(free_words, [choice])
    if found is not None:
        return float(EXTRA_WORD ** (len(free_words) - found.n_words))
    if not free_words:
        return NEAR_WEIGHT
    if len(free_words) <= n_option + 1:
        free = " ".join(free_words)
        ratio = edit_distance(free, choice) / max(len(free), len(choice))
        # "code" for "coat" is support; "front left" for "one" is another phrase
        return 1.0 - ratio if ratio <= MAX_NEAR else NEAR_WEIGHT * (1.0 - ratio)
    return float(EXTRA_WORD ** (len(free_words) - n_option))


def _scale(p: float, floor: float) -> float:
    return float(min(1.0, max(0.0, (p - floor) / (1.0 - floor))))


def _engine_result(
    text: str, conf: float, audio_seconds: float, alternatives: tuple[tuple[str, float], ...] = ()
) -> EngineResult:
    words: list[Word] = []
    if text:
        per = audio_seconds / max(1, len(text.split()))
        words = [
            Word(word=w, start=i * per, end=(i + 1) * per, confidence=conf)
            for i, w in enumerate(text.split())
        ]
    return EngineResult(
        text=text, confidence=conf, words=tuple(words), audio_seconds=audio_seconds, alternatives=alternatives
    )


class _WhisperStream(EngineStream):
    def __init__(self, engine: WhisperEngine, options: list[str] | None) -> None:
        self.engine = engine
        self.options = options
        self.chunks: list[np.ndarray] = []
        self.samples = 0

    def accept(self, pcm: np.ndarray) -> None:
        if self.samples < MAX_SECONDS * 8000:
            self.chunks.append(np.asarray(pcm, dtype=np.int16))
            self.samples += len(pcm)

    def audio(self) -> np.ndarray:
        return np.concatenate(self.chunks) if self.chunks else np.zeros(0, dtype=np.int16)

    def finish(self) -> EngineResult:
        t = time.thread_time()
        w = time.perf_counter()
        audio_seconds = self.samples / 8000
        if self.samples < MIN_SAMPLES:
            return _engine_result("", 0.0, audio_seconds)
        hyp = self.engine.decode_batch([self.audio()], self.options)[0]
        res = self.engine.result(hyp, self.options, audio_seconds)
        # CTranslate2 decodes in its own threads: thread CPU time misses it, wall time is the cost
        cpu = max(time.thread_time() - t, time.perf_counter() - w)
        return EngineResult(
            text=res.text, confidence=res.confidence, words=res.words, cpu_seconds=cpu,
            audio_seconds=audio_seconds, alternatives=res.alternatives,
        )

    def cancel(self) -> None:
        self.chunks = []

