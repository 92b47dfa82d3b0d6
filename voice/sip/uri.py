"""SIP URIs, name-addr values and the low-level splitting they share (RFC 3261 19.1, 20, 25).

Hosts are stored without IPv6 brackets; `__str__` adds them back (RFC 5118).
Generic parameters keep their raw text (quotes included) so serializing is lossless.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import unquote

if TYPE_CHECKING:
    from voice.sip.message import Request

__all__ = [
    "NameAddr",
    "SipParseError",
    "SipUri",
    "format_params",
    "is_token",
    "parse_params",
    "split_top",
]


class SipParseError(ValueError):
    """A message (or part of one) that is not valid SIP. `reason` fits a "400 <reason>" line."""

    def __init__(self, reason: str, request: Request | None = None, *, detail: str | None = None) -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.request = request
        self.detail = detail  # may quote the offending input: log it, never put it on the wire


_TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*")
_HOSTNAME_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9\-_.]*[A-Za-z0-9.])?")
# RFC 5118 4.10: RFC 3261's IPv6 ABNF (from RFC 2373) admits "hexseq ':::' IPv4"; be liberal there only.
_THREE_COLON_RE = re.compile(r"^([0-9A-Fa-f:]*[0-9A-Fa-f]):::(\d+\.\d+\.\d+\.\d+)$")
_WS = " \t"


def is_token(text: str) -> bool:
    """RFC 3261 25.1 token."""
    return _TOKEN_RE.fullmatch(text) is not None


def split_top(text: str, sep: str) -> list[str]:
    """Split on `sep` outside quoted strings and <...>; raises on an unterminated quote or '<'."""
    parts: list[str] = []
    current: list[str] = []
    in_quote = False
    in_angle = False
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if in_quote:
            current.append(ch)
            if ch == "\\" and i + 1 < n:
                current.append(text[i + 1])
                i += 1
            elif ch == '"':
                in_quote = False
        elif ch == '"' and not in_angle:
            in_quote = True
            current.append(ch)
        elif ch == "<" and not in_angle:
            in_angle = True
            current.append(ch)
        elif ch == ">" and in_angle:
            in_angle = False
            current.append(ch)
        elif ch == sep and not in_angle:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
        i += 1
    if in_quote:
        raise SipParseError("unterminated quoted string")
    if in_angle:
        raise SipParseError("unterminated '<'")
    parts.append("".join(current))
    return parts


def parse_params(text: str) -> dict[str, str | None]:
    """Parse ';name[=value]' pairs (the leading ';' already removed). LWS around '=' is allowed."""
    params: dict[str, str | None] = {}
    for raw in split_top(text, ";"):
        item = raw.strip(_WS)
        if not item:
            raise SipParseError("empty parameter")
        if "=" in item:
            name, _, value = item.partition("=")
            name = name.strip(_WS)
            value = value.strip(_WS)
            if not value:
                raise SipParseError(f"parameter {name!r} has an empty value")
            if not (value.startswith('"') and value.endswith('"') and len(value) >= 2) and any(
                c in value for c in ' \t"'
            ):
                raise SipParseError(f"bad value for parameter {name!r}")
        else:
            name, value = item, None
        if not is_token(name):
            raise SipParseError(f"bad parameter name {name!r}")
        params[name] = value
    return params


def format_params(params: dict[str, str | None]) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


def parse_host(text: str) -> str:
    """Validate a host (hostname, IPv4 or bracketed IPv6) and return it without brackets."""
    if text.startswith("["):
        if not text.endswith("]"):
            raise SipParseError(f"bad IPv6 reference {text!r}")
        inner = text[1:-1]
        try:
            ipaddress.IPv6Address(inner)
        except ValueError:
            if _THREE_COLON_RE.match(inner) is None:
                raise SipParseError(f"bad IPv6 address {inner!r}") from None
        return inner
    if not text or _HOSTNAME_RE.fullmatch(text) is None:
        raise SipParseError(f"bad host {text!r}")
    return text


def format_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def parse_hostport(text: str) -> tuple[str, int | None]:
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise SipParseError(f"bad IPv6 reference {text!r}")
        host_part, rest = text[: end + 1], text[end + 1 :]
    else:
        host_part, sep, port_text = text.partition(":")
        rest = sep + port_text
    port: int | None = None
    if rest:
        if not rest.startswith(":") or not rest[1:].isdigit() or len(rest) > 6:
            raise SipParseError(f"bad port in {text!r}")
        port = int(rest[1:])
        if port > 65535:
            raise SipParseError(f"port out of range in {text!r}")
    return parse_host(host_part), port


@dataclass
class SipUri:
    """A SIP/SIPS/tel URI (RFC 3261 19.1, RFC 3966). Other schemes keep their text in `opaque`."""

    scheme: str
    user: str | None
    password: str | None = field(repr=False)
    host: str
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    opaque: str | None = None

    @classmethod
    def parse(cls, text: str) -> SipUri:
        scheme, colon, rest = text.partition(":")
        if not colon or _SCHEME_RE.fullmatch(scheme) is None:
            raise SipParseError(f"bad URI {text!r}")
        lowered = scheme.lower()
        if any(c in text for c in " \t\r\n<>"):
            raise SipParseError(f"bad character in URI {text!r}")
        if lowered == "tel":
            number, _, ptext = rest.partition(";")
            if not number:
                raise SipParseError(f"bad tel URI {text!r}")
            return cls("tel", None, None, number, None, parse_params(ptext) if ptext else {}, {})
        if lowered not in ("sip", "sips"):
            if not rest:
                raise SipParseError(f"bad URI {text!r}")
            return cls(lowered, None, None, "", None, {}, {}, opaque=rest)
        user: str | None = None
        password: str | None = None
        at = rest.rfind("@")
        if at >= 0:
            userinfo, rest = rest[:at], rest[at + 1 :]
            if not userinfo:
                raise SipParseError(f"empty user in {text!r}")
            u, sep, pw = userinfo.partition(":")
            user, password = u, (pw if sep else None)
        rest, qmark, htext = rest.partition("?")
        hostport, semi, ptext = rest.partition(";")
        host, port = parse_hostport(hostport)
        params = parse_params(ptext) if semi else {}
        headers: dict[str, str] = {}
        if qmark:
            for item in htext.split("&"):
                name, eq, value = item.partition("=")
                if not name or not eq:
                    raise SipParseError(f"bad URI header {item!r}")
                headers[name] = value
        return cls(lowered, user, password, host, port, params, headers)

    @property
    def user_unescaped(self) -> str | None:
        if self.user is None:
            return None
        try:  # %-escapes of UTF-8, else of Latin-1 (never U+FFFD or lone surrogates)
            return unquote(self.user, errors="strict")
        except UnicodeDecodeError:
            return unquote(self.user, encoding="latin-1")

    @property
    def is_sip(self) -> bool:
        return self.scheme in ("sip", "sips")

    def __str__(self) -> str:
        if self.opaque is not None:
            return f"{self.scheme}:{self.opaque}"
        if self.scheme == "tel":
            return f"tel:{self.host}{format_params(self.params)}"
        out = [self.scheme, ":"]
        if self.user is not None:
            out.append(self.user)
            if self.password is not None:
                out += [":", self.password]
            out.append("@")
        out.append(format_host(self.host))
        if self.port is not None:
            out.append(f":{self.port}")
        out.append(format_params(self.params))
        if self.headers:
            out.append("?" + "&".join(f"{k}={v}" for k, v in self.headers.items()))
        return "".join(out)


def _quoted_end(text: str) -> int:
    """Index just past the quoted-string that starts text[0]; -1 when unterminated."""
    i = 1
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == '"':
            return i + 1
        i += 1
    return -1


def _unquote_string(text: str) -> str:
    out: list[str] = []
    i = 1
    while i < len(text) - 1:
        ch = text[i]
        if ch == "\\" and i + 1 < len(text) - 1:
            i += 1
            ch = text[i]
        out.append(ch)
        i += 1
    return "".join(out)


def _parse_display(text: str) -> str | None:
    text = text.strip(_WS)
    if not text:
        return None
    if text.startswith('"'):
        if _quoted_end(text) != len(text):
            raise SipParseError("bad display name")
        return _unquote_string(text)
    words = text.split()
    if not all(is_token(w) for w in words):
        raise SipParseError(f"bad display name {text!r}")
    return " ".join(words)


@dataclass
class NameAddr:
    """A From/To/Contact/Route value: [display] <uri> or a bare addr-spec, plus header params."""

    display: str | None
    uri: SipUri
    params: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> NameAddr:
        text = text.strip(_WS)
        split_top(text, ";")  # raises on unbalanced quotes / angle brackets
        lt = _find_unquoted(text, "<")
        if lt >= 0:
            gt = text.find(">", lt)
            display = _parse_display(text[:lt])
            inner = text[lt + 1 : gt]
            if inner != inner.strip(_WS) or not inner:
                # RFC 4475 badaspec: no LWS allowed inside <...>
                raise SipParseError("whitespace inside <...>")
            uri = SipUri.parse(inner)
            tail = text[gt + 1 :].strip(_WS)
        else:
            display = None
            uri_text, semi, ptail = text.partition(";")
            uri_text = uri_text.strip(_WS)
            # RFC 3261 20: a URI with ',', '?' or ';' must be in <...>; the ';' here starts header params.
            if "?" in uri_text or "," in uri_text:
                raise SipParseError("URI with headers must be enclosed in <...>")
            uri = SipUri.parse(uri_text)
            tail = semi + ptail
        params: dict[str, str | None] = {}
        if tail:
            if not tail.startswith(";"):
                raise SipParseError(f"unexpected text after address {tail!r}")
            params = parse_params(tail[1:])
        return cls(display, uri, params)

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    def __str__(self) -> str:
        uri = f"<{self.uri}>"
        if self.display is not None:
            escaped = self.display.replace("\\", "\\\\").replace('"', '\\"')
            uri = f'"{escaped}" {uri}'
        return uri + format_params(self.params)


def _find_unquoted(text: str, ch: str) -> int:
    in_quote = False
    i = 0
    while i < len(text):
        c = text[i]
        if in_quote:
            if c == "\\":
                i += 1
            elif c == '"':
                in_quote = False
        elif c == '"':
            in_quote = True
        elif c == ch:
            return i
        i += 1
    return -1
