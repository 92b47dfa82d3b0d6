"""The switch: owns every call on this node by its key, answers, dials, bridges, drains.

It takes the SIP core's new calls (`on_event(IncomingCall)`), starts their answer path, and
keeps them until they are over; `connect` is the desk's AgentConnector (cti.ports): it rings an
agent for one of these calls and bridges the two legs. `drain` is the graceful stop: new calls
get 503 with Retry-After, calls in progress go on for the drain time, then hear a goodbye and
are ended with the cause `shutdown` (the IVR record and the interaction agree).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from cti.ports import AgentConnection, CallView, ConversationEnd
from voice.callcontrol.bridge import MonitoredCall
from voice.callcontrol.call import Call, CallEnded, CallInfo, TranscriptSegment
from voice.callcontrol.dial import OutboundDial
from voice.callcontrol.inbound import AnswerSettings, FlowRunner, InboundAnswer
from voice.callcontrol.leg import SipLink
from voice.callcontrol.lifecycle import Lifecycle
from voice.sip import events as ev
from voice.sip.outbound import next_hop_for

if TYPE_CHECKING:
    from voice.aio.rtp import RtpPortPool, RtpSession
    from voice.aio.sip import SipEndpoint
    from voice.callcontrol.webrtc import BrowserPhones

log = logging.getLogger("voice.callcontrol")

NUMBER = re.compile(r"\+?[0-9*#]{2,32}")
MediaHost = Callable[[str], str]  # peer host -> the address we put in SDP for it


class DeskCall:
    """A Call as the desk sees it (cti.ports.CallView): awaits never raise for a hang-up."""

    def __init__(self, call: Call) -> None:
        self.call = call

    @property
    def info(self) -> CallInfo:
        return self.call.info

    @property
    def key(self) -> str:
        return self.call.key

    @property
    def interaction_id(self) -> str | None:
        return self.call.interaction_id

    @property
    def customer_id(self) -> str | None:
        return self.call.customer_id

    @property
    def identified_by(self) -> str | None:
        return self.call.identified_by

    @property
    def transcript(self) -> Sequence[TranscriptSegment]:
        return self.call.transcript

    @property
    def ended(self) -> bool:
        return self.call.ended

    async def play(self, pcm: np.ndarray, *, dtmf_barge_in: bool = False) -> bool:
        try:
            result = await self.call.play(pcm, dtmf_barge_in=dtmf_barge_in)
        except CallEnded:
            return False
        return result.completed

    def stop_playback(self) -> None:
        self.call.interrupt_playback("stop")
        self.call.media.stop_playback()

    async def wait_ended(self) -> str:
        return await self.call.wait_ended()

    async def receive_digit(self, timeout: float | None) -> str | None:
        try:
            return await self.call.receive_digit(timeout)
        except CallEnded:
            return None


@dataclass(frozen=True, kw_only=True)
class FailedConnection:
    """An attempt that never got as far as dialling (the caller is gone, not our call)."""

    status: int | None
    reason: str
    answered: bool = False

    async def wait_finished(self) -> ConversationEnd:
        return ConversationEnd(hangup_by="caller", talk_seconds=0.0)

    def hangup(self) -> None:
        return None


class Switch:
    """Every call on this node, by key."""

    def __init__(self, endpoint: SipEndpoint, pool: RtpPortPool, *, run_flow: FlowRunner,
                 lifecycle: Lifecycle, settings: AnswerSettings, media_host: MediaHost,
                 goodbye: Callable[[], Awaitable[np.ndarray | None]] | None = None,
                 browsers: BrowserPhones | None = None, number_domain: str | None = None) -> None:
        self.link = SipLink(endpoint)
        self.pool = pool
        self.run_flow = run_flow
        self.lifecycle = lifecycle
        self.settings = settings
        self.media_host = media_host
        self.goodbye = goodbye
        self.browsers = browsers  # agents whose URI is browser:<agent_id> (voice.callcontrol.webrtc)
        self.number_domain = number_domain  # a bare number is dialled as sip:NUMBER@this
        if browsers is not None:  # supervisors listen in on desk-phone conversations too
            browsers.find_bridged = self.bridged_call
        self.calls: dict[str, InboundAnswer] = {}
        self.dials: set[OutboundDial] = set()
        self.draining = False
        self._background: set[asyncio.Future[None]] = set()

    # ---- inbound ----------------------------------------------------------------------------
    def accepting(self) -> bool:
        """Whether a new call can be taken now (the SIP core asks before any provisional)."""
        return not self.draining and self.pool.free() > 0

    def on_event(self, event: ev.Event) -> None:
        if not isinstance(event, ev.IncomingCall):
            return
        sip = event.call
        answer = InboundAnswer(sip, link=self.link, pool=self.pool,
                               media_host=self.media_host(sip.source.host), run_flow=self.run_flow,
                               lifecycle=self.lifecycle, settings=self.settings)
        if self.draining:
            answer.reject(503, "Service Unavailable (shutting down)", retry_after=30)
            return
        if not answer.start() or answer.task is None:
            return
        key = answer.key
        if key in self.calls:  # the same dialog twice cannot happen; never overwrite a live call
            log.error("call %s: key already in use", key)
        self.calls[key] = answer
        answer.task.add_done_callback(lambda _t: self.calls.pop(key, None)
                                      if self.calls.get(key) is answer else None)

    def call(self, key: str) -> Call | None:
        answer = self.calls.get(key)
        return answer.call if answer is not None else None

    # ---- outbound: cti.ports.AgentConnector ---------------------------------------------------
    async def connect(self, call: CallView, agent_uri: str, *, timeout: float) -> AgentConnection:
        answer = self.calls.get(call.key)
        own = answer.call if answer is not None else None
        rtp: RtpSession | None = answer.leg.rtp if answer is not None else None
        if own is None or rtp is None or own.ended:
            return FailedConnection(status=None, reason="caller hung up")
        if agent_uri.startswith("browser:"):  # the agent's page (aiortc is imported only for those)
            if self.browsers is None:
                return FailedConnection(status=501, reason="browser agents are not enabled on this node")
            return await self.browsers.connect(own, rtp, agent_uri, timeout=timeout)
        if NUMBER.fullmatch(agent_uri):  # a blind transfer to a number (the softphone's box)
            if not self.number_domain:
                return FailedConnection(status=400, reason="numbers cannot be dialled: no domain")
            agent_uri = f"sip:{agent_uri}@{self.number_domain}"
        media_host = self.media_host(next_hop_for(agent_uri).host)
        dial = OutboundDial(self.link, self.pool, agent_uri, caller=own, caller_rtp=rtp,
                            media_host=media_host)
        self.dials.add(dial)
        try:
            await dial.dial(timeout)
        finally:
            if not dial.answered:
                self.dials.discard(dial)
        if dial.answered:
            forget = asyncio.ensure_future(self._forget_when_done(dial))
            self._background.add(forget)
            forget.add_done_callback(self._background.discard)
        return dial

    def bridged_call(self, call_id: str) -> MonitoredCall | None:
        """The SIP-phone conversation of the call with this key or SIP Call-ID, for a listen-in."""
        for dial in self.dials:
            if dial.talking and call_id in (dial.caller.key, dial.caller.info.call_id):
                return dial.monitored()
        return None

    async def _forget_when_done(self, dial: OutboundDial) -> None:
        try:
            await dial.wait_finished()
        finally:
            self.dials.discard(dial)

    # ---- stopping -----------------------------------------------------------------------------
    async def drain(self, timeout: float) -> None:
        """Refuse new calls; let the ones in progress finish for up to `timeout` s; then say
        goodbye to those still up and end them (`shutdown`)."""
        self.draining = True
        tasks = [a.task for a in self.calls.values() if a.task is not None]
        if tasks:
            log.info("draining: %d calls in progress, up to %.0f s", len(tasks), timeout)
            await asyncio.wait(tasks, timeout=timeout)
        await self.end_all(goodbye=True)

    async def end_all(self, *, goodbye: bool) -> None:
        """End every call now (after a goodbye prompt when asked and available)."""
        answers = [a for a in self.calls.values() if a.call is not None and not a.call.ended]
        if not answers:
            return
        pcm = None
        if goodbye and self.goodbye is not None:
            with contextlib.suppress(Exception):
                pcm = await asyncio.wait_for(self.goodbye(), 5)
        await asyncio.gather(*(self._end_one(a, pcm) for a in answers), return_exceptions=True)
        tasks = [a.task for a in answers if a.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=5)

    async def _end_one(self, answer: InboundAnswer, pcm: np.ndarray | None) -> None:
        leg = answer.leg
        leg.end_softly("shutdown")  # the flow and any bridge stop now; the dialog stays for the goodbye
        for dial in list(self.dials):
            if dial.caller is answer.call:
                dial.hangup()
        if pcm is not None and leg.rtp is not None and not leg.rtp.closed:
            leg.rtp.stop_playback()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(leg.rtp.play(pcm), len(pcm) / 8000 + 1)
        leg.end_now("shutdown")

    def snapshot(self) -> dict[str, Any]:
        return {"calls": len(self.calls), "dials": len(self.dials), "draining": self.draining}
