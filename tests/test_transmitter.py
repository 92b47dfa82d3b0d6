"""The RTP transmitter process ([rtp] send_ahead_ms): packets made ahead by the pacer thread and
sent on time by a child process that does not share this process's GIL.

Timing is measured on the receiving socket with kernel timestamps (SO_TIMESTAMPNS), so what the
test holds the GIL for cannot distort the measurement itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import itertools
import os
import signal
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.peers import worker_span
from voice.aio.pacer import Pacer
from voice.aio.ports import bind_pair
from voice.aio.rtp import RtpPortPool
from voice.aio.transmitter import Transmitter
from voice.aio.udpsend import sockaddr
from voice.rtp.packet import RtpPacket, is_rtcp
from voice.rtp.session import MediaSession

HOST = "127.0.0.1"
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
_LIBC = ctypes.PyDLL(None)  # a call through PyDLL keeps the GIL: a stall no thread can cut short


def hold_gil(seconds: float) -> None:
    _LIBC.usleep(int(seconds * 1e6))


@contextlib.contextmanager
def send_ahead(seconds: float) -> Iterator[Pacer]:
    pacer = Pacer.shared()
    before = (pacer.realtime, pacer.ahead)
    Pacer.use(realtime="auto", send_ahead=seconds)
    if pacer.transmitter is not None:  # as the service does before it takes calls
        pacer.transmitter.ready.wait(5)
    try:
        yield pacer
    finally:
        pacer.realtime, pacer.ahead = before


class Receiver:
    """A UDP socket that keeps each RTP packet with its kernel arrival time."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
        self.sock.bind((HOST, 0))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]

    def drain(self) -> list[tuple[float, RtpPacket]]:
        out = []
        while True:
            try:
                data, ancillary, _flags, _addr = self.sock.recvmsg(2048, 64)
            except BlockingIOError:
                return out
            if is_rtcp(data):
                continue
            for _level, kind, cmsg in ancillary:
                if kind == SO_TIMESTAMPNS:
                    sec, ns = struct.unpack("qq", cmsg[:16])
                    out.append((sec + ns / 1e9, RtpPacket.parse(data)))

    def close(self) -> None:
        self.sock.close()


def pacing_errors_ms(packets: list[tuple[float, RtpPacket]]) -> np.ndarray:
    """|inter-arrival - timestamp delta| per interval of the audio stream (payload type 0)."""
    audio = [(t, p.timestamp) for t, p in packets if p.payload_type == 0]
    t = np.array([a[0] for a in audio])
    ts = np.array([a[1] for a in audio], dtype=np.int64)
    return np.abs(np.diff(t) - np.diff(ts) / 8000) * 1000


async def play_through_stalls(stall: float, every: float, seconds: float = 1.6) -> np.ndarray:
    """A 1.6 s prompt to a receiver while the GIL is held for `stall` every `every` seconds."""
    pool = RtpPortPool(*worker_span((31000, 31199)))
    rx = Receiver()
    session = await pool.open_session(HOST)
    try:
        session.configure(remote=(HOST, rx.port), payload_type=0, codec="PCMU", dtmf_payload_type=101)
        done = session.play(np.zeros(int(8000 * seconds), np.int16))
        await asyncio.sleep(0.1)  # the first frames, undisturbed
        end = time.monotonic() + seconds - 0.3
        while time.monotonic() < end:
            hold_gil(stall)
            await asyncio.sleep(every - stall)
        assert await done is True
    finally:
        session.close()
    await asyncio.sleep(0.05)
    packets = rx.drain()
    rx.close()
    assert len(packets) >= seconds * 50 - 5, f"{len(packets)} packets for a {seconds} s prompt"
    return pacing_errors_ms(packets[1:])


async def test_a_stall_shorter_than_send_ahead_does_not_show_on_the_wire() -> None:
    """The GIL held for 30 ms every 100 ms: the pacer thread cannot run, but the frames it made
    40 ms ahead leave on time from the transmitter."""
    with send_ahead(0.06) as pacer:
        errors = await play_through_stalls(0.03, 0.1)
        assert pacer.live_transmitter() is not None
    assert np.percentile(errors, 95) < 3.0 and errors.max() < 15.0, (
        f"pacing error p95 {np.percentile(errors, 95):.1f} ms, max {errors.max():.1f} ms")


async def test_without_send_ahead_the_same_stalls_delay_packets() -> None:
    """The control for the test above: sending from the pacer thread, a 30 ms GIL stall holds
    the packets due in it back, so the receiver sees the gap."""
    with send_ahead(0.0) as pacer:
        assert pacer.live_transmitter() is None
        errors = await play_through_stalls(0.03, 0.1)
    assert errors.max() > 15.0, f"max pacing error {errors.max():.1f} ms with the pacer thread sending"


async def test_a_transmitter_that_dies_leaves_the_pacer_sending(caplog: pytest.LogCaptureFixture) -> None:
    pool = RtpPortPool(*worker_span((31200, 31399)))
    rx = Receiver()
    with send_ahead(0.04) as pacer:
        old = pacer.transmitter
        pacer.transmitter = None  # a transmitter of this test's own, killed below
        try:
            pacer._start_transmitter()
            assert pacer.transmitter is not None and pacer.transmitter.ready.wait(5)
            session = await pool.open_session(HOST)
            try:
                session.configure(remote=(HOST, rx.port), payload_type=0, codec="PCMU", dtmf_payload_type=101)
                done = session.play(np.zeros(8000, np.int16))
                tx = pacer.transmitter
                assert tx is not None and session._tx_id is not None
                await asyncio.sleep(0.3)
                os.kill(tx.process.pid, signal.SIGKILL)
                assert await done is True  # the prompt plays to its end
                await asyncio.sleep(0.1)
                assert not tx.alive and pacer.live_transmitter() is None
            finally:
                session.close()
            tx.stop()
        finally:
            pacer.transmitter = old
    await asyncio.sleep(0.05)
    packets = rx.drain()
    rx.close()
    seq = [p.sequence for _t, p in packets if p.payload_type == 0]
    assert len(seq) >= 45, f"{len(seq)} of 50 frames arrived"
    gaps = [(b - a) & 0xFFFF for a, b in itertools.pairwise(seq)]
    assert max(gaps) <= 4, f"lost {max(gaps) - 1} frames in a row: more than the dead child held"
    assert any("RTP transmitter process exited" in r.getMessage() for r in caplog.records)


class FakeSession:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.failures: list[str] = []
        self._send_errors = 0

    def _fail(self, reason: str) -> None:
        self.failures.append(reason)


async def test_send_errors_come_back_transient_ones_counted_and_close_frees_the_port() -> None:
    tx = Transmitter(realtime="no")
    rx = Receiver()
    port = worker_span((31400, 31599))[0]
    socks = bind_pair(HOST, port)
    try:
        session: Any = FakeSession(asyncio.get_running_loop())
        assert tx.open(session, socks) is None or tx.ready.is_set()  # before it runs: sends itself
        assert tx.ready.wait(5)
        ident = tx.open(session, socks)
        assert ident is not None
        due = time.monotonic() + 0.02
        to = sockaddr((HOST, rx.port))
        big = [(ident, False, to, bytes(12) + bytes([n % 256]) * 160) for n in range(600)]
        tx.submit(due, big)  # about 106 kB: split into several messages, sent in order
        # Broadcast without SO_BROADCAST: EACCES (or no route), the network's state: counted.
        tx.submit(due + 0.01, [(ident, False, sockaddr(("255.255.255.255", 9)), bytes(172))] * 3)
        await asyncio.sleep(0.3)
        got = []
        with contextlib.suppress(BlockingIOError):
            while True:
                got.append(rx.sock.recv(2048))
        assert [g[12] for g in got] == [n % 256 for n in range(600)]
        assert session._send_errors == 3 and session.failures == []
        # An IPv6 address on an IPv4 socket fails the session, once; nothing more is sent.
        tx.submit(time.monotonic(), [(ident, False, sockaddr(("::1", rx.port)), bytes(172))] * 2)
        await asyncio.sleep(0.3)
        assert len(session.failures) == 1 and "sendto failed" in session.failures[0]
        for s in socks:
            s.close()
        tx.close(ident, time.monotonic())
        await asyncio.sleep(0.1)
        bind_pair(HOST, port)[0].close()  # the child no longer holds the port
    finally:
        for s in socks:
            s.close()
        rx.close()
        tx.stop()
    assert tx.process.returncode == 0  # it exits when our end closes


def test_a_stuck_child_loses_packets_counted_and_exported(monkeypatch: pytest.MonkeyPatch) -> None:
    # The child stopped (SIGSTOP: as one starved of CPU): its queue fills, submit() never waits,
    # and what does not fit is counted where /metrics reads it (voice_rtp_packets_dropped_total).
    from cti import metrics
    from voice.aio.pacer import MediaTotals

    tx = Transmitter(realtime="no")
    try:
        assert tx.ready.wait(5)
        monkeypatch.setattr(Pacer.shared(), "transmitter", tx)
        os.kill(tx.process.pid, signal.SIGSTOP)
        try:
            to = sockaddr((HOST, 9))
            started = time.monotonic()
            for _ in range(2000):  # 2,000 x 50 packets x ~190 bytes: more than the (doubled) 4 MiB buffer
                tx.submit(time.monotonic() + 10, [(1, False, to, bytes(172))] * 50)
            assert time.monotonic() - started < 10.0  # never blocked on the full socket (~0.2 s here)
            assert tx.dropped > 0
            assert MediaTotals.snapshot()["dropped"] == tx.dropped
            monkeypatch.setattr(metrics, "_rtp_provider", MediaTotals.snapshot)  # as the service sets it
            text = metrics.render().decode()
            assert f"voice_rtp_packets_dropped_total {float(tx.dropped)}" in text
        finally:
            os.kill(tx.process.pid, signal.SIGCONT)
    finally:
        tx.stop()


def test_ticking_ahead_makes_the_frames_and_report_due_by_then() -> None:
    """The sans-IO side: tick(now, ahead) sends what is due at now + ahead, and an RTCP sender
    report carries the time it will leave, not the time it was made."""
    core = MediaSession(rtcp_interval=0.5)
    core.configure(remote=(HOST, 4000), payload_type=0, codec="PCMU", dtmf_payload_type=None, now=100.0)
    core.play(np.zeros(1600, np.int16))
    core.tick(99.96, 0.04)  # frame 0 is due at 100.0
    assert len(core.datagrams_to_send()) == 1
    core.tick(99.97, 0.04)  # frame 1 is due at 100.02: not yet
    assert core.datagrams_to_send() == []
    core.tick(99.98, 0.04)
    assert len(core.datagrams_to_send()) == 1
    core.tick(100.46, 0.04)  # at 100.5: frames 2-25 (3 sent, the rest skipped) and the report
    out = core.datagrams_to_send()
    assert [rtcp for _d, _a, rtcp in out] == [False] * 3 + [True]
    assert core.counters["skipped_frames"] == 21


def test_the_transmitter_exits_when_its_parent_is_killed(tmp_path: Any) -> None:
    """kill -9 of the service leaves no transmitter behind holding its RTP ports."""
    import subprocess
    import sys

    code = (
        "import sys, time\n"
        f"sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})\n"
        "from voice.aio.transmitter import Transmitter\n"
        "tx = Transmitter(realtime='no')\n"
        "assert tx.ready.wait(10)\n"
        "print(tx.process.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        os.kill(child, 0)  # running
        parent.kill()
        parent.wait(5)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                os.kill(child, 0)
            except ProcessLookupError:
                break
            # not our child: it is reparented to init, which reaps it; a zombie counts as gone
            with contextlib.suppress(OSError):
                if Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                    break
            time.sleep(0.05)
        else:
            os.kill(child, signal.SIGKILL)
            raise AssertionError("the transmitter outlived its parent by 5 s")
    finally:
        if parent.poll() is None:
            parent.kill()


def test_realtime_loop_thread_resets_on_fork_and_needs_two_cpus() -> None:
    """[rtp] realtime_loop, in a process of its own: the calling thread goes SCHED_FIFO 1; a
    thread and a process it starts afterwards run at normal priority; on one CPU it refuses."""
    import subprocess
    import sys

    code = (
        "import os, subprocess, sys, threading\n"
        f"sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})\n"
        "from voice.aio.pacer import realtime_loop_thread\n"
        "cpus = os.sched_getaffinity(0)\n"
        "os.sched_setaffinity(0, {min(cpus)})\n"
        "print('one-cpu', realtime_loop_thread(), os.sched_getscheduler(0))\n"
        "os.sched_setaffinity(0, cpus)\n"
        "ok = realtime_loop_thread()\n"
        "print('loop', ok, os.sched_getscheduler(0) & ~os.SCHED_RESET_ON_FORK)\n"
        "seen = []\n"
        "t = threading.Thread(target=lambda: seen.append(os.sched_getscheduler(0))); t.start(); t.join()\n"
        "print('thread', seen[0])\n"
        "out = subprocess.run([sys.executable, '-c', 'import os; print(os.sched_getscheduler(0))'],\n"
        "                     capture_output=True, text=True).stdout.strip()\n"
        "print('process', out)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    lines = dict(line.split(" ", 1) for line in run.stdout.splitlines())
    assert lines["one-cpu"] == f"False {os.SCHED_OTHER}", run.stdout + run.stderr
    took, policy = lines["loop"].split()
    if took == "False":  # one CPU, or no root and no CAP_SYS_NICE: refused, the thread stays normal
        assert int(policy) == os.SCHED_OTHER
        return
    assert int(policy) == os.SCHED_FIFO
    assert lines["thread"] == str(os.SCHED_OTHER) and lines["process"] == str(os.SCHED_OTHER)
