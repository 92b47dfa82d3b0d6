"""Calls we place (UAC), in memory: a scripted UAS answers, the clock is moved, never slept."""

from __future__ import annotations

from tests.sipfake import SDP_OFFER, make_core
from voice.sip import events as ev
from voice.sip.core import SipCore
from voice.sip.digest import DigestVerifier
from voice.sip.message import Request, Response, make_response, parse_message
from voice.sip.outbound import OutboundCall
from voice.sip.session import CallState
from voice.sip.transaction import Address

AGENT = Address("127.0.0.1", 5080, "udp")
ANSWER = (b"v=0\r\no=- 7 7 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
          b"m=audio 41000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n")


class Uas:
    """The agent's phone: reads what the core sent, answers with crafted responses."""

    def __init__(self, core: SipCore, addr: Address = AGENT) -> None:
        self.core, self.addr, self.now = core, addr, 0.0
        self.tag = "uas1"

    def sent(self) -> list[tuple[Request | Response, Address]]:
        return [(parse_message(data), addr) for data, addr in self.core.outgoing()]

    def requests(self, method: str | None = None) -> list[Request]:
        return [m for m, _ in self.sent() if isinstance(m, Request) and method in (None, m.method)]

    def reply(self, request: Request, status: int, *, tag: str | None = "uas1", body: bytes = b"",
              headers: tuple[tuple[str, str], ...] = ()) -> Response:
        extra = [("Contact", f"<sip:agent@{self.addr.host}:{self.addr.port}>"), *headers]
        response = make_response(request, status, to_tag=tag, headers=extra, body=body,
                                 content_type="application/sdp" if body else None)
        self.send(response)
        return response

    def send(self, message: Request | Response | str) -> None:
        data = message.encode() if isinstance(message, str) else message.serialize()
        self.core.receive(data, self.addr, self.now)

    def advance(self, seconds: float) -> None:
        end = self.now + seconds
        while (deadline := self.core.get_timer()) is not None and deadline <= end:
            self.now = max(self.now, deadline)
            self.core.handle_timer(self.now)
        self.now = end

    def request_in_dialog(self, method: str, ok: Response, cseq: int, body: bytes = b"") -> str:
        """A request from the agent inside the dialog (From/To swapped)."""
        ctype = "Content-Type: application/sdp\r\n" if body else ""
        return (
            f"{method} sip:voice@127.0.0.1:5060 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {self.addr.host}:{self.addr.port};branch=z9hG4bKuas{cseq}{method};rport\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:agent@127.0.0.1>;tag={ok.to.tag}\r\n"
            f"To: {ok.headers.get('From')}\r\nCall-ID: {ok.call_id}\r\nCSeq: {cseq} {method}\r\n"
            f"Contact: <sip:agent@{self.addr.host}:{self.addr.port}>\r\n{ctype}"
            f"Content-Length: {len(body)}\r\n\r\n"
        ) + body.decode()


def place(core: SipCore, **kw: object) -> tuple[OutboundCall, Uas, Request]:
    call = core.invite("sip:agent@127.0.0.1:5080", from_user="+15550100", from_display="Alice",
                       sdp_offer=SDP_OFFER.encode(), now=0.0, **kw)  # type: ignore[arg-type]
    uas = Uas(core)
    (invite,) = uas.requests("INVITE")
    return call, uas, invite


def answer(core: SipCore) -> tuple[OutboundCall, Uas, Request, Response]:
    call, uas, invite = place(core)
    uas.reply(invite, 100, tag=None)
    uas.reply(invite, 180)
    ok = uas.reply(invite, 200, body=ANSWER)
    return call, uas, invite, ok


def test_invite_ringing_answer_ack() -> None:
    core = make_core()
    call, uas, invite = place(core)
    assert invite.uri == "sip:agent@127.0.0.1:5080" and invite.body == SDP_OFFER.encode()
    assert invite.from_.display == "Alice" and invite.from_.uri.user == "+15550100" and invite.from_.tag
    assert invite.to.tag is None and invite.cseq.method == "INVITE" and invite.top_via.branch
    assert invite.headers.get("Content-Type") == "application/sdp" and invite.headers.get("Contact")
    uas.reply(invite, 100, tag=None)
    assert core.events() == []
    uas.reply(invite, 180)
    uas.reply(invite, 180)  # retransmitted 180: one event
    (ringing,) = core.events()
    assert isinstance(ringing, ev.OutboundRinging) and ringing.status == 180 and ringing.call is call
    ok = uas.reply(invite, 200, body=ANSWER)
    (answered,) = core.events()
    assert isinstance(answered, ev.OutboundAnswered) and answered.body == ANSWER
    assert call.state is CallState.CONFIRMED and call.dialog.remote_tag == "uas1"
    assert call.dialog.remote_target == "sip:agent@127.0.0.1:5080"
    (ack,) = uas.requests()
    # 13.2.2.4: ACK for the 2xx: same CSeq number, the dialog's tags, a new branch, the remote target.
    assert ack.method == "ACK" and ack.cseq.seq == invite.cseq.seq and ack.to.tag == ok.to.tag
    assert ack.uri == "sip:agent@127.0.0.1:5080" and ack.top_via.branch != invite.top_via.branch


def test_invite_retransmitted_on_timer_a_then_timer_b_fails_408() -> None:
    core = make_core(t1=0.5)
    call, uas, _invite = place(core)
    times = []
    for _ in range(140):
        uas.advance(0.25)
        times += [uas.now for _ in uas.requests("INVITE")]
    # Timer A: T1, doubling without the T2 cap (17.1.1.2): 7 sends in all before Timer B at 64*T1 = 32 s.
    assert times == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    (failed,) = core.events()
    assert isinstance(failed, ev.OutboundFailed) and failed.status == 408 and call.state is CallState.ENDED


def test_provisional_stops_retransmissions_and_timer_b() -> None:
    core = make_core(t1=0.5)
    call, uas, invite = place(core)
    uas.reply(invite, 100, tag=None)
    uas.advance(60)
    assert uas.requests() == [] and core.events() == [] and call.state is CallState.EARLY


def test_2xx_retransmission_gets_the_same_ack_again() -> None:
    core = make_core()
    _call, uas, _invite, ok = answer(core)
    (ack,) = uas.requests("ACK")
    core.events()
    uas.send(ok)
    (again,) = uas.requests("ACK")
    assert again.serialize() == ack.serialize()
    uas.advance(40)  # the INVITE transaction ended (Timer M): the core still routes the 2xx to the call
    uas.send(ok)
    (late,) = uas.requests("ACK")
    assert late.serialize() == ack.serialize() and core.events() == []


def test_forked_second_2xx_is_acked_and_released() -> None:
    core = make_core()
    call, uas, invite, _ok = answer(core)
    uas.requests()
    core.events()
    uas.reply(invite, 200, tag="fork2", body=ANSWER)
    ack, bye = uas.requests()
    assert ack.method == "ACK" and ack.to.tag == "fork2" and ack.cseq.seq == invite.cseq.seq
    assert bye.method == "BYE" and bye.to.tag == "fork2" and bye.cseq.seq > invite.cseq.seq
    assert call.dialog.remote_tag == "uas1" and call.state is CallState.CONFIRMED and core.events() == []


def test_busy_is_acked_by_the_transaction_and_fails() -> None:
    core = make_core()
    _call, uas, invite = place(core)
    busy = uas.reply(invite, 486)
    (ack,) = uas.requests()
    # 17.1.1.3: same branch as the INVITE, the response's To tag.
    assert ack.method == "ACK" and ack.top_via.branch == invite.top_via.branch and ack.to.tag == "uas1"
    (failed,) = core.events()
    assert isinstance(failed, ev.OutboundFailed) and failed.status == 486
    uas.send(busy)  # retransmitted 486: ACKed again, no second event
    assert [r.method for r in uas.requests()] == ["ACK"] and core.events() == []


def test_cancel_waits_for_a_provisional_then_487() -> None:
    core = make_core()
    call, uas, invite = place(core)
    call.cancel(0.0)
    assert uas.requests() == []  # 9.1: no CANCEL before a provisional response
    uas.reply(invite, 180)
    (cancel,) = uas.requests()
    assert cancel.method == "CANCEL" and cancel.top_via.branch == invite.top_via.branch
    assert cancel.cseq.seq == invite.cseq.seq and cancel.uri == invite.uri and cancel.to.tag is None
    assert core.events() == []  # no ringing event once we gave up
    uas.reply(cancel, 200)
    uas.reply(invite, 487)
    assert [r.method for r in uas.requests()] == ["ACK"]
    (failed,) = core.events()
    assert isinstance(failed, ev.OutboundFailed) and failed.status == 487


def test_cancel_without_final_response_gives_up_after_64_t1() -> None:
    core = make_core(t1=0.5)
    call, uas, invite = place(core)
    uas.reply(invite, 180)
    core.events()
    call.hangup(0.0)  # ringing: hangup means CANCEL
    assert [r.method for r in uas.requests()] == ["CANCEL"]
    uas.advance(33)
    failed = [e for e in core.events() if isinstance(e, ev.OutboundFailed)]
    assert len(failed) == 1 and failed[0].status == 408


def test_answer_racing_the_cancel_is_acked_and_released() -> None:
    core = make_core()
    call, uas, invite = place(core)
    uas.reply(invite, 180)
    core.events()
    call.cancel(0.0)
    uas.requests()
    uas.reply(invite, 200, body=ANSWER)
    ack, bye = uas.requests()
    assert ack.method == "ACK" and bye.method == "BYE"
    (failed,) = core.events()
    assert isinstance(failed, ev.OutboundFailed) and failed.status == 487


def test_digest_challenge_answered_once() -> None:
    core = make_core()
    verifier = DigestVerifier("pbx", {"svc": "secret"})
    call = core.invite("sip:agent@127.0.0.1:5080", from_user="100", sdp_offer=b"", now=0.0,
                       credentials=("svc", "secret"))
    uas = Uas(core)
    (invite,) = uas.requests("INVITE")
    uas.reply(invite, 407, headers=(("Proxy-Authenticate", verifier.challenge(0.0)),))
    ack, invite2 = uas.requests()
    assert ack.method == "ACK" and invite2.method == "INVITE"
    # 22.2 / 8.1.3.5: same Call-ID and From tag, CSeq + 1, a new branch, credentials that verify.
    assert invite2.call_id == invite.call_id and invite2.from_.tag == invite.from_.tag
    assert invite2.cseq.seq == invite.cseq.seq + 1 and invite2.top_via.branch != invite.top_via.branch
    creds = invite2.headers.get("Proxy-Authorization")
    assert creds and verifier.verify(creds, method="INVITE", now=0.0) == "svc"
    uas.reply(invite2, 200, body=ANSWER)
    (ack2,) = uas.requests()
    assert ack2.cseq.seq == invite2.cseq.seq and ack2.headers.get("Proxy-Authorization") == creds
    assert isinstance(core.events()[-1], ev.OutboundAnswered) and call.state is CallState.CONFIRMED


def test_second_challenge_fails() -> None:
    core = make_core()
    verifier = DigestVerifier("pbx", {"svc": "secret"})
    core.invite("sip:agent@127.0.0.1:5080", from_user="100", sdp_offer=b"", now=0.0, credentials=("svc", "x"))
    uas = Uas(core)
    for _ in range(2):
        invite = uas.requests("INVITE")[0]
        uas.reply(invite, 401, headers=(("WWW-Authenticate", verifier.challenge(0.0)),))
    assert uas.requests("INVITE") == []
    (failed,) = core.events()
    assert isinstance(failed, ev.OutboundFailed) and failed.status == 401


def test_record_route_reversed_into_the_route_set() -> None:
    core = make_core()
    call, uas, invite = place(core)
    rr = (("Record-Route", "<sip:p2.example.net;lr>"), ("Record-Route", "<sip:127.0.0.1:5090;lr>"))
    uas.reply(invite, 200, body=ANSWER, headers=rr)
    (ack,) = [(m, a) for m, a in uas.sent() if isinstance(m, Request)]
    assert call.dialog.route_set == ["<sip:127.0.0.1:5090;lr>", "<sip:p2.example.net;lr>"]
    assert ack[0].headers.get_all("Route") == call.dialog.route_set
    assert ack[1] == Address("127.0.0.1", 5090, "udp")  # first route (12.2.1.1), not the Contact


def test_bye_from_the_agent_ends_the_call() -> None:
    core = make_core()
    call, uas, _invite, ok = answer(core)
    uas.requests()
    core.events()
    uas.send(uas.request_in_dialog("BYE", ok, 1))
    (resp,) = [m for m, _ in uas.sent()]
    assert isinstance(resp, Response) and resp.status == 200
    (ended,) = core.events()
    assert isinstance(ended, ev.CallEnded) and ended.call is call and ended.reason == "bye"


def test_hangup_sends_bye_in_the_dialog() -> None:
    core = make_core()
    call, uas, invite, _ok = answer(core)
    uas.requests()
    core.events()
    call.hangup(0.0)
    (bye,) = uas.requests()
    assert bye.method == "BYE" and bye.to.tag == "uas1" and bye.from_.tag == invite.from_.tag
    assert bye.cseq.seq == invite.cseq.seq + 1 and bye.call_id == invite.call_id
    (ended,) = core.events()
    assert isinstance(ended, ev.CallEnded) and ended.reason == "local"
    uas.reply(bye, 200)
    assert core.events() == []


def test_reinvite_from_the_agent_uses_the_shared_dialog_logic() -> None:
    core = make_core()
    call, uas, _invite, ok = answer(core)
    uas.requests()
    core.events()
    uas.send(uas.request_in_dialog("INVITE", ok, 5, body=ANSWER.replace(b"41000", b"41002")))
    (reinvite,) = core.events()
    assert isinstance(reinvite, ev.ReInvite) and reinvite.call is call and b"41002" in reinvite.offer
    call.answer_reinvite(b"v=0\r\n", uas.now)
    responses = [m for m, _ in uas.sent() if isinstance(m, Response)]
    assert [r.status for r in responses][-1] == 200
    uas.advance(0.6)
    assert [m.status for m, _ in uas.sent() if isinstance(m, Response)] == [200]  # retransmitted until ACK
    uas.send(uas.request_in_dialog("ACK", ok, 5))
    uas.advance(10)
    assert uas.sent() == []
    # out-of-order CSeq from the agent: 500 (12.2.2)
    uas.send(uas.request_in_dialog("INFO", ok, 4))
    assert [m.status for m, _ in uas.sent() if isinstance(m, Response)] == [500]


def test_tcp_agent_is_not_retransmitted() -> None:
    core = make_core()
    call = core.invite("sip:agent@127.0.0.1:5080;transport=tcp", from_user="100", sdp_offer=b"", now=0.0)
    uas = Uas(core, Address("127.0.0.1", 5080, "tcp"))
    (invite,) = uas.requests()
    assert invite.top_via.transport == "TCP"
    assert ";transport=tcp" in (invite.headers.get("Contact") or "")
    uas.advance(20)
    assert uas.requests() == [] and call.state is CallState.EARLY
