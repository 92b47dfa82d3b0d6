"""`voice asr transcribe FILE.wav`: a timed transcript of a recording, for admins checking a model.

The file goes through the same path as a call: resampled to 8 kHz, split into 20 ms
frames, endpointed into utterances, each decoded free form by the configured engine.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass

import numpy as np

from voice.asr.audio import to_mono_8k
from voice.asr.endpoint import FRAME_SECONDS, Endpointer, NoInput, SpeechEnded, SpeechStarted
from voice.asr.engine import EngineError, EngineResult, SpeechEngine, create_engine, resolve_engine
from voice.config import ConfigError, load_config

PRE_ROLL = 15  # frames, as in the live listener


@dataclass(frozen=True, kw_only=True)
class TimedSegment:
    start: float
    end: float
    text: str
    confidence: float


def transcribe_pcm(
    engine: SpeechEngine, pcm: np.ndarray, *, end_silence: float = 0.5, max_speech: float = 30.0
) -> list[TimedSegment]:
    """Endpoint 8 kHz audio into utterances and decode each free form (blocking)."""
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
        stream = engine.open_stream(None)
        stream.accept(np.concatenate(frames[first:j]))
        res: EngineResult = stream.finish()
        if res.text:
            segments.append(
                TimedSegment(start=offset + start, end=offset + end, text=res.text, confidence=res.confidence)
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
    model = args.model or cfg.vosk_model
    if args.model and engine_name == "auto":
        engine_name = "vosk"
    try:
        data, rate = sf.read(args.file, dtype="int16")
    except (OSError, RuntimeError) as exc:
        print(f"{args.file}: cannot read audio: {exc}", file=sys.stderr)
        return 1
    pcm = to_mono_8k(np.asarray(data), rate)
    try:
        spec = resolve_engine(engine_name, model, cfg.language)
        engine = create_engine(spec)
    except EngineError as exc:
        print(f"asr: {exc}", file=sys.stderr)
        return 1
    print(f"# {args.file}: {len(pcm) / 8000:.2f} s, engine {spec.name}")
    segments = transcribe_pcm(engine, pcm)
    for seg in segments:
        print(f"[{_fmt(seg.start)} - {_fmt(seg.end)}] ({seg.confidence:.2f}) {seg.text}")
    if not segments:
        print("(no speech recognized)")
    return 0
