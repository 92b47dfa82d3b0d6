"""Every RFC 4475 / RFC 5118 torture message through the whole SIP core: what it answers.

The parser's own view of each message is in test_sip_torture.py; this checks the UAS
behaviour the RFCs require on top (400 for invalid requests, 405/415/416/420/406 for the
application-layer cases, nothing sent for bad responses, and never an exception).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.sipfake import make_core
from voice.sip import events as ev
from voice.sip.transaction import Address

DATA = Path(__file__).parent / "data" / "sip-torture"

# file -> (expected status of the last response or None for silence, whether a call starts)
EXPECTED: dict[str, tuple[int | None, bool]] = {
    # 3.1.1 valid messages
    "rfc4475/wsinv": (481, False),  # valid, but carries a To tag for a dialog we never had
    "rfc4475/intmeth": (405, False),
    "rfc4475/esc01": (100, True),
    "rfc4475/escnull": (405, False),  # REGISTER: we are not a registrar
    "rfc4475/esc02": (405, False),
    "rfc4475/lwsdisp": (200, False),
    "rfc4475/longreq": (100, True),
    "rfc4475/dblreq": (405, False),
    "rfc4475/semiuri": (200, False),
    "rfc4475/transports": (200, False),
    "rfc4475/mpart01": (405, False),
    "rfc4475/unreason": (None, False),  # responses matching nothing are dropped
    "rfc4475/noreason": (None, False),
    # 3.1.2 invalid: 400 (505 for the version), responses discarded
    "rfc4475/badinv01": (None, False),  # no usable Via: nowhere to send a 400
    "rfc4475/clerr": (400, False),
    "rfc4475/ncl": (400, False),
    "rfc4475/scalar02": (400, False),
    "rfc4475/scalarlg": (None, False),  # a response
    "rfc4475/quotbal": (400, False),
    "rfc4475/ltgtruri": (400, False),
    "rfc4475/lwsruri": (400, False),
    "rfc4475/lwsstart": (400, False),
    "rfc4475/trws": (400, False),
    "rfc4475/escruri": (400, False),
    "rfc4475/baddate": (400, False),
    "rfc4475/regbadct": (400, False),
    "rfc4475/badaspec": (400, False),
    "rfc4475/baddn": (400, False),
    "rfc4475/badvers": (505, False),
    "rfc4475/mismatch01": (400, False),
    "rfc4475/mismatch02": (400, False),
    "rfc4475/bigcode": (None, False),
    # 3.2 transaction layer
    "rfc4475/badbranch": (200, False),
    # 3.3 application layer
    "rfc4475/insuf": (400, False),
    "rfc4475/unkscm": (416, False),
    "rfc4475/novelsc": (416, False),
    "rfc4475/unksm2": (405, False),
    "rfc4475/bext01": (420, False),
    "rfc4475/invut": (415, False),
    "rfc4475/regaut01": (405, False),
    "rfc4475/multi01": (400, False),
    "rfc4475/mcl01": (400, False),
    "rfc4475/bcast": (None, False),
    "rfc4475/zeromf": (200, False),  # an endpoint processes Max-Forwards: 0
    "rfc4475/cparam01": (405, False),
    "rfc4475/cparam02": (405, False),
    "rfc4475/regescrt": (405, False),
    "rfc4475/sdp01": (406, False),  # Accept excludes application/sdp
    # 3.4
    "rfc4475/inv2543": (100, True),
    "rfc4475/test": (None, False),  # no SIP version and no Via: nothing to answer to
    # RFC 5118
    "rfc5118/ipv6-good": (405, False),
    "rfc5118/ipv6-bad": (400, False),
    "rfc5118/port-ambiguous": (405, False),
    "rfc5118/port-unambiguous": (405, False),
    "rfc5118/via-received-param-with-delim": (481, False),
    "rfc5118/via-received-param-no-delim": (200, False),
    "rfc5118/ipv6-bug-abnf-3-colons": (200, False),
    "rfc5118/ipv6-correct-abnf-2-colons": (200, False),
    "rfc5118/ipv4-mapped-ipv6": (100, True),
    "rfc5118/mult-ip-in-header": (481, False),
    "rfc5118/ipv6-in-sdp": (400, False),  # the RFC's Content-Length is larger than its body
    "rfc5118/mult-ip-in-sdp": (400, False),
}


def test_every_file_has_an_expectation() -> None:
    files = {f"{p.parent.name}/{p.stem}" for p in DATA.glob("*/*.dat")}
    assert files == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_core_answers_torture_message(name: str) -> None:
    core = make_core()
    core.receive((DATA / f"{name}.dat").read_bytes(), Address("127.0.0.1", 5070), 0.0)
    out = core.outgoing()
    status, starts_call = EXPECTED[name]
    if status is None:
        assert out == []
    else:
        assert out, "expected a response"
        data, addr = out[-1]
        assert data.startswith(f"SIP/2.0 {status} ".encode())
        assert (addr.host, addr.port) != ("", 0)
    assert any(isinstance(e, ev.IncomingCall) for e in core.events()) == starts_call
