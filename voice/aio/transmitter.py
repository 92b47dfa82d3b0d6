"""The RTP transmitter: a child process that sends each packet at its due time.

Why a process: the pacer thread shares the GIL with the event loop. When the loop is busy (an
INVITE burst, flow steps, speech hand-off) or the kernel has parked the thread holding the GIL
behind other processes, the pacer waits for it, and at 500 calls on one process that put the
send-pacing p99 at 20-70 ms. Here the pacer ticks each session `ahead` seconds before its frame
is due and hands the packets, stamped with that due time, to this child over a SOCK_SEQPACKET
socket pair. The child is one small thread with its own interpreter (and SCHED_FIFO where
allowed): it sleeps to each due time and sends from a duplicate of the session's own sockets,
passed with SCM_RIGHTS, so packets leave from the ports in our SDP. A stall of the parent shorter
than `ahead` no longer shows on the wire; the price is `ahead` more delay on bridged audio.

Messages, parent to child (little-endian):
    O id                  + SCM_RIGHTS [rtp fd, rtcp fd]: a session's sockets
    B due n (id rtcp salen len sockaddr data)*: packets due at `due` (CLOCK_MONOTONIC seconds)
    C due id              : once what is due before `due` has left, close that session's sockets
child to parent:
    R                     : the child runs (sent once, first)
    E id errno            : a send failed in a way that fails the session; nothing more is sent
    T id count            : packets lost to transient errors (EAGAIN, ICMP) since the last report
    L (lateness packets)* : how late each batch left, for the send-lateness histogram

The child exits when the parent's end closes (the parent exited or was killed). If the child
dies, the parent logs it and its pacer goes back to sending itself.
"""

from __future__ import annotations

import array
import contextlib
import errno
import heapq
import logging
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from voice.aio.rtp import RtpSession

log = logging.getLogger(__name__)

_ID = struct.Struct("<I")
_BATCH = struct.Struct("<dH")  # due, count (after the b"B")
_ITEM = struct.Struct("<IBBH")  # id, rtcp, sockaddr length, data length
_CLOSE = struct.Struct("<dI")
_ERROR = struct.Struct("<Ii")
_LATE = struct.Struct("<fH")
BUFFER = 4 << 20  # socket pair send buffer: about 0.8 s of packets at 500 calls
MAX_MESSAGE = 60_000  # a batch is split above this (a SEQPACKET message must fit the buffer)
STARTUP_SECONDS = 5.0  # how long the service waits at most for the child to run
REPORT_SECONDS = 0.1  # how often the child reports lateness and transient losses
EARLY = 0.0002  # s: a batch this close to due is sent rather than slept for
# SCHED_FIFO 1-99: one above the pacer threads (voice.aio.pacer, 10), so a pacer's burst of ticks
# (work that is ahead of time) never holds back a send that is due now on the same core.
REALTIME_PRIORITY = 11
_FDS_SPACE = socket.CMSG_SPACE(2 * array.array("i").itemsize)


Item = tuple[int, bool, bytes, bytes]  # session id, on the RTCP socket, sockaddr, datagram


class Transmitter:
    """The parent's side: starts the child, hands it sockets and packets, reads its reports."""

    def __init__(self, *, realtime: str = "no",
                 observer: Callable[[float, int], None] | None = None) -> None:
        from voice.aio.udpsend import _SEND

        if _SEND is None:
            raise OSError("no libc sendto for the transmitter")
        self._sock, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        for opt in (getattr(socket, "SO_SNDBUFFORCE", None), socket.SO_SNDBUF):
            if opt is not None:
                with contextlib.suppress(OSError):
                    self._sock.setsockopt(socket.SOL_SOCKET, opt, BUFFER)
                    break
        root = str(Path(__file__).resolve().parents[2])
        path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
        env = dict(os.environ, PYTHONPATH=path)
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "voice.aio.transmitter", str(child.fileno()), realtime],
                pass_fds=(child.fileno(),), stdin=subprocess.DEVNULL, env=env)
        finally:
            child.close()
        self.alive = True
        self._stopping = False
        self.ready = threading.Event()  # the child said it runs
        self.dropped = 0  # packets not handed over (the child's buffer was full)
        self.observer = observer  # (seconds late, packets) per batch, from the reader thread
        self._lock = threading.Lock()
        self._next_id = 0
        self._sessions: weakref.WeakValueDictionary[int, RtpSession] = weakref.WeakValueDictionary()
        self._reader = threading.Thread(target=self._read, name="rtp-transmitter-reports", daemon=True)
        self._reader.start()

    def open(self, session: RtpSession, socks: list[socket.socket]) -> int | None:
        """Hand `session`'s RTP and RTCP sockets to the child; its id, or None if that failed or
        the child does not run yet (the session then sends itself). Never waits: it runs on the
        loop (the service waits for `ready` off the loop before it takes calls)."""
        if not self.ready.is_set() or not self.alive:
            return None
        with self._lock:
            self._next_id += 1
            ident = self._next_id
        try:
            socket.send_fds(self._sock, [b"O" + _ID.pack(ident)], [s.fileno() for s in socks],
                            socket.MSG_DONTWAIT)
        except OSError as exc:
            log.warning("RTP transmitter: cannot hand over a session's sockets (%s); it sends itself", exc)
            return None
        self._sessions[ident] = session
        return ident

    def close(self, ident: int, due: float) -> None:
        """The child closes its copies of the session's sockets once what is due before `due`
        has left (a call's last frames and its RTCP BYE still go out)."""
        self._sessions.pop(ident, None)
        self._put(b"C" + _CLOSE.pack(due, ident), 0)

    def submit(self, due: float, items: list[Item]) -> None:
        """Packets to send at `due` (monotonic seconds), in this order."""
        parts: list[bytes] = []
        size, count = 0, 0
        for ident, rtcp, sa, data in items:
            part = _ITEM.pack(ident, rtcp, len(sa), len(data)) + sa + data
            if parts and size + len(part) > MAX_MESSAGE:
                self._put(b"B" + _BATCH.pack(due, count) + b"".join(parts), count)
                parts, size, count = [], 0, 0
            parts.append(part)
            size += len(part)
            count += 1
        if parts:
            self._put(b"B" + _BATCH.pack(due, count) + b"".join(parts), count)

    def _put(self, message: bytes, packets: int) -> None:
        if not self.alive:
            self.dropped += packets
            return
        try:
            self._sock.send(message, socket.MSG_DONTWAIT)
        except OSError:  # full (the child is stuck) or gone: those packets are lost, not queued
            self.dropped += packets

    def _read(self) -> None:
        while True:
            try:
                data = self._sock.recv(1 << 16)
            except OSError:
                data = b""
            if not data:
                break
            try:
                self._report(data)
            except Exception:
                log.exception("RTP transmitter: bad report %r", data[:32])
        self.alive = False
        self.ready.set()  # nobody waits for a child that is gone
        rc = self.process.poll()
        if rc is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                rc = self.process.wait(1.0)
        if not self._stopping:
            log.error("RTP transmitter process exited (%s); the pacer sends from this process", rc)

    def _report(self, data: bytes) -> None:
        kind, body = data[:1], data[1:]
        if kind == b"R":
            self.ready.set()
        elif kind == b"L":
            observer = self.observer
            for late, n in _LATE.iter_unpack(body):
                if observer is not None:
                    observer(late, n)
        elif kind in (b"E", b"T"):
            ident, value = _ERROR.unpack(body)
            session = self._sessions.get(ident)
            if session is None:
                return
            if kind == b"T":
                session._send_errors += value
            else:
                self._sessions.pop(ident, None)
                reason = f"sendto failed: {os.strerror(value)}"
                with contextlib.suppress(RuntimeError):  # that loop is closed
                    session.loop.call_soon_threadsafe(session._fail, reason)

    def stop(self) -> None:
        """Close the parent's end: the child exits (tests; a process exiting does the same)."""
        self._stopping = True
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(2.0)
        self._reader.join(2.0)


# ---- the child ------------------------------------------------------------------------------

class _Child:
    def __init__(self, sock: socket.socket) -> None:
        from voice.aio.udpsend import _SEND, TRANSIENT  # libc sendto: the sockaddr as the parent made it

        if _SEND is None:
            raise SystemExit("voice RTP transmitter: no libc sendto here")
        self.sock = sock
        self.send = _SEND
        self.transient_errors = TRANSIENT
        self.buffer = bytearray(MAX_MESSAGE + 4096)  # one message, received into this
        self.queue: list[tuple[float, int, bytes | int]] = []  # (due, order, batch body or close id)
        self.order = 0
        self.fds: dict[int, tuple[int, int]] = {}
        self.failed: set[int] = set()
        self.transient: dict[int, int] = {}
        self.lateness: list[bytes] = []
        self.next_report = time.monotonic() + REPORT_SECONDS

    def run(self) -> None:
        poll = select.poll()
        poll.register(self.sock, select.POLLIN)
        while True:
            now = time.monotonic()
            wait = min(self.queue[0][0] if self.queue else now + 1.0, self.next_report) - now
            if wait > 0.002:  # poll's timeout is whole milliseconds: sleep the rest below
                ready = poll.poll(int((wait - 0.001) * 1000))
            elif wait > EARLY:
                ready = poll.poll(0)
                if not ready:
                    time.sleep(wait - EARLY / 2)
            else:
                ready = poll.poll(0)
            if ready and not self.receive():
                return
            self.send_due()

    def receive(self) -> bool:
        """Everything the parent has sent; False at its end."""
        while True:
            try:  # not socket.recv_fds: before Python 3.12 it drops the flags, so it would block
                size, ancillary, _flags, _addr = self.sock.recvmsg_into([self.buffer], _FDS_SPACE,
                                                                        socket.MSG_DONTWAIT)
            except BlockingIOError:
                return True
            except ConnectionError:  # the parent is gone
                return False
            if not size:
                return False
            data = bytes(self.buffer[:size])
            fds = [fd for level, kind, cmsg in ancillary
                   if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS
                   for fd in array.array("i", cmsg[:len(cmsg) - len(cmsg) % 4])]
            kind = data[:1]
            if kind == b"B":
                due = _BATCH.unpack_from(data, 1)[0]
                self.order += 1
                heapq.heappush(self.queue, (due, self.order, data))
            elif kind == b"O":
                ident = _ID.unpack_from(data, 1)[0]
                if len(fds) == 2:
                    self.fds[ident] = (fds[0], fds[1])
                else:
                    for fd in fds:
                        os.close(fd)
            elif kind == b"C":
                due, ident = _CLOSE.unpack_from(data, 1)
                self.order += 1
                heapq.heappush(self.queue, (due, self.order, ident))

    def send_due(self) -> None:
        queue = self.queue
        while queue and queue[0][0] <= time.monotonic() + EARLY:
            due, _order, what = heapq.heappop(queue)
            if isinstance(what, int):
                for fd in self.fds.pop(what, ()):
                    os.close(fd)
                self.failed.discard(what)
                self.transient.pop(what, None)
                continue
            self.send_batch(what)
            self.lateness.append(_LATE.pack(max(0.0, time.monotonic() - due), _BATCH.unpack_from(what, 1)[1]))
        if time.monotonic() >= self.next_report:
            self.report()

    def send_batch(self, data: bytes) -> None:
        pos = 1 + _BATCH.size
        fds, failed, send, item = self.fds, self.failed, self.send, _ITEM
        end = len(data)
        while pos < end:
            ident, rtcp, salen, length = item.unpack_from(data, pos)
            pos += item.size
            sa = data[pos:pos + salen]
            pos += salen
            payload = data[pos:pos + length]
            pos += length
            pair = fds.get(ident)
            if pair is None or ident in failed:
                continue
            try:
                send(pair[rtcp], payload, sa)
            except OSError as exc:
                if exc.errno in self.transient_errors:
                    self.transient[ident] = self.transient.get(ident, 0) + 1
                else:
                    failed.add(ident)
                    self.tell(b"E" + _ERROR.pack(ident, exc.errno or errno.EIO))

    def report(self) -> None:
        self.next_report = time.monotonic() + REPORT_SECONDS
        if self.lateness:
            lateness, self.lateness = self.lateness, []
            for i in range(0, len(lateness), 8000):
                self.tell(b"L" + b"".join(lateness[i:i + 8000]))
        for ident, count in self.transient.items():
            self.tell(b"T" + _ERROR.pack(ident, count))
        self.transient.clear()

    def tell(self, message: bytes) -> None:
        # The parent is not reading (a report is lost) or is gone (the next receive ends us).
        with contextlib.suppress(BlockingIOError, ConnectionError):
            self.sock.send(message, socket.MSG_DONTWAIT)


def main(argv: list[str]) -> int:
    # Stopping is the parent's business: a Ctrl-C or a SIGTERM to the process group must not
    # cut the media of calls the parent is still draining. We exit when its end closes.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    fd, realtime = int(argv[0]), (argv[1] if len(argv) > 1 else "no")
    if realtime in ("yes", "auto"):
        try:
            try:
                os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(REALTIME_PRIORITY))
            except PermissionError:  # an RLIMIT_RTPRIO of 10 (an older unit file): the pacer's
                os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(REALTIME_PRIORITY - 1))
        except (AttributeError, OSError) as exc:
            if realtime == "yes":
                print(f"voice RTP transmitter: realtime priority refused ({exc}); normal priority",
                      file=sys.stderr)
    sock = socket.socket(fileno=fd)
    sock.send(b"R")
    _Child(sock).run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
