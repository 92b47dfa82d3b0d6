"""A call we place (UAC side of RFC 3261 section 13.2), sans-IO.

Rules this module keeps:
- The INVITE runs in an InviteClientTransaction, which ACKs non-2xx finals itself;
  the ACK for a 2xx is ours (13.2.2.4): built from the dialog, sent straight to the
  next hop (no transaction) and sent again for every retransmission of that 2xx.
- The dialog comes from the first 2xx (12.1.2): remote tag from To, route set from
  Record-Route in reverse order, remote target from Contact, local CSeq = INVITE's.
  A 2xx from another fork (different To tag), or one that arrives after we gave up,
  is ACKed and then released with a BYE (13.2.2.4).
- CANCEL (9.1) only after a provisional response; asked for earlier it waits for
  one. If no final response follows within 64*T1 the INVITE is given up (408).
- 401/407 are answered once with digest credentials (22.2): same Call-ID and From
  tag, CSeq + 1, a new branch.
- Outcome: exactly one OutboundFailed for a call never answered; OutboundAnswered
  then CallEnded for one that was. Requests from the callee inside the dialog
  (BYE, re-INVITE, INFO...) are handled by DialogCall, as for inbound calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from voice.sip import events as ev
from voice.sip.dialog import ALLOW, Dialog
from voice.sip.digest import Challenge, DigestError, authorization
from voice.sip.message import Headers, NameAddr, Request, Response, SipUri, new_call_id, new_tag
from voice.sip.session import CallState, DialogCall
from voice.sip.timers import Timer
from voice.sip.transaction import Address, InviteClientTransaction

if TYPE_CHECKING:
    from voice.sip.core import SipCore

_AUTH_HEADERS = ("Authorization", "Proxy-Authorization")


def next_hop_for(uri: str) -> Address:
    """Where an out-of-dialog request for `uri` goes without a proxy: its host and port (no DNS SRV)."""
    target = SipUri.parse(uri)
    transport = (target.params.get("transport") or "udp").lower()
    port = target.port or (5061 if target.scheme == "sips" else 5060)
    return Address(target.host.strip("[]"), port, transport if transport in ("udp", "tcp") else "udp")


class OutboundCall(DialogCall):
    """One INVITE we send and the dialog it makes. Created by `SipCore.invite()`."""

    def __init__(self, core: SipCore, target_uri: str, *, from_user: str, from_display: str | None,
                 sdp_offer: bytes, peer: Address | None, extra_headers: Sequence[tuple[str, str]] = (),
                 credentials: tuple[str, str] | None = None) -> None:
        peer = peer or next_hop_for(target_uri)
        ident = core.identity
        host = f"[{ident.host}]" if ":" in ident.host else ident.host
        local_uri = f"sip:{from_user}@{host}"
        dialog = Dialog(
            call_id=new_call_id(ident.host), local_tag=new_tag(), remote_tag="", local_uri=local_uri,
            remote_uri=target_uri, remote_display=None, remote_target=target_uri, peer=peer,
            contact=ident.contact(peer.transport), user_agent=ident.user_agent,
        )
        super().__init__(core, dialog, peer)
        self.target_uri = target_uri
        self.from_display = from_display
        self.sdp_offer = sdp_offer
        self.extra_headers = tuple(extra_headers)
        self._credentials = credentials
        self._auth_tries = 0
        self.invite: Request = self._build_invite(())
        self.invite_tx: InviteClientTransaction | None = None
        self.status: int | None = None  # final response status once there is one
        self.answer_sdp = b""
        self.cancel_requested = False
        self._provisional = False
        self._cancel_sent = False
        self._cancel_guard: Timer | None = None
        self._ringing: set[tuple[int, str]] = set()
        self._acks: dict[str, bytes] = {}  # To tag -> ACK bytes, for 2xx retransmissions
        self._failed = False

    # ---- the INVITE ------------------------------------------------------------------
    def _build_invite(self, auth: Sequence[tuple[str, str]]) -> Request:
        d = self.dialog
        headers = Headers()
        headers.add("Max-Forwards", "70")
        from_ = f"<{d.local_uri}>;tag={d.local_tag}"
        if self.from_display:
            quoted = self.from_display.replace("\\", "\\\\").replace('"', '\\"')
            from_ = f'"{quoted}" {from_}'
        headers.add("From", from_)
        headers.add("To", f"<{self.target_uri}>")
        headers.add("Call-ID", d.call_id)
        headers.add("CSeq", f"{d.local_seq} INVITE")
        headers.add("Contact", d.contact)
        headers.add("Allow", ALLOW)
        headers.add("Supported", "replaces, norefersub")
        if d.user_agent:
            headers.add("User-Agent", d.user_agent)
        for name, value in (*auth, *self.extra_headers):
            headers.add(name, value)
        if self.sdp_offer:
            headers.add("Content-Type", "application/sdp")
        return Request(method="INVITE", uri=self.target_uri, headers=headers, body=self.sdp_offer)

    def start(self, now: float) -> None:
        self.invite_tx = self.core.send_invite(self.invite, self.source, now, self._on_response)

    def _on_response(self, response: Response | None) -> None:
        now = self.core.now
        if response is None:  # Timer B: not even a provisional response
            self._fail(408, "Request Timeout (no response)", now)
            return
        status = response.status
        if status < 200:
            self._provisional = True
            if self.cancel_requested:
                self._send_cancel(now)
            elif status > 100 and self.state is CallState.EARLY:
                key = (status, response.to.tag or "")
                if key not in self._ringing:
                    self._ringing.add(key)
                    self.core.emit(ev.OutboundRinging(call=self, status=status, body=response.body))
        elif status < 300:
            self._on_2xx(response, now)
        elif status in (401, 407) and self._retry_with_credentials(response, now):
            return
        else:
            self._fail(status, response.reason, now)

    def _retry_with_credentials(self, response: Response, now: float) -> bool:
        """22.2: answer the challenge once; a second challenge is a failure."""
        if self._credentials is None or self._auth_tries >= 1 or self.cancel_requested:
            return False
        header = "WWW-Authenticate" if response.status == 401 else "Proxy-Authenticate"
        value = response.headers.get(header)
        if not value:
            return False
        try:
            challenge = Challenge.parse(value)
            username, password = self._credentials
            self._auth_tries += 1
            credentials = authorization(challenge, method="INVITE", uri=self.target_uri, username=username,
                                        password=password, nc=1)
        except (DigestError, ValueError):
            return False
        name = "Authorization" if response.status == 401 else "Proxy-Authorization"
        self.dialog.local_seq += 1
        self._provisional = False
        self.invite = self._build_invite([(name, credentials)])
        self.start(now)
        return True

    # ---- 2xx ---------------------------------------------------------------------------
    def _on_2xx(self, response: Response, now: float) -> None:
        tag = response.to.tag or ""
        known = self._acks.get(tag)
        if known is not None:
            self._send_ack_bytes(known, self.dialog.next_hop() if tag == self.dialog.remote_tag else None,
                                 response)
            return
        if self.state is CallState.EARLY and not self.cancel_requested and not self._failed:
            self._establish(response)
            self._acks[tag] = self._send_ack(self.dialog)
            self.status = response.status
            self.answer_sdp = response.body
            self.state = CallState.CONFIRMED
            self.core.emit(ev.OutboundAnswered(call=self, body=response.body))
            return
        # Another fork answered too, or the answer raced our CANCEL: ACK, then release it.
        fork = self._dialog_from(response)
        self._acks[tag] = self._send_ack(fork)
        bye = fork.create_request("BYE")
        self.core.send_request(bye, fork.next_hop(), now, lambda _r: None)
        if self.state is CallState.EARLY:
            self._fail(487, "Request Terminated (answered after CANCEL; released)", now)

    def late_2xx(self, response: Response, now: float) -> None:
        """A 2xx retransmission that arrived after the INVITE transaction ended (Timer M)."""
        self._on_2xx(response, now)

    def _dialog_from(self, response: Response) -> Dialog:
        """12.1.2: the UAC's dialog state from a 2xx (or a forked one)."""
        d = self.dialog
        contacts = response.headers.get_all("Contact")
        target = str(NameAddr.parse(contacts[0]).uri) if contacts else self.target_uri
        return Dialog(
            call_id=d.call_id, local_tag=d.local_tag, remote_tag=response.to.tag or "",
            local_uri=d.local_uri, remote_uri=str(response.to.uri), remote_display=response.to.display,
            remote_target=target, route_set=list(reversed(response.headers.get_all("Record-Route"))),
            remote_seq=0, local_seq=d.local_seq, peer=d.peer, contact=d.contact, user_agent=d.user_agent,
        )

    def _establish(self, response: Response) -> None:
        self.dialog = self._dialog_from(response)

    def _send_ack(self, dialog: Dialog) -> bytes:
        """13.2.2.4: ACK with the INVITE's CSeq number and credentials, a new branch."""
        auth = tuple((n, v) for n in _AUTH_HEADERS for v in self.invite.headers.get_all(n))
        ack = dialog.create_request("ACK", extra=auth)
        hop = dialog.next_hop()
        self.core.add_via(ack, hop)
        data = ack.serialize()
        self.core.send(data, hop)
        return data

    def _send_ack_bytes(self, data: bytes, hop: Address | None, response: Response) -> None:
        self.core.send(data, hop or self._dialog_from(response).next_hop())

    # ---- giving up ---------------------------------------------------------------------
    def cancel(self, now: float) -> None:
        """Stop ringing (9.1). Before any provisional response the CANCEL waits for one."""
        if self.state is not CallState.EARLY or self.cancel_requested or self._failed:
            return
        self.cancel_requested = True
        if self._provisional:
            self._send_cancel(now)

    def _send_cancel(self, now: float) -> None:
        if self._cancel_sent:
            return
        self._cancel_sent = True
        invite = self.invite
        headers = Headers()
        headers.add("Via", invite.headers.raw_values("Via")[0])  # 9.1: the INVITE's top Via, same branch
        for route in invite.headers.get_all("Route"):
            headers.add("Route", route)
        headers.add("Max-Forwards", "70")
        for name in ("From", "To", "Call-ID"):
            headers.add(name, invite.headers.get(name) or "")
        headers.add("CSeq", f"{invite.cseq.seq} CANCEL")
        if self.dialog.user_agent:
            headers.add("User-Agent", self.dialog.user_agent)
        request = Request(method="CANCEL", uri=invite.uri, headers=headers)
        self.core.send_request(request, self.source, now, lambda _r: None, keep_via=True)
        # 9.1: no final response to the INVITE within 64*T1 of the CANCEL: consider it ended.
        self._cancel_guard = self.core.timers.schedule(
            now + 64 * self.core.values.t1,
            lambda t: self._fail(408, "Request Timeout (no final response after CANCEL)", t), "cancel")

    def hangup(self, now: float) -> None:
        """End the call from our side: CANCEL while it rings, BYE once answered."""
        if self.state is CallState.EARLY:
            self.cancel(now)
        elif self.state is not CallState.ENDED:
            self._unacked = None
            self._send_bye(now)
            self._end("local", now)

    def _fail(self, status: int, reason: str, now: float) -> None:
        if self.state is not CallState.EARLY or self._failed:
            return
        self._failed = True
        self.status = status
        self.state = CallState.ENDED
        if self._cancel_guard is not None:
            self._cancel_guard.cancel()
        core = self.core
        # Stay findable for 64*T1: a late 2xx still gets its ACK and BYE.
        core.timers.schedule(now + 64 * core.values.t1, lambda _t: core.forget_call(self), "forget")
        core.emit(ev.OutboundFailed(call=self, status=status, reason=reason))
