"""Fuzz target: the SIP core (voice/sip/core.py and the transactions, dialogs, digest behind it).

Contract: SipCore.receive raises nothing on any datagram, nor handle_timer after it; when the
bytes were a valid message, everything the core sends in answer is valid SIP itself.
"""

from __future__ import annotations

import ipaddress
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from voice.sip.core import CallPolicy, LocalIdentity, SipCore
from voice.sip.digest import DigestVerifier
from voice.sip.message import SipParseError, parse_message
from voice.sip.transaction import Address, TimerValues

_SOURCE = Address("192.0.2.7", 5070, "udp")
_VERIFIER = DigestVerifier("fuzz.test", {"alice": "secret"}, secret=b"f" * 32)


def test_one_input(data: bytes) -> None:
    try:
        valid = parse_message(data) is not None
    except SipParseError:
        valid = False
    # Untrusted source with digest on odd first bytes, trusted otherwise: both policies' paths.
    trusted = "192.0.2.0/28" if data[:1] and data[0] & 1 else "10.0.0.0/8"
    core = SipCore(LocalIdentity(host="192.0.2.1", port=5060),
                   CallPolicy(trusted=[ipaddress.ip_network(trusted)], verifier=_VERIFIER),
                   TimerValues(t1=0.5, t2=4.0, t4=5.0))
    core.receive(data, _SOURCE, 1.0)
    core.handle_timer(40.0)
    sent = core.outgoing()
    if valid:
        for out, _peer in sent:
            parse_message(out)


if __name__ == "__main__":
    from fuzz._harness import main

    main(test_one_input)
