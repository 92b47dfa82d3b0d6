"""SDP (RFC 4566) parsing and the offer/answer choices of a G.711 IVR (RFC 3264, RFC 4733).

`negotiate` picks what to answer an offer with; `build_answer` / `build_offer` write the SDP.
The answer mirrors every offered m= line (RFC 3264 6): the first usable audio stream is
accepted, every other stream is refused with port 0.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = [
    "Codec",
    "MediaDescription",
    "NegotiatedMedia",
    "SdpError",
    "SessionDescription",
    "build_answer",
    "build_offer",
    "negotiate",
]


class SdpError(ValueError):
    """Unparseable SDP, or an offer we cannot accept (the caller answers 488). `warn_code`: the
    RFC 3261 20.43 Warning code that says why (304 media type not available, 301 incompatible
    network address formats)."""

    def __init__(self, message: str, *, warn_code: int = 304) -> None:
        super().__init__(message)
        self.warn_code = warn_code


# RFC 3551 table 4: the static audio payload types we may meet.
STATIC_PAYLOADS: dict[int, tuple[str, int]] = {
    0: ("PCMU", 8000), 3: ("GSM", 8000), 4: ("G723", 8000), 8: ("PCMA", 8000), 9: ("G722", 8000),
    13: ("CN", 8000), 18: ("G729", 8000),
}  # fmt: skip
DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
_ANSWER_DIRECTION = {
    "sendrecv": "sendrecv",
    "sendonly": "recvonly",
    "recvonly": "sendonly",
    "inactive": "inactive",
}
_LINE_RE = re.compile(r"([a-z])=(.*)")
_NUMBER_RE = re.compile(r"[0-9]+")  # str.isdigit() also accepts "²" and other digits int() refuses


def _is_number(text: str) -> bool:
    return _NUMBER_RE.fullmatch(text) is not None


@dataclass
class Codec:
    payload_type: int
    name: str
    clock_rate: int
    fmtp: str | None = None


@dataclass
class MediaDescription:
    media: str
    port: int
    proto: str
    formats: list[int]
    rtpmap: dict[int, str] = field(default_factory=dict)  # pt -> "PCMU/8000"
    fmtp: dict[int, str] = field(default_factory=dict)  # pt -> "0-16"
    direction: str | None = None  # None: not stated at media level (session level, then sendrecv)
    connection: str | None = None  # c= address at media level
    ptime: int | None = None
    attributes: list[tuple[str, str | None]] = field(default_factory=list)  # other a= lines, in order
    raw_formats: list[str] = field(default_factory=list)  # formats as written (non-RTP ones too)
    port_count: int | None = None
    other_lines: list[tuple[str, str]] = field(default_factory=list)  # i=, b=, k= ...

    def codec(self, pt: int) -> Codec | None:
        """The codec a payload type stands for (rtpmap first, then the RFC 3551 static table)."""
        mapping = self.rtpmap.get(pt)
        if mapping is not None:
            name, _, rest = mapping.partition("/")
            rate = rest.partition("/")[0]
            if not _is_number(rate):
                return None
            return Codec(pt, name, int(rate), self.fmtp.get(pt))
        if pt in STATIC_PAYLOADS:
            static_name, static_rate = STATIC_PAYLOADS[pt]
            return Codec(pt, static_name, static_rate, self.fmtp.get(pt))
        return None

    def codecs(self) -> list[Codec]:
        return [c for c in (self.codec(pt) for pt in self.formats) if c is not None]

    def serialize_lines(self) -> list[str]:
        port = f"{self.port}/{self.port_count}" if self.port_count is not None else str(self.port)
        fmts = self.raw_formats or [str(f) for f in self.formats]
        lines = [f"m={self.media} {port} {self.proto} {' '.join(fmts)}"]
        lines += [f"{k}={v}" for k, v in self.other_lines]
        if self.connection is not None:
            lines.append(f"c={_connection_line(self.connection)}")
        lines += [f"a=rtpmap:{pt} {v}" for pt, v in self.rtpmap.items()]
        lines += [f"a=fmtp:{pt} {v}" for pt, v in self.fmtp.items()]
        if self.ptime is not None:
            lines.append(f"a=ptime:{self.ptime}")
        lines += [f"a={k}" if v is None else f"a={k}:{v}" for k, v in self.attributes]
        if self.direction is not None:
            lines.append(f"a={self.direction}")
        return lines


def _connection_line(address: str) -> str:
    return f"IN {'IP6' if ':' in address else 'IP4'} {address}"


@dataclass
class SessionDescription:
    origin_username: str = "-"
    origin_session_id: str = "0"
    origin_version: str = "0"
    origin_address: str = "0.0.0.0"
    origin_addrtype: str = "IP4"
    session_name: str = "-"
    connection: str | None = None
    timing: str = "0 0"
    direction: str | None = None  # session-level a=sendonly etc.
    attributes: list[tuple[str, str | None]] = field(default_factory=list)
    media: list[MediaDescription] = field(default_factory=list)
    other_lines: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def parse(cls, data: bytes) -> SessionDescription:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise SdpError("SDP is not UTF-8") from None
        lines = [ln.rstrip("\r") for ln in text.split("\n")]
        lines = [ln for ln in lines if ln.strip()]
        if not lines or lines[0].strip() != "v=0":
            raise SdpError("SDP must start with v=0")
        sd = cls()
        current: MediaDescription | None = None
        for line in lines[1:]:
            m = _LINE_RE.fullmatch(line)
            if m is None:
                raise SdpError(f"bad SDP line {line[:40]!r}")
            kind, value = m.groups()
            if kind == "m":
                current = _parse_m(value)
                sd.media.append(current)
            elif kind == "c":
                address = _parse_c(value)
                if current is None:
                    sd.connection = address
                else:
                    current.connection = address
            elif kind == "a":
                _parse_a(value, sd, current)
            elif current is not None:
                current.other_lines.append((kind, value))
            elif kind == "o":
                parts = value.split()
                if len(parts) != 6:
                    raise SdpError("bad o= line")
                sd.origin_username, sd.origin_session_id, sd.origin_version = parts[:3]
                sd.origin_addrtype, sd.origin_address = parts[4], parts[5]
            elif kind == "s":
                sd.session_name = value
            elif kind == "t":
                sd.timing = value
            else:
                sd.other_lines.append((kind, value))
        return sd

    def serialize(self) -> bytes:
        lines = [
            "v=0",
            f"o={self.origin_username} {self.origin_session_id} {self.origin_version} "
            f"IN {self.origin_addrtype} {self.origin_address}",
            f"s={self.session_name}",
        ]
        lines += [f"{k}={v}" for k, v in self.other_lines]
        if self.connection is not None:
            lines.append(f"c={_connection_line(self.connection)}")
        lines.append(f"t={self.timing}")
        lines += [f"a={k}" if v is None else f"a={k}:{v}" for k, v in self.attributes]
        if self.direction is not None:
            lines.append(f"a={self.direction}")
        for media in self.media:
            lines += media.serialize_lines()
        return ("\r\n".join(lines) + "\r\n").encode()


def _parse_m(value: str) -> MediaDescription:
    parts = value.split()
    if len(parts) < 4:
        raise SdpError(f"bad m= line {value[:40]!r}")
    media, port_text, proto, *fmts = parts
    port_part, slash, count = port_text.partition("/")
    if not _is_number(port_part) or int(port_part) > 65535 or (slash and not _is_number(count)):
        raise SdpError(f"bad port in m= line {value[:40]!r} (expected 0-65535)")
    formats = [int(f) for f in fmts if _is_number(f) and int(f) < 128] if proto.startswith("RTP/") else []
    return MediaDescription(
        media, int(port_part), proto, formats, raw_formats=fmts, port_count=int(count) if slash else None
    )


def _parse_c(value: str) -> str:
    parts = value.split()
    if len(parts) != 3 or parts[0] != "IN" or parts[1] not in ("IP4", "IP6"):
        raise SdpError(f"bad c= line {value[:40]!r}")
    address = parts[2].split("/", 1)[0]  # drop multicast TTL / count
    try:
        version = ipaddress.ip_address(address).version
    except ValueError:
        return address  # a name: legal SDP, refused by negotiate
    if parts[1] != f"IP{version}":
        raise SdpError(f"c= line says {parts[1]} for the IPv{version} address {address}")
    return address


def _parse_a(value: str, sd: SessionDescription, current: MediaDescription | None) -> None:
    name, colon, rest = value.partition(":")
    if name in DIRECTIONS and not colon:
        if current is None:
            sd.direction = name
        else:
            current.direction = name
        return
    if current is None:
        sd.attributes.append((name, rest if colon else None))
        return
    if name in ("rtpmap", "fmtp") and colon:
        pt_text, _, spec = rest.partition(" ")
        if not _is_number(pt_text):
            raise SdpError(f"bad a={name} line")
        (current.rtpmap if name == "rtpmap" else current.fmtp)[int(pt_text)] = spec.strip()
    elif name == "ptime" and _is_number(rest.strip()):
        current.ptime = int(rest.strip())
    else:
        current.attributes.append((name, rest if colon else None))


@dataclass
class NegotiatedMedia:
    remote_host: str
    remote_port: int
    codec: Codec
    dtmf_payload_type: int | None
    remote_direction: str
    local_direction: str
    ptime: int  # the offerer's a=ptime (20 when absent); we always send 20 ms
    # The offer's m= lines as (media, proto, formats) and which one we took, so the answer mirrors them.
    offer_media: list[tuple[str, str, str]] = field(default_factory=list)
    audio_index: int = 0


def negotiate(offer: SessionDescription, supported: Sequence[str] = ("PCMU", "PCMA"), *,
              local_host: str | None = None) -> NegotiatedMedia:
    """Choose the answer to `offer`: first offered audio stream, caller's first supported codec.
    `local_host`: our media address; an IPv6 c= that an IPv4-only media socket cannot reach is
    refused here (warn code 301), not found out after the answer."""
    wanted = {s.upper() for s in supported}
    audio = [
        (i, m) for i, m in enumerate(offer.media) if m.media == "audio" and m.proto in ("RTP/AVP", "RTP/AVPF")
    ]
    if not audio:
        raise SdpError("no RTP/AVP audio stream")
    live = [(i, m) for i, m in audio if m.port != 0]
    if not live:
        raise SdpError("audio stream disabled (port 0)")
    index, media = live[0]
    codec = next(
        (c for c in media.codecs() if c.name.upper() in wanted and c.clock_rate == 8000), None
    )  # RFC 3264 6.1: keep the offerer's preference order
    if codec is None:
        raise SdpError("no common codec")
    dtmf = next(
        (
            c.payload_type
            for c in media.codecs()
            if c.name.lower() == "telephone-event" and c.clock_rate == 8000
        ),
        None,
    )
    host = media.connection or offer.connection
    if host is None:
        raise SdpError("no connection address")
    _check_media_address(host)
    if local_host is not None and ":" not in local_host and ":" in host and host != "::":
        raise SdpError(f"c= {host} is IPv6, this node's media address {local_host} is IPv4", warn_code=301)
    if not 1 <= media.port <= 65535:
        raise SdpError(f"m= port {media.port} is outside 1-65535")
    direction = media.direction or offer.direction or "sendrecv"
    if host in ("0.0.0.0", "::") and direction == "sendrecv":
        direction = "sendonly"  # RFC 2543 hold (RFC 3264 8.4): do not send to that address
    return NegotiatedMedia(
        remote_host=host,
        remote_port=media.port,
        codec=Codec(codec.payload_type, codec.name.upper(), codec.clock_rate),
        dtmf_payload_type=dtmf,
        remote_direction=direction,
        local_direction=_ANSWER_DIRECTION[direction],
        ptime=media.ptime or 20,
        offer_media=[(m.media, m.proto, " ".join(m.raw_formats) or "0") for m in offer.media],
        audio_index=index,
    )


def _check_media_address(host: str) -> None:
    """The media address must be an IP literal: a name would be resolved by every sendto, a
    blocking lookup of an attacker's choice on the event loop for each packet."""
    try:
        ip = ipaddress.ip_address(host) if "%" not in host else None
    except ValueError:
        ip = None
    if ip is None:
        raise SdpError(f"c= address {host[:40]!r} is not an IP address (host names are not resolved)")
    if ip.is_multicast:
        raise SdpError(f"c= address {host} is multicast (only unicast media is supported)")


def _session_lines(local_host: str, session_id: int, version: int) -> list[str]:
    addr = _connection_line(local_host)
    return ["v=0", f"o=- {session_id} {version} {addr}", "s=-", f"c={addr}", "t=0 0"]


def _audio_lines(port: int, codecs: Sequence[Codec], dtmf_pt: int | None, direction: str) -> list[str]:
    pts = [str(c.payload_type) for c in codecs] + ([str(dtmf_pt)] if dtmf_pt is not None else [])
    lines = [f"m=audio {port} RTP/AVP {' '.join(pts)}"]
    lines += [f"a=rtpmap:{c.payload_type} {c.name}/{c.clock_rate}" for c in codecs]
    if dtmf_pt is not None:
        lines += [f"a=rtpmap:{dtmf_pt} telephone-event/8000", f"a=fmtp:{dtmf_pt} 0-16"]
    return [*lines, "a=ptime:20", f"a={direction}"]


def build_answer(
    neg: NegotiatedMedia, local_host: str, local_port: int, session_id: int, version: int
) -> bytes:
    """The SDP answer for `neg`; refused streams of the offer come back with port 0 (RFC 3264 6)."""
    lines = _session_lines(local_host, session_id, version)
    audio = _audio_lines(local_port, [neg.codec], neg.dtmf_payload_type, neg.local_direction)
    layout = neg.offer_media or [("audio", "RTP/AVP", str(neg.codec.payload_type))]
    for i, (media, proto, formats) in enumerate(layout):
        lines += audio if i == neg.audio_index else [f"m={media} 0 {proto} {formats}"]
    return ("\r\n".join(lines) + "\r\n").encode()


def build_offer(
    local_host: str,
    local_port: int,
    session_id: int,
    version: int,
    codecs: Sequence[str] = ("PCMU", "PCMA"),
    dtmf_pt: int = 101,
) -> bytes:
    """An offer with one audio stream: the G.711 `codecs` in order, then telephone-event."""
    by_name = {name: pt for pt, (name, _) in STATIC_PAYLOADS.items()}
    chosen: list[Codec] = []
    for name in codecs:
        pt = by_name.get(name.upper())
        if pt is None:
            raise SdpError(f"no static payload type for codec {name!r}")
        chosen.append(Codec(pt, name.upper(), 8000))
    lines = _session_lines(local_host, session_id, version) + _audio_lines(
        local_port, chosen, dtmf_pt, "sendrecv"
    )
    return ("\r\n".join(lines) + "\r\n").encode()
