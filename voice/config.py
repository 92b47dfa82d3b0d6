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

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class ConfigError(Exception):
    """A configuration problem, phrased for the admin who wrote the file."""


@dataclass(frozen=True, kw_only=True)
class HostPort:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


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


@dataclass(frozen=True, kw_only=True)
class HttpConfig:
    listen: HostPort = HostPort(host="127.0.0.1", port=8080)
    api_keys: tuple[str, ...] = ()
    max_body: int = 1024 * 1024


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


@dataclass(frozen=True, kw_only=True)
class AsrConfig:
    engine: str = "auto"  # auto | vosk | pocketsphinx | none (keys only)
    vosk_model: str | None = None
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
    timeout: float = 300.0  # seconds a caller waits before the transfer's on_failure (overflow)
    ring_timeout: float = 20.0  # seconds an agent's phone rings before the next agent is tried
    no_answer: str = "away"  # what an agent who let it ring becomes: away | available


def default_node_id() -> str:
    """The host name, cut to what a node id may hold."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname())[:64]
    return name or "node"


@dataclass(frozen=True, kw_only=True)
class NodeConfig:
    id: str = field(default_factory=default_node_id)
    heartbeat_interval: float = 2.0  # seconds between this node's heartbeats in the database
    lost_after: float = 10.0  # seconds a peer's heartbeat may stand still before it is taken over


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
    rtp: RtpConfig = RtpConfig()
    http: HttpConfig = HttpConfig()
    database: DatabaseConfig = DatabaseConfig()
    ivr: IvrConfig = IvrConfig()
    asr: AsrConfig = AsrConfig()
    cti: CtiConfig = CtiConfig()
    queues: QueuesConfig = QueuesConfig()
    log_level: str = "info"


def parse_host_port(text: str, default_port: int) -> HostPort:
    """Parse `host:port`, `[v6]:port`, `host` or `:port`."""
    text = text.strip()
    m = re.fullmatch(r"\[([0-9a-fA-F:.]+)\](?::(\d+))?", text)
    if m:
        host, port = m.group(1), m.group(2)
    elif text.count(":") == 1:
        host, port = text.split(":")
    elif text.count(":") > 1:
        raise ValueError("IPv6 addresses need brackets, e.g. [::1]:5060")
    else:
        host, port = text, None
    port_num = default_port if port in (None, "") else int(port)
    if not 0 < port_num < 65536:
        raise ValueError(f"port {port_num} is outside 1-65535")
    return HostPort(host=host or "0.0.0.0", port=port_num)


def _split_list(text: str) -> list[str]:
    return [p.strip() for p in re.split(r"[,\s]+", text) if p.strip()]


def _mapping(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in _split_list(text):
        if ":" not in item and "=" not in item:
            raise ValueError(f"expected key:value pairs, found {item!r}")
        key, value = re.split(r"[:=]", item, maxsplit=1)
        out[key.strip()] = value.strip()
    return out


def _bool(text: str) -> bool:
    t = text.strip().lower()
    if t in ("1", "yes", "true", "on"):
        return True
    if t in ("0", "no", "false", "off"):
        return False
    raise ValueError(f"expected yes or no, found {text!r}")


def _choice(*choices: str) -> Callable[[str], str]:
    def check(text: str) -> str:
        t = text.strip().lower()
        if t not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, found {text!r}")
        return t

    return check


def _int_range(lo: int, hi: int) -> Callable[[str], int]:
    def check(text: str) -> int:
        n = int(text)
        if not lo <= n <= hi:
            raise ValueError(f"expected a number from {lo} to {hi}, found {n}")
        return n

    return check


def _seconds(lo: float, hi: float) -> Callable[[str], float]:
    def check(text: str) -> float:
        n = float(text)
        if not lo <= n <= hi:
            raise ValueError(f"expected seconds from {lo:g} to {hi:g}, found {n:g}")
        return n

    return check


def _port_range(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", text)
    if not m:
        raise ValueError(f"expected a range like 10000-20000, found {text!r}")
    lo, hi = int(m.group(1)), int(m.group(2))
    if not (1024 <= lo < hi < 65536):
        raise ValueError(f"range {lo}-{hi} must be ascending within 1024-65535")
    if (hi - lo) < 2:
        raise ValueError("range must hold at least two ports")
    return lo, hi


def _networks(text: str) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(p, strict=False) for p in _split_list(text))


# section -> key -> (converter, field name). Unknown keys are errors: a typo must not pass silently.
_KEYS: dict[str, dict[str, tuple[Callable[[str], Any], str]]] = {
    "sip": {
        "listen": (lambda s: parse_host_port(s, 5060), "listen"),
        "transports": (lambda s: tuple(_choice("udp", "tcp")(p) for p in _split_list(s)), "transports"),
        "trusted": (_networks, "trusted"),
        "public_address": (lambda s: str(ipaddress.ip_address(s.strip())), "public_address"),
        "domain": (str.strip, "domain"),
        "auth_users": (_mapping, "auth_users"),
        "user_agent": (str.strip, "user_agent"),
        "max_calls": (_int_range(1, 100000), "max_calls"),
        "t1_ms": (_int_range(10, 5000), "t1_ms"),
        "answer_delay_ms": (_int_range(0, 60000), "answer_delay_ms"),
        "drain_timeout": (_int_range(0, 86400), "drain_timeout"),
    },
    "node": {
        "id": (_node_id, "id"),
        "heartbeat_interval": (_seconds(0.1, 60), "heartbeat_interval"),
        "lost_after": (_seconds(0.5, 3600), "lost_after"),
    },
    "register": {
        "registrar": (str.strip, "registrar"),
        "username": (str.strip, "username"),
        "password": (str, "password"),
        "expires": (_int_range(60, 86400), "expires"),
        "domain": (str.strip, "domain"),
    },
    "rtp": {
        "ports": (_port_range, "ports"),
        "record": (_choice("no", "caller", "both"), "record"),
    },
    "http": {
        "listen": (lambda s: parse_host_port(s, 8080), "listen"),
        "api_keys": (lambda s: tuple(_split_list(s)), "api_keys"),
        "max_body": (_int_range(1024, 1 << 30), "max_body"),
    },
    "database": {"url": (str.strip, "url")},
    "ivr": {
        "flows": (lambda s: Path(s.strip()), "flows"),
        "default_flow": (str.strip, "default_flow"),
        "routes": (_mapping, "routes"),
        "prompts": (lambda s: Path(s.strip()), "prompts"),
        "recordings": (lambda s: Path(s.strip()), "recordings"),
        "tts": (_choice("flite", "espeak-ng"), "tts"),
        "tts_voice": (str.strip, "tts_voice"),
    },
    "asr": {
        "engine": (_choice("auto", "vosk", "pocketsphinx", "none"), "engine"),
        "vosk_model": (str.strip, "vosk_model"),
        "workers": (_int_range(1, 64), "workers"),
        "language": (str.strip, "language"),
        "complete_timeout_ms": (_int_range(100, 10000), "complete_timeout_ms"),
        "incomplete_timeout_ms": (_int_range(100, 20000), "incomplete_timeout_ms"),
        "max_speech_ms": (_int_range(1000, 120000), "max_speech_ms"),
        "min_confidence": (float, "min_confidence"),
    },
    "cti": {
        "default_country": (lambda s: s.strip().upper(), "default_country"),
        "recent_interactions": (_int_range(0, 1000), "recent_interactions"),
    },
    "queues": {
        "timeout": (lambda s: float(_int_range(5, 86400)(s)), "timeout"),
        "ring_timeout": (lambda s: float(_int_range(5, 300)(s)), "ring_timeout"),
        "no_answer": (_choice("away", "available"), "no_answer"),
    },
    "log": {"level": (_choice("debug", "info", "warning", "error"), "level")},
}


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
    for section in parser.sections():
        if section not in _KEYS:
            raise ConfigError(
                f"{source}: unknown section [{section}] (known: {', '.join(sorted(_KEYS))})"
            )
        for key, raw in parser.items(section):
            spec = _KEYS[section].get(key)
            if spec is None:
                raise ConfigError(
                    f"{source}: [{section}] unknown key {key!r} "
                    f"(known: {', '.join(sorted(_KEYS[section]))})"
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
    http = build("http", HttpConfig)
    if any(len(k) < 16 for k in http.api_keys):
        raise ConfigError(f"{source}: [http] api_keys: every key must be at least 16 characters")
    asr = build("asr", AsrConfig)
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
        rtp=build("rtp", RtpConfig),
        http=http,
        database=build("database", DatabaseConfig),
        ivr=build("ivr", IvrConfig),
        asr=asr,
        cti=build("cti", CtiConfig),
        queues=build("queues", QueuesConfig),
        log_level=values.get("log", {}).get("level", "info"),
    )
