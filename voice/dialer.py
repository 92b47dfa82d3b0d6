"""Calling an agent's phone and bridging it to a caller (asyncio side of voice.sip.outbound).

`dial_agent(service, handler, uri, timeout=...)` is what the queue logic calls once it
picked an agent: it places the INVITE from the service's own SipEndpoint (same core,
same transports), with an RTP session for the agent leg from the service's pool;
waits for the answer (CANCEL when `timeout` passes or the caller hangs up first);
then bridges the two legs until one side hangs up. Agent hangs up: the caller's
call goes on (the flow's after-call branch). Caller hangs up: the agent gets a BYE.

Outbound calls' SIP events reach their AgentLeg through a small hook on the
endpoint's event callback (installed once per endpoint), so the service's own
dispatch needs no change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from voice.aio.rtp import RtpPortPool, RtpSession
from voice.aio.sip import SipEndpoint
from voice.bridge import Bridge, Leg
from voice.call import Call
from voice.calls import CallHandler, local_address_for
from voice.sip import events as ev
from voice.sip.outbound import OutboundCall, next_hop_for
from voice.sip.sdp import NegotiatedMedia, SdpError, SessionDescription, build_answer, build_offer, negotiate
from voice.sip.session import CallState

log = logging.getLogger("voice.dialer")

RingingCallback = Callable[["AgentLeg"], None]


class Dialing(Protocol):
    """What dial_agent needs from the service: its SIP endpoint and RTP port pool."""

    endpoint: SipEndpoint | None
    pool: RtpPortPool


class AgentLeg:
    """One outbound call with its RTP session: `await leg.dial(timeout)`, then `leg.rtp` carries media."""

    def __init__(self, endpoint: SipEndpoint, pool: RtpPortPool, uri: str, *, caller_id: str,
                 caller_name: str | None = None, media_host: str | None = None,
                 codecs: Sequence[str] = ("PCMU", "PCMA"), extra_headers: Sequence[tuple[str, str]] = (),
                 credentials: tuple[str, str] | None = None, on_ringing: RingingCallback | None = None,
                 public_address: str | None = None) -> None:
        self.endpoint, self.pool, self.uri = endpoint, pool, uri
        self.caller_id = caller_id or "anonymous"
        self.caller_name = caller_name
        self.media_host = media_host or local_address_for(
            next_hop_for(uri).host, public_address, endpoint.core.identity.host)
        self.codecs = tuple(codecs)
        self.extra_headers = tuple(extra_headers)
        self.credentials = credentials
        self.on_ringing = on_ringing
        self.sip: OutboundCall | None = None
        self.rtp: RtpSession | None = None
        self.media: NegotiatedMedia | None = None
        self.status: int | None = None  # final SIP status of the INVITE (or 503/488 decided here)
        self.reason = ""
        self.invited_at: float | None = None  # time.monotonic() when the INVITE left
        self.ringing_at: float | None = None
        self.answered_at: float | None = None
        self.ended_by: str | None = None  # "agent" (BYE from the phone) or "local"
        loop = asyncio.get_running_loop()
        self._outcome: asyncio.Future[bool] = loop.create_future()  # answered?
        self._ended: asyncio.Future[str] = loop.create_future()

    @property
    def answered(self) -> bool:
        return self._outcome.done() and self._outcome.result()

    @property
    def ended(self) -> bool:
        return self._ended.done()

    async def dial(self, timeout: float) -> bool:
        """Place the call; True once answered with usable media. False on failure or after
        `timeout` seconds (then the INVITE is CANCELled). Cancelling this task cancels the call."""
        try:
            self.rtp = await self.pool.open_session(self.media_host)
        except RuntimeError:
            self._finish_failed(503, "no free RTP port")
            return False
        core = self.endpoint.core
        offer = build_offer(self.media_host, self.rtp.local_port, self._session_id(), 1, self.codecs)
        self.sip = core.invite(self.uri, from_user=self.caller_id, from_display=self.caller_name,
                               sdp_offer=offer, now=self.endpoint.now(), extra_headers=self.extra_headers,
                               credentials=self.credentials)
        self.sip.app = self
        self.invited_at = time.monotonic()
        self.endpoint.flush()
        try:
            return await asyncio.wait_for(asyncio.shield(self._outcome), timeout)
        except TimeoutError:
            self._finish_failed(408, "no answer")
            self.hangup()
            return False
        except asyncio.CancelledError:
            self.hangup()
            raise

    def _session_id(self) -> int:
        return int(time.time()) & 0x7FFFFFFF

    async def wait_ended(self) -> str:
        """Until the agent leg's dialog is over; returns "agent" or "local"."""
        return await asyncio.shield(self._ended)

    def hangup(self) -> None:
        """CANCEL while ringing, BYE once answered; releases the media port."""
        if self.sip is not None and self.sip.state is not CallState.ENDED:
            self.sip.hangup(self.endpoint.now())
            self.endpoint.flush()
        if not self._ended.done():
            self.ended_by = self.ended_by or "local"
            self._ended.set_result(self.ended_by)
        self._close_media()

    def _close_media(self) -> None:
        if self.rtp is not None:
            self.rtp.close()

    def _finish_failed(self, status: int, reason: str) -> None:
        if not self._outcome.done():
            self.status, self.reason = status, reason
            self._outcome.set_result(False)
        self._close_media()

    # ---- SIP events ------------------------------------------------------------------
    def on_event(self, event: ev.Event) -> None:
        if isinstance(event, ev.OutboundRinging):
            if not self._outcome.done():
                self._ringing()
        elif isinstance(event, ev.OutboundAnswered):
            self._answered(event.body)
        elif isinstance(event, ev.OutboundFailed):
            self._finish_failed(event.status, event.reason)
            if not self._ended.done():
                self._ended.set_result("failed")
        elif isinstance(event, ev.CallEnded):
            if not self._ended.done():
                self.ended_by = "agent" if event.reason == "bye" else "local"
                self._ended.set_result(self.ended_by)
            self._close_media()
        elif isinstance(event, ev.ReInvite):
            self._reinvite(event.offer)

    def _ringing(self) -> None:
        """The first 18x; a phone that answers without one still gets this just before the answer,
        so whoever pops a screen on ringing always does."""
        if self.ringing_at is not None:
            return
        self.ringing_at = time.monotonic()
        if self.on_ringing is not None:
            try:
                self.on_ringing(self)
            except Exception:
                log.exception("on_ringing failed for %s", self.uri)

    def _answered(self, body: bytes) -> None:
        assert self.sip is not None
        if self._outcome.done() or self.rtp is None or self.rtp.closed:
            self.sip.hangup(self.endpoint.now())  # we gave up meanwhile: release it
            return
        try:
            self.media = negotiate(SessionDescription.parse(body), self.codecs)
        except SdpError as exc:
            log.warning("agent %s answered with unusable SDP: %s", self.uri, exc)
            self._finish_failed(488, f"bad SDP answer: {exc}")
            self.sip.hangup(self.endpoint.now())
            return
        self._configure(self.media)
        self._ringing()
        self.status, self.reason = 200, "answered"
        self.answered_at = time.monotonic()
        self._outcome.set_result(True)

    def _configure(self, media: NegotiatedMedia) -> None:
        assert self.rtp is not None
        self.rtp.configure(remote=(media.remote_host, media.remote_port),
                           payload_type=media.codec.payload_type, codec=media.codec.name,
                           dtmf_payload_type=media.dtmf_payload_type, direction=media.local_direction)

    def _reinvite(self, offer: bytes) -> None:
        """Hold/unhold or new media from the agent's phone: same RTP session, updated in place."""
        assert self.sip is not None
        now = self.endpoint.now()
        if self.rtp is None or self.rtp.closed or self.media is None:
            self.sip.reject_reinvite(491, "Request Pending", now)
            return
        if offer:
            try:
                media = negotiate(SessionDescription.parse(offer), self.codecs)
            except SdpError as exc:
                self.sip.reject_reinvite(488, f"Not Acceptable Here ({exc})"[:100], now)
                return
            self.media = media
            self._configure(media)
        answer = build_answer(self.media, self.media_host, self.rtp.local_port, self.sip.session_id,
                              self.sip.next_sdp_version())
        self.sip.answer_reinvite(answer, now)


async def dial(endpoint: SipEndpoint, pool: RtpPortPool, uri: str, *, caller_id: str, timeout: float,
               **options: Any) -> AgentLeg | None:
    """Place a call to `uri`; the answered AgentLeg, or None (busy, rejected, no answer in `timeout`).
    `options` are AgentLeg's (caller_name, media_host, codecs, extra_headers, credentials, on_ringing)."""
    leg = AgentLeg(endpoint, pool, uri, caller_id=caller_id, **options)
    return leg if await leg.dial(timeout) else None


@dataclass(frozen=True, kw_only=True)
class DialOutcome:
    """What happened to one attempt to reach an agent. Truthy when the agent answered."""

    answered: bool
    status: int | None  # final SIP status of the agent INVITE (200, 486, 408 no answer, 487...)
    reason: str  # "answered", the response's reason phrase, "no answer", "caller hung up"...
    hangup_by: str | None = None  # after an answer: "agent" or "caller" ("caller" too if gone while ringing)
    talk_seconds: float = 0.0
    recording: Path | None = None
    agent_stats: dict[str, Any] = field(default_factory=dict)  # the agent leg's RtpSession.stats
    caller_stats: dict[str, Any] = field(default_factory=dict)  # the caller leg's, at the end
    frames_relayed: dict[str, int] = field(default_factory=dict)  # {"caller": n, "agent": m}

    def __bool__(self) -> bool:
        return self.answered


async def dial_agent(service: Dialing, caller: CallHandler | Call, agent_uri: str, *, timeout: float,
                     on_ringing: RingingCallback | None = None,
                     on_answered: Callable[[AgentLeg], None] | None = None, record: Path | None = None,
                     credentials: tuple[str, str] | None = None,
                     extra_headers: Sequence[tuple[str, str]] = ()) -> DialOutcome:
    """Ring `agent_uri` for up to `timeout` s and, when answered, bridge it to the caller (its
    CallHandler, or the Call a flow holds) until one side hangs up. The caller's Call is left
    running when the agent hangs up."""
    endpoint = service.endpoint
    media: object
    if isinstance(caller, CallHandler):
        call, media = caller.call, caller.rtp
    else:
        call, media = caller, caller.media
    if endpoint is None or call is None or not isinstance(media, RtpSession):
        raise RuntimeError("dial_agent needs a started service and an answered caller on RTP")
    caller_rtp = media
    if call.ended:
        return DialOutcome(answered=False, status=None, reason="caller hung up", hangup_by="caller")
    codecs = (caller_rtp.codec, *(c for c in ("PCMU", "PCMA") if c != caller_rtp.codec))
    config = getattr(service, "config", None)
    public = getattr(getattr(config, "sip", None), "public_address", None)
    info = call.info
    # The caller's own Call-ID travels along so a desktop can match the agent leg to its screen pop.
    headers = (("X-Voice-Call-ID", info.call_id), *extra_headers)
    leg = AgentLeg(endpoint, service.pool, agent_uri, caller_id=info.caller, caller_name=info.caller_name,
                   codecs=codecs, extra_headers=headers, credentials=credentials, on_ringing=on_ringing,
                   public_address=public)
    dialing = asyncio.ensure_future(leg.dial(timeout))
    caller_gone = asyncio.ensure_future(call.wait_ended())
    try:
        await asyncio.wait({dialing, caller_gone}, return_when=asyncio.FIRST_COMPLETED)
        if not dialing.done():  # the caller hung up while the agent's phone rang
            dialing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await dialing
            return DialOutcome(answered=False, status=leg.status, reason="caller hung up", hangup_by="caller")
        if not dialing.result():
            return DialOutcome(answered=False, status=leg.status, reason=leg.reason)
        if on_answered is not None:
            on_answered(leg)  # e.g. a queue marking the agent on-call while the bridge runs
        return await _bridge(leg, caller_rtp, call, caller_gone, record)
    finally:
        caller_gone.cancel()
        if not dialing.done():
            dialing.cancel()
        leg.hangup()  # no-op when already over; a BYE when the caller left or we were cancelled


async def _bridge(leg: AgentLeg, caller_rtp: RtpSession, call: Call, caller_gone: asyncio.Future[str],
                  record: Path | None) -> DialOutcome:
    assert leg.rtp is not None
    bridge = Bridge(Leg.of_call(call, caller_rtp, "caller"), Leg.of_session(leg.rtp, "agent"))
    started = time.monotonic()
    bridge.start(record=record)
    agent_gone = asyncio.ensure_future(leg.wait_ended())
    try:
        await asyncio.wait({agent_gone, caller_gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        agent_gone.cancel()
        path = bridge.stop()
        call.clear_digits()  # keys pressed for the agent are not type-ahead for the flow
    hangup_by = "caller" if caller_gone.done() and not leg.ended else "agent"
    agent_stats = dict(leg.rtp.stats)
    leg.hangup()
    return DialOutcome(answered=True, status=200, reason="answered", hangup_by=hangup_by,
                       talk_seconds=time.monotonic() - started, recording=path, agent_stats=agent_stats,
                       caller_stats=dict(caller_rtp.stats), frames_relayed=dict(bridge.stats.frames))
