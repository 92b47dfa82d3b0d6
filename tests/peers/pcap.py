"""RTP streams as libpcap files (what sipp's `play_pcap_audio` replays) and G.711 for test peers.

Build a stream from speech (WAV, any rate, resampled) and RFC 4733 digits, write it as an
Ethernet/IPv4/UDP pcap, and read pcaps back (sipp's samples, tshark captures with `-F pcap`).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile

RATE = 8000
PCMU, PCMA, TELEPHONE_EVENT = 0, 8, 101
DTMF_EVENTS = {d: i for i, d in enumerate("0123456789*#ABCD")}  # RFC 4733 section 3.2
EVENT_DIGITS = {v: k for k, v in DTMF_EVENTS.items()}


@dataclass(frozen=True, kw_only=True)
class RtpPacket:
    """One RTP packet (RFC 3550 section 5.1) and when it is sent/was seen, in seconds."""

    time: float
    payload_type: int
    seq: int
    timestamp: int
    ssrc: int
    payload: bytes
    marker: bool = False
    src_port: int = 0
    dst_port: int = 0

    def serialize(self) -> bytes:
        b1 = (0x80 if self.marker else 0) | self.payload_type
        return struct.pack("!BBHII", 0x80, b1, self.seq & 0xFFFF, self.timestamp & 0xFFFFFFFF, self.ssrc) + (
            self.payload
        )

    @classmethod
    def parse(cls, data: bytes, time: float = 0.0, src_port: int = 0, dst_port: int = 0) -> RtpPacket | None:
        if len(data) < 12 or data[0] >> 6 != 2:
            return None
        b0, b1, seq, ts, ssrc = struct.unpack("!BBHII", data[:12])
        start = 12 + 4 * (b0 & 0x0F)
        if b0 & 0x10 and len(data) >= start + 4:  # header extension
            start += 4 + 4 * struct.unpack("!H", data[start + 2 : start + 4])[0]
        end = len(data) - (data[-1] if b0 & 0x20 else 0)
        return cls(
            time=time,
            payload_type=b1 & 0x7F,
            marker=bool(b1 & 0x80),
            seq=seq,
            timestamp=ts,
            ssrc=ssrc,
            payload=data[start:end],
            src_port=src_port,
            dst_port=dst_port,
        )


# --- G.711 (ITU-T G.711), vectorised; enough for test peers, the service has its own tables ---
_ULAW_SEG_END = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF])
_ALAW_SEG_END = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF])


def ulaw_encode(pcm: np.ndarray) -> bytes:
    x = pcm.astype(np.int32) >> 2  # 14-bit, as in the G.711 reference code
    mask = np.where(x < 0, 0x7F, 0xFF)
    mag = np.minimum(np.abs(x), 8159) + 33
    seg = np.searchsorted(_ULAW_SEG_END, mag)
    out = np.where(seg >= 8, 0x7F, (np.minimum(seg, 7) << 4) | ((mag >> (seg + 1)) & 0x0F))
    return (out ^ mask).astype(np.uint8).tobytes()


def ulaw_decode(data: bytes) -> np.ndarray:
    u = ~np.frombuffer(data, dtype=np.uint8).astype(np.int32) & 0xFF
    exp, mant = (u >> 4) & 7, u & 0x0F
    mag = ((mant << 3) + 0x84 << exp) - 0x84
    return np.where(u & 0x80, -mag, mag).astype(np.int16)


def alaw_encode(pcm: np.ndarray) -> bytes:
    x = pcm.astype(np.int32) >> 3  # 13-bit
    mask = np.where(x >= 0, 0xD5, 0x55)
    mag = np.where(x >= 0, x, -x - 1)
    seg = np.searchsorted(_ALAW_SEG_END, mag)
    mant = np.where(seg < 2, mag >> 1, mag >> np.maximum(seg, 1)) & 0x0F
    out = np.where(seg >= 8, 0x7F, (np.minimum(seg, 7) << 4) | mant)
    return (out ^ mask).astype(np.uint8).tobytes()


def alaw_decode(data: bytes) -> np.ndarray:
    a = np.frombuffer(data, dtype=np.uint8).astype(np.int32) ^ 0x55
    exp, mant = (a >> 4) & 7, a & 0x0F
    mag = np.where(exp == 0, (mant << 4) + 8, ((mant << 4) + 0x108) << np.maximum(exp - 1, 0))
    return np.where(a & 0x80, mag, -mag).astype(np.int16)


def decode(payload_type: int, data: bytes) -> np.ndarray:
    if payload_type == PCMU:
        return ulaw_decode(data)
    if payload_type == PCMA:
        return alaw_decode(data)
    raise ValueError(f"not a G.711 payload type: {payload_type}")


def read_wav(path: Path) -> np.ndarray:
    """Mono 16-bit PCM at 8 kHz from any WAV/FLAC (linear resampling is plenty for tests)."""
    data, rate = soundfile.read(str(path), dtype="float64", always_2d=True)
    mono = data.mean(axis=1)
    if rate != RATE:
        n = round(len(mono) * RATE / rate)
        mono = np.interp(np.arange(n) * rate / RATE, np.arange(len(mono)), mono)
    out: np.ndarray = np.clip(mono * 32767, -32768, 32767).astype(np.int16)
    return out


def dtmf_tone(digit: str, ms: int = 120, amplitude: int = 8000) -> np.ndarray:
    """In-band DTMF (ITU-T Q.23 frequency pairs) as 8 kHz PCM."""
    rows, cols = (697, 770, 852, 941), (1209, 1336, 1477, 1633)
    keys = "123A456B789C*0#D"
    i = keys.index(digit.upper())
    t = np.arange(RATE * ms // 1000) / RATE
    tone = np.sin(2 * np.pi * rows[i // 4] * t) + np.sin(2 * np.pi * cols[i % 4] * t)
    return (tone * amplitude / 2).astype(np.int16)


class RtpStreamBuilder:
    """One RTP stream (one SSRC, continuous seq and timestamp) assembled from segments."""

    def __init__(
        self,
        *,
        codec: int = PCMU,
        event_pt: int = TELEPHONE_EVENT,
        ssrc: int = 0x5EED0001,
        ptime_ms: int = 20,
        seq: int = 1000,
        timestamp: int = 16000,
    ) -> None:
        if codec not in (PCMU, PCMA):
            raise ValueError(f"codec must be PCMU (0) or PCMA (8), not {codec}")
        self.codec, self.event_pt, self.ssrc, self.ptime = codec, event_pt, ssrc, ptime_ms / 1000
        self.samples = RATE * ptime_ms // 1000
        self.packets: list[RtpPacket] = []
        self._t, self._seq, self._ts = 0.0, seq, timestamp
        self._talkspurt = True

    def _emit(self, pt: int, payload: bytes, *, marker: bool = False, ts: int | None = None) -> None:
        self.packets.append(
            RtpPacket(
                time=round(self._t, 6),
                payload_type=pt,
                seq=self._seq & 0xFFFF,
                timestamp=(self._ts if ts is None else ts) & 0xFFFFFFFF,
                ssrc=self.ssrc,
                payload=payload,
                marker=marker,
            )
        )
        self._seq += 1

    def audio(self, pcm: np.ndarray) -> RtpStreamBuilder:
        encode = ulaw_encode if self.codec == PCMU else alaw_encode
        pcm = np.concatenate([pcm, np.zeros((-len(pcm)) % self.samples, dtype=np.int16)])
        for i in range(0, len(pcm), self.samples):
            self._emit(self.codec, encode(pcm[i : i + self.samples]), marker=self._talkspurt)
            self._talkspurt = False
            self._t += self.ptime
            self._ts += self.samples
        return self

    def silence(self, ms: int) -> RtpStreamBuilder:
        return self.audio(np.zeros(RATE * ms // 1000, dtype=np.int16))

    def wav(self, path: Path) -> RtpStreamBuilder:
        return self.audio(read_wav(path))

    def digits(
        self, digits: str, *, duration_ms: int = 100, gap_ms: int = 100, volume: int = 10
    ) -> RtpStreamBuilder:
        """RFC 4733 section 2.5: one event per digit, same timestamp, growing duration, marker on the
        first packet, the end packet sent three times; audio silence in the gaps."""
        for d in digits:
            code = DTMF_EVENTS[d.upper()]
            start = self._ts
            steps = max(1, duration_ms * RATE // 1000 // self.samples)
            for i in range(1, steps + 1):
                end = i == steps
                payload = struct.pack("!BBH", code, (0x80 if end else 0) | volume, i * self.samples)
                for _ in range(3 if end else 1):
                    self._emit(self.event_pt, payload, marker=i == 1, ts=start)
                self._t += self.ptime
                self._ts += self.samples
            self._talkspurt = True
            if gap_ms:
                self.silence(gap_ms)
        return self

    def write(self, path: Path, src_port: int = 6000, dst_port: int = 6002) -> Path:
        write_pcap(path, self.packets, src_port=src_port, dst_port=dst_port)
        return path

    @property
    def duration(self) -> float:
        return self._t


# --- libpcap files: global header, then per packet header + Ethernet/IPv4/UDP frame ---


def _ip_checksum(header: bytes) -> int:
    s: int = sum(struct.unpack(f"!{len(header) // 2}H", header))
    s = (s >> 16) + (s & 0xFFFF)
    return ~(s + (s >> 16)) & 0xFFFF


def _frame(payload: bytes, src_port: int, dst_port: int, ident: int) -> bytes:
    udp = struct.pack("!HHHH", src_port, dst_port, 8 + len(payload), 0) + payload
    ip = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(udp),
        ident & 0xFFFF,
        0,
        64,
        17,
        0,
        bytes([127, 0, 0, 1]),
        bytes([127, 0, 0, 1]),
    )
    ip = ip[:10] + struct.pack("!H", _ip_checksum(ip)) + ip[12:]
    eth = b"\x00" * 12 + b"\x08\x00"
    return eth + ip + udp


def write_pcap(
    path: Path,
    packets: Iterable[RtpPacket],
    *,
    src_port: int = 6000,
    dst_port: int = 6002,
    epoch: float = 1_700_000_000.0,
) -> None:
    with open(path, "wb") as fh:
        fh.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))  # LINKTYPE_ETHERNET
        for n, p in enumerate(packets):
            frame = _frame(p.serialize(), p.src_port or src_port, p.dst_port or dst_port, n)
            usec = round(p.time * 1e6)  # offsets in integer microseconds: no float epoch rounding
            fh.write(struct.pack("<IIII", int(epoch) + usec // 10**6, usec % 10**6, len(frame), len(frame)))
            fh.write(frame)


@dataclass(frozen=True)
class UdpDatagram:
    time: float  # seconds since the file's first packet
    src_port: int
    dst_port: int
    payload: bytes


def read_udp(path: Path) -> Iterator[UdpDatagram]:
    """UDP over IPv4 datagrams (Ethernet, Linux-cooked or raw links) from a libpcap file."""
    data = Path(path).read_bytes()
    magic = struct.unpack("<I", data[:4])[0]
    if magic in (0xA1B2C3D4, 0xA1B23C4D):
        endian = "<"
    elif magic in (0xD4C3B2A1, 0x4D3CB2A1):
        endian = ">"
    else:
        raise ValueError(f"{path}: not a libpcap file (pcapng? capture with dumpcap -P / tshark -F pcap)")
    nanos = magic in (0xA1B23C4D, 0x4D3CB2A1)
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    offset = {1: 14, 113: 16, 101: 0, 228: 0, 0: 4}.get(linktype)
    if offset is None:
        raise ValueError(f"{path}: unsupported link type {linktype}")
    pos = 24
    scale = 10**9 if nanos else 10**6
    first: int | None = None
    while pos + 16 <= len(data):
        sec, frac, caplen, _ = struct.unpack(endian + "IIII", data[pos : pos + 16])
        frame = data[pos + 16 : pos + 16 + caplen]
        pos += 16 + caplen
        ip = frame[offset:]
        if len(ip) < 28 or ip[0] >> 4 != 4 or ip[9] != 17:
            continue
        ihl = (ip[0] & 0x0F) * 4
        sport, dport, ulen = struct.unpack("!HHH", ip[ihl : ihl + 6])
        stamp = sec * scale + frac  # integers: a float epoch has only ~0.2 us resolution
        first = stamp if first is None else first
        yield UdpDatagram((stamp - first) / scale, sport, dport, ip[ihl + 8 : ihl + ulen])


def read_pcap(path: Path) -> Iterator[RtpPacket]:
    """RTP packets from a libpcap file (see read_udp); `time` is seconds since the first packet.
    A capture with a short snap length still gives headers (payloads come out truncated)."""
    for d in read_udp(path):
        packet = RtpPacket.parse(d.payload, d.time, d.src_port, d.dst_port)
        if packet is not None:
            yield packet


def events(packets: Iterable[RtpPacket], event_pt: int = TELEPHONE_EVENT) -> str:
    """Digits of RFC 4733 events, one per (ssrc, timestamp) with the end bit (section 2.5.1.4)."""
    seen: set[tuple[int, int]] = set()
    out = []
    for p in packets:
        if p.payload_type == event_pt and len(p.payload) >= 4 and p.payload[1] & 0x80:
            key = (p.ssrc, p.timestamp)
            if key not in seen:
                seen.add(key)
                out.append(EVENT_DIGITS.get(p.payload[0], "?"))
    return "".join(out)


def speak(text: str, path: Path, *, voice: str = "slt") -> Path:
    """Caller speech as a WAV made by flite (espeak-ng when flite is missing)."""
    import shutil
    import subprocess

    if shutil.which("flite"):
        argv = ["flite", "-voice", voice, "-t", text, "-o", str(path)]
    else:
        argv = ["espeak-ng", "-w", str(path), text]
    subprocess.run(argv, check=True, capture_output=True, timeout=30)
    return path
