"""The config file: the example parses, and every kind of mistake is one clear error."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from voice.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parent.parent


def test_example_config_parses_with_documented_defaults() -> None:
    cfg = load_config(ROOT / "sip.example.conf")
    assert cfg.sip.listen.port == 5060 and cfg.sip.transports == ("udp", "tcp")
    assert (cfg.rtp.port_min, cfg.rtp.port_max) == (10000, 20000)
    assert cfg.http.listen.port == 8080
    assert cfg.ivr.default_flow == "main"
    assert cfg.database.url.startswith("sqlite+aiosqlite:///")


def test_example_documents_every_key() -> None:
    from voice.config import _KEYS

    text = (ROOT / "sip.example.conf").read_text()
    for section, keys in _KEYS.items():
        assert f"[{section}]" in text
        for key in keys:
            assert f"{key} =" in text, f"[{section}] {key} is not documented in sip.example.conf"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("[sip]\nlisten = 127.0.0.1:99999\n", "[sip] listen: port 99999 is outside 1-65535"),
        ("[sip]\ntrusted = 10.0.0.0/33\n", "[sip] trusted:"),
        ("[sip]\nlisen = 127.0.0.1\n", "[sip] unknown key 'lisen'"),
        ("[rtp]\nports = 20000-10000\n", "[rtp] ports: range 20000-10000 must be ascending"),
        ("[rtp]\nports = lots\n", "[rtp] ports: expected a range like 10000-20000"),
        ("[http]\napi_keys = short\n", "[http] api_keys: every key must be at least 16 characters"),
        ("[asr]\nengine = kaldi\n", "[asr] engine: expected one of auto, whisper, vosk, pocketsphinx"),
        ("[nonsense]\na = b\n", "unknown section [nonsense]"),
        ("[register]\nregistrar = sip:pbx\n", "[register] username: required"),
        ("not ini at all\n", "not a valid INI file"),
        ("[throttle]\ninvite_rate = -3\n", "[throttle] invite_rate: expected a number from 0 to 100000"),
        ("[throttle]\ninvite_rate = nan\n", "[throttle] invite_rate: expected a number"),
        ("[throttle]\nexempt = 10.0.0.0/40\n", "[throttle] exempt:"),
        ("[throttle]\nblok_time = 5\n", "[throttle] unknown key 'blok_time'"),
        ("[http]\nsignin_failures = many\n", "[http] signin_failures:"),
        ("[sip]\ndigest_algorithms = SHA-1\n", "[sip] digest_algorithms: expected one of sha-256, md5"),
        ("[node]\nfull_gc_interval = 2\n", "[node] full_gc_interval: expected 0 (off) or seconds from 5"),
        ("[node]\nfull_gc_interval = often\n", "[node] full_gc_interval: expected 0 (off)"),
    ],
)
def test_bad_config_names_file_key_and_problem(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "bad.conf"
    path.write_text(body)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(str(path))
    assert message in str(info.value)


def test_voice_run_refuses_to_start_on_bad_config(tmp_path: Path) -> None:
    path = tmp_path / "bad.conf"
    path.write_text("[sip]\ntransports = udp, sctp\n")
    proc = subprocess.run([sys.executable, "-m", "voice.cli", "run", "--config", str(path)],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 2
    assert f"{path}: [sip] transports: expected one of udp, tcp, found 'sctp'" in proc.stderr
    missing = subprocess.run(
        [sys.executable, "-m", "voice.cli", "run", "--config", str(tmp_path / "no.conf")],
        capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert missing.returncode == 2 and "file not found" in missing.stderr


def test_queue_settings_reach_every_queue(tmp_path: Path) -> None:
    from cti.queues import QueueEngine

    path = tmp_path / "q.conf"
    path.write_text("[queues]\ntimeout = 90\nring_timeout = 7\nno_answer = available\n")
    queues = load_config(path).queues
    engine = QueueEngine(default_timeout=queues.timeout, ring_timeout=queues.ring_timeout,
                         no_answer=queues.no_answer)
    spec = engine.spec("support")
    assert (spec.timeout, spec.ring_timeout, spec.no_answer) == (90.0, 7.0, "available")
    path.write_text("[queues]\nno_answer = voicemail\n")
    with pytest.raises(ConfigError, match=r"\[queues\] no_answer: expected one of away, available"):
        load_config(path)


def test_queue_sections_override_the_queues_defaults_and_reach_the_engine(tmp_path: Path) -> None:
    from cti.web import queue_engine

    music = tmp_path / "jazz.wav"
    music.write_bytes(b"RIFF")  # only its existence is checked here; cti.waiting reads it at start
    path = tmp_path / "q.conf"
    path.write_text(f"[queues]\ntimeout = 90\nannounce_interval = 45\n\n"
                    f"[queue support]\nring_timeout = 7\nmusic = {music}\noverflow = queue:general\n"
                    f"ringing = ringback\nservice_level_seconds = 15\nskill = helpdesk\n\n"
                    f"[queue general]\nannounce_interval = 0\n")
    cfg = load_config(path)
    support = cfg.queue["support"]
    assert (support.timeout, support.ring_timeout, support.announce_interval) == (90.0, 7.0, 45.0)
    assert support.music == music and support.overflow == "queue:general" and support.skill == "helpdesk"
    engine = queue_engine(cfg)
    spec = engine.spec("support")
    assert (spec.required_skill, spec.overflow, spec.ringing, spec.service_level) == ("helpdesk", "general",
                                                                                    "ringback", 15.0)
    assert engine.spec("general").announce_interval == 0.0 and engine.spec("general").timeout == 90.0
    other = engine.spec("billing")  # not configured: the [queues] settings
    assert (other.timeout, other.announce_interval, other.overflow) == (90.0, 45.0, None)
    assert other.required_skill == "billing"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("[queue support]\nmusic = /no/such.wav\n", "[queue support] music: file not found: /no/such.wav"),
        ("[queue support]\noverflow = voicemail\n", "[queue support] overflow: expected queue:NAME"),
        ("[queue support]\noverflow = queue:support\n", "[queue support] overflow: a queue cannot overflow"),
        ("[queue support]\nring_timeout = 2\n", "[queue support] ring_timeout: expected a number from 5"),
        ("[queue support]\nmusik = x\n", "[queue support] unknown key 'musik'"),
        ("[queue sup port!]\ntimeout = 60\n", "[queue sup port!]: a queue name is letters"),
        ("[queues]\nringing = beep\n", "[queues] ringing: expected one of music, ringback"),
        ("[queues]\nannounce_interval = -1\n", "[queues] announce_interval: expected a number from 0"),
    ],
)
def test_bad_queue_settings_name_file_section_key_and_problem(tmp_path: Path, body: str,
                                                              message: str) -> None:
    path = tmp_path / "bad.conf"
    path.write_text(body)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(str(path)) and message in str(info.value)


def test_the_example_documents_every_queue_key() -> None:
    from voice.config import _QUEUE_KEYS

    text = (ROOT / "sip.example.conf").read_text()
    section = text[text.index("[queue support]"):]
    for key in _QUEUE_KEYS:
        assert f"\n{key} =" in section, f"[queue NAME] {key} is not shown in sip.example.conf"
    assert load_config(ROOT / "sip.example.conf").queue["support"].overflow == "queue:agents"


def test_throttle_settings_load(tmp_path: Path) -> None:
    import ipaddress

    path = tmp_path / "t.conf"
    path.write_text("[throttle]\ninvite_rate = 2.5\ninvite_burst = 4\nflood_block = 30\nauth_failures = 3\n"
                    "auth_window = 20\nblock_time = 900\nexempt = 192.0.2.0/24\nmax_sources = 500\n"
                    "[http]\nsignin_failures = 2\nsignin_window = 60\nsignin_block = 120\n")
    cfg = load_config(path)
    t = cfg.throttle
    assert (t.invite_rate, t.invite_burst, t.flood_block, t.auth_failures, t.auth_window, t.block_time,
            t.max_sources) == (2.5, 4, 30.0, 3, 20.0, 900.0, 500)
    assert t.exempt == (ipaddress.ip_network("192.0.2.0/24"),)
    assert (cfg.http.signin_failures, cfg.http.signin_window, cfg.http.signin_block) == (2, 60.0, 120.0)
    path.write_text("[sip]\ndigest_algorithms = md5\n")
    assert load_config(path).sip.digest_algorithms == ("MD5",)
    assert load_config(None).sip.digest_algorithms == ("SHA-256", "MD5")


def test_trunk_callbacks_and_the_callback_key(tmp_path: Path) -> None:
    from voice.callcontrol.originate import trunk_of

    path = tmp_path / "t.conf"
    path.write_text("[register]\nregistrar = sip:pbx.example.com:5070\nusername = ivr\npassword = s3cret\n"
                    "[queue support]\ncallback_key = 9\n[callbacks]\nretries = 0\nretry_interval = 60\n")
    cfg = load_config(path)
    assert cfg.queue["support"].callback_key == "9" and cfg.queues.callback_key == ""
    assert cfg.callbacks.retries == 0 and cfg.callbacks.retry_interval == 60
    trunk = trunk_of(cfg)  # no [trunk]: the registrar, its credentials, its username as caller ID
    assert trunk is not None and trunk.credentials == ("ivr", "s3cret") and trunk.caller_id == "ivr"
    assert trunk.request_uri("+15550177") == "sip:+15550177@pbx.example.com:5070"
    path.write_text("[trunk]\nuri = sip:10.0.0.5;transport=tcp\ncaller_id = +15551230000\nprefix = 0\n"
                    "domain = carrier.example\n")
    trunk = trunk_of(load_config(path))
    assert trunk is not None and trunk.credentials is None and trunk.caller_id == "+15551230000"
    assert trunk.request_uri("555 0177") == "sip:05550177@carrier.example;transport=tcp"
    assert (trunk.next_hop.host, trunk.next_hop.port, trunk.next_hop.transport) == ("10.0.0.5", 5060, "tcp")
    assert trunk_of(load_config(None)) is None  # neither: callbacks are kept but not placed


@pytest.mark.parametrize(("body", "message"), [
    ("[queue support]\ncallback_key = 99\n", "[queue support] callback_key: expected one key"),
    ("[trunk]\nusername = a\npassword = b\n", "[trunk] uri: required"),
    ("[trunk]\nuri = sip:x.example\nusername = a\n", "[trunk] password: username and password go together"),
    ("[trunk]\nuri = sip:x.example\nprefix = 9a\n", "[trunk] prefix:"),
    ("[callbacks]\nretries = 50\n", "[callbacks] retries:"),
])
def test_bad_trunk_and_callback_settings(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "bad.conf"
    path.write_text(body)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert message in str(info.value)
