"""SIP header fields without I/O: the ordered, case-insensitive `Headers` list, canonical names
(RFC 3261 7.3.3 compact forms expanded), and the two structured values the transaction layer
reads, `Via` (20.42, 18.2.1) and `CSeq` (20.16). Parsing errors raise `SipParseError`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from voice.sip.uri import (
    SipParseError,
    format_host,
    format_params,
    is_token,
    parse_hostport,
    parse_params,
    split_top,
)

_COMPACT = {
    "i": "Call-ID", "m": "Contact", "e": "Content-Encoding", "l": "Content-Length", "c": "Content-Type",
    "f": "From", "s": "Subject", "k": "Supported", "t": "To", "v": "Via", "o": "Event",
    "u": "Allow-Events", "r": "Refer-To", "b": "Referred-By", "x": "Session-Expires", "y": "Identity",
    "n": "Identity-Info", "a": "Accept-Contact", "j": "Reject-Contact", "d": "Request-Disposition",
}  # fmt: skip
_KNOWN = [
    "Accept", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow", "Authentication-Info",
    "Authorization", "Call-Info", "Content-Disposition", "Content-Language", "CSeq", "Date", "Error-Info",
    "Expires", "In-Reply-To", "Max-Forwards", "Min-Expires", "MIME-Version", "Organization", "Priority",
    "Proxy-Authenticate", "Proxy-Authorization", "Proxy-Require", "Record-Route", "Reply-To", "Require",
    "Retry-After", "Route", "Server", "Timestamp", "Unsupported", "User-Agent", "Warning",
    "WWW-Authenticate", "RAck", "RSeq", "Path", "Service-Route", "Subscription-State", "Reason",
    "P-Asserted-Identity", "P-Preferred-Identity", "Replaces", "Min-SE", "Privacy", "History-Info",
    "Diversion", "Content-Transfer-Encoding", *_COMPACT.values(),
]  # fmt: skip
_CANONICAL = {name.lower(): name for name in _KNOWN} | {k: v for k, v in _COMPACT.items()}
# Headers whose values are comma-separated lists (RFC 3261 7.3.1); the rest are never split.
_LIST_HEADERS = frozenset(
    h.lower()
    for h in (
        "Via", "Route", "Record-Route", "Contact", "Allow", "Supported", "Require", "Proxy-Require",
        "Unsupported", "Accept", "Accept-Encoding", "Accept-Language", "Allow-Events", "Content-Encoding",
        "Content-Language", "Alert-Info", "Call-Info", "Error-Info", "In-Reply-To", "Path",
        "Service-Route", "Warning", "Reason", "P-Asserted-Identity", "P-Preferred-Identity",
        "History-Info", "Diversion", "Accept-Contact", "Reject-Contact", "Privacy",
    )
)  # fmt: skip
# Headers that may appear once only (RFC 4475 3.3.8 multi01, 3.3.9 mcl01).
SINGLE = ("Call-ID", "CSeq", "From", "To", "Content-Length", "Max-Forwards")
MANDATORY = ("To", "From", "Call-ID", "CSeq", "Via")  # RFC 3261 8.1.1 (Max-Forwards tolerated absent)



def canonical_name(name: str) -> str:
    name = name.strip()
    return _CANONICAL.get(name.lower(), name)


class Headers:
    """Ordered, multi-valued, case-insensitive header list."""

    __slots__ = ("_items",)

    def __init__(self, items: Sequence[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str]] = [(canonical_name(n), v) for n, v in items]

    def get(self, name: str, default: str | None = None) -> str | None:
        key = canonical_name(name).lower()
        for n, v in self._items:
            if n.lower() == key:
                return v
        return default

    def raw_values(self, name: str) -> list[str]:
        """Each header line's value, unsplit."""
        key = canonical_name(name).lower()
        return [v for n, v in self._items if n.lower() == key]

    def get_all(self, name: str) -> list[str]:
        """All values; list headers are split into elements (respecting quotes and <...>)."""
        key = canonical_name(name).lower()
        values = self.raw_values(name)
        if key not in _LIST_HEADERS:
            return values
        out: list[str] = []
        for value in values:
            try:
                out.extend(p.strip() for p in split_top(value, ",") if p.strip())
            except SipParseError:  # unbalanced quotes in a header nobody validated: keep it whole
                out.append(value)
        return out

    def add(self, name: str, value: str) -> None:
        self._items.append((canonical_name(name), value))

    def set(self, name: str, value: str) -> None:
        """Replace every value of `name` by one, kept at the position of the first."""
        key = canonical_name(name).lower()
        for i, (n, _) in enumerate(self._items):
            if n.lower() == key:
                self._items[i] = (canonical_name(name), value)
                self._items[i + 1 :] = [(n2, v2) for n2, v2 in self._items[i + 1 :] if n2.lower() != key]
                return
        self.add(name, value)

    def remove(self, name: str) -> None:
        key = canonical_name(name).lower()
        self._items = [(n, v) for n, v in self._items if n.lower() != key]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def items(self) -> list[tuple[str, str]]:
        return list(self._items)

    def copy(self) -> Headers:
        h = Headers()
        h._items = list(self._items)
        return h

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(list(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Headers) and self._items == other._items

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


_VIA_RE = re.compile(r"([^\s/]+)[ \t]*/[ \t]*([^\s/]+)[ \t]*/[ \t]*([^\s/;]+)[ \t]+([^;\s]+)[ \t]*(.*)", re.S)


@dataclass
class Via:
    """One Via element (RFC 3261 20.42). `host` has no IPv6 brackets."""

    transport: str
    host: str
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    protocol: str = "SIP/2.0"

    @classmethod
    def parse(cls, text: str) -> Via:
        m = _VIA_RE.fullmatch(text.strip(" \t"))
        if m is None:
            raise SipParseError(f"bad Via {text!r}")
        name, version, transport, sent_by, rest = m.groups()
        if not (is_token(name) and is_token(version) and is_token(transport)):
            raise SipParseError(f"bad Via protocol in {text!r}")
        host, port = parse_hostport(sent_by)
        params: dict[str, str | None] = {}
        rest = rest.strip(" \t")
        if rest:
            if not rest.startswith(";"):
                raise SipParseError(f"bad Via {text!r}")
            params = parse_params(rest[1:])
        return cls(transport.upper(), host, port, params, f"{name}/{version}")

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def received(self) -> str | None:
        """The received= address, IPv6 brackets removed (RFC 5118 4.5 allows both forms)."""
        value = self.params.get("received")
        return value.strip("[]") if value is not None else None

    @property
    def has_rport(self) -> bool:
        return "rport" in self.params

    @property
    def rport(self) -> int | None:
        """The rport value (RFC 3581) when it has one; see `has_rport` for a bare ';rport'."""
        value = self.params.get("rport")
        return int(value) if value is not None and value.isdigit() else None

    def __str__(self) -> str:
        port = f":{self.port}" if self.port is not None else ""
        return f"{self.protocol}/{self.transport} {format_host(self.host)}{port}{format_params(self.params)}"


_CSEQ_RE = re.compile(r"(\d+)[ \t]+(\S+)")


@dataclass
class CSeq:
    seq: int
    method: str

    @classmethod
    def parse(cls, text: str) -> CSeq:
        m = _CSEQ_RE.fullmatch(text.strip(" \t"))
        if m is None or not is_token(m.group(2)):
            raise SipParseError(f"bad CSeq {text!r}")
        digits = m.group(1).lstrip("0")
        # RFC 3261 8.1.1.5: a 32-bit unsigned integer (RFC 4475 scalar02, scalarlg)
        if len(digits) > 10 or int(digits or "0") >= 2**32:
            raise SipParseError("CSeq number out of range")
        return cls(int(digits or "0"), m.group(2))

    def __str__(self) -> str:
        return f"{self.seq} {self.method}"
