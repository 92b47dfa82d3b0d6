"""Sign-in throttling and security events for the HTTP side (docs/security.md).

Security events are one log line each, the same format as the SIP side's (voice/sip/security.py):

    SECURITY event=signin_failed src=203.0.113.9 account=agent:ann
    SECURITY event=blocked src=203.0.113.9 reason=signin_failures seconds=300
    SECURITY event=blocked src=203.0.113.9 account=agent:ann reason=signin_failures seconds=300

Values from the network are cut to 64 characters and reduced to printable ASCII; no password or
key is ever written. (cti imports nothing from voice, hence the few lines of formatting here.)
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass

log = logging.getLogger("cti.security")

MAX_VALUE = 64
_SAFE = frozenset(chr(c) for c in range(0x21, 0x7F)) - {'"', "=", "\\"}


def clean(value: object) -> str:
    text = str(value)
    out = "".join(c if c in _SAFE else "?" for c in text[:MAX_VALUE])
    return (out + "...") if len(text) > MAX_VALUE else (out or "-")


def security_event(event: str, src: str, **fields: object) -> None:
    """Log one security event (WARNING, logger `cti.security`)."""
    parts = [f"SECURITY event={event}", f"src={clean(src)}", *(f"{k}={clean(v)}" for k, v in fields.items())]
    log.warning("%s", " ".join(parts))


@dataclass
class _Count:
    failures: int = 0
    window_start: float = 0.0
    blocked_until: float = 0.0
    seen: float = 0.0


class SigninThrottle:
    """Failed sign-ins counted per source address and per account, in a window of `window`
    seconds; the `failures`-th blocks that source (or account) for `block` seconds, in which every
    sign-in attempt there, right or wrong, gets 429. Time is passed in; the table is bounded."""

    MAX_ENTRIES = 10000

    def __init__(self, failures: int = 5, window: float = 300.0, block: float = 300.0) -> None:
        self.failures = failures
        self.window = window
        self.block = block
        self._entries: OrderedDict[str, _Count] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def retry_after(self, src: str, account: str, now: float) -> int:
        """Seconds until a sign-in from `src` for `account` may be tried again; 0: now."""
        until = max(self._until(f"src:{src}", now), self._until(f"acct:{account}", now))
        return 0 if until <= now else max(1, int(until - now + 0.999))

    def _until(self, key: str, now: float) -> float:
        entry = self._entries.get(key)
        return entry.blocked_until if entry is not None else 0.0

    def failed(self, src: str, account: str, now: float) -> None:
        """Count one failed sign-in; logs a `blocked` event when it blocks the source or account."""
        if self.failures <= 0:
            return
        for key, fields in ((f"src:{src}", {}), (f"acct:{account}", {"account": account})):
            entry = self._entry(key, now)
            if entry.blocked_until > now:
                continue
            if now - entry.window_start > self.window:
                entry.window_start, entry.failures = now, 0
            entry.failures += 1
            if entry.failures >= self.failures:
                entry.blocked_until, entry.failures = now + self.block, 0
                security_event("blocked", src, **fields, reason="signin_failures", seconds=int(self.block))

    def succeeded(self, src: str, account: str) -> None:
        for key in (f"src:{src}", f"acct:{account}"):
            entry = self._entries.get(key)
            if entry is not None:
                entry.failures = 0

    def _entry(self, key: str, now: float) -> _Count:
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Count(window_start=now, seen=now)
            while self._entries:  # idle, unblocked ones go, oldest first; never more than MAX_ENTRIES
                old_key, old = next(iter(self._entries.items()))
                if len(self._entries) > self.MAX_ENTRIES or (
                        now - old.seen > self.window and old.blocked_until <= now):
                    del self._entries[old_key]
                else:
                    break
        else:
            self._entries.move_to_end(key)
        entry.seen = now
        return entry
