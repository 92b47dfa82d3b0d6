"""One inbound call's signalling state on top of its INVITE transaction and dialog.

RFC 3261 13.3.1.4: the UAS core retransmits its 2xx (T1, doubling up to T2) until
the ACK arrives, and after 64*T1 without one ends the call with a BYE. The same
applies to the 2xx of a re-INVITE. Section 14.2: a re-INVITE while another is in
progress gets 491; one arriving before our previous 2xx was ACKed gets 500 with
Retry-After.
"""

from __future__ import annotations

import enum
import random
import re
from typing import TYPE_CHECKING

from voice.sip import events as ev
from voice.sip.message import Request, Response
from voice.sip.timers import Timer
from voice.sip.transaction import Address, InviteServerTransaction, ServerTransaction

if TYPE_CHECKING:
    from voice.sip.core import SipCore
    from voice.sip.dialog import Dialog

_DTMF_SIGNAL = re.compile(r"^\s*signal\s*=\s*([0-9A-Da-d*#]|1[01])\s*$", re.I | re.M)
_DTMF_DURATION = re.compile(r"^\s*duration\s*=\s*(\d+)\s*$", re.I | re.M)
_SIPFRAG = re.compile(rb"^SIP/2\.0\s+(\d{3})")


class CallState(enum.Enum):
    EARLY = "early"  # INVITE received, no final response yet
    ANSWERED = "answered"  # 2xx sent, waiting for ACK
    CONFIRMED = "confirmed"
    ENDED = "ended"


class DialogCall:
    """What every call we are part of shares once its dialog exists, whichever side sent the
    INVITE: requests from the peer inside the dialog (BYE, re-INVITE, INFO, OPTIONS, NOTIFY),
    our 2xx to their re-INVITEs retransmitted until ACKed, REFER, BYE. `InboundCall` and
    `voice.sip.outbound.OutboundCall` add how the dialog starts."""

    def __init__(self, core: SipCore, dialog: Dialog, source: Address) -> None:
        self.core = core
        self.dialog = dialog
        self.source = source  # the peer's signalling address
        self.state = CallState.EARLY
        self.app: object = None  # the service's per-call object
        self._retransmit: Timer | None = None
        self._ack_deadline: Timer | None = None
        self._unacked: tuple[int, bytes] | None = None  # (CSeq, 2xx bytes) awaiting ACK
        self._reinvite_tx: ServerTransaction | None = None
        self._sdp_version = random.randint(1, 2**16)
        self.session_id = random.randint(1, 2**31)
        self.refer_pending = False

    @property
    def call_id(self) -> str:
        return self.dialog.call_id

    def next_sdp_version(self) -> int:
        """RFC 3264 8: every new SDP we send increments o= version."""
        self._sdp_version += 1
        return self._sdp_version

    def _ok(self, tx: ServerTransaction, sdp: bytes, now: float) -> Response:
        headers = [("Contact", self.dialog.contact),
                   *((k, v) for k, v in self.core.capabilities() if k in ("Allow", "Supported"))]
        headers += self._dialog_creating_headers(tx)
        return self.core.respond(tx, 200, "OK", now=now, to_tag=self.dialog.local_tag, headers=headers,
                                 body=sdp, content_type="application/sdp" if sdp else None)

    def _await_ack(self, tx: ServerTransaction, response: Response, now: float) -> None:
        cseq = tx.request.cseq.seq
        data = response.serialize()
        self._unacked = (cseq, data)
        peer = tx.response_peer
        t1 = self.core.values.t1
        if not self.source.reliable:
            self._retransmit = self.core.timers.schedule(
                now + t1, lambda t_: self._retransmit_ok(t_, cseq, data, peer, t1), "2xx")
        self._ack_deadline = self.core.timers.schedule(now + 64 * t1, self._no_ack, "ack-timeout")

    def _retransmit_ok(self, t: float, cseq: int, data: bytes, peer: Address, interval: float) -> None:
        """13.3.1.4: the 2xx again, at doubling intervals up to T2, until its ACK (a method, not
        a closure calling itself: that would be a cycle per call for the garbage collector)."""
        if self._unacked is None or self._unacked[0] != cseq:
            return
        self.core.send(data, peer)
        nxt = min(2 * interval, self.core.values.t2)
        self._retransmit = self.core.timers.schedule(
            t + nxt, lambda t_: self._retransmit_ok(t_, cseq, data, peer, nxt), "2xx")

    def _dialog_creating_headers(self, tx: ServerTransaction) -> list[tuple[str, str]]:
        return []

    def _no_ack(self, now: float) -> None:
        # 13.3.1.4: no ACK within 64*T1: confirm the session and terminate it with BYE.
        if self._unacked is None:
            return
        self._unacked = None
        self._send_bye(now)
        self._end("no_ack", now)

    def awaiting_ack(self, cseq: int) -> bool:
        return self._unacked is not None and self._unacked[0] == cseq

    def ack_received(self, request: Request, now: float) -> None:
        if self._unacked is None or request.cseq.seq != self._unacked[0]:
            return  # duplicate ACK, or ACK for something already acknowledged
        self._unacked = None
        for timer in (self._retransmit, self._ack_deadline):
            if timer is not None:
                timer.cancel()
        if self.state is CallState.ANSWERED:
            self.state = CallState.CONFIRMED
            self.core.emit(ev.CallConfirmed(call=self, body=request.body))

    # ---- peer requests in the dialog ---------------------------------------------
    def in_dialog_request(self, request: Request, tx: ServerTransaction, now: float) -> None:
        method = request.method
        if method == "BYE":
            self.core.respond(tx, 200, now=now)
            self._bye_while_early(now)
            self._end("bye", now)
        elif method == "INVITE":
            self._reinvite(request, tx, now)
        elif method == "INFO":
            self._info(request, tx, now)
        elif method == "OPTIONS":
            self.core.respond(tx, 200, now=now, headers=self.core.capabilities())
        elif method == "NOTIFY":
            self.core.respond(tx, 200, now=now)
            match = _SIPFRAG.match(request.body.lstrip())
            if match and self.refer_pending:
                status = int(match.group(1))
                final = status >= 200
                self.core.emit(ev.TransferProgress(call=self, status=status, final=final))
                if final:
                    self.refer_pending = False
        else:  # REFER from the caller: we do not let callers redirect us.
            self.core.respond(tx, 403, "Forbidden (REFER not accepted from callers)", now=now)

    def _bye_while_early(self, now: float) -> None:
        """A BYE arrived before the INVITE got its final response."""

    def _reinvite(self, request: Request, tx: ServerTransaction, now: float) -> None:
        if self.state is CallState.EARLY or (self._reinvite_tx is not None
                                             and not self._reinvite_tx.final_sent):
            self.core.respond(tx, 491, "Request Pending", now=now)
            return
        if self._unacked is not None:
            self.core.respond(tx, 500, "Server Internal Error (previous 2xx not acknowledged)", now=now,
                              headers=[("Retry-After", str(random.randint(1, 5)))])
            return
        self.dialog.update_target(request)
        self._reinvite_tx = tx
        self.core.emit(ev.ReInvite(call=self, offer=request.body))

    def answer_reinvite(self, sdp: bytes, now: float) -> None:
        tx = self._reinvite_tx
        if tx is None or tx.final_sent:
            return
        response = self._ok(tx, sdp, now)
        self._await_ack(tx, response, now)

    def reject_reinvite(self, status: int, reason: str | None, now: float) -> None:
        """A failed re-INVITE leaves the session as it was (14.1)."""
        tx = self._reinvite_tx
        if tx is not None and not tx.final_sent:
            self.core.respond(tx, status, reason, now=now, to_tag=self.dialog.local_tag)

    def _info(self, request: Request, tx: ServerTransaction, now: float) -> None:
        ctype = (request.content_type or "").split(";")[0].strip().lower()
        self.core.respond(tx, 200, now=now)
        if ctype != "application/dtmf-relay":
            return
        text = request.body.decode("utf-8", "replace")
        sig = _DTMF_SIGNAL.search(text)
        if sig is None:
            return
        digit = {"10": "*", "11": "#"}.get(sig.group(1), sig.group(1).upper())
        dur = _DTMF_DURATION.search(text)
        self.core.emit(ev.DtmfInfo(call=self, digit=digit, duration_ms=int(dur.group(1)) if dur else 100))

    # ---- ending and transferring ---------------------------------------------------
    def refer(self, target: str, now: float) -> None:
        """Blind transfer (RFC 3515): ask the caller's UA to call `target`."""
        if self.state is not CallState.CONFIRMED:
            self.core.emit(ev.TransferProgress(call=self, status=481, final=True))
            return
        request = self.dialog.create_request("REFER", extra=(
            ("Refer-To", f"<{target}>"),
            ("Referred-By", f"<{self.dialog.local_uri}>"),
        ))
        self.refer_pending = True

        def on_response(response: Response | None) -> None:
            status = response.status if response is not None else 408
            if status >= 200:
                failed = status >= 300
                if failed:
                    self.refer_pending = False
                self.core.emit(ev.TransferProgress(call=self, status=status, final=failed))

        self.core.send_request(request, self.dialog.next_hop(), now, on_response)

    def _send_bye(self, now: float) -> None:
        request = self.dialog.create_request("BYE")
        self.core.send_request(request, self.dialog.next_hop(), now, lambda _r: None)

    def _end(self, reason: str, now: float) -> None:
        if self.state is CallState.ENDED:
            return
        self.state = CallState.ENDED
        for timer in (self._retransmit, self._ack_deadline):
            if timer is not None:
                timer.cancel()
        # Keep the dialog findable for 64*T1 so late retransmissions get answers, then forget it.
        core = self.core
        core.timers.schedule(now + 64 * core.values.t1, lambda _t: core.forget_call(self), "forget")
        core.emit(ev.CallEnded(call=self, reason=reason))


class InboundCall(DialogCall):
    """A call the peer placed to us: we answer (or reject) its INVITE."""

    def __init__(self, core: SipCore, invite: Request, tx: InviteServerTransaction, dialog: Dialog,
                 source: Address) -> None:
        super().__init__(core, dialog, source)
        self.invite = invite
        self.invite_tx = tx

    # ---- answering -------------------------------------------------------------
    def ring(self, now: float) -> None:
        if self.state is CallState.EARLY:
            self.core.respond(self.invite_tx, 180, "Ringing", now=now, to_tag=self.dialog.local_tag,
                              headers=[("Contact", self.dialog.contact)])

    def answer(self, sdp: bytes, now: float) -> None:
        if self.state is not CallState.EARLY:
            return
        response = self._ok(self.invite_tx, sdp, now)
        self.state = CallState.ANSWERED
        self._await_ack(self.invite_tx, response, now)

    def reject(self, status: int, reason: str | None, now: float,
               headers: tuple[tuple[str, str], ...] = ()) -> None:
        if self.state is not CallState.EARLY:
            return
        self.core.respond(self.invite_tx, status, reason, now=now, to_tag=self.dialog.local_tag,
                          headers=headers)
        self._end("rejected", now)

    def cancelled(self, now: float) -> None:
        """9.2: a CANCEL before our final answer ends the INVITE with 487."""
        if self.state is CallState.EARLY:
            self.core.respond(self.invite_tx, 487, "Request Terminated", now=now,
                              to_tag=self.dialog.local_tag)
            self._end("cancel", now)

    def _bye_while_early(self, now: float) -> None:
        if self.state is CallState.EARLY:
            self.core.respond(self.invite_tx, 487, "Request Terminated", now=now,
                              to_tag=self.dialog.local_tag)

    def _dialog_creating_headers(self, tx: ServerTransaction) -> list[tuple[str, str]]:
        if tx is not self.invite_tx:
            return []
        # 12.1.1: the 2xx to the dialog-creating INVITE copies its Record-Route.
        return [("Record-Route", rr) for rr in self.invite.headers.get_all("Record-Route")]

    def hangup(self, now: float) -> None:
        """End the call from our side: BYE when answered, 480 while still ringing."""
        if self.state is CallState.EARLY:
            self.reject(480, "Temporarily Unavailable", now)
            return
        if self.state is CallState.ENDED:
            return
        self._unacked = None
        self._send_bye(now)
        self._end("local", now)
