"""RTP fixed header (RFC 3550 section 5.1): parse and serialize, nothing else.

Our own small class rather than aiortc's: the send path builds a header per
20 ms per call, so it is one precompiled `struct.pack`, and parsing skips CSRCs,
extensions and padding the way RFC 3550 section 5.1 describes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

RTP_VERSION = 2
_HEADER = struct.Struct("!BBHII")
HEADER_SIZE = _HEADER.size  # 12
HEADER_STRUCT = _HEADER  # (b0, b1, sequence, timestamp, ssrc): for senders that pack their own


class PacketError(ValueError):
    """Bytes that are not a valid RTP packet."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RtpPacket:
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes = b""
    marker: bool = False

    @classmethod
    def parse(cls, data: bytes) -> RtpPacket:
        if len(data) < HEADER_SIZE:
            raise PacketError(f"RTP packet of {len(data)} bytes is shorter than the 12-byte header")
        b0, b1, seq, ts, ssrc = _HEADER.unpack_from(data)
        if b0 >> 6 != RTP_VERSION:
            raise PacketError(f"RTP version {b0 >> 6}, expected 2")
        pos = HEADER_SIZE + 4 * (b0 & 0x0F)  # skip CSRC list
        end = len(data)
        if b0 & 0x10:  # header extension (RFC 3550 5.3.1): 4-byte header + length words
            if end < pos + 4:
                raise PacketError("truncated RTP header extension")
            (words,) = struct.unpack_from("!H", data, pos + 2)
            pos += 4 + 4 * words
        if b0 & 0x20:  # padding: the last octet counts the padding octets, itself included
            pad = data[-1]
            if pad == 0 or pad > end - pos:
                raise PacketError(f"bad RTP padding length {pad}")
            end -= pad
        if pos > end:
            raise PacketError("RTP header longer than the packet")
        return cls(
            payload_type=b1 & 0x7F,
            marker=bool(b1 & 0x80),
            sequence=seq,
            timestamp=ts,
            ssrc=ssrc,
            payload=bytes(data[pos:end]),
        )

    def serialize(self) -> bytes:
        return header(self.payload_type, self.marker, self.sequence, self.timestamp, self.ssrc) + self.payload


def header(payload_type: int, marker: bool, sequence: int, timestamp: int, ssrc: int) -> bytes:
    """The 12-byte fixed header (no CSRC, no extension, no padding)."""
    return _HEADER.pack(0x80, (0x80 if marker else 0) | payload_type, sequence, timestamp, ssrc)


def is_rtcp(data: bytes) -> bool:
    """RFC 5761 section 4: packet types 192-223 in the second octet mark RTCP on a shared port."""
    return len(data) >= 2 and 192 <= data[1] <= 223
