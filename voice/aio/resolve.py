"""Asynchronous host name resolution for SIP next hops (Via, Contact, Route, agents' URIs).

Names from the network are resolved off the event loop (the loop's getaddrinfo runs in its
executor), with a timeout, through a small cache that also remembers failures for a while, and
one lookup in flight per name. A name that is not a valid DNS name (a label over 63 octets, over
253 in all, characters IDNA refuses) fails at once without a query. Each failing name is logged
once (cut to 64 characters), however many messages were meant for it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
from collections import OrderedDict

log = logging.getLogger("voice.sip")

LOG_NAME = 64  # characters of a name that reach the log


def cut(name: str, limit: int = LOG_NAME) -> str:
    """A network-supplied name fit for one log line: printable, at most `limit` characters."""
    text = "".join(c if c.isprintable() else "?" for c in name[:limit])
    return text + (f"... ({len(name)} chars)" if len(name) > limit else "")


def check_name(host: str) -> str | None:
    """Why `host` cannot be a DNS name (None: it can): RFC 1035 2.3.4 limits, IDNA encoding."""
    if not host or len(host) > 253:
        return "name longer than 253 characters" if host else "empty name"
    try:
        encoded = host.encode("idna")
    except UnicodeError as exc:  # "label too long", "label empty", bad characters
        return f"not a valid host name ({exc.__class__.__name__}: {str(exc)[:60]})"
    if any(len(label) > 63 for label in encoded.split(b".")):
        return "label longer than 63 characters"
    return None


class HostResolver:
    """Cached, bounded, time-limited resolution of (host, port) to a UDP socket address."""

    def __init__(self, loop: asyncio.AbstractEventLoop, *, timeout: float = 2.0, ttl: float = 60.0,
                 negative_ttl: float = 30.0, size: int = 256) -> None:
        self.loop = loop
        self.timeout = timeout
        self.ttl = ttl
        self.negative_ttl = negative_ttl
        self.size = size
        self._cache: OrderedDict[tuple[str, int], tuple[float, tuple[str, int] | None]] = OrderedDict()
        self._pending: dict[tuple[str, int], asyncio.Future[tuple[str, int] | None]] = {}
        self.lookups = 0  # getaddrinfo calls made (for tests and metrics)

    def cached(self, host: str, port: int) -> tuple[bool, tuple[str, int] | None]:
        """(found, answer): the answer is an address, or None for a remembered failure."""
        entry = self._cache.get((host, port))
        if entry is None:
            return False, None
        if entry[0] < time.monotonic():
            del self._cache[(host, port)]
            return False, None
        return True, entry[1]

    async def resolve(self, host: str, port: int) -> tuple[str, int] | None:
        """The address to send to, or None (logged once per name while its failure is cached)."""
        try:
            ipaddress.ip_address(host)
            return host, port
        except ValueError:
            pass
        found, answer = self.cached(host, port)
        if found:
            return answer
        key = (host, port)
        pending = self._pending.get(key)
        if pending is None:
            pending = self._pending[key] = self.loop.create_future()
            try:
                result = await self._lookup(host, port)
            finally:
                del self._pending[key]
            if not pending.done():
                pending.set_result(result)
            return result
        return await asyncio.shield(pending)

    async def _lookup(self, host: str, port: int) -> tuple[str, int] | None:
        problem = check_name(host)
        result: tuple[str, int] | None = None
        if problem is None:
            self.lookups += 1
            try:
                infos = await asyncio.wait_for(
                    self.loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM), self.timeout)
                result = (str(infos[0][4][0]), int(infos[0][4][1])) if infos else None
                problem = None if result else "no address"
            except TimeoutError:
                problem = f"no answer within {self.timeout:g} s"
            except (OSError, UnicodeError, ValueError) as exc:
                problem = f"{exc.__class__.__name__}: {str(exc)[:80]}"
        if result is None:
            log.warning("cannot resolve %s: %s (messages to it are dropped for %g s)", cut(host), problem,
                        self.negative_ttl)
        self._store(host, port, result)
        return result

    def _store(self, host: str, port: int, result: tuple[str, int] | None) -> None:
        ttl = self.ttl if result is not None else self.negative_ttl
        self._cache[(host, port)] = (time.monotonic() + ttl, result)
        self._cache.move_to_end((host, port))
        while len(self._cache) > self.size:
            self._cache.popitem(last=False)

    def __len__(self) -> int:
        return len(self._cache)
