"""The checks of single configuration values: each takes the text of one INI value and returns
what it means, or raises ValueError saying what was expected (voice.config names the file,
section and key around it)."""

from __future__ import annotations

import ipaddress
import re
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
QUEUE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True, kw_only=True)
class HostPort:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


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


def split_list(text: str) -> list[str]:
    return [p.strip() for p in re.split(r"[,\s]+", text) if p.strip()]


def mapping(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in split_list(text):
        if ":" not in item and "=" not in item:
            raise ValueError(f"expected key:value pairs, found {item!r}")
        key, value = re.split(r"[:=]", item, maxsplit=1)
        out[key.strip()] = value.strip()
    return out


def yes_no(text: str) -> bool:
    t = text.strip().lower()
    if t in ("1", "yes", "true", "on"):
        return True
    if t in ("0", "no", "false", "off"):
        return False
    raise ValueError(f"expected yes or no, found {text!r}")


def empty(what: str) -> tuple[str, ...]:
    raise ValueError(f"expected {what}")


def choice(*choices: str) -> Callable[[str], str]:
    def check(text: str) -> str:
        t = text.strip().lower()
        if t not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, found {text!r}")
        return t

    return check


def int_range(lo: int, hi: int) -> Callable[[str], int]:
    def check(text: str) -> int:
        n = int(text)
        if not lo <= n <= hi:
            raise ValueError(f"expected a number from {lo} to {hi}, found {n}")
        return n

    return check


def float_range(lo: float, hi: float) -> Callable[[str], float]:
    def check(text: str) -> float:
        n = float(text)
        if not lo <= n <= hi:  # NaN fails too
            raise ValueError(f"expected a number from {lo:g} to {hi:g}, found {text.strip()!r}")
        return n

    return check


def seconds(lo: float, hi: float) -> Callable[[str], float]:
    def check(text: str) -> float:
        n = float(text)
        if not lo <= n <= hi:
            raise ValueError(f"expected seconds from {lo:g} to {hi:g}, found {n:g}")
        return n

    return check


def off_or_seconds(lo: float, hi: float) -> Callable[[str], float]:
    def check(text: str) -> float:
        try:
            n = float(text)
        except ValueError:
            n = float("nan")
        if n == 0 or lo <= n <= hi:
            return n
        raise ValueError(f"expected 0 (off) or seconds from {lo:g} to {hi:g}, found {text.strip()!r}")

    return check


def port_range(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", text)
    if not m:
        raise ValueError(f"expected a range like 10000-20000, found {text!r}")
    lo, hi = int(m.group(1)), int(m.group(2))
    if not (1024 <= lo < hi < 65536):
        raise ValueError(f"range {lo}-{hi} must be ascending within 1024-65535")
    if (hi - lo) < 2:
        raise ValueError("range must hold at least two ports")
    return lo, hi


def timezone_name(text: str) -> str:
    name = text.strip()
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r} (e.g. UTC, Europe/Berlin, America/New_York)") from None
    return name


def audio_file(text: str) -> Path:
    path = Path(text.strip())
    if not path.is_file():
        raise ValueError(f"file not found: {path}")
    return path


def queue_target(text: str) -> str:
    t = text.strip()
    if t and not (t.startswith("queue:") and QUEUE_NAME.match(t.removeprefix("queue:"))):
        raise ValueError(f"expected queue:NAME (or nothing), found {text!r}")
    return t


def networks(text: str) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(p, strict=False) for p in split_list(text))
