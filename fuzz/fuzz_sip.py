"""Fuzz target: the SIP message parser (voice/sip/message.py, uri.py); fuzz_sip_core.py feeds the core.

Contract checked per input:
- parse_message raises nothing but SipParseError;
- what it returns never holds a lone surrogate (issue 10 item 6: text that is not UTF-8 is
  decoded as Latin-1), so every header value encodes as UTF-8 and the message re-serializes;
- the StreamParser (TCP framing) fed the same bytes in two pieces raises nothing; what it
  returns holds no lone surrogate either.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from voice.sip.message import Request, SipParseError, StreamParser, parse_message


def _check_text(message: Request | object) -> None:
    headers = getattr(message, "headers", None)
    if headers is None:
        return
    for name, value in headers.items():
        name.encode("utf-8")  # raises UnicodeEncodeError on a lone surrogate
        value.encode("utf-8")
    if isinstance(message, Request):
        message.uri.encode("utf-8")


def test_one_input(data: bytes) -> None:
    try:
        message = parse_message(data)
    except SipParseError:
        message = None
    if message is not None:
        _check_text(message)
        message.serialize()
    parser = StreamParser()
    half = len(data) // 2
    for part in (data[:half], data[half:]):
        try:
            framed = parser.feed(part)
        except SipParseError:
            break
        for item in framed:
            if not isinstance(item, SipParseError):
                _check_text(item)


if __name__ == "__main__":
    from fuzz._harness import main

    main(test_one_input)
