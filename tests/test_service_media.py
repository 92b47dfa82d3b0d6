"""The running service against sipp on loopback, with offers whose media cannot be used (issue 10
items 1 and 2): a host name in c= is refused with 488 and a reason (never resolved), an m= port
out of range likewise, and a call to m= port 65535 (whose RTCP port would be 65536) works without
an error in the log."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.peers import sip_options
from tests.peers.service import RunningService, running_service
from tests.peers.sipp import run_sipp

pytestmark = pytest.mark.peer


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    with running_service(tmp_path_factory.mktemp("svc"), asr={"engine": "none"}) as service:
        yield service


@pytest.mark.parametrize(("host", "port", "reason"), [
    ("localhost", 4000, "'localhost' is not an IP address"),
    ("media.attacker.invalid", 4000, "'media.attacker.invalid' is not an IP address"),
    ("192.0.2.1", 70000, "bad port in m= line"),
])
def test_unusable_media_in_the_offer_gets_488_with_the_reason(svc: RunningService, tmp_path: Path,
                                                              host: str, port: int, reason: str) -> None:
    result = run_sipp("bad_media_488.xml", svc.sip_address, workdir=tmp_path, calls=1, timeout=20,
                      keys={"media_host": host, "bad_port": port, "reason": reason})
    assert result.ok, result.describe()
    assert sip_options(svc.sip_port, timeout=2) is not None
    assert "Traceback" not in svc.log


def test_call_to_rtp_port_65535_runs_without_errors(svc: RunningService, tmp_path: Path) -> None:
    """The issue's OverflowError: RTCP to port 65536 closed the transport, then every tick logged."""
    result = run_sipp("listen_call.xml", svc.sip_address, workdir=tmp_path, calls=1, timeout=20,
                      keys={"rtp_port": 65535}, replace={'timeout="30000"': 'timeout="2500"'})
    assert result.ok, result.describe()
    log = svc.log
    assert "OverflowError" not in log and "Traceback" not in log and "RTP session on port" not in log
