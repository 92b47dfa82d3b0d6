"""A leg: one SIP dialog, its RTP session and the negotiated codec, and the call's one end state.

Inbound and outbound calls are the same type. The SIP core hands every event of the dialog to
`Leg.on_event`; re-INVITEs from either side go through `renegotiate` (one path); `end` is a
future resolved once with the cause, and everything else (the Call the flow drives, the bridge,
the desk) reads it instead of keeping its own copy. When we end the call, the cause is ours
("flow", "shutdown", "media_failed"...); when the peer does, it is the SIP core's ("bye",
"cancel", "no_ack"...).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

from voice.callcontrol.call import TransferResult
from voice.sip import events as ev
from voice.sip.message import SipUri
from voice.sip.outbound import OutboundCall
from voice.sip.sdp import NegotiatedMedia, SdpError, SessionDescription, build_answer, negotiate
from voice.sip.session import CallState, InboundCall

if TYPE_CHECKING:
    from voice.aio.rtp import RtpSession
    from voice.aio.sip import SipEndpoint
    from voice.sip.core import SipCore

log = logging.getLogger("voice.callcontrol")

CODECS = ("PCMU", "PCMA")
T = TypeVar("T")


def local_address_for(peer_host: str, configured: str | None, listen_host: str) -> str:
    """The address to put in SDP: configured public address, the listen address, or the
    address the kernel would use to reach the peer (a literal: no name is resolved here)."""
    if configured:
        return configured
    if listen_host not in ("0.0.0.0", "::", ""):
        return listen_host
    family = socket.AF_INET6 if ":" in peer_host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect((peer_host, 9))  # no packet is sent: UDP connect only picks a route
            return str(probe.getsockname()[0])
        except OSError:
            return "127.0.0.1" if family == socket.AF_INET else "::1"


class SipLink:
    """The SIP endpoint as call control uses it: run one core action at the current time, then
    send what it produced (the one home of the now()/flush() pair)."""

    def __init__(self, endpoint: SipEndpoint) -> None:
        self.endpoint = endpoint

    @property
    def core(self) -> SipCore:
        return self.endpoint.core

    def __call__(self, action: Callable[[float], T]) -> T:
        result = action(self.endpoint.now())
        self.endpoint.flush()
        return result


class Leg:
    """One side of a call on this node: SIP dialog + RTP session + negotiated codec."""

    def __init__(self, link: SipLink, sip: InboundCall | OutboundCall, *, media_host: str,
                 codecs: Sequence[str] = CODECS) -> None:
        self.link = link
        self.sip = sip
        self.media_host = media_host
        self.codecs = tuple(codecs)
        self.rtp: RtpSession | None = None
        self.media: NegotiatedMedia | None = None
        loop = asyncio.get_running_loop()
        self.end: asyncio.Future[str] = loop.create_future()
        # Inbound: the ACK for our 2xx arrived. Outbound: the callee answered with usable media.
        self.confirmed: asyncio.Future[bool] = loop.create_future()
        self.status: int | None = None  # outbound: final SIP status (or 503/488 decided here)
        self.reason = ""
        self.on_ringing: Callable[[], None] | None = None
        self.on_info_digit: Callable[[str], None] | None = None
        self._transfer: asyncio.Future[TransferResult] | None = None
        self._closing = False  # ended on our side, BYE not sent yet (a goodbye prompt is playing)
        sip.app = self

    # ---- the one end state ---------------------------------------------------------------
    @property
    def ended(self) -> bool:
        return self.end.done()

    @property
    def end_cause(self) -> str | None:
        return self.end.result() if self.end.done() else None

    def _finish(self, cause: str) -> None:
        if not self.end.done():
            self.end.set_result(cause)
        if not self.confirmed.done():
            self.confirmed.set_result(False)
        self.close_media()

    def attach_media(self, rtp: RtpSession) -> None:
        """The leg's RTP session; a media transport that fails ends the call (BYE, `media_failed`)."""
        self.rtp = rtp
        rtp.set_failure_listener(self._media_failed)

    def _media_failed(self, reason: str) -> None:
        if self.ended:
            return
        log.warning("call %s: media failed (%s): ending the call", self.sip.call_id, reason[:200])
        self.end_now("media_failed")

    def close_media(self) -> None:
        if self.rtp is not None and not self.rtp.closed:
            self.rtp.close()

    async def hangup(self, reason: str) -> None:
        """End the call from our side now: BYE once answered, CANCEL/480 before (SignallingPort)."""
        self.end_now(reason)

    def end_now(self, reason: str) -> None:
        if not self.end.done():
            self.end.set_result(reason)
        if self.sip.state is not CallState.ENDED:
            self.link(self.sip.hangup)
        self._finish(reason)

    def end_softly(self, reason: str) -> None:
        """The call is over for the flow (`end` resolves) but the dialog and media stay until
        `end_now`: time for a goodbye prompt."""
        self._closing = True
        if not self.end.done():
            self.end.set_result(reason)

    # ---- SIP events ------------------------------------------------------------------------
    def on_event(self, event: ev.Event) -> None:
        if isinstance(event, ev.CallConfirmed):
            self._confirm(event.body)
        elif isinstance(event, ev.CallEnded):
            self._finish(self.end_cause or event.reason)
        elif isinstance(event, ev.ReInvite):
            self.renegotiate(event.offer)
        elif isinstance(event, ev.DtmfInfo):
            if self.on_info_digit is not None:
                self.on_info_digit(event.digit)
        elif isinstance(event, ev.TransferProgress):
            self._transfer_progress(event.status, event.final)
        elif isinstance(event, ev.OutboundRinging):
            self._ringing()
        elif isinstance(event, ev.OutboundAnswered):
            self._answered(event.body)
        elif isinstance(event, ev.OutboundFailed):
            self.fail(event.status, event.reason)
            self._finish("failed")

    def _confirm(self, ack_body: bytes) -> None:
        """The ACK. RFC 3261 13.3.1: when the INVITE had no offer, the 2xx carried ours and the
        ACK carries the answer; without a usable one the session cannot start: BYE."""
        if self.media is None:
            try:
                if not ack_body:
                    raise SdpError("the ACK has no SDP answer to our offer")
                self.media = negotiate(SessionDescription.parse(ack_body), self.codecs,
                                       local_host=self.media_host)
            except SdpError as exc:
                log.warning("call %s: delayed offer failed: %s", self.sip.call_id, exc)
                self.end_now("bad_answer")
                return
            self.configure_media()
        if not self.confirmed.done():
            self.confirmed.set_result(True)

    # ---- media -----------------------------------------------------------------------------
    def configure_media(self) -> None:
        media = self.media
        if self.rtp is None or media is None:
            return
        self.rtp.configure(remote=(media.remote_host, media.remote_port),
                           payload_type=media.codec.payload_type, codec=media.codec.name,
                           dtmf_payload_type=media.dtmf_payload_type, direction=media.local_direction)

    def answer_sdp(self) -> bytes:
        assert self.rtp is not None and self.media is not None
        return build_answer(self.media, self.media_host, self.rtp.local_port, self.sip.session_id,
                            self.sip.next_sdp_version())

    def renegotiate(self, offer: bytes) -> None:
        """Hold, unhold or new media from the peer: the one RTP session is updated in place."""
        if self.rtp is None or self.rtp.closed or self.media is None:
            self.link(lambda now: self.sip.reject_reinvite(491, "Request Pending", now))
            return
        if offer:
            try:
                media = negotiate(SessionDescription.parse(offer), self.codecs, local_host=self.media_host)
            except SdpError as exc:
                reason = f"Not Acceptable Here ({exc})"[:100]
                self.link(lambda now: self.sip.reject_reinvite(488, reason, now))
                return
            self.media = media
            self.configure_media()
        answer = self.answer_sdp()
        self.link(lambda now: self.sip.answer_reinvite(answer, now))

    # ---- outbound ----------------------------------------------------------------------------
    def fail(self, status: int, reason: str) -> None:
        """An outbound attempt ended without a usable answer."""
        if not self.confirmed.done():
            self.status, self.reason = status, reason
            self.confirmed.set_result(False)
        self.close_media()

    def _ringing(self) -> None:
        if self.on_ringing is not None:
            callback, self.on_ringing = self.on_ringing, None  # the first 18x only
            try:
                callback()
            except Exception:
                log.exception("on_ringing failed for call %s", self.sip.call_id)

    def _answered(self, body: bytes) -> None:
        if self.confirmed.done() or self.rtp is None or self.rtp.closed:
            self.end_now("abandoned")  # we gave up meanwhile: release it
            return
        try:
            self.media = negotiate(SessionDescription.parse(body), self.codecs, local_host=self.media_host)
        except SdpError as exc:
            log.warning("call %s: the callee answered with unusable SDP: %s", self.sip.call_id, exc)
            self.fail(488, f"bad SDP answer: {exc}")
            self.end_now("bad_answer")
            return
        self.configure_media()
        self._ringing()  # a phone that answers without a 180 still gets its screen pop first
        self.status, self.reason = 200, "answered"
        self.confirmed.set_result(True)

    # ---- transfer ------------------------------------------------------------------------------
    async def transfer(self, target: str) -> TransferResult:
        """Blind transfer by REFER; waits for the final NOTIFY (or failure) up to 32 s."""
        uri = target if target.startswith(("sip:", "sips:", "tel:")) else f"sip:{target}"
        try:
            SipUri.parse(uri)
        except ValueError:
            return TransferResult(ok=False, target=target, reason="bad target URI")
        self._transfer = asyncio.get_running_loop().create_future()
        self.link(lambda now: self.sip.refer(uri, now))
        try:
            return await asyncio.wait_for(asyncio.shield(self._transfer), 32)
        except TimeoutError:
            return TransferResult(ok=False, target=target, reason="no final transfer status")
        finally:
            self._transfer = None

    def _transfer_progress(self, status: int, final: bool) -> None:
        if final and self._transfer is not None and not self._transfer.done():
            self._transfer.set_result(TransferResult(ok=200 <= status < 300, target="", reason=str(status)))
