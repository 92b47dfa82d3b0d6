"""voice.rtp.session.MediaSession in memory: two sessions joined by a fake link, time moved by hand.

No sockets and no sleeping: the clock jumps from one `get_timer()` to the next, so sequence
numbers, timestamps, markers, pacing on absolute deadlines and RTCP are checked exactly. The
asyncio adapter on real sockets is tests/test_rtp_adapter.py.
"""

from __future__ import annotations

import random
import socket
from typing import Any

import numpy as np
import pytest

from tests.test_dtmf import DATA, read_pcap_udp_payloads
from voice.audio import dtmf_tone, tone
from voice.rtp import g711
from voice.rtp.dtmf import TelephoneEvent
from voice.rtp.events import (
    AudioReceived,
    DigitReceived,
    DtmfSent,
    MediaEvent,
    PlaybackFinished,
    RecordingFailed,
)
from voice.rtp.packet import RtpPacket, header
from voice.rtp.playback import encoded_prompt
from voice.rtp.rtcp import RR, SR, parse
from voice.rtp.session import Datagram, MediaSession, detect_inband

A = ("192.0.2.1", 20000)
B = ("192.0.2.2", 30000)
EPOCH = 1_700_000_000.0  # Unix time at now = 0


def rtcp_of(addr: tuple[str, int]) -> tuple[str, int]:
    return (addr[0], addr[1] + 1)


def session(seed: int, **kw: Any) -> MediaSession:
    return MediaSession(rng=random.Random(seed), epoch=EPOCH, **kw)


def configure(s: MediaSession, remote: tuple[str, int], now: float = 0.0, *, codec: str = "PCMU",
              pt: int = 0, dtmf: int | None = 101, direction: str = "sendrecv") -> None:
    s.configure(remote=remote, payload_type=pt, codec=codec, dtmf_payload_type=dtmf, now=now,
                direction=direction)


class Link:
    """Sessions at fixed addresses; a datagram reaches the session bound at its destination at
    once (RTCP at port + 1), or lands in `lost`. Everything sent is kept in `wire`."""

    def __init__(self, **sessions: tuple[MediaSession, tuple[str, int]]) -> None:
        self.at = {addr: s for s, addr in sessions.values()}
        self.addr = {id(s): addr for s, addr in sessions.values()}
        self.now = 0.0
        self.wire: list[tuple[float, tuple[str, int], Datagram]] = []  # (time, source, datagram)
        self.lost: list[Datagram] = []
        self.events: dict[int, list[MediaEvent]] = {id(s): [] for s, _ in sessions.values()}

    def add(self, s: MediaSession, addr: tuple[str, int]) -> None:
        self.at[addr], self.addr[id(s)] = s, addr
        self.events[id(s)] = []

    def flush(self) -> None:
        moved = True
        while moved:
            moved = False
            for s in list(self.at.values()):
                src = self.addr[id(s)]
                for data, dest, rtcp in s.datagrams_to_send():
                    moved = True
                    source = rtcp_of(src) if rtcp else src
                    self.wire.append((self.now, source, (data, dest, rtcp)))
                    port_owner = self.at.get(dest)
                    rtcp_owner = self.at.get((dest[0], dest[1] - 1))
                    if port_owner is not None:
                        port_owner.receive_datagram(data, source, self.now)
                    elif rtcp_owner is not None:
                        rtcp_owner.receive_datagram(data, source, self.now, rtcp=True)
                    else:
                        self.lost.append((data, dest, rtcp))
                while (event := s.next_event()) is not None:
                    self.events[id(s)].append(event)

    def run(self, until: float) -> None:
        """Tick every session at each of its timers up to `until`, in time order."""
        self.flush()
        while True:
            timers = [(t, s) for s in self.at.values() if (t := s.get_timer()) is not None]
            t = min((t for t, _ in timers), default=None)
            if t is None or t > until:
                break
            self.now = t
            for due, s in timers:
                if due <= t:
                    s.tick(t)
            self.flush()
        self.now = until

    def sent_by(self, s: MediaSession, *, rtcp: bool = False) -> list[RtpPacket]:
        src = self.addr[id(s)]
        return [RtpPacket.parse(d[0]) for _, a, d in self.wire if a == src and d[2] == rtcp]

    def times_of(self, s: MediaSession) -> list[float]:
        return [t for t, a, d in self.wire if a == self.addr[id(s)] and not d[2]]

    def got(self, s: MediaSession) -> list[MediaEvent]:
        return self.events[id(s)]

    def digits(self, s: MediaSession) -> list[str]:
        return [e.digit for e in self.got(s) if isinstance(e, DigitReceived)]

    def audio(self, s: MediaSession) -> list[np.ndarray]:
        return [e.frame for e in self.got(s) if isinstance(e, AudioReceived)]


def pair(codec: str = "PCMU", pt: int = 0, dtmf: int | None = 101) -> tuple[MediaSession, MediaSession, Link]:
    a, b = session(1), session(2)
    configure(a, B, codec=codec, pt=pt, dtmf=dtmf)
    configure(b, A, codec=codec, pt=pt, dtmf=dtmf)
    return a, b, Link(a=(a, A), b=(b, B))


def ramp(n: int) -> np.ndarray:
    """A prompt whose every frame is distinguishable."""
    return (np.sin(np.arange(n) * 0.05) * 8000 + np.arange(n) % 97).astype(np.int16)


def finished(link: Link, s: MediaSession) -> list[tuple[int, bool]]:
    return [(e.playback, e.completed) for e in link.got(s) if isinstance(e, PlaybackFinished)]


# ---- sending --------------------------------------------------------------------------------
def test_stream_sequence_timestamps_marker_and_content() -> None:
    a = session(1)
    link = Link(a=(a, A))
    configure(a, B)
    link.run(0.1)
    prompt = ramp(8000 // 5 + 37)  # 200 ms + a partial frame: 11 frames
    pid = a.play(prompt)
    link.run(0.5)
    pkts = [RtpPacket.parse(d[0]) for d in link.lost]
    assert len(pkts) == 26  # frames at 0, 20, ..., 500 ms: nothing early, nothing missed
    assert link.times_of(a) == pytest.approx([0.02 * i for i in range(26)])
    assert {p.ssrc for p in pkts} == {a.ssrc} and all(d[1] == B for d in link.lost)
    assert [(p.sequence - pkts[0].sequence) & 0xFFFF for p in pkts] == list(range(26))
    assert [(p.timestamp - pkts[0].timestamp) & 0xFFFFFFFF for p in pkts] == [160 * i for i in range(26)]
    assert [p.marker for p in pkts] == [True] + [False] * 25
    assert all(len(p.payload) == 160 and p.payload_type == 0 for p in pkts)
    stream = b"".join(p.payload for p in pkts)
    encoded = g711.encode(prompt, "PCMU")
    start = stream.find(encoded)
    assert start == 6 * 160  # the first frame after play(), on the schedule
    assert set(stream[:start]) == {0xFF} and set(stream[start + len(encoded):]) == {0xFF}
    assert finished(link, a) == [(pid, True)]
    assert a.stats["packets_sent"] == 26 and a.stats["late_wakeups"] == 0


def test_late_tick_catches_up_and_a_stall_skips_frames() -> None:
    a = session(1)
    configure(a, B)
    a.tick(0.0)
    a.tick(0.045)  # 25 ms late: frames 20 and 40 ms are both due, both sent now
    a.tick(0.060)
    a.tick(0.300)  # a 240 ms stall: 3 frames go out (catch-up), the other 9 are skipped
    a.tick(0.320)
    pkts = [RtpPacket.parse(d[0]) for d in a.datagrams_to_send()]
    ts = [(p.timestamp - pkts[0].timestamp) & 0xFFFFFFFF for p in pkts]
    assert ts == [0, 160, 320, 480, 640, 800, 960, 160 * 16]
    assert [p.marker for p in pkts] == [True, False, False, False, False, False, False, True]
    assert [(p.sequence - pkts[0].sequence) & 0xFFFF for p in pkts] == list(range(8))
    st = a.stats
    assert st["skipped_frames"] == 9 and st["late_wakeups"] == 2
    assert st["max_lateness_ms"] == pytest.approx(220)
    assert a.get_timer() == pytest.approx(0.34)
    a.tick(0.339)  # early: nothing due
    assert a.datagrams_to_send() == []


def test_two_sessions_exchange_audio() -> None:
    a, b, link = pair(codec="PCMA", pt=8)
    prompt = ramp(1600)
    a.play(prompt)
    link.run(0.4)
    got = link.audio(b)
    assert all(f.dtype == np.int16 and len(f) == 160 for f in got) and len(got) == 21
    audio = np.concatenate(got)
    idx = g711.encode(audio, "PCMA").find(g711.encode(prompt, "PCMA"))
    assert idx == 0  # from A's first frame
    assert np.array_equal(audio[idx:idx + 1600], g711.decode(g711.encode(prompt, "PCMA"), "PCMA"))
    st = b.stats
    assert st["packets_received"] == 21 and st["lost"] == 0 and st["dropped_foreign"] == 0
    assert st["latched"] == A and st["jitter_ms"] == 0


def test_new_play_replaces_old_and_stop_finishes_it() -> None:
    a, _b, link = pair()
    first = a.play(ramp(8000))
    second = a.play(ramp(320))
    link.run(0.1)
    third = a.play(ramp(8000))
    a.stop_playback()
    empty = a.play(np.zeros(0, np.int16))
    link.flush()
    assert finished(link, a) == [(first, False), (second, True), (third, False), (empty, True)]
    with pytest.raises(TypeError, match="int16"):
        a.play(np.zeros(10, np.float32))


def test_hold_unhold_and_codec_change_keep_one_stream() -> None:
    a = session(1)
    link = Link(a=(a, A))
    configure(a, B)
    link.run(0.1)  # 6 packets
    configure(a, B, 0.1, direction="inactive")
    link.run(0.3)
    assert len(link.lost) == 6  # nothing while on hold
    configure(a, B, 0.3, codec="PCMA", pt=8)  # unhold and switch codec in one re-INVITE
    link.run(0.4)
    pkts = [RtpPacket.parse(d[0]) for d in link.lost]
    resumed = pkts[6:]
    assert len(resumed) == 5 and resumed[0].marker and not any(p.marker for p in resumed[1:])
    assert {p.payload_type for p in resumed} == {8} and {p.ssrc for p in pkts} == {a.ssrc}
    assert [(p.sequence - pkts[0].sequence) & 0xFFFF for p in pkts] == list(range(11))
    # the hold time passed in the timestamp clock: frames 120..300 ms were not sent
    assert (resumed[0].timestamp - pkts[5].timestamp) & 0xFFFFFFFF == 160 * 11
    assert set(resumed[0].payload) == {0xD5}  # A-law silence


def test_zero_address_or_port_does_not_send() -> None:
    for remote in (("0.0.0.0", 4000), ("192.0.2.2", 0)):
        a = session(1)
        configure(a, remote)
        a.tick(0.0)
        a.tick(0.02)
        assert not a.sending and a.datagrams_to_send() == []


# ---- latching -------------------------------------------------------------------------------
def test_strict_latching_drops_other_sources() -> None:
    _a, b, link = pair()
    intruder = ("203.0.113.9", 5000)
    loud = bytes(160)  # µ-law 0x00 = full-scale negative
    b.receive_datagram(header(0, True, 1, 1, 0xBAD) + loud, intruder, 0.0)  # before latching
    link.run(0.1)  # A's silence latches B to A
    for i in range(10):
        b.receive_datagram(header(0, False, 2 + i, 160 * (2 + i), 0xBAD) + loud, intruder, 0.1)
    assert b.stats["latched"] == A and b.stats["dropped_foreign"] == 11
    assert max(int(np.abs(f).max()) for f in link.audio(b)) == 0  # only A's silence got through


def test_nat_peer_latches_after_probation_and_gets_symmetric_rtp() -> None:
    a, b = session(1), session(2)
    private = ("10.0.0.7", 7000)  # what A's SDP said: nobody sends from there
    configure(a, B)
    configure(b, private)
    link = Link(a=(a, A), b=(b, B))
    link.run(0.1)
    assert b.stats["latched"] == A
    assert b.stats["dropped_foreign"] == 2  # the probation packets (the 3rd one latches)
    to_private = [d for d in link.lost if d[1] == private]
    assert len(to_private) == 3  # B sent to the SDP address until it latched (frames 0, 20, 40 ms)
    assert a.stats["packets_received"] == 3  # then to where A really is: 60, 80, 100 ms


def test_ipv6_and_v4_mapped_sources() -> None:
    b = session(2)
    configure(b, ("2001:db8::7", 4000))
    b.receive_datagram(header(0, True, 1, 0, 9) + bytes(160), ("2001:db8:0:0::7", 4000, 0, 0), 0.0)
    assert b.stats["latched"] == ("2001:db8::7", 4000) and b.stats["packets_received"] == 1
    v4 = session(3)
    configure(v4, ("192.0.2.1", 4000))
    v4.receive_datagram(header(0, True, 1, 0, 9) + bytes(160), ("::ffff:192.0.2.1", 4000, 0, 0), 0.0)
    v4.tick(0.0)
    assert v4.stats["latched"] == ("192.0.2.1", 4000)
    assert v4.datagrams_to_send()[0][1] == ("::ffff:192.0.2.1", 4000)  # the spelling the socket uses


# ---- DTMF -----------------------------------------------------------------------------------
def test_rfc4733_send_wire_format_and_queueing() -> None:
    a = session(1)
    link = Link(a=(a, A))
    configure(a, B, dtmf=96)
    link.run(0.05)
    first = a.send_dtmf("9", 120, 0.05)
    second = a.send_dtmf("1", 60, 0.05)  # waits for the first
    link.flush()
    assert a.get_timer() == pytest.approx(0.06)  # the next frame, then the 100 ms update
    link.run(0.6)
    pkts = [RtpPacket.parse(d[0]) for d in link.lost]
    ev = [p for p in pkts if p.payload_type == 96]
    events = [TelephoneEvent.parse(p.payload) for p in ev]
    assert [(e.event, e.end, e.duration) for e in events] == [
        (9, False, 400), (9, False, 800), (9, True, 960), (9, True, 960), (9, True, 960),
        (1, False, 400), (1, True, 480), (1, True, 480), (1, True, 480)]
    times = [t for t, _, d in link.wire if RtpPacket.parse(d[0]).payload_type == 96]
    assert times == pytest.approx([0.05, 0.10, 0.15, 0.20, 0.25, 0.25, 0.30, 0.35, 0.40])
    assert [p.marker for p in ev] == [True, False, False, False, False, True, False, False, False]
    assert len({p.timestamp for p in ev[:5]}) == 1 and len({p.timestamp for p in ev[5:]}) == 1
    i0 = pkts.index(ev[0])
    assert ev[0].timestamp == (pkts[i0 - 1].timestamp + 160) & 0xFFFFFFFF
    assert [(p.sequence - pkts[0].sequence) & 0xFFFF for p in pkts] == list(range(len(pkts)))
    assert all(p.payload_type == 96 for p in pkts[i0:i0 + 9])  # no audio during the events
    assert pkts[i0 + 9].payload_type == 0 and not pkts[i0 + 9].marker
    done = [e.request for e in link.got(a) if isinstance(e, DtmfSent)]
    assert done == [first, second]
    with pytest.raises(ValueError, match="DTMF"):
        a.send_dtmf("x", 100, 0.6)


def test_rfc4733_end_to_end_once_per_press() -> None:
    a, b, link = pair()
    a.send_dtmf("5", 100, 0.0)
    a.send_dtmf("#", 60, 0.0)
    link.run(0.6)
    assert link.digits(b) == ["5", "#"]
    assert all(not e.inband for e in link.got(b) if isinstance(e, DigitReceived))


def test_inband_dtmf_when_telephone_event_not_negotiated() -> None:
    a, b, link = pair(dtmf=None)
    a.send_dtmf("7", 100, 0.0)  # the tone, in the audio
    link.run(0.2)
    a.play(np.zeros(800, np.int16))
    link.run(0.4)
    a.send_dtmf("3", 100, 0.4)
    link.run(0.7)
    assert link.digits(b) == ["7", "3"]
    assert [e.inband for e in link.got(b) if isinstance(e, DigitReceived)] == [True, True]
    assert len([e for e in link.got(a) if isinstance(e, DtmfSent)]) == 2


def test_detect_inband_batches_sessions_and_keeps_each_ones_keys() -> None:
    sessions = [session(10 + i) for i in range(12)]
    keys = "0123456789*#"
    for s in sessions:
        configure(s, A, dtmf=None)
    for n in range(6):  # 120 ms of each key, one frame per session per round, as packets arrive
        for s, key in zip(sessions, keys, strict=True):
            pcm = dtmf_tone(key, 120)[n * 160:(n + 1) * 160]
            s.receive_datagram(header(0, n == 0, n, 160 * n, 77) + g711.encode(pcm, "PCMU"), A, 0.02 * n)
            assert s.inband_pending
        detect_inband(sessions, 0.02 * n)
    got = ["".join(e.digit for e in iter(s.next_event, None) if isinstance(e, DigitReceived))
           for s in sessions]
    assert got == list(keys)


def test_leaked_tone_and_rfc4733_count_once() -> None:
    a, b, link = pair()
    a.play(dtmf_tone("6", 120))  # a phone that also leaks the tone into the audio
    link.run(0.16)
    a.send_dtmf("6", 60, 0.16)
    link.run(0.5)
    assert link.digits(b) == ["6"]


def test_inband_heard_until_the_peer_sends_rfc4733() -> None:
    """pyVoIP offers telephone-event but sends keys as tones: they must still be heard."""
    a, b, link = pair()
    a.play(dtmf_tone("4", 120))
    link.run(0.3)
    a.send_dtmf("9", 60, 0.3)  # from now on the peer is known to signal keys out of band
    link.run(0.6)
    a.play(dtmf_tone("2", 120))  # a tone now is audio, not a key press
    link.run(0.9)
    assert link.digits(b) == ["4", "9"]


def test_sipp_pcap_gives_one_digit_each() -> None:
    b = session(2)
    configure(b, ("192.0.2.9", 6000))
    now = 0.0
    for name in ("1", "pound"):
        for data in read_pcap_udp_payloads(DATA / f"dtmf_2833_{name}.pcap"):
            b.receive_datagram(data, ("192.0.2.9", 6000), now)
            now += 0.02
        b.tick(now)
    assert [e.digit for e in iter(b.next_event, None) if isinstance(e, DigitReceived)] == ["1", "#"]


# ---- receive path ---------------------------------------------------------------------------
def test_receive_reorders_and_gives_up_on_a_loss_after_60_ms() -> None:
    b = session(2)
    peer = ("192.0.2.9", 6000)
    configure(b, peer)
    values = g711.ULAW_DECODE[0x80:0x80 + 12]  # 12 distinct levels, one per frame
    order = [0, 1, 3, 2, 4, 6, 5, 7, 9, 10, 11]  # two swaps, frame 8 lost
    for n, i in enumerate(order):
        code = g711.encode(np.full(160, values[i], np.int16), "PCMU")
        b.receive_datagram(header(0, i == 0, 1000 + i, 160 * i, 42) + code, peer, 0.02 * n)
    held = [int(e.frame[0]) for e in iter(b.next_event, None) if isinstance(e, AudioReceived)]
    assert held == [int(values[i]) for i in range(8)]  # 9, 10, 11 wait for 8
    assert b._reorder.deadline() == pytest.approx(0.16 + 0.06)  # 9 arrived at 160 ms
    b.tick(0.219)
    assert b.next_event() is None
    b.tick(0.22)
    rest = [int(e.frame[0]) for e in iter(b.next_event, None) if isinstance(e, AudioReceived)]
    assert rest == [int(values[i]) for i in (9, 10, 11)]
    assert b.stats["lost"] == 1 and b.stats["late"] == 0


def test_other_ptimes_are_recut_into_20_ms_frames() -> None:
    b = session(2)
    peer = ("192.0.2.9", 6000)
    configure(b, peer, codec="PCMA", pt=8)
    pcm = ramp(240 * 4)
    for i in range(4):  # 30 ms packets
        chunk = g711.encode(pcm[240 * i:240 * (i + 1)], "PCMA")
        b.receive_datagram(header(8, i == 0, i, 240 * i, 5) + chunk, peer, 0.03 * i)
    frames = [e.frame for e in iter(b.next_event, None) if isinstance(e, AudioReceived)]
    assert [len(f) for f in frames] == [160] * 6
    assert np.array_equal(np.concatenate(frames), g711.decode(g711.encode(pcm, "PCMA"), "PCMA"))


def test_malformed_and_unnegotiated_packets_are_counted() -> None:
    b = session(2)
    peer = ("192.0.2.9", 6000)
    configure(b, peer)
    b.receive_datagram(b"\x00" * 5, peer, 0.0)
    b.receive_datagram(b"\x40" + b"\x00" * 20, peer, 0.0)  # version 1
    b.receive_datagram(header(13, False, 1, 0, 5) + b"\x40", peer, 0.0)  # comfort noise
    configure(b, peer, 0.0, direction="sendonly")
    b.receive_datagram(header(0, False, 2, 160, 5) + bytes(160), peer, 0.0)
    st = b.stats
    assert (st["malformed"], st["ignored"], st["packets_received"]) == (2, 2, 1)
    assert b.next_event() is None


# ---- RTCP -----------------------------------------------------------------------------------
def test_rtcp_reports_exchanged_with_round_trip() -> None:
    a, b = session(1, rtcp_interval=0.15), session(2, rtcp_interval=0.15)
    configure(a, B)
    configure(b, A)
    link = Link(a=(a, A), b=(b, B))
    link.run(0.6)
    reports = [(src, parse(d[0])) for _, src, d in link.wire if d[2]]
    assert {src for src, _ in reports} == {rtcp_of(A), rtcp_of(B)}
    assert all(d[1] in (rtcp_of(A), rtcp_of(B)) for _, _, d in link.wire if d[2])
    kinds = [type(p[0]).__name__ for _, p in reports]
    assert set(kinds) == {"SenderReport"}  # both are sending
    for s in (a, b):
        remote = s.stats["remote"]
        assert remote["fraction_lost"] == 0 and remote["cumulative_lost"] == 0
        assert remote["jitter_ms"] == 0
        assert 0 <= remote["rtt_ms"] < 1  # the link has no delay; NTP rounding only
    raw = next(d[0] for _, src, d in link.wire if d[2] and src == rtcp_of(A))
    assert raw[1] == SR and raw.find(a.cname.encode()) > 0


def test_receiver_report_while_on_hold() -> None:
    a = session(1, rtcp_interval=0.1)
    link = Link(a=(a, A))
    configure(a, B, direction="recvonly")
    a.receive_datagram(header(0, True, 1, 0, 5) + bytes(160), B, 0.0)
    link.run(0.1)
    assert link.lost == []  # not sending: no RTP, and no guess of where RTCP would go
    a.receive_datagram(bytes.fromhex("81c90007") + bytes(28), rtcp_of(B), 0.12, rtcp=True)  # peer's RR
    link.run(0.25)
    rtcp = [d for d in link.lost if d[2]]
    assert len(rtcp) == 1 and rtcp[0][1] == rtcp_of(B) and rtcp[0][0][1] == RR


def test_rtp_port_65535_has_no_rtcp_port_to_guess() -> None:
    a = session(1, rtcp_interval=0.05)
    configure(a, ("192.0.2.2", 65535))
    for i in range(10):
        a.tick(0.02 * i)
    out = a.datagrams_to_send()
    assert len(out) == 10 and not any(rtcp for _, _, rtcp in out)
    assert a.rtcp_destination() is None
    a.receive_datagram(bytes.fromhex("81c90007") + bytes(28), ("192.0.2.2", 4000), 0.2, rtcp=True)
    a.tick(0.26)
    assert [d[1] for d in a.datagrams_to_send() if d[2]] == [("192.0.2.2", 4000)]  # where its RTCP came from


def test_rtcp_from_another_host_is_dropped() -> None:
    a = session(1)
    configure(a, B)
    a.receive_datagram(bytes.fromhex("81c90007") + bytes(28), ("203.0.113.5", 9), 0.0, rtcp=True)
    assert a.stats["dropped_foreign"] == 1 and a.rtcp_destination() == rtcp_of(B)


def test_close_sends_rtcp_bye_once_and_stops() -> None:
    a = session(1)
    configure(a, B)
    a.tick(0.0)
    pid = a.play(ramp(8000))
    dtmf = a.send_dtmf("1", 100, 0.01)
    a.datagrams_to_send()
    a.close(0.05)
    a.close(0.06)
    out = a.datagrams_to_send()
    assert len(out) == 1 and out[0][2] and out[0][1] == rtcp_of(B)
    assert [type(p).__name__ for p in parse(out[0][0])] == ["SenderReport", "Bye"]
    events = list(iter(a.next_event, None))
    assert PlaybackFinished(playback=pid, completed=False) in events and DtmfSent(request=dtmf) in events
    a.tick(0.1)
    a.receive_datagram(header(0, True, 1, 0, 5) + bytes(160), B, 0.1)
    assert a.get_timer() is None and a.datagrams_to_send() == [] and a.next_event() is None
    assert finished_now(a, a.play(ramp(160))) == [False]


def finished_now(s: MediaSession, ident: int) -> list[bool]:
    return [e.completed for e in iter(s.next_event, None)
            if isinstance(e, PlaybackFinished) and e.playback == ident]


def test_stop_halts_without_bye() -> None:
    a = session(1)
    configure(a, B)
    a.tick(0.0)
    a.datagrams_to_send()
    a.stop()
    a.tick(0.02)
    a.feed(np.zeros(160, np.int16))
    assert a.datagrams_to_send() == [] and a.get_timer() is None
    with pytest.raises(RuntimeError, match="closed"):
        configure(a, B, 0.03)


# ---- feed, recording, configure -------------------------------------------------------------
def test_feed_live_frames_in_order_and_bounded() -> None:
    a = session(1)
    configure(a, B)
    a.tick(0.0)
    levels = g711.ULAW_DECODE[0x80:0x80 + 5]
    for v in levels:  # five at once: the queue keeps the newest FEED_MAX (3)
        a.feed(np.full(160, v, np.int16))
    assert a.live_frames == 3
    with pytest.raises(ValueError, match="160"):
        a.feed(np.zeros(100, np.int16))
    for i in range(1, 6):
        a.tick(0.02 * i)
    payloads = [RtpPacket.parse(d[0]).payload for d in a.datagrams_to_send()]
    fed = [g711.encode(np.full(160, v, np.int16), "PCMU") for v in levels]
    assert payloads[1:4] == fed[2:] and set(payloads[4]) == {0xFF}  # then silence again


def test_prompt_takes_precedence_over_fed_frames() -> None:
    a = session(1)
    configure(a, B)
    a.play(ramp(320))
    a.feed(np.full(160, 1000, np.int16))
    a.feed(np.full(160, 2000, np.int16))
    for i in range(3):
        a.tick(0.02 * i)
    payloads = [RtpPacket.parse(d[0]).payload for d in a.datagrams_to_send()]
    assert b"".join(payloads[:2]) == g711.encode(ramp(320), "PCMU")
    assert set(payloads[2]) == {0xFF}  # the fed frames were consumed in step under the prompt


class ListRecorder:
    def __init__(self, both: bool, fail_after: int | None = None) -> None:
        self.both = both
        self.caller: list[np.ndarray] = []
        self.ticks: list[np.ndarray | None] = []
        self.fail_after = fail_after

    def caller_frame(self, pcm: np.ndarray) -> None:
        self.caller.append(pcm)

    def tick(self, ours: np.ndarray | None) -> None:
        if self.fail_after is not None and len(self.ticks) >= self.fail_after:
            raise OSError(28, "No space left on device")
        self.ticks.append(ours)


def test_recording_both_directions_on_our_clock() -> None:
    a, b, link = pair()
    rec = ListRecorder(both=True)
    assert b.start_recording(rec) is None
    a.play(tone(440, 300))
    b.play(tone(1000, 300))
    link.run(0.4)
    assert b.stop_recording() is rec and b.stop_recording() is None
    assert len(rec.ticks) == 21 and len(rec.caller) == 21  # one tick per frame time, 0..400 ms
    ours = np.concatenate([t for t in rec.ticks if t is not None])
    assert np.array_equal(ours, tone(1000, 300))
    heard = g711.decode(g711.encode(tone(440, 300), "PCMU"), "PCMU")
    assert np.array_equal(np.concatenate(rec.caller)[:2400], heard)


def test_recording_failure_drops_the_recorder_not_the_call() -> None:
    _a, b, link = pair()
    rec = ListRecorder(both=False, fail_after=3)
    b.start_recording(rec)
    link.run(0.2)
    failures = [e for e in link.got(b) if isinstance(e, RecordingFailed)]
    assert len(failures) == 1 and failures[0].recorder is rec and "space" in str(failures[0].error)
    assert b.stop_recording() is None and len(link.sent_by(b)) == 11


def test_configure_validates_and_never_resolves_names(monkeypatch: pytest.MonkeyPatch) -> None:
    lookups: list[Any] = []
    for name in ("getaddrinfo", "gethostbyname", "gethostbyname_ex"):
        monkeypatch.setattr(socket, name, lambda *a, **k: lookups.append(a))
    a = session(1)
    with pytest.raises(ValueError, match="G729"):
        configure(a, B, codec="G729", pt=18)
    with pytest.raises(ValueError, match="direction"):
        configure(a, B, direction="x")
    for host in ("localhost", "example.com", "192.0.2.1\x00", "fe80::1%eth0", "127.1"):
        with pytest.raises(ValueError, match="not an IP address literal"):
            configure(a, (host, 4000))
    with pytest.raises(ValueError, match="0-65535"):
        configure(a, ("192.0.2.1", 65536))
    assert lookups == [] and a.clock is None  # nothing started by a refused configure
    configure(a, ("2001:DB8:0::1", 4000))
    assert a.remote == ("2001:db8::1", 4000)


def test_encoded_prompt_cache_is_per_codec_and_read_only_only() -> None:
    pcm = ramp(800)
    pcm.setflags(write=False)
    assert encoded_prompt(pcm, "PCMU") is encoded_prompt(pcm, "PCMU")
    assert encoded_prompt(pcm, "PCMA") == g711.encode(pcm, "PCMA")
    writable = ramp(800)
    assert encoded_prompt(writable, "PCMU") is not encoded_prompt(writable, "PCMU")


def test_codec_change_mid_prompt_reencodes_the_rest() -> None:
    a = session(1)
    configure(a, B)
    prompt = ramp(640)
    a.play(prompt)
    a.tick(0.0)
    a.tick(0.02)
    configure(a, B, 0.03, codec="PCMA", pt=8)
    a.tick(0.04)
    a.tick(0.06)
    pkts = [RtpPacket.parse(d[0]) for d in a.datagrams_to_send()]
    assert [p.payload_type for p in pkts] == [0, 0, 8, 8]
    assert b"".join(p.payload for p in pkts[2:]) == g711.encode(prompt[320:], "PCMA")


def test_the_core_imports_no_io() -> None:
    """voice/rtp stays sans-IO: importing the session pulls in no asyncio, sockets or files."""
    import subprocess
    import sys

    code = ("import sys, voice.rtp.session; "
            "print(sorted(m for m in ('asyncio', 'socket', 'soundfile', 'threading') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"
