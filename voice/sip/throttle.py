"""Per-source throttling of calls and authentication, sans-IO (time is passed in).

In the manner of Kamailio's `pike` (a request rate per source address) and Asterisk's security
events (failed authentications counted per source):

- every source address has a token bucket for new INVITEs (`invite_rate` per second, up to
  `invite_burst` at once); a source that empties it is a flood and its INVITEs get 503 with
  Retry-After for `flood_block` seconds;
- failed authentications and refused untrusted calls are counted per source in a window of
  `auth_window` seconds; the `auth_failures`-th blocks the source for `block_time` seconds, during
  which its INVITEs get 403, the correct password included (a guesser learns nothing from it).

A refused source gets at most `refusals_per_second` answers a second; beyond that its INVITEs
are dropped before they are parsed (`shed`), so a flood costs little CPU and OPTIONS from
others keep being answered. The table is bounded (`max_sources`, least recently seen first
out) and entries expire once idle and unblocked, so a flood from many addresses leaves no memory.
"""

from __future__ import annotations

import enum
import ipaddress
from collections import OrderedDict
from dataclasses import dataclass

__all__ = ["Decision", "SourceThrottle", "ThrottleSettings", "Verdict"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, kw_only=True)
class ThrottleSettings:
    """The [throttle] section of the config (documented in sip.example.conf)."""

    invite_rate: float = 100.0  # new INVITEs per second per source, sustained; 0 turns the limit off
    invite_burst: int = 200  # INVITEs a source may send at once before the rate applies
    flood_block: float = 10.0  # seconds a flooding source is refused (503, Retry-After)
    auth_failures: int = 10  # failed authentications per source within auth_window that block it; 0: never
    auth_window: float = 60.0
    block_time: float = 600.0  # seconds a blocked source is refused (403)
    exempt: tuple[Network, ...] = ()  # sources never throttled (e.g. your own proxy)
    max_sources: int = 10000
    refusals_per_second: int = 20  # refusals sent to one refused source a second; more are dropped unread


class Verdict(enum.Enum):
    ALLOW = "allow"
    FLOOD = "flood"  # over the INVITE rate: 503 with Retry-After
    BLOCKED = "blocked"  # too many failures: 403


@dataclass
class _Source:
    tokens: float
    refilled: float  # time tokens were last topped up
    failures: int = 0
    window_start: float = 0.0
    flood_until: float = 0.0
    blocked_until: float = 0.0
    seen: float = 0.0
    refusal_second: float = 0.0
    refusals: int = 0


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    retry_after: int = 0  # seconds, for the Retry-After header
    started: bool = False  # this request started the refusal (log it once, not per request)


class SourceThrottle:
    def __init__(self, settings: ThrottleSettings | None = None) -> None:
        self.settings = settings or ThrottleSettings()
        self._sources: OrderedDict[str, _Source] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sources)

    def _exempt(self, host: str) -> bool:
        if not self.settings.exempt:
            return False
        try:
            ip = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            return False
        return any(ip in net for net in self.settings.exempt if ip.version == net.version)

    def _source(self, host: str, now: float) -> _Source:
        src = self._sources.get(host)
        if src is None:
            burst = float(self.settings.invite_burst)
            src = self._sources[host] = _Source(tokens=burst, refilled=now, seen=now)
            self._expire(now)
        else:
            self._sources.move_to_end(host)
        src.seen = now
        return src

    def _expire(self, now: float) -> None:
        """Drop idle, unblocked sources from the old end; then enforce max_sources."""
        s = self.settings
        idle = max(s.auth_window, s.invite_burst / s.invite_rate if s.invite_rate > 0 else 0.0)
        while self._sources:
            host, src = next(iter(self._sources.items()))
            if len(self._sources) > s.max_sources or (
                now - src.seen > idle and src.blocked_until <= now and src.flood_until <= now
            ):
                del self._sources[host]
            else:
                break

    def shed(self, host: str, now: float) -> bool:
        """True when a new INVITE from `host` is to be dropped before it is even parsed: the source
        is refused (flood or block) and has had its `refusals_per_second` answers this second.
        A flood then costs a lookup per datagram, not a parse and a response (Kamailio pike drops)."""
        src = self._sources.get(host)
        if src is None or (src.flood_until <= now and src.blocked_until <= now):
            return False
        if now - src.refusal_second >= 1.0 or now < src.refusal_second:
            src.refusal_second, src.refusals = now, 0
        src.refusals += 1
        return src.refusals > self.settings.refusals_per_second

    def blocked(self, host: str, now: float) -> bool:
        src = self._sources.get(host)
        return src is not None and src.blocked_until > now

    def check_invite(self, host: str, now: float) -> Decision:
        """Count one new INVITE from `host`; say whether to take it."""
        s = self.settings
        if self._exempt(host):
            return Decision(Verdict.ALLOW)
        src = self._source(host, now)
        if src.blocked_until > now:
            return Decision(Verdict.BLOCKED, retry_after=_ceil(src.blocked_until - now))
        if s.invite_rate <= 0:
            return Decision(Verdict.ALLOW)
        if now > src.refilled:  # a clock that steps back never takes tokens away
            src.tokens = min(float(s.invite_burst), src.tokens + (now - src.refilled) * s.invite_rate)
            src.refilled = now
        if src.flood_until > now:
            return Decision(Verdict.FLOOD, retry_after=_ceil(src.flood_until - now))
        if src.tokens < 1.0:
            src.flood_until = now + s.flood_block
            src.refusal_second, src.refusals = now, 1  # this refusal counts as the first of its second
            return Decision(Verdict.FLOOD, retry_after=_ceil(s.flood_block), started=True)
        src.tokens -= 1.0
        return Decision(Verdict.ALLOW)

    def failed(self, host: str, now: float) -> bool:
        """Count one failed authentication (or refused untrusted call) from `host`; True when it
        blocks the source from now on."""
        s = self.settings
        if s.auth_failures <= 0 or self._exempt(host):
            return False
        src = self._source(host, now)
        if src.blocked_until > now:
            return False
        if now - src.window_start > s.auth_window:
            src.window_start, src.failures = now, 0
        src.failures += 1
        if src.failures >= s.auth_failures:
            src.blocked_until = now + s.block_time
            src.failures = 0
            return True
        return False

    def succeeded(self, host: str) -> None:
        """A correct authentication clears the failure count (not a block)."""
        src = self._sources.get(host)
        if src is not None:
            src.failures = 0


def _ceil(seconds: float) -> int:
    return max(1, int(-(-seconds // 1)))

