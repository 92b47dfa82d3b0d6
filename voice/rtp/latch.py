"""Strict source latching for symmetric RTP (RFC 4961): whom we accept media from.

Policy (close to Asterisk's `strictrtp=yes` with `probation`):
- The first packet from the address the peer's SDP names latches at once.
- A peer behind NAT sends from another address than its SDP says. Such a source
  latches only after `probation` consecutive packets (same SSRC, sequence +1 each
  time) that carry a payload type we negotiated. One stray or spoofed packet, or a
  late stream from the previous call on a recycled port, cannot capture the call.
  We cannot match on SSRC alone: SIP peers do not announce it in SDP.
- Once latched, packets from any other address are dropped (no RTP bleed); we also
  send to the latched address, which is what makes NAT traversal work.
- A re-INVITE with a new address starts learning again (`SourceLatch(...)` anew).
"""

from __future__ import annotations

import ipaddress
from typing import Any

Address = tuple[str, int]


def normalize_host(host: str) -> str:
    """One spelling per address: compressed IPv6, IPv4-mapped IPv6 as plain IPv4."""
    if ":" not in host:
        return host  # IPv4 (the common case) is already canonical from the socket
    try:
        ip = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return ip.compressed


class SourceLatch:
    def __init__(self, expected: Address, payload_types: frozenset[int], probation: int = 3,
                 previous: SourceLatch | None = None) -> None:
        """`previous`: the latch this one replaces after a re-INVITE that kept the address (only
        the payload types changed), whose latched source carries over."""
        self.expected = (normalize_host(expected[0]), expected[1])
        self.payload_types = payload_types
        self.probation = probation
        self.latched: Address | None = None
        # Where we send: spelled as the socket gave it (a dual-stack socket needs the mapped form),
        # or as configured. Compared only in normalized form.
        self.send_to: Address = (expected[0], expected[1])  # the latched source, else the SDP address
        self._raw: object = None  # the source exactly as last accepted once latched: a cheap check
        self._candidate: tuple[Address, int, int, int] | None = None  # (addr, ssrc, last seq, count)
        if previous is not None and previous.latched is not None:
            self.latched, self.send_to, self._raw = previous.latched, previous.send_to, previous._raw

    def accept(self, addr: tuple[Any, ...], ssrc: int, seq: int, payload_type: int) -> bool:
        """True if the packet is from our peer; may latch. `addr` as the socket reports it."""
        if addr == self._raw:
            return True
        src: Address = (normalize_host(addr[0]), addr[1])
        if self.latched is not None:
            if src == self.latched:
                self._raw = addr
                return True
            return False
        if src == self.expected:
            self._latch(src, addr)
            return True
        if payload_type not in self.payload_types:
            return False
        cand = self._candidate
        if cand is not None and cand[0] == src and cand[1] == ssrc and (cand[2] + 1) & 0xFFFF == seq:
            count = cand[3] + 1
        else:
            count = 1
        self._candidate = (src, ssrc, seq, count)
        if count >= self.probation:
            self._latch(src, addr)
            return True
        return False

    def _latch(self, src: Address, addr: tuple[Any, ...]) -> None:
        self.latched = src
        self.send_to = (addr[0], src[1])
        self._raw = addr


def media_address(remote: tuple[Any, ...]) -> Address:
    """(host, port) with the host as a canonical IP literal; ValueError naming what is wrong.
    Port 0 is allowed: it means "do not send" (RFC 3264 section 8.4)."""
    host, port = remote[0], remote[1]
    if not isinstance(host, str) or "%" in host:
        raise ValueError(f"remote media address {str(host)[:60]!r} is not an IP address literal")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"remote media address {host[:60]!r} is not an IP address literal "
                         "(media addresses are never resolved)") from None
    if not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"remote media port {port!r} is outside 0-65535")
    return (ip.compressed, port)
