"""voice.aio.rtp on 127.0.0.1: the asyncio adapter around the sans-IO media session, on real sockets.

The protocol itself is tested in memory (tests/test_rtp_session.py); here: the sockets, the
loop-wide pacer and in-band batch, futures, listeners, the port pool, and what a failing
transport does. Ports 30000-30999 belong to these tests. Assertions are on content and counts,
not on wall-clock precision (the pacing figures live in benchmarks/rtp_pacing.py).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from tests.peers import worker_span
from voice.aio.pacer import Pacer
from voice.aio.rtp import RtpPortPool, RtpSession
from voice.rtp import g711
from voice.rtp.packet import RtpPacket, is_rtcp
from voice.sip.sdp import SdpError, SessionDescription, negotiate

HOST = "127.0.0.1"


class Sink(asyncio.DatagramProtocol):
    """A plain UDP socket that keeps what it receives."""

    def __init__(self) -> None:
        self.packets: list[tuple[bytes, tuple[str, int]]] = []

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.packets.append((data, addr))

    def rtp(self) -> list[RtpPacket]:
        return [RtpPacket.parse(d) for d, _ in self.packets if not is_rtcp(d)]


async def sink() -> tuple[Sink, int, asyncio.DatagramTransport]:
    transport, proto = await asyncio.get_running_loop().create_datagram_endpoint(Sink, local_addr=(HOST, 0))
    return proto, transport.get_extra_info("sockname")[1], transport


@pytest.fixture(autouse=True, params=["pacer-thread", "transmitter"])
def send_mode(request: pytest.FixtureRequest) -> Iterator[str]:
    """Every test here runs with the pacer thread sending and with the RTP transmitter process
    ([rtp] send_ahead_ms = 40), whatever an earlier test in this process configured."""
    pacer = Pacer.shared()
    before = (pacer.realtime, pacer.ahead)
    Pacer.use(realtime="auto", send_ahead=0.04 if request.param == "transmitter" else 0.0)
    if pacer.transmitter is not None:  # as the service does before it takes calls
        pacer.transmitter.ready.wait(5)
    try:
        yield request.param
    finally:
        pacer.realtime, pacer.ahead = before


@pytest.fixture
async def pool():
    p = RtpPortPool(*worker_span((30000, 30999)))
    yield p
    assert p.in_use == 0, "a test left a session open"


def configure(s: RtpSession, port: int, dtmf: int | None = 101, codec: str = "PCMU", pt: int = 0) -> None:
    s.configure(remote=(HOST, port), payload_type=pt, codec=codec, dtmf_payload_type=dtmf)


async def wait_until(predicate: Any, timeout: float = 3.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


async def test_two_sessions_play_digits_and_audio_over_loopback(pool: RtpPortPool) -> None:
    a, b = await pool.open_session(HOST), await pool.open_session(HOST)
    try:
        configure(a, b.local_port, codec="PCMA", pt=8)
        configure(b, a.local_port, codec="PCMA", pt=8)
        assert (a.codec, a.dtmf_payload_type) == ("PCMA", 101)
        frames: list[np.ndarray] = []
        digits: list[str] = []
        b.set_listeners(digits.append, frames.append)
        prompt = (np.sin(np.arange(1600) * 0.05) * 8000).astype(np.int16)
        assert await a.play(prompt) is True
        await a.send_dtmf("5", 100)
        await a.send_dtmf("#", 60)
        await wait_until(lambda: len(digits) == 2)
        assert digits == ["5", "#"]
        audio = g711.encode(np.concatenate(frames), "PCMA")
        assert audio.find(g711.encode(prompt, "PCMA")) % 160 == 0 and g711.encode(prompt, "PCMA") in audio
        assert b.stats["latched"] == (HOST, a.local_port) and b.stats["dropped_foreign"] == 0
        assert b.stats["local_port"] == b.local_port and b.stats["failed"] is None
    finally:
        a.close()
        b.close()


async def test_inband_digits_through_the_loop_batch(pool: RtpPortPool) -> None:
    a, b, c = [await pool.open_session(HOST) for _ in range(3)]
    try:
        configure(a, b.local_port, dtmf=None)
        configure(b, a.local_port, dtmf=None)
        configure(c, b.local_port, dtmf=None)  # a second talker to B's port: dropped by latching
        digits: list[str] = []
        b.set_listeners(digits.append, lambda f: None)
        await asyncio.gather(a.send_dtmf("7", 100), c.send_dtmf("1", 100))
        await a.play(np.zeros(800, np.int16))
        await a.send_dtmf("3", 100)
        await wait_until(lambda: len(digits) == 2)
        await asyncio.sleep(0.1)
        assert digits == ["7", "3"] and b.stats["dropped_foreign"] > 0
    finally:
        for s in (a, b, c):
            s.close()


async def test_stop_close_and_listener_errors(pool: RtpPortPool, caplog: pytest.LogCaptureFixture) -> None:
    s, port, transport = await sink()
    a, b = await pool.open_session(HOST), await pool.open_session(HOST)
    try:
        configure(a, b.local_port)
        configure(b, a.local_port)
        calls: list[int] = []

        def bad_audio(frame: np.ndarray) -> None:
            calls.append(len(frame))
            raise RuntimeError("listener bug")

        b.set_listeners(lambda d: None, bad_audio)
        long = a.play(np.zeros(8000, np.int16))
        a.stop_playback()
        assert await long is False
        await wait_until(lambda: len(calls) >= 5)
        assert "audio listener failed" in caplog.text and b.stats["packets_received"] >= 5
        c = await pool.open_session(HOST)
        configure(c, port)
        await wait_until(lambda: len(s.rtp()) >= 2)
        pending = c.play(np.zeros(8000, np.int16))
        c.close()
        c.close()  # idempotent
        assert await pending is False and await c.play(np.zeros(160, np.int16)) is False
    finally:
        a.close()
        b.close()
        transport.close()


async def test_port_pool_exhaustion_eaddrinuse_release_and_free() -> None:
    small = RtpPortPool(30101, 30106)  # even ports 30102, 30104 (30106 has no +1 inside)
    assert small.ports == [30102, 30104] and small.free() == 2
    squatter = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    squatter.bind((HOST, 30102))
    closed: list[RtpSession] = []
    try:
        s1 = await small.open_session(HOST, on_closed=closed.append)
        assert s1.local_port == 30104 and small.free() == 1  # 30102 busy: next one
        with pytest.raises(RuntimeError, match="no free RTP port"):
            await small.open_session(HOST)
        s1.close()
        assert closed == [s1] and small.in_use == 0 and small.free() == 2
    finally:
        squatter.close()
    s2 = await small.open_session(HOST)
    assert small.free() == 1
    s2.close()


# ---- a transport that fails: stops at once, one log line, one report ------------------------
def rtp_log(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "voice.aio.rtp" and r.levelno >= logging.WARNING]


@pytest.mark.parametrize("bad", [("127.0.0.1", 65536), ("127.0.0.1\x00", 4000), ("::1", 4000)])
async def test_failing_sendto_stops_the_session_logs_once_reports_once(
        pool: RtpPortPool, caplog: pytest.LogCaptureFixture, bad: tuple[str, int]) -> None:
    """What the issue saw: an m= port 65535 (RTCP 65536: OverflowError) or a NUL in c= (a
    TypeError/ValueError from sendto) killed the transport and then logged every tick. The core
    refuses such addresses, so here the latched address is forced past it to hit the real sendto."""
    a = await pool.open_session(HOST)
    reasons: list[str] = []
    try:
        a.set_failure_listener(reasons.append)
        configure(a, 9)
        pending = a.play(np.zeros(80000, np.int16))
        await asyncio.sleep(0.05)
        sent = a.stats["packets_sent"]
        assert a.core._latch is not None
        a.core._latch.send_to = bad
        await asyncio.sleep(0.3)  # 15 frame times
        assert len(reasons) == 1 and "sendto" in reasons[0]
        assert a.failure == reasons[0] and a.stats["failed"] == reasons[0]
        assert len(rtp_log(caplog)) == 1 and str(a.local_port) in rtp_log(caplog)[0].getMessage()
        assert await pending is False  # the prompt ends: the flow does not wait on a dead leg
        # Stopped at once; with a transmitter, the error comes back after the frames made ahead.
        ahead = round(Pacer.shared().ahead / 0.02) if Pacer.shared().live_transmitter() else 0
        assert a.stats["packets_sent"] <= sent + 2 + ahead
        assert a.core.get_timer() is None and not a.closed
        late: list[str] = []
        a.set_failure_listener(late.append)  # set after the failure: told at once
        await asyncio.sleep(0)
        assert late == reasons
    finally:
        a.close()
    assert len(rtp_log(caplog)) == 1


async def test_transport_closed_under_the_session_reports_once(
        pool: RtpPortPool, caplog: pytest.LogCaptureFixture) -> None:
    a = await pool.open_session(HOST)
    reasons: list[str] = []
    try:
        a.set_failure_listener(reasons.append)
        configure(a, 9)
        await asyncio.sleep(0.05)
        a._transports[1].close()  # as asyncio does after a fatal socket error
        await asyncio.sleep(0.2)
        assert len(reasons) == 1 and "RTCP transport closed" in reasons[0]
        assert len(rtp_log(caplog)) == 1 and a.core.stopped
    finally:
        a.close()
    assert len(reasons) == 1  # our own close() is not a failure


async def test_a_bug_in_a_tick_is_logged_once_not_per_tick(
        pool: RtpPortPool, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    a = await pool.open_session(HOST)
    reasons: list[str] = []
    try:
        a.set_failure_listener(reasons.append)
        configure(a, 9)

        def broken(now: float, ahead: float = 0.0) -> None:
            raise ZeroDivisionError("bug")

        monkeypatch.setattr(a.core, "tick", broken)
        await asyncio.sleep(0.2)
        assert len(rtp_log(caplog)) == 1 and len(reasons) == 1 and "ZeroDivisionError" in reasons[0]
    finally:
        a.close()


async def test_ipv6_remote_on_an_ipv4_socket_fails_cleanly(pool: RtpPortPool) -> None:
    a = await pool.open_session(HOST)
    reasons: list[str] = []
    try:
        a.set_failure_listener(reasons.append)
        a.configure(remote=("2001:db8::5", 4000), payload_type=0, codec="PCMU", dtmf_payload_type=None)
        await asyncio.sleep(0.05)
        assert len(reasons) == 1 and "IPv6" in reasons[0] and a.stats["packets_sent"] == 0
    finally:
        a.close()


async def test_names_are_refused_before_any_lookup(pool: RtpPortPool,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 10 item 1: `c=IN IP4 localhost` resolved by every sendto. Now neither the SDP answer
    path nor the media session looks a name up."""
    lookups: list[Any] = []
    for name in ("getaddrinfo", "gethostbyname", "gethostbyname_ex"):
        monkeypatch.setattr(socket, name, lambda *args, **kw: lookups.append(args))
    offer = (b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 localhost\r\nt=0 0\r\n"
             b"m=audio 4000 RTP/AVP 0\r\n")
    with pytest.raises(SdpError, match="'localhost' is not an IP address"):
        negotiate(SessionDescription.parse(offer))
    a = await pool.open_session(HOST)
    try:
        with pytest.raises(ValueError, match="not an IP address literal"):
            a.configure(remote=("localhost", 4000), payload_type=0, codec="PCMU", dtmf_payload_type=None)
        configure(a, 9)
        await asyncio.sleep(0.1)
        assert a.stats["packets_sent"] >= 3
    finally:
        a.close()
    assert lookups == []


async def test_a_refused_configure_starts_nothing_and_a_later_one_works(pool: RtpPortPool) -> None:
    s, port, transport = await sink()
    a = await pool.open_session(HOST)
    try:
        with pytest.raises(ValueError, match="G729"):
            a.configure(remote=(HOST, port), payload_type=18, codec="G729", dtmf_payload_type=None)
        with pytest.raises(ValueError, match="direction"):
            a.configure(remote=(HOST, port), payload_type=0, codec="PCMU", dtmf_payload_type=None,
                        direction="x")
        assert a._phase is None and a.core.clock is None
        configure(a, port)
        await wait_until(lambda: len(s.rtp()) >= 3)
        assert a._phase is not None and a.stats["late_wakeups"] <= 1
    finally:
        a.close()
        transport.close()


async def test_media_keeps_its_schedule_while_the_loop_is_busy(pool: RtpPortPool) -> None:
    """The pacer thread sends on time although the event loop is stuck in Python code (an INVITE
    burst, a flow step): a loop-bound pacer would send nothing during the stall and then a burst."""
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind((HOST, 0))
    receiver.setblocking(False)
    a = await pool.open_session(HOST)
    try:
        configure(a, receiver.getsockname()[1])
        a.play(np.zeros(8000 * 5, np.int16))
        await asyncio.sleep(0.1)
        while True:  # what was sent before the stall
            try:
                receiver.recv(2048)
            except BlockingIOError:
                break
        stall_end = time.monotonic() + 0.4  # 20 frame times, the loop never yields
        spins = 0
        while time.monotonic() < stall_end:
            spins += 1
        arrived = 0
        while True:
            try:
                data = receiver.recv(2048)
            except BlockingIOError:
                break
            arrived += not is_rtcp(data)
        assert spins > 0 and arrived >= 10, f"{arrived} of 20 frames left during a 400 ms loop stall"
    finally:
        a.close()
        receiver.close()


def test_the_gil_keeping_sendto_speaks_ipv4_and_ipv6_and_refuses_names() -> None:
    from voice.aio.udpsend import DatagramSender, sockaddr

    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        rx, tx = socket.socket(family, socket.SOCK_DGRAM), socket.socket(family, socket.SOCK_DGRAM)
        try:
            rx.bind((host, 0))
            tx.bind((host, 0))
            rx.settimeout(2)
            DatagramSender(tx).sendto(b"frame", rx.getsockname())
            data, source = rx.recvfrom(64)
            assert data == b"frame" and source[1] == tx.getsockname()[1]
        finally:
            rx.close()
            tx.close()
    assert len(sockaddr(("192.0.2.1", 5004))) == 16 and len(sockaddr(("2001:db8::1", 5004))) == 28
    with pytest.raises(OSError):
        sockaddr(("pbx.example.com", 5004))  # never a name lookup on the media path
    with pytest.raises(OverflowError):
        sockaddr(("192.0.2.1", 65536))
