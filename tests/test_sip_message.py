"""Unit tests of the SIP message layer: headers, URIs, Via, building responses, stream framing."""

from __future__ import annotations

import pytest

from voice.sip.message import (
    CSeq,
    Headers,
    NameAddr,
    Request,
    Response,
    SipParseError,
    SipUri,
    StreamParser,
    Via,
    make_response,
    new_branch,
    new_call_id,
    new_tag,
    parse_message,
)

INVITE = (
    b"INVITE sip:100@192.0.2.10:5060;transport=udp SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.1:5062;branch=z9hG4bK776asdhds;rport\r\n"
    b"Via: SIP/2.0/UDP proxy.example.com;branch=z9hG4bKnashds8;received=192.0.2.3\r\n"
    b"Max-Forwards: 70\r\n"
    b'From: "Alice Smith" <sip:+15551234567@example.com>;tag=1928301774\r\n'
    b"To: <sip:100@example.com>\r\n"
    b"Call-ID: a84b4c76e66710@pc33.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Timestamp: 54\r\n"
    b"Contact: <sip:alice@192.0.2.1:5062>\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 4\r\n"
    b"\r\n"
    b"v=0\n"
)


def invite() -> Request:
    m = parse_message(INVITE)
    assert isinstance(m, Request)
    return m


def test_headers_case_insensitive_compact_and_ordered() -> None:
    h = Headers(
        [("v", "SIP/2.0/UDP a;branch=z9hG4bK1"), ("i", "x@y"), ("VIA", "SIP/2.0/TCP b, SIP/2.0/UDP c")]
    )
    assert h.items()[0] == ("Via", "SIP/2.0/UDP a;branch=z9hG4bK1")
    assert h.get("call-id") == "x@y" and h.get("I") == "x@y" and "CALL-ID" in h
    assert h.get_all("via") == ["SIP/2.0/UDP a;branch=z9hG4bK1", "SIP/2.0/TCP b", "SIP/2.0/UDP c"]
    assert h.get("Missing", "dflt") == "dflt" and "Missing" not in h and 3 not in h
    h.add("Supported", "timer")
    h.set("via", "SIP/2.0/UDP z")
    assert h.get_all("Via") == ["SIP/2.0/UDP z"] and h.items()[0][0] == "Via"
    copy = h.copy()
    h.remove("Call-ID")
    assert "Call-ID" not in h and copy.get("Call-ID") == "x@y"


def test_get_all_splits_lists_only() -> None:
    h = Headers(
        [
            ("Contact", '"Doe, John" <sip:j@a;x=1,2>, <sip:k@b>;q=0.5'),
            ("WWW-Authenticate", 'Digest realm="a,b", nonce="n", qop="auth,auth-int"'),
            ("Date", "Sat, 13 Nov 2010 23:29:00 GMT"),
            ("Allow", "INVITE, ACK,BYE"),
        ]
    )
    assert h.get_all("Contact") == ['"Doe, John" <sip:j@a;x=1,2>', "<sip:k@b>;q=0.5"]
    assert h.get_all("WWW-Authenticate") == ['Digest realm="a,b", nonce="n", qop="auth,auth-int"']
    assert h.get_all("Date") == ["Sat, 13 Nov 2010 23:29:00 GMT"]
    assert h.get_all("allow") == ["INVITE", "ACK", "BYE"]


def test_request_properties() -> None:
    r = invite()
    assert r.method == "INVITE" and r.version == "SIP/2.0"
    assert r.call_id == "a84b4c76e66710@pc33.example.com"
    assert r.cseq == CSeq(314159, "INVITE")
    assert r.from_.display == "Alice Smith" and r.from_.tag == "1928301774"
    assert r.from_.uri.user == "+15551234567"
    assert r.to.tag is None
    assert r.top_via.branch == "z9hG4bK776asdhds" and r.top_via.has_rport and r.top_via.rport is None
    assert (r.top_via.host, r.top_via.port, r.top_via.transport) == ("192.0.2.1", 5062, "UDP")
    assert r.vias[1].received == "192.0.2.3"
    assert r.request_uri == SipUri("sip", "100", None, "192.0.2.10", 5060, {"transport": "udp"}, {})
    assert r.content_type == "application/sdp" and r.body == b"v=0\n" and r.max_forwards == 70


def test_serialize_sets_content_length() -> None:
    r = invite()
    r.body = b"hello world"
    data = r.serialize()
    assert b"\r\nContent-Length: 11\r\n\r\nhello world" in data
    again = parse_message(data)
    assert again.body == b"hello world"
    resp = Response(200, "OK", Headers([("Via", "SIP/2.0/UDP h;branch=z9hG4bKx")]))
    assert (
        resp.serialize()
        == b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\r\nContent-Length: 0\r\n\r\n"
    )


def test_make_response_copies_rfc3261_headers() -> None:
    r = invite()
    ringing = make_response(r, 180, to_tag="abc")
    assert ringing.reason == "Ringing"
    assert ringing.headers.raw_values("Via") == r.headers.raw_values("Via")
    assert ringing.to.tag == "abc" and ringing.from_ == r.from_
    assert ringing.call_id == r.call_id and ringing.cseq == r.cseq
    assert "Contact" not in ringing.headers and "Timestamp" not in ringing.headers
    trying = make_response(r, 100, to_tag="abc")
    assert trying.to.tag is None and trying.reason == "Trying"
    assert trying.headers.get("Timestamp") == "54"  # RFC 3261 8.2.6.1
    ok = make_response(
        r, 200, to_tag="abc", headers=[("Contact", "<sip:ivr@192.0.2.10>")], body=b"v=0\r\n",
        content_type="application/sdp",
    )  # fmt: skip
    parsed = parse_message(ok.serialize())
    assert isinstance(parsed, Response) and parsed.status == 200
    assert parsed.content_type == "application/sdp" and parsed.body == b"v=0\r\n"
    assert parsed.contacts[0].uri.host == "192.0.2.10"
    # A To that already has a tag keeps it.
    tagged = make_response(ok_request_with_tag(r), 200, to_tag="other")
    assert tagged.to.tag == "abc"
    assert make_response(r, 488).reason == "Not Acceptable Here"
    assert make_response(r, 499).reason == "Client Error"
    assert make_response(r, 486, "Busy, try later").reason == "Busy, try later"


def test_sip_uri_parse_and_str() -> None:
    u = SipUri.parse("sips:alice:secret@[2001:db8::1]:5061;transport=tls;lr?subject=hi&priority=urgent")
    assert (u.scheme, u.user, u.password, u.host, u.port) == ("sips", "alice", "secret", "2001:db8::1", 5061)
    assert u.params == {"transport": "tls", "lr": None}
    assert u.headers == {"subject": "hi", "priority": "urgent"}
    assert str(u) == "sips:alice:secret@[2001:db8::1]:5061;transport=tls;lr?subject=hi&priority=urgent"
    assert "secret" not in repr(u)
    assert str(SipUri.parse("sip:example.com")) == "sip:example.com"
    tel = SipUri.parse("tel:+1-201-555-0123;phone-context=example.com")
    assert (tel.scheme, tel.host, tel.params) == ("tel", "+1-201-555-0123", {"phone-context": "example.com"})
    assert str(tel) == "tel:+1-201-555-0123;phone-context=example.com"
    assert SipUri.parse("sip:%61lice@h").user_unescaped == "alice"


@pytest.mark.parametrize(
    "text",
    ["sip:", "sip:user@", "sip:@host", "sip:host:99999", "sip:host:12a", "sip:[::1", "sip:[zz::1]",
     "nocolon", "1sip:host", "sip:ho st", "sip:host;", "sip:host;a=", "sip:host?x"],
)  # fmt: skip
def test_sip_uri_rejects(text: str) -> None:
    with pytest.raises(SipParseError):
        SipUri.parse(text)


def test_name_addr_forms() -> None:
    a = NameAddr.parse('"Bob \\"B\\"" <sip:bob@h;lr>;tag=x;expires=60')
    assert a.display == 'Bob "B"' and a.uri.params == {"lr": None} and a.tag == "x"
    assert a.params == {"tag": "x", "expires": "60"}
    assert NameAddr.parse(str(a)) == a
    b = NameAddr.parse("sip:bob@h;tag=y")  # addr-spec: params belong to the header
    assert b.uri.params == {} and b.tag == "y"
    c = NameAddr.parse("Bob Builder <sip:bob@h>")
    assert c.display == "Bob Builder" and str(c) == '"Bob Builder" <sip:bob@h>'
    for bad in ('"open <sip:a@h>', "<sip:a@h", "< sip:a@h>", "a,b <sip:a@h>", "sip:a@h?x=y", "<sip:a@h>x"):
        with pytest.raises(SipParseError):
            NameAddr.parse(bad)


def test_via_parse_and_str() -> None:
    v = Via.parse(
        "SIP / 2.0 / udp  [2001:db8::9:1]:5070 ; branch = z9hG4bKx ; rport=5071;received=[2001:db8::2]"
    )
    assert (v.transport, v.host, v.port, v.branch, v.rport) == (
        "UDP",
        "2001:db8::9:1",
        5070,
        "z9hG4bKx",
        5071,
    )
    assert v.received == "2001:db8::2"
    assert str(v) == "SIP/2.0/UDP [2001:db8::9:1]:5070;branch=z9hG4bKx;rport=5071;received=[2001:db8::2]"
    assert Via.parse(str(v)) == v
    for bad in ("SIP/2.0/UDP", "SIP/2.0 host", "SIP/2.0/UDP host;;", "SIP/2.0/UDP host:x"):
        with pytest.raises(SipParseError):
            Via.parse(bad)


def test_cseq() -> None:
    assert CSeq.parse(" 0009 \t INVITE ") == CSeq(9, "INVITE")
    assert str(CSeq(4294967295, "BYE")) == "4294967295 BYE"
    for bad in ("4294967296 BYE", "1", "x INVITE", "-1 BYE", "1 IN VITE"):
        with pytest.raises(SipParseError):
            CSeq.parse(bad)


def test_udp_truncation_and_missing_length() -> None:
    # RFC 3261 18.3: extra octets after Content-Length are discarded on datagrams...
    assert parse_message(INVITE + b"garbage").body == b"v=0\n"
    # ...and fewer octets than announced are an error.
    with pytest.raises(SipParseError, match="Bad Content-Length"):
        parse_message(INVITE[:-2])
    no_len = INVITE.replace(b"Content-Length: 4\r\n", b"")
    assert parse_message(no_len).body == b"v=0\n"


def test_stream_parser_framing() -> None:
    parser = StreamParser()
    assert parser.feed(b"\r\n\r\n") == []  # RFC 5626 keepalive
    out: list[Request | Response | SipParseError] = []
    for i in range(0, len(INVITE), 7):  # dribbled in small pieces
        out += parser.feed(INVITE[i : i + 7])
    assert len(out) == 1 and isinstance(out[0], Request) and out[0].body == b"v=0\n"
    bad = INVITE.replace(b"CSeq: 314159 INVITE", b"CSeq: 314159 BYE")
    out = parser.feed(bad + b"\r\n\r\n" + INVITE)
    assert isinstance(out[0], SipParseError) and out[0].reason == "CSeq method does not match Request-Line"
    assert out[0].request is not None and out[0].request.method == "INVITE"
    assert isinstance(out[1], Request)
    with pytest.raises(SipParseError, match="Missing Content-Length"):
        StreamParser().feed(INVITE.replace(b"Content-Length: 4\r\n", b""))
    with pytest.raises(SipParseError, match="Bad Content-Length"):
        StreamParser().feed(INVITE.replace(b"Content-Length: 4", b"Content-Length: -4"))
    with pytest.raises(SipParseError, match="too large"):
        StreamParser().feed(b"INVITE sip:a@b SIP/2.0\r\nX: " + b"a" * 70000)


def test_partial_request_for_400() -> None:
    broken = INVITE.replace(b"To: <sip:100@example.com>", b'To: "unterminated <sip:100@example.com>')
    with pytest.raises(SipParseError) as info:
        parse_message(broken)
    assert info.value.reason == "Bad To"
    partial = info.value.request
    assert (
        partial is not None
        and partial.method == "INVITE"
        and partial.call_id == "a84b4c76e66710@pc33.example.com"
    )
    # Responses never carry a partial request: they are discarded.
    with pytest.raises(SipParseError) as info2:
        parse_message(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\r\n\r\n")
    assert info2.value.reason == "Missing To" and info2.value.request is None


def test_ids() -> None:
    b1, b2 = new_branch(), new_branch()
    assert b1.startswith("z9hG4bK") and b1 != b2 and len(b1) > 12
    assert new_tag() != new_tag()
    cid = new_call_id("192.0.2.10")
    assert cid.endswith("@192.0.2.10") and len(cid) > 20


def ok_request_with_tag(r: Request) -> Request:
    """An in-dialog copy of `r` whose To already carries tag 'abc'."""
    headers = r.headers.copy()
    headers.set("To", "<sip:100@example.com>;tag=abc")
    return Request("BYE", r.uri, headers)


def test_keepalive_and_unvalidated_list_header() -> None:
    from voice.sip.message import is_keepalive

    assert is_keepalive(b"\r\n\r\n") and is_keepalive(b"\r\n")
    assert not is_keepalive(b"") and not is_keepalive(INVITE)
    with pytest.raises(SipParseError, match="Empty message"):
        parse_message(b"\r\n\r\n")
    # A list header nobody validates, with an unbalanced quote, comes back whole instead of raising.
    h = Headers([("Supported", 'timer, "oops')])
    assert h.get_all("Supported") == ['timer, "oops']
