"""The config of the agents' side: [webrtc] (the browser softphone) and [agents] (after-call
work), and the converters of their keys (voice.config checks the file)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path


def _split(text: str) -> list[str]:
    return [p.strip() for p in re.split(r"[,\s]+", text) if p.strip()]


@dataclass(frozen=True, kw_only=True)
class WebRtcConfig:
    """The agents' browser softphone (agents whose sip_uri is browser:<agent id>)."""

    turn_url: str | None = None  # turn:host:3478?transport=udp, for agents outside the LAN
    turn_username: str | None = None
    turn_password: str | None = None
    codecs: tuple[str, ...] = ("opus", "PCMU", "PCMA")  # offered to the browser in this order
    hold_music: Path | None = None  # a WAV the caller hears on hold (default: a soft tune)


@dataclass(frozen=True, kw_only=True)
class AgentsConfig:
    """[agents]: after-call work on the agent page (cti.wrapup)."""

    dispositions: tuple[str, ...] = ("resolved", "callback", "escalated", "wrong_number")
    wrap_up_seconds: int = 0  # 0: wrap-up lasts until the agent presses Available
    away_reasons: tuple[str, ...] = ("break", "lunch", "training", "meeting")


def codes(text: str) -> tuple[str, ...]:
    codes = _split(text)
    bad = [c for c in codes if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,39}", c)]
    if bad:
        raise ValueError(f"expected a list of codes (letters, digits, '_', '.', '-'; at most 40 each), "
                         f"found {bad[0]!r}")
    return tuple(dict.fromkeys(codes))


def webrtc_codecs(text: str) -> tuple[str, ...]:
    known = {"opus": "opus", "pcmu": "PCMU", "pcma": "PCMA"}
    names = [known.get(p.lower(), p) for p in _split(text)]
    bad = [n for n in names if n not in ("opus", "PCMU", "PCMA")]
    if bad or not names:
        raise ValueError(f"expected a list of opus, PCMU, PCMA, found {text.strip()!r}")
    return tuple(dict.fromkeys(names))


def turn_url(text: str) -> str:
    t = text.strip()
    if not re.fullmatch(r"(turns?|stun):[^\s]+", t):
        raise ValueError(f"expected turn:host[:port][?transport=udp|tcp] (or turns:/stun:), found {t!r}")
    return t
