"""The inbound answer path: one call from its INVITE to the end of its flow.

Negotiate the offer (488 at once if nothing matches; an INVITE without SDP gets our offer in
the 2xx and the answer is taken from the ACK, RFC 3261 13.3.1), ring, open the RTP session,
answer, run the flow once the ACK arrives, and hang up when the flow is done. What the call
leaves behind is published on the lifecycle (`CallAnswered` the moment the 2xx leaves, so a
call answered and ended before its ACK still has its one record; `CallFinished` always after).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from voice.callcontrol.call import Call, CallInfo
from voice.callcontrol.leg import Leg, SipLink
from voice.callcontrol.lifecycle import CallAnswered, CallFinished, CallIdentified, CallRefused, Lifecycle
from voice.sip.sdp import SdpError, SessionDescription, build_offer, negotiate
from voice.sip.session import CallState, InboundCall

if TYPE_CHECKING:
    from voice.aio.rtp import RtpPortPool

log = logging.getLogger("voice.callcontrol")

# Runs the call's logic; returns the IVR record (JSON-ready) for the history, if any.
FlowRunner = Callable[[Call], Awaitable[dict[str, Any] | None]]


@dataclass(frozen=True, kw_only=True)
class AnswerSettings:
    node: str
    record: str = "no"  # no | caller | both
    recordings: Path | None = None
    answer_delay: float = 0.0
    own_user: str = ""


def call_key(node: str, sip: InboundCall) -> str:
    """Unique on this service: the node, the Call-ID and both tags (a Call-ID may be reused)."""
    d = sip.dialog
    return f"{node}:{sip.call_id};{d.remote_tag};{d.local_tag}"


class InboundAnswer:
    """One inbound call: `start()` on IncomingCall, then its task runs until the call is over."""

    def __init__(self, sip: InboundCall, *, link: SipLink, pool: RtpPortPool, media_host: str,
                 run_flow: FlowRunner, lifecycle: Lifecycle, settings: AnswerSettings) -> None:
        self.leg = Leg(link, sip, media_host=media_host)
        self.sip = sip
        self.pool = pool
        self.run_flow = run_flow
        self.lifecycle = lifecycle
        self.settings = settings
        self.key = call_key(settings.node, sip)
        self.call: Call | None = None
        self.task: asyncio.Task[None] | None = None
        self.delayed_offer = False
        self.offered_at = datetime.now(UTC)  # the INVITE arrived

    def info(self) -> CallInfo:
        invite = self.sip.invite
        dialled = invite.request_uri.user_unescaped or ""
        if not dialled or dialled == self.settings.own_user:
            # Behind a registrar the Request-URI is our own Contact; the number dialled is in To.
            dialled = invite.to.uri.user_unescaped or dialled
        return CallInfo(call_id=self.sip.call_id, caller=invite.from_.uri.user_unescaped or "",
                        caller_name=invite.from_.display, dialled=dialled, remote=str(self.sip.source))

    # ---- SIP side ----------------------------------------------------------------------------
    def start(self) -> bool:
        """Negotiate and ring; False when the call was refused at once (488)."""
        offer = self.sip.invite.body
        if offer:
            try:
                self.leg.media = negotiate(SessionDescription.parse(offer), self.leg.codecs,
                                           local_host=self.leg.media_host)
            except SdpError as exc:
                self.reject(488, f"Not Acceptable Here ({exc})"[:100], warning=str(exc),
                            warn_code=exc.warn_code)
                return False
        else:
            self.delayed_offer = True
        self.leg.link(self.sip.ring)
        self.task = asyncio.ensure_future(self._run())
        return True

    def reject(self, status: int, reason: str, *, warning: str | None = None, warn_code: int = 304,
               retry_after: int | None = None) -> None:
        headers: list[tuple[str, str]] = []
        if warning:
            text = warning[:80].replace("\\", "").replace('"', "'")
            headers.append(("Warning", f'{warn_code} voice "{text}"'))
        if retry_after is not None:
            headers.append(("Retry-After", str(retry_after)))
        self.leg.link(lambda now: self.sip.reject(status, reason, now, tuple(headers)))
        self.lifecycle.refused(CallRefused(call_id=self.sip.call_id, status=status, reason=reason))

    # ---- the call's task ---------------------------------------------------------------------
    async def _run(self) -> None:
        try:
            await self._answer_and_run()
        except Exception:
            log.exception("call %s failed", self.sip.call_id)
            if self.call is not None and not self.call.ended:
                with contextlib.suppress(Exception):
                    await self.leg.hangup("error")
        finally:
            self.leg.close_media()

    async def _answer_and_run(self) -> None:
        leg = self.leg
        try:
            rtp = await self.pool.open_session(leg.media_host)
        except RuntimeError:  # (the SIP core refuses calls before ringing when no port is left)
            self.reject(503, "Service Unavailable (no media port)", retry_after=5)
            return
        leg.attach_media(rtp)
        if self.settings.answer_delay > 0:
            await asyncio.sleep(self.settings.answer_delay)
        if self.sip.state is not CallState.EARLY or leg.ended:  # cancelled while ringing
            self.lifecycle.refused(CallRefused(call_id=self.sip.call_id, status=487, reason="cancelled"))
            return
        if self.delayed_offer:
            sdp = build_offer(leg.media_host, rtp.local_port, self.sip.session_id,
                              self.sip.next_sdp_version(), leg.codecs)
        else:
            leg.configure_media()
            sdp = leg.answer_sdp()
        recording = self._start_recording()
        leg.link(lambda now: self.sip.answer(sdp, now))
        answered_at = datetime.now(UTC)
        call = self.call = Call(self.info(), rtp, leg, key=self.key, node=self.settings.node,
                                on_identified=self._identified)
        leg.on_info_digit = call.deliver_digit
        self.lifecycle.publish(CallAnswered(call=call, node=self.settings.node))
        ivr: dict[str, Any] | None = None
        try:
            if await self._wait_confirmed():
                ivr = await self.run_flow(call)
        finally:
            if not call.ended:
                await leg.hangup("flow_end")
            cause = await call.wait_ended()
            path = leg.rtp.stop_recording() if recording and leg.rtp is not None else None
            self.lifecycle.publish(CallFinished(
                call=call, cause=cause, ivr=ivr, node=self.settings.node,
                recording=str(path) if path else None,
                details={"offered_at": self.offered_at.isoformat(), "answered_at": answered_at.isoformat()}))

    async def _wait_confirmed(self) -> bool:
        """Until the ACK (True), or the call ending first: BYE/CANCEL race, no ACK (False)."""
        confirmed = self.leg.confirmed
        waiters: set[asyncio.Future[Any]] = {confirmed, self.leg.end}
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        return confirmed.done() and confirmed.result() and not self.leg.ended

    def _start_recording(self) -> bool:
        s = self.settings
        if s.record == "no" or s.recordings is None or self.leg.rtp is None:
            return False
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        safe_id = "".join(c for c in self.sip.call_id if c.isalnum())[:24]
        self.leg.rtp.start_recording(s.recordings / f"call-{stamp}-{safe_id}.wav", s.record == "both")
        return True

    def _identified(self, call: Call) -> None:
        if call.customer_id is not None:
            self.lifecycle.publish(CallIdentified(call=call, customer_id=call.customer_id,
                                                  by=call.identified_by or "unknown"))
