"""What the SipEndpoint tells operators about every SIP message: metrics, the trace, security events.

`received(data, source)` and `sent(data, peer)` are called by voice.aio.sip for every message
(TCP messages arrive parsed: `received_message`). They read only the start line (and, for the few
messages that need it, one header), so the cost per message is a few microseconds.

- Metrics: cti.metrics.sip_message (requests by method, responses by code, in and out).
- Trace (`[log] sip_trace = headers | full`): each message on the `voice.sip.trace` logger, framed
  like sngrep's message view: time, transport, source -> destination, start line, then the headers
  (and with `full` the body). Authorization headers are masked. The trace shows caller numbers:
  it is a debugging switch, off by default.
- (Security events are the SIP core's own, voice/sip/security.py: it knows why it refused.)
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

from cti import metrics

trace_log = logging.getLogger("voice.sip.trace")
MASK = "****"
TRACE_MODES = ("no", "headers", "full")
_mode = "no"
_AUTH_HEADER = re.compile(r"^((?:proxy-)?authorization[ \t]*:).*$", re.IGNORECASE | re.MULTILINE)


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
    if _mode != "no":
        _trace("sent", data, peer)


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
