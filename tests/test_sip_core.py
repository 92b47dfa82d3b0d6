"""The UAS core in memory: transactions, dialogs and timers, with a clock the test moves."""

from __future__ import annotations

import gc
import ipaddress

from tests.sipfake import SDP_OFFER, Peer, ack_for, make_core
from voice.sip import events as ev
from voice.sip.core import CallPolicy
from voice.sip.message import Request, Response
from voice.sip.session import CallState

ANSWER = (b"v=0\r\no=- 2 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
          b"m=audio 10000 RTP/AVP 8\r\n")


def invite(peer: Peer, **kw: object) -> tuple[Response, ev.IncomingCall]:
    peer.send(peer.request("INVITE", body=SDP_OFFER, **kw))  # type: ignore[arg-type]
    responses = peer.responses()
    assert [r.status for r in responses] == [100]
    events = peer.core.events()
    assert len(events) == 1 and isinstance(events[0], ev.IncomingCall)
    return responses[0], events[0]


def answered_call(peer: Peer) -> tuple[ev.IncomingCall, Response]:
    _, incoming = invite(peer)
    incoming.call.answer(ANSWER, peer.now)
    (ok,) = peer.responses()
    assert ok.status == 200 and ok.body == ANSWER and ok.to.tag
    return incoming, ok


def test_invite_answer_ack_bye() -> None:
    core = make_core()
    peer = Peer(core)
    incoming, ok = answered_call(peer)
    assert ok.headers.get("Contact") and "INVITE" in (ok.headers.get("Allow") or "")
    peer.send(ack_for(peer, ok, cseq=1))
    assert [type(e) for e in core.events()] == [ev.CallConfirmed]
    assert incoming.call.state is CallState.CONFIRMED
    peer.send(peer.request("BYE", to_tag=ok.to.tag))
    assert [r.status for r in peer.responses()] == [200]
    (ended,) = core.events()
    assert isinstance(ended, ev.CallEnded) and ended.reason == "bye"


def test_invite_retransmission_absorbed() -> None:
    core = make_core()
    peer = Peer(core)
    text = peer.request("INVITE", body=SDP_OFFER, branch="z9hG4bKsame")
    peer.send(text)
    assert [r.status for r in peer.responses()] == [100]
    assert len(core.events()) == 1
    peer.send(text)  # retransmission before the answer: the 100 again, no new call
    assert [r.status for r in peer.responses()] == [100]
    assert core.events() == []


def test_2xx_retransmitted_t1_to_t2_until_ack() -> None:
    core = make_core(t1=0.5)
    peer = Peer(core)
    _, ok = answered_call(peer)
    times = []
    for _ in range(40):
        peer.advance(0.25)
        for r in peer.responses():
            assert r.status == 200
            times.append(peer.now)
    # T1, then doubling: 0.5, 1.5, 3.5, 7.5 (capped at T2 = 4 s): 11.5 (within 10 s: 4 retransmissions)
    assert times[:4] == [0.5, 1.5, 3.5, 7.5]
    peer.send(ack_for(peer, ok, cseq=1))
    peer.advance(10)
    assert peer.responses() == []


def test_2xx_retransmission_leaves_no_cycle() -> None:
    # The retransmission timer once called a closure that referred to itself: a cycle per
    # answered call, freed only by a full garbage collection (which holds the media back).
    gc.collect()
    gc.disable()
    try:
        core = make_core(t1=0.5)
        peer = Peer(core)
        _, ok = answered_call(peer)
        peer.advance(1.0)
        peer.responses()
        peer.send(ack_for(peer, ok, cseq=1))
        peer.send(peer.request("BYE", to_tag=ok.to.tag))
        peer.advance(40)
        del core, peer, ok
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        left = [o.__qualname__ for o in gc.garbage if type(o).__name__ == "function"]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert left == []


def test_no_ack_sends_bye_after_64_t1() -> None:
    core = make_core(t1=0.5)
    peer = Peer(core)
    incoming, ok = answered_call(peer)
    peer.advance(31.9)
    assert all(isinstance(m, Response) for m, _ in peer.sent())
    assert not any(isinstance(e, ev.CallEnded) for e in core.events())
    peer.advance(0.2)
    sent = [m for m, _ in peer.sent()]
    byes = [m for m in sent if isinstance(m, Request)]
    assert len(byes) == 1 and byes[0].method == "BYE"
    assert byes[0].uri == "sip:alice@127.0.0.1:5070"  # the remote target from Contact
    assert byes[0].to.tag == peer.tag and byes[0].from_.tag == ok.to.tag
    ended = [e for e in core.events() if isinstance(e, ev.CallEnded)]
    assert ended and ended[0].reason == "no_ack"
    assert incoming.call.state is CallState.ENDED


def test_cancel_gives_200_and_487_and_487_retransmits_until_ack() -> None:
    core = make_core()
    peer = Peer(core)
    text = peer.request("INVITE", body=SDP_OFFER, branch="z9hG4bKcancelme")
    peer.send(text)
    peer.responses()
    incoming = core.events()[0]
    assert isinstance(incoming, ev.IncomingCall)
    incoming.call.ring(peer.now)
    assert [r.status for r in peer.responses()] == [180]
    peer.send(peer.request("CANCEL", branch="z9hG4bKcancelme", cseq=1))
    statuses = [(r.status, r.cseq.method) for r in peer.responses()]
    assert statuses == [(200, "CANCEL"), (487, "INVITE")]
    assert [e.reason for e in core.events() if isinstance(e, ev.CallEnded)] == ["cancel"]
    peer.advance(0.6)  # Timer G
    assert [r.status for r in peer.responses()] == [487]
    peer.send(peer.request("ACK", branch="z9hG4bKcancelme", cseq=1))
    peer.advance(40)
    assert peer.responses() == []
    # answering after the CANCEL does nothing
    incoming.call.answer(ANSWER, peer.now)
    assert peer.responses() == []


def test_cancel_unknown_gets_481() -> None:
    core = make_core()
    peer = Peer(core)
    peer.send(peer.request("CANCEL", branch="z9hG4bKnothing"))
    assert [r.status for r in peer.responses()] == [481]


def test_non_2xx_timer_h_without_ack() -> None:
    core = make_core()
    peer = Peer(core)
    _, incoming = invite(peer)
    incoming.call.reject(486, "Busy Here", peer.now)
    assert [r.status for r in peer.responses()] == [486]
    peer.advance(31.0)
    retransmits = peer.responses()
    assert len(retransmits) >= 5 and {r.status for r in retransmits} == {486}
    peer.advance(2.0)  # Timer H has fired: no more retransmissions
    peer.responses()
    peer.advance(10.0)
    assert peer.responses() == []


def test_options_and_method_checks() -> None:
    core = make_core()
    peer = Peer(core)
    peer.send(peer.request("OPTIONS"))
    (r,) = peer.responses()
    assert r.status == 200 and "INVITE" in (r.headers.get("Allow") or "")
    assert "application/sdp" in (r.headers.get("Accept") or "")
    peer.send(peer.request("SUBSCRIBE"))
    (r,) = peer.responses()
    assert r.status == 405 and "BYE" in (r.headers.get("Allow") or "")
    peer.send(peer.request("INVITE", body=SDP_OFFER, extra="Require: 100rel, foo\r\n"))
    rs = peer.responses()
    assert rs[-1].status == 420 and rs[-1].headers.get("Unsupported") == "100rel, foo"
    text = peer.request("INVITE", body="hello").replace("application/sdp", "text/plain")
    peer.send(text)
    rs = peer.responses()
    assert rs[-1].status == 415 and "application/sdp" in (rs[-1].headers.get("Accept") or "")
    peer.send(peer.request("BYE", to_tag="nosuch"))
    assert [r.status for r in peer.responses()] == [481]


def test_non_invite_retransmission_gets_same_response_and_timer_j() -> None:
    core = make_core()
    peer = Peer(core)
    text = peer.request("OPTIONS", branch="z9hG4bKopt")
    peer.send(text)
    (first,) = peer.responses()
    peer.send(text)
    (again,) = peer.responses()
    assert again.serialize() == first.serialize()
    peer.advance(33)  # Timer J (64*T1) over: the transaction is gone
    assert core._server_tx == {}


def test_response_routed_by_via_received_and_rport() -> None:
    core = make_core()
    peer = Peer(core, port=5070)
    text = peer.request("OPTIONS").replace("127.0.0.1:5070;branch", "10.9.9.9:5099;branch")
    peer.send(text)
    ((response, addr),) = peer.sent()
    assert (addr.host, addr.port) == ("127.0.0.1", 5070)  # received + rport, not the Via's sent-by
    via = response.top_via
    assert via.received == "127.0.0.1" and via.rport == 5070
    # without rport: sent to received address at the Via port
    text = peer.request("OPTIONS", via_rport=False).replace("127.0.0.1:5070;branch", "10.9.9.9:5099;branch")
    peer.send(text)
    ((_, addr),) = peer.sent()
    assert (addr.host, addr.port) == ("127.0.0.1", 5099)


def test_untrusted_source_refused_403() -> None:
    core = make_core(policy=CallPolicy(trusted=[ipaddress.ip_network("10.0.0.0/8")]))
    peer = Peer(core)
    peer.send(peer.request("INVITE", body=SDP_OFFER))
    assert [r.status for r in peer.responses()] == [403]  # a refusal comes without a provisional
    assert core.events() == []


def test_reinvite_hold_and_glare_rules() -> None:
    core = make_core()
    peer = Peer(core)
    incoming, ok = answered_call(peer)
    peer.send(ack_for(peer, ok, cseq=1))
    core.events()
    hold = SDP_OFFER.replace("a=sendrecv", "a=sendonly")
    peer.send(peer.request("INVITE", to_tag=ok.to.tag, body=hold))
    events = core.events()
    assert len(events) == 1 and isinstance(events[0], ev.ReInvite) and b"sendonly" in events[0].offer
    # a second re-INVITE while the first is pending: 491
    peer.send(peer.request("INVITE", to_tag=ok.to.tag, body=hold))
    assert [r.status for r in peer.responses()] == [491]
    incoming.call.answer_reinvite(ANSWER, peer.now)
    (r,) = peer.responses()
    assert r.status == 200 and r.cseq.seq == 2
    # re-INVITE before the ACK of the previous 2xx: 500 with Retry-After
    peer.send(peer.request("INVITE", to_tag=ok.to.tag, body=SDP_OFFER))
    (r,) = peer.responses()
    assert r.status == 500 and r.headers.get("Retry-After")
    peer.send(ack_for(peer, ok, cseq=2))
    assert incoming.call.state is CallState.CONFIRMED


def test_cseq_out_of_order_gets_500() -> None:
    core = make_core()
    peer = Peer(core)
    _, ok = answered_call(peer)
    peer.send(ack_for(peer, ok, cseq=1))
    peer.send(peer.request("INFO", to_tag=ok.to.tag, cseq=5))
    assert [r.status for r in peer.responses()] == [200]
    peer.send(peer.request("INFO", to_tag=ok.to.tag, cseq=4))
    assert [r.status for r in peer.responses()] == [500]


def test_info_dtmf_relay() -> None:
    core = make_core()
    peer = Peer(core)
    _, ok = answered_call(peer)
    peer.send(ack_for(peer, ok, cseq=1))
    core.events()
    text = peer.request("INFO", to_tag=ok.to.tag, body="Signal=5\r\nDuration=160\r\n")
    peer.send(text.replace("application/sdp", "application/dtmf-relay"))
    assert [r.status for r in peer.responses()] == [200]
    (e,) = core.events()
    assert isinstance(e, ev.DtmfInfo) and e.digit == "5" and e.duration_ms == 160


def test_local_hangup_sends_bye_and_handles_200() -> None:
    core = make_core()
    peer = Peer(core)
    incoming, ok = answered_call(peer)
    peer.send(ack_for(peer, ok, cseq=1))
    core.events()
    incoming.call.hangup(peer.now)
    ((bye, addr),) = peer.sent()
    assert isinstance(bye, Request) and bye.method == "BYE" and (addr.host, addr.port) == ("127.0.0.1", 5070)
    assert [e.reason for e in core.events() if isinstance(e, ev.CallEnded)] == ["local"]
    peer.advance(0.5)  # Timer E retransmits the BYE until a response arrives
    assert [m.method for m, _ in peer.sent() if isinstance(m, Request)] == ["BYE"]
    response = (
        f"SIP/2.0 200 OK\r\nVia: {bye.headers.get('Via')}\r\nFrom: {bye.headers.get('From')}\r\n"
        f"To: {bye.headers.get('To')}\r\nCall-ID: {bye.call_id}\r\nCSeq: {bye.cseq}\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    peer.send(response)
    peer.advance(10)
    assert peer.sent() == []


def test_refer_blind_transfer_progress() -> None:
    core = make_core()
    peer = Peer(core)
    incoming, ok = answered_call(peer)
    peer.send(ack_for(peer, ok, cseq=1))
    core.events()
    incoming.call.refer("sip:support@127.0.0.1:5099", peer.now)
    ((refer, _),) = peer.sent()
    assert isinstance(refer, Request) and refer.method == "REFER"
    assert refer.headers.get("Refer-To") == "<sip:support@127.0.0.1:5099>"
    peer.send(
        f"SIP/2.0 202 Accepted\r\nVia: {refer.headers.get('Via')}\r\nFrom: {refer.headers.get('From')}\r\n"
        f"To: {refer.headers.get('To')};x=1\r\nCall-ID: {refer.call_id}\r\nCSeq: {refer.cseq}\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    (progress,) = core.events()
    assert isinstance(progress, ev.TransferProgress) and progress.status == 202 and not progress.final
    notify = peer.request("NOTIFY", to_tag=ok.to.tag, body="SIP/2.0 200 OK\r\n", extra="Event: refer\r\n")
    peer.send(notify.replace("application/sdp", "message/sipfrag"))
    assert [r.status for r in peer.responses()] == [200]
    (done,) = core.events()
    assert isinstance(done, ev.TransferProgress) and done.status == 200 and done.final


def test_capacity_limit_503() -> None:
    core = make_core(policy=CallPolicy(trusted=[ipaddress.ip_network("127.0.0.0/8")], max_calls=1))
    peer = Peer(core)
    invite(peer)
    other = Peer(core, port=5071)
    other.send(other.request("INVITE", body=SDP_OFFER))
    rs = other.responses()
    assert [r.status for r in rs] == [503] and rs[0].headers.get("Retry-After")


def test_ack_with_wrong_to_tag_still_confirms_the_call() -> None:
    """pyVoIP 1.6.8 sends its ACK with a made-up To tag (and the INVITE's branch)."""
    core = make_core()
    peer = Peer(core)
    text = peer.request("INVITE", body=SDP_OFFER, branch="z9hG4bKpyvoip")
    peer.send(text)
    peer.responses()
    (incoming,) = core.events()
    assert isinstance(incoming, ev.IncomingCall)
    incoming.call.answer(ANSWER, peer.now)
    peer.responses()
    peer.send(peer.request("ACK", to_tag="madeup", cseq=1, branch="z9hG4bKpyvoip"))
    assert [type(e) for e in core.events()] == [ev.CallConfirmed]
    peer.advance(5)
    assert peer.responses() == []  # no more 2xx retransmissions


def test_bye_follows_the_route_set_from_record_route() -> None:
    core = make_core()
    peer = Peer(core)
    rr = "Record-Route: <sip:proxy2.test:5062;lr>, <sip:127.0.0.1:5099;lr>\r\n"
    peer.send(peer.request("INVITE", body=SDP_OFFER, extra=rr))
    peer.responses()
    (incoming,) = core.events()
    assert isinstance(incoming, ev.IncomingCall)
    incoming.call.answer(ANSWER, peer.now)
    (ok,) = peer.responses()
    assert ok.headers.get_all("Record-Route") == ["<sip:proxy2.test:5062;lr>", "<sip:127.0.0.1:5099;lr>"]
    peer.send(ack_for(peer, ok, cseq=1))
    core.events()
    incoming.call.hangup(peer.now)
    (data, addr), = core.outgoing()
    from voice.sip.message import parse_message

    bye = parse_message(data)
    assert isinstance(bye, Request) and bye.method == "BYE"
    # 12.2.1.1 (UAS): the route set is the Record-Route in order; loose routing keeps the target
    assert bye.headers.get_all("Route") == ["<sip:proxy2.test:5062;lr>", "<sip:127.0.0.1:5099;lr>"]
    assert bye.uri == "sip:alice@127.0.0.1:5070"
    assert (addr.host, addr.port) == ("proxy2.test", 5062)


def test_state_is_released_after_many_calls_and_garbage() -> None:
    """Nothing piles up: after the timers run out, no transaction or call is left behind."""
    import gc
    from pathlib import Path

    from voice.sip.session import InboundCall
    from voice.sip.transaction import Transaction

    torture = [p.read_bytes() for p in (Path(__file__).parent / "data" / "sip-torture").glob("*/*.dat")]
    core = make_core()
    peer = Peer(core)

    def churn(rounds: int) -> None:
        for i in range(rounds):
            peer.call_id = f"churn-{i}@test"
            peer.send(peer.request("OPTIONS"))
            peer.send(peer.request("INVITE", body=SDP_OFFER, branch=f"z9hG4bKc{i}"))
            for event in core.events():
                if isinstance(event, ev.IncomingCall):
                    event.call.ring(peer.now)
            peer.send(peer.request("CANCEL", branch=f"z9hG4bKc{i}", cseq=peer.cseq))
            peer.send(peer.request("ACK", branch=f"z9hG4bKc{i}", cseq=peer.cseq))
            peer.send(torture[i % len(torture)])
            core.outgoing()
            core.events()
            peer.advance(0.05)
        peer.advance(200)  # every Timer J/H/I/L, the dialogs' linger time, the ring timeout
        core.outgoing()
        core.events()  # the ring timeout's CallEnded events

    churn(300)
    gc.collect()  # transactions and their timer closures form cycles: the cyclic GC frees them
    assert core._server_tx == {} and core._client_tx == {} and core.calls == {}
    assert len(core.timers) == 0
    alive = [o for o in gc.get_objects()
             if (isinstance(o, InboundCall) and o.core is core)
             or (isinstance(o, Transaction) and getattr(o._on_terminated, "__self__", None) is core)]
    assert alive == [], f"{len(alive)} calls or transactions outlived their timers"
