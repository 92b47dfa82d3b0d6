"""SDP parsing and the offer/answer choices (RFC 4566, RFC 3264, RFC 4733)."""

from __future__ import annotations

from pathlib import Path

import pytest

from voice.sip.message import parse_message
from voice.sip.sdp import (
    Codec,
    SdpError,
    SessionDescription,
    build_answer,
    build_offer,
    negotiate,
)

TORTURE = Path(__file__).parent / "data" / "sip-torture"

# What a softphone typically offers: Opus first, then G.711 A-law, µ-law, DTMF on pt 96.
SOFTPHONE_OFFER = (
    b"v=0\r\n"
    b"o=alice 2890844526 2890844526 IN IP4 192.0.2.7\r\n"
    b"s=call\r\n"
    b"c=IN IP4 192.0.2.7\r\n"
    b"t=0 0\r\n"
    b"m=audio 49170 RTP/AVP 111 8 0 96\r\n"
    b"a=rtpmap:111 opus/48000/2\r\n"
    b"a=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
    b"a=rtpmap:96 telephone-event/8000\r\n"
    b"a=fmtp:96 0-15\r\n"
    b"a=ptime:30\r\n"
    b"a=sendrecv\r\n"
    b"m=video 51372 RTP/AVP 99\r\n"
    b"a=rtpmap:99 H264/90000\r\n"
)


def sdp(text: str) -> SessionDescription:
    return SessionDescription.parse(text.replace("\n", "\r\n").encode())


def test_parse_fields() -> None:
    sd = SessionDescription.parse(SOFTPHONE_OFFER)
    assert (sd.origin_username, sd.origin_session_id, sd.origin_address) == (
        "alice",
        "2890844526",
        "192.0.2.7",
    )
    assert sd.connection == "192.0.2.7" and sd.session_name == "call"
    audio, video = sd.media
    assert (audio.media, audio.port, audio.proto, audio.formats) == (
        "audio",
        49170,
        "RTP/AVP",
        [111, 8, 0, 96],
    )
    assert audio.rtpmap[111] == "opus/48000/2" and audio.fmtp == {96: "0-15"}
    assert audio.ptime == 30 and audio.direction == "sendrecv" and video.port == 51372
    assert [c.name for c in audio.codecs()] == ["opus", "PCMA", "PCMU", "telephone-event"]
    assert audio.codec(96) == Codec(96, "telephone-event", 8000, "0-15")


def test_serialize_round_trip() -> None:
    sd = SessionDescription.parse(SOFTPHONE_OFFER)
    again = SessionDescription.parse(sd.serialize())
    assert again == sd


def test_negotiate_keeps_caller_order_and_finds_dtmf() -> None:
    neg = negotiate(SessionDescription.parse(SOFTPHONE_OFFER))
    assert neg.codec == Codec(8, "PCMA", 8000)  # caller prefers PCMA over PCMU; opus unsupported
    assert neg.dtmf_payload_type == 96
    assert (neg.remote_host, neg.remote_port, neg.ptime) == ("192.0.2.7", 49170, 30)
    assert (neg.remote_direction, neg.local_direction) == ("sendrecv", "sendrecv")
    assert negotiate(SessionDescription.parse(SOFTPHONE_OFFER), supported=("PCMU",)).codec.payload_type == 0


def test_answer_mirrors_offer_and_rejects_video() -> None:
    neg = negotiate(SessionDescription.parse(SOFTPHONE_OFFER))
    answer = build_answer(neg, "192.0.2.10", 40000, session_id=1234, version=1)
    assert answer == (
        b"v=0\r\no=- 1234 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n"
        b"m=audio 40000 RTP/AVP 8 96\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:96 telephone-event/8000\r\n"
        b"a=fmtp:96 0-16\r\na=ptime:20\r\na=sendrecv\r\nm=video 0 RTP/AVP 99\r\n"
    )
    parsed = SessionDescription.parse(answer)
    assert [m.port for m in parsed.media] == [40000, 0]


def test_static_payloads_without_rtpmap_and_session_connection() -> None:
    # RFC 4475 sdp01's body: static pts 0 and 12 with no rtpmap lines.
    msg = parse_message((TORTURE / "rfc4475" / "sdp01.dat").read_bytes())
    neg = negotiate(SessionDescription.parse(msg.body))
    assert neg.codec == Codec(0, "PCMU", 8000) and neg.dtmf_payload_type is None
    assert (neg.remote_host, neg.remote_port, neg.ptime) == ("192.0.2.5", 49217, 20)
    assert neg.offer_media == [("audio", "RTP/AVP", "0 12"), ("video", "RTP/AVP", "31")]


def test_ipv6_offer_and_answer() -> None:
    data = (TORTURE / "rfc5118" / "ipv4-mapped-ipv6.dat").read_bytes().replace(b"\n", b"\r\n")
    sd = SessionDescription.parse(parse_message(data).body)
    assert sd.connection == "::ffff:192.0.2.2" and sd.origin_addrtype == "IP6"
    with pytest.raises(SdpError, match="no common codec"):
        negotiate(sd)  # G726-32 only
    offer = sdp(
        "v=0\no=- 1 1 IN IP6 2001:db8::20\ns=-\nc=IN IP6 2001:db8::20\nt=0 0\nm=audio 6000 RTP/AVP 0\n"
    )
    answer = build_answer(negotiate(offer), "2001:db8::10", 7000, 5, 6)
    assert b"c=IN IP6 2001:db8::10\r\n" in answer and b"o=- 5 6 IN IP6 2001:db8::10\r\n" in answer
    assert b"m=audio 7000 RTP/AVP 0\r\n" in answer


def test_an_ipv6_offer_to_an_ipv4_media_address_is_refused_with_warning_301() -> None:
    offer = sdp("v=0\no=- 1 1 IN IP6 2001:db8::20\ns=-\nc=IN IP6 2001:db8::20\nt=0 0\n"
                "m=audio 6000 RTP/AVP 0\n")
    with pytest.raises(SdpError, match=r"IPv6.*IPv4") as refused:
        negotiate(offer, local_host="192.0.2.10")
    assert refused.value.warn_code == 301
    assert negotiate(offer, local_host="2001:db8::10").remote_host == "2001:db8::20"  # v6 to v6 is fine
    v4 = sdp("v=0\no=- 1 1 IN IP4 192.0.2.5\ns=-\nc=IN IP4 192.0.2.5\nt=0 0\nm=audio 6000 RTP/AVP 0\n")
    assert negotiate(v4, local_host="::").remote_host == "192.0.2.5"  # a dual-stack socket reaches IPv4


def test_media_level_connection_wins() -> None:
    data = (TORTURE / "rfc5118" / "mult-ip-in-sdp.dat").read_bytes().replace(b"\n", b"\r\n")
    neg = negotiate(SessionDescription.parse(parse_message(data).body))
    assert (neg.remote_host, neg.remote_port, neg.codec.name) == ("192.0.2.1", 22334, "PCMU")


@pytest.mark.parametrize(
    ("extra", "conn", "remote", "local"),
    [
        ("a=sendonly\n", "192.0.2.7", "sendonly", "recvonly"),
        ("a=inactive\n", "192.0.2.7", "inactive", "inactive"),
        ("a=recvonly\n", "192.0.2.7", "recvonly", "sendonly"),
        ("", "0.0.0.0", "sendonly", "recvonly"),  # RFC 2543 hold
    ],
)
def test_hold_detection(extra: str, conn: str, remote: str, local: str) -> None:
    offer = sdp(
        f"v=0\no=- 1 2 IN IP4 192.0.2.7\ns=-\nc=IN IP4 {conn}\nt=0 0\nm=audio 4000 RTP/AVP 0\n{extra}"
    )
    neg = negotiate(offer)
    assert (neg.remote_direction, neg.local_direction) == (remote, local)
    assert f"a={local}\r\n".encode() in build_answer(neg, "192.0.2.10", 5000, 1, 2)


def test_session_level_direction() -> None:
    offer = sdp("v=0\no=- 1 2 IN IP4 h\ns=-\nc=IN IP4 192.0.2.7\nt=0 0\na=sendonly\nm=audio 4000 RTP/AVP 8\n")
    assert negotiate(offer).local_direction == "recvonly"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("m=audio 0 RTP/AVP 0\n", "port 0"),
        ("m=audio 4000 RTP/AVP 18 9\n", "no common codec"),
        ("m=video 4000 RTP/AVP 31\n", "no RTP/AVP audio"),
        ("m=audio 4000 RTP/SAVP 0\n", "no RTP/AVP audio"),
        ("m=audio 4000 RTP/AVP 0\na=rtpmap:0 PCMU/16000\n", "no common codec"),
    ],
)
def test_unacceptable_offers(body: str, message: str) -> None:
    with pytest.raises(SdpError, match=message):
        negotiate(sdp(f"v=0\no=- 1 2 IN IP4 h\ns=-\nc=IN IP4 192.0.2.7\nt=0 0\n{body}"))


def test_no_connection_address() -> None:
    with pytest.raises(SdpError, match="no connection"):
        negotiate(sdp("v=0\no=- 1 2 IN IP4 h\ns=-\nt=0 0\nm=audio 4000 RTP/AVP 0\n"))


@pytest.mark.parametrize(
    "text",
    [b"", b"o=- 1 1 IN IP4 h\r\n", b"v=0\r\nm=audio x RTP/AVP 0\r\n", b"v=0\r\nc=IN IP9 h\r\n",
     b"v=0\r\nm =video 3227 RTP/AVP 31\r\n", b"v=0\r\n\xff\xfe\r\n",
     b"v=0\r\nm=audio 1 RTP/AVP 0\r\na=rtpmap:x y\r\n"],
)  # fmt: skip
def test_parse_errors(text: bytes) -> None:
    with pytest.raises(SdpError):
        SessionDescription.parse(text)


def test_build_offer_is_negotiable() -> None:
    offer = build_offer("192.0.2.10", 30000, 77, 1)
    assert offer == (
        b"v=0\r\no=- 77 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n"
        b"m=audio 30000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
        b"a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n"
    )
    neg = negotiate(
        SessionDescription.parse(build_offer("192.0.2.10", 30000, 77, 1, codecs=("PCMA",), dtmf_pt=97))
    )
    assert (neg.codec.name, neg.dtmf_payload_type, neg.remote_port) == ("PCMA", 97, 30000)
    with pytest.raises(SdpError):
        build_offer("h", 1, 1, 1, codecs=("opus",))


@pytest.mark.parametrize(
    ("conn", "message"),
    [
        ("IN IP4 localhost", "'localhost' is not an IP address"),
        ("IN IP4 media.example.com", "not an IP address"),
        ("IN IP4 192.0.2.1\x00", "not an IP address"),
        ("IN IP4 127.1", "not an IP address"),  # inet_aton would take it; we take literals only
        ("IN IP6 fe80::1%eth0", "not an IP address"),
        ("IN IP4 224.2.1.1/127", "multicast"),
    ],
)
def test_media_address_must_be_a_unicast_ip_literal(conn: str, message: str) -> None:
    """Issue 10: a name in c= was resolved by every sendto (a blocking lookup per packet)."""
    with pytest.raises(SdpError, match=message):
        negotiate(sdp(f"v=0\no=- 1 2 IN IP4 h\ns=-\nc={conn}\nt=0 0\nm=audio 4000 RTP/AVP 0\n"))


def test_media_level_name_is_refused_even_with_a_session_address() -> None:
    with pytest.raises(SdpError, match=r"'rtp\.example' is not an IP address"):
        negotiate(sdp("v=0\no=- 1 2 IN IP4 h\ns=-\nc=IN IP4 192.0.2.7\nt=0 0\n"
                      "m=audio 4000 RTP/AVP 0\nc=IN IP4 rtp.example\n"))


@pytest.mark.parametrize("text", [
    b"v=0\r\nc=IN IP4 2001:db8::1\r\n", b"v=0\r\nc=IN IP6 192.0.2.1\r\n",
    b"v=0\r\nm=audio 65536 RTP/AVP 0\r\n",
    b"v=0\r\nm=audio \xc2\xb2 RTP/AVP 0\r\n", b"v=0\r\nm=audio 4000/\xc2\xb2 RTP/AVP 0\r\n"])
def test_address_type_and_port_range_are_checked(text: bytes) -> None:
    with pytest.raises(SdpError):
        SessionDescription.parse(text)


def test_port_65535_and_odd_digits_in_formats() -> None:
    offer = sdp("v=0\no=- 1 2 IN IP4 h\ns=-\nc=IN IP4 192.0.2.7\nt=0 0\nm=audio 65535 RTP/AVP ² 8 0\n"
                "a=ptime:²\na=rtpmap:8 PCMA/²\n")
    neg = negotiate(offer)  # "²" is str.isdigit() but not a number: ignored, not a crash
    assert (neg.remote_port, neg.codec.name, neg.ptime) == (65535, "PCMU", 20)
