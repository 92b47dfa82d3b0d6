"""voice.aio.rtp on 127.0.0.1: sessions talking to each other and to plain sockets.

Ports 30000-30999 belong to these tests. Assertions are on sequence numbers,
timestamps, markers and content, not on wall-clock precision (a busy CI core
can wake timers late; the pacing figures live in benchmarks/rtp_pacing.py).
"""

from __future__ import annotations

import asyncio
import itertools
import socket
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.test_dtmf import DATA, read_pcap_udp_payloads
from voice.aio.rtp import RtpPortPool, RtpSession, encoded_prompt
from voice.audio import dtmf_tone, tone
from voice.rtp import g711
from voice.rtp.dtmf import TelephoneEvent
from voice.rtp.packet import RtpPacket, header, is_rtcp

HOST = "127.0.0.1"


class Sink(asyncio.DatagramProtocol):
    """A plain UDP socket that keeps what it receives."""

    def __init__(self) -> None:
        self.packets: list[tuple[float, bytes, tuple[str, int]]] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data, addr) -> None:
        self.packets.append((asyncio.get_running_loop().time(), data, addr))

    def rtp(self) -> list[RtpPacket]:
        return [RtpPacket.parse(d) for _, d, _ in self.packets if not is_rtcp(d)]


async def sink(port: int = 0) -> tuple[Sink, int]:
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(Sink, local_addr=(HOST, port))
    return proto, transport.get_extra_info("sockname")[1]


@pytest.fixture
async def pool():
    p = RtpPortPool(30000, 30999)
    sessions: list[RtpSession] = []
    orig = p.open_session

    async def open_session(host=HOST, **kw):
        s = await orig(host, **kw)
        sessions.append(s)
        return s

    p.open_session = open_session  # type: ignore[method-assign]
    yield p
    for s in sessions:
        s.close()
    assert p.in_use == 0


async def pair(pool, *, codec="PCMU", pt=0, dtmf=101):
    a, b = await pool.open_session(HOST), await pool.open_session(HOST)
    a.configure(remote=(HOST, b.local_port), payload_type=pt, codec=codec, dtmf_payload_type=dtmf)
    b.configure(remote=(HOST, a.local_port), payload_type=pt, codec=codec, dtmf_payload_type=dtmf)
    return a, b


def ramp(n: int) -> np.ndarray:
    """A prompt whose every frame is distinguishable."""
    return (np.sin(np.arange(n) * 0.05) * 8000 + np.arange(n) % 97).astype(np.int16)


async def test_stream_sequence_timestamps_marker_and_content(pool):
    s, port = await sink()
    a = await pool.open_session(HOST)
    a.configure(remote=(HOST, port), payload_type=0, codec="PCMU", dtmf_payload_type=101)
    await asyncio.sleep(0.1)
    prompt = ramp(8000 // 5 + 37)  # 200 ms + a partial frame
    assert await a.play(prompt) is True
    await asyncio.sleep(0.1)
    pkts = s.rtp()
    assert len(pkts) >= 15
    assert len({p.ssrc for p in pkts}) == 1 and pkts[0].ssrc == a.stats["ssrc"]
    assert [(p.sequence - pkts[0].sequence) & 0xFFFF for p in pkts] == list(range(len(pkts)))
    ts = [(p.timestamp - pkts[0].timestamp) & 0xFFFFFFFF for p in pkts]
    assert ts == [160 * i for i in range(len(pkts))]
    assert [p.marker for p in pkts] == [True] + [False] * (len(pkts) - 1)
    assert all(len(p.payload) == 160 and p.payload_type == 0 for p in pkts)
    # the prompt is in the stream, framed, with silence before and after and padding at the end
    stream = b"".join(p.payload for p in pkts)
    encoded = g711.encode(prompt, "PCMU")
    start = stream.find(encoded)
    assert start > 0 and start % 160 == 0
    assert set(stream[:start]) == {0xFF}
    assert set(stream[start + len(encoded):]) == {0xFF}
    assert a.stats["packets_sent"] >= len(pkts)
    # loose pacing check that holds on a busy machine: the absolute schedule never sends ahead of
    # time (at most the 3-frame catch-up), and a stall only costs the frames beyond that catch-up
    span = s.packets[-1][0] - s.packets[0][0]
    assert 0.7 * span / 0.02 - 3 <= len(pkts) - 1 <= span / 0.02 + 4


async def test_two_sessions_exchange_audio(pool):
    a, b = await pair(pool, codec="PCMA", pt=8)
    got: list[np.ndarray] = []
    b.set_listeners(lambda d: None, got.append)
    prompt = ramp(1600)
    assert await a.play(prompt)
    await asyncio.sleep(0.1)
    assert all(f.dtype == np.int16 and len(f) == 160 for f in got)
    audio = np.concatenate(got)
    expected = g711.decode(g711.encode(prompt, "PCMA"), "PCMA")
    idx = g711.encode(audio, "PCMA").find(g711.encode(prompt, "PCMA"))
    assert idx >= 0 and idx % 160 == 0
    assert np.array_equal(audio[idx:idx + 1600], expected)
    st = b.stats
    assert st["packets_received"] >= 10 and st["lost"] == 0 and st["dropped_foreign"] == 0
    assert st["latched"] == (HOST, a.local_port)


async def test_new_play_replaces_old_and_stop_resolves_false(pool):
    a, _b = await pair(pool)
    first = a.play(ramp(8000))
    second = a.play(ramp(320))
    assert await first is False
    assert await second is True
    third = a.play(ramp(8000))
    a.stop_playback()
    assert await third is False
    assert await a.play(np.zeros(0, np.int16)) is True


async def test_hold_unhold_and_codec_change_keep_one_stream(pool):
    s, port = await sink()
    a = await pool.open_session(HOST)
    a.configure(remote=(HOST, port), payload_type=0, codec="PCMU", dtmf_payload_type=101)
    await asyncio.sleep(0.1)
    a.configure(remote=(HOST, port), payload_type=0, codec="PCMU", dtmf_payload_type=101,
                direction="inactive")
    n_before_hold = len(s.packets)
    await asyncio.sleep(0.1)
    assert len(s.packets) - n_before_hold <= 1  # at most one in flight
    held = len(s.packets)
    # unhold and switch codec in one re-INVITE
    a.configure(remote=(HOST, port), payload_type=8, codec="PCMA", dtmf_payload_type=101)
    await asyncio.sleep(0.1)
    pkts = s.rtp()
    resumed = pkts[held:]
    assert resumed and resumed[0].marker and resumed[0].payload_type == 8
    assert not any(p.marker for p in resumed[1:])
    assert {p.ssrc for p in pkts} == {pkts[0].ssrc}  # one stream, same socket, same SSRC
    assert [(p.sequence - pkts[0].sequence) & 0xFFFF for p in pkts] == list(range(len(pkts)))
    gap = (resumed[0].timestamp - pkts[held - 1].timestamp) & 0xFFFFFFFF
    assert gap % 160 == 0 and gap >= 160 * 4  # the hold time passed in the timestamp clock
    for p, q in itertools.pairwise(resumed):
        assert (q.timestamp - p.timestamp) & 0xFFFFFFFF == 160
    assert {d[2][1] for d in s.packets} == {a.local_port}  # always from our one RTP port
    # no second sender loop: roughly one packet per 20 ms, never two per tick
    span = s.packets[-1][0] - s.packets[held][0]
    assert len(resumed) <= span / 0.02 + 3


async def test_strict_latching_drops_other_sources(pool):
    a, b = await pair(pool)
    got: list[np.ndarray] = []
    b.set_listeners(lambda d: None, got.append)
    intruder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    intruder.bind((HOST, 0))
    try:
        loud = bytes(160)  # µ-law 0x00 = full-scale negative
        intruder.sendto(header(0, True, 1, 1, 0xBAD) + loud, (HOST, b.local_port))  # before latching
        await asyncio.sleep(0.1)  # A's silence latches B to A
        for i in range(10):
            intruder.sendto(header(0, False, 2 + i, 160 * (2 + i), 0xBAD) + loud, (HOST, b.local_port))
        await asyncio.sleep(0.1)
    finally:
        intruder.close()
    assert b.stats["latched"] == (HOST, a.local_port)
    assert b.stats["dropped_foreign"] == 11
    assert got and max(int(np.abs(f).max()) for f in got) == 0  # only A's silence got through


async def test_nat_peer_latches_after_probation_and_gets_symmetric_rtp(pool):
    a, b = await pool.open_session(HOST), await pool.open_session(HOST)
    dead, dead_port = await sink()  # what B's "SDP" says: a private address nobody sends from
    b.configure(remote=(HOST, dead_port), payload_type=0, codec="PCMU", dtmf_payload_type=101)
    a_sink_before = len(dead.packets)
    a_got: list[np.ndarray] = []
    a.set_listeners(lambda d: None, a_got.append)
    a.configure(remote=(HOST, b.local_port), payload_type=0, codec="PCMU", dtmf_payload_type=101)
    await asyncio.sleep(0.25)
    assert b.stats["latched"] == (HOST, a.local_port)
    assert b.stats["dropped_foreign"] == 2  # the probation packets (3rd one latches)
    assert a.stats["packets_received"] > 3  # B now answers to where A really is
    assert len(dead.packets) >= a_sink_before


async def test_rfc4733_send_and_receive_end_to_end(pool):
    s, port = await sink()
    a, b = await pair(pool)
    digits: list[str] = []
    b.set_listeners(digits.append, lambda f: None)
    await a.send_dtmf("5", 100)
    await a.send_dtmf("#", 60)
    await asyncio.sleep(0.05)
    assert digits == ["5", "#"]
    # wire check against a plain socket
    c = await pool.open_session(HOST)
    c.configure(remote=(HOST, port), payload_type=0, codec="PCMU", dtmf_payload_type=96)
    await asyncio.sleep(0.05)
    await c.send_dtmf("9", 120)
    await asyncio.sleep(0.05)
    pkts = s.rtp()
    ev = [p for p in pkts if p.payload_type == 96]
    events = [TelephoneEvent.parse(p.payload) for p in ev]
    assert [e.end for e in events] == [False, False, True, True, True]
    assert [e.duration for e in events] == [400, 800, 960, 960, 960]
    assert ev[0].marker and not any(p.marker for p in ev[1:])
    assert len({p.timestamp for p in ev}) == 1
    i0 = pkts.index(ev[0])
    assert [(p.sequence - pkts[0].sequence) & 0xFFFF for p in pkts] == list(range(len(pkts)))
    assert all(p.payload_type == 96 for p in pkts[i0:i0 + 5])  # no audio interleaved during the event
    assert ev[0].timestamp == (pkts[i0 - 1].timestamp + 160) & 0xFFFFFFFF


async def test_inband_dtmf_when_telephone_event_not_negotiated(pool):
    a, b = await pair(pool, dtmf=None)
    digits: list[str] = []
    b.set_listeners(digits.append, lambda f: None)
    await a.send_dtmf("7", 100)
    await a.play(np.zeros(800, np.int16))
    await a.send_dtmf("3", 100)
    await asyncio.sleep(0.1)
    assert digits == ["7", "3"]


async def test_receive_reorders_and_counts_loss(pool):
    b = await pool.open_session(HOST)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.bind((HOST, 0))
    b.configure(remote=sender.getsockname(), payload_type=0, codec="PCMU", dtmf_payload_type=101)
    got: list[int] = []
    b.set_listeners(lambda d: None, lambda f: got.append(int(f[0])))
    values = g711.ULAW_DECODE[0x80:0x80 + 12]  # 12 distinct positive levels, one per frame
    order = [0, 1, 3, 2, 4, 6, 5, 7, 9, 10, 11]  # two swaps, frame 8 lost
    try:
        for i in order:
            code = g711.encode(np.full(160, values[i], np.int16), "PCMU")
            sender.sendto(header(0, i == 0, 1000 + i, 160 * i, 42) + code, (HOST, b.local_port))
        await asyncio.sleep(0.2)
    finally:
        sender.close()
    assert got == [int(values[i]) for i in range(12) if i != 8]
    assert b.stats["lost"] == 1 and b.stats["late"] == 0


async def test_rtcp_reports_exchanged(pool):
    a, b = await pool.open_session(HOST), await pool.open_session(HOST)
    a.rtcp_interval = b.rtcp_interval = 0.15
    a.configure(remote=(HOST, b.local_port), payload_type=0, codec="PCMU", dtmf_payload_type=101)
    b.configure(remote=(HOST, a.local_port), payload_type=0, codec="PCMU", dtmf_payload_type=101)
    await asyncio.sleep(0.6)
    for s in (a, b):
        remote = s.stats["remote"]
        assert remote["fraction_lost"] == 0 and remote["cumulative_lost"] == 0
        assert remote["jitter_ms"] >= 0
        assert 0 <= remote["rtt_ms"] < 1000


async def test_recording_both_directions(pool, tmp_path: Path):
    a, b = await pair(pool)
    path = tmp_path / "rec" / "call.wav"
    b.start_recording(path, both_directions=True)
    await asyncio.gather(a.play(tone(440, 300)), b.play(tone(1000, 300)))
    await asyncio.sleep(0.1)
    assert b.stop_recording() == path
    data, rate = sf.read(str(path), dtype="int16")
    assert rate == 8000 and data.ndim == 2 and data.shape[1] == 2
    assert len(data) >= 0.3 * 8000

    def peak_hz(x: np.ndarray) -> float:
        spec = np.abs(np.fft.rfft(x.astype(float)))
        return float(np.argmax(spec) * 8000 / len(x))

    assert abs(peak_hz(data[:, 0]) - 440) < 20  # left: the caller (A)
    assert abs(peak_hz(data[:, 1]) - 1000) < 20  # right: us (B)
    assert b.stop_recording() is None


async def test_port_pool_exhaustion_eaddrinuse_and_release(pool):
    small = RtpPortPool(30101, 30106)  # even ports 30102, 30104 (30106 has no +1 inside)
    assert small.ports == [30102, 30104]
    squatter = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    squatter.bind((HOST, 30102))
    closed: list[RtpSession] = []
    try:
        s1 = await small.open_session(HOST, on_closed=closed.append)
        assert s1.local_port == 30104  # 30102 busy: next one
        with pytest.raises(RuntimeError, match="no free RTP port"):
            await small.open_session(HOST)
        assert small.in_use == 1
        pending = s1.play(ramp(8000))
        s1.close()
        assert await pending is False
        assert closed == [s1] and small.in_use == 0
        s1.close()  # idempotent
    finally:
        squatter.close()
    s2 = await small.open_session(HOST)
    s2.close()


def test_encoded_prompt_cache_is_per_codec_and_read_only_only():
    pcm = ramp(800)
    pcm.setflags(write=False)
    assert encoded_prompt(pcm, "PCMU") is encoded_prompt(pcm, "PCMU")
    assert encoded_prompt(pcm, "PCMA") == g711.encode(pcm, "PCMA")
    writable = ramp(800)
    assert encoded_prompt(writable, "PCMU") is not encoded_prompt(writable, "PCMU")


async def test_configure_validates(pool):
    a = await pool.open_session(HOST)
    with pytest.raises(ValueError, match="G729"):
        a.configure(remote=(HOST, 9), payload_type=18, codec="G729", dtmf_payload_type=None)
    with pytest.raises(ValueError, match="direction"):
        a.configure(remote=(HOST, 9), payload_type=0, codec="PCMU", dtmf_payload_type=None, direction="x")


async def test_listener_errors_do_not_stop_media(pool, caplog):
    a, b = await pair(pool)
    calls: list[int] = []
    digits: list[str] = []

    def bad_audio(frame: np.ndarray) -> None:
        calls.append(len(frame))
        raise RuntimeError("listener bug")

    def bad_digit(d: str) -> None:
        digits.append(d)
        raise RuntimeError("listener bug")

    b.set_listeners(bad_digit, bad_audio)
    await asyncio.sleep(0.1)
    await a.send_dtmf("4", 60)
    await asyncio.sleep(0.1)
    assert len(calls) >= 5 and digits == ["4"]
    assert b.stats["packets_received"] >= 5
    assert "listener failed" in caplog.text


async def test_sipp_pcap_replayed_over_udp_gives_one_digit(pool):
    b = await pool.open_session(HOST)
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind((HOST, 0))
    b.configure(remote=peer.getsockname(), payload_type=0, codec="PCMU", dtmf_payload_type=101)
    digits: list[str] = []
    b.set_listeners(digits.append, lambda f: None)
    try:
        for name in ("1", "pound"):
            for data in read_pcap_udp_payloads(DATA / f"dtmf_2833_{name}.pcap"):
                peer.sendto(data, (HOST, b.local_port))
            await asyncio.sleep(0.1)
    finally:
        peer.close()
    assert digits == ["1", "#"]


async def test_leaked_tone_and_rfc4733_count_once(pool):
    a, b = await pair(pool, dtmf=101)
    digits: list[str] = []
    b.set_listeners(digits.append, lambda f: None)
    await a.play(dtmf_tone("6", 120))  # a phone that also leaks the tone into the audio
    await a.send_dtmf("6", 60)
    await asyncio.sleep(0.1)
    assert digits == ["6"]  # once, not twice


async def test_inband_heard_until_the_peer_sends_rfc4733(pool):
    """pyVoIP offers telephone-event but sends keys as tones: they must still be heard."""
    a, b = await pair(pool, dtmf=101)
    digits: list[str] = []
    b.set_listeners(digits.append, lambda f: None)
    await a.play(dtmf_tone("4", 120))
    await a.play(np.zeros(400, np.int16))
    await a.send_dtmf("9", 60)  # from now on the peer is known to signal keys out of band
    await asyncio.sleep(0.1)
    await a.play(dtmf_tone("2", 120))  # a tone now is audio, not a key press
    await asyncio.sleep(0.1)
    assert digits == ["4", "9"]


async def test_feed_live_frames_in_order_and_bounded(pool):
    s, port = await sink()
    a = await pool.open_session(HOST)
    a.configure(remote=(HOST, port), payload_type=0, codec="PCMU", dtmf_payload_type=101)
    levels = g711.ULAW_DECODE[0x80:0x80 + 5]
    for v in levels:  # five at once: the queue keeps the newest FEED_MAX (3)
        a.feed(np.full(160, v, np.int16))
    with pytest.raises(ValueError, match="160"):
        a.feed(np.zeros(100, np.int16))
    await asyncio.sleep(0.2)
    payloads = [p.payload for p in s.rtp()]
    fed = [g711.encode(np.full(160, v, np.int16), "PCMU") for v in levels]
    assert fed[0] not in payloads and fed[1] not in payloads
    i = payloads.index(fed[2])
    assert payloads[i:i + 3] == fed[2:] and set(payloads[i + 3]) == {0xFF}  # then silence again
