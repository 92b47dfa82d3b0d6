"""RFC 3261 section 17 transactions, sans-IO.

Rules this module keeps:
- A server transaction is keyed by (branch, sent-by, method) when the branch has the
  RFC 3261 magic cookie (17.2.3); ACK maps to the INVITE it acknowledges, CANCEL has
  its own transaction. RFC 2543 requests (no cookie) are keyed by the fields 17.2.3
  lists for them.
- INVITE server transactions follow RFC 6026: after a 2xx they enter Accepted and
  absorb retransmitted INVITEs for 64*T1; retransmitting the 2xx itself is the dialog
  layer's job (13.3.1.4), not the transaction's.
- Timers are deadlines in a shared TimerHeap; nothing here sleeps or does I/O.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from voice.sip.message import Headers, Request, Response
from voice.sip.timers import Timer, TimerHeap

MAGIC_COOKIE = "z9hG4bK"

Send = Callable[[bytes, "Address"], None]


@dataclass(frozen=True)
class Address:
    """Where a message came from or goes to. `conn` names a TCP connection when known."""

    host: str
    port: int
    transport: str = "udp"
    conn: int | None = None

    @property
    def reliable(self) -> bool:
        return self.transport != "udp"

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}/{self.transport}"


@dataclass(frozen=True)
class TimerValues:
    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0


TxKey = tuple[str, ...]


def server_key(request: Request, method: str | None = None) -> TxKey:
    """17.2.3: the key a request matches a server transaction by."""
    via = request.top_via
    sent_by = f"{via.host}:{via.port or 5060}"
    method = method or ("INVITE" if request.method == "ACK" else request.method)
    branch = via.branch or ""
    if branch.startswith(MAGIC_COOKIE):
        return ("3261", branch, sent_by, method)
    # RFC 2543 compatibility: Request-URI, tags, Call-ID, CSeq, top Via.
    to_tag = "" if request.method == "ACK" else (request.to.tag or "")
    return (
        "2543",
        request.uri,
        to_tag,
        request.from_.tag or "",
        request.call_id,
        str(request.cseq.seq),
        sent_by,
        method,
    )


def client_key(message: Request | Response) -> TxKey:
    """17.1.3: responses match client transactions by top Via branch and CSeq method."""
    return (message.top_via.branch or "", message.cseq.method)


class TxState(enum.Enum):
    TRYING = "trying"
    PROCEEDING = "proceeding"
    COMPLETED = "completed"
    CONFIRMED = "confirmed"
    ACCEPTED = "accepted"
    TERMINATED = "terminated"


class Transaction:
    def __init__(
        self,
        key: TxKey,
        peer: Address,
        timers: TimerHeap,
        send: Send,
        values: TimerValues,
        on_terminated: Callable[[Transaction], None],
    ) -> None:
        self.key = key
        self.peer = peer
        self.timers = timers
        self._send = send
        self.values = values
        self.state = TxState.TRYING
        self._on_terminated = on_terminated
        self._timers: dict[str, Timer] = {}

    def _start_timer(self, name: str, delay: float, now: float, callback: Callable[[float], None]) -> None:
        self._cancel_timer(name)
        self._timers[name] = self.timers.schedule(now + delay, callback, name)

    def _cancel_timer(self, name: str) -> None:
        timer = self._timers.pop(name, None)
        if timer is not None:
            timer.cancel()

    def _terminate(self, now: float = 0.0) -> None:
        if self.state is TxState.TERMINATED:
            return
        self.state = TxState.TERMINATED
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self._on_terminated(self)


class ServerTransaction(Transaction):
    """Common part of both server transactions: holds the request and the last response."""

    def __init__(self, request: Request, key: TxKey, peer: Address, timers: TimerHeap, send: Send,
                 values: TimerValues, on_terminated: Callable[[Transaction], None]) -> None:
        super().__init__(key, peer, timers, send, values, on_terminated)
        self.request = request
        self.last_response: Response | None = None
        self._last_bytes = b""
        self.response_peer = peer  # set by the core from the Via (18.2.2)

    def _transmit(self, response: Response) -> None:
        self.last_response = response
        self._last_bytes = response.serialize()
        self._send(self._last_bytes, self.response_peer)

    def _retransmit(self, now: float = 0.0) -> None:
        if self._last_bytes:
            self._send(self._last_bytes, self.response_peer)

    @property
    def final_sent(self) -> bool:
        return self.last_response is not None and self.last_response.status >= 200

    def receive_request(self, request: Request, now: float) -> bool:
        """Feed a request that matched this transaction; True if it was absorbed here."""
        raise NotImplementedError

    def respond(self, response: Response, now: float) -> None:
        raise NotImplementedError


class InviteServerTransaction(ServerTransaction):
    """17.2.1 with the RFC 6026 Accepted state."""

    owner: object = None  # the call this INVITE created (found again by its CANCEL)

    def __init__(self, request: Request, key: TxKey, peer: Address, timers: TimerHeap, send: Send,
                 values: TimerValues, on_terminated: Callable[[Transaction], None]) -> None:
        super().__init__(request, key, peer, timers, send, values, on_terminated)
        self.state = TxState.PROCEEDING

    def receive_request(self, request: Request, now: float) -> bool:
        if request.method == "INVITE":
            # 17.2.1: retransmissions get the last provisional or non-2xx final again.
            if self.state in (TxState.PROCEEDING, TxState.COMPLETED):
                self._retransmit()
            return True
        if request.method == "ACK" and self.state is TxState.COMPLETED:
            self.state = TxState.CONFIRMED
            self._cancel_timer("G")
            self._cancel_timer("H")
            # Timer I: absorb ACK retransmissions for T4 on unreliable transports.
            self._start_timer("I", 0 if self.peer.reliable else self.values.t4, now, self._terminate)
            return True
        return request.method == "ACK" and self.state is TxState.CONFIRMED

    def respond(self, response: Response, now: float) -> None:
        if self.state is not TxState.PROCEEDING:
            raise RuntimeError(f"INVITE transaction is {self.state.value}: cannot send {response.status}")
        self._transmit(response)
        if response.status < 200:
            return
        if response.status < 300:
            # RFC 6026 7.1: Accepted; Timer L absorbs INVITE retransmissions for 64*T1.
            self.state = TxState.ACCEPTED
            self._start_timer("L", 64 * self.values.t1, now, self._terminate)
            return
        self.state = TxState.COMPLETED
        if not self.peer.reliable:
            self._arm_g(self.values.t1, now)
        self._start_timer("H", 64 * self.values.t1, now, self._timer_h)

    def _arm_g(self, interval: float, now: float) -> None:
        def fire(t: float) -> None:
            self._retransmit()
            self._arm_g(min(2 * interval, self.values.t2), t)

        self._start_timer("G", interval, now, fire)

    def _timer_h(self, now: float) -> None:
        # 17.2.1: no ACK arrived for our final response; the call already ended when it was sent.
        self._terminate(now)


class NonInviteServerTransaction(ServerTransaction):
    """17.2.2."""

    def receive_request(self, request: Request, now: float) -> bool:
        if self.state in (TxState.PROCEEDING, TxState.COMPLETED):
            self._retransmit()
        return True

    def respond(self, response: Response, now: float) -> None:
        if self.state in (TxState.COMPLETED, TxState.TERMINATED):
            raise RuntimeError(f"transaction already completed; cannot send {response.status}")
        self._transmit(response)
        if response.status < 200:
            self.state = TxState.PROCEEDING
            return
        self.state = TxState.COMPLETED
        self._start_timer("J", 0 if self.peer.reliable else 64 * self.values.t1, now, self._terminate)


ResponseHandler = Callable[[Response | None], None]


class NonInviteClientTransaction(Transaction):
    """17.1.2: requests we send (BYE, REGISTER, OPTIONS, REFER, NOTIFY).

    The handler gets every response (provisional ones too) and None on Timer F timeout.
    """

    def __init__(self, request: Request, peer: Address, timers: TimerHeap, send: Send, values: TimerValues,
                 on_terminated: Callable[[Transaction], None], handler: ResponseHandler) -> None:
        super().__init__(client_key(request), peer, timers, send, values, on_terminated)
        self.request = request
        self._bytes = request.serialize()
        self.handler = handler

    def start(self, now: float) -> None:
        self._send(self._bytes, self.peer)
        if not self.peer.reliable:
            self._arm_e(self.values.t1, now)
        self._start_timer("F", 64 * self.values.t1, now, self._timer_f)

    def _arm_e(self, interval: float, now: float) -> None:
        def fire(t: float) -> None:
            self._send(self._bytes, self.peer)
            nxt = self.values.t2 if self.state is TxState.PROCEEDING else min(2 * interval, self.values.t2)
            self._arm_e(nxt, t)

        self._start_timer("E", interval, now, fire)

    def _timer_f(self, now: float) -> None:
        self._terminate(now)
        self.handler(None)

    def receive_response(self, response: Response, now: float) -> None:
        if self.state in (TxState.COMPLETED, TxState.TERMINATED):
            return  # retransmitted final response: absorbed (17.1.2.2)
        if response.status < 200:
            self.state = TxState.PROCEEDING
            self.handler(response)
            return
        self.state = TxState.COMPLETED
        self._cancel_timer("E")
        self._cancel_timer("F")
        self._start_timer("K", 0 if self.peer.reliable else self.values.t4, now, self._terminate)
        self.handler(response)


class InviteClientTransaction(Transaction):
    """17.1.1 with the RFC 6026 Accepted state: an INVITE we send.

    Timer A retransmits the INVITE (unreliable transports, doubling from T1); Timer B
    (64*T1) gives up while nothing at all came back. A non-2xx final response is ACKed
    here (17.1.1.3) and its retransmissions re-ACKed until Timer D. Every 2xx, the
    first, its retransmissions and forked ones alike, goes up to the handler for 64*T1
    (Timer M, RFC 6026 8.4): the ACK for a 2xx belongs to the dialog (13.2.2.4).
    The handler gets None when Timer B fires.
    """

    def __init__(self, request: Request, peer: Address, timers: TimerHeap, send: Send, values: TimerValues,
                 on_terminated: Callable[[Transaction], None], handler: ResponseHandler) -> None:
        super().__init__(client_key(request), peer, timers, send, values, on_terminated)
        self.request = request
        self._bytes = request.serialize()
        self.handler = handler
        self._ack = b""

    def start(self, now: float) -> None:
        self._send(self._bytes, self.peer)
        if not self.peer.reliable:
            self._arm_a(self.values.t1, now)
        self._start_timer("B", 64 * self.values.t1, now, self._timer_b)

    def _arm_a(self, interval: float, now: float) -> None:
        def fire(t: float) -> None:
            if self.state is TxState.TRYING:  # "Calling": retransmit, doubling without a cap
                self._send(self._bytes, self.peer)
                self._arm_a(2 * interval, t)

        self._start_timer("A", interval, now, fire)

    def _timer_b(self, now: float) -> None:
        if self.state is TxState.TRYING:
            self._terminate(now)
            self.handler(None)

    def receive_response(self, response: Response, now: float) -> None:
        status = response.status
        if self.state in (TxState.TRYING, TxState.PROCEEDING):
            self._cancel_timer("A")
            if status < 200:
                # 17.1.1.2: Proceeding; Timer B only guards the Calling state.
                self.state = TxState.PROCEEDING
                self._cancel_timer("B")
            elif status < 300:
                self.state = TxState.ACCEPTED
                self._cancel_timer("B")
                self._start_timer("M", 64 * self.values.t1, now, self._terminate)
            else:
                self.state = TxState.COMPLETED
                self._cancel_timer("B")
                self._ack = self._non_2xx_ack(response).serialize()
                self._send(self._ack, self.peer)
                self._start_timer("D", 0 if self.peer.reliable else 64 * self.values.t1, now, self._terminate)
            self.handler(response)
        elif self.state is TxState.ACCEPTED and 200 <= status < 300:
            self.handler(response)  # retransmitted or forked 2xx: the dialog ACKs it
        elif self.state is TxState.COMPLETED and status >= 300:
            self._send(self._ack, self.peer)  # 17.1.1.2: retransmitted final response, ACK again

    def _non_2xx_ack(self, response: Response) -> Request:
        """17.1.1.3: same Request-URI, Call-ID, From, top Via and CSeq number; the response's To."""
        invite = self.request
        headers = Headers()
        headers.add("Via", invite.headers.raw_values("Via")[0])
        for route in invite.headers.get_all("Route"):
            headers.add("Route", route)
        headers.add("Max-Forwards", "70")
        headers.add("From", invite.headers.get("From") or "")
        headers.add("To", response.headers.get("To") or "")
        headers.add("Call-ID", invite.call_id)
        headers.add("CSeq", f"{invite.cseq.seq} ACK")
        return Request(method="ACK", uri=invite.uri, headers=headers)
