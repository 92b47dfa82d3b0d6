"""Speech recognition benchmark on human speech: accuracy, false accepts, latency, RTF, capacity.

    .venv/bin/python benchmarks/asr.py [--engines whisper,pocketsphinx] [--whisper-models tiny.en,base]
                                       [--skip-capacity] [--stage-seconds 20]

1. Accuracy per engine and mode on human recordings from Debian packages
   (tests/peers/human_speech.py), 8 kHz through G.711 µ-law, decoded in-process:
   grammar mode on the held-out digits (a 10-digit menu) and menu words (a 16-word menu):
   right answers (option right and confidence >= min_confidence), wrong answers accepted;
   false accepts of the 8 out-of-grammar phrases at both menus and at a 3-word menu;
   free form on read sentences: word accuracy (1 - WER); per utterance: latency (wall time
   of the decode) and real-time factor. The development set (ktuberling words, Allison's
   prompts) is reported apart: the confidence floor was calibrated on it.
2. Throughput: utterances decoded per second by the pool (2 workers) when many end at once,
   with and without batching; the speaking callers that sustains at one utterance per 10 s.
3. Capacity in real time: N callers speak (20 ms frames on absolute deadlines) one utterance
   every 10 s through the real SpeechRecognizer and pool; end of speech -> result p50/p95.
Memory per worker (RSS after loading) and load time come from the pool. Every figure is
printed with the 1-minute load average: the machine is shared.
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

from tests.peers import human_speech as human
from voice.asr.engine import EngineSpec, SpeechEngine, create_engine
from voice.asr.listener import SpeechRecognizer
from voice.asr.matching import normalize
from voice.asr.pool import RecognizerPool
from voice.callcontrol.call import Call, CallInfo
from voice.callcontrol.fake import FakeMedia, FakeSignalling

COMPLETE_TIMEOUT = 0.5  # [asr] complete_timeout_ms default
MIN_CONF = 0.3
DECODE_TOTAL: list[float] = []
DECODE_CPU: list[float] = []
DEV_EXCLUDED = {"palmtree", "fallingstar", "moonwalker", "sphynx", "broccolli", "ufo", "earring"}


def load() -> str:
    return f"load {os.getloadavg()[0]:.2f}"


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
    """(text, confidence, seconds after the end of audio, audio seconds; plus total decode seconds
    in DECODE_TOTAL), fed in 100 ms chunks as the listener does. A streaming engine spends most of
    its time while the caller speaks: latency is finish(), the real-time factor counts it all."""
    t0, c0 = time.perf_counter(), time.process_time()
    stream = engine.open_stream(options)
    for i in range(0, len(pcm), 800):
        stream.accept(pcm[i : i + 800])
    t = time.perf_counter()
    res = stream.finish()
    end = time.perf_counter()
    DECODE_TOTAL.append(end - t0)
    DECODE_CPU.append(time.process_time() - c0)  # every thread of this process: the decode's CPU
    return res.text, res.confidence, end - t, res.audio_seconds


def grammar_row(name: str, engine: SpeechEngine, items: list[tuple[str, Path]], options: list[str]) -> str:
    right = wrong = 0
    walls, audio = [], 0.0
    DECODE_TOTAL.clear()
    DECODE_CPU.clear()
    for ref, path in items:
        text, conf, wall, secs = decode(engine, human.load_8k(path), options)
        walls.append(wall)
        audio += secs
        accepted = normalize(text) in {normalize(o) for o in options} and conf >= MIN_CONF
        right += accepted and normalize(text) == normalize(ref)
        wrong += accepted and normalize(text) != normalize(ref)
    return (f"{name:<34} right {right:>2}/{len(items):<2} wrong accepted {wrong}  "
            f"latency p50 {statistics.median(walls) * 1000:4.0f} ms  RTF {sum(DECODE_TOTAL) / audio:.3f}  "
            f"CPU p50 {statistics.median(DECODE_CPU) * 1000:4.0f} ms"
            f"  ({load()})")


def oog_row(
    name: str, engine: SpeechEngine, items: list[tuple[str, Path]], menus: dict[str, list[str]]
) -> str:
    parts = []
    for label, options in menus.items():
        fa = 0
        for _, path in items:
            text, conf, _, _ = decode(engine, human.load_8k(path), options)
            fa += normalize(text) in {normalize(o) for o in options} and conf >= MIN_CONF
        parts.append(f"{label} {fa}/{len(items)}")
    return f"{name:<34} accepted: {', '.join(parts)}  ({load()})"


def free_row(name: str, engine: SpeechEngine, items: list[tuple[str, Path]]) -> str:
    edits = words = 0
    walls, audio = [], 0.0
    DECODE_TOTAL.clear()
    DECODE_CPU.clear()
    for ref, path in items:
        text, _, wall, secs = decode(engine, human.load_8k(path), None)
        e, n = wer(ref, text)
        edits, words = edits + e, words + n
        walls.append(wall)
        audio += secs
    return (f"{name:<34} word accuracy {1 - edits / words:6.1%} ({words} words, {len(items)} utt)  "
            f"latency p50 {statistics.median(walls) * 1000:4.0f} ms  RTF {sum(DECODE_TOTAL) / audio:.3f}  "
            f"CPU p50 {statistics.median(DECODE_CPU) * 1000:4.0f} ms"
            f"  ({load()})")


def accuracy(label: str, spec: EngineSpec, dev: bool) -> None:
    t = time.perf_counter()
    engine = create_engine(spec)
    print(f"\n{label}: loaded in {time.perf_counter() - t:.2f} s ({load()})")
    digits, menu = list(human.DIGIT_WORDS), [w for w, _ in human.MENU_WORDS]
    print(grammar_row("  held-out digits, grammar", engine, human.DIGITS, digits))
    print(grammar_row("  held-out menu words, grammar", engine, human.MENU_WORDS, menu))
    print(oog_row("  held-out out-of-grammar (8)", engine, human.OOG_PHRASES,
                  {"digits menu": digits, "words menu": menu, "3-word menu": ["one", "two", "three"]}))
    print(free_row("  held-out read sentences, free", engine, human.sentences()))
    print(free_row("  held-out digits, free", engine, human.DIGITS))
    print(free_row("  held-out menu words, free", engine, human.MENU_WORDS))
    if dev:
        words = [(w, p) for w, p in human.dev_words() if w not in DEV_EXCLUDED]
        menus = [words[i : i + 8] for i in range(0, len(words), 8)]
        right = total = 0
        for m in menus:
            row = grammar_row("", engine, m, [w for w, _ in m])
            right += int(row.split("right")[1].split("/")[0])
            total += len(m)
        print(f"  dev ktuberling words, 8-word menus  right {right}/{total}  ({load()})")
        print(oog_row("  dev Allison prompts (10)", engine, human.DEV_OOG,
                      {"digits menu": digits, "3-word menu": ["one", "two", "three"]}))


# ---- throughput and capacity ------------------------------------------------------------------
async def throughput(spec: EngineSpec, batch: int, utterances: list[np.ndarray], options: list[str],
                     rounds: int) -> None:
    pool = RecognizerPool(spec, workers=2, batch=batch)
    await pool.start()
    try:
        print(f"  pool of 2 {spec.name} workers, batch {batch}: load {pool.load_seconds:.2f} s, "
              f"RSS per worker {', '.join(f'{m:.0f}' for m in pool.worker_rss_mb)} MB")
        warm = pool.open(options)
        warm.send(utterances[0])
        await warm.finish()
        rates = []
        cpu0 = sum(x["cpu_seconds"] for x in await pool.stats())
        for _ in range(rounds):
            t = time.perf_counter()
            sessions = []
            for pcm in utterances:
                session = pool.open(options)
                session.send(pcm)
                sessions.append(session)
            results = await asyncio.gather(*(x.finish() for x in sessions))
            wall = time.perf_counter() - t
            rates.append(len(results) / wall)
        best = max(rates)
        # the workers' own CPU time: what 2 cores sustain when nobody else uses them
        cpu = (sum(x["cpu_seconds"] for x in await pool.stats()) - cpu0) / (rounds * len(utterances))
        print(f"    {len(utterances)} utterances ending at once: {statistics.median(rates):.2f} utterances/s "
              f"(best {best:.2f}) -> {statistics.median(rates) * 10:.0f} speaking callers at one utterance "
              f"per 10 s  ({load()})")
        print(f"    worker CPU per utterance {cpu * 1000:.0f} ms -> 2 cores of our own would decode "
              f"{2 / cpu:.1f} utterances/s = {20 / cpu:.0f} callers at one utterance per 10 s")
    finally:
        await pool.close()


async def run_stage(rec: SpeechRecognizer, utterances: list[tuple[str, np.ndarray]], options: list[str],
                    n: int, seconds: float, period: float) -> tuple[list[float], list[float], int, int]:
    """n callers, each saying one utterance every `period` s (random phase) in real time."""
    loop = asyncio.get_running_loop()
    rng = np.random.default_rng(n)
    calls, scripts, tasks = [], [], []
    latencies: list[float] = []
    correct = total = 0
    info = CallInfo(call_id="bench", caller="1", caller_name=None, dialled="2", remote="127.0.0.1:5060")
    for _ in range(n):
        media = FakeMedia()
        call = Call(info, media, FakeSignalling(), clock=loop.time)
        parts = [np.zeros(int(rng.uniform(0, period) * 8000), dtype=np.int16)]
        expected = []
        while sum(len(p) for p in parts) < seconds * 8000:
            ref, pcm = utterances[int(rng.integers(len(utterances)))]
            parts += [pcm, np.zeros(max(int(1.6 * 8000), int(period * 8000) - len(pcm)), dtype=np.int16)]
            expected.append(ref)
        calls.append((call, media, expected))
        scripts.append(np.concatenate(parts))

    async def caller(call: Call, expected: list[str]) -> None:
        nonlocal correct, total
        for ref in expected:
            res = await rec.listen(call, options=options, no_input_timeout=period + 30)
            if res.status == "noinput":
                return
            latencies.append(call.elapsed() - res.end)  # end of speech -> result
            total += 1
            correct += res.option == ref

    for call, _, expected in calls:
        tasks.append(asyncio.create_task(caller(call, expected)))
    await asyncio.sleep(0)
    lateness: list[float] = []
    t0 = loop.time()
    for k in range(int(seconds / 0.02)):
        deadline = t0 + k * 0.02
        delay = deadline - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        lateness.append(loop.time() - deadline)
        for (_, media, _), script in zip(calls, scripts, strict=True):
            if (k + 1) * 160 <= len(script):
                media.speak(script[k * 160 : (k + 1) * 160])
    await asyncio.sleep(3.0)  # let the last results come back
    for call, _, _ in calls:
        call.signalling.remote_hangup("bench over")
    await asyncio.gather(*tasks, return_exceptions=True)
    return latencies, lateness, correct, total


async def capacity(spec: EngineSpec, utterances: list[tuple[str, np.ndarray]], options: list[str],
                   stages: list[int], seconds: float, period: float, batch: int) -> None:
    pool = RecognizerPool(spec, workers=2, batch=batch)
    await pool.start()
    rec = SpeechRecognizer(pool, complete_timeout=COMPLETE_TIMEOUT)
    print(f"  {spec.name}, 2 workers, batch {batch}, one utterance per caller every {period:.0f} s, "
          f"{seconds:.0f} s per stage; latency = end of speech -> result (includes the "
          f"{COMPLETE_TIMEOUT * 1000:.0f} ms end-of-speech silence)")
    print(f"  {'callers':>8} {'results':>8} {'correct':>8} {'p50':>7} {'p95':>7} {'tick p95':>9}")
    try:
        for n in stages:
            lat, late, ok, total = await run_stage(rec, utterances, options, n, seconds, period)
            p50 = statistics.median(lat) if lat else float("nan")
            p95 = float(np.percentile(lat, 95)) if lat else float("nan")
            print(f"  {n:>8} {total:>8} {ok / max(1, total):>8.0%} {p50 * 1000:>5.0f}ms {p95 * 1000:>5.0f}ms "
                  f"{float(np.percentile(late, 95)) * 1000:>7.0f}ms  ({load()})")
    finally:
        await pool.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engines", default="whisper,pocketsphinx")
    ap.add_argument("--whisper-models", default="tiny.en", help="comma-separated: tiny.en, base")
    ap.add_argument("--window", default="short", choices=["short", "full"])
    ap.add_argument("--dev", action="store_true", help="also report the development (calibration) set")
    ap.add_argument("--skip-accuracy", action="store_true")
    ap.add_argument("--skip-capacity", action="store_true")
    ap.add_argument("--stages", default="5,20,50")
    ap.add_argument("--stage-seconds", type=float, default=20.0)
    ap.add_argument("--batch", type=int, default=4, help="also measure throughput with this batch")
    args = ap.parse_args()
    missing = human.available()
    if missing:
        sys.exit(f"install {' '.join(missing)} first (make setup)")
    t0 = time.monotonic()
    print(f"human speech, 8 kHz G.711 µ-law; {os.cpu_count()} cores ({load()})")
    engines = args.engines.split(",")
    specs = []
    if "whisper" in engines:
        specs += [(f"whisper {m} ({args.window} window, cpu int8, 1 thread)",
                   EngineSpec(name="whisper", model=m, window=args.window))
                  for m in args.whisper_models.split(",")]
    if "pocketsphinx" in engines:
        specs.append(("pocketsphinx en-us", EngineSpec(name="pocketsphinx")))
    if not args.skip_accuracy:
        for label, spec in specs:
            accuracy(label, spec, args.dev)
    if not args.skip_capacity:
        menu = [w for w, _ in human.MENU_WORDS]
        utt = [(w, human.load_8k(p)) for w, p in human.MENU_WORDS]
        for label, spec in specs:
            print(f"\nthroughput, {label}")
            for batch in sorted({1, args.batch}):
                asyncio.run(throughput(spec, batch, [p for _, p in utt], menu, rounds=3))
            print(f"capacity in real time, {label}")
            asyncio.run(capacity(spec, utt, menu, [int(x) for x in args.stages.split(",")],
                                 args.stage_seconds, 10.0, 1))
    print(f"\n(total {time.monotonic() - t0:.0f} s)")


if __name__ == "__main__":
    main()
