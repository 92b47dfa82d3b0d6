"""Glue between one SIP call (sans-IO InboundCall), its RTP session and its Call object.

The SIP side is event-driven and synchronous (events arrive from the SipEndpoint);
everything that awaits (opening the RTP port, the flow, the history writes) runs in
the call's own task.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from voice.aio.rtp import RtpPortPool, RtpSession
from voice.aio.sip import SipEndpoint
from voice.call import Call, CallInfo, TransferResult
from voice.sip import events as ev
from voice.sip.message import SipUri
from voice.sip.sdp import NegotiatedMedia, SdpError, SessionDescription, build_answer, negotiate
from voice.sip.session import CallState, InboundCall

if TYPE_CHECKING:
    from cti.history import CallHistory

log = logging.getLogger("voice.calls")

# Runs the call's logic; returns the IVR record (JSON-ready) for the history, if any.
FlowRunner = Callable[[Call], Awaitable[dict[str, Any] | None]]


def local_address_for(peer_host: str, configured: str | None, listen_host: str) -> str:
    """The address to put in SDP: configured public address, the listen address, or the
    address the kernel would use to reach the peer."""
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


class SipSignalling:
    """The SignallingPort a Call uses: hangs up and transfers through the SIP core."""

    def __init__(self, handler: CallHandler) -> None:
        self.handler = handler
        self._transfer: asyncio.Future[TransferResult] | None = None

    async def hangup(self, reason: str) -> None:
        self.handler.sip.hangup(self.handler.endpoint.now())
        self.handler.endpoint.flush()

    async def transfer(self, target: str) -> TransferResult:
        """Blind transfer by REFER; waits for the final NOTIFY (or failure) up to 32 s."""
        uri = target if target.startswith(("sip:", "sips:", "tel:")) else f"sip:{target}"
        try:
            SipUri.parse(uri)
        except ValueError:
            return TransferResult(ok=False, target=target, reason="bad target URI")
        loop = asyncio.get_running_loop()
        self._transfer = loop.create_future()
        self.handler.sip.refer(uri, self.handler.endpoint.now())
        self.handler.endpoint.flush()
        try:
            return await asyncio.wait_for(asyncio.shield(self._transfer), 32)
        except TimeoutError:
            return TransferResult(ok=False, target=target, reason="no final transfer status")
        finally:
            self._transfer = None

    def transfer_progress(self, status: int, final: bool, target: str = "") -> None:
        if final and self._transfer is not None and not self._transfer.done():
            ok = 200 <= status < 300
            self._transfer.set_result(TransferResult(ok=ok, target=target, reason=str(status)))


class CallHandler:
    """One inbound call from INVITE to cleanup."""

    def __init__(self, sip: InboundCall, *, endpoint: SipEndpoint, pool: RtpPortPool, media_host: str,
                 run_flow: FlowRunner, history: CallHistory | None = None, record: str = "no",
                 recordings: Path | None = None, answer_delay: float = 0.0, own_user: str = "") -> None:
        self.sip = sip
        self.endpoint = endpoint
        self.pool = pool
        self.media_host = media_host
        self.run_flow = run_flow
        self.history = history
        self.record = record
        self.answer_delay = answer_delay
        self.own_user = own_user
        self.recordings = recordings
        self.rtp: RtpSession | None = None
        self.call: Call | None = None
        self.media: NegotiatedMedia | None = None
        self.signalling = SipSignalling(self)
        self.task: asyncio.Task[None] | None = None
        self._confirmed = asyncio.Event()
        self.interaction_id: str | None = None
        sip.app = self

    @property
    def confirmed(self) -> bool:
        return self.sip.state is CallState.CONFIRMED

    def info(self) -> CallInfo:
        invite = self.sip.invite
        dialled = invite.request_uri.user_unescaped or ""
        if not dialled or dialled == self.own_user:
            # Behind a registrar the Request-URI is our own Contact; the number dialled is in To.
            dialled = invite.to.uri.user_unescaped or dialled
        return CallInfo(
            call_id=self.sip.call_id,
            caller=invite.from_.uri.user_unescaped or "",
            caller_name=invite.from_.display,
            dialled=dialled,
            remote=str(self.sip.source),
        )

    # ---- SIP events ------------------------------------------------------------------
    def start(self) -> None:
        """IncomingCall: negotiate the offer now (488 at once if nothing matches), then answer."""
        offer = self.sip.invite.body
        if not offer:
            self.reject(488, "Not Acceptable Here (an SDP offer is required)")
            return
        try:
            self.media = negotiate(SessionDescription.parse(offer))
        except SdpError as exc:
            self.reject(488, f"Not Acceptable Here ({exc})"[:100], warning=str(exc))
            return
        self.sip.ring(self.endpoint.now())
        self.endpoint.flush()
        self.task = asyncio.ensure_future(self._run())

    def reject(self, status: int, reason: str, warning: str | None = None) -> None:
        headers: tuple[tuple[str, str], ...] = ()
        if warning:
            headers = (("Warning", f'304 voice "{warning[:80]}"'),)
        self.sip.reject(status, reason, self.endpoint.now(), headers)
        self.endpoint.flush()

    def on_event(self, event: ev.Event) -> None:
        if isinstance(event, ev.CallConfirmed):
            self._confirmed.set()
        elif isinstance(event, ev.CallEnded):
            self._confirmed.set()
            if self.call is not None:
                self.call.mark_ended(event.reason)
            elif self.task is None or event.reason != "local":
                self._cleanup_media()
        elif isinstance(event, ev.ReInvite):
            self._reinvite(event.offer)
        elif isinstance(event, ev.DtmfInfo):
            if self.call is not None:
                self.call.deliver_digit(event.digit)
        elif isinstance(event, ev.TransferProgress):
            self.signalling.transfer_progress(event.status, event.final)

    def _reinvite(self, offer: bytes) -> None:
        """Hold, unhold or new media: update the one RTP session in place (never a second one)."""
        now = self.endpoint.now()
        if self.rtp is None or self.media is None:
            self.sip.reject_reinvite(491, "Request Pending", now)
            return
        if offer:
            try:
                media = negotiate(SessionDescription.parse(offer))
            except SdpError as exc:
                self.sip.reject_reinvite(488, f"Not Acceptable Here ({exc})"[:100], now)
                return
            self.media = media
            self._configure(media)
        self.sip.answer_reinvite(self._answer_sdp(), now)

    # ---- media -------------------------------------------------------------------
    def _configure(self, media: NegotiatedMedia) -> None:
        assert self.rtp is not None
        self.rtp.configure(remote=(media.remote_host, media.remote_port),
                           payload_type=media.codec.payload_type, codec=media.codec.name,
                           dtmf_payload_type=media.dtmf_payload_type, direction=media.local_direction)

    def _answer_sdp(self) -> bytes:
        assert self.rtp is not None and self.media is not None
        return build_answer(self.media, self.media_host, self.rtp.local_port, self.sip.session_id,
                            self.sip.next_sdp_version())

    def _cleanup_media(self) -> None:
        if self.rtp is not None:
            self.rtp.close()
            self.rtp = None

    async def _run(self) -> None:
        try:
            await self._answer_and_run()
        except Exception:
            log.exception("call %s failed", self.sip.call_id)
            if self.sip.state is not CallState.ENDED:
                self.sip.hangup(self.endpoint.now())
                self.endpoint.flush()
        finally:
            self._cleanup_media()

    async def _answer_and_run(self) -> None:
        assert self.media is not None
        try:
            self.rtp = await self.pool.open_session(self.media_host)
        except RuntimeError:
            self.reject(503, "Service Unavailable (no media port)")
            return
        if self.answer_delay > 0:
            await asyncio.sleep(self.answer_delay)
        if self.sip.state is not CallState.EARLY:  # cancelled while ringing
            return
        self._configure(self.media)
        if self.record != "no" and self.recordings is not None:
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
            safe_id = "".join(c for c in self.sip.call_id if c.isalnum())[:24]
            self.rtp.start_recording(self.recordings / f"call-{stamp}-{safe_id}.wav", self.record == "both")
        self.sip.answer(self._answer_sdp(), self.endpoint.now())
        self.endpoint.flush()
        await self._confirmed.wait()
        if not self.confirmed:  # ended before the ACK (CANCEL race, no ACK)
            return
        self.call = Call(self.info(), self.rtp, self.signalling)
        await self._record_start()
        ivr: dict[str, Any] | None = None
        try:
            ivr = await self.run_flow(self.call)
        finally:
            if not self.call.ended:
                await self.call.hangup("flow_end")
            await self._record_finish(ivr)

    async def _record_start(self) -> None:
        if self.history is None or self.call is None:
            return
        info = self.call.info
        try:
            self.interaction_id = await self.history.call_started(
                call_id=info.call_id, caller=info.caller, caller_name=info.caller_name,
                dialled=info.dialled, started_at=datetime.fromtimestamp(info.started_at, UTC))
            self.call.interaction_id = self.interaction_id
        except Exception:
            log.exception("could not write the call's interaction")

    async def _record_finish(self, ivr: dict[str, Any] | None) -> None:
        if self.history is None or self.interaction_id is None or self.call is None:
            return
        call = self.call
        recording = self.rtp.stop_recording() if self.rtp is not None else None
        try:
            await self.history.call_finished(
                self.interaction_id, ended_at=datetime.now(UTC), ended=call.end_cause or "unknown",
                ivr=ivr, recording=str(recording) if recording else None,
                transcript=[asdict(s) for s in call.transcript])
        except Exception:
            log.exception("could not complete the call's interaction %s", self.interaction_id)
