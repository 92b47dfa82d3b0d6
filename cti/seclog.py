"""Security events, in one format for people and for fail2ban.

Every event is one WARNING line on the `voice.security` logger:

    security: event=<kind> source=<address> <key>=<value> ...

`event` is one of: sip_refused (a SIP request answered 401/403/407/488 by policy),
login_failed (an agent or admin sign-in with a wrong password or key), api_key_rejected,
bad_message (a peer sent something that is not SIP). Values never hold a password, key or
personal data: sources are IP addresses, and names are replaced by what they were (e.g. "agent").
With `[log] format = json` the same keys are JSON fields ({"event": ..., "source": ...}).
"""

from __future__ import annotations

import logging
import re

log = logging.getLogger("voice.security")
_SAFE = re.compile(r"[^A-Za-z0-9_.:\[\]/@+-]")


def _clean(value: object) -> str:
    return _SAFE.sub("_", str(value))[:100]


def security_event(event: str, source: str, **details: object) -> None:
    """Log one security event (see the module docstring for the format)."""
    fields = {"event": event, "source": _clean(source), **{k: _clean(v) for k, v in details.items()}}
    text = " ".join(f"{k}={v}" for k, v in fields.items())
    log.warning("security: %s", text, extra={"fields": {"msg": "security event", **fields}})
