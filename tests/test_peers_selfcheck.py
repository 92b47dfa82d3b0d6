"""The real-peer drivers proved against each other (sipp UAC <-> sipp UAS, pyVoIP -> Kamailio,
baresip -> sipp UAS), so a failing service test points at the service, not at the harness."""

from __future__ import annotations

import contextlib
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from tests.peers import DATA, HOST, free_port, free_rtp_port, sip_options, wait_for
from tests.peers.baresip import running_baresip
from tests.peers.capture import capture_rtp
from tests.peers.kamailio import running_kamailio
from tests.peers.pcap import PCMA, PCMU, RtpStreamBuilder, dtmf_tone, events, read_pcap, read_wav, speak
from tests.peers.pyvoip_phone import PyVoipPhone
from tests.peers.rtp import RtpEndpoint, heard_audio, inband_digits, pacing_errors_ms, pacing_stats, rms
from tests.peers.service import running_service
from tests.peers.sipp import parse_counts, run_sipp, sipp_background

pytestmark = [pytest.mark.peer, pytest.mark.timeout(60)]


def test_uac_pcap_builtin_sends_pcma_and_digit_1(tmp_path: Path) -> None:
    """The issue's reference call: sipp's uac_pcap plays g711a.pcap (PCMA) then dtmf_2833_1.pcap."""
    with (
        RtpEndpoint() as ep,
        sipp_background("uas_answer.xml", workdir=tmp_path / "uas", keys={"rtp_port": ep.port}) as uas,
    ):
        result = run_sipp("uac_pcap", uas.address, workdir=tmp_path / "uac", calls=1, timeout=20)
    assert result.ok, result.describe()
    assert result.successful == 1 and result.failed == 0
    assert result.call_length_ms is not None and result.call_length_ms >= 9000  # 8 s + 1 s of pauses
    assert len(result.rtt_ms) == 1  # the rtd on the 200
    assert {p.payload_type for p in ep.received} == {PCMA, 101}
    assert ep.digits() == "1"
    assert rms(ep.audio()) > 500
    assert uas.result is not None
    assert uas.result.successful == 1, uas.result.describe()


def test_cancel_scenario_against_counterpart(tmp_path: Path) -> None:
    with sipp_background("uas_cancel.xml", workdir=tmp_path / "uas") as uas:
        result = run_sipp("cancel.xml", uas.address, workdir=tmp_path / "uac", timeout=10)
    assert result.ok, result.describe()
    assert result.count("487") == 1 and result.count("CANCEL", "Sent") == 1
    assert uas.result is not None
    assert uas.result.successful == 1, uas.result.describe()


def test_no_ack_scenario_sees_2xx_retransmissions_then_bye(tmp_path: Path) -> None:
    with sipp_background("uas_no_ack.xml", workdir=tmp_path / "uas") as uas:
        result = run_sipp("no_ack.xml", uas.address, workdir=tmp_path / "uac", timeout=15)
    assert result.ok, result.describe()
    assert result.count("200", "Retrans") >= 2
    assert result.count("BYE") == 1
    assert uas.result is not None
    assert uas.result.successful == 1, uas.result.describe()


@pytest.mark.parametrize("transport", ["u1", "t1"])
def test_reinvite_scenario_holds_and_unholds(tmp_path: Path, transport: str) -> None:
    with sipp_background("uas_reinvite.xml", workdir=tmp_path / "uas", transport=transport) as uas:
        result = run_sipp(
            "reinvite.xml", uas.address, workdir=tmp_path / "uac", timeout=15, transport=transport
        )
    assert result.ok, result.describe()
    assert result.count("INVITE", "Sent") == 3
    assert uas.result is not None
    assert uas.result.successful == 1, uas.result.describe()


def test_reinvite_scenario_fails_when_hold_is_not_answered(tmp_path: Path) -> None:
    """The recvonly check is real: a UAS answering the hold with sendrecv fails the call."""
    with sipp_background(
        "uas_reinvite.xml", workdir=tmp_path / "uas", replace={"a=recvonly": "a=sendrecv"}
    ) as uas:
        result = run_sipp("reinvite.xml", uas.address, workdir=tmp_path / "uac", timeout=15)
    assert not result.ok and result.failed == 1
    assert result.failures.get("RegexpDoesntMatch") == 1, result.describe()


def test_dtmf_call_plays_generated_digits_from_its_sdp_port(tmp_path: Path) -> None:
    """dtmf_call.xml replays a pcap made by tests/peers/pcap.py (tone, then digits 4#). The UAS
    (uas_answer.xml) answers with our sink's port, so the sink sees what sipp played, and from where."""
    call = RtpStreamBuilder(codec=PCMU).audio(dtmf_tone("5", 200)).digits("4#").write(tmp_path / "call.pcap")
    sink_port, uac_media = free_rtp_port(1), free_rtp_port(4)
    with (
        RtpEndpoint(sink_port) as sink,
        sipp_background("uas_answer.xml", workdir=tmp_path / "uas", keys={"rtp_port": sink_port}) as uas,
        capture_rtp(tmp_path / "wire.pcap", (sink_port, sink_port)) as wire,
    ):
        result = run_sipp(
            "dtmf_call.xml",
            uas.address,
            workdir=tmp_path / "uac",
            timeout=15,
            media_port=uac_media,
            pcaps={"call.pcap": call},
            replace={'timeout="30000"': 'timeout="1500"'},
        )
        sink.wait_packets(len(list(read_pcap(call))), 2)
    assert result.ok, result.describe()
    assert sink.digits() == "4#"
    assert len(sink.received) == len(list(read_pcap(call)))
    # sipp sends from the port in its SDP (first call: the -mp port): symmetric RTP, latching works
    assert sink.sources == {(HOST, uac_media)}
    # the loopback capture saw the same packets, with the pcap's 20 ms pacing
    sent = [p.payload for p in read_pcap(call)]
    assert [p.payload for p in wire.packets()] == sent
    assert b"".join(sent) == wire.payloads_by_ssrc()[0x5EED0001]
    assert pacing_stats(wire.packets()).p50_ms < 5


def test_listen_call_endpoint_sends_and_hears(tmp_path: Path) -> None:
    """listen_call.xml points the SDP at our RtpEndpoint; sipp's UAS echoes what we send."""
    with RtpEndpoint() as ep, sipp_background("uas", workdir=tmp_path / "uas", rtp_echo=True) as uas:
        stream = RtpStreamBuilder(codec=PCMU).audio(dtmf_tone("7", 300)).digits("123")
        sender = ep.send(stream.packets, (HOST, uas.media_port))
        result = run_sipp(
            "listen_call.xml",
            uas.address,
            workdir=tmp_path / "uac",
            timeout=15,
            keys={"rtp_port": ep.port},
            replace={'timeout="30000"': 'timeout="2000"'},
        )
        sender.join(5)
        ep.wait_packets(len(stream.packets), 2)
    assert result.ok, result.describe()
    assert ep.digits() == "123"
    assert rms(ep.audio()) > 1000


def test_pcap_roundtrip_and_g711(tmp_path: Path) -> None:
    pcm = (np.sin(np.arange(1600) / 8000 * 2 * np.pi * 440) * 10000).astype(np.int16)
    for codec in (PCMU, PCMA):
        stream = RtpStreamBuilder(codec=codec).audio(pcm).digits("9*")
        packets = list(read_pcap(stream.write(tmp_path / f"{codec}.pcap")))
        assert packets == [replace(p, src_port=6000, dst_port=6002) for p in stream.packets]
        audio = [p for p in packets if p.payload_type == codec]
        assert len(audio) == 10 + 5 + 5  # 200 ms of tone, 100 ms silence after each digit
        assert audio[0].marker and not audio[1].marker
        decoded = heard_audio(audio[:10])
        assert np.max(np.abs(decoded.astype(int) - pcm)) < 400  # G.711 quantisation at this level
        assert events(packets) == "9*"
        assert len({p.timestamp for p in packets if p.payload_type == 101}) == 2


def test_sipp_sample_pcaps_are_what_uac_pcap_sends() -> None:
    """g711a.pcap: PCMA in 30 ms frames for about 7 s; dtmf_2833_1.pcap: RFC 4733 event 1."""
    audio = list(read_pcap(DATA / "g711a.pcap"))
    assert {p.payload_type for p in audio} == {PCMA} and len(audio[0].payload) == 240
    assert 6.5 < audio[-1].time - audio[0].time < 7.5
    assert rms(heard_audio(audio)) > 500
    assert events(read_pcap(DATA / "dtmf_2833_1.pcap")) == "1"


def test_pacing_errors_measure_arrival_against_timestamps() -> None:
    """Receiver-side pacing: |arrival gap - timestamp gap|, per stream, skipping sequence gaps."""
    base = RtpStreamBuilder(ssrc=1).silence(100).packets  # 5 packets, 20 ms apart in timestamps
    arrivals = [0.0, 0.020, 0.043, 0.060, 0.080]
    late = [replace(p, time=t) for p, t in zip(base, arrivals, strict=True)]
    other = [replace(p, ssrc=2, time=p.time + 0.5) for p in base[:2] + base[3:]]  # seq gap: not counted
    errors = sorted(round(e, 6) for e in pacing_errors_ms(late + other))
    assert errors == [0.0, 0.0, 0.0, 0.0, 3.0, 3.0]  # 23 ms then 17 ms gaps: 3 ms each
    stats = pacing_stats(late + other)
    assert stats.streams == 2 and stats.packets == 6 and stats.max_ms == pytest.approx(3.0)


def test_options_probe_gets_no_answer_from_a_closed_port() -> None:
    assert sip_options(free_port(), timeout=0.2) is None


def test_options_scenario_against_kamailio(tmp_path: Path) -> None:
    with running_kamailio(tmp_path / "kam") as kam:
        result = run_sipp("options.xml", kam.address, workdir=tmp_path / "uac", timeout=5)
    assert result.ok, result.describe()


def test_kamailio_routes_unregistered_users_to_next_hop(tmp_path: Path) -> None:
    """How the service is reached behind the proxy: sipp calls `ivr` at Kamailio, which relays to a UAS."""
    with (
        sipp_background(
            "uas_answer.xml", workdir=tmp_path / "uas", keys={"rtp_port": free_rtp_port()}
        ) as uas,
        running_kamailio(tmp_path / "kam", next_hop=uas.address) as kam,
    ):
        result = run_sipp("uac", kam.address, workdir=tmp_path / "uac", timeout=10, service="ivr")
    assert result.ok, result.describe()
    assert "REQ INVITE sip:ivr@" in kam.log


def test_pyvoip_registers_calls_through_kamailio_sends_tones_and_hears(tmp_path: Path) -> None:
    """pyVoIP registers (usrloc shows its contact), calls `ivr` via Kamailio to a UAS whose media is our
    endpoint; the endpoint hears pyVoIP's in-band digit and sends audio + an RFC 4733 digit back."""
    with (
        RtpEndpoint() as ep,
        sipp_background("uas_answer.xml", workdir=tmp_path / "uas", keys={"rtp_port": ep.port}) as uas,
        running_kamailio(tmp_path / "kam", next_hop=uas.address) as kam,
        PyVoipPhone((HOST, kam.port), "alice") as phone,
    ):
        assert kam.registered("alice") == [f"sip:alice@{HOST}:{phone.sip_port};transport=UDP"]
        call = phone.call("ivr")
        call.send_digits("58")
        assert ep.wait_packets(30, 5)
        pyvoip_rtp = next(iter(ep.sources))
        ep.send(RtpStreamBuilder().audio(dtmf_tone("9", 600)).digits("3").packets, pyvoip_rtp)
        heard = call.listen(1.5)
        assert ep.wait_packets(40, 3)
        call.hangup()
    assert inband_digits(ep.audio()) == "58"
    assert rms(heard) > 1000
    assert call.dtmf_received() == "3"
    assert uas.result is not None
    assert uas.result.successful == 1, uas.result.describe()


def test_baresip_dials_sends_rfc4733_digits_speaks_and_hears(tmp_path: Path) -> None:
    """baresip calls a sipp UAS whose media is our endpoint: it sends flite speech and RFC 4733
    digits; what we send back lands in its sndfile dump."""
    speech = speak("hello, this is a test call", tmp_path / "speech.wav")
    with (
        RtpEndpoint() as ep,
        sipp_background("uas_answer.xml", workdir=tmp_path / "uas", keys={"rtp_port": ep.port}) as uas,
        running_baresip(tmp_path / "baresip", source_wav=speech, timeout=30) as phone,
    ):
        phone.dial(f"sip:ivr@{uas.address}")
        phone.send_digits("5#")
        assert ep.wait_packets(20, 3)
        ep.send(RtpStreamBuilder().audio(dtmf_tone("9", 600)).packets, next(iter(ep.sources)), wait=True)
        time.sleep(0.3)
        phone.hangup()
    assert ep.digits() == "5#"
    assert rms(ep.audio()) > 500  # the speech
    heard = read_wav(phone.heard_files()[0])
    assert inband_digits(heard) == "9"
    assert uas.result is not None
    assert uas.result.successful == 1, uas.result.describe()


def test_running_service_starts_answers_options_and_stops(tmp_path: Path) -> None:
    """The service driver: config written, OPTIONS answered 200 with Allow, SIGTERM stops it."""
    with running_service(tmp_path, sip={"t1_ms": 50}) as svc:
        result = run_sipp("options.xml", svc.sip_address, workdir=tmp_path / "uac", timeout=5)
        assert f"listen = {svc.sip_address}" in svc.config_path.read_text()
    assert result.ok, result.describe()
    assert sip_options(svc.sip_port, timeout=0.3) is None  # stopped


ACK_TO_TAG_CHECK = {
    '  <recv request="ACK"\n        optional="true"\n        rtd="true"\n        crlf="true">\n  </recv>': (
        '  <recv request="ACK" rtd="true" crlf="true">\n    <action>\n'
        '      <ereg regexp="tag=[0-9]+SIPpTag01" search_in="hdr" header="To:"'
        ' check_it="true" assign_to="t"/>\n'
        '    </action>\n  </recv>\n  <Reference variables="t"/>'
    )
}


@pytest.mark.parametrize("fix", [False, True])
def test_pyvoip_ack_to_tag_quirk_and_its_fix(tmp_path: Path, fix: bool) -> None:
    """pyVoIP 1.6.8 ACKs the 200 with a random To tag (a strict UAS cannot match it to the dialog);
    PyVoipPhone(fix_ack_to_tag=True) sends the 200's tag instead."""
    with (
        sipp_background(
            "uas_answer.xml",
            workdir=tmp_path / "uas",
            keys={"rtp_port": free_rtp_port()},
            replace=ACK_TO_TAG_CHECK,
        ) as uas,
        running_kamailio(tmp_path / "kam", next_hop=uas.address) as kam,
        PyVoipPhone((HOST, kam.port), "bob", fix_ack_to_tag=fix) as phone,
    ):
        call = phone.call("ivr")
        # pyVoIP ACKs about 1 s after the 200; sipp's per-message counters are written every second
        with contextlib.suppress(TimeoutError):
            wait_for(lambda: sum(v for k, v in parse_counts(uas.workdir).items() if "ACK" in k) > 0, 6, "ACK")
        call.hangup()
    assert uas.result is not None
    if fix:
        assert uas.result.successful == 1, uas.result.describe()
    else:
        # sipp logs the failed check, then aborts the call as an unexpected message
        assert uas.result.failed == 1 and "Failed regexp match" in uas.result.errors, uas.result.describe()
