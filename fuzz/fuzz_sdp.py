"""Fuzz target: the SDP parser and offer/answer (voice/sip/sdp.py).

Contract: SessionDescription.parse raises nothing but SdpError; negotiate() on what it parsed
raises nothing but SdpError; a parsed description serializes.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from voice.sip.sdp import SdpError, SessionDescription, negotiate


def test_one_input(data: bytes) -> None:
    try:
        sd = SessionDescription.parse(data)
    except SdpError:
        return
    sd.serialize()
    try:
        negotiate(sd)
    except SdpError:
        pass


if __name__ == "__main__":
    from fuzz._harness import main

    main(test_one_input)
