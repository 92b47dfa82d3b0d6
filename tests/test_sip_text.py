"""Issue 10 item 6 at parser level: header bytes that are not UTF-8 (a legacy PBX's ISO-8859-1
display name) are read as Latin-1, line by line, so no lone surrogate ever leaves the parser."""

from __future__ import annotations

from tests.sipfake import SDP_OFFER, Peer, make_core
from voice.sip import events as ev
from voice.sip.message import Request, StreamParser, decode_text, parse_message
from voice.sip.uri import SipUri


def latin1_invite() -> bytes:
    peer = Peer(make_core())
    text = peer.request("INVITE", body=SDP_OFFER).replace('"Alice"', '"J\xfcrgen M\xfcller"')
    text = text.replace("To: <sip:100@127.0.0.1>", "To: \"Zo\u00eb \u2603\" <sip:100@127.0.0.1>")
    # From in ISO-8859-1, To in UTF-8 (a snowman cannot be Latin-1): each line decoded on its own.
    head, _, body = text.partition("\r\n\r\n")
    lines = [ln.encode("latin-1") if ln.startswith("From:") else ln.encode("utf-8")
             for ln in head.split("\r\n")]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body.encode()


def all_text(message: Request) -> list[str]:
    return [message.uri, *(f"{n}: {v}" for n, v in message.headers.items())]


def test_latin1_display_name_is_readable_and_utf8_lines_stay_utf8() -> None:
    data = latin1_invite()
    assert b'"J\xfcrgen M\xfcller"' in data
    message = parse_message(data)
    assert isinstance(message, Request)
    assert message.from_.display == "J\xfcrgen M\xfcller"
    assert message.to.display == "Zo\u00eb \u2603"
    for text in all_text(message):
        text.encode("utf-8")  # no lone surrogates: this raised UnicodeEncodeError before
    assert "J\xfcrgen" in message.serialize().decode("utf-8")


def test_stream_parser_reads_latin1_too() -> None:
    data = latin1_invite()
    parser = StreamParser()
    (message,) = parser.feed(data[:100]) + parser.feed(data[100:])
    assert isinstance(message, Request) and message.from_.display == "J\xfcrgen M\xfcller"


def test_core_hands_the_call_a_readable_display_name() -> None:
    core = make_core()
    core.receive(latin1_invite(), Peer(core).addr, 0.0)
    (incoming,) = [e for e in core.events() if isinstance(e, ev.IncomingCall)]
    assert incoming.call.invite.from_.display == "J\xfcrgen M\xfcller"
    for data, _ in core.outgoing():
        data.decode("utf-8")  # what we echo back (From/To) is valid UTF-8


def test_decode_text_and_percent_escapes() -> None:
    assert decode_text("Jürgen".encode()) == "Jürgen"
    assert decode_text(b"J\xfcrgen") == "Jürgen"
    assert SipUri.parse("sip:J%FCrgen@example.com").user_unescaped == "Jürgen"
    assert SipUri.parse("sip:J%C3%BCrgen@example.com").user_unescaped == "Jürgen"
