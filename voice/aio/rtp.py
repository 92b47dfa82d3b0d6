"""asyncio adapter for `voice.rtp.session.MediaSession`: one UDP socket pair (RTP, RTCP) per call.

The state machine is sans-IO; this module feeds it datagrams and the loop's time, sends what it
returns on the sockets, turns its events into listener calls and futures, and keeps its ticks on
the loop-wide `voice.aio.pacer.Pacer`. Datagrams go out with the socket's own non-blocking
`sendto` (asyncio's transport adds nothing for a datagram that either leaves at once or is
dropped, as a late RTP frame should be). A send that cannot work (the socket is gone, an address
the kernel refuses, an error that is not about the network's state) or a transport that closes
fails the session: it stops at once, logs one line and calls the failure listener once.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from voice.aio.pacer import InbandBatch, Pacer
from voice.audio import WavRecorder
from voice.rtp.events import AudioReceived, DigitReceived, DtmfSent, PlaybackFinished
from voice.rtp.session import Datagram, MediaSession

if TYPE_CHECKING:
    from voice.call import MediaPort

log = logging.getLogger(__name__)

# The network's state, not ours: the packet is lost, the call goes on (counted in stats).
TRANSIENT = {errno.EAGAIN, errno.ENOBUFS, errno.EINTR, errno.ECONNREFUSED, errno.EHOSTUNREACH,
             errno.ENETUNREACH, errno.EHOSTDOWN, errno.ENETDOWN, errno.EPERM, errno.EACCES}


class _Endpoint(asyncio.DatagramProtocol):
    def __init__(self, session: RtpSession, rtcp: bool) -> None:
        self.session, self.rtcp = session, rtcp

    def datagram_received(self, data: bytes, addr: Any) -> None:
        try:
            self.session._receive(data, addr, self.rtcp)
        except Exception:  # a bug must not close the transport (asyncio would)
            log.exception("error handling a media datagram from %s", addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("RTP socket error: %s", exc)  # ICMP unreachable from a peer that went away

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.session.closed:
            self.session._fail(f"{'RTCP' if self.rtcp else 'RTP'} transport closed ({exc or 'no error'})")


def _bind_pair(host: str, port: int) -> tuple[socket.socket, socket.socket]:
    """Non-blocking UDP sockets bound to (host, port) and (host, port + 1); OSError if either is taken."""
    socks: list[socket.socket] = []
    try:
        for p in (port, port + 1):
            socks.append(socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM))
            socks[-1].setblocking(False)
            socks[-1].bind((host, p))
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    return socks[0], socks[1]


class RtpPortPool:
    """Even RTP ports (RTCP = port + 1) from [lo, hi], handed out round-robin: a port just
    released is reused last, so late packets of the previous call do not reach the next one."""

    def __init__(self, lo: int, hi: int) -> None:
        self.ports = list(range(lo + (lo & 1), hi, 2))  # port + 1 <= hi
        if not self.ports:
            raise ValueError(f"RTP port range {lo}-{hi} holds no even port pair")
        self._used: set[int] = set()
        self._cursor = 0

    @property
    def in_use(self) -> int:
        return len(self._used)

    def free(self) -> int:
        """Port pairs left (ports another process holds are counted until a bind finds them)."""
        return len(self.ports) - len(self._used)

    async def open_session(self, host: str, *, on_closed: Callable[[RtpSession], None] | None = None
                           ) -> RtpSession:
        """Bind the next free even port (and port+1) on `host`; RuntimeError when none is free."""
        loop = asyncio.get_running_loop()
        n = len(self.ports)
        for i in range(n):
            port = self.ports[(self._cursor + i) % n]
            if port in self._used:
                continue
            try:
                socks = _bind_pair(host, port)
            except OSError as exc:
                if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                    continue
                raise
            session = RtpSession(loop, host, port, socks, self, on_closed)
            try:  # bound sockets handed over: asyncio resolves nothing
                for sock, rtcp in ((socks[0], False), (socks[1], True)):
                    transport, _ = await loop.create_datagram_endpoint(
                        functools.partial(_Endpoint, session, rtcp), sock=sock)
                    session._transports.append(transport)
            except BaseException:
                session.close()
                raise
            self._used.add(port)
            self._cursor = (self._cursor + i + 1) % n
            return session
        raise RuntimeError("no free RTP port")


class RtpSession:
    """One call's media leg; implements `voice.call.MediaPort`."""

    def __init__(self, loop: asyncio.AbstractEventLoop, host: str, port: int,
                 socks: tuple[socket.socket, socket.socket], pool: RtpPortPool | None,
                 on_closed: Callable[[RtpSession], None] | None) -> None:
        self.loop, self.host, self.local_port = loop, host, port
        self._socks, self._pool, self._on_closed = socks, pool, on_closed
        self._transports: list[asyncio.BaseTransport] = []  # own the sockets once made
        self._pacer, self._batch = Pacer.for_loop(loop), InbandBatch.for_loop(loop)
        self.core = MediaSession(epoch=time.time() - loop.time())
        self.core.cname = f"voice-{os.getpid()}-{self.core.ssrc:08x}@{host}"
        self.closed = False
        self.failure: str | None = None  # why the transport failed, once it has
        self._phase: int | None = None  # our slot in the loop's Pacer while media runs
        self._timer: asyncio.TimerHandle | None = None  # an RFC 4733 packet due between frames
        self._waiting: dict[int, asyncio.Future[Any]] = {}  # play / send_dtmf requests by id
        self._on_digit: Callable[[str], None] = lambda d: None
        self._on_audio: Callable[[np.ndarray], None] = lambda f: None
        self._on_failure: Callable[[str], None] | None = None
        self._recorder: WavRecorder | None = None

    @property
    def codec(self) -> str:
        return self.core.codec

    @property
    def dtmf_payload_type(self) -> int | None:
        return self.core.dtmf_payload_type

    def configure(self, *, remote: tuple[str, int], payload_type: int, codec: str,
                  dtmf_payload_type: int | None, direction: str = "sendrecv") -> None:
        """Start media (first call) or update it in place (re-INVITE): never a second stream.
        ValueError for an unsupported codec or direction, or a remote that is not an IP literal."""
        if self.closed:
            raise RuntimeError("RTP session is closed")
        v6 = ":" in self.host
        if v6 and ":" not in remote[0] and "." in remote[0]:
            remote = ("::ffff:" + remote[0], remote[1])  # a dual-stack socket reaches IPv4 mapped
        clock = None
        if self._phase is None and self.failure is None:
            self._phase, clock = self._pacer.join(self)
        self.core.configure(remote=remote, payload_type=payload_type, codec=codec, now=self.loop.time(),
                            dtmf_payload_type=dtmf_payload_type, direction=direction, clock=clock)
        if not v6 and ":" in remote[0]:
            self._fail(f"IPv6 remote {remote[0]} is not reachable from the media socket on {self.host}")

    # ---- sending -----------------------------------------------------------------------------
    def _on_tick(self, now: float) -> None:
        """The Pacer's wake-up for our phase (`now` is at or after our clock's deadline)."""
        core = self.core
        try:
            core.tick(now)
        except Exception as exc:  # a bug: stop this call's media with one log line, not one per tick
            log.exception("RTP session on port %d failed", self.local_port)
            self._fail(f"media error: {exc!r}", logged=True)
            return
        out = core.datagrams_to_send()
        if out:
            self._send(out)
        if core.has_events:
            self._drain()
        if core.sending_dtmf:
            self._arm()

    def _send(self, datagrams: list[Datagram]) -> None:
        rtp, rtcp = self._socks
        for data, addr, on_rtcp in datagrams:
            try:
                (rtcp if on_rtcp else rtp).sendto(data, addr)
            except OSError as exc:
                if exc.errno not in TRANSIENT:
                    self._fail(f"sendto {addr} failed: {exc}")
                    return
                self.core.counters["send_errors"] = self.core.counters.get("send_errors", 0) + 1
            except (TypeError, ValueError, OverflowError) as exc:
                self._fail(f"sendto {addr!r} failed: {exc}")
                return

    def _arm(self) -> None:
        """A timer for an RFC 4733 packet due before our next frame tick."""
        t, clock = self.core.get_timer(), self.core.clock
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if t is not None and clock is not None and t < clock.deadline():
            self._timer = self.loop.call_at(t, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if not self.core.stopped:
            self._on_tick(self.loop.time())

    def play(self, pcm: np.ndarray) -> Awaitable[bool]:
        """Queue a prompt; a prompt already playing is stopped (resolves False). Resolves True
        when the last frame has been sent, False when stopped, closed or failed."""
        return self._request(self.core.play(pcm))

    def _request(self, ident: int) -> asyncio.Future[Any]:
        fut = self._waiting[ident] = self.loop.create_future()
        self._drain()
        return fut

    def feed(self, frame: np.ndarray) -> None:
        """One live 20 ms frame (a bridge's other leg) to send on our clock; see MediaSession.feed."""
        self.core.feed(frame)

    def stop_playback(self) -> None:
        self.core.stop_playback()
        self._drain()

    async def send_dtmf(self, digit: str, duration_ms: int = 100) -> None:
        """RFC 4733 events when negotiated (one digit after the other), else the tone in-band."""
        fut = self._request(self.core.send_dtmf(digit, duration_ms, self.loop.time()))
        self._flush()
        await fut

    def _flush(self) -> None:
        out = self.core.datagrams_to_send()
        if out and self.failure is None:
            self._send(out)
        if self.core.sending_dtmf:
            self._arm()

    # ---- receiving and events ----------------------------------------------------------------
    def set_listeners(self, on_digit: Callable[[str], None], on_audio: Callable[[np.ndarray], None]) -> None:
        self._on_digit, self._on_audio = on_digit, on_audio

    def set_failure_listener(self, on_failure: Callable[[str], None] | None) -> None:
        """`on_failure(reason)` is called once, soon after the media transport fails (the session
        has stopped by then; close() still releases it). Set after a failure: called soon."""
        self._on_failure = on_failure
        if on_failure is not None and self.failure is not None:
            self.loop.call_soon(on_failure, self.failure)

    def _receive(self, data: bytes, addr: Any, rtcp: bool) -> None:
        core = self.core
        core.receive_datagram(data, addr, self.loop.time(), rtcp=rtcp)
        if core.has_events:
            self._drain()
        if core.inband_pending:
            self._batch.add(self)

    def _drain(self) -> None:
        """Events to listeners and futures, in order."""
        core = self.core
        while (event := core.next_event()) is not None:
            try:
                if isinstance(event, AudioReceived):
                    self._on_audio(event.frame)
                elif isinstance(event, DigitReceived):
                    self._on_digit(event.digit)
                elif isinstance(event, PlaybackFinished | DtmfSent):
                    done = event.completed if isinstance(event, PlaybackFinished) else None
                    fut = self._waiting.pop(event.playback if isinstance(event, PlaybackFinished)
                                            else event.request, None)
                    if fut is not None and not fut.done():
                        fut.set_result(done)
                else:
                    log.error("recording %s failed; stopped: %r", getattr(self._recorder, "path", "?"),
                              event.error)
                    self._close_recorder()
            except Exception:  # a listener's bug must not starve the others
                log.exception("%s listener failed", "digit" if isinstance(event, DigitReceived) else "audio")

    # ---- recording ---------------------------------------------------------------------------
    def start_recording(self, path: Path, both_directions: bool) -> None:
        self.stop_recording()
        self._recorder = WavRecorder(path, both_directions=both_directions)
        self.core.start_recording(self._recorder)

    def stop_recording(self) -> Path | None:
        self.core.stop_recording()
        return self._close_recorder()

    def _close_recorder(self) -> Path | None:
        rec, self._recorder = self._recorder, None
        try:
            return rec.close() if rec is not None else None
        except Exception:
            log.exception("closing recording %s failed", rec and rec.path)
            return None

    # ---- stats, failure and teardown ---------------------------------------------------------
    @property
    def stats(self) -> dict[str, Any]:
        return {"local_port": self.local_port, **self.core.stats, "failed": self.failure,
                "send_errors": int(self.core.counters.get("send_errors", 0))}

    def _fail(self, reason: str, *, logged: bool = False) -> None:
        if self.failure is not None or self.closed:
            return
        self.failure = reason
        if not logged:
            log.warning("RTP session on port %d stopped: %s", self.local_port, reason)
        self._stop()
        if self._on_failure is not None:
            self.loop.call_soon(self._on_failure, reason)

    def _stop(self) -> None:
        if self._phase is not None:
            self._pacer.leave(self, self._phase)
            self._phase = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.core.stop()
        self._drain()

    def close(self) -> None:
        """Stop timers, resolve pending playback, close the recording, release the ports."""
        if self.closed:
            return
        self.core.close(self.loop.time())  # queues an RTCP BYE (RFC 3550 6.6)
        self._flush()
        self.closed = True
        self._stop()
        self.stop_recording()
        for t in self._transports:
            t.close()  # asyncio closes the socket; we are closed: no failure reported
        for sock in self._socks[len(self._transports):]:
            sock.close()  # not handed to a transport (open_session failed half way)
        if self._pool is not None:
            self._pool._used.discard(self.local_port)
        if self._on_closed is not None:
            self._on_closed(self)


if TYPE_CHECKING:
    def _implements_media_port(session: RtpSession) -> MediaPort:
        return session  # mypy checks RtpSession against the voice.call.MediaPort protocol
