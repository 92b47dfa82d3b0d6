"""The SIP user agent core (UAS for inbound calls, UAC for in-dialog and registration
requests), sans-IO.

Bytes and the time go in (`receive`, `handle_timer`); events and datagrams to send
come out (`events()`, `outgoing()`); `get_timer()` says when to call back. The
application answers calls with `answer()`/`reject()` and ends them with `hangup()`.

Checks follow RFC 3261 section 8.2 in its order: method (405), URI scheme (416),
Require (420), Content-Type/Encoding (415), then the dialog (481) and call policy.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from voice.sip import events as ev
from voice.sip.dialog import ALLOW, Dialog
from voice.sip.message import (
    Headers,
    Request,
    Response,
    SipParseError,
    make_response,
    new_branch,
    new_tag,
    parse_message,
)
from voice.sip.outbound import OutboundCall
from voice.sip.security import security_event
from voice.sip.session import CallState, DialogCall, InboundCall
from voice.sip.throttle import SourceThrottle, Verdict
from voice.sip.timers import Timer, TimerHeap
from voice.sip.transaction import (
    Address,
    InviteClientTransaction,
    InviteServerTransaction,
    NonInviteClientTransaction,
    NonInviteServerTransaction,
    ServerTransaction,
    TimerValues,
    Transaction,
    TxKey,
    client_key,
    server_key,
)

if TYPE_CHECKING:
    from voice.sip.digest import DigestVerifier

SUPPORTED_EXTENSIONS: frozenset[str] = frozenset({"replaces", "norefersub"})
ACCEPT = "application/sdp, application/dtmf-relay, message/sipfrag"
ACCEPTED_TYPES = frozenset({"application/sdp", "application/dtmf-relay", "message/sipfrag"})
KNOWN_METHODS = frozenset({"INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "INFO", "REFER", "NOTIFY"})
NETWORK = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(kw_only=True)
class CallPolicy:
    """Who may place calls (section "trusted" of the config) and how others authenticate."""

    trusted: Sequence[NETWORK] = ()
    verifier: DigestVerifier | None = None
    max_calls: int = 1000
    # Asked before each new call: False when no media port (or other resource) is left, so the
    # INVITE gets 503 before any provisional response instead of ringing first.
    has_capacity: Callable[[], bool] | None = None
    retry_after: int = 5  # seconds, in the Retry-After of a 503 for a full service
    throttle: SourceThrottle = field(default_factory=SourceThrottle)  # per-source limits ([throttle])

    def is_trusted(self, host: str) -> bool:
        try:
            ip = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in net for net in self.trusted if ip.version == net.version)


@dataclass(kw_only=True)
class LocalIdentity:
    host: str  # address written in Via/Contact
    port: int
    user: str = "voice"
    user_agent: str = "voice/0.1"

    def contact(self, transport: str) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        param = ";transport=tcp" if transport == "tcp" else ""
        return f"<sip:{self.user}@{host}:{self.port}{param}>"

    def sent_by(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


class SipCore:
    RING_TIMEOUT = 180.0  # seconds an inbound call may stay unanswered
    MAX_SERVER_TRANSACTIONS = 10000  # past this, out-of-dialog OPTIONS are answered statelessly

    def __init__(self, identity: LocalIdentity, policy: CallPolicy | None = None,
                 timers: TimerValues | None = None) -> None:
        self.identity = identity
        self.policy = policy or CallPolicy()
        self.values = timers or TimerValues()
        self.timers = TimerHeap()
        self._out: list[tuple[bytes, Address]] = []
        self._events: list[ev.Event] = []
        self._server_tx: dict[TxKey, ServerTransaction] = {}
        self._client_tx: dict[TxKey, NonInviteClientTransaction | InviteClientTransaction] = {}
        # Calls by (Call-ID, local tag): inbound ones from their INVITE, outbound ones (our From tag) too.
        self.calls: dict[tuple[str, str], DialogCall] = {}
        self._ring_timers: dict[tuple[str, str], Timer] = {}
        self.stats = {"received": 0, "parse_errors": 0, "sent": 0, "throttled": 0, "shed": 0,
                      "auth_failed": 0}
        self.now = 0.0  # time of the latest receive() or handle_timer()

    # ---- adapter surface --------------------------------------------------
    def outgoing(self) -> list[tuple[bytes, Address]]:
        out, self._out = self._out, []
        return out

    def events(self) -> list[ev.Event]:
        out, self._events = self._events, []
        return out

    def has_pending(self) -> bool:
        """Output or events queued since the last outgoing()/events()."""
        return bool(self._out or self._events)

    def get_timer(self) -> float | None:
        return self.timers.next_deadline()

    def handle_timer(self, now: float) -> None:
        self.now = now
        self.timers.fire(now)

    def send(self, data: bytes, peer: Address) -> None:
        self.stats["sent"] += 1
        self._out.append((data, peer))

    def receive(self, data: bytes, source: Address, now: float) -> None:
        """Feed one datagram (UDP) or one framed message (TCP)."""
        self.stats["received"] += 1
        self.now = now
        if not data.strip(b"\r\n"):
            return  # keepalive (RFC 5626 4.4.1)
        if data[:7] == b"INVITE " and self.policy.throttle.shed(source.host, now):
            self.stats["shed"] += 1  # a refused source over its answers for this second: not even parsed
            return
        try:
            message = parse_message(data)
        except SipParseError as exc:
            self._parse_error(exc, source)
            return
        self.receive_message(message, source, now)

    def receive_message(self, message: Request | Response | SipParseError, source: Address,
                        now: float) -> None:
        self.now = now
        if isinstance(message, SipParseError):
            self._parse_error(message, source)
        elif isinstance(message, Response):
            self._receive_response(message, now)
        else:
            try:
                self._receive_request(message, source, now)
            except SipParseError as exc:  # a header we needed turned out malformed
                exc.request = exc.request or message
                self._parse_error(exc, source)

    # ---- errors ------------------------------------------------------------
    def _parse_error(self, exc: SipParseError, source: Address) -> None:
        """RFC 3261 16.3/RFC 4475 3.1.2: answer bad requests 400 when we can; drop bad responses."""
        self.stats["parse_errors"] += 1
        request = exc.request
        if request is None or request.method == "ACK":
            return
        try:
            self._stamp_via(request, source)
            response = make_response(request, 400, f"Bad Request ({exc.reason})"[:120])
            self.send(response.serialize(), self.response_address(request, source))
        except (SipParseError, ValueError, IndexError, KeyError, AttributeError):
            return  # not even enough to answer: drop silently

    # ---- requests -----------------------------------------------------------
    def _stamp_via(self, request: Request, source: Address) -> None:
        """18.2.1 and RFC 3581: note where the request really came from."""
        vias = request.headers.get_all("Via")
        if not vias:
            return
        via = request.top_via
        if via.host.strip("[]") != source.host or "rport" in via.params:
            via.params["received"] = source.host
        if "rport" in via.params:
            via.params["rport"] = str(source.port)
        rest = vias[1:]
        request.headers.remove("Via")
        request.headers.add("Via", str(via))
        for v in rest:
            request.headers.add("Via", v)

    def response_address(self, request: Request, source: Address) -> Address:
        """18.2.2: reliable transports answer on the connection; UDP goes to received/rport."""
        if source.reliable:
            return source
        via = request.top_via
        host = via.received or via.host
        port = via.rport or via.port or 5060
        return Address(host, port, "udp")

    def respond(self, tx: ServerTransaction, status: int, reason: str | None = None, *, now: float,
                to_tag: str | None = None, headers: Sequence[tuple[str, str]] = (), body: bytes = b"",
                content_type: str | None = None) -> Response:
        extra = [("Server", self.identity.user_agent), *headers]
        response = make_response(tx.request, status, reason, to_tag=to_tag, headers=extra, body=body,
                                 content_type=content_type)
        tx.respond(response, now)
        return response

    def _new_server_tx(self, request: Request, source: Address, key: TxKey) -> ServerTransaction:
        cls = InviteServerTransaction if request.method == "INVITE" else NonInviteServerTransaction
        tx = cls(request, key, source, self.timers, self.send, self.values, self._forget_server_tx)
        tx.response_peer = self.response_address(request, source)
        self._server_tx[key] = tx
        return tx

    def _forget_server_tx(self, tx: Transaction) -> None:
        if self._server_tx.get(tx.key) is tx:
            del self._server_tx[tx.key]

    def _receive_request(self, request: Request, source: Address, now: float) -> None:
        self._stamp_via(request, source)
        if request.version != "SIP/2.0":
            self._reply_stateless(request, source, 505, "Version Not Supported")
            return
        key = server_key(request)
        existing = self._server_tx.get(key)
        if existing is not None and request.method != "CANCEL":
            if isinstance(existing, InviteServerTransaction):
                # An ACK for a 2xx that reuses the INVITE's branch is not the transaction's (17.2.3).
                if existing.receive_request(request, now):
                    return
            elif request.method != "ACK":
                existing.receive_request(request, now)
                return
        if request.method == "ACK":
            self._receive_ack(request, now)
            return
        if request.method == "CANCEL":
            self._receive_cancel(request, source, now)
            return
        if request.method == "INVITE" and not request.to.tag and self._refused_source(request, source, now):
            return
        rejection = self._uas_checks(request)
        if (rejection is None and request.method == "OPTIONS" and not request.to.tag
                and len(self._server_tx) >= self.MAX_SERVER_TRANSACTIONS):
            # An OPTIONS flood must not grow the transaction table (each lives 64*T1): past the
            # bound, OPTIONS are answered statelessly (8.2.7), so monitoring still gets its 200.
            self._reply_stateless(request, source, 200, "OK", self.capabilities())
            return
        if rejection is None and request.method == "INVITE" and not request.to.tag:
            refusal = self._invite_refusal(request, source, now)
            if refusal is not None:
                # Refused before any call exists, statelessly (as Kamailio's sl_send_reply): a
                # retransmitted INVITE gets a new answer, and a flood of them leaves no state behind.
                self._reply_stateless(request, source, *refusal)
                return
        tx = self._new_server_tx(request, source, key)
        if rejection is not None:
            status, reason, headers = rejection
            self.respond(tx, status, reason, now=now, headers=headers)
            return
        if request.to.tag:
            self._in_dialog(request, tx, now)
            return
        if request.method == "INVITE":
            self._new_invite(request, tx, source, now)
        elif request.method == "OPTIONS":
            self.respond(tx, 200, now=now, headers=self.capabilities())
        elif request.method == "BYE":
            self.respond(tx, 481, "Call/Transaction Does Not Exist", now=now)
        else:
            # INFO/REFER/NOTIFY outside a dialog have nothing to act on.
            self.respond(tx, 481, "Call/Transaction Does Not Exist", now=now)

    def capabilities(self) -> list[tuple[str, str]]:
        return [("Allow", ALLOW), ("Accept", ACCEPT), ("Accept-Encoding", "identity"),
                ("Accept-Language", "en"), ("Supported", ", ".join(sorted(SUPPORTED_EXTENSIONS)))]

    def _reply_stateless(self, request: Request, source: Address, status: int, reason: str,
                         headers: Sequence[tuple[str, str]] = ()) -> None:
        if request.method == "ACK":
            return
        response = make_response(request, status, reason, to_tag=new_tag(),
                                 headers=[("Server", self.identity.user_agent), *headers])
        self.send(response.serialize(), self.response_address(request, source))

    # ---- throttling (voice/sip/throttle.py) ---------------------------------------
    def _refused_source(self, request: Request, source: Address, now: float) -> bool:
        """A new INVITE from a flooding or blocked source is answered statelessly, before any
        transaction or call state exists, so a flood costs no memory (Kamailio pike + sl_send_reply)."""
        decision = self.policy.throttle.check_invite(source.host, now)
        if decision.verdict is Verdict.ALLOW:
            return False
        self.stats["throttled"] += 1
        if decision.verdict is Verdict.FLOOD:
            if decision.started:
                security_event("blocked", source.host, reason="invite_flood", seconds=decision.retry_after)
            self._reply_stateless(request, source, 503, "Service Unavailable (too many calls)",
                                  [("Retry-After", str(decision.retry_after))])
        else:
            self._reply_stateless(request, source, 403, "Forbidden")
        return True

    def _failed(self, source: Address, now: float) -> None:
        """Count a failed authentication or refused untrusted call against its source."""
        throttle = self.policy.throttle
        if throttle.failed(source.host, now):
            security_event("blocked", source.host, reason="auth_failures",
                           seconds=_seconds(throttle.settings.block_time))

    def _uas_checks(self, request: Request) -> tuple[int, str, list[tuple[str, str]]] | None:
        """8.2.1-8.2.3, in the RFC's order."""
        if request.method not in KNOWN_METHODS:
            return 405, "Method Not Allowed", [("Allow", ALLOW)]
        if request.request_uri.scheme not in ("sip", "sips", "tel"):
            return 416, "Unsupported URI Scheme", []
        # Max-Forwards: 0 is a proxy's concern; an endpoint processes the request (RFC 4475 3.3.15).
        required = [r.strip() for r in request.headers.get_all("Require") if r.strip()]
        unsupported = [r for r in required if r.lower() not in SUPPORTED_EXTENSIONS]
        if unsupported and request.method not in ("CANCEL", "ACK"):
            return 420, "Bad Extension", [("Unsupported", ", ".join(unsupported))]
        if request.body:
            ctype = (request.content_type or "").split(";")[0].strip().lower()
            encoding = (request.headers.get("Content-Encoding") or "identity").strip().lower()
            if ctype not in ACCEPTED_TYPES or encoding not in ("identity", ""):
                return 415, "Unsupported Media Type", [("Accept", ACCEPT), ("Accept-Encoding", "identity")]
        accept = request.headers.get_all("Accept")
        if request.method == "INVITE" and accept and not any(
            a.split(";")[0].strip().lower() in ("application/sdp", "application/*", "*/*") for a in accept
        ):
            # RFC 4475 sdp01: we can only answer with SDP.
            return 406, "Not Acceptable", [("Accept", ACCEPT)]
        return None

    # ---- initial INVITE -------------------------------------------------------
    def _invite_refusal(self, request: Request, source: Address,
                        now: float) -> tuple[int, str, list[tuple[str, str]]] | None:
        """Policy (trust or digest), then capacity: the refusal of a new INVITE, if any. It is the
        first and only response, never preceded by a provisional one."""
        policy = self.policy
        if not policy.is_trusted(source.host):
            if policy.verifier is None:
                security_event("untrusted_call", source.host, to=request.request_uri.user or "")
                self._failed(source, now)
                return 403, "Forbidden (not a trusted source)", []
            auth = request.headers.get("Authorization")
            verifier = policy.verifier
            user = verifier.verify(auth, method="INVITE", now=now, uri=request.uri) if auth else None
            if user is None:
                stale = bool(auth) and verifier.last_stale
                if auth and not stale:
                    self.stats["auth_failed"] += 1
                    security_event("auth_failed", source.host, user=_auth_user(auth),
                                   reason=verifier.last_reason)
                    self._failed(source, now)
                return 401, "Unauthorized", [("WWW-Authenticate", c) for c in verifier.challenges(now, stale)]
            policy.throttle.succeeded(source.host)
        full = self.active_calls() >= policy.max_calls
        if full or (policy.has_capacity is not None and not policy.has_capacity()):
            reason = "Service Unavailable (no call slot)" if full else "Service Unavailable (no media port)"
            return 503, reason, [("Retry-After", str(policy.retry_after))]
        return None

    def _new_invite(self, request: Request, tx: ServerTransaction, source: Address, now: float) -> None:
        assert isinstance(tx, InviteServerTransaction)
        self.respond(tx, 100, "Trying", now=now)
        local_tag = new_tag()
        dialog = Dialog.from_invite(request, local_tag=local_tag, peer=source,
                                    contact=self.identity.contact(source.transport),
                                    user_agent=self.identity.user_agent)
        call = InboundCall(self, request, tx, dialog, source)
        tx.owner = call
        self.calls[(request.call_id, local_tag)] = call
        # A call the application never answers or rejects must not ring forever (a PBX's no-answer
        # timeout): after RING_TIMEOUT it gets 480 and its state goes away.
        self._ring_timers[(request.call_id, local_tag)] = self.timers.schedule(
            now + self.RING_TIMEOUT,
            lambda t: call.reject(480, "Temporarily Unavailable (not answered)", t), "ring")
        self._events.append(ev.IncomingCall(call=call))

    def forget_call(self, call: DialogCall) -> None:
        key = (call.dialog.call_id, call.dialog.local_tag)
        self.calls.pop(key, None)
        ring = self._ring_timers.pop(key, None)
        if ring is not None:
            ring.cancel()  # an ended call must not stay referenced for the rest of RING_TIMEOUT

    def emit(self, event: ev.Event) -> None:
        self._events.append(event)

    # ---- CANCEL / ACK -----------------------------------------------------------
    def _receive_cancel(self, request: Request, source: Address, now: float) -> None:
        """9.2: CANCEL matches the INVITE's transaction; answer 200, then 487 the INVITE."""
        tx = self._new_server_tx(request, source, server_key(request))
        invite_tx = self._server_tx.get(server_key(request, "INVITE"))
        if not isinstance(invite_tx, InviteServerTransaction):
            self.respond(tx, 481, "Call/Transaction Does Not Exist", now=now)
            return
        call = invite_tx.owner if isinstance(invite_tx.owner, InboundCall) else None
        self.respond(tx, 200, now=now, to_tag=call.dialog.local_tag if call else None)
        if call is not None:
            call.cancelled(now)
        elif not invite_tx.final_sent:
            self.respond(invite_tx, 487, "Request Terminated", now=now)

    def _receive_ack(self, request: Request, now: float) -> None:
        """An ACK matching no transaction acknowledges a 2xx (13.3.1.4): give it to its call."""
        call = self.calls.get((request.call_id, request.to.tag or ""))
        if call is None:
            # Lenient match for UAs that put a wrong To tag in the ACK (pyVoIP 1.6.8 makes up a new
            # one): the same Call-ID, From tag and CSeq as a 2xx still waiting for its ACK.
            call = next((c for c in self.calls.values()
                         if c.dialog.call_id == request.call_id
                         and c.dialog.remote_tag == (request.from_.tag or "")
                         and c.awaiting_ack(request.cseq.seq)), None)
        if call is not None:
            call.ack_received(request, now)

    # ---- within a dialog -------------------------------------------------------
    def _in_dialog(self, request: Request, tx: ServerTransaction, now: float) -> None:
        call = self.calls.get((request.call_id, request.to.tag or ""))
        remote_tag = request.from_.tag or ""
        if call is None or call.state is CallState.ENDED or call.dialog.remote_tag != remote_tag:
            # 12.2.2: no dialog matches.
            self.respond(tx, 481, "Call/Transaction Does Not Exist", now=now)
            return
        if not call.dialog.accept_remote_cseq(request):
            self.respond(tx, 500, "Server Internal Error (CSeq out of order)", now=now)
            return
        call.in_dialog_request(request, tx, now)

    # ---- client side -----------------------------------------------------------
    def add_via(self, request: Request, peer: Address, branch: str | None = None) -> None:
        """8.1.1.7 and 18.1.1 (RFC 3581 rport): our Via on top, a fresh branch unless given."""
        request.headers.remove("Via")
        transport = "TCP" if peer.reliable else "UDP"
        via = f"SIP/2.0/{transport} {self.identity.sent_by()};branch={branch or new_branch()};rport"
        old = request.headers.items()
        request.headers = Headers()
        request.headers.add("Via", via)
        for name, value in old:
            request.headers.add(name, value)

    def send_request(self, request: Request, peer: Address, now: float,
                     handler: Callable[[Response | None], None], *,
                     keep_via: bool = False) -> NonInviteClientTransaction:
        """Send a non-INVITE request in a new client transaction (8.1.1.7 Via, 18.1.1 rport).

        `keep_via`: the request already carries its Via (a CANCEL copies the INVITE's, 9.1)."""
        if not keep_via:
            self.add_via(request, peer)
        tx = NonInviteClientTransaction(request, peer, self.timers, self.send, self.values,
                                        self._forget_client_tx, handler)
        self._client_tx[tx.key] = tx
        tx.start(now)
        return tx

    def send_invite(self, request: Request, peer: Address, now: float,
                    handler: Callable[[Response | None], None]) -> InviteClientTransaction:
        """Send an INVITE in a new client transaction (17.1.1)."""
        self.add_via(request, peer)
        tx = InviteClientTransaction(request, peer, self.timers, self.send, self.values,
                                     self._forget_client_tx, handler)
        self._client_tx[tx.key] = tx
        tx.start(now)
        return tx

    def invite(self, target_uri: str, *, from_user: str, sdp_offer: bytes, peer: Address | None = None,
               now: float, from_display: str | None = None,
               extra_headers: Sequence[tuple[str, str]] = (),
               credentials: tuple[str, str] | None = None) -> OutboundCall:
        """Place a call (UAC, 13.2.1): the INVITE leaves now; progress comes as Outbound* events.

        `peer` is the next hop (default: the target URI's host and port); `credentials`
        (username, password) answer a 401/407 challenge once."""
        call = OutboundCall(self, target_uri, from_user=from_user, from_display=from_display,
                            sdp_offer=sdp_offer, peer=peer, extra_headers=extra_headers,
                            credentials=credentials)
        self.calls[(call.call_id, call.dialog.local_tag)] = call
        call.start(now)
        return call

    def _forget_client_tx(self, tx: Transaction) -> None:
        if self._client_tx.get(tx.key) is tx:
            del self._client_tx[tx.key]

    def _receive_response(self, response: Response, now: float) -> None:
        if not 100 <= response.status <= 699:
            return
        try:
            key = client_key(response)
        except (SipParseError, ValueError, IndexError):
            return
        tx = self._client_tx.get(key)
        if tx is not None:
            tx.receive_response(response, now)
            return
        if response.cseq.method == "INVITE" and 200 <= response.status < 300:
            # 13.2.2.4: a 2xx retransmitted after its transaction ended still wants our ACK.
            call = self.calls.get((response.call_id, response.from_.tag or ""))
            if isinstance(call, OutboundCall):
                call.late_2xx(response, now)

    def active_calls(self) -> int:
        return sum(1 for c in self.calls.values() if c.state is not CallState.ENDED)


def _auth_user(header: str) -> str:
    """The username an Authorization header claims, for the security log ("-" when none)."""
    from voice.sip.digest import DigestError, parse_auth_params

    try:
        return parse_auth_params(header)[1].get("username", "-")
    except DigestError:
        return "-"


def _seconds(value: float) -> int:
    return int(value) if value == int(value) else int(value) + 1
