"""SpeechRecognizer: the `SpeechListener` the IVR uses (voice/asr/base.py).

Per `listen()`: attach to the call's 20 ms caller frames, endpoint them on the event
loop (cheap: one RMS per frame), and from the start of speech stream 100 ms chunks
to a pinned worker in the RecognizerPool as they arrive. At the end of speech only
the last chunk and a "finish" are left to do, so the result follows quickly.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from cti import metrics
from voice.asr.base import SpeechResult
from voice.asr.endpoint import Endpointer, NoInput, SpeechEnded, SpeechStarted
from voice.asr.engine import EngineError, EngineResult, EngineSpec, spec_from_config
from voice.asr.matching import match_option
from voice.asr.pool import PoolSession, RecognizerPool, UtteranceSession
from voice.callcontrol.call import CallEnded, TranscriptSegment

if TYPE_CHECKING:
    from voice.callcontrol.call import Call
    from voice.config import AsrConfig

log = logging.getLogger(__name__)

PRE_ROLL_FRAMES = 15  # 300 ms before the detected start: soft onsets ("f", "h") are quiet
CHUNK_FRAMES = 5  # 100 ms per message to the worker
WALL_CLOCK_SLACK = 2.0  # seconds: no-input fires by wall clock too if the media stops sending frames


def default_batch(spec: EngineSpec) -> int:
    """Utterances a worker decodes in one pass. On CPU the encoder's cost grows with the batch, so a
    worker taking four while the other idles quadruples the first caller's wait (measured with
    benchmarks/speech_step.py): one at a time. On CUDA a batch costs about as much as one."""
    if spec.name != "whisper":
        return 1
    from voice.asr.whisper_engine import pick_device

    return 4 if pick_device(spec.device) == "cuda" else 1


class SpeechRecognizer:
    """Listens on calls; recognition happens in `pool`'s worker processes."""

    def __init__(
        self,
        pool: RecognizerPool,
        *,
        complete_timeout: float = 0.8,
        incomplete_timeout: float = 1.5,
        max_speech: float = 15.0,
        min_confidence: float = 0.3,
    ) -> None:
        self.pool = pool
        self.complete_timeout = complete_timeout
        self.incomplete_timeout = incomplete_timeout
        self.max_speech = max_speech
        self.min_confidence = min_confidence

    @classmethod
    async def start(cls, cfg: AsrConfig) -> SpeechRecognizer:
        """Resolve the engine from config (auto -> vosk, whisper or pocketsphinx), start the pool and wait
        for every worker to load its model."""
        spec = spec_from_config(cfg)
        pool = RecognizerPool(spec, cfg.workers, batch=default_batch(spec))
        await pool.start()
        return cls(
            pool,
            complete_timeout=cfg.complete_timeout_ms / 1000,
            incomplete_timeout=cfg.incomplete_timeout_ms / 1000,
            max_speech=cfg.max_speech_ms / 1000,
            min_confidence=cfg.min_confidence,
        )

    async def aclose(self) -> None:
        await self.pool.close()

    async def listen(
        self,
        call: Call,
        *,
        options: Sequence[str] | None = None,
        no_input_timeout: float = 5.0,
        complete_timeout: float | None = None,
        incomplete_timeout: float | None = None,
        max_speech: float | None = None,
        barge_in: bool = True,
    ) -> SpeechResult:
        if call.ended:
            raise CallEnded(call.end_cause or "ended")
        # Grammar mode: a complete answer is one of the options, so the shorter "complete"
        # silence ends it. Free form has no notion of complete: use the longer one.
        if options is not None:
            end_silence = complete_timeout if complete_timeout is not None else self.complete_timeout
        else:
            end_silence = incomplete_timeout if incomplete_timeout is not None else self.incomplete_timeout
        max_len = max_speech if max_speech is not None else self.max_speech
        utt = _Utterance(self.pool, call, options, barge_in)
        utt.endpointer = Endpointer(
            no_input_timeout=no_input_timeout, end_silence=end_silence, max_speech=max_len
        )
        remove = call.add_audio_listener(utt.on_frame)
        ended = asyncio.ensure_future(call.wait_ended())
        try:
            # The wall-clock guard only matters when frames stop arriving (media gap).
            guard = no_input_timeout + max_len + end_silence + WALL_CLOCK_SLACK
            done, _ = await asyncio.wait(
                {utt.outcome, ended}, timeout=guard, return_when=asyncio.FIRST_COMPLETED
            )
            if utt.outcome in done:
                result = await self._finish(call, utt)
            elif ended in done:
                utt.cancel()
                raise CallEnded(call.end_cause or "ended")
            elif utt.session is None:
                result = SpeechResult(status="noinput", engine=self.pool.engine_name)
            else:
                utt.end(utt.endpointer.now)
                result = await self._finish(call, utt)
        finally:
            remove()
            ended.cancel()
            utt.cancel()
            call.speech_in_progress = False
        metrics.speech_recognized(result.engine, result.status, utt.latency)
        return result

    async def _finish(self, call: Call, utt: _Utterance) -> SpeechResult:
        kind = utt.outcome.result()
        engine = self.pool.engine_name
        if kind == "noinput":
            return SpeechResult(status="noinput", engine=engine)
        if utt.result is None:  # the stream could not be opened
            return SpeechResult(status="error", start=utt.start, engine=engine)
        t0 = time.perf_counter()
        try:
            eres: EngineResult = await utt.result
            utt.latency = time.perf_counter() - t0  # end of speech to the result
        except EngineError as exc:
            log.error("asr: recognition failed on call %s: %s", call.info.call_id, exc)
            return SpeechResult(status="error", start=utt.start, end=utt.stop, engine=engine)
        words = [w.word for w in eres.words if w.word != "[unk]"]
        option = None
        if utt.options is not None:
            found = match_option(words, utt.options)
            option = found.option if found else None
            matched = option is not None
        else:
            matched = bool(eres.text)
        # the single gate between a guess and a choice: a flow acts only on status "match"
        ok = matched and eres.confidence >= self.min_confidence
        call.add_segment(
            TranscriptSegment(
                start=utt.start,
                end=utt.stop,
                speaker="caller",
                kind="speech",
                text=eres.text,
                confidence=round(eres.confidence, 3),
                engine=engine,
                alternatives=tuple((t, round(c, 3)) for t, c in eres.alternatives),
            )
        )
        return SpeechResult(
            status="match" if ok else "nomatch",
            text=eres.text,
            confidence=eres.confidence,
            option=option if ok else None,
            start=utt.start,
            end=utt.stop,
            engine=engine,
            alternatives=eres.alternatives,
        )


class _Utterance:
    """Per-listen state driven by the call's audio callback (runs on the event loop)."""

    endpointer: Endpointer

    def __init__(
        self, pool: RecognizerPool, call: Call, options: Sequence[str] | None, barge_in: bool
    ) -> None:
        self.pool = pool
        self.call = call
        self.options = list(options) if options is not None else None
        self.barge_in = barge_in
        self.t0 = call.elapsed()  # call time of the first frame we see
        self.pre_roll: collections.deque[np.ndarray] = collections.deque(maxlen=PRE_ROLL_FRAMES)
        self.chunk: list[np.ndarray] = []
        self.session: PoolSession | UtteranceSession | None = None
        self.result: asyncio.Future[EngineResult] | None = None
        self.outcome: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.start = 0.0
        self.stop = 0.0
        self.latency: float | None = None  # end of speech to the engine's result (metrics)

    def on_frame(self, frame: np.ndarray) -> None:
        if self.outcome.done():
            return
        events = self.endpointer.feed(frame)
        if self.session is not None:
            self.chunk.append(frame)
            if len(self.chunk) >= CHUNK_FRAMES:
                self._flush()
        else:
            self.pre_roll.append(frame)
        for ev in events:
            if isinstance(ev, SpeechStarted):
                self._started(ev)
            elif isinstance(ev, SpeechEnded):
                self.end(ev.at)
            elif isinstance(ev, NoInput):
                self.outcome.set_result("noinput")

    def _started(self, ev: SpeechStarted) -> None:
        self.call.speech_in_progress = True  # the flow must not time out on a caller mid-sentence
        if self.barge_in and self.call.speech_barge_in:
            self.call.interrupt_playback("speech")
        self.start = self.t0 + ev.at
        try:
            self.session = self.pool.open(self.options)
        except EngineError as exc:
            log.error("asr: cannot open a stream: %s", exc)
            self.outcome.set_result("error")
            return
        self.chunk = list(self.pre_roll)
        self.pre_roll.clear()
        self._flush()

    def _flush(self) -> None:
        if self.session is not None and self.chunk:
            self.session.send(np.concatenate(self.chunk))
            self.chunk = []

    def end(self, at: float) -> None:
        if self.session is None or self.outcome.done():
            return
        self._flush()
        self.stop = self.t0 + at
        self.result = self.session.finish()
        self.outcome.set_result("speech")

    def cancel(self) -> None:
        if self.session is not None and not self.session.done:
            self.session.cancel()
        if not self.outcome.done():
            self.outcome.set_result("cancelled")
