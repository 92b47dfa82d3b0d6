"""One call offered to an agent's browser, then the conversation with it (see
voice.callcontrol.webrtc for the rules; the tracks are in voice.callcontrol.webrtc_media)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import time
from collections.abc import Callable
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

from cti.ports import ConversationEnd, SoftphoneError
from cti.waiting import ringback
from voice.audio import WavRecorder, dtmf_tone
from voice.callcontrol.bridge import AudioCallback, Bridge, BridgeSide, DigitCallback, MonitoredCall
from voice.callcontrol.masking import note_bridge_key
from voice.callcontrol.transcribe import ConversationTranscriber
from voice.callcontrol.webrtc_media import (
    BROWSER_SCHEME,
    FRAME,
    PTIME,
    RATE,
    CallerAudioTrack,
    shorten_jitter_buffer,
)

if TYPE_CHECKING:
    from voice.aio.rtp import RtpSession
    from voice.callcontrol.call import Call, TranscriptSegment
    from voice.callcontrol.webrtc import BrowserPhones

log = logging.getLogger("voice.callcontrol.webrtc")

DIGITS = re.compile(r"[0-9*#A-D]{1,32}")
SDP_MAX = 20000
# What the transfer box takes: a queue (the desk's routing, a fresh pop for the next agent), a
# SIP URI, another browser agent, or a number (dialled as sip:NUMBER@ the node's outbound domain).
TRANSFER_TARGET = re.compile(r"queue:[A-Za-z0-9][A-Za-z0-9_.-]{0,63}|sips?:[^\s<>\"]{3,500}"
                             r"|browser:[A-Za-z0-9][A-Za-z0-9._-]{0,63}|\+?[0-9*#]{2,32}")
TRANSFER_HELP = "queue:NAME, a sip: URI, browser:<agent id> or a number"
RINGBACK_LOW = 50  # frames of ringback left queued for the agent's ear before the next cycle goes in
KEYS_PENDING_MAX = 64  # keys from the page waiting to be sent (each takes 160 ms)


class BrowserLeg:
    """One call offered to an agent's browser, then the conversation with it.

    Implements cti.ports.AgentConnection (for the desk) and the bridge's media side (feed,
    stop_playback, send_dtmf, recording)."""

    def __init__(self, phones: BrowserPhones, agent_id: str, caller: Call | None,
                 caller_rtp: RtpSession | None, *, transfers: bool = True,
                 display: str | None = None) -> None:
        """`caller` None: a call the service places (callback, click-to-call): the agent is rung
        first (`display` on the page), hears ringback once answered, and `attach_caller` bridges
        the customer's call when it is answered."""
        self.phones = phones
        self.transfers = transfers  # whoever connected this leg runs blind transfers (the desk)
        self.transferred_to: str | None = None
        self.settings = phones.settings
        self.id = secrets.token_urlsafe(12)
        self.agent_id = agent_id
        self.caller, self.caller_rtp = caller, caller_rtp
        self.display = display
        self._ringback: asyncio.Task[None] | None = None
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
        self.monitors: list[AudioCallback] = []  # the agent's audio to supervisors listening in
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
        elif self.caller is None and not self._finished.done():  # answered, nobody bridged yet
            self._finished.set_result(ConversationEnd(hangup_by="agent", talk_seconds=0.0))
        self.stop_ringback()
        self._stop_hold()
        self.track.stop()
        self.stop_recording()
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
        if self.caller is not None:
            info = self.caller.info
            call_id, caller, name = info.call_id, info.caller, info.caller_name
        else:  # a call we place: the page shows whom the agent is about to call
            call_id, caller, name = self.id, self.display or "", None
        return {"type": "rtc_offer", "leg": self.id, "call_id": call_id, "caller": caller,
                "caller_name": name, "outbound": self.caller is None, "sdp": self.pc.localDescription.sdp,
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
        caller_gone: asyncio.Future[Any] = (asyncio.ensure_future(self.caller.wait_ended()) if self.caller
                                            else asyncio.get_running_loop().create_future())
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
        if self.caller is not None and self.caller.ended:
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
            if self.caller is not None:
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
                    monitor(out)

    def monitored(self) -> MonitoredCall:
        """This conversation for a supervisor's silent listen-in (voice.callcontrol.webrtc)."""
        def add(listener: AudioCallback) -> Callable[[], None]:
            self.monitors.append(listener)
            return lambda: self.monitors.remove(listener) if listener in self.monitors else None

        async def over() -> None:
            await asyncio.shield(self.end)

        assert self.caller is not None
        return MonitoredCall(caller=self.caller, add_agent_listener=add, over=over)

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
        if not self.answered or self.caller_rtp is None:
            raise SoftphoneError("leg", "hold needs an answered call")
        if on == self.held:
            return
        self.held = on
        self.track.silenced = on
        if on:
            self._hold_task = asyncio.ensure_future(self._hold_music())
        else:
            self._stop_hold()
            if self.caller_rtp is not None:
                self.caller_rtp.stop_playback()

    def _stop_hold(self) -> None:
        if self._hold_task is not None:
            self._hold_task.cancel()
            self._hold_task = None

    async def _hold_music(self) -> None:
        await self._music(lambda: self.held and not self.ended)

    async def _music(self, go_on: Callable[[], bool]) -> None:
        music = self.settings.hold_music if self.settings.hold_music is not None else self.phones.tune
        caller, rtp = self.caller, self.caller_rtp
        if caller is None or rtp is None:
            return
        while go_on() and not caller.ended and not rtp.closed:
            if not await rtp.play(music):
                await asyncio.sleep(PTIME)  # stopped by someone else: try again on the next frame

    def transfer(self, target: str) -> None:
        """Blind transfer: the agent leaves now and the conversation is over for them; its end
        (`wait_finished`) carries `transfer_to`, and the desk takes the caller on from there (the
        queue's routing with a fresh pop, or ringing the URI or number while the caller hears
        music). The agent goes to wrap-up at once, not when the caller's next conversation ends."""
        if not self.answered or self.ended or self.caller is None:
            raise SoftphoneError("leg", "transfer needs an answered call")
        if not self.transfers:
            raise SoftphoneError("target", "transfers are not available on this node")
        if not TRANSFER_TARGET.fullmatch(target):
            raise SoftphoneError("target", TRANSFER_HELP)
        if target == f"{BROWSER_SCHEME}{self.agent_id}":
            raise SoftphoneError("target", "this call is already yours")
        self.transferred_to = target
        self.finish("transferred")

    def send_digits(self, digits: str) -> None:
        """Keys from the page's keypad, to the caller's leg (another IVR on the far end)."""
        if not self.answered or self.caller is None:
            raise SoftphoneError("leg", "keys need an answered call")
        if self._keys_pending + len(digits) > KEYS_PENDING_MAX:
            raise SoftphoneError("digits", f"more than {KEYS_PENDING_MAX} keys waiting to be sent")
        self._keys_pending += len(digits)
        for _ in digits:
            note_bridge_key(self.caller, "agent")  # the transcript keeps that keys went, not which
        self._spawn(self._send_digits(digits))

    async def _send_digits(self, digits: str) -> None:
        left = len(digits)
        try:
            async with self._keys_lock:  # one page's keys go out in the order pressed
                for digit in digits:
                    if self.ended:
                        return
                    if self.caller_rtp is None:
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

    # ---- a call we place: ringback, then the customer ---------------------------------------------
    def start_ringback(self) -> None:
        """The agent (answered, nobody bridged yet) hears ringback while the customer's phone rings."""
        if self._ringback is None and not self.ended:
            self._ringback = asyncio.ensure_future(self._ring_back())

    async def _ring_back(self) -> None:
        tone_pcm = ringback()
        while not self.ended:
            if len(self.track._playing) < RINGBACK_LOW:
                self.track.play(tone_pcm)
            await asyncio.sleep(PTIME * 10)

    def stop_ringback(self) -> None:
        if self._ringback is not None:
            self._ringback.cancel()
            self._ringback = None
            self.track._playing.clear()

    def attach_caller(self, caller: Call, caller_rtp: RtpSession) -> None:
        """The customer answered: bridge them with the agent (answered, outbound legs only)."""
        if self.caller is not None or not self.answered or self.ended:
            raise RuntimeError("attach_caller needs an answered outbound leg")
        self.stop_ringback()
        self.caller, self.caller_rtp = caller, caller_rtp
        self._spawn(self._bridged())

    async def _bridged(self) -> None:
        caller, caller_rtp = self.caller, self.caller_rtp
        assert caller is not None and caller_rtp is not None
        bridge = Bridge(BridgeSide.of_call(caller, caller_rtp, "caller"),
                        BridgeSide(media=self, subscribe=self._subscribe, name="agent"),
                        on_key=lambda side: note_bridge_key(caller, side))
        started = time.monotonic()
        bridge.start()
        pool = self.phones.speech() if self.phones.speech is not None else None
        remove_caller: Callable[[], None] = lambda: None  # noqa: E731
        if pool is not None:  # both sides into the call's transcript, as two speakers
            self.transcriber = ConversationTranscriber(pool, caller)
            remove_caller = caller.add_audio_listener(self.transcriber.caller.on_frame)
            self._transcribe_agent = self.transcriber.agent.on_frame
            log.info("browser leg %s: transcribing the conversation (caller, agent)", self.id)
        remove_captions = caller.add_segment_listener(self._caption)
        caller_gone = asyncio.ensure_future(caller.wait_ended())
        hangup_by = "agent"
        try:
            await asyncio.wait({self.end, caller_gone}, return_when=asyncio.FIRST_COMPLETED)
            if caller_gone.done() and not self.end.done():
                hangup_by = "shutdown" if caller_gone.result() == "shutdown" else "caller"
        finally:
            caller_gone.cancel()
            bridge.stop()
            remove_caller()
            remove_captions()
            self._transcribe_agent = None
            self._stop_hold()
            if self.held and not caller_rtp.closed:
                caller_rtp.stop_playback()
            caller.clear_digits()
            self.finish("caller" if hangup_by != "agent" else self.end_cause or "agent")
            talk = time.monotonic() - started
            transfer = self.transferred_to if hangup_by == "agent" and not caller.ended else None
            if self.transcriber is None:
                self._settle(ConversationEnd(hangup_by=hangup_by, talk_seconds=talk, transfer_to=transfer))
        if self.transcriber is not None:  # the last words land before the flow (and the record) go on
            await self.transcriber.close()
            self._settle(ConversationEnd(hangup_by=hangup_by, talk_seconds=talk, transfer_to=transfer))

    def _caption(self, segment: TranscriptSegment) -> None:
        """A segment of the conversation (already masked) to the agent's pages, as it lands."""
        if segment.speaker in ("caller", "agent") and not self.ended:
            self._spawn(self.phones.send(self.agent_id, {
                "type": "rtc_caption", "leg": self.id, "speaker": segment.speaker, "kind": segment.kind,
                "text": segment.text, "start": segment.start}))

    def _settle(self, end: ConversationEnd) -> None:
        if not self._finished.done():
            self._finished.set_result(end)

    @property
    def end_cause(self) -> str | None:
        return self.end.result() if self.end.done() else None
