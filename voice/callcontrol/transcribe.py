"""Both sides of a bridged conversation, transcribed as two speakers into the call's transcript.

While a caller talks to an agent, each side's 20 ms frames go through their own endpointer
(voice.asr.endpoint, energy-based, on audio time); every utterance found is streamed to a worker
of the speech pool (free form: no grammar) and, once decoded, lands in the Call's transcript as a
`TranscriptSegment(speaker="caller" | "agent", kind="speech")` with call-relative times. The call's
record takes the transcript when the call finishes, so the timeline shows the conversation.

Everything here runs on the event loop and is cheap (an energy per frame, a queue put per 100 ms);
recognition itself runs in the pool's processes. Utterances still being decoded when the bridge
stops get `close()`'s grace period to land.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import TYPE_CHECKING

import numpy as np

from voice.asr.endpoint import Endpointer, SpeechEnded, SpeechStarted
from voice.asr.engine import EngineError
from voice.callcontrol.call import TranscriptSegment

if TYPE_CHECKING:
    from voice.asr.engine import EngineResult
    from voice.asr.pool import PoolSession, RecognizerPool, UtteranceSession
    from voice.callcontrol.call import Call

log = logging.getLogger("voice.callcontrol.transcribe")

FRAME_SECONDS = 0.02
PRE_ROLL_FRAMES = 15  # 300 ms before the detected start: soft onsets
CHUNK_FRAMES = 5  # 100 ms per message to the worker
END_SILENCE = 0.8  # a pause this long ends an utterance
MAX_SPEECH = 15.0
NEVER = 1e9  # conversations have no no-input timeout


class SpeakerTranscriber:
    """One side of the conversation: endpointing, then one pool stream per utterance."""

    def __init__(self, pool: RecognizerPool, call: Call, speaker: str) -> None:
        self.pool, self.call, self.speaker = pool, call, speaker
        self.pre_roll: collections.deque[np.ndarray] = collections.deque(maxlen=PRE_ROLL_FRAMES)
        self.chunk: list[np.ndarray] = []
        self.session: PoolSession | UtteranceSession | None = None
        self.pending: set[asyncio.Future[EngineResult]] = set()
        self.segments = 0
        self.utterances = 0
        self.closed = False
        self._restart()

    def _restart(self) -> None:
        self.endpointer = Endpointer(no_input_timeout=NEVER, end_silence=END_SILENCE, max_speech=MAX_SPEECH)
        self.t0 = self.call.elapsed()  # call time of this endpointer's first frame
        self.start = 0.0

    def on_frame(self, frame: np.ndarray) -> None:
        if self.closed:
            return
        events = self.endpointer.feed(frame)
        if self.session is not None:
            self.chunk.append(frame)
            if len(self.chunk) >= CHUNK_FRAMES:
                self._flush()
        else:
            self.pre_roll.append(frame)
        for event in events:
            if isinstance(event, SpeechStarted):
                self._started(event.at)
            elif isinstance(event, SpeechEnded):
                self._ended(event.at)
                self._restart()

    def _started(self, at: float) -> None:
        self.start = self.t0 + at
        try:
            self.session = self.pool.open(None)
        except EngineError as exc:
            log.warning("transcription of the %s stops: %s", self.speaker, exc)
            self.closed = True
            return
        self.chunk = list(self.pre_roll)
        self.pre_roll.clear()
        self._flush()

    def _flush(self) -> None:
        if self.session is not None and self.chunk:
            self.session.send(np.concatenate(self.chunk))
            self.chunk = []

    def _ended(self, at: float) -> None:
        if self.session is None:
            return
        self._flush()
        session, self.session = self.session, None
        start, end = self.start, self.t0 + at
        result = session.finish()
        self.utterances += 1
        self.pending.add(result)
        result.add_done_callback(lambda fut: self._decoded(fut, start, end))

    def _decoded(self, fut: asyncio.Future[EngineResult], start: float, end: float) -> None:
        self.pending.discard(fut)
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is not None:
            log.warning("transcription of the %s: an utterance failed: %s", self.speaker, exc)
            return
        result = fut.result()
        words = [w.word for w in result.words if w.word != "[unk]"] if result.words else result.text.split()
        text = " ".join(words).strip()
        if not text:
            return
        self.segments += 1
        self.call.add_segment(TranscriptSegment(
            start=round(start, 3), end=round(end, 3), speaker=self.speaker, kind="speech", text=text,
            confidence=round(result.confidence, 3), engine=self.pool.engine_name))

    async def close(self, grace: float) -> None:
        """Stop listening; an utterance in progress is finished and, like those being decoded,
        gets up to `grace` seconds to land in the transcript."""
        if not self.closed:
            self.closed = True
            self._ended(self.endpointer.now)
        if self.pending:
            await asyncio.wait(set(self.pending), timeout=grace)


class ConversationTranscriber:
    """The caller and the agent of one bridged conversation."""

    def __init__(self, pool: RecognizerPool, call: Call) -> None:
        self.caller = SpeakerTranscriber(pool, call, "caller")
        self.agent = SpeakerTranscriber(pool, call, "agent")

    async def close(self, grace: float = 10.0) -> None:
        await asyncio.gather(self.caller.close(grace), self.agent.close(grace))
        log.info("conversation transcribed: %d caller and %d agent segments of %d and %d utterances"
                 " (%d still decoding)", self.caller.segments, self.agent.segments, self.caller.utterances,
                 self.agent.utterances, len(self.caller.pending) + len(self.agent.pending))
