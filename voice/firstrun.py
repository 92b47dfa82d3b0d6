"""The first run shows the way: an API key when none is configured, and a ready message that says
what to dial, which pages to open and where the key is.

The key is generated once into `data/api_key` (mode 0600) and printed to stdout that one time;
later starts read it from the file and only say where it is. It never goes to the log.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, replace
from pathlib import Path

from voice.config import Config

KEY_FILE = Path("data") / "api_key"


@dataclass(frozen=True)
class KeySource:
    where: str  # "data/api_key" or "[http] api_keys in sip.conf"
    generated: str | None = None  # the new key, only on the start that made it


_key_source: KeySource | None = None


def with_api_key(config: Config, key_file: Path = KEY_FILE) -> Config:
    """`config`, with the key from `key_file` (generated now if absent) when it configures none."""
    global _key_source
    if config.http.api_keys:
        _key_source = KeySource(where=f"[http] api_keys in {config.source}")
        return config
    generated = None
    try:
        key = key_file.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        key = ""
    if len(key) < 16:
        key = secrets.token_urlsafe(32)
        key_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(key + "\n")
        generated = key
    _key_source = KeySource(where=str(key_file), generated=generated)
    return replace(config, http=replace(config.http, api_keys=(key,)))


def _host_for_urls(host: str) -> str:
    if host in ("0.0.0.0", "", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def dial_number(config: Config) -> str:
    """A number that reaches the default flow: the first route to it, else 100 (any number does)."""
    for number, flow in config.ivr.routes.items():
        if flow == config.ivr.default_flow:
            return number
    return "100"


def ready_message(config: Config, http_port: int, sip_port: int | None = None) -> str:
    """What `voice run` prints once it is listening."""
    sip = config.sip.listen
    sip_host = _host_for_urls(sip.host)
    port = sip_port or sip.port
    base = f"http://{_host_for_urls(config.http.listen.host)}:{http_port}"
    source = _key_source or KeySource(where=f"[http] api_keys in {config.source}")
    lines = [
        f"voice: ready (SIP {sip}, HTTP {config.http.listen.host}:{http_port})",
        f"  call:    sip:{dial_number(config)}@{sip_host}:{port}"
        "   (baresip: baresip -f contrib/baresip, then /dial that URI)",
        f"  agents:  {base}/agent",
        f"  admin:   {base}/admin   (wallboard: {base}/wallboard)",
        f"  health:  {base}/healthz  {base}/readyz   metrics: {base}/metrics",
    ]
    if source.generated:
        lines.append(f"  API key (generated now, shown only this once; kept in {source.where}): "
                     f"{source.generated}")
    else:
        lines.append(f"  API key: {source.where}")
    return "\n".join(lines)
