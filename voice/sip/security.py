"""Security events: one log line each, in a fixed format that fail2ban can match (docs/security.md).

    SECURITY event=auth_failed src=203.0.113.9 user=1001 reason=wrong_password
    SECURITY event=untrusted_call src=203.0.113.9 to=100
    SECURITY event=blocked src=203.0.113.9 reason=auth_failures seconds=600
    SECURITY event=blocked src=203.0.113.9 reason=invite_flood seconds=10

`src` is always the source address; other values come from the network, so they are cut to
64 characters and anything but printable ASCII (and space, quote, `=`) becomes `?`. No password,
response or nonce is ever written.
"""

from __future__ import annotations

import logging

log = logging.getLogger("voice.security")

MAX_VALUE = 64
_SAFE = frozenset(chr(c) for c in range(0x21, 0x7F)) - {'"', "=", "\\"}


def clean(value: object) -> str:
    """A network-supplied value made safe for one log field."""
    text = str(value)
    out = "".join(c if c in _SAFE else "?" for c in text[:MAX_VALUE])
    return (out + "...") if len(text) > MAX_VALUE else (out or "-")


def format_event(event: str, src: str, **fields: object) -> str:
    parts = [f"SECURITY event={event}", f"src={clean(src)}"]
    parts += [f"{k}={clean(v)}" for k, v in fields.items()]
    return " ".join(parts)


def security_event(event: str, src: str, **fields: object) -> None:
    """Log one security event (WARNING, logger `voice.security`)."""
    log.warning("%s", format_event(event, src, **fields))
