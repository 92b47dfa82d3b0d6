"""`voice asr transcribe FILE.wav [--grammar "one,two,three"]`: what the recognizer hears in a recording.

The file goes through the same path as a call: resampled to 8 kHz, split into 20 ms
frames, endpointed into utterances, each decoded by the configured engine, free form, or
with --grammar as a menu would (the option chosen, or "no match" under [asr] min_confidence).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from voice.asr.audio import to_mono_8k
from voice.asr.endpoint import FRAME_SECONDS, Endpointer, NoInput, SpeechEnded, SpeechStarted
from voice.asr.engine import EngineError, EngineResult, SpeechEngine, create_engine, spec_from_config
from voice.asr.matching import normalize
from voice.config import ConfigError, load_config

PRE_ROLL = 15  # frames, as in the live listener


@dataclass(frozen=True, kw_only=True)
class TimedSegment:
    start: float
    end: float
    text: str
    confidence: float
    alternatives: tuple[tuple[str, float], ...] = ()


def transcribe_pcm(
    engine: SpeechEngine,
    pcm: np.ndarray,
    *,
    end_silence: float = 0.5,
    max_speech: float = 30.0,
    options: Sequence[str] | None = None,
) -> list[TimedSegment]:
    """Endpoint 8 kHz audio into utterances and decode each, free form or in grammar mode (blocking)."""
    segments: list[TimedSegment] = []
    frames = [pcm[i : i + 160] for i in range(0, len(pcm) - 159, 160)]
    i = 0
    while i < len(frames):
        ep = Endpointer(no_input_timeout=float("inf"), end_silence=end_silence, max_speech=max_speech)
        offset = i * FRAME_SECONDS
        start = end = None
        j = i
        while j < len(frames) and end is None:
            for ev in ep.feed(frames[j]):
                if isinstance(ev, SpeechStarted):
                    start = ev.at
                elif isinstance(ev, SpeechEnded):
                    end = ev.at
                elif isinstance(ev, NoInput):  # pragma: no cover - infinite timeout
                    break
            j += 1
        if start is None:
            break
        if end is None:
            end = ep.now
        first = max(i, i + round(start / FRAME_SECONDS) - PRE_ROLL)
        stream = engine.open_stream(options)
        stream.accept(np.concatenate(frames[first:j]))
        res: EngineResult = stream.finish()
        if res.text or options is not None:
            segments.append(
                TimedSegment(start=offset + start, end=offset + end, text=res.text, confidence=res.confidence,
                             alternatives=res.alternatives)
            )
        i = j
    return segments


def _fmt(t: float) -> str:
    m, s = divmod(t, 60)
    return f"{int(m):02d}:{s:06.3f}"


def transcribe_main(args: argparse.Namespace) -> int:
    import soundfile as sf

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        cfg = load_config(args.config).asr
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    engine_name = args.engine or cfg.engine
    model = args.model
    if args.model and engine_name == "auto":
        vosk_dir = Path(args.model).is_dir() and not (Path(args.model) / "model.bin").exists()
        engine_name = "vosk" if vosk_dir else "whisper"
    grammar = getattr(args, "grammar", None)
    options = [o.strip() for o in grammar.split(",") if o.strip()] if grammar is not None else None
    if options is not None and not options:
        print("asr: --grammar needs at least one word", file=sys.stderr)
        return 2
    try:
        data, rate = sf.read(args.file, dtype="int16")
    except (OSError, RuntimeError) as exc:
        print(f"{args.file}: cannot read audio: {exc}", file=sys.stderr)
        return 1
    pcm = to_mono_8k(np.asarray(data), rate)
    try:
        spec = spec_from_config(cfg, engine_name)
        if model:
            spec = replace(spec, model=model)
        engine = create_engine(spec)
    except EngineError as exc:
        print(f"asr: {exc}", file=sys.stderr)
        return 1
    mode = f"grammar {', '.join(options)}" if options is not None else "free form"
    print(f"# {args.file}: {len(pcm) / 8000:.2f} s, engine {spec.name}, {mode}")
    try:
        segments = transcribe_pcm(engine, pcm, options=options)
    except EngineError as exc:
        print(f"asr: {exc}", file=sys.stderr)
        return 1
    for seg in segments:
        where = f"[{_fmt(seg.start)} - {_fmt(seg.end)}] ({seg.confidence:.2f})"
        if options is None:
            print(f"{where} {seg.text}")
            continue
        # exactly what a menu does: an option only at or above min_confidence
        chosen = seg.text if seg.text in {normalize(o) for o in options} else None
        if chosen and seg.confidence >= cfg.min_confidence:
            line = f"{where} {chosen}"
        else:
            heard = seg.text or "nothing"
            line = f"{where} no match (min_confidence {cfg.min_confidence:.2f}; heard {heard!r})"
        alts = ", ".join(f"{t} {c:.2f}" for t, c in seg.alternatives)
        print(line + (f"  [also: {alts}]" if alts else ""))
    if not segments:
        print("(no speech recognized)")
    return 0
