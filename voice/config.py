"""Service configuration: one INI file, every key checked before anything starts.

A bad file raises ConfigError naming the file, the section and key, and what is
wrong; `voice run` prints it and exits without starting anything.
"""

from __future__ import annotations

import configparser
import ipaddress
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voice.config_agents import AgentsConfig, WebRtcConfig, codes, turn_url, webrtc_codecs
from voice.config_outbound import (
    CallbacksConfig,
    TrunkConfig,
    build_trunk,
    digits_or_empty,
    dtmf_key,
    sip_uri,
)
from voice.config_values import (
    QUEUE_NAME,
    HostPort,
    IPNetwork,
    audio_file,
    choice,
    empty,
    float_range,
    int_range,
    mapping,
    networks,
    off_or_seconds,
    parse_host_port,
    port_range,
    queue_target,
    seconds,
    split_list,
    timezone_name,
    yes_no,
)
from voice.hours import BusinessHours, parse_hours
from voice.sip.throttle import ThrottleSettings


class ConfigError(Exception):
    """A configuration problem, phrased for the admin who wrote the file."""


@dataclass(frozen=True, kw_only=True)
class SipConfig:
    listen: HostPort = HostPort(host="0.0.0.0", port=5060)
    transports: tuple[str, ...] = ("udp", "tcp")
    trusted: tuple[IPNetwork, ...] = (
        ipaddress.ip_network("127.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
    )
    public_address: str | None = None
    domain: str = "voice.local"
    auth_users: dict[str, str] = field(default_factory=dict)
    digest_algorithms: tuple[str, ...] = ("SHA-256", "MD5")  # challenges offered, most preferred first
    user_agent: str = "voice/0.1"
    max_calls: int = 1000
    t1_ms: int = 500
    answer_delay_ms: int = 0
    drain_timeout: int = 30  # seconds calls in progress may go on after SIGTERM


@dataclass(frozen=True, kw_only=True)
class RegisterConfig:
    registrar: str
    username: str
    password: str
    expires: int = 3600
    domain: str | None = None


@dataclass(frozen=True, kw_only=True)
class RtpConfig:
    port_min: int = 10000
    port_max: int = 20000
    record: str = "no"  # no | caller | both
    realtime: str = "auto"  # the pacer thread's scheduling: auto (SCHED_FIFO when allowed) | yes | no
    # Packets are made this far ahead and sent on time by the transmitter process; 0: the pacer
    # thread sends at each deadline (no extra process, no added delay).
    send_ahead_ms: int = 40
    # The event loop thread at SCHED_FIFO 1 (below the pacer and the transmitter) while it serves
    # calls, so that no other process preempts it while it holds the GIL the pacer waits for.
    # Opt-in, and only on 2 or more CPUs: a saturated loop then leaves other processes 5 % of its CPU.
    realtime_loop: bool = False


@dataclass(frozen=True, kw_only=True)
class HttpConfig:
    listen: HostPort = HostPort(host="127.0.0.1", port=8080)
    api_keys: tuple[str, ...] = ()
    max_body: int = 1024 * 1024
    # Agent and admin sign-in throttling: failures per source address and per account in a window.
    signin_failures: int = 5
    signin_window: float = 300.0
    signin_block: float = 300.0


@dataclass(frozen=True, kw_only=True)
class DatabaseConfig:
    url: str = "sqlite+aiosqlite:///data/voice.db"


@dataclass(frozen=True, kw_only=True)
class IvrConfig:
    flows: Path = Path("ivr_flows")
    default_flow: str = "main"
    routes: dict[str, str] = field(default_factory=dict)
    prompts: Path = Path("recordings/prompts")
    recordings: Path = Path("recordings/calls")
    tts: str = "flite"
    tts_voice: str = "slt"
    timezone: str = "UTC"  # the zone of `now` in flow expressions


@dataclass(frozen=True, kw_only=True)
class AsrConfig:
    engine: str = "auto"  # auto | whisper | vosk | pocketsphinx | none (keys only)
    vosk_model: str | None = None
    whisper_model: str | None = None  # tiny.en (default) | base | a CTranslate2 model directory
    whisper_device: str = "auto"  # auto (cuda when present) | cpu | cuda
    whisper_compute_type: str = "auto"  # auto (int8 on cpu, float16 on cuda) | int8 | float16 | ...
    whisper_threads: int = 1  # CTranslate2 threads per worker (workers x threads ~ cores)
    whisper_window: str = "short"  # short (utterance + 1 s, at least 10 s) | full (Whisper's 30 s)
    workers: int = 2
    language: str = "en-us"
    complete_timeout_ms: int = 500
    incomplete_timeout_ms: int = 1500
    max_speech_ms: int = 15000
    min_confidence: float = 0.3


@dataclass(frozen=True, kw_only=True)
class CtiConfig:
    default_country: str = "US"
    recent_interactions: int = 10


@dataclass(frozen=True, kw_only=True)
class QueuesConfig:
    """[queues]: the settings of every queue; a [queue NAME] section overrides them for one queue."""

    timeout: float = 300.0  # seconds a caller waits before the overflow queue or on_failure
    ring_timeout: float = 20.0  # seconds an agent's phone rings before the next agent is tried
    no_answer: str = "away"  # what an agent who let it ring becomes: away | available
    music: Path = Path("recordings/moh/default.wav")  # music on hold (any WAV; resampled to 8 kHz)
    announce_interval: float = 30.0  # seconds between position announcements (0: only on change)
    ringing: str = "music"  # what the caller hears while an agent's phone rings: music | ringback
    overflow: str = ""  # queue:NAME the caller moves to when the timeout passes ("": on_failure)
    service_level_seconds: float = 20.0  # answered within this many seconds counts as in service level
    callback_key: str = ""  # the key a waiting caller presses to be called back ("": no callbacks)


@dataclass(frozen=True, kw_only=True)
class QueueConfig(QueuesConfig):
    """One [queue NAME] section, its unset keys taken from [queues]."""

    name: str
    skill: str = ""  # the agent skill that serves this queue ("": the queue's name)


def default_node_id() -> str:
    """The host name, cut to what a node id may hold."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname())[:64]
    return name or "node"


@dataclass(frozen=True, kw_only=True)
class NodeConfig:
    id: str = field(default_factory=default_node_id)
    heartbeat_interval: float = 2.0  # seconds between this node's heartbeats in the database
    lost_after: float = 10.0  # seconds a peer's heartbeat may stand still before it is taken over
    spool: Path = Path("data/spool")  # directory of this node's history write spool (<id>.jsonl)
    # seconds between full garbage collections run by the service (voice.gcpolicy); 0: Python's own
    full_gc_interval: float = 60.0


def _node_id(text: str) -> str:
    t = text.strip()
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", t):
        raise ValueError(f"expected 1-64 letters, digits, '.', '_' or '-', found {t!r}")
    return t


@dataclass(frozen=True, kw_only=True)
class Config:
    source: str = "<defaults>"
    node: NodeConfig = field(default_factory=NodeConfig)
    sip: SipConfig = SipConfig()
    register: RegisterConfig | None = None
    trunk: TrunkConfig | None = None  # [trunk], else from [register], else None (no outbound calls)
    callbacks: CallbacksConfig = field(default_factory=CallbacksConfig)
    rtp: RtpConfig = RtpConfig()
    http: HttpConfig = HttpConfig()
    database: DatabaseConfig = DatabaseConfig()
    ivr: IvrConfig = IvrConfig()
    asr: AsrConfig = AsrConfig()
    cti: CtiConfig = CtiConfig()
    queues: QueuesConfig = QueuesConfig()
    queue: dict[str, QueueConfig] = field(default_factory=dict)  # [queue NAME] sections by NAME
    throttle: ThrottleSettings = field(default_factory=ThrottleSettings)
    webrtc: WebRtcConfig = field(default_factory=WebRtcConfig)
    agents: AgentsConfig = field(default_factory=AgentsConfig)
    log_level: str = "info"
    hours: dict[str, BusinessHours] = field(default_factory=dict)  # [hours NAME] sections
    log_format: str = "text"  # text | json (one JSON object per line)
    sip_trace: str = "no"  # no | headers | full: every SIP message in the log (voice.sip.trace)


# section -> key -> (converter, field name). Unknown keys are errors: a typo must not pass silently.
_KEYS: dict[str, dict[str, tuple[Callable[[str], Any], str]]] = {
    "sip": {
        "listen": (lambda s: parse_host_port(s, 5060), "listen"),
        "transports": (lambda s: tuple(choice("udp", "tcp")(p) for p in split_list(s)), "transports"),
        "trusted": (networks, "trusted"),
        "public_address": (lambda s: str(ipaddress.ip_address(s.strip())), "public_address"),
        "domain": (str.strip, "domain"),
        "auth_users": (mapping, "auth_users"),
        "digest_algorithms": (lambda s: tuple(choice("sha-256", "md5")(p).upper() for p in split_list(s))
                              or empty("at least one algorithm"), "digest_algorithms"),
        "user_agent": (str.strip, "user_agent"),
        "max_calls": (int_range(1, 100000), "max_calls"),
        "t1_ms": (int_range(10, 5000), "t1_ms"),
        "answer_delay_ms": (int_range(0, 60000), "answer_delay_ms"),
        "drain_timeout": (int_range(0, 86400), "drain_timeout"),
    },
    "node": {
        "id": (_node_id, "id"),
        "heartbeat_interval": (seconds(0.1, 60), "heartbeat_interval"),
        "lost_after": (seconds(0.5, 3600), "lost_after"),
        "spool": (lambda v: Path(v.strip()), "spool"),
        "full_gc_interval": (off_or_seconds(5, 86400), "full_gc_interval"),
    },
    "register": {
        "registrar": (str.strip, "registrar"),
        "username": (str.strip, "username"),
        "password": (str, "password"),
        "expires": (int_range(60, 86400), "expires"),
        "domain": (str.strip, "domain"),
    },
    "trunk": {
        "uri": (sip_uri, "uri"),
        "username": (str.strip, "username"),
        "password": (str, "password"),
        "caller_id": (str.strip, "caller_id"),
        "caller_name": (str.strip, "caller_name"),
        "prefix": (lambda s: digits_or_empty(s, "prefix"), "prefix"),
        "domain": (str.strip, "domain"),
    },
    "callbacks": {
        "retries": (int_range(0, 20), "retries"),
        "retry_interval": (seconds(1, 86400), "retry_interval"),
        "give_up_after": (seconds(60, 30 * 86400), "give_up_after"),
        "ring_timeout": (seconds(5, 300), "ring_timeout"),
        "poll_interval": (seconds(0.1, 60), "poll_interval"),
    },
    "rtp": {
        "ports": (port_range, "ports"),
        "record": (choice("no", "caller", "both"), "record"),
        "realtime": (choice("auto", "yes", "no"), "realtime"),
        "send_ahead_ms": (int_range(0, 200), "send_ahead_ms"),
        "realtime_loop": (yes_no, "realtime_loop"),
    },
    "http": {
        "listen": (lambda s: parse_host_port(s, 8080), "listen"),
        "api_keys": (lambda s: tuple(split_list(s)), "api_keys"),
        "max_body": (int_range(1024, 1 << 30), "max_body"),
        "signin_failures": (int_range(0, 1000), "signin_failures"),
        "signin_window": (lambda s: float(int_range(1, 86400)(s)), "signin_window"),
        "signin_block": (lambda s: float(int_range(1, 86400)(s)), "signin_block"),
    },
    "database": {"url": (str.strip, "url")},
    "ivr": {
        "flows": (lambda s: Path(s.strip()), "flows"),
        "default_flow": (str.strip, "default_flow"),
        "routes": (mapping, "routes"),
        "prompts": (lambda s: Path(s.strip()), "prompts"),
        "recordings": (lambda s: Path(s.strip()), "recordings"),
        "tts": (choice("flite", "espeak-ng"), "tts"),
        "tts_voice": (str.strip, "tts_voice"),
        "timezone": (timezone_name, "timezone"),
    },
    "asr": {
        "engine": (choice("auto", "whisper", "vosk", "pocketsphinx", "none"), "engine"),
        "vosk_model": (str.strip, "vosk_model"),
        "whisper_model": (str.strip, "whisper_model"),
        "whisper_device": (choice("auto", "cpu", "cuda"), "whisper_device"),
        "whisper_compute_type": (
            choice("auto", "int8", "int8_float32", "int8_float16", "int16", "float16", "float32"),
            "whisper_compute_type",
        ),
        "whisper_threads": (int_range(1, 64), "whisper_threads"),
        "whisper_window": (choice("short", "full"), "whisper_window"),
        "workers": (int_range(1, 64), "workers"),
        "language": (str.strip, "language"),
        "complete_timeout_ms": (int_range(100, 10000), "complete_timeout_ms"),
        "incomplete_timeout_ms": (int_range(100, 20000), "incomplete_timeout_ms"),
        "max_speech_ms": (int_range(1000, 120000), "max_speech_ms"),
        "min_confidence": (float, "min_confidence"),
    },
    "cti": {
        "default_country": (lambda s: s.strip().upper(), "default_country"),
        "recent_interactions": (int_range(0, 1000), "recent_interactions"),
    },
    "queues": {
        "timeout": (lambda s: float(int_range(5, 86400)(s)), "timeout"),
        "ring_timeout": (lambda s: float(int_range(5, 300)(s)), "ring_timeout"),
        "no_answer": (choice("away", "available"), "no_answer"),
        "music": (audio_file, "music"),
        "announce_interval": (lambda s: float(int_range(0, 3600)(s)), "announce_interval"),
        "ringing": (choice("music", "ringback"), "ringing"),
        "overflow": (queue_target, "overflow"),
        "service_level_seconds": (lambda s: float(int_range(1, 3600)(s)), "service_level_seconds"),
        "callback_key": (dtmf_key, "callback_key"),
    },
    "log": {
        "level": (choice("debug", "info", "warning", "error"), "level"),
        "format": (choice("text", "json"), "format"),
        "sip_trace": (choice("no", "headers", "full"), "sip_trace"),
    },
    "throttle": {
        "invite_rate": (float_range(0.0, 100000.0), "invite_rate"),
        "invite_burst": (int_range(1, 1000000), "invite_burst"),
        "flood_block": (lambda s: float(int_range(1, 86400)(s)), "flood_block"),
        "auth_failures": (int_range(0, 100000), "auth_failures"),
        "auth_window": (lambda s: float(int_range(1, 86400)(s)), "auth_window"),
        "block_time": (lambda s: float(int_range(1, 604800)(s)), "block_time"),
        "exempt": (networks, "exempt"),
        "max_sources": (int_range(100, 10000000), "max_sources"),
        "refusals_per_second": (int_range(1, 100000), "refusals_per_second"),
    },
    "agents": {
        "dispositions": (codes, "dispositions"),
        "wrap_up_seconds": (int_range(0, 3600), "wrap_up_seconds"),
        "away_reasons": (codes, "away_reasons"),
    },
    "webrtc": {
        "turn_url": (turn_url, "turn_url"),
        "turn_username": (str.strip, "turn_username"),
        "turn_password": (str, "turn_password"),
        "codecs": (webrtc_codecs, "codecs"),
        "hold_music": (lambda s: Path(s.strip()), "hold_music"),
    },
}
# [queue NAME]: the [queues] keys for one queue, plus the skill that serves it.
_QUEUE_KEYS: dict[str, tuple[Callable[[str], Any], str]] = {
    **_KEYS["queues"], "skill": (str.strip, "skill")}


def _section_keys(source: str, section: str) -> dict[str, tuple[Callable[[str], Any], str]]:
    if section.startswith("queue "):
        name = section.removeprefix("queue ").strip()
        if not QUEUE_NAME.match(name):
            raise ConfigError(f"{source}: [{section}]: a queue name is letters, digits, '.', '_' and '-' "
                              f"(the name a flow uses in transfer: queue:NAME)")
        return _QUEUE_KEYS
    if section not in _KEYS:
        raise ConfigError(
            f"{source}: unknown section [{section}] "
            f"(known: {', '.join(sorted(_KEYS))}, queue NAME, hours NAME)"
        )
    return _KEYS[section]


def _queue_sections(source: str, values: dict[str, dict[str, Any]],
                    defaults: QueuesConfig) -> dict[str, QueueConfig]:
    """[queue NAME] sections over the [queues] defaults; an overflow must name another queue."""
    base = {k: getattr(defaults, k) for k in QueuesConfig.__dataclass_fields__}
    out: dict[str, QueueConfig] = {}
    for section, kwargs in values.items():
        if not section.startswith("queue "):
            continue
        name = section.removeprefix("queue ").strip()
        queue = QueueConfig(**{**base, **kwargs, "name": name})
        if queue.overflow == f"queue:{name}":
            raise ConfigError(f"{source}: [{section}] overflow: a queue cannot overflow into itself")
        out[name] = queue
    return out


def load_config(path: str | Path | None) -> Config:
    """Read and check a config file; None gives the built-in defaults."""
    if path is None:
        return Config()
    source = str(path)
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=("#", ";"))
    try:
        with open(path, encoding="utf-8") as fh:
            parser.read_file(fh, source=source)
    except FileNotFoundError:
        raise ConfigError(f"{source}: file not found") from None
    except (configparser.Error, UnicodeDecodeError) as exc:
        raise ConfigError(f"{source}: not a valid INI file: {exc}") from None

    values: dict[str, dict[str, Any]] = {}
    hours: dict[str, BusinessHours] = {}
    for section in parser.sections():
        if section.startswith("hours "):
            name = section[len("hours "):].strip()
            try:
                hours[name] = parse_hours(name, dict(parser.items(section)))
            except ValueError as exc:
                raise ConfigError(f"{source}: [{section}] {exc}") from None
            continue
        keys = _section_keys(source, section)
        values.setdefault(section, {})
        for key, raw in parser.items(section):
            spec = keys.get(key)
            if spec is None:
                raise ConfigError(
                    f"{source}: [{section}] unknown key {key!r} "
                    f"(known: {', '.join(sorted(keys))})"
                )
            convert, name = spec
            try:
                values.setdefault(section, {})[name] = convert(raw)
            except (ValueError, TypeError) as exc:
                raise ConfigError(f"{source}: [{section}] {key}: {exc}") from None

    def build(section: str, cls: type[Any]) -> Any:
        kwargs = dict(values.get(section, {}))
        if section == "rtp" and "ports" in kwargs:
            kwargs["port_min"], kwargs["port_max"] = kwargs.pop("ports")
        return cls(**kwargs)

    register = None
    if "register" in values:
        missing = [k for k in ("registrar", "username", "password") if k not in values["register"]]
        if missing:
            raise ConfigError(f"{source}: [register] {missing[0]}: required when [register] is present")
        register = build("register", RegisterConfig)
    trunk = build_trunk(source, values.get("trunk"), register)
    http = build("http", HttpConfig)
    if any(len(k) < 16 for k in http.api_keys):
        raise ConfigError(f"{source}: [http] api_keys: every key must be at least 16 characters")
    asr = build("asr", AsrConfig)
    queues = build("queues", QueuesConfig)
    if not 0.0 <= asr.min_confidence <= 1.0:
        raise ConfigError(f"{source}: [asr] min_confidence: expected 0.0-1.0, found {asr.min_confidence}")
    node = build("node", NodeConfig)
    if node.lost_after < 2 * node.heartbeat_interval:
        raise ConfigError(f"{source}: [node] lost_after: must be at least twice heartbeat_interval "
                          f"({node.heartbeat_interval:g} s), found {node.lost_after:g}")
    return Config(
        source=source,
        node=node,
        sip=build("sip", SipConfig),
        register=register,
        trunk=trunk,
        callbacks=build("callbacks", CallbacksConfig),
        rtp=build("rtp", RtpConfig),
        http=http,
        database=build("database", DatabaseConfig),
        ivr=build("ivr", IvrConfig),
        asr=asr,
        cti=build("cti", CtiConfig),
        queues=queues,
        queue=_queue_sections(source, values, queues),
        throttle=build("throttle", ThrottleSettings),
        webrtc=build("webrtc", WebRtcConfig),
        agents=build("agents", AgentsConfig),
        log_level=values.get("log", {}).get("level", "info"),
        hours=hours,
        log_format=values.get("log", {}).get("format", "text"),
        sip_trace=values.get("log", {}).get("sip_trace", "no"),
    )
