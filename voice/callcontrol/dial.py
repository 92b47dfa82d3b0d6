"""The outbound dial path: ring a phone for a caller and, once answered, bridge the two legs.

`OutboundDial` is what the desk gets back from `Switch.connect` (cti.ports.AgentConnection):
it places the INVITE from the service's own SIP core with an RTP session from the service's
pool, waits for the answer (CANCEL when the ring time passes, the caller hangs up first, or
the attempt is cancelled), then relays media between the caller's leg and the new one until
either side hangs up. The agent hanging up leaves the caller's call running (the flow's
after-call branch); the caller hanging up sends the agent a BYE.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from cti.ports import ConversationEnd
from voice.callcontrol.bridge import AudioCallback, Bridge, BridgeSide, MonitoredCall
from voice.callcontrol.call import Call
from voice.callcontrol.leg import Leg, SipLink
from voice.callcontrol.masking import note_bridge_key
from voice.sip.sdp import build_offer

if TYPE_CHECKING:
    from pathlib import Path

    from voice.aio.rtp import RtpPortPool, RtpSession


class OutboundDial:
    """One outbound call placed for `caller` (an agent's phone, a transfer target)."""

    def __init__(self, link: SipLink, pool: RtpPortPool, uri: str, *, caller: Call, caller_rtp: RtpSession,
                 media_host: str, extra_headers: Sequence[tuple[str, str]] = (),
                 credentials: tuple[str, str] | None = None) -> None:
        self.link, self.pool, self.uri = link, pool, uri
        self.caller, self.caller_rtp = caller, caller_rtp
        self.media_host = media_host
        # The caller's codec first: no transcoding when the agent's phone takes it.
        self.codecs = (caller_rtp.codec, *(c for c in ("PCMU", "PCMA") if c != caller_rtp.codec))
        self.extra_headers = (("X-Voice-Call-ID", caller.info.call_id), *extra_headers)
        self.credentials = credentials
        self.leg: Leg | None = None
        self._status: int | None = None
        self._reason = ""
        self.invited_at: float | None = None
        self.answered_at: float | None = None
        self._finished: asyncio.Future[ConversationEnd] = asyncio.get_running_loop().create_future()
        self._bridge_task: asyncio.Task[None] | None = None
        self._agent_taps: list[AudioCallback] = []  # supervisors listening in

    # ---- cti.ports.AgentConnection --------------------------------------------------------------
    @property
    def answered(self) -> bool:
        return self.answered_at is not None

    @property
    def status(self) -> int | None:
        return self.leg.status if self.leg is not None and self.leg.status is not None else self._status

    @property
    def reason(self) -> str:
        return self.leg.reason if self.leg is not None and self.leg.reason else self._reason

    async def wait_finished(self) -> ConversationEnd:
        return await asyncio.shield(self._finished)

    def hangup(self) -> None:
        """CANCEL while ringing, BYE once answered; releases the media port. Idempotent."""
        if self.leg is not None:
            self.leg.end_now("local")
        if self._bridge_task is None and not self._finished.done():
            self._finished.set_result(ConversationEnd(hangup_by="caller", talk_seconds=0.0))

    # ---- placing the call ---------------------------------------------------------------------
    async def dial(self, timeout: float) -> bool:
        """True once answered with usable media and bridged; False on failure, when the caller
        hangs up first, or after `timeout` s (the INVITE is CANCELled). Cancelling cancels it."""
        if self.caller.ended:
            self._status, self._reason = None, "caller hung up"
            return False
        try:
            rtp = await self.pool.open_session(self.media_host)
        except RuntimeError:
            self._status, self._reason = 503, "no free RTP port"
            return False
        core = self.link.core
        offer = build_offer(self.media_host, rtp.local_port, int(time.time()) & 0x7FFFFFFF, 1, self.codecs)
        info = self.caller.info
        # The leg is attached before the flush: an INVITE that fails at once reports it there.
        sip = core.invite(self.uri, from_user=info.caller or "anonymous", from_display=info.caller_name,
                          sdp_offer=offer, now=self.link.endpoint.now(), extra_headers=self.extra_headers,
                          credentials=self.credentials)
        leg = self.leg = Leg(self.link, sip, media_host=self.media_host, codecs=self.codecs)
        leg.attach_media(rtp)
        self.invited_at = time.monotonic()
        self.link.endpoint.flush()
        caller_gone = asyncio.ensure_future(self.caller.wait_ended())
        try:
            waiters: set[asyncio.Future[Any]] = {leg.confirmed, caller_gone}
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            leg.end_now("local")
            raise
        finally:
            caller_gone.cancel()
        if not leg.confirmed.done() or not leg.confirmed.result():
            if not leg.confirmed.done():
                leg.fail(408 if not self.caller.ended else 487,
                         "no answer" if not self.caller.ended else "caller hung up")
            leg.end_now("local")
            return False
        if self.caller.ended:
            leg.end_now("local")
            self._reason = "caller hung up"
            return False
        self.answered_at = time.monotonic()
        self._bridge_task = asyncio.ensure_future(self._bridged())
        return True

    async def _bridged(self, record: Path | None = None) -> None:
        leg = self.leg
        assert leg is not None and leg.rtp is not None
        bridge = Bridge(BridgeSide.of_call(self.caller, self.caller_rtp, "caller"),
                        BridgeSide.of_session(leg.rtp, "agent"),
                        on_key=lambda side: note_bridge_key(self.caller, side))
        bridge.tap("agent", self._tap_agent)
        started = time.monotonic()
        bridge.start(record=record)
        caller_gone = asyncio.ensure_future(self.caller.wait_ended())
        hangup_by = "agent"
        try:
            ends: set[asyncio.Future[str]] = {leg.end, caller_gone}
            await asyncio.wait(ends, return_when=asyncio.FIRST_COMPLETED)
            if caller_gone.done() and not leg.ended:
                hangup_by = "shutdown" if caller_gone.result() == "shutdown" else "caller"
        finally:
            caller_gone.cancel()
            path = bridge.stop()
            self.caller.clear_digits()  # keys pressed for the agent are not type-ahead for the flow
            leg.end_now("local")
            if not self._finished.done():
                self._finished.set_result(ConversationEnd(
                    hangup_by=hangup_by, talk_seconds=time.monotonic() - started,
                    recording=str(path) if path else None))

    # ---- listen-in ------------------------------------------------------------------------------
    @property
    def talking(self) -> bool:
        return self.answered and not self._finished.done()

    def monitored(self) -> MonitoredCall:
        """This conversation for a supervisor's silent listen-in (voice.callcontrol.webrtc)."""
        def add(listener: AudioCallback) -> Callable[[], None]:
            self._agent_taps.append(listener)
            return lambda: self._agent_taps.remove(listener) if listener in self._agent_taps else None

        return MonitoredCall(caller=self.caller, add_agent_listener=add, over=self.wait_finished)

    def _tap_agent(self, frame: np.ndarray) -> None:
        for tap in self._agent_taps:
            tap(frame)

    async def aclose(self) -> None:
        if self._bridge_task is not None and not self._bridge_task.done():
            self._bridge_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._bridge_task
