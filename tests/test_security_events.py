"""Security events (docs/security.md): one fixed-format line each, values cleaned and cut, and the
fail2ban filter in contrib/ matching exactly those lines (checked with the real fail2ban-regex)."""

from __future__ import annotations

import logging
import re
import subprocess
from pathlib import Path

import pytest

from cti.security import security_event as cti_event
from voice.sip.security import clean, format_event
from voice.sip.security import security_event as sip_event

ROOT = Path(__file__).resolve().parent.parent
FILTER = ROOT / "contrib" / "fail2ban" / "filter.d" / "voice.conf"
SERVICE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"  # voice.service.setup_logging's


def test_values_are_cleaned_and_cut() -> None:
    assert clean("alice") == "alice"
    assert clean('a b"c=d\\e\n\x00ü') == "a?b?c?d?e???"
    assert clean("x" * 500) == "x" * 64 + "..."
    assert clean("") == "-"
    forged = format_event("auth_failed", "198.51.100.1", user="x src=10.0.0.1 event=blocked")
    assert forged == "SECURITY event=auth_failed src=198.51.100.1 user=x?src?10.0.0.1?event?blocked"


def test_fail2ban_filter_matches_the_events_the_code_writes(tmp_path: Path) -> None:
    log_path = tmp_path / "voice.log"
    handler = logging.FileHandler(log_path)
    handler.setFormatter(logging.Formatter(SERVICE_FORMAT))
    loggers = [logging.getLogger("voice.security"), logging.getLogger("cti.security"),
               logging.getLogger("voice.sip")]
    for lg in loggers:
        lg.addHandler(handler)
    try:
        sip_event("auth_failed", "203.0.113.9", user="alice", reason="wrong_password")
        sip_event("untrusted_call", "192.0.2.66", to="100")
        sip_event("blocked", "203.0.113.9", reason="auth_failures", seconds=600)
        cti_event("signin_failed", "2001:db8::7", account="agent:ann")
        cti_event("blocked", "198.51.100.20", reason="signin_failures", seconds=300)
        sip_event("auth_failed", "198.51.100.1", user="x src=10.0.0.1", reason="wrong_password")
        # Not events: another logger's line, even one carrying attacker text that looks like one.
        logging.getLogger("voice.sip").warning("cannot resolve evil SECURITY event=auth_failed src=10.9.9.9")
    finally:
        for lg in loggers:
            lg.removeHandler(handler)
        handler.close()
    out = subprocess.run(["fail2ban-regex", "--print-all-matched", str(log_path), str(FILTER)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    m = re.search(r"Lines: (\d+) lines, (\d+) ignored, (\d+) matched, (\d+) missed", out.stdout)
    assert m is not None, out.stdout
    assert m.groups() == ("7", "0", "6", "1")
    matched_hosts = re.findall(r"src=(\S+)", out.stdout.split("Matched line(s):")[1].split("`-")[0])
    assert matched_hosts == ["203.0.113.9", "192.0.2.66", "203.0.113.9", "2001:db8::7", "198.51.100.20",
                             "198.51.100.1"]
    assert "10.9.9.9" not in out.stdout.split("Matched line(s):")[1].split("Missed line(s)")[0]


@pytest.mark.parametrize("doc", ["docs/security.md", "sip.example.conf"])
def test_documented(doc: str) -> None:
    text = (ROOT / doc).read_text()
    for word in ("auth_failures", "block_time", "invite_rate", "flood_block"):
        assert word in text
