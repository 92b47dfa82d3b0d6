"""Sans-IO RTP parts in memory: packets, pacing clock, sender state, reorder buffer, RTCP, latching."""

from __future__ import annotations

import random
import struct

import pytest

from voice.rtp.jitter import ReorderBuffer, seq_diff
from voice.rtp.latch import SourceLatch
from voice.rtp.pacing import FrameClock, RtpSender
from voice.rtp.packet import PacketError, RtpPacket, header, is_rtcp
from voice.rtp.rtcp import (
    Bye,
    ReceiverReport,
    ReceptionStats,
    ReportBlock,
    SenderReport,
    build_bye,
    build_rr,
    build_sdes,
    build_sr,
    ntp_middle,
    ntp_timestamp,
    parse,
    round_trip,
)


# ---- packets ----------------------------------------------------------------------------------
def test_packet_round_trip_and_header_layout():
    p = RtpPacket(payload_type=8, sequence=65535, timestamp=0xFFFFFFF0, ssrc=0x12345678,
                  payload=b"\xd5" * 160, marker=True)
    data = p.serialize()
    assert data[:12] == bytes.fromhex("80 88 ffff fffffff0 12345678")
    assert RtpPacket.parse(data) == p


def test_parse_skips_csrc_extension_and_padding():
    csrc = struct.pack("!II", 1, 2)
    ext = struct.pack("!HH", 0xBEDE, 1) + b"\x00" * 4
    payload = b"abc"
    padding = b"\x00\x00\x03"
    data = bytes([0x80 | 0x20 | 0x10 | 2, 0]) + struct.pack("!HII", 7, 8, 9) + csrc + ext + payload + padding
    p = RtpPacket.parse(data)
    assert (p.sequence, p.timestamp, p.ssrc, p.payload) == (7, 8, 9, b"abc")


BAD = [
    b"\x80\x00",  # shorter than a header
    b"\x40" + b"\x00" * 11,  # version 1
    bytes([0xA0, 0]) + b"\x00" * 10,  # padding flag with a zero padding count
    bytes([0x8F, 0]) + b"\x00" * 10,  # 15 CSRCs announced, none present
]


@pytest.mark.parametrize("data", BAD)
def test_parse_rejects_garbage(data):
    with pytest.raises(PacketError):
        RtpPacket.parse(data)


def test_rtcp_demux_by_packet_type():
    assert is_rtcp(build_bye(5))
    assert not is_rtcp(header(0, True, 1, 2, 3))
    assert not is_rtcp(header(101, False, 1, 2, 3))


# ---- pacing -----------------------------------------------------------------------------------
def test_frame_clock_absolute_deadlines_do_not_drift():
    clock = FrameClock(100.0)
    now = 100.0
    sent = 0
    rng = random.Random(3)
    for _ in range(500):
        due = clock.due(now)
        assert due.skipped == 0
        sent += due.send
        # a timer that always wakes up 0-8 ms late: the schedule must not slide
        now = clock.deadline() + rng.uniform(0, 0.008)
    assert sent == 500
    assert clock.deadline() == pytest.approx(100.0 + 500 * 0.02)


def test_frame_clock_wake_up_exactly_on_deadline_always_progresses():
    for t0 in (0.0, 100.0, 12345.678, 1e6 + 0.1):
        clock = FrameClock(t0)
        for _ in range(2000):
            assert clock.due(clock.deadline()).send == 1


def test_frame_clock_catches_up_a_little_and_skips_a_long_stall():
    clock = FrameClock(0.0)
    assert clock.due(0.0).send == 1
    assert clock.due(0.019).send == 0
    d = clock.due(0.041)  # frames 1 and 2 are due
    assert (d.send, d.skipped) == (2, 0)
    d = clock.due(0.5)  # frames 3..25 due: 3 sent, the rest skipped
    assert (d.send, d.skipped) == (3, 20)
    assert clock.deadline() == pytest.approx(0.52)


def test_sender_seq_ts_marker():
    s = RtpSender(random.Random(1))
    seq0, ts0 = s.seq, s.ts
    pkts = []
    for _ in range(5):
        pkts.append(RtpPacket.parse(s.build(0, b"\xff" * 160)))
        s.advance()
    assert [p.sequence for p in pkts] == [(seq0 + i) & 0xFFFF for i in range(5)]
    assert [p.timestamp for p in pkts] == [(ts0 + 160 * i) & 0xFFFFFFFF for i in range(5)]
    assert [p.marker for p in pkts] == [True, False, False, False, False]
    assert len({p.ssrc for p in pkts}) == 1
    # a gap (hold): time runs on, next packet carries the marker
    s.gap()
    s.advance(10)
    p = RtpPacket.parse(s.build(0, b"\xff" * 160))
    assert p.marker and p.timestamp == (ts0 + 160 * 15) & 0xFFFFFFFF and p.sequence == (seq0 + 5) & 0xFFFF
    assert s.packets == 6 and s.octets == 960


def test_random_initial_values_differ():
    a, b = RtpSender(), RtpSender()
    assert (a.ssrc, a.seq, a.ts) != (b.ssrc, b.seq, b.ts)


# ---- reorder buffer ---------------------------------------------------------------------------
def test_reorder_in_order_passes_straight_through():
    rb: ReorderBuffer[int] = ReorderBuffer()
    assert [x for s in range(65530, 65540) for x in rb.push(s & 0xFFFF, s, 0.0)] == list(range(65530, 65540))


def test_reorder_swaps_are_fixed_and_late_packets_dropped():
    rb: ReorderBuffer[int] = ReorderBuffer(depth=3)
    out = []
    for s in [1, 3, 2, 4, 6, 5, 7]:
        out += rb.push(s, s, 0.0)
    assert out == [1, 2, 3, 4, 5, 6, 7]
    assert rb.push(5, 5, 0.0) == [] and rb.late == 1


def test_reorder_gives_up_on_a_gap_when_full_or_too_old():
    rb: ReorderBuffer[int] = ReorderBuffer(depth=3, max_delay=0.06)
    out = rb.push(10, 10, 0.0)
    for s in (12, 13, 14):
        out += rb.push(s, s, 0.0)
    assert out == [10]  # 11 still awaited, three held
    out += rb.push(15, 15, 0.01)  # buffer over depth: 11 is lost
    assert out == [10, 12, 13, 14, 15] and rb.skipped == 1
    out = rb.push(17, 17, 0.02)
    assert out == [] and rb.poll(0.05) == []
    assert rb.poll(0.081) == [17] and rb.skipped == 2
    assert rb.push(16, 16, 0.09) == [] and rb.late == 1


def test_reorder_resyncs_on_a_big_jump():
    rb: ReorderBuffer[int] = ReorderBuffer()
    rb.push(100, 100, 0.0)
    assert rb.push(40000, 1, 0.0) == [1]
    assert rb.push(40001, 2, 0.0) == [2]
    assert seq_diff(0, 65535) == 1 and seq_diff(65535, 0) == -1


# ---- RTCP -------------------------------------------------------------------------------------
def test_sr_rr_sdes_bye_round_trip():
    block = ReportBlock(ssrc=7, fraction_lost=25, cumulative_lost=-3, highest_seq=70000, jitter=40, lsr=123,
                        dlsr=456)
    sr = SenderReport(ssrc=1, ntp=ntp_timestamp(1e9), rtp_timestamp=99, packets=10, octets=1600,
                      blocks=(block,))
    rr = ReceiverReport(ssrc=2, blocks=(block,))
    data = build_sr(sr) + build_sdes(1, "voice@host") + build_rr(rr) + build_bye(1)
    assert len(data) % 4 == 0
    assert parse(data) == [sr, rr, Bye(ssrcs=(1,))]


def test_reception_stats_loss_jitter_and_wrap():
    st = ReceptionStats()
    t = 10.0
    seqs = [65533, 65534, 65535, 0, 2, 3]  # 1 lost, across the wrap
    for i, s in enumerate(seqs):
        ts = 1000 + 160 * ((s - 65533) & 0xFFFF)
        st.update(55, s, ts, t + 0.02 * ((s - 65533) & 0xFFFF) + (0.004 if i == 4 else 0.0))
    assert st.expected == 7 and st.received == 6 and st.lost == 1
    assert st.extended_max == 65536 + 3
    assert 0 < st.jitter_ms < 1
    block = st.report_block(now=11.0)
    assert block is not None and block.cumulative_lost == 1 and block.fraction_lost == (1 << 8) // 7
    assert st.report_block(now=12.0).fraction_lost == 0  # nothing new lost since


def test_round_trip_from_lsr_dlsr():
    now = 1_700_000_000.0
    lsr = ntp_middle(now - 0.3)
    block = ReportBlock(ssrc=1, fraction_lost=0, cumulative_lost=0, highest_seq=0, jitter=0, lsr=lsr,
                        dlsr=int(0.25 * 65536))
    assert round_trip(block, now) == pytest.approx(0.05, abs=1e-3)
    no_sr_yet = ReportBlock(ssrc=1, fraction_lost=0, cumulative_lost=0, highest_seq=0, jitter=0)
    assert round_trip(no_sr_yet, now) is None


# ---- latching ---------------------------------------------------------------------------------
def test_latch_on_sdp_address_then_drop_everyone_else():
    latch = SourceLatch(("10.0.0.5", 4000), frozenset({0, 101}))
    assert not latch.accept(("10.9.9.9", 5000), 1, 1, 0)  # stranger first: not latched yet
    assert latch.accept(("10.0.0.5", 4000), 2, 10, 0)
    assert latch.latched == ("10.0.0.5", 4000)
    assert not latch.accept(("10.9.9.9", 5000), 1, 2, 0)
    assert not latch.accept(("10.0.0.5", 4002), 2, 11, 0)  # another port of the same host too


def test_latch_nat_source_after_probation_only():
    latch = SourceLatch(("192.168.1.20", 4000), frozenset({8}))
    nat = ("203.0.113.7", 61000)
    assert not latch.accept(nat, 77, 1, 0)  # wrong payload type never counts
    assert not latch.accept(nat, 77, 1, 8)
    assert not latch.accept(nat, 77, 2, 8)
    assert not latch.accept(("198.51.100.1", 1), 66, 3, 8)  # an interloper resets the probation
    assert not latch.accept(nat, 77, 3, 8)
    assert not latch.accept(nat, 77, 4, 8)
    assert latch.accept(nat, 77, 5, 8)
    assert latch.send_to == nat
    assert not latch.accept(("192.168.1.20", 4000), 77, 6, 8)  # latched: even the SDP address is foreign now


def test_latch_compares_normalized_addresses():
    latch = SourceLatch(("2001:db8:0:0::1", 4000), frozenset({0}))
    assert latch.accept(("2001:db8::1", 4000), 1, 1, 0)
    v4 = SourceLatch(("192.0.2.1", 4000), frozenset({0}))
    assert v4.accept(("::ffff:192.0.2.1", 4000), 1, 1, 0)  # from a dual-stack socket


def test_sender_frame_is_build_then_advance() -> None:
    a, b = RtpSender(random.Random(5)), RtpSender(random.Random(5))
    for i in range(4):
        if i == 2:
            a.gap()
            b.gap()
        expected = a.build(8, bytes([i]) * 160)
        a.advance()
        assert b.frame(8, bytes([i]) * 160) == expected
    assert (a.seq, a.ts, a.packets, a.octets) == (b.seq, b.ts, b.packets, b.octets)


def test_frame_clock_take_counts_due_frames() -> None:
    clock = FrameClock(10.0)
    assert clock.take(9.99) == 0 and clock.take(10.0) == 1 and clock.take(10.0) == 0
    assert clock.take(10.065) == 3 and clock.n == 4 and clock.deadline() == 10.08
