"""Fuzz target: the RTP, RTCP and RFC 4733 parsers (voice/rtp/packet.py, rtcp.py, dtmf.py).

The first byte picks the parser for the rest. Contract: RtpPacket.parse raises nothing but
PacketError; rtcp.parse raises nothing but ValueError (its documented error); a telephone-event
payload parses or is None, and the RFC 4733 receiver raises nothing on any sequence of them.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from voice.rtp import rtcp
from voice.rtp.dtmf import Rfc4733Receiver, TelephoneEvent
from voice.rtp.packet import PacketError, RtpPacket, is_rtcp


def test_one_input(data: bytes) -> None:
    if not data:
        return
    selector, body = data[0] % 3, data[1:]
    if selector == 0:
        is_rtcp(body)
        try:
            packet = RtpPacket.parse(body)
        except PacketError:
            return
        assert packet.serialize()[:2]  # re-serializes
    elif selector == 1:
        try:
            rtcp.parse(body)
        except ValueError:
            pass
    else:
        receiver = Rfc4733Receiver()
        for pos in range(0, len(body) - 7, 8):  # 4-byte RTP timestamp + 4-byte payload each
            TelephoneEvent.parse(body[pos + 4 : pos + 8])
            digit = receiver.receive(body[pos + 4 : pos + 8], int.from_bytes(body[pos : pos + 4], "big"))
            assert digit is None or digit in "0123456789*#ABCD"


if __name__ == "__main__":
    from fuzz._harness import main

    main(test_one_input)
