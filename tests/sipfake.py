"""A scripted SIP peer for in-memory tests of the SIP core: builds requests as text,
feeds them in, and reads what the core sent. The clock is a number the test moves."""

from __future__ import annotations

import itertools
import uuid

from voice.sip.core import CallPolicy, LocalIdentity, SipCore
from voice.sip.message import Request, Response, parse_message
from voice.sip.transaction import Address, TimerValues

SDP_OFFER = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 40000 RTP/AVP 8 0 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=sendrecv\r\n"
)

_branches = itertools.count(1)


class Peer:
    """The far end: a UAC at 127.0.0.1:5070 by default."""

    def __init__(self, core: SipCore, host: str = "127.0.0.1", port: int = 5070, transport: str = "udp"):
        self.core = core
        self.addr = Address(host, port, transport)
        self.call_id = f"{uuid.uuid4().hex}@test"
        self.tag = "peer" + uuid.uuid4().hex[:6]
        self.cseq = 0
        self.now = 0.0

    def request(self, method: str, *, to_tag: str | None = None, branch: str | None = None,
                body: str = "", cseq: int | None = None, cseq_method: str | None = None,
                extra: str = "", call_id: str | None = None, via_rport: bool = True) -> str:
        if cseq is None:
            self.cseq += 1
            cseq = self.cseq
        branch = branch or f"z9hG4bK{next(_branches)}x{uuid.uuid4().hex[:8]}"
        to = "<sip:100@127.0.0.1>" + (f";tag={to_tag}" if to_tag else "")
        transport = self.addr.transport.upper()
        rport = ";rport" if via_rport else ""
        text = (
            f"{method} sip:100@127.0.0.1:5060 SIP/2.0\r\n"
            f"Via: SIP/2.0/{transport} {self.addr.host}:{self.addr.port};branch={branch}{rport}\r\n"
            f"Max-Forwards: 70\r\n"
            f"From: \"Alice\" <sip:+15550100@127.0.0.1>;tag={self.tag}\r\n"
            f"To: {to}\r\n"
            f"Call-ID: {call_id or self.call_id}\r\n"
            f"CSeq: {cseq} {cseq_method or method}\r\n"
            f"Contact: <sip:alice@{self.addr.host}:{self.addr.port}>\r\n"
            f"{extra}"
        )
        if body:
            text += "Content-Type: application/sdp\r\n"
        text += f"Content-Length: {len(body.encode())}\r\n\r\n{body}"
        return text

    def send(self, text: str | bytes) -> None:
        data = text.encode() if isinstance(text, str) else text
        self.core.receive(data, self.addr, self.now)

    def advance(self, seconds: float) -> None:
        """Move the clock, firing every timer on the way in order."""
        end = self.now + seconds
        while True:
            deadline = self.core.get_timer()
            if deadline is None or deadline > end:
                break
            self.now = max(self.now, deadline)
            self.core.handle_timer(self.now)
        self.now = end

    def sent(self) -> list[tuple[Request | Response, Address]]:
        return [(parse_message(data), addr) for data, addr in self.core.outgoing()]

    def responses(self) -> list[Response]:
        return [m for m, _ in self.sent() if isinstance(m, Response)]


def make_core(*, t1: float = 0.5, policy: CallPolicy | None = None) -> SipCore:
    import ipaddress

    policy = policy or CallPolicy(trusted=[ipaddress.ip_network("127.0.0.0/8")])
    return SipCore(LocalIdentity(host="127.0.0.1", port=5060), policy, TimerValues(t1=t1, t2=4.0, t4=5.0))


def ack_for(peer: Peer, response: Response, *, cseq: int) -> str:
    return peer.request("ACK", to_tag=response.to.tag, cseq=cseq)
