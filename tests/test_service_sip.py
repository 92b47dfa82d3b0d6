"""The running service (`voice run`) against sipp on loopback: the issue's reference call, CANCEL,
a missing ACK, re-INVITE hold/unhold over UDP and TCP, OPTIONS, the call policy, and a call from a
known number landing in that customer's timeline."""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile

from tests.peers import HOST, wait_for
from tests.peers.pcap import RtpStreamBuilder
from tests.peers.service import RunningService, running_service
from tests.peers.sipp import run_sipp

pytestmark = pytest.mark.peer


def call_records(svc: RunningService) -> list[dict[str, Any]]:
    """The IVR records of the calls that ended, in the order their end lines were logged.

    The log's per-call line carries ids, path and masked inputs only (no caller number, prompts
    or customer record), so the whole record is read from the call's interaction by its id."""
    out = []
    for line in svc.log.splitlines():
        if " voice.calls: {" not in line:
            continue
        logged = json.loads(line.split(" voice.calls: ", 1)[1])
        if logged.get("event") != "call_end" or not logged.get("interaction_id"):
            continue
        ivr = api(svc, "GET", f"/interactions/{logged['interaction_id']}").get("ivr")
        if ivr is None:  # logged at the flow's end, stored a moment later
            continue
        out.append(ivr)
    return out


def api(svc: RunningService, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    req = urllib.request.Request(
        f"{svc.http_url}/api/v1{path}", method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {svc.api_key}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    """One service for the module; T1 = 50 ms so the missing-ACK case ends in 3.2 s, not 32 s;
    whole calls recorded in stereo."""
    workdir = tmp_path_factory.mktemp("svc")
    # Keys only: these are SIP/DTMF tests, and g711a.pcap's talker must not answer the menu by voice
    # (speech through SIP is tests/test_service_speech.py).
    with running_service(workdir, sip={"t1_ms": 50}, rtp={"record": "both"},
                         asr={"engine": "none"}) as service:
        yield service


def test_uac_pcap_reference_call_completes_and_digit_reaches_the_flow(svc: RunningService,
                                                                      tmp_path: Path) -> None:
    result = run_sipp("uac_pcap", svc.sip_address, workdir=tmp_path, calls=1, timeout=40)
    assert result.ok, result.describe()
    assert result.successful == 1 and result.failed == 0
    wait_for(lambda: any(r["caller"] == "sipp" and r["inputs"] for r in call_records(svc)), 10,
             "the call's record in the log")
    record = next(r for r in call_records(svc) if r["caller"] == "sipp" and r["inputs"])
    assert record["flow"] == "main"
    assert record["inputs"][0]["kind"] == "dtmf" and record["inputs"][0]["value"] == "1"
    assert [p["node"] for p in record["path"]][:5] == ["welcome", "identify", "route_caller", "main_menu",
                                                        "billing"]
    assert record["ended"] == "caller_hangup"
    # [rtp] record = both: the call is in recordings/ as a stereo WAV (left caller, right us)
    wavs = sorted((svc.workdir / "recordings").glob("call-*.wav"))
    assert wavs
    data, rate = soundfile.read(str(wavs[0]), dtype="int16")
    assert rate == 8000 and data.ndim == 2 and len(data) > 8 * 8000  # the ~9 s call
    assert np.abs(data[:, 0]).max() > 1000 and np.abs(data[:, 1]).max() > 1000  # both sides spoke


@pytest.mark.parametrize(("conn", "media", "warning"), [
    (f"IN IP4 {HOST}", "m=audio 49170 RTP/AVP 18\r\na=rtpmap:18 G729/8000\r\n", "304 voice"),
    ("IN IP6 ::1", "m=audio 49170 RTP/AVP 0\r\n", "301 voice"),  # our media socket is IPv4
], ids=["no-common-codec", "ipv6-c-to-ipv4-node"])
def test_an_offer_we_cannot_take_gets_488_with_a_warning(svc: RunningService, conn: str, media: str,
                                                         warning: str) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((HOST, 0))
    sock.settimeout(5)
    port = sock.getsockname()[1]
    sdp = f"v=0\r\no=- 1 1 {conn}\r\ns=-\r\nc={conn}\r\nt=0 0\r\n{media}"
    invite = (
        f"INVITE sip:100@{svc.sip_address} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {HOST}:{port};branch=z9hG4bK{warning[:3]};rport\r\n"
        f"From: <sip:g729@{HOST}>;tag=g1\r\nTo: <sip:100@{HOST}>\r\nCall-ID: refused-{warning[:3]}\r\n"
        f"CSeq: 1 INVITE\r\nContact: <sip:g729@{HOST}:{port}>\r\nMax-Forwards: 70\r\n"
        f"Content-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n{sdp}")
    try:
        sock.sendto(invite.encode(), (HOST, svc.sip_port))
        responses: list[bytes] = []
        while not responses or int(responses[-1].split(b" ", 2)[1]) < 200:
            responses.append(sock.recv(65535))
    finally:
        sock.close()
    final = responses[-1].decode()
    assert final.startswith("SIP/2.0 488 ") and f"\r\nWarning: {warning}" in final, final


def test_options_answered_with_allow(svc: RunningService, tmp_path: Path) -> None:
    result = run_sipp("options.xml", svc.sip_address, workdir=tmp_path, calls=1, timeout=15)
    assert result.ok, result.describe()


@pytest.mark.parametrize("transport", ["u1", "t1"])
def test_reinvite_hold_unhold_keeps_one_stream(svc: RunningService, tmp_path: Path, transport: str) -> None:
    result = run_sipp("reinvite.xml", svc.sip_address, workdir=tmp_path, calls=1, timeout=30,
                      transport=transport)
    assert result.ok, result.describe()
    assert result.successful == 1


def test_missing_ack_gets_2xx_retransmissions_then_bye(svc: RunningService, tmp_path: Path) -> None:
    result = run_sipp("no_ack.xml", svc.sip_address, workdir=tmp_path, calls=1, timeout=30)
    assert result.ok, result.describe()
    # the 200 came again (T1, 2T1, ... capped at T2) until 64*T1 = 3.2 s, then our BYE ended it
    assert result.count("200", "Retrans") >= 5
    assert result.call_length_ms is not None and 3000 <= result.call_length_ms < 8000


def test_call_over_tcp_sends_digit(svc: RunningService, tmp_path: Path) -> None:
    pcap = RtpStreamBuilder().silence(500).digits("0").silence(300).write(tmp_path / "call.pcap")
    before = len(call_records(svc))
    # 0 goes to the agent queue, nobody is there, then a voicemail: hang up after 6 s, not 30
    result = run_sipp("dtmf_call.xml", svc.sip_address, workdir=tmp_path / "sipp", calls=1, timeout=60,
                      transport="t1", pcaps={"call.pcap": pcap},
                      replace={'<recv request="BYE" timeout="30000"': '<recv request="BYE" timeout="6000"'})
    assert result.ok, result.describe()
    wait_for(lambda: len(call_records(svc)) > before, 10, "the call's record")
    record = call_records(svc)[-1]
    assert [i["value"] for i in record["inputs"]][:1] == ["0"]
    assert "main_menu" in [p["node"] for p in record["path"]]


def test_known_caller_lands_in_their_timeline_with_path_and_digits(svc: RunningService,
                                                                   tmp_path: Path) -> None:
    customer = api(svc, "POST", "/customers", {"name": "Dana Scully", "phone": "+15550142",
                                               "attributes": {"balance": 42.5}})
    pcap = RtpStreamBuilder().silence(300).digits("1").silence(300).write(tmp_path / "call.pcap")
    result = run_sipp("dtmf_call.xml", svc.sip_address, workdir=tmp_path / "sipp", calls=1, timeout=60,
                      pcaps={"call.pcap": pcap},
                      replace={"<sip:sipp@[local_ip]": "<sip:+15550142@[local_ip]"})
    assert result.ok, result.describe()

    def completed() -> bool:
        items = api(svc, "GET", f"/customers/{customer['id']}/interactions")["interactions"]
        return bool(items) and items[0]["status"] == "completed"

    wait_for(completed, 15, "the call's interaction to be completed")
    newest = api(svc, "GET", f"/customers/{customer['id']}/interactions")["interactions"][0]
    assert newest["channel"] == "voice" and newest["direction"] == "inbound"
    interaction = api(svc, "GET", f"/interactions/{newest['id']}")
    ivr = interaction["ivr"]
    nodes = [p["node"] for p in ivr["path"]]
    assert nodes[:6] == ["welcome", "identify", "route_caller", "main_menu", "billing", "read_balance"]
    assert ivr["inputs"][0]["value"] == "1"
    assert any("42 dollars and 50 cents" in p["text"] for p in ivr["prompts"])
    kinds = {s["kind"] for s in interaction["transcript"]}
    assert "prompt" in kinds


def test_cancel_while_ringing_gets_200_and_487(tmp_path: Path) -> None:
    with running_service(tmp_path / "svc", sip={"answer_delay_ms": 3000}) as svc:
        result = run_sipp("cancel.xml", svc.sip_address, workdir=tmp_path / "sipp", calls=1, timeout=20)
        assert result.ok, result.describe()
        assert call_records(svc) == []  # the flow never ran


def test_caller_outside_trusted_is_refused_403(tmp_path: Path) -> None:
    with running_service(tmp_path / "svc", sip={"trusted": "10.0.0.0/8"}) as svc:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((HOST, 0))
        sock.settimeout(5)
        port = sock.getsockname()[1]
        invite = (
            f"INVITE sip:100@{svc.sip_address} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {HOST}:{port};branch=z9hG4bKuntrusted;rport\r\n"
            f"From: <sip:mallory@{HOST}>;tag=m1\r\nTo: <sip:100@{HOST}>\r\nCall-ID: untrusted-1\r\n"
            f"CSeq: 1 INVITE\r\nContact: <sip:mallory@{HOST}:{port}>\r\nMax-Forwards: 70\r\n"
            "Content-Length: 0\r\n\r\n")
        try:
            sock.sendto(invite.encode(), (HOST, svc.sip_port))
            statuses = []
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and 403 not in statuses:
                data = sock.recv(65535)
                statuses.append(int(data.split(b" ", 2)[1]))
        finally:
            sock.close()
        assert statuses[-1] == 403
        assert 200 not in statuses
