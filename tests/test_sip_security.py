"""Issue 10 items 3, 4 and 8 (SIP core part), in memory: digest replay, uri=, stale, SHA-256,
unknown users, per-source throttling, security events and refusals before any provisional."""

from __future__ import annotations

import ipaddress
import logging

import pytest

from tests.sipfake import SDP_OFFER, Peer, make_core
from voice.sip import digest
from voice.sip import events as ev
from voice.sip.core import CallPolicy, SipCore
from voice.sip.digest import Challenge, DigestVerifier, authorization
from voice.sip.message import Response
from voice.sip.throttle import SourceThrottle, ThrottleSettings

RURI = "sip:100@127.0.0.1:5060"  # what tests.sipfake.Peer puts in its Request-Line


def untrusted_core(throttle: ThrottleSettings | None = None, **verifier_kw: object) -> SipCore:
    verifier = DigestVerifier("voice.test", {"alice": "wonder"}, **verifier_kw)  # type: ignore[arg-type]
    policy = CallPolicy(trusted=[ipaddress.ip_network("10.0.0.0/8")], verifier=verifier,
                        throttle=SourceThrottle(throttle or ThrottleSettings()))
    return make_core(policy=policy)


def challenge_for(peer: Peer) -> tuple[Response, list[Challenge]]:
    peer.send(peer.request("INVITE", body=SDP_OFFER))
    (response,) = peer.responses()
    assert response.status == 401
    return response, [Challenge.parse(v) for v in response.headers.get_all("WWW-Authenticate")]


def invite_with(peer: Peer, creds: str) -> list[Response]:
    peer.send(peer.request("INVITE", body=SDP_OFFER, extra=f"Authorization: {creds}\r\n"))
    return peer.responses()


def test_replayed_authorization_fails_on_a_new_call() -> None:
    core = untrusted_core()
    alice = Peer(core)
    _, (challenge, *_) = challenge_for(alice)
    creds = authorization(challenge, method="INVITE", uri=RURI, username="alice", password="wonder")
    assert [r.status for r in invite_with(alice, creds)] == [100]
    assert [type(e) for e in core.events()] == [ev.IncomingCall]
    # The same header on a new Call-ID, a new branch and another source port: a replay.
    attacker = Peer(core, port=5099)
    attacker.now = 10.0
    (refused,) = invite_with(attacker, creds)
    assert refused.status == 401 and core.events() == []
    assert "stale=true" not in (refused.headers.get("WWW-Authenticate") or "")
    # The client's next request on the same nonce (nc=2) is fine: nc values are tracked, not nonces.
    again = authorization(challenge, method="INVITE", uri=RURI, username="alice", password="wonder", nc=2)
    assert [r.status for r in invite_with(Peer(core, port=5072), again)] == [100]


def test_response_for_another_uri_is_refused() -> None:
    core = untrusted_core()
    peer = Peer(core)
    _, (challenge, *_) = challenge_for(peer)
    creds = authorization(challenge, method="INVITE", uri="sip:900@127.0.0.1:5060", username="alice",
                          password="wonder")
    assert [r.status for r in invite_with(peer, creds)] == [401]
    assert core.events() == []
    assert core.policy.verifier is not None and core.policy.verifier.last_reason == "uri_mismatch"


def test_expired_nonce_is_rechallenged_with_stale_true() -> None:
    core = untrusted_core(nonce_ttl=30.0)
    peer = Peer(core)
    _, (challenge, *_) = challenge_for(peer)
    peer.advance(31.0)
    peer.sent()  # the 401's retransmissions
    creds = authorization(challenge, method="INVITE", uri=RURI, username="alice", password="wonder")
    (response,) = invite_with(peer, creds)
    assert response.status == 401
    values = response.headers.get_all("WWW-Authenticate")
    assert values and all("stale=true" in v for v in values)
    assert core.stats["auth_failed"] == 0  # a stale nonce is not a failure


def test_sha256_offered_first_and_md5_beside_it() -> None:
    core = untrusted_core()
    peer = Peer(core)
    _, challenges = challenge_for(peer)
    assert [c.algorithm for c in challenges] == ["SHA-256", "MD5"]
    assert len({c.nonce for c in challenges}) == 1 and all(c.qop == ["auth"] for c in challenges)
    for n, challenge in enumerate(challenges, 1):
        creds = authorization(challenge, method="INVITE", uri=RURI, username="alice", password="wonder", nc=n)
        assert f"algorithm={challenge.algorithm}" in creds
        assert [r.status for r in invite_with(Peer(core, port=5070 + n), creds)] == [100]


def test_unknown_user_gets_the_same_answer_and_costs_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    hashes = 0
    real = digest._h

    def counting(fn: object, *parts: str) -> str:
        nonlocal hashes
        hashes += 1
        return real(fn, *parts)  # type: ignore[arg-type]

    monkeypatch.setattr(digest, "_h", counting)
    answers = []
    costs = []
    for user in ("alice", "mallory"):  # alice exists (wrong password), mallory does not
        core = untrusted_core()
        peer = Peer(core)
        _, (challenge, *_) = challenge_for(peer)
        creds = authorization(challenge, method="INVITE", uri=RURI, username=user, password="guess")
        hashes = 0
        (response,) = invite_with(peer, creds)
        costs.append(hashes)
        answers.append((response.status, response.reason, [n for n, _ in response.headers.items()],
                        ["stale" in v for v in response.headers.get_all("WWW-Authenticate")]))
    assert answers[0] == answers[1]
    assert costs[0] == costs[1] > 0


def test_password_guessing_blocks_the_source_even_for_the_right_password(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "voice.security")
    core = untrusted_core(ThrottleSettings(auth_failures=5, auth_window=60, block_time=120))
    guesser = Peer(core, host="203.0.113.9")
    _, (challenge, *_) = challenge_for(guesser)
    for n in range(1, 6):
        guess = authorization(challenge, method="INVITE", uri=RURI, username="alice", password=f"pw{n}", nc=n)
        assert [r.status for r in invite_with(guesser, guess)] == [401]
    right = authorization(challenge, method="INVITE", uri=RURI, username="alice", password="wonder", nc=9)
    assert [r.status for r in invite_with(guesser, right)] == [403]  # blocked: no 100, no call
    assert core.events() == []
    assert core._server_tx == {} and core.calls == {}  # every refusal was stateless: nothing kept
    lines = [r.getMessage() for r in caplog.records if r.name == "voice.security"]
    failed = [ln for ln in lines if ln.startswith("SECURITY event=auth_failed src=203.0.113.9 user=alice")]
    assert len(failed) == 5 and all("reason=wrong_password" in ln for ln in failed)
    assert lines.count("SECURITY event=blocked src=203.0.113.9 reason=auth_failures seconds=120") == 1
    assert not any("pw" in ln or "wonder" in ln or challenge.nonce in ln for ln in lines)
    # Another source is not affected; after block_time the guesser's address works again.
    other = Peer(core, host="198.51.100.7")
    _, (fresh, *_) = challenge_for(other)
    ok = authorization(fresh, method="INVITE", uri=RURI, username="alice", password="wonder")
    assert [r.status for r in invite_with(other, ok)] == [100]
    guesser.advance(121.0)
    guesser.sent()  # retransmissions of the earlier answers
    _, (later, *_) = challenge_for(guesser)
    ok = authorization(later, method="INVITE", uri=RURI, username="alice", password="wonder")
    assert [r.status for r in invite_with(guesser, ok)] == [100]


def test_untrusted_calls_are_logged_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "voice.security")
    policy = CallPolicy(trusted=[ipaddress.ip_network("10.0.0.0/8")],
                        throttle=SourceThrottle(ThrottleSettings(auth_failures=3)))
    core = make_core(policy=policy)
    scanner = Peer(core, host="192.0.2.66")
    statuses = []
    for _ in range(6):
        scanner.send(scanner.request("INVITE", body=SDP_OFFER, call_id=None))
        statuses += [r.status for r in scanner.responses()]
    assert statuses == [403] * 6
    lines = [r.getMessage() for r in caplog.records if r.name == "voice.security"]
    # Three refusals are logged, then one block; while blocked, nothing more (the log stays small).
    assert lines == ["SECURITY event=untrusted_call src=192.0.2.66 to=100"] * 3 + [
        "SECURITY event=blocked src=192.0.2.66 reason=auth_failures seconds=600"]


def test_invite_flood_gets_503_retry_after_without_provisional_and_options_still_answered() -> None:
    core = make_core(policy=CallPolicy(trusted=[ipaddress.ip_network("127.0.0.0/8")],
                                       throttle=SourceThrottle(ThrottleSettings(
                                           invite_rate=10, invite_burst=20, flood_block=5,
                                           refusals_per_second=15))))
    flooder = Peer(core)
    statuses: list[int | None] = []
    refusals: list[Response] = []
    for n in range(60):
        flooder.send(flooder.request("INVITE", body=SDP_OFFER, call_id=f"flood{n}@x"))
        rs = flooder.responses()
        statuses.append(rs[0].status if rs else None)
        refusals += [r for r in rs if r.status == 503]
    # 20 taken (the burst), 15 refused with 503 (this second's answers), the rest dropped unparsed.
    assert statuses == [100] * 20 + [503] * 15 + [None] * 25
    assert core.stats["shed"] == 25 and core.stats["parse_errors"] == 0
    assert all(r.headers.get("Retry-After") == "5" and r.to.tag for r in refusals)
    # Refused statelessly: no transaction or call is kept for them.
    assert len(core.calls) == 20 and len(core._server_tx) == 20
    flooder.send(flooder.request("OPTIONS"))
    assert [r.status for r in flooder.responses()] == [200]
    flooder.advance(1.0)  # a new second: the retransmission of a dropped INVITE gets its 503
    flooder.sent()
    flooder.send(flooder.request("INVITE", body=SDP_OFFER, call_id="flood59@x"))
    assert [r.status for r in flooder.responses()] == [503]
    flooder.advance(5.0)  # the block is over and the bucket refilled
    flooder.sent()
    flooder.send(flooder.request("INVITE", body=SDP_OFFER, call_id="after@x"))
    assert [r.status for r in flooder.responses()] == [100]


def test_no_media_port_gets_503_before_any_provisional() -> None:
    free = {"ports": False}
    core = make_core(policy=CallPolicy(trusted=[ipaddress.ip_network("127.0.0.0/8")],
                                       has_capacity=lambda: free["ports"], retry_after=7))
    peer = Peer(core)
    peer.send(peer.request("INVITE", body=SDP_OFFER))
    (response,) = peer.responses()
    assert (response.status, response.headers.get("Retry-After")) == (503, "7")
    assert core.events() == [] and core.calls == {} and core._server_tx == {}
    free["ports"] = True
    peer.send(peer.request("INVITE", body=SDP_OFFER, call_id="second@x"))
    assert [r.status for r in peer.responses()] == [100]


def test_throttle_table_is_bounded_and_expires() -> None:
    throttle = SourceThrottle(ThrottleSettings(max_sources=1000, auth_window=60))
    for n in range(5000):
        throttle.check_invite(f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}", now=0.0)
    assert len(throttle) == 1000
    throttle.check_invite("192.0.2.1", now=100.0)  # idle, unblocked sources go
    assert len(throttle) == 1


def test_replay_table_is_bounded_and_never_lets_a_replay_through() -> None:
    verifier = DigestVerifier("voice.test", {"alice": "wonder"}, nonce_ttl=300)
    verifier.MAX_NONCES = 50  # type: ignore[misc]
    first = Challenge.parse(verifier.challenge(now=0.0))
    creds0 = authorization(first, method="INVITE", uri=RURI, username="alice", password="wonder")
    assert verifier.verify(creds0, method="INVITE", now=0.5, uri=RURI) == "alice"
    for n in range(1, 200):
        c = Challenge.parse(verifier.challenge(now=n / 100))
        creds = authorization(c, method="INVITE", uri=RURI, username="alice", password="wonder")
        assert verifier.verify(creds, method="INVITE", now=n / 100 + 0.5, uri=RURI) == "alice"
    assert verifier.remembered <= 50
    # The first nonce was forgotten: its replay is called stale, not accepted.
    assert verifier.verify(creds0, method="INVITE", now=3.0, uri=RURI) is None and verifier.last_stale
    later = Challenge.parse(verifier.challenge(now=400.0))
    creds = authorization(later, method="INVITE", uri=RURI, username="alice", password="wonder")
    assert verifier.verify(creds, method="INVITE", now=400.5, uri=RURI) == "alice"
    assert verifier.remembered == 1  # expired nonces pruned


def test_options_flood_is_answered_without_growing_the_transaction_table() -> None:
    core = make_core()
    core.MAX_SERVER_TRANSACTIONS = 300  # type: ignore[misc]
    peer = Peer(core, host="198.51.100.9")
    answered = 0
    for n in range(1000):
        peer.send(peer.request("OPTIONS", call_id=f"scan{n}@x"))
        answered += sum(r.status == 200 for r in peer.responses())
    assert answered == 1000
    assert len(core._server_tx) == 300
    peer.advance(40.0)  # Timer J: the stateful ones expire too
    assert core._server_tx == {}


def test_calls_that_ended_leave_nothing_in_the_core() -> None:
    """A flood's accepted calls, once ended, leave no call, transaction or timer behind (the ring
    timeout of an ended call used to keep it referenced for RING_TIMEOUT, 180 s)."""
    core = make_core(policy=CallPolicy(trusted=[ipaddress.ip_network("127.0.0.0/8")], max_calls=10))
    peer = Peer(core)
    for round_ in range(3):
        for n in range(200):
            peer.now += 0.002
            peer.send(peer.request("INVITE", body=SDP_OFFER, call_id=f"r{round_}c{n}@x"))
            for event in core.events():
                if isinstance(event, ev.IncomingCall):
                    event.call.reject(486, "Busy Here", peer.now)
            core.outgoing()
        peer.advance(40.0)  # 64*T1 (32 s): transactions and dialogs expire
        core.outgoing()
        assert core.calls == {} and core._server_tx == {} and core._ring_timers == {}
        assert core.get_timer() is None and len(core.timers._heap) == 0
