"""RFC 4475 and RFC 5118 torture messages through the SIP parser.

Each message has the outcome its RFC section gives: valid ones parse with the fields the RFC
describes; invalid ones raise SipParseError with the reason an element would put in its 400.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import pytest

from voice.sip.message import Request, Response, SipParseError, StreamParser, make_response, parse_message

DATA = Path(__file__).parent / "data" / "sip-torture"


def load(name: str) -> bytes:
    suite, _, stem = name.partition("/")
    data = (DATA / suite / f"{stem}.dat").read_bytes()
    if suite == "rfc5118":
        # These copies have bare LF; the RFC's messages (and Content-Length values) use CRLF.
        data = data.replace(b"\n", b"\r\n")
    return data


def req(m: Request | Response) -> Request:
    assert isinstance(m, Request)
    return m


def resp(m: Request | Response) -> Response:
    assert isinstance(m, Response)
    return m


# ------------------------------------------------------------------ valid (RFC 4475 3.1.1, 3.2-3.4)


def check_wsinv(m: Request | Response) -> None:
    r = req(m)
    assert r.method == "INVITE"
    assert r.call_id == "wsinv.ndaksdj@192.0.2.1"
    assert [v.host for v in r.vias] == ["192.0.2.2", "spindle.example.com", "192.168.255.111"]
    assert [v.branch for v in r.vias] == ["390skdjuw", "z9hG4bK9ikj8", "z9hG4bK30239"]
    assert r.max_forwards == 68
    assert (r.cseq.seq, r.cseq.method) == (9, "INVITE")
    assert r.to.tag == "1918181833n"
    assert r.from_.tag == "98asjd8"
    assert r.from_.display == 'J Rosenberg \\"'
    assert r.headers.get("NewFangledHeader") == "newfangled value continued newfangled value"
    assert r.headers.get("Subject") == ""
    (contact,) = r.contacts
    assert contact.display == 'Quoted string ""'
    assert contact.params == {"newparam": "newvalue", "secondparam": None, "q": "0.33"}
    assert r.headers.get_all("Route") == ["<sip:services.example.com;lr;unknownwith=value;unknown-no-value>"]
    assert r.request_uri.params == {"unknownparam": None}
    assert len(r.body) == 150 and r.body.startswith(b"v=0\r\n")


def check_intmeth(m: Request | Response) -> None:
    r = req(m)
    method = "!interesting-Method0123456789_*+`.%indeed'~"
    assert r.method == method and r.cseq.method == method
    uri = r.request_uri
    assert uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert uri.host == "example.com"
    assert r.to.display == "BEL:\x07 NUL:\x00 DEL:\x7f"
    assert r.from_.display == "token1~` token2'+_ token3*%!.-"
    assert r.from_.tag == "_token~1'+`*%!-."
    assert r.call_id == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    assert r.max_forwards == 255
    assert r.headers.get("extensionHeader-!.%*+_`'~") == "\ufeff大停電"


def check_esc01(m: Request | Response) -> None:
    r = req(m)
    assert r.request_uri.user_unescaped == "sips:user@example.com"
    assert r.request_uri.host == "example.net"
    assert r.to.uri.user_unescaped == "user"
    assert r.from_.uri.user_unescaped == "I have spaces"
    (contact,) = r.contacts
    assert contact.uri.user_unescaped == "caller"
    assert contact.uri.params == {"%6C%72": None, "n%61me": "v%61lue%25%34%31"}
    assert r.content_type == "application/sdp"


def check_escnull(m: Request | Response) -> None:
    r = req(m)
    assert r.to.uri.user_unescaped == "null-\x00-null"
    assert [c.uri.user_unescaped for c in r.contacts] == ["\x00", "\x00\x00"]


def check_esc02(m: Request | Response) -> None:
    r = req(m)
    # An escaped method is a different (unknown) method: the lead answers 501, not REGISTER.
    assert r.method == "RE%47IST%45R" and r.cseq.method == "RE%47IST%45R"
    assert r.to.display == "%Z%45"
    assert len(r.contacts) == 2
    assert r.headers.get("C%6Fntact") == "<sip:alias2@host2.example.com>"


def check_lwsdisp(m: Request | Response) -> None:
    assert req(m).from_.display == "caller"
    assert req(m).from_.tag == "323"


def check_longreq(m: Request | Response) -> None:
    r = req(m)
    assert len(r.vias) == 34
    assert r.vias[0].host == "sip33.example.com" and r.vias[-1].received == "192.0.2.5"
    assert r.to.display is not None and "extremeextreme" in r.to.display
    assert r.to.uri.port == 6000 and len(r.to.uri.params) == 3
    assert (
        r.from_.tag is not None and r.from_.tag.startswith("1298298298") and r.from_.tag.endswith("2982424")
    )
    assert len(r.from_.params) == 3
    assert r.call_id.startswith("longreq.onereallyreally") and r.call_id.endswith("longcallid")
    assert any(n.startswith("Unknown-LongLong") for n, _ in r.headers.items())
    assert len(r.body) == 150


def check_dblreq(m: Request | Response) -> None:
    r = req(m)
    # RFC 4475 3.1.1.8 / RFC 3261 18.3: over UDP the octets past Content-Length are discarded.
    assert r.method == "REGISTER" and r.body == b""
    assert r.call_id == "dblreq.0ha0isndaksdj99sdfafnl3lk233412"


def check_semiuri(m: Request | Response) -> None:
    uri = req(m).request_uri
    assert uri.user == "user;par=u%40example.net" and uri.host == "example.com" and uri.params == {}
    assert req(m).headers.get_all("Accept") == [
        "application/sdp", "application/pkcs7-mime", "multipart/mixed", "multipart/signed",
        "message/sip", "message/sipfrag",
    ]  # fmt: skip


def check_transports(m: Request | Response) -> None:
    assert [v.transport for v in req(m).vias] == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]


def check_mpart01(m: Request | Response) -> None:
    r = req(m)
    assert r.content_type == "multipart/mixed"
    assert len(r.body) == 553 and r.body.endswith(b"--7a9cbec02ceef655--\r\n")
    assert r.top_via.has_rport and r.top_via.rport is None


def check_unreason(m: Request | Response) -> None:
    r = resp(m)
    assert r.status == 200
    assert r.reason.startswith("= 2**3 * 5**2 но сто девяносто девять")
    assert len(r.body) == 154


def check_noreason(m: Request | Response) -> None:
    assert (resp(m).status, resp(m).reason) == (100, "")


def check_inv2543(m: Request | Response) -> None:
    r = req(m)
    assert r.top_via.branch is None  # RFC 2543 peer: no magic cookie, still parsed
    assert r.max_forwards is None
    assert r.body.startswith(b"v=0") and r.body.endswith(b"RTP/AVP 0\r\n")  # no Content-Length on UDP


def check_badvers(m: Request | Response) -> None:
    assert req(m).version == "SIP/7.0"  # the lead answers 505
    assert req(m).top_via.protocol == "SIP/7.0"


def check_unknown_scheme(m: Request | Response) -> None:
    assert not req(m).request_uri.is_sip  # the lead answers 416


def check_unksm2(m: Request | Response) -> None:
    r = req(m)
    assert (r.to.uri.scheme, r.to.uri.opaque) == ("isbn", "2983792873")
    assert r.from_.uri.scheme == "http" and r.contacts[0].uri.scheme == "name"


def check_zeromf(m: Request | Response) -> None:
    assert req(m).max_forwards == 0


def check_regescrt(m: Request | Response) -> None:
    assert req(m).contacts[0].uri.headers == {"Route": "%3Csip:sip.example.com%3E"}


def check_cparam01(m: Request | Response) -> None:
    (c,) = req(m).contacts
    assert c.params == {"unknownparam": None} and c.uri.params == {}


def check_cparam02(m: Request | Response) -> None:
    (c,) = req(m).contacts
    assert c.params == {} and c.uri.params == {"unknownparam": None}


def check_bcast(m: Request | Response) -> None:
    assert [v.host for v in resp(m).vias] == ["192.0.2.198", "255.255.255.255"]


def check_ipv6_good(m: Request | Response) -> None:
    r = req(m)
    assert r.request_uri.host == "2001:db8::10" and str(r.request_uri) == "sip:[2001:db8::10]"
    assert r.top_via.host == "2001:db8::9:1"
    assert r.contacts[0].uri.host == "2001:db8::1"


def check_port_ambiguous(m: Request | Response) -> None:
    assert (req(m).request_uri.host, req(m).request_uri.port) == ("2001:db8::10:5070", None)


def check_port_unambiguous(m: Request | Response) -> None:
    assert (req(m).request_uri.host, req(m).request_uri.port) == ("2001:db8::10", 5070)


def check_received_v6(m: Request | Response) -> None:
    assert req(m).top_via.received == "2001:db8::9:255"


def check_mult_ip_header(m: Request | Response) -> None:
    vias = req(m).vias
    assert [(v.host, v.port) for v in vias] == [
        ("2001:db8::9:1", 6050),
        ("192.0.2.1", None),
        ("2001:db8::9:255", None),
    ]
    assert vias[2].received == "192.0.2.200"


def check_v4_mapped(m: Request | Response) -> None:
    r = req(m)
    assert (r.top_via.host, r.top_via.port) == ("::ffff:192.0.2.10", 19823)
    assert r.contacts[0].uri.host == "::ffff:192.0.2.2"
    assert len(r.body) == 236


def check_three_colons(m: Request | Response) -> None:
    # RFC 5118 4.10: RFC 3261's ABNF admits the 3-colon form; a robust parser accepts it.
    assert req(m).request_uri.host == "2001:db8:::192.0.2.1"


def check_two_colons(m: Request | Response) -> None:
    assert req(m).request_uri.host == "2001:db8::192.0.2.1"


def check_basic(m: Request | Response) -> None:
    # Messages whose interest is above the parser (RFC 4475 3.2-3.3): just all the core fields.
    m.call_id, m.cseq, m.from_, m.to, m.top_via  # noqa: B018
    assert m.vias


VALID: dict[str, Callable[[Request | Response], None]] = {
    "rfc4475/wsinv": check_wsinv,
    "rfc4475/intmeth": check_intmeth,
    "rfc4475/esc01": check_esc01,
    "rfc4475/escnull": check_escnull,
    "rfc4475/esc02": check_esc02,
    "rfc4475/lwsdisp": check_lwsdisp,
    "rfc4475/longreq": check_longreq,
    "rfc4475/dblreq": check_dblreq,
    "rfc4475/semiuri": check_semiuri,
    "rfc4475/transports": check_transports,
    "rfc4475/mpart01": check_mpart01,
    "rfc4475/unreason": check_unreason,
    "rfc4475/noreason": check_noreason,
    "rfc4475/badvers": check_badvers,
    "rfc4475/badbranch": check_basic,
    "rfc4475/unkscm": check_unknown_scheme,
    "rfc4475/novelsc": check_unknown_scheme,
    "rfc4475/unksm2": check_unksm2,
    "rfc4475/bext01": check_basic,
    "rfc4475/invut": check_basic,
    "rfc4475/regaut01": check_basic,
    "rfc4475/bcast": check_bcast,
    "rfc4475/zeromf": check_zeromf,
    "rfc4475/cparam01": check_cparam01,
    "rfc4475/cparam02": check_cparam02,
    "rfc4475/regescrt": check_regescrt,
    "rfc4475/sdp01": check_basic,
    "rfc4475/inv2543": check_inv2543,
    "rfc5118/ipv6-good": check_ipv6_good,
    "rfc5118/port-ambiguous": check_port_ambiguous,
    "rfc5118/port-unambiguous": check_port_unambiguous,
    "rfc5118/via-received-param-with-delim": check_received_v6,
    "rfc5118/via-received-param-no-delim": check_received_v6,
    "rfc5118/mult-ip-in-header": check_mult_ip_header,
    "rfc5118/mult-ip-in-sdp": check_basic,
    "rfc5118/ipv4-mapped-ipv6": check_v4_mapped,
    "rfc5118/ipv6-bug-abnf-3-colons": check_three_colons,
    "rfc5118/ipv6-correct-abnf-2-colons": check_two_colons,
}

# name -> (reason, whether a partial request for a 400 must be available)
INVALID: dict[str, tuple[str, bool]] = {
    "rfc4475/badinv01": ("Bad Via", False),  # the Via itself is garbage: nowhere to send a 400
    "rfc4475/clerr": ("Bad Content-Length", True),
    "rfc4475/ncl": ("Bad Content-Length", True),
    "rfc4475/scalar02": ("Bad CSeq", True),
    "rfc4475/scalarlg": ("Bad CSeq", False),  # a response: discarded
    "rfc4475/quotbal": ("Bad To", True),
    "rfc4475/ltgtruri": ("Request-URI in angle brackets", True),
    "rfc4475/lwsruri": ("Whitespace in Request-URI", True),
    "rfc4475/lwsstart": ("Extra whitespace in Request-Line", True),
    "rfc4475/trws": ("Trailing whitespace in Request-Line", True),
    "rfc4475/escruri": ("Headers not allowed in Request-URI", True),
    "rfc4475/baddate": ("Bad Date", True),
    "rfc4475/regbadct": ("Bad Contact", True),
    "rfc4475/badaspec": ("Bad To", True),
    "rfc4475/baddn": ("Bad From", True),
    "rfc4475/mismatch01": ("CSeq method does not match Request-Line", True),
    "rfc4475/mismatch02": ("CSeq method does not match Request-Line", True),
    "rfc4475/bigcode": ("Bad status code", False),
    "rfc4475/insuf": ("Missing To", True),
    "rfc4475/multi01": ("Multiple Call-ID values", True),
    "rfc4475/mcl01": ("Multiple Content-Length values", True),
    "rfc4475/test": ("Malformed header line", False),
    "rfc5118/ipv6-bad": ("Bad Request-URI", True),
    # RFC 5118 4.6 prints Content-Length: 268 over a 251-octet body; see test_ipv6_in_sdp_fixed.
    "rfc5118/ipv6-in-sdp": ("Bad Content-Length", True),
}

DETAILS = {
    "rfc4475/quotbal": "unterminated quoted string",
    "rfc4475/badaspec": "whitespace inside <...>",
    "rfc4475/baddn": "bad display name",
    "rfc4475/regbadct": "must be enclosed in <...>",
    "rfc4475/badinv01": "empty parameter",
    "rfc4475/scalar02": "out of range",
    "rfc5118/ipv6-bad": "bad port",
}


def test_every_file_has_an_expected_outcome() -> None:
    on_disk = {f"{p.parent.name}/{p.stem}" for p in DATA.glob("*/*.dat")}
    assert on_disk == set(VALID) | set(INVALID)
    assert len(on_disk) == 62


@pytest.mark.parametrize("name", sorted(VALID))
def test_valid_message_parses(name: str) -> None:
    VALID[name](parse_message(load(name)))


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_message_rejected(name: str) -> None:
    reason, answerable = INVALID[name]
    with pytest.raises(SipParseError) as info:
        parse_message(load(name))
    assert info.value.reason == reason
    if name in DETAILS:
        assert DETAILS[name] in str(info.value)
    if answerable:
        partial = info.value.request
        assert partial is not None
        answer = make_response(partial, 400, info.value.reason)
        assert answer.headers.raw_values("Via") == partial.headers.raw_values("Via")
        assert answer.serialize().startswith(f"SIP/2.0 400 {reason}\r\nVia: ".encode())
    else:
        assert info.value.request is None


def test_ipv6_in_sdp_fixed() -> None:
    data = load("rfc5118/ipv6-in-sdp").replace(b"Content-Length: 268", b"Content-Length: 251")
    r = req(parse_message(data))
    assert r.request_uri.host == "2001:db8::10"
    assert b"c=IN IP6 2001:db8::20" in r.body and len(r.body) == 251


def test_dblreq_over_a_stream_yields_both_requests() -> None:
    parser = StreamParser()
    out = parser.feed(load("rfc4475/dblreq"))
    assert [type(m).__name__ for m in out] == ["Request", "Request"]
    methods = [m.method for m in out if isinstance(m, Request)]
    assert methods == ["REGISTER", "INVITE"]
    # The INVITE's Content-Length (150) stops 2 octets short of its SDP: on a stream the
    # leftover "C\r\n" cannot be framed, so the next feed reports the broken stream.
    with pytest.raises(SipParseError, match="Missing Content-Length"):
        parser.feed(b"")


@pytest.mark.parametrize("name", sorted(VALID))
def test_round_trip(name: str) -> None:
    first = parse_message(load(name))
    again = parse_message(first.serialize())
    assert type(again) is type(first)
    if name == "rfc4475/inv2543":  # no Content-Length on the wire: serialize adds one
        assert again.headers.items() == [*first.headers.items(), ("Content-Length", str(len(first.body)))]
    else:
        assert again.headers.items() == first.headers.items()
    assert again.body == first.body
    assert (again.call_id, again.cseq, again.to, again.from_, again.vias) == (
        first.call_id, first.cseq, first.to, first.from_, first.vias,
    )  # fmt: skip
    if isinstance(first, Request):
        assert isinstance(again, Request)
        assert (again.method, again.uri, again.version) == (first.method, first.uri, first.version)
    else:
        assert isinstance(again, Response)
        assert (again.status, again.reason) == (first.status, first.reason)
    assert again.serialize() == first.serialize()


def test_mutations_raise_only_sip_parse_error() -> None:
    """Truncate and mutate every message; only SipParseError may ever come out, from any entry point."""
    rnd = random.Random(4475)
    alphabet = b' \t\r\n:;,<>"\\@[]%\x00\xff=/?0123456789aZ'
    names = sorted(VALID) + sorted(INVALID)
    cases = 0
    for name in names:
        data = load(name)
        variants = [data[:i] for i in range(0, len(data), max(1, len(data) // 30))]
        for _ in range(50):
            b = bytearray(data)
            for _ in range(rnd.randint(1, 4)):
                b[rnd.randrange(len(b))] = rnd.choice(alphabet)
            variants.append(bytes(b))
        for v in variants:
            cases += 1
            try:
                m = parse_message(v)
                m.call_id, m.cseq, m.from_, m.to, m.vias, m.contacts, m.content_type  # noqa: B018
                parse_message(m.serialize())
            except SipParseError:
                pass
            try:
                for item in StreamParser().feed(v):
                    assert isinstance(item, (Request, Response, SipParseError))
            except SipParseError:
                pass
    assert cases > 4000  # (how fast the parser is lives in the fuzz runs and benchmarks, not here)
