"""Digest authentication against the RFC worked examples, and client -> verifier round trips."""

from __future__ import annotations

import pytest

from voice.sip.digest import Challenge, DigestError, DigestVerifier, authorization, parse_auth_params
from voice.sip.message import Headers, Request, make_response, parse_message

RFC2617_CHALLENGE = (
    'Digest realm="testrealm@host.com", qop="auth,auth-int", '
    'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9b7ef0d9d1"'
)


def test_rfc2617_section_3_5_example() -> None:
    c = Challenge.parse(RFC2617_CHALLENGE)
    assert (c.realm, c.algorithm, c.qop, c.stale) == (
        "testrealm@host.com",
        "MD5",
        ["auth", "auth-int"],
        False,
    )
    value = authorization(
        c,
        method="GET",
        uri="/dir/index.html",
        username="Mufasa",
        password="Circle Of Life",
        cnonce="0a4f113b",
    )
    scheme, p = parse_auth_params(value)
    assert scheme == "Digest"
    assert p["response"] == "6629fae49393a05397450978507c4ef1"  # RFC 2617 3.5
    assert (p["qop"], p["nc"], p["cnonce"], p["opaque"]) == ("auth", "00000001", "0a4f113b", c.opaque)
    assert p["username"] == "Mufasa" and p["uri"] == "/dir/index.html"


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_rfc7616_section_3_9_1_examples(algorithm: str, expected: str) -> None:
    c = Challenge(
        realm="http-auth@example.org",
        nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
        opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS",
        algorithm=algorithm,
        qop=["auth", "auth-int"],
    )
    value = authorization(
        c, method="GET", uri="/dir/index.html", username="Mufasa", password="Circle of Life",
        cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
    )  # fmt: skip
    assert parse_auth_params(value)[1]["response"] == expected


def test_challenge_parse_variants() -> None:
    c = Challenge.parse('digest  nonce="a\\"b", realm = "r,1" ,algorithm=SHA-256,stale=TRUE, qop="auth"')
    assert (c.nonce, c.realm, c.algorithm, c.stale, c.qop, c.opaque) == (
        'a"b',
        "r,1",
        "SHA-256",
        True,
        ["auth"],
        None,
    )
    for bad in ("", 'Basic realm="x"', 'Digest realm="x"', 'Digest realm="x", nonce="y', "Digest ,,,"):
        with pytest.raises(DigestError):
            Challenge.parse(bad)


def test_no_qop_rfc2069_style() -> None:
    c = Challenge(realm="r", nonce="n")
    _, p = parse_auth_params(authorization(c, method="REGISTER", uri="sip:r", username="u", password="pw"))
    assert "qop" not in p and "cnonce" not in p and "nc" not in p


def test_round_trip_through_verifier() -> None:
    v = DigestVerifier("voice.example", {"1001": "s3cret", "1002": "other"}, secret=b"k" * 32, nonce_ttl=300)
    www = v.challenge(now=1000.0)
    c = Challenge.parse(www)
    assert c.qop == ["auth"] and c.realm == "voice.example" and not c.stale
    creds = authorization(
        c, method="INVITE", uri="sip:ivr@voice.example", username="1001", password="s3cret", nc=1
    )
    assert v.verify(creds, method="INVITE", now=1010.0) == "1001" and not v.last_stale
    # Wrong method, password, user, realm: refused.
    assert v.verify(creds, method="BYE", now=1010.0) is None
    wrong = authorization(c, method="INVITE", uri="sip:ivr@voice.example", username="1001", password="nope")
    assert v.verify(wrong, method="INVITE", now=1010.0) is None
    ghost = authorization(c, method="INVITE", uri="sip:ivr@voice.example", username="9999", password="s3cret")
    assert v.verify(ghost, method="INVITE", now=1010.0) is None
    # A nonce signed by another secret is refused even with the right password.
    other = DigestVerifier("voice.example", {"1001": "s3cret"}, secret=b"x" * 32)
    forged = Challenge.parse(other.challenge(now=1000.0))
    creds2 = authorization(
        forged, method="INVITE", uri="sip:ivr@voice.example", username="1001", password="s3cret"
    )
    assert v.verify(creds2, method="INVITE", now=1010.0) is None and not v.last_stale


def test_stale_nonce_detected() -> None:
    v = DigestVerifier("voice.example", {"1001": "s3cret"}, nonce_ttl=30.0)
    c = Challenge.parse(v.challenge(now=0.0))
    creds = authorization(c, method="REGISTER", uri="sip:voice.example", username="1001", password="s3cret")
    assert v.verify(creds, method="REGISTER", now=29.0) == "1001"
    assert v.verify(creds, method="REGISTER", now=31.0) is None and v.last_stale
    assert "stale=true" in v.challenge(now=31.0, stale=True)
    # A wrong password with an old nonce is not "stale": it is just wrong.
    bad = authorization(c, method="REGISTER", uri="sip:voice.example", username="1001", password="x")
    assert v.verify(bad, method="REGISTER", now=31.0) is None and not v.last_stale


@pytest.mark.parametrize(
    "garbage",
    ["", "Digest", "Basic dXNlcjpwYXNz", 'Digest username="1001"', "Digest ,,,,",
     'Digest realm="voice.example"',
     'Digest username="1001", realm="voice.example", nonce="zz.zz", uri="sip:a", response="00"',
     'Digest username="1001", realm="voice.example", nonce="\x00", uri="sip:a", response="00", algorithm=FOO',
     "\xff\x00\ud800"],
)  # fmt: skip
def test_verify_never_raises_on_garbage(garbage: str) -> None:
    v = DigestVerifier("voice.example", {"1001": "s3cret"})
    assert v.verify(garbage, method="INVITE", now=5.0) is None


def test_sip_401_flow_with_messages() -> None:
    """The REGISTER -> 401 -> REGISTER with Authorization exchange, through real message objects."""
    v = DigestVerifier("voice.example", {"alice": "wonderland"})
    reg = Request(
        "REGISTER",
        "sip:voice.example",
        Headers(
            [
                ("Via", "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1"),
                ("From", "<sip:alice@voice.example>;tag=1"),
                ("To", "<sip:alice@voice.example>"),
                ("Call-ID", "c1"),
                ("CSeq", "1 REGISTER"),
            ]
        ),
    )
    challenge = make_response(reg, 401, to_tag="t", headers=[("WWW-Authenticate", v.challenge(now=50.0))])
    got = parse_message(challenge.serialize())
    www = got.headers.get_all("WWW-Authenticate")
    assert len(www) == 1  # not split at its commas
    creds = authorization(
        Challenge.parse(www[0]), method="REGISTER", uri=reg.uri, username="alice", password="wonderland"
    )
    reg.headers.add("Authorization", creds)
    again = parse_message(reg.serialize())
    assert v.verify(again.headers.get("Authorization") or "", method="REGISTER", now=55.0) == "alice"


def test_passwords_never_in_repr() -> None:
    v = DigestVerifier("voice.example", {"1001": "hunter2-secret"})
    assert "hunter2" not in repr(v) and "hunter2" not in str(v)
    c = Challenge.parse(v.challenge(now=1.0))
    assert "hunter2" not in repr(c)
