"""The browser leg's media: its settings, the paced tracks aiortc pulls (what the agent and a
supervisor hear), and the hold tune. No signalling here (voice.callcontrol.webrtc, browser_leg)."""

from __future__ import annotations

import asyncio
import fractions
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import av
import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

log = logging.getLogger("voice.callcontrol.webrtc")

BROWSER_SCHEME = "browser:"
RATE = 8000
FRAME = 160  # 20 ms at 8 kHz
PTIME = 0.02
QUEUE_MAX = 3  # caller frames waiting for the browser's clock: 60 ms at most
TRIM_AFTER = 25  # slots (0.5 s) with a standing backlog before one frame is dropped
TIME_BASE = fractions.Fraction(1, RATE)
SILENCE = np.zeros(FRAME, dtype=np.int16)


@dataclass(frozen=True, kw_only=True)
class IceServer:
    urls: str  # "turn:turn.example.com:3478?transport=udp", "stun:..."
    username: str | None = None
    credential: str | None = None

    def page_form(self) -> dict[str, Any]:
        """As the page's RTCPeerConnection takes it."""
        out: dict[str, Any] = {"urls": self.urls}
        if self.username:
            out["username"] = self.username
        if self.credential:
            out["credential"] = self.credential
        return out


@dataclass(frozen=True, kw_only=True)
class WebRtcSettings:
    ice_servers: tuple[IceServer, ...] = ()  # none on a LAN: host candidates reach each other
    codecs: tuple[str, ...] = ("opus", "PCMU", "PCMA")  # offered in this order of preference
    connect_timeout: float = 10.0  # from the page's answer to media flowing (ICE + DTLS)
    # Frames aiortc holds back before decoding the page's audio (its default is 4: 80 ms). The
    # caller's RtpSession absorbs jitter again with its own send clock, so 2 is enough on a LAN.
    jitter_frames: int = 2
    hold_music: np.ndarray | None = None  # 8 kHz int16, looped; None: a soft synthesized tune


def agent_of(uri: str) -> str | None:
    """The agent id of a `browser:<agent_id>` URI, else None."""
    if not uri.startswith(BROWSER_SCHEME):
        return None
    return uri[len(BROWSER_SCHEME):].strip() or None


def hold_tune(seconds: float = 8.0) -> np.ndarray:
    """A quiet arpeggio (C major, soft attack and decay) for callers on hold: no file needed."""
    notes = (261.63, 329.63, 392.0, 523.25, 392.0, 329.63)
    step = int(0.4 * RATE)
    t = np.arange(step) / RATE
    envelope = np.minimum(1.0, t / 0.03) * np.exp(-3.0 * t)
    one = np.concatenate([np.sin(2 * np.pi * f * t) * envelope for f in notes])
    reps = max(1, -(-int(seconds * RATE) // len(one)))  # whole phrases, at least `seconds` long
    return (np.tile(one, reps) * 0.2 * 32767).astype(np.int16)


def shorten_jitter_buffer(receiver: Any, frames: int) -> None:
    """aiortc 1.x keeps its audio jitter buffer private (prefetch 4 frames, 80 ms before the first
    decode); set its depth when that attribute is there, else keep aiortc's default and say so."""
    buffer = getattr(receiver, "_RTCRtpReceiver__jitter_buffer", None)
    if buffer is not None and hasattr(buffer, "_prefetch"):
        buffer._prefetch = max(1, frames)
    else:
        log.info("aiortc's jitter buffer is not where it used to be: keeping its default depth")


class PacedTrack(MediaStreamTrack):
    """An audio track on its own 20 ms clock with absolute deadlines (aiortc pulls `recv`)."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._start: float | None = None
        self._count = 0  # frames due since start (pts / FRAME)

    async def _next_slot(self) -> None:
        """Until this frame's deadline; after a loop stall, skip the lost slots (no burst)."""
        now = asyncio.get_running_loop().time()
        if self._start is None:
            self._start = now
        deadline = self._start + self._count * PTIME
        if deadline > now:
            await asyncio.sleep(deadline - now)
        elif now - deadline > 0.2:
            self._count += int((now - deadline) / PTIME)


class CallerAudioTrack(PacedTrack):
    """What the agent hears: the caller's frames (fed by the bridge) on our own 20 ms clock, with
    absolute deadlines; a tone (`play`) goes before them; silence fills any empty slot."""

    def __init__(self) -> None:
        super().__init__()
        self._frames: deque[tuple[np.ndarray, float]] = deque()
        self._playing: deque[np.ndarray] = deque()
        self.silenced = False  # on hold: the agent hears nothing of the caller
        self.on_sent: Callable[[np.ndarray], None] | None = None  # recording
        self.frames_sent = 0
        self.build_seconds = 0.0  # loop CPU spent making frames (benchmarks/webrtc.py)
        self.queue_seconds = 0.0  # sum of the time caller frames waited for our clock
        self.queued = 0
        self.trimmed = 0  # frames dropped to shorten a standing backlog
        self._backlog = 0  # consecutive slots that found more than one frame waiting

    def feed(self, frame: np.ndarray) -> None:
        if self.silenced:
            return
        self._frames.append((frame, time.monotonic()))
        while len(self._frames) > QUEUE_MAX:
            self._frames.popleft()

    def play(self, pcm: np.ndarray) -> None:
        """Queue a short sound (a key's tone) before the caller's audio."""
        for i in range(0, len(pcm), FRAME):
            chunk = pcm[i:i + FRAME]
            if len(chunk) < FRAME:
                chunk = np.concatenate([chunk, SILENCE[: FRAME - len(chunk)]])
            self._playing.append(chunk)

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        await self._next_slot()
        t0 = time.thread_time()  # CPU of this thread: what the loop pays, not time others took
        if self._playing:
            pcm = self._playing.popleft()
            if self._frames:
                self._frames.popleft()
        elif self._frames:
            # Same rate in and out: a backlog left by a burst of jitter would stay for good and
            # add its length to every frame's delay. Half a second of it costs one frame.
            self._backlog = self._backlog + 1 if len(self._frames) > 1 else 0
            if self._backlog >= TRIM_AFTER:
                self._frames.popleft()
                self._backlog = 0
                self.trimmed += 1
            pcm, fed_at = self._frames.popleft()
            self.queue_seconds += time.monotonic() - fed_at
            self.queued += 1
        else:
            pcm = SILENCE
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = RATE
        frame.pts = self._count * FRAME
        frame.time_base = TIME_BASE
        self._count += 1
        self.frames_sent += 1
        if self.on_sent is not None:
            self.on_sent(pcm)
        self.build_seconds += time.thread_time() - t0
        return frame


class MixTrack(PacedTrack):
    """What a supervisor hears: the caller and the agent mixed, on its own 20 ms clock."""

    def __init__(self) -> None:
        super().__init__()
        self._caller: deque[np.ndarray] = deque(maxlen=QUEUE_MAX)
        self._agent: deque[np.ndarray] = deque(maxlen=QUEUE_MAX)

    def feed_caller(self, frame: np.ndarray) -> None:
        self._caller.append(frame)

    def feed_agent(self, frame: np.ndarray) -> None:
        self._agent.append(frame)

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        await self._next_slot()
        mix = np.zeros(FRAME, dtype=np.int32)
        for queue in (self._caller, self._agent):
            if queue:
                mix += queue.popleft()
        frame = av.AudioFrame.from_ndarray(np.clip(mix, -32768, 32767).astype(np.int16).reshape(1, -1),
                                           format="s16", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = RATE, self._count * FRAME, TIME_BASE
        self._count += 1
        return frame
