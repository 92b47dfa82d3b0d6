"""SIP messages without I/O: parse bytes into Request/Response, serialize them back (RFC 3261 7, 18.3, 20).

Rules this module keeps:
- `parse_message` takes one datagram; `StreamParser` frames a byte stream by Content-Length.
- Every malformed input raises `SipParseError` (never another exception), with a `reason`
  fit for a "400 <reason>" status line and, for requests, a best-effort partial `request`
  so the caller can still answer 400 (RFC 4475 3.1.2).
- Header names are case-insensitive; compact forms are expanded to canonical names.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from voice.sip.headers import MANDATORY, SINGLE, CSeq, Headers, Via
from voice.sip.uri import (
    NameAddr,
    SipParseError,
    SipUri,
    is_token,
)

__all__ = [
    "CSeq",
    "Headers",
    "NameAddr",
    "Request",
    "Response",
    "SipParseError",
    "SipUri",
    "StreamParser",
    "Via",
    "decode_text",
    "is_keepalive",
    "make_response",
    "new_branch",
    "new_call_id",
    "new_tag",
    "parse_message",
]

# RFC 3261 7.3.3 and later extensions (RFC 3265, 3515, 3892, 4028, 4474, 3841).
MAX_HEAD_BYTES = 65536
MAX_BODY_BYTES = 1 << 20


class _MessageFields:
    """Typed views of the common header fields; each raises SipParseError when absent or bad."""

    headers: Headers
    body: bytes

    def _one(self, name: str) -> str:
        value = self.headers.get(name)
        if value is None:
            raise SipParseError(f"Missing {name}")
        return value

    @property
    def call_id(self) -> str:
        return self._one("Call-ID").strip()

    @property
    def cseq(self) -> CSeq:
        return CSeq.parse(self._one("CSeq"))

    @property
    def from_(self) -> NameAddr:
        return NameAddr.parse(self._one("From"))

    @property
    def to(self) -> NameAddr:
        return NameAddr.parse(self._one("To"))

    @property
    def vias(self) -> list[Via]:
        return [Via.parse(v) for v in self.headers.get_all("Via")]

    @property
    def top_via(self) -> Via:
        values = self.headers.get_all("Via")
        if not values:
            raise SipParseError("Missing Via")
        return Via.parse(values[0])

    @property
    def content_type(self) -> str | None:
        """Media type, lower-cased, without parameters ('application/sdp')."""
        value = self.headers.get("Content-Type")
        return value.split(";", 1)[0].strip().lower() if value else None

    @property
    def max_forwards(self) -> int | None:
        """None when absent or not a valid 0-255 value (RFC 4475 scalar02 allows ignoring it)."""
        value = (self.headers.get("Max-Forwards") or "").strip()
        return int(value) if value.isdigit() and int(value) <= 255 else None

    @property
    def contacts(self) -> list[NameAddr]:
        return [NameAddr.parse(v) for v in self.headers.get_all("Contact") if v != "*"]

    def _serialize(self, start_line: str) -> bytes:
        lines = [start_line]
        length_written = False
        for name, value in self.headers.items():
            if name == "Content-Length":
                if not length_written:  # keep its place, correct its value
                    lines.append(f"Content-Length: {len(self.body)}")
                length_written = True
            else:
                lines.append(f"{name}: {value}")
        if not length_written:
            lines.append(f"Content-Length: {len(self.body)}")
        head = "\r\n".join(lines) + "\r\n\r\n"
        return head.encode("utf-8", "surrogateescape") + self.body


@dataclass
class Request(_MessageFields):
    method: str
    uri: str
    headers: Headers
    body: bytes = b""
    version: str = "SIP/2.0"

    @property
    def request_uri(self) -> SipUri:
        return SipUri.parse(self.uri)

    def serialize(self) -> bytes:
        """Wire bytes; Content-Length is set to len(body)."""
        return self._serialize(f"{self.method} {self.uri} {self.version}")


@dataclass
class Response(_MessageFields):
    status: int
    reason: str
    headers: Headers
    body: bytes = b""
    version: str = "SIP/2.0"

    def serialize(self) -> bytes:
        """Wire bytes; Content-Length is set to len(body)."""
        return self._serialize(f"{self.version} {self.status} {self.reason}")


# ---------------------------------------------------------------- parsing

_HEAD_END_RE = re.compile(rb"\r?\n\r?\n")
_VERSION_RE = re.compile(r"SIP/\d+\.\d+", re.I)
_DATE_RE = re.compile(
    r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} "
    r"\d{2}:\d{2}:\d{2} GMT"
)


def _split_head(data: bytes) -> tuple[bytes, int | None]:
    """(head bytes, body offset); offset None when the datagram has no empty line at all."""
    m = _HEAD_END_RE.search(data)
    if m is None:
        return data, None
    return data[: m.start()], m.end()


def decode_text(data: bytes) -> str:
    """Network text as str: UTF-8 (RFC 3261 7.3.1), else Latin-1, so that a legacy PBX's
    ISO-8859-1 display name ("J\xfcrgen") stays readable and no lone surrogate ever leaves the
    parser (they cannot be stored, logged as UTF-8 or put in JSON)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _decode_head(head: bytes) -> str:
    try:
        return head.decode("utf-8")
    except UnicodeDecodeError:  # line by line: one Latin-1 header leaves the others' UTF-8 alone
        return "\n".join(decode_text(line) for line in head.split(b"\n"))


def _parse_head(head: bytes) -> tuple[str, Headers]:
    text = _decode_head(head)
    lines = text.split("\n")
    lines = [ln[:-1] if ln.endswith("\r") else ln for ln in lines]
    start = lines[0]
    headers = Headers()
    items: list[list[str]] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t"):
            # RFC 3261 7.3.1: a continuation line is folded into the previous value with one SP.
            if not items:
                raise SipParseError("Continuation line before any header")
            prev, cont = items[-1][1], line.strip(" \t")
            items[-1][1] = f"{prev} {cont}" if prev else cont
            continue
        name, colon, value = line.partition(":")
        name = name.rstrip(" \t")
        if not colon or not is_token(name):
            raise SipParseError("Malformed header line", detail=repr(line[:60]))
        items.append([name, value.strip(" \t")])
    for name, value in items:
        headers.add(name, value)
    return start, headers


def _content_length(headers: Headers) -> int | None:
    values = headers.raw_values("Content-Length")
    if not values:
        return None
    if len({v.strip() for v in values}) > 1:
        raise SipParseError("Multiple Content-Length values")
    value = values[0].strip()
    if not value.isdigit() or len(value) > 9:  # RFC 4475 ncl: negative; absurd sizes
        raise SipParseError("Bad Content-Length")
    return int(value)


def _check_request_line(start: str) -> tuple[str, str, str]:
    if start[:1] in (" ", "\t"):
        raise SipParseError("Leading whitespace in Request-Line")
    if start != start.rstrip(" \t"):
        raise SipParseError("Trailing whitespace in Request-Line")  # RFC 4475 trws
    parts = start.split(" ")
    if any(p == "" for p in parts) or "\t" in start:
        raise SipParseError("Extra whitespace in Request-Line")  # RFC 4475 lwsstart
    if len(parts) > 3:
        raise SipParseError("Whitespace in Request-URI")  # RFC 4475 lwsruri
    if len(parts) < 3:
        raise SipParseError("Malformed Request-Line")
    method, uri, version = parts
    if not is_token(method):
        raise SipParseError("Bad method")
    if uri.startswith("<"):
        raise SipParseError("Request-URI in angle brackets")  # RFC 4475 ltgtruri
    if _VERSION_RE.fullmatch(version) is None:
        raise SipParseError("Bad SIP version")
    scheme = uri.partition(":")[0].lower()
    if scheme in ("sip", "sips"):
        try:
            ruri = SipUri.parse(uri)
        except SipParseError as e:
            raise SipParseError("Bad Request-URI", detail=str(e)) from None
        if ruri.headers:  # RFC 3261 19.1.1 table: headers are not allowed in a Request-URI
            raise SipParseError("Headers not allowed in Request-URI")  # RFC 4475 escruri
    elif ":" not in uri or not scheme:
        raise SipParseError("Bad Request-URI")
    return method, uri, version


def _check_headers(headers: Headers) -> None:
    for name in MANDATORY:
        if name not in headers:
            raise SipParseError(f"Missing {name}")
    for name in SINGLE:
        if len(headers.raw_values(name)) > 1:
            raise SipParseError(f"Multiple {name} values")
    checks: list[tuple[str, type[NameAddr] | type[Via] | type[CSeq]]] = [
        ("From", NameAddr), ("To", NameAddr), ("CSeq", CSeq),
    ]  # fmt: skip
    for name, kind in checks:
        try:
            kind.parse(headers.get(name) or "")
        except SipParseError as e:
            raise SipParseError(f"Bad {name}", detail=str(e)) from None
    if not (headers.get("Call-ID") or "").strip():
        raise SipParseError("Bad Call-ID")
    for name, kind in (("Via", Via), ("Contact", NameAddr), ("Route", NameAddr), ("Record-Route", NameAddr)):
        try:
            values = headers.get_all(name)
            for v in values:
                if not (name == "Contact" and v == "*"):
                    kind.parse(v)
            if name == "Via" and not values:
                raise SipParseError("empty")
        except SipParseError as e:
            raise SipParseError(f"Bad {name}", detail=str(e)) from None
    date = headers.get("Date")
    if date is not None and _DATE_RE.fullmatch(date.strip()) is None:
        raise SipParseError("Bad Date")  # RFC 3261 20.17: RFC 1123 date, GMT only (RFC 4475 baddate)
    ctype = headers.get("Content-Type")
    if ctype is not None and re.fullmatch(r"[^/\s]+/[^/\s;]+.*", ctype) is None:
        raise SipParseError("Bad Content-Type")


def _partial_request(start: str, headers: Headers) -> Request | None:
    """Enough of a request to answer 400: its method and headers, when a Via can route the answer."""
    parts = start.strip().split()
    if not parts or not is_token(parts[0]) or parts[0].upper().startswith("SIP/"):
        return None
    try:
        vias = headers.get_all("Via")
        if not vias:
            return None
        Via.parse(vias[0])
    except SipParseError:
        return None
    uri = parts[1] if len(parts) > 1 else ""
    return Request(parts[0], uri, headers.copy())


def _parse(data: bytes, *, stream: bool) -> Request | Response:
    # RFC 3261 7.5: ignore CRLFs before the start line.
    data = data.lstrip(b"\r\n")
    if not data:
        raise SipParseError("Empty message")
    head, body_at = _split_head(data)
    if body_at is None:
        # A datagram whose head ends at its last line break, with no empty line: take it as bodyless.
        if not data.endswith(b"\n"):
            raise SipParseError("Incomplete message")
        head = head.rstrip(b"\r\n")
    start, headers = _parse_head(head)
    is_response = start.startswith("SIP/")
    try:
        if is_response:
            parts = start.split(" ", 2)
            if len(parts) < 2 or _VERSION_RE.fullmatch(parts[0]) is None:
                raise SipParseError("Bad Status-Line")
            if not re.fullmatch(r"[1-6]\d\d", parts[1]):
                raise SipParseError("Bad status code")  # RFC 4475 bigcode
            status, reason = int(parts[1]), parts[2] if len(parts) > 2 else ""
            version = parts[0]
        else:
            method, uri, version = _check_request_line(start)
        _check_headers(headers)
        available = data[body_at:] if body_at is not None else b""
        length = _content_length(headers)
        if length is None:
            if stream:
                raise SipParseError("Missing Content-Length")  # RFC 3261 18.3
            body = available
        else:
            if len(available) < length:
                raise SipParseError("Bad Content-Length")  # RFC 4475 clerr: fewer octets than announced
            body = available[:length]  # RFC 3261 18.3: extra datagram octets are discarded
        if is_response:
            return Response(status, reason, headers, body, version)
        cseq = CSeq.parse(headers.get("CSeq") or "")
        if cseq.method != method:  # RFC 4475 mismatch01/mismatch02
            raise SipParseError("CSeq method does not match Request-Line")
        return Request(method, uri, headers, body, version)
    except SipParseError as e:
        if not is_response and e.request is None:
            e.request = _partial_request(start, headers)
        raise


def is_keepalive(data: bytes) -> bool:
    """A datagram of CRLFs only (RFC 5626 3.5.1 keepalive): not a message, not an error."""
    return bool(data) and not data.strip(b"\r\n")


def parse_message(data: bytes) -> Request | Response:
    """Parse one datagram. Raises SipParseError (with `.request` for answerable requests)."""
    try:
        return _parse(data, stream=False)
    except SipParseError:
        raise
    except (ValueError, IndexError, UnicodeError) as e:  # belt and braces: never leak other errors
        raise SipParseError(f"Malformed message ({type(e).__name__})") from None


_FRAME_CL_RE = re.compile(rb"^(?:content-length|l)[ \t]*:[ \t]*(.*?)[ \t]*\r?$", re.I | re.M)


class StreamParser:
    """Frames SIP messages on a stream transport (RFC 3261 18.3): Content-Length is mandatory.

    A message whose framing is known but whose content is bad comes out as a SipParseError item;
    a framing error (no/invalid Content-Length, oversize head) raises: the stream must be closed.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._broken: SipParseError | None = None

    def feed(self, data: bytes) -> list[Request | Response | SipParseError]:
        """Messages completed by `data`, in order. A framing error raises (after the messages before it
        have been returned: then it is raised by the next call)."""
        if self._broken is not None:
            raise self._broken
        self._buf += data
        out: list[Request | Response | SipParseError] = []
        try:
            self._drain(out)
        except SipParseError as e:
            self._broken = e
            if not out:
                raise
        return out

    def _drain(self, out: list[Request | Response | SipParseError]) -> None:
        while True:
            # RFC 5626 3.5.1 keepalives (CRLFCRLF) and RFC 3261 7.5 leading CRLFs.
            skip = 0
            while skip < len(self._buf) and self._buf[skip] in (13, 10):
                skip += 1
            if skip:
                del self._buf[:skip]
            if not self._buf:
                return
            m = _HEAD_END_RE.search(self._buf)
            if m is None:
                if len(self._buf) > MAX_HEAD_BYTES:
                    raise SipParseError("Message head too large")
                return
            head = bytes(self._buf[: m.start()])
            values = {v.strip() for v in _FRAME_CL_RE.findall(head)}
            if len(values) != 1:
                reason = "Multiple Content-Length values" if values else "Missing Content-Length"
                raise SipParseError(reason)
            (value,) = values
            if not value.isdigit() or len(value) > 9 or int(value) > MAX_BODY_BYTES:
                raise SipParseError("Bad Content-Length")
            total = m.end() + int(value)
            if len(self._buf) < total:
                return
            frame = bytes(self._buf[:total])
            del self._buf[:total]
            try:
                out.append(_parse(frame, stream=True))
            except SipParseError as e:
                out.append(e)
            except (ValueError, IndexError, UnicodeError) as e:
                out.append(SipParseError(f"Malformed message ({type(e).__name__})"))


# ---------------------------------------------------------------- building

REASON_PHRASES = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued",
    183: "Session Progress", 199: "Early Dialog Terminated", 200: "OK", 202: "Accepted",
    204: "No Notification", 300: "Multiple Choices", 301: "Moved Permanently",
    302: "Moved Temporarily", 305: "Use Proxy", 380: "Alternative Service", 400: "Bad Request",
    401: "Unauthorized", 402: "Payment Required", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 406: "Not Acceptable", 407: "Proxy Authentication Required",
    408: "Request Timeout", 410: "Gone", 412: "Conditional Request Failed",
    413: "Request Entity Too Large", 414: "Request-URI Too Long", 415: "Unsupported Media Type",
    416: "Unsupported URI Scheme", 417: "Unknown Resource-Priority", 420: "Bad Extension",
    421: "Extension Required", 422: "Session Interval Too Small", 423: "Interval Too Brief",
    428: "Use Identity Header", 429: "Provide Referrer Identity", 433: "Anonymity Disallowed",
    436: "Bad Identity-Info", 437: "Unsupported Certificate", 438: "Invalid Identity Header",
    439: "First Hop Lacks Outbound Support", 440: "Max-Breadth Exceeded", 469: "Bad Info Package",
    470: "Consent Needed", 480: "Temporarily Unavailable", 481: "Call/Transaction Does Not Exist",
    482: "Loop Detected", 483: "Too Many Hops", 484: "Address Incomplete", 485: "Ambiguous",
    486: "Busy Here", 487: "Request Terminated", 488: "Not Acceptable Here", 489: "Bad Event",
    491: "Request Pending", 493: "Undecipherable", 494: "Security Agreement Required",
    500: "Server Internal Error", 501: "Not Implemented", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Server Time-out", 505: "Version Not Supported",
    513: "Message Too Large", 555: "Push Notification Service Not Supported",
    580: "Precondition Failure", 600: "Busy Everywhere", 603: "Decline",
    604: "Does Not Exist Anywhere", 606: "Not Acceptable", 607: "Unwanted", 608: "Rejected",
}  # fmt: skip


def make_response(
    request: Request,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    headers: Sequence[tuple[str, str]] = (),
    body: bytes = b"",
    content_type: str | None = None,
) -> Response:
    """Build a response per RFC 3261 8.2.6.2: Via (all, in order), From, To (+tag), Call-ID, CSeq copied."""
    out = Headers()
    for value in request.headers.raw_values("Via"):
        out.add("Via", value)
    for name in ("From", "To", "Call-ID", "CSeq"):
        found = request.headers.get(name)
        if found is None:
            continue
        value = found
        if name == "To" and to_tag is not None and status != 100 and not _has_tag(value):
            value = f"{value};tag={to_tag}"
        out.add(name, value)
    if status == 100 and "Timestamp" in request.headers:  # RFC 3261 8.2.6.1
        out.add("Timestamp", request.headers.get("Timestamp") or "")
    for name, value in headers:
        out.add(name, value)
    if content_type is not None:
        out.set("Content-Type", content_type)
    phrase = reason if reason is not None else REASON_PHRASES.get(status, _class_phrase(status))
    return Response(status, phrase, out, body)


def _has_tag(value: str) -> bool:
    try:
        return NameAddr.parse(value).tag is not None
    except SipParseError:
        return ";tag=" in value.replace(" ", "").lower()


def _class_phrase(status: int) -> str:
    return {1: "Trying", 2: "OK", 3: "Redirect", 4: "Client Error", 5: "Server Error"}.get(
        status // 100, "Global Failure"
    )


def new_branch() -> str:
    """A fresh RFC 3261 branch (magic cookie 'z9hG4bK' + 64 random bits)."""
    return "z9hG4bK" + secrets.token_hex(8)


def new_tag() -> str:
    return secrets.token_hex(6)


def new_call_id(host: str) -> str:
    return f"{secrets.token_hex(12)}@{host}"
