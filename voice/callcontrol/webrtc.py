"""Browser legs: an agent's web page as the far end of a call, through aiortc (WebRTC).

An agent whose `sip_uri` is `browser:<agent_id>` takes calls in the agent page. For each call the
switch rings that agent with, `BrowserPhones.connect` makes one `RTCPeerConnection`, offers it to
every page the agent has open on this node (signalling rides the page's events websocket: see
cti.ports.BrowserPhones), and once a page answers and ICE + DTLS-SRTP are up, bridges it to the
caller's RTP leg with the same `Bridge` a SIP agent leg gets.

Rules it keeps:
- The service offers, the page answers: the page needs no SDP munging and no STUN on a LAN (host
  candidates; aiortc gathers them all before the offer leaves). A TURN URL in [webrtc] is given to
  both ends for agents outside the LAN.
- Media: the caller's 8 kHz frames go to the browser on our own 20 ms clock (silence fills a slot
  without one), encoded by aiortc (Opus, or G.711 when preferred); the page's audio is decoded by
  aiortc, resampled to 8 kHz and fed to the caller's session, which sends it on its own clock.
  aiortc encodes in the loop's executor and decodes in a thread per receiver; what runs here
  (frame building and the 48 -> 8 kHz resampling) is measured in benchmarks/webrtc.py.
- One end state per leg (`end`, resolved once with the cause); the desk reads it through the
  cti.ports.AgentConnection contract, as it reads an OutboundDial's.
- Nothing a page sends crashes the service: bad messages raise SoftphoneError naming the field.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import logging
import re
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import av
import numpy as np
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError
from aiortc.sdp import candidate_from_sdp

from cti.ports import AgentConnection, ConversationEnd, PageSend, SoftphoneError
from voice.audio import WavRecorder, dtmf_tone
from voice.callcontrol.bridge import AudioCallback, Bridge, BridgeSide, DigitCallback
from voice.callcontrol.transcribe import ConversationTranscriber

if TYPE_CHECKING:
    from voice.aio.rtp import RtpSession
    from voice.asr.pool import RecognizerPool
    from voice.callcontrol.call import Call
    from voice.config import Config

log = logging.getLogger("voice.callcontrol.webrtc")

BROWSER_SCHEME = "browser:"
RATE = 8000
FRAME = 160  # 20 ms at 8 kHz
PTIME = 0.02
QUEUE_MAX = 3  # caller frames waiting for the browser's clock: 60 ms at most
TRIM_AFTER = 25  # slots (0.5 s) with a standing backlog before one frame is dropped
TIME_BASE = fractions.Fraction(1, RATE)
SILENCE = np.zeros(FRAME, dtype=np.int16)
DIGITS = re.compile(r"[0-9*#A-D]{1,32}")
SDP_MAX = 20000
TRANSFER_TARGET = re.compile(r"sips?:[^\s<>\"]{3,500}|browser:[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
TRANSFER_RING = 30.0  # seconds a blind transfer's target rings
KEYS_PENDING_MAX = 64  # keys from the page waiting to be sent (each takes 160 ms)

# Rings a URI for this leg's caller (the switch's connect): blind transfers from the page.
Dialer = Callable[[str, float], Awaitable[AgentConnection]]


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


class BrowserLeg:
    """One call offered to an agent's browser, then the conversation with it.

    Implements cti.ports.AgentConnection (for the desk) and the bridge's media side (feed,
    stop_playback, send_dtmf, recording)."""

    def __init__(self, phones: BrowserPhones, agent_id: str, caller: Call, caller_rtp: RtpSession,
                 dial: Dialer | None = None) -> None:
        self.phones = phones
        self.dial = dial
        self.transferred_to: str | None = None
        self.settings = phones.settings
        self.id = secrets.token_urlsafe(12)
        self.agent_id = agent_id
        self.caller, self.caller_rtp = caller, caller_rtp
        servers = [RTCIceServer(urls=s.urls, username=s.username, credential=s.credential)
                   for s in self.settings.ice_servers]
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=servers))
        self.track = CallerAudioTrack()
        loop = asyncio.get_running_loop()
        self.end: asyncio.Future[str] = loop.create_future()  # the leg's one end state
        self.page_answered: asyncio.Future[bool] = loop.create_future()  # True: answer, False: reject
        self.media_up: asyncio.Future[bool] = loop.create_future()
        self._finished: asyncio.Future[ConversationEnd] = loop.create_future()
        self._status: int | None = None
        self._reason = ""
        self.answered_at: float | None = None
        self.held = False
        self._hold_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._on_audio: AudioCallback = lambda _f: None
        self._transcribe_agent: AudioCallback | None = None
        self.monitors: list[MonitorLeg] = []  # supervisors listening in
        self._keys_lock = asyncio.Lock()
        self._keys_pending = 0
        self.transcriber: ConversationTranscriber | None = None
        self._recorder: WavRecorder | None = None
        self.frames_received = 0
        self.resample_seconds = 0.0  # loop CPU spent resampling the page's audio
        self.pc.on("connectionstatechange", self._connection_state)
        self.pc.on("track", self._remote_track)

    # ---- cti.ports.AgentConnection ---------------------------------------------------------
    @property
    def answered(self) -> bool:
        return self.answered_at is not None

    @property
    def status(self) -> int | None:
        return self._status

    @property
    def reason(self) -> str:
        return self._reason

    async def wait_finished(self) -> ConversationEnd:
        return await asyncio.shield(self._finished)

    def hangup(self) -> None:
        """End the agent's side now (withdraw the offer, or end the conversation). Idempotent."""
        self.finish("local")

    # ---- the end -----------------------------------------------------------------------------
    @property
    def ended(self) -> bool:
        return self.end.done()

    def finish(self, cause: str) -> None:
        """Resolve the end state once; tell the pages; close the peer connection."""
        if self.end.done():
            return
        self.end.set_result(cause)
        for fut in (self.page_answered, self.media_up):
            if not fut.done():
                fut.set_result(False)
        if self.answered_at is None and not self._finished.done():
            self._finished.set_result(ConversationEnd(hangup_by="caller", talk_seconds=0.0))
        self._stop_hold()
        self.track.stop()
        self.stop_recording()
        for monitor in list(self.monitors):
            monitor.close()
        self._spawn(self._close(cause))

    async def _close(self, cause: str) -> None:
        with contextlib.suppress(Exception):
            await self.phones.send(self.agent_id, {"type": "rtc_end", "leg": self.id, "reason": cause})
        with contextlib.suppress(Exception):
            await self.pc.close()
        self.phones.legs.pop(self.id, None)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- ringing -------------------------------------------------------------------------------
    async def offer(self) -> dict[str, Any]:
        """The rtc_offer message: our SDP with every host candidate (and relay ones with TURN)."""
        transceiver = self.pc.addTransceiver(self.track, direction="sendrecv")
        capabilities = RTCRtpSender.getCapabilities("audio").codecs
        wanted = [c for name in self.settings.codecs for c in capabilities
                  if c.mimeType.lower() == f"audio/{name.lower()}"]
        if wanted:
            transceiver.setCodecPreferences(wanted)
        await self.pc.setLocalDescription(await self.pc.createOffer())
        info = self.caller.info
        return {"type": "rtc_offer", "leg": self.id, "call_id": info.call_id, "caller": info.caller,
                "caller_name": info.caller_name, "sdp": self.pc.localDescription.sdp,
                "ice_servers": [s.page_form() for s in self.settings.ice_servers]}

    async def ring(self, timeout: float) -> bool:
        """Offer the call to the agent's pages and wait for an answer and connected media (or
        rejection, the caller hanging up, no answer within `timeout` s, media failing)."""
        if not self.phones.pages.get(self.agent_id):
            self._status, self._reason = 480, "the agent's page is not connected"
            self.finish("unavailable")
            return False
        try:
            message = await self.offer()
        except Exception as exc:
            log.exception("browser leg for agent %s: no offer", self.agent_id)
            self._status, self._reason = 500, f"no WebRTC offer: {exc}"
            self.finish("failed")
            return False
        await self.phones.send(self.agent_id, message)
        caller_gone: asyncio.Future[Any] = asyncio.ensure_future(self.caller.wait_ended())
        try:
            await asyncio.wait({self.page_answered, caller_gone}, timeout=timeout,
                               return_when=asyncio.FIRST_COMPLETED)
            if self.page_answered.done() and self.page_answered.result() and not caller_gone.done():
                await asyncio.wait({self.media_up, caller_gone}, timeout=self.settings.connect_timeout,
                                   return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            self._status, self._reason = 487, "cancelled"
            self.finish("local")
            raise
        finally:
            caller_gone.cancel()
        if self.caller.ended:
            self._status, self._reason = 487, "caller hung up"
        elif not self.page_answered.done():
            self._status, self._reason = 408, "no answer"
        elif not self.page_answered.result():
            if self._status is None:
                self._status, self._reason = 603, "declined"
        elif not (self.media_up.done() and self.media_up.result()):
            if self._status is None:
                self._status, self._reason = 500, "media did not connect (ICE/DTLS)"
        else:
            self._status, self._reason = 200, "answered"
            self.answered_at = time.monotonic()
            self._spawn(self._bridged())
            await self.phones.send(self.agent_id, {"type": "rtc_state", "leg": self.id, "state": "connected"})
            return True
        self.finish("failed" if self._status != 487 else "caller")
        return False

    def _connection_state(self) -> None:
        state = self.pc.connectionState
        log.debug("browser leg %s: %s", self.id, state)
        if state == "connected" and not self.media_up.done():
            self.media_up.set_result(True)
        elif state in ("failed", "closed"):
            if not self.media_up.done():
                self._status, self._reason = 500, f"media {state} (ICE/DTLS)"
                self.media_up.set_result(False)
            self.finish("media_failed" if state == "failed" else "closed")

    def _remote_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio":
            for transceiver in self.pc.getTransceivers():
                if transceiver.receiver.track is track:
                    shorten_jitter_buffer(transceiver.receiver, self.settings.jitter_frames)
            self._spawn(self._consume(track))

    async def _consume(self, track: MediaStreamTrack) -> None:
        """The page's audio: decoded by aiortc (48 kHz), resampled to 8 kHz 20 ms frames."""
        resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
        pending = np.zeros(0, dtype=np.int16)
        while not self.ended:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            if not isinstance(frame, av.AudioFrame):
                continue
            t0 = time.thread_time()
            parts = [pending] + [f.to_ndarray().reshape(-1).astype(np.int16, copy=False)
                                 for f in resampler.resample(frame)]
            pcm = np.concatenate(parts) if len(parts) > 1 else pending
            whole = len(pcm) // FRAME * FRAME
            frames = [pcm[i:i + FRAME] for i in range(0, whole, FRAME)]
            pending = pcm[whole:]
            self.resample_seconds += time.thread_time() - t0
            for out in frames:
                self.frames_received += 1
                if self._recorder is not None:
                    self._recorder.caller_frame(out)
                if not self.held:
                    self._on_audio(out)
                    if self._transcribe_agent is not None:
                        self._transcribe_agent(out)
                for monitor in self.monitors:
                    monitor.track.feed_agent(out)

    # ---- the page's messages ---------------------------------------------------------------------
    async def on_answer(self, sdp: str) -> None:
        if self.page_answered.done():
            raise SoftphoneError("leg", "this call was already answered or ended")
        try:
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
        except Exception as exc:  # aiortc raises ValueError and others for SDP it cannot use
            self._status, self._reason = 488, f"unusable SDP answer: {exc}"[:200]
            self.page_answered.set_result(False)
            raise SoftphoneError("sdp", f"unusable SDP answer: {exc}") from None
        if not self.page_answered.done():
            self.page_answered.set_result(True)

    async def on_ice(self, candidate: Any) -> None:
        if candidate is None:
            await self.pc.addIceCandidate(None)
            return
        if not isinstance(candidate, dict) or not isinstance(candidate.get("candidate"), str):
            raise SoftphoneError("candidate", "must be an object with a candidate string, or null")
        text = candidate["candidate"]
        if not text:
            return  # the browser's empty end-of-candidates marker
        try:
            parsed = candidate_from_sdp(text.split(":", 1)[1] if text.startswith("candidate:") else text)
        except Exception:
            raise SoftphoneError("candidate", "not an ICE candidate line") from None
        mid, index = candidate.get("sdpMid"), candidate.get("sdpMLineIndex")
        parsed.sdpMid = mid if isinstance(mid, str) else None
        parsed.sdpMLineIndex = index if isinstance(index, int) else None
        if parsed.sdpMid is None and parsed.sdpMLineIndex is None:
            parsed.sdpMLineIndex = 0
        await self.pc.addIceCandidate(parsed)

    def reject(self) -> None:
        if self.answered:
            raise SoftphoneError("leg", "this call is already answered: hang up instead")
        self._status, self._reason = 603, "declined"
        if not self.page_answered.done():
            self.page_answered.set_result(False)

    def set_hold(self, on: bool) -> None:
        """Hold: the caller hears music, the agent hears nothing; unhold resumes the bridge."""
        if not self.answered:
            raise SoftphoneError("leg", "hold needs an answered call")
        if on == self.held:
            return
        self.held = on
        self.track.silenced = on
        if on:
            self._hold_task = asyncio.ensure_future(self._hold_music())
        else:
            self._stop_hold()
            self.caller_rtp.stop_playback()

    def _stop_hold(self) -> None:
        if self._hold_task is not None:
            self._hold_task.cancel()
            self._hold_task = None

    async def _hold_music(self) -> None:
        await self._music(lambda: self.held and not self.ended)

    async def _music(self, go_on: Callable[[], bool]) -> None:
        music = self.settings.hold_music if self.settings.hold_music is not None else self.phones.tune
        while go_on() and not self.caller.ended and not self.caller_rtp.closed:
            if not await self.caller_rtp.play(music):
                await asyncio.sleep(PTIME)  # stopped by someone else: try again on the next frame

    def transfer(self, target: str) -> None:
        """Blind transfer: the agent leaves now; the caller hears hold music while `target` (a SIP
        URI or browser:<agent>) rings, then talks there. If it does not answer, the conversation
        is over for the flow as if the agent had hung up (the flow's after-agent branch runs)."""
        if not self.answered or self.ended:
            raise SoftphoneError("leg", "transfer needs an answered call")
        if self.dial is None:
            raise SoftphoneError("target", "transfers are not available on this node")
        if not TRANSFER_TARGET.fullmatch(target):
            raise SoftphoneError("target", "a sip: URI or browser:<agent id>")
        if target == f"{BROWSER_SCHEME}{self.agent_id}":
            raise SoftphoneError("target", "this call is already yours")
        self.transferred_to = target
        self.finish("transferred")

    async def _transferred(self, target: str, talk: float) -> ConversationEnd:
        assert self.dial is not None
        ringing = [True]
        music = asyncio.ensure_future(self._music(lambda: ringing[0]))
        try:
            connection = await self.dial(target, TRANSFER_RING)
        finally:
            ringing[0] = False
            music.cancel()
        if not connection.answered:
            if not self.caller_rtp.closed:
                self.caller_rtp.stop_playback()
            log.info("browser leg %s: transfer target did not answer (%s %s)", self.id, connection.status,
                     connection.reason)
            return ConversationEnd(hangup_by="caller" if self.caller.ended else "agent", talk_seconds=talk)
        end = await connection.wait_finished()
        return ConversationEnd(hangup_by=end.hangup_by, talk_seconds=talk + end.talk_seconds,
                               recording=end.recording)

    def send_digits(self, digits: str) -> None:
        """Keys from the page's keypad, to the caller's leg (another IVR on the far end)."""
        if not self.answered:
            raise SoftphoneError("leg", "keys need an answered call")
        if self._keys_pending + len(digits) > KEYS_PENDING_MAX:
            raise SoftphoneError("digits", f"more than {KEYS_PENDING_MAX} keys waiting to be sent")
        self._keys_pending += len(digits)
        self._spawn(self._send_digits(digits))

    async def _send_digits(self, digits: str) -> None:
        left = len(digits)
        try:
            async with self._keys_lock:  # one page's keys go out in the order pressed
                for digit in digits:
                    if self.ended:
                        return
                    await self.caller_rtp.send_dtmf(digit, 100)
                    left -= 1
                    self._keys_pending -= 1
                    await asyncio.sleep(0.06)
        finally:
            self._keys_pending -= left

    # ---- the bridge's media side ------------------------------------------------------------------
    dtmf_payload_type: int | None = None  # keys from the page come by websocket, not in the media

    def feed(self, frame: np.ndarray) -> None:
        self.track.feed(frame)

    def stop_playback(self) -> None:
        self.track._playing.clear()

    async def send_dtmf(self, digit: str, duration_ms: int = 100) -> None:
        """A key the caller pressed, as its tone in the agent's ear."""
        self.track.play(dtmf_tone(digit, duration_ms))

    def start_recording(self, path: Path, both_directions: bool) -> None:
        """Left what the agent said, right (both_directions) what the agent heard."""
        self.stop_recording()
        self._recorder = recorder = WavRecorder(path, both_directions=both_directions)
        self.track.on_sent = recorder.tick

    def stop_recording(self) -> Path | None:
        recorder, self._recorder = self._recorder, None
        self.track.on_sent = None
        return recorder.close() if recorder is not None else None

    def _subscribe(self, on_audio: AudioCallback, on_digit: DigitCallback) -> Callable[[], None]:
        self._on_audio = on_audio

        def remove() -> None:
            self._on_audio = lambda _f: None

        return remove

    async def _bridged(self) -> None:
        bridge = Bridge(BridgeSide.of_call(self.caller, self.caller_rtp, "caller"),
                        BridgeSide(media=self, subscribe=self._subscribe, name="agent"))
        started = time.monotonic()
        bridge.start()
        pool = self.phones.speech() if self.phones.speech is not None else None
        remove_caller: Callable[[], None] = lambda: None  # noqa: E731
        if pool is not None:  # both sides into the call's transcript, as two speakers
            self.transcriber = ConversationTranscriber(pool, self.caller)
            remove_caller = self.caller.add_audio_listener(self.transcriber.caller.on_frame)
            self._transcribe_agent = self.transcriber.agent.on_frame
            log.info("browser leg %s: transcribing the conversation (caller, agent)", self.id)
        caller_gone = asyncio.ensure_future(self.caller.wait_ended())
        hangup_by = "agent"
        try:
            await asyncio.wait({self.end, caller_gone}, return_when=asyncio.FIRST_COMPLETED)
            if caller_gone.done() and not self.end.done():
                hangup_by = "shutdown" if caller_gone.result() == "shutdown" else "caller"
        finally:
            caller_gone.cancel()
            bridge.stop()
            remove_caller()
            self._transcribe_agent = None
            self._stop_hold()
            if self.held and not self.caller_rtp.closed:
                self.caller_rtp.stop_playback()
            self.caller.clear_digits()
            self.finish("caller" if hangup_by != "agent" else self.end_cause or "agent")
            talk = time.monotonic() - started
            transfer = self.transferred_to if hangup_by == "agent" and not self.caller.ended else None
            if transfer is None and self.transcriber is None:
                self._settle(ConversationEnd(hangup_by=hangup_by, talk_seconds=talk))
        if self.transcriber is not None:  # the last words land before the flow (and the record) go on
            await self.transcriber.close()
            if transfer is None:
                self._settle(ConversationEnd(hangup_by=hangup_by, talk_seconds=talk))
        if transfer is not None:
            self._settle(await self._transferred(transfer, talk))

    def _settle(self, end: ConversationEnd) -> None:
        if not self._finished.done():
            self._finished.set_result(end)

    @property
    def end_cause(self) -> str | None:
        return self.end.result() if self.end.done() else None


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


class MonitorLeg:
    """A supervisor's silent listen-in on one browser-agent call: receive only, both sides mixed."""

    def __init__(self, phones: BrowserPhones, leg: BrowserLeg) -> None:
        self.phones, self.leg = phones, leg
        self.id = secrets.token_urlsafe(12)
        servers = [RTCIceServer(urls=s.urls, username=s.username, credential=s.credential)
                   for s in phones.settings.ice_servers]
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=servers))
        self.track = MixTrack()
        self._remove_caller: Callable[[], None] | None = None
        self.closed = False

    async def answer(self, offer_sdp: str) -> str:
        try:
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        except Exception as exc:
            raise SoftphoneError("sdp", f"unusable SDP offer: {exc}") from None
        if not any(t.kind == "audio" for t in self.pc.getTransceivers()):
            raise SoftphoneError("sdp", "the offer must receive audio")
        self.pc.addTrack(self.track)
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        self._remove_caller = self.leg.caller.add_audio_listener(self.track.feed_caller)
        self.leg.monitors.append(self)
        return str(self.pc.localDescription.sdp)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._remove_caller is not None:
            self._remove_caller()
        if self in self.leg.monitors:
            self.leg.monitors.remove(self)
        self.track.stop()
        self.phones.monitors.pop(self.id, None)
        task = asyncio.ensure_future(self.pc.close())
        self.phones.closing.add(task)
        task.add_done_callback(self.phones.closing.discard)


class BrowserPhones:
    """The browser legs of this node, and the agent pages they are offered to
    (implements cti.ports.BrowserPhones)."""

    def __init__(self, settings: WebRtcSettings | None = None, *,
                 speech: Callable[[], RecognizerPool | None] | None = None) -> None:
        self.settings = settings or WebRtcSettings()
        self.speech = speech  # the speech pool, once started: conversations are transcribed
        self.pages: dict[str, list[PageSend]] = {}
        self.legs: dict[str, BrowserLeg] = {}
        self.monitors: dict[str, MonitorLeg] = {}
        self.closing: set[asyncio.Future[None]] = set()  # listen-ins' peer connections closing
        self.tune = hold_tune()

    # ---- cti.ports.BrowserPhones --------------------------------------------------------------
    def attach(self, agent_id: str, send: PageSend) -> Callable[[], None]:
        self.pages.setdefault(agent_id, []).append(send)

        def detach() -> None:
            pages = self.pages.get(agent_id, [])
            if send in pages:
                pages.remove(send)
            if not pages:
                self.pages.pop(agent_id, None)
                # The agent's last page is gone: a call still only offered there cannot be answered.
                for leg in list(self.legs.values()):
                    if leg.agent_id == agent_id and not leg.page_answered.done():
                        leg._status, leg._reason = 480, "the agent's page went away"
                        leg.finish("unavailable")

        return detach

    async def receive(self, agent_id: str, message: dict[str, Any]) -> None:
        kind = message.get("type")
        leg_id = message.get("leg")
        if not isinstance(leg_id, str):
            raise SoftphoneError("leg", "required: the id from rtc_offer")
        leg = self.legs.get(leg_id)
        if leg is None or leg.agent_id != agent_id:
            raise SoftphoneError("leg", "no such call for this agent (it may have ended)")
        if kind == "rtc_answer":
            sdp = message.get("sdp")
            if not isinstance(sdp, str) or not sdp or len(sdp) > SDP_MAX:
                raise SoftphoneError("sdp", f"must be the SDP answer, at most {SDP_MAX} characters")
            await leg.on_answer(sdp)
            # The other pages of the agent stop ringing.
            await self.send(agent_id, {"type": "rtc_state", "leg": leg.id, "state": "answering"})
        elif kind == "rtc_ice":
            await leg.on_ice(message.get("candidate"))
        elif kind == "rtc_reject":
            leg.reject()
        elif kind == "rtc_hangup":
            leg.finish("agent")
        elif kind == "rtc_hold":
            on = message.get("on")
            if not isinstance(on, bool):
                raise SoftphoneError("on", "must be true or false")
            leg.set_hold(on)
            state = "held" if on else "connected"
            await self.send(agent_id, {"type": "rtc_state", "leg": leg.id, "state": state})
        elif kind == "rtc_transfer":
            target = message.get("target")
            if not isinstance(target, str):
                raise SoftphoneError("target", "a sip: URI or browser:<agent id>")
            leg.transfer(target.strip())
        elif kind == "rtc_dtmf":
            digits = message.get("digits")
            if not isinstance(digits, str) or not DIGITS.fullmatch(digits):
                raise SoftphoneError("digits", "1 to 32 of 0-9 * # A-D")
            leg.send_digits(digits)
        else:
            raise SoftphoneError("type", "one of rtc_answer, rtc_ice, rtc_reject, rtc_hangup, rtc_hold, "
                                         "rtc_dtmf, rtc_transfer")

    async def listen(self, call_id: str, offer_sdp: str) -> tuple[str, str]:
        """A supervisor listens in on the browser-agent call with this SIP Call-ID: their page's
        receive-only offer in, (listen id, our answer) out. Neither party hears the supervisor."""
        if not offer_sdp or len(offer_sdp) > SDP_MAX:
            raise SoftphoneError("sdp", f"must be an SDP offer, at most {SDP_MAX} characters")
        leg = next((x for x in self.legs.values()  # the call's key (unique) or its SIP Call-ID
                    if call_id in (x.caller.key, x.caller.info.call_id) and x.answered and not x.ended), None)
        if leg is None:
            raise SoftphoneError("call_id", "no call talking to a browser agent on this node has this id")
        monitor = MonitorLeg(self, leg)
        self.monitors[monitor.id] = monitor
        try:
            answer = await monitor.answer(offer_sdp)
        except BaseException:
            monitor.close()
            raise
        return monitor.id, answer

    def stop_listening(self, listen_id: str) -> bool:
        monitor = self.monitors.get(listen_id)
        if monitor is None:
            return False
        monitor.close()
        return True

    # ---- the switch's side ----------------------------------------------------------------------
    async def connect(self, caller: Call, caller_rtp: RtpSession, agent_uri: str, *,
                      timeout: float, dial: Dialer | None = None) -> BrowserLeg:
        """Ring `browser:<agent_id>` for `caller`; returns once answered and bridged, or failed.
        `dial` rings another URI for the same caller (blind transfers from the page)."""
        agent_id = agent_of(agent_uri) or ""
        leg = BrowserLeg(self, agent_id, caller, caller_rtp, dial)
        self.legs[leg.id] = leg
        await leg.ring(timeout)
        return leg

    async def send(self, agent_id: str, message: dict[str, Any]) -> None:
        """To every page the agent has open here; a page that cannot take it is logged."""
        for send in list(self.pages.get(agent_id, [])):
            try:
                await asyncio.wait_for(send(message), 5)
            except Exception as exc:
                log.info("agent %s: a page did not take %s: %s", agent_id, message.get("type"), exc)

    async def aclose(self) -> None:
        for monitor in list(self.monitors.values()):
            monitor.close()
        legs = list(self.legs.values())
        for leg in legs:
            leg.finish("shutdown")
        tasks = [t for leg in legs for t in leg._tasks] + list(self.closing)
        if tasks:
            await asyncio.wait(tasks, timeout=5)


def browser_phones(config: Config, speech: Callable[[], RecognizerPool | None] | None = None
                   ) -> BrowserPhones:
    """The node's BrowserPhones from its [webrtc] section (TURN server, codecs, hold music)."""
    from voice.audio import load_prompt

    cfg = config.webrtc
    servers = (IceServer(urls=cfg.turn_url, username=cfg.turn_username, credential=cfg.turn_password),) \
        if cfg.turn_url else ()
    music = load_prompt(cfg.hold_music) if cfg.hold_music is not None else None
    settings = WebRtcSettings(ice_servers=servers, codecs=cfg.codecs, hold_music=music)
    return BrowserPhones(settings, speech=speech)
