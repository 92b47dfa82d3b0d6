"""What the SipEndpoint tells operators about every SIP message: metrics, the trace, security events.

`received(data, source)` and `sent(data, peer)` are called by voice.aio.sip for every message
(TCP messages arrive parsed: `received_message`). They read only the start line (and, for the few
messages that need it, one header), so the cost per message is a few microseconds.

- Metrics: cti.metrics.sip_message (requests by method, responses by code, in and out).
- Trace (`[log] sip_trace = headers | full`): each message on the `voice.sip.trace` logger, framed
  like sngrep's message view: time, transport, source -> destination, start line, then the headers
  (and with `full` the body). Authorization headers are masked. The trace shows caller numbers:
  it is a debugging switch, off by default.
- Security events (cti.seclog): a 403 sent to a request, and a 401/407 sent to a request that
  carried credentials (a wrong password), as `sip_refused` / `sip_auth_failed` with the source.
"""

from __future__ import annotations

import logging
import re
import time
from collections import OrderedDict
from typing import Any

from cti import metrics
from cti.seclog import security_event

trace_log = logging.getLogger("voice.sip.trace")
MASK = "****"
TRACE_MODES = ("no", "headers", "full")
_mode = "no"
_CALL_ID = re.compile(rb"\r\n(?:call-id|i)[ \t]*:[ \t]*([^\r\n]+)", re.IGNORECASE)
_CREDENTIALS = re.compile(rb"\r\n(?:proxy-)?authorization[ \t]*:", re.IGNORECASE)
_AUTH_HEADER = re.compile(r"^((?:proxy-)?authorization[ \t]*:).*$", re.IGNORECASE | re.MULTILINE)
_with_credentials: OrderedDict[bytes, None] = OrderedDict()  # Call-IDs of requests that carried them
_MAX_REMEMBERED = 4096


def configure(mode: str) -> None:
    """Set the trace mode ("no", "headers", "full"); tracing logs at INFO whatever the log level."""
    global _mode
    if mode not in TRACE_MODES:
        raise ValueError(f"sip_trace must be one of {', '.join(TRACE_MODES)}")
    _mode = mode
    if mode != "no":
        trace_log.setLevel(logging.INFO)


def _first_line(data: bytes) -> bytes:
    end = data.find(b"\r\n")
    return data[:end] if end >= 0 else data[:200]


def received(data: bytes, source: Any) -> None:
    if data[:1] in (b"\r", b"\n", b"") and not data.strip():
        return  # a CRLF keep-alive (RFC 5626)
    line = _first_line(data)
    if not line.startswith(b"SIP/2.0 ") and not line.endswith(b"SIP/2.0"):
        metrics.SIP_UNPARSABLE.inc()
        return
    metrics.sip_message("in", line)
    if line.startswith((b"INVITE ", b"REGISTER ")) and _CREDENTIALS.search(data):
        m = _CALL_ID.search(data)
        if m:
            _with_credentials[m.group(1).strip()] = None
            while len(_with_credentials) > _MAX_REMEMBERED:
                _with_credentials.popitem(last=False)
    if _mode != "no":
        _trace("received", data, source)


def received_message(message: Any, source: Any) -> None:
    """A message parsed by the TCP stream parser (or its SipParseError)."""
    serialize = getattr(message, "serialize", None)
    if serialize is None:
        metrics.SIP_UNPARSABLE.inc()
        return
    received(serialize(), source)


def sent(data: bytes, peer: Any) -> None:
    line = _first_line(data)
    metrics.sip_message("out", line)
    if line.startswith((b"SIP/2.0 403", b"SIP/2.0 401", b"SIP/2.0 407")):
        _refused(line, data, peer)
    if _mode != "no":
        _trace("sent", data, peer)


def _refused(line: bytes, data: bytes, peer: Any) -> None:
    code = line[8:11].decode()
    m = _CALL_ID.search(data)
    call_id = m.group(1).strip() if m else b""
    if code == "403":
        security_event("sip_refused", getattr(peer, "host", str(peer)), code=code)
    elif call_id in _with_credentials:
        _with_credentials.pop(call_id, None)
        security_event("sip_auth_failed", getattr(peer, "host", str(peer)), code=code)


def format_message(direction: str, data: bytes, peer: Any, mode: str, now: float | None = None) -> str:
    """One message as the trace shows it (see the module docstring)."""
    head, sep, body = data.partition(b"\r\n\r\n")
    text = head.decode("utf-8", "replace").replace("\r\n", "\n")
    text = _AUTH_HEADER.sub(lambda m: f"{m.group(1)} {MASK}", text)
    transport = str(getattr(peer, "transport", "udp")).upper()
    where = f"{getattr(peer, 'host', peer)}:{getattr(peer, 'port', '')}"
    arrow = f"{where} -> voice" if direction == "received" else f"voice -> {where}"
    stamp = time.strftime("%H:%M:%S", time.localtime(now or time.time()))
    frac = f"{(now or time.time()) % 1:.3f}"[1:]
    lines = [f"---- {stamp}{frac} {transport} {arrow} ({len(data)} bytes)", text]
    if body:
        if mode == "full":
            lines += ["", body.decode("utf-8", "replace").replace("\r\n", "\n").rstrip("\n")]
        else:
            lines += ["", f"[body: {len(body)} bytes]"]
    elif not sep:
        lines.append("[no end of headers]")
    return "\n".join(lines)


def _trace(direction: str, data: bytes, peer: Any) -> None:
    trace_log.info("%s", format_message(direction, data, peer, _mode))
