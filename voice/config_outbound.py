"""The config of calls the service places: [trunk] (where they go, credentials, caller ID) and
[callbacks] (retries, give-up), and the converters of their keys (voice.config checks the file)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from voice.config import RegisterConfig


@dataclass(frozen=True, kw_only=True)
class TrunkConfig:
    """[trunk]: where outbound calls to customers go (callbacks, click-to-call). Without the
    section, the [register] registrar and credentials are the trunk (None when neither is set)."""

    uri: str  # sip:host[:port][;transport=tcp]: the next hop; the number goes in the user part
    username: str | None = None  # digest credentials for 401/407 challenges
    password: str | None = None
    caller_id: str = ""  # the From user customers see ("": the [register] username, else "voice")
    caller_name: str | None = None  # the From display name
    prefix: str = ""  # put before every number dialled (e.g. 0 for an outside line)
    domain: str | None = None  # host of the Request-URI (default: the uri's host)


@dataclass(frozen=True, kw_only=True)
class CallbacksConfig:
    """[callbacks]: how the service calls customers back (virtual hold, POST /api/v1/callbacks)."""

    retries: int = 2  # more attempts after the first when the customer does not answer
    retry_interval: float = 300.0  # seconds between attempts
    give_up_after: float = 86400.0  # seconds after the request: not called back any more (failed)
    ring_timeout: float = 30.0  # seconds the customer's phone rings per attempt
    poll_interval: float = 1.0  # seconds between looks at the table for callbacks of other nodes


def digits_or_empty(text: str, what: str) -> str:
    t = text.strip()
    if not re.fullmatch(r"[0-9*#+]*", t):
        raise ValueError(f"{what}: expected digits (0-9, *, #, +), found {t!r}")
    return t


def dtmf_key(text: str) -> str:
    t = text.strip()
    if t and not re.fullmatch(r"[0-9*#]", t):
        raise ValueError(f"expected one key 0-9, * or # (or nothing: off), found {t!r}")
    return t


def sip_uri(text: str) -> str:
    t = text.strip()
    uri = t if t.startswith(("sip:", "sips:")) else f"sip:{t}"
    if not re.fullmatch(r"sips?:([^@\s]+@)?[A-Za-z0-9.\-\[\]:]+(;[^\s]*)?", uri):
        raise ValueError(f"expected sip:host[:port][;transport=udp|tcp], found {t!r}")
    return uri


def build_trunk(source: str, values: dict[str, Any] | None,
                register: RegisterConfig | None) -> TrunkConfig | None:
    """[trunk] as given, else the [register] registrar with its credentials, else None."""
    from voice.config import ConfigError

    if values is not None:
        if "uri" not in values:
            raise ConfigError(f"{source}: [trunk] uri: required when [trunk] is present")
        if ("username" in values) != ("password" in values):
            raise ConfigError(f"{source}: [trunk] password: username and password go together")
        return TrunkConfig(**values)
    if register is not None:  # the registrar is the trunk, with the same credentials
        return TrunkConfig(uri=sip_uri(register.registrar), username=register.username,
                           password=register.password, domain=register.domain)
    return None
