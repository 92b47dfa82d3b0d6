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

Here: the signalling hub of the node's pages (BrowserPhones) and the supervisors' listen-ins
(MonitorLeg); one call's leg is voice.callcontrol.browser_leg, the tracks webrtc_media.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription

from cti.ports import PageSend, SoftphoneError
from voice.callcontrol.bridge import MonitoredCall
from voice.callcontrol.browser_leg import DIGITS, SDP_MAX, TRANSFER_HELP, TRANSFER_TARGET, BrowserLeg
from voice.callcontrol.webrtc_media import (
    BROWSER_SCHEME,
    TRIM_AFTER,
    CallerAudioTrack,
    IceServer,
    MixTrack,
    WebRtcSettings,
    agent_of,
    hold_tune,
)

if TYPE_CHECKING:
    from voice.aio.rtp import RtpSession
    from voice.asr.pool import RecognizerPool
    from voice.callcontrol.call import Call
    from voice.config import Config

__all__ = ["BROWSER_SCHEME", "TRANSFER_TARGET", "TRIM_AFTER", "BrowserLeg", "BrowserPhones",
           "CallerAudioTrack", "IceServer", "MonitorLeg", "WebRtcSettings", "agent_of", "browser_phones",
           "hold_tune"]

log = logging.getLogger("voice.callcontrol.webrtc")


class MonitorLeg:
    """A supervisor's silent listen-in on one conversation (a browser agent's or a SIP desk
    phone's): receive only, both sides mixed; it closes itself when the conversation ends."""

    def __init__(self, phones: BrowserPhones, call: MonitoredCall) -> None:
        self.phones, self.call = phones, call
        self.id = secrets.token_urlsafe(12)
        servers = [RTCIceServer(urls=s.urls, username=s.username, credential=s.credential)
                   for s in phones.settings.ice_servers]
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=servers))
        self.track = MixTrack()
        self._removers: list[Callable[[], None]] = []
        self._watch: asyncio.Task[None] | None = None
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
        self._removers = [self.call.caller.add_audio_listener(self.track.feed_caller),
                          self.call.add_agent_listener(self.track.feed_agent)]
        self._watch = asyncio.ensure_future(self._close_when_over())
        return str(self.pc.localDescription.sdp)

    async def _close_when_over(self) -> None:
        with contextlib.suppress(Exception):
            await self.call.over()
        self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for remove in self._removers:
            remove()
        if self._watch is not None and self._watch is not asyncio.current_task():
            self._watch.cancel()
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
        # The SIP desk-phone conversation of a call (the switch sets it), for listen-ins on those.
        self.find_bridged: Callable[[str], MonitoredCall | None] = lambda _call_id: None
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
                raise SoftphoneError("target", TRANSFER_HELP)
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
        """A supervisor listens in on the call with this key or SIP Call-ID, talking to an agent in
        the browser or on a SIP desk phone: their page's receive-only offer in, (listen id, our
        answer) out. Neither party hears the supervisor."""
        if not offer_sdp or len(offer_sdp) > SDP_MAX:
            raise SoftphoneError("sdp", f"must be an SDP offer, at most {SDP_MAX} characters")
        leg = next((x for x in self.legs.values()  # the call's key (unique) or its SIP Call-ID
                    if x.caller is not None and call_id in (x.caller.key, x.caller.info.call_id)
                    and x.answered and not x.ended), None)
        target = leg.monitored() if leg is not None else self.find_bridged(call_id)
        if target is None:
            raise SoftphoneError("call_id", "no call talking to an agent on this node has this id")
        monitor = MonitorLeg(self, target)
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
                      timeout: float, transfers: bool = True) -> BrowserLeg:
        """Ring `browser:<agent_id>` for `caller`; returns once answered and bridged, or failed.
        `transfers`: the page may hand the caller on (the leg's end says where; the desk runs it)."""
        agent_id = agent_of(agent_uri) or ""
        leg = BrowserLeg(self, agent_id, caller, caller_rtp, transfers=transfers)
        self.legs[leg.id] = leg
        await leg.ring(timeout)
        return leg

    async def ring(self, agent_uri: str, *, timeout: float, display: str | None = None) -> BrowserLeg:
        """A call the service places: ring `browser:<agent_id>` with no caller yet; answered, the
        agent hears ringback until `leg.attach_caller` bridges the customer (or a hang-up)."""
        leg = BrowserLeg(self, agent_of(agent_uri) or "", None, None, transfers=False, display=display)
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
