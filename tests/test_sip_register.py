"""Registering the service upstream, and digest-challenging untrusted callers, in memory."""

from __future__ import annotations

import ipaddress

from tests.sipfake import SDP_OFFER, Peer, make_core
from voice.sip import events as ev
from voice.sip.core import CallPolicy
from voice.sip.digest import Challenge, DigestVerifier, authorization
from voice.sip.message import Request, make_response
from voice.sip.register import Registration
from voice.sip.transaction import Address


def test_register_with_digest_and_refresh_before_expiry() -> None:
    core = make_core()
    registrar = DigestVerifier("pbx.test", {"ivr": "s3cret"})
    reg = Registration(core, registrar="sip:127.0.0.1:5080", username="ivr", password="s3cret", expires=60)
    assert "s3cret" not in repr(reg)
    now = 0.0
    reg.start(now)
    ((data, addr),) = core.outgoing()
    assert addr == Address("127.0.0.1", 5080, "udp")
    first = Request.__new__(Request)
    from voice.sip.message import parse_message

    first = parse_message(data)
    assert isinstance(first, Request) and first.method == "REGISTER" and first.headers.get("Expires") == "60"
    challenge = make_response(first, 401, headers=[("WWW-Authenticate", registrar.challenge(now))])
    core.receive(challenge.serialize(), addr, now)
    ((data, _),) = core.outgoing()
    second = parse_message(data)
    assert isinstance(second, Request)
    assert second.cseq.seq == first.cseq.seq + 1 and second.call_id == first.call_id
    auth = second.headers.get("Authorization") or ""
    assert "qop=auth" in auth and "s3cret" not in auth
    assert registrar.verify(auth, method="REGISTER", now=now) == "ivr"
    contact = second.headers.get("Contact")
    ok = make_response(second, 200, headers=[("Contact", f"{contact};expires=60")])
    core.receive(ok.serialize(), addr, now)
    (changed,) = [e for e in core.events() if isinstance(e, ev.RegistrationChanged)]
    assert changed.registered and changed.expires == 60
    # refresh at 80% of the granted time: nothing at 47 s, a REGISTER by 48 s
    core.handle_timer(47.0)
    assert [d for d, _ in core.outgoing() if d.startswith(b"REGISTER")] == []
    core.handle_timer(48.0)
    refresh = [parse_message(d) for d, _ in core.outgoing() if d.startswith(b"REGISTER")]
    assert len(refresh) == 1 and refresh[0].headers.get("Expires") == "60"


def test_register_failure_retries_later() -> None:
    core = make_core()
    reg = Registration(core, registrar="sip:127.0.0.1:5080", username="ivr", password="x", expires=60)
    reg.start(0.0)
    ((data, addr),) = core.outgoing()
    from voice.sip.message import parse_message

    request = parse_message(data)
    assert isinstance(request, Request)
    core.receive(make_response(request, 403).serialize(), addr, 0.0)
    (changed,) = [e for e in core.events() if isinstance(e, ev.RegistrationChanged)]
    assert not changed.registered and changed.status == 403
    core.handle_timer(31.0)
    assert any(d.startswith(b"REGISTER") for d, _ in core.outgoing())


def test_untrusted_caller_is_challenged_then_admitted() -> None:
    verifier = DigestVerifier("voice.test", {"alice": "wonder"})
    core = make_core(policy=CallPolicy(trusted=[ipaddress.ip_network("10.0.0.0/8")], verifier=verifier))
    peer = Peer(core)
    peer.send(peer.request("INVITE", body=SDP_OFFER))
    responses = peer.responses()
    assert [r.status for r in responses] == [401]
    assert core.events() == []
    challenge = Challenge.parse(responses[0].headers.get("WWW-Authenticate") or "")
    wrong = authorization(challenge, method="INVITE", uri="sip:100@127.0.0.1:5060", username="alice",
                          password="guess")
    peer.send(peer.request("INVITE", body=SDP_OFFER, extra=f"Authorization: {wrong}\r\n"))
    assert [r.status for r in peer.responses()] == [401]
    right = authorization(challenge, method="INVITE", uri="sip:100@127.0.0.1:5060", username="alice",
                          password="wonder")
    peer.send(peer.request("INVITE", body=SDP_OFFER, extra=f"Authorization: {right}\r\n"))
    assert [r.status for r in peer.responses()] == [100]
    assert [type(e) for e in core.events()] == [ev.IncomingCall]
