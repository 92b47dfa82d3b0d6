"""RTCP (RFC 3550 section 6): receiver statistics, SR/RR/SDES/BYE build and parse.

`ReceptionStats` is the per-source bookkeeping of RFC 3550 appendix A.1 (sequence
extension), A.3 (expected/lost) and A.8 (interarrival jitter). The adapter sends a
compound SR (or RR while it is not sending) + SDES CNAME every 5 seconds
(section 6.2 recommends a 5 s minimum interval) and parses the peer's reports.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

SR, RR, SDES, BYE = 200, 201, 202, 203
NTP_EPOCH_OFFSET = 2208988800  # seconds from 1900-01-01 (NTP) to 1970-01-01 (Unix)
_BLOCK = struct.Struct("!IB3sIIII")


def ntp_timestamp(unix_time: float) -> int:
    """64-bit NTP timestamp (RFC 3550 section 4)."""
    return int((unix_time + NTP_EPOCH_OFFSET) * (1 << 32)) & 0xFFFFFFFFFFFFFFFF


def ntp_middle(unix_time: float) -> int:
    """The middle 32 bits of the NTP timestamp, the unit of LSR and of round-trip time."""
    return (ntp_timestamp(unix_time) >> 16) & 0xFFFFFFFF


@dataclass(frozen=True, slots=True, kw_only=True)
class ReportBlock:
    ssrc: int
    fraction_lost: int  # 1/256 units, since the previous report
    cumulative_lost: int  # 24-bit signed
    highest_seq: int  # extended highest sequence number received
    jitter: int  # timestamp units
    lsr: int = 0
    dlsr: int = 0  # 1/65536 s

    def serialize(self) -> bytes:
        lost = self.cumulative_lost & 0xFFFFFF
        return _BLOCK.pack(self.ssrc, self.fraction_lost, lost.to_bytes(3, "big"), self.highest_seq,
                           self.jitter, self.lsr, self.dlsr)

    @classmethod
    def parse(cls, data: bytes, pos: int) -> ReportBlock:
        ssrc, frac, lost, high, jitter, lsr, dlsr = _BLOCK.unpack_from(data, pos)
        cum = int.from_bytes(lost, "big")
        if cum & 0x800000:
            cum -= 1 << 24
        return cls(ssrc=ssrc, fraction_lost=frac, cumulative_lost=cum, highest_seq=high, jitter=jitter,
                   lsr=lsr, dlsr=dlsr)


@dataclass(frozen=True, slots=True, kw_only=True)
class SenderReport:
    ssrc: int
    ntp: int
    rtp_timestamp: int
    packets: int
    octets: int
    blocks: tuple[ReportBlock, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class ReceiverReport:
    ssrc: int
    blocks: tuple[ReportBlock, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Bye:
    ssrcs: tuple[int, ...]


RtcpPacket = SenderReport | ReceiverReport | Bye


def _header(count: int, ptype: int, body_len: int) -> bytes:
    # length field: size in 32-bit words minus one (RFC 3550 6.4.1)
    return struct.pack("!BBH", 0x80 | count, ptype, (body_len + 4) // 4 - 1)


def build_sr(report: SenderReport) -> bytes:
    body = struct.pack("!IQIII", report.ssrc, report.ntp, report.rtp_timestamp, report.packets & 0xFFFFFFFF,
                       report.octets & 0xFFFFFFFF) + b"".join(b.serialize() for b in report.blocks)
    return _header(len(report.blocks), SR, len(body)) + body


def build_rr(report: ReceiverReport) -> bytes:
    body = struct.pack("!I", report.ssrc) + b"".join(b.serialize() for b in report.blocks)
    return _header(len(report.blocks), RR, len(body)) + body


def build_sdes(ssrc: int, cname: str) -> bytes:
    text = cname.encode()[:255]
    item = struct.pack("!IBB", ssrc, 1, len(text)) + text + b"\x00"  # CNAME item, then END
    item += b"\x00" * (-len(item) % 4)
    return _header(1, SDES, len(item)) + item


def build_bye(ssrc: int) -> bytes:
    return _header(1, BYE, 4) + struct.pack("!I", ssrc)


def parse(data: bytes) -> list[RtcpPacket]:
    """Parse a compound packet; unknown packet types (APP, feedback, XR) are skipped."""
    out: list[RtcpPacket] = []
    pos = 0
    while pos + 4 <= len(data):
        b0, ptype, length = struct.unpack_from("!BBH", data, pos)
        if b0 >> 6 != 2:
            raise ValueError(f"RTCP version {b0 >> 6}, expected 2")
        end = pos + 4 * (length + 1)
        if end > len(data):
            raise ValueError("truncated RTCP packet")
        count = b0 & 0x1F
        if ptype == SR and end - pos >= 28 + 24 * count:
            ssrc, ntp, ts, packets, octets = struct.unpack_from("!IQIII", data, pos + 4)
            blocks = tuple(ReportBlock.parse(data, pos + 28 + 24 * i) for i in range(count))
            out.append(SenderReport(ssrc=ssrc, ntp=ntp, rtp_timestamp=ts, packets=packets, octets=octets,
                                    blocks=blocks))
        elif ptype == RR and end - pos >= 8 + 24 * count:
            (ssrc,) = struct.unpack_from("!I", data, pos + 4)
            blocks = tuple(ReportBlock.parse(data, pos + 8 + 24 * i) for i in range(count))
            out.append(ReceiverReport(ssrc=ssrc, blocks=blocks))
        elif ptype == BYE:
            ok = end - pos >= 4 + 4 * count
            out.append(Bye(ssrcs=tuple(struct.unpack_from(f"!{count}I", data, pos + 4)) if ok else ()))
        pos = end
    return out


@dataclass(slots=True)
class ReceptionStats:
    """Statistics of one incoming source (RFC 3550 appendix A)."""

    clock_rate: int = 8000
    ssrc: int | None = None
    base_seq: int = 0
    max_seq: int = 0
    cycles: int = 0
    received: int = 0
    expected_prior: int = 0
    received_prior: int = 0
    jitter: float = 0.0  # timestamp units (A.8)
    _transit: int | None = None
    last_sr_middle: int = 0  # LSR: middle 32 bits of the last SR's NTP time
    last_sr_at: float | None = None
    _started: bool = field(default=False)

    def update(self, ssrc: int, seq: int, timestamp: int, arrival: float) -> None:
        """One packet arrived at `arrival` seconds (any monotonic clock)."""
        if self.ssrc != ssrc or not self._started:
            self.ssrc, self.base_seq, self.max_seq, self.cycles = ssrc, seq, seq, 0
            self.received = self.expected_prior = self.received_prior = 0
            self.jitter, self._transit, self._started = 0.0, None, True
        else:
            delta = (seq - self.max_seq) & 0xFFFF
            if 0 < delta < 0x8000:  # in order, maybe with a gap (A.1)
                if seq < self.max_seq:
                    self.cycles += 1 << 16
                self.max_seq = seq
        self.received += 1
        transit = int(arrival * self.clock_rate) - timestamp
        if self._transit is not None:
            d = abs(((transit - self._transit) + 0x80000000) % (1 << 32) - 0x80000000)
            self.jitter += (d - self.jitter) / 16
        self._transit = transit

    @property
    def extended_max(self) -> int:
        return self.cycles + self.max_seq

    @property
    def expected(self) -> int:
        return self.extended_max - self.base_seq + 1 if self._started else 0

    @property
    def lost(self) -> int:
        return self.expected - self.received

    @property
    def jitter_ms(self) -> float:
        return self.jitter * 1000 / self.clock_rate

    def on_sender_report(self, sr: SenderReport, arrival: float) -> None:
        self.last_sr_middle = (sr.ntp >> 16) & 0xFFFFFFFF
        self.last_sr_at = arrival

    def report_block(self, now: float) -> ReportBlock | None:
        """The block for our next SR/RR (A.3: fraction lost since the previous one)."""
        if not self._started or self.ssrc is None:
            return None
        expected, received = self.expected, self.received
        exp_int = expected - self.expected_prior
        rec_int = received - self.received_prior
        self.expected_prior, self.received_prior = expected, received
        lost_int = exp_int - rec_int
        fraction = 0 if exp_int <= 0 or lost_int <= 0 else (lost_int << 8) // exp_int
        dlsr = 0 if self.last_sr_at is None else int((now - self.last_sr_at) * 65536)
        cumulative = max(-(1 << 23), min(self.lost, (1 << 23) - 1))
        return ReportBlock(ssrc=self.ssrc, fraction_lost=min(fraction, 255), cumulative_lost=cumulative,
                           highest_seq=self.extended_max & 0xFFFFFFFF, jitter=int(self.jitter),
                           lsr=self.last_sr_middle, dlsr=dlsr)


def round_trip(block: ReportBlock, unix_now: float) -> float | None:
    """Round-trip time in seconds from a report block about our stream (RFC 3550 6.4.1)."""
    if block.lsr == 0:
        return None
    rtt = (ntp_middle(unix_now) - block.lsr - block.dlsr) & 0xFFFFFFFF
    return rtt / 65536 if rtt < 0x80000000 else None
