"""Operations pieces on their own: JSON log lines, security events, SIP metrics and trace, the
first-run API key and ready message, and `voice --version`."""

from __future__ import annotations

import io
import json
import logging
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from cti import metrics
from cti.seclog import security_event
from voice import firstrun, logs, sipwire
from voice.config import Config, HttpConfig, IvrConfig
from voice.sip.transaction import Address

INVITE = (
    b"INVITE sip:100@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bK1\r\n"
    b"From: <sip:+4930123@10.0.0.9>;tag=a\r\nTo: <sip:100@127.0.0.1>\r\nCall-ID: abc@10.0.0.9\r\n"
    b'CSeq: 2 INVITE\r\nAuthorization: Digest username="alice", response="0123456789abcdef"\r\n'
    b"Content-Length: 4\r\n\r\nv=0\n"
)
PEER = Address("10.0.0.9", 5060, "udp")


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    stream = io.StringIO()
    logs.setup_logging("info", "json", stream)
    try:
        yield stream
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in saved[0]:
            root.addHandler(h)
        root.setLevel(saved[1])
        sipwire.configure("no")


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_carry_fields_and_tracebacks(json_log: io.StringIO) -> None:
    log = logging.getLogger("voice.calls")
    log.info(
        '{"event":"call_end"}',
        extra={"fields": {"msg": "call ended", "event": "call_end", "call_id": "c1", "node": "menu"}},
    )
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("voice").exception("it failed: %s", "x")
    first, second = lines(json_log)
    assert first["msg"] == "call ended" and first["call_id"] == "c1" and first["node"] == "menu"
    assert first["level"] == "info" and first["logger"] == "voice.calls" and str(first["ts"]).endswith("Z")
    assert second["msg"] == "it failed: x" and "ValueError: boom" in str(second["exc"])


def test_security_event_one_format(json_log: io.StringIO, caplog: pytest.LogCaptureFixture) -> None:
    security_event("login_failed", "192.0.2.7", who="agent", detail="bad password; rm -rf /")
    [line] = lines(json_log)
    assert line["event"] == "login_failed" and line["source"] == "192.0.2.7" and line["level"] == "warning"
    assert caplog.records[-1].getMessage() == (
        "security: event=login_failed source=192.0.2.7 who=agent detail=bad_password__rm_-rf_/"
    )


def families() -> list[object]:
    return list(text_string_to_metric_families(metrics.render().decode()))


def test_sip_messages_counted_by_method_and_code_refusals_logged(json_log: io.StringIO) -> None:
    fam = families()
    before_in = (
        metrics.sample_value(fam, "voice_sip_requests_total", {"direction": "in", "method": "INVITE"}) or 0
    )
    before_401 = (
        metrics.sample_value(fam, "voice_sip_responses_total", {"direction": "out", "code": "401"}) or 0
    )
    sipwire.received(INVITE, PEER)
    sipwire.received(b"\r\n\r\n", PEER)  # keep-alive: not counted as anything
    sipwire.received(b"HELLO\r\n\r\n", PEER)
    sipwire.sent(b"SIP/2.0 401 Unauthorized\r\nCall-ID: abc@10.0.0.9\r\n\r\n", PEER)
    sipwire.sent(b"SIP/2.0 401 Unauthorized\r\nCall-ID: first-try\r\n\r\n", PEER)  # a plain challenge
    sipwire.sent(b"SIP/2.0 403 Forbidden\r\nCall-ID: x\r\n\r\n", PEER)
    fam = families()
    assert (
        metrics.sample_value(fam, "voice_sip_requests_total", {"direction": "in", "method": "INVITE"})
        == before_in + 1
    )
    assert (
        metrics.sample_value(fam, "voice_sip_responses_total", {"direction": "out", "code": "401"})
        == before_401 + 2
    )
    events = [(line["event"], line["source"]) for line in lines(json_log) if "event" in line]
    assert events == [("sip_auth_failed", "10.0.0.9"), ("sip_refused", "10.0.0.9")]


def test_sip_trace_like_sngrep_with_credentials_masked(json_log: io.StringIO) -> None:
    sipwire.configure("headers")
    sipwire.received(INVITE, PEER)
    sipwire.configure("full")
    sipwire.sent(b"SIP/2.0 200 OK\r\nCall-ID: abc@10.0.0.9\r\nContent-Length: 4\r\n\r\nv=0\n", PEER)
    first, second = (str(line["msg"]) for line in lines(json_log) if line["logger"] == "voice.sip.trace")
    head = first.splitlines()
    assert head[0].startswith("---- ") and head[0].endswith(
        f"UDP 10.0.0.9:5060 -> voice ({len(INVITE)} bytes)"
    )
    assert head[1] == "INVITE sip:100@127.0.0.1 SIP/2.0"
    assert "Authorization: ****" in first and "0123456789abcdef" not in first
    assert first.endswith("[body: 4 bytes]")
    assert "voice -> 10.0.0.9:5060" in second and second.endswith("\nv=0")
    with pytest.raises(ValueError, match="sip_trace"):
        sipwire.configure("verbose")


def test_rtp_and_call_metrics_from_providers() -> None:
    metrics.set_rtp_totals_provider(lambda: {"sent": 500, "received": 480, "late": 3})
    try:
        for seconds in (0.0001, 0.003, 0.5):
            metrics.rtp_send_lateness(seconds)
        metrics.call_started()
        metrics.call_started()
        metrics.call_ended("caller_hangup")
        metrics.call_ended("made-up outcome")
        fam = families()
        assert metrics.sample_value(fam, "voice_rtp_packets_sent_total") == 500
        assert metrics.sample_value(fam, "voice_rtp_packets_late_total") == 3
        assert (metrics.sample_value(fam, "voice_rtp_send_lateness_seconds_bucket", {"le": "+Inf"}) or 0) >= 3
        assert metrics.sample_value(fam, "voice_calls_total", {"outcome": "other"}) is not None
    finally:
        metrics.set_rtp_totals_provider(None)


def test_first_run_generates_a_key_once(tmp_path: Path) -> None:
    key_file = tmp_path / "data" / "api_key"
    config = replace(Config(), ivr=IvrConfig(routes={"200": "support", "100": "main"}))
    first = firstrun.with_api_key(config, key_file)
    [key] = first.http.api_keys
    assert len(key) >= 32 and key_file.read_text().strip() == key
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    message = firstrun.ready_message(first, 8080, 5060)
    assert "sip:100@127.0.0.1:5060" in message and "http://127.0.0.1:8080/agent" in message
    assert "http://127.0.0.1:8080/admin" in message and key in message and str(key_file) in message
    again = firstrun.with_api_key(config, key_file)
    assert again.http.api_keys == (key,)
    message = firstrun.ready_message(again, 8080)
    assert key not in message and str(key_file) in message  # shown only the first time
    configured = replace(config, http=HttpConfig(api_keys=("k" * 20,)), source="sip.conf")
    assert firstrun.with_api_key(configured, key_file) is configured
    assert "[http] api_keys in sip.conf" in firstrun.ready_message(configured, 8080)


def test_voice_version() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "voice.cli", "--version"], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0 and out.stdout.strip() == "voice 0.1.0"
