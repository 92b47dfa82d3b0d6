"""asyncio adapter for `voice.rtp.session.MediaSession`: one UDP socket pair (RTP, RTCP) per call.

It feeds the sans-IO session datagrams and the loop's time; the process-wide
`voice.aio.pacer.Pacer` ticks it from the pacer thread, which sends what it returns with the
socket's own non-blocking `sendto` (a frame leaves at once or is lost, as a late frame should be).
The session's lock guards the core: the loop and the pacer thread each hold it for one short
operation. Events go to listeners and futures on the loop, in order. A send that cannot work
(socket gone, an address the kernel refuses) or a transport that closes fails the session: it
stops at once, logs one line, tells the listener once.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from voice.aio.pacer import InbandBatch, MediaTotals, Pacer
from voice.aio.ports import PortPool
from voice.aio.udpsend import TRANSIENT, DatagramSender
from voice.audio import WavRecorder
from voice.rtp.events import AudioReceived, DigitReceived, DtmfSent, PlaybackFinished
from voice.rtp.session import Datagram, MediaSession

if TYPE_CHECKING:
    from voice.aio.transmitter import Item
    from voice.callcontrol.call import MediaPort

log = logging.getLogger(__name__)


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


class RtpPortPool(PortPool):
    """`voice.aio.ports.PortPool` that opens media sessions on its ports."""

    async def open_session(self, host: str, *, on_closed: Callable[[RtpSession], None] | None = None
                           ) -> RtpSession:
        """A session on the next free even port (and port+1) of `host`; RuntimeError when none is free."""
        loop = asyncio.get_running_loop()
        port, socks = self.bind(host)
        session = RtpSession(loop, host, port, socks, self, on_closed)
        try:  # bound sockets handed over: asyncio resolves nothing
            for sock, rtcp in zip(socks, (False, True), strict=True):
                protocol = functools.partial(_Endpoint, session, rtcp)
                t, _ = await loop.create_datagram_endpoint(protocol, sock=sock)
                session._transports.append(t)
        except BaseException:
            session.close()
            raise
        return session


class RtpSession:
    """One call's media leg; implements `voice.callcontrol.call.MediaPort`."""

    def __init__(self, loop: asyncio.AbstractEventLoop, host: str, port: int, socks: list[socket.socket],
                 pool: RtpPortPool | None, on_closed: Callable[[RtpSession], None] | None) -> None:
        self.loop, self.host, self.local_port = loop, host, port
        self._socks, self._pool, self._on_closed = socks, pool, on_closed
        self._senders = [DatagramSender(sock) for sock in socks]  # sendto keeping the GIL
        self._transports: list[asyncio.BaseTransport] = []  # own the sockets once made
        if abs(loop.time() - time.monotonic()) > 1.0:
            raise RuntimeError("RTP sessions need an event loop on the monotonic clock (the pacer's)")
        self._pacer, self._batch = Pacer.shared(), InbandBatch.for_loop(loop)
        self._lock = threading.Lock()  # the core's: the loop and the pacer thread take turns
        self.core = MediaSession(epoch=time.time() - loop.time())
        self.core.cname = f"voice-{os.getpid()}-{self.core.ssrc:08x}@{host}"
        self.closed = False
        self.failure: str | None = None  # why the transport failed, once it has
        self._phase: int | None = None  # our slot in the loop's Pacer while media runs
        self._tx_id: int | None = None  # our sockets' id in the pacer's transmitter process
        self._timer: asyncio.TimerHandle | None = None  # an RFC 4733 packet due between frames
        self._waiting: dict[int, asyncio.Future[Any]] = {}  # play / send_dtmf requests by id
        self._on_digit: Callable[[str], None] = lambda d: None
        self._on_audio: Callable[[np.ndarray], None] = lambda f: None
        self._on_failure: Callable[[str], None] | None = None
        self._tick_failure: tuple[str, bool] | None = None  # found on the pacer thread: (reason, logged)
        self._recorder: WavRecorder | None = None
        self._send_errors = 0

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
        if self.failure is not None:
            return  # stopped and reported: a re-INVITE changes nothing
        v6 = ":" in self.host
        if v6 and "." in remote[0] and ":" not in remote[0]:
            remote = ("::ffff:" + remote[0], remote[1])  # how a dual-stack socket reaches IPv4
        if not v6 and ":" in remote[0]:  # before joining the pacer: not one packet is made for it
            self._fail(f"IPv6 remote {remote[0]} is not reachable from the media socket on {self.host}")
            return
        if self._phase is None and self._tx_id is None:  # before the first tick can come
            self._tx_id = self._pacer.open_transmit(self, self._socks)
        with self._lock:  # held across the join: the pacer's first tick waits for the clock
            joined = self._pacer.join(self) if self._phase is None else None
            try:
                self.core.configure(remote=remote, payload_type=payload_type, codec=codec,
                                    now=self.loop.time(), dtmf_payload_type=dtmf_payload_type,
                                    direction=direction, clock=joined[1] if joined else None)
            except BaseException:
                if joined:
                    self._pacer.leave(self, joined[0])
                raise
            if joined:
                self._phase = joined[0]

    def _tick(self, now: float, ahead: float = 0.0, batch: list[Item] | None = None) -> bool:
        """The Pacer's wake-up for our phase (pacer thread), or our own timer for an RFC 4733
        packet (loop). With `batch`, the packets, due `ahead` from now, go there for the
        transmitter; else they are sent now. True when the loop has work: events, a DTMF timer,
        a failure."""
        with self._lock:
            if self._phase is None or self._tick_failure is not None:
                return False
            core = self.core
            try:
                core.tick(now, ahead)
            except Exception as exc:  # a bug: stop this call's media with one log line, not one per tick
                log.exception("RTP session on port %d failed", self.local_port)
                self._tick_failure = (f"media error: {exc!r}", True)
                return True
            out = core.datagrams_to_send()
            if out:  # sent under the lock: packets leave in the order of their sequence numbers
                failure = self._send(out, batch)
                if failure is not None:
                    self._tick_failure = (failure, False)
                    return True
            return core.has_events or core.sending_dtmf

    def _after_tick(self) -> None:
        """On the loop, after a tick that left work for it."""
        if self.closed:
            return
        if self._tick_failure is not None:
            reason, logged = self._tick_failure
            self._fail(reason, logged=logged)
            return
        self._drain()
        with self._lock:
            dtmf = self.core.sending_dtmf
        if dtmf:
            self._arm()

    def _send(self, datagrams: list[Datagram], batch: list[Item] | None = None) -> str | None:
        """Send in order, or add to the transmitter's `batch` when there is one and it has our
        sockets; the reason the session must fail, if it must. Caller holds the lock."""
        if batch is not None and self._tx_id is not None:
            ident = self._tx_id
            for data, addr, on_rtcp in datagrams:
                try:
                    batch.append((ident, on_rtcp, self._senders[on_rtcp].address(addr), data))
                except (OSError, TypeError, ValueError, OverflowError) as exc:
                    return f"sendto {addr!r} failed: {exc}"
            return None
        for data, addr, on_rtcp in datagrams:
            try:
                self._senders[on_rtcp].sendto(data, addr)
            except OSError as exc:
                if exc.errno not in TRANSIENT:
                    return f"sendto {addr} failed: {exc}"
                self._send_errors += 1
            except (TypeError, ValueError, OverflowError) as exc:
                return f"sendto {addr!r} failed: {exc}"
        return None

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        with self._lock:
            t, clock = self.core.get_timer(), self.core.clock
            due_early = t is not None and clock is not None and t < clock.deadline()
        ahead = self._ahead()[0]
        self._timer = self.loop.call_at(t - ahead, self._on_tick_now) if due_early and t is not None else None

    def _ahead(self) -> tuple[float, list[Item] | None]:
        """How far ahead the loop's own sends are made, and a batch for them (None: send now)."""
        if self._tx_id is not None and self._pacer.live_transmitter() is not None:
            return self._pacer.ahead, []
        return 0.0, None

    def _submit(self, due: float, batch: list[Item] | None) -> None:
        tx = self._pacer.live_transmitter()
        if batch and tx is not None:
            tx.submit(due, batch)

    def _on_tick_now(self) -> None:
        self._timer = None
        ahead, batch = self._ahead()
        now = self.loop.time()
        work = self._tick(now, ahead, batch)
        self._submit(now + ahead, batch)
        if work:
            self._after_tick()

    def _request(self, ident: int) -> asyncio.Future[Any]:
        fut = self._waiting[ident] = self.loop.create_future()
        self._drain()
        return fut

    def play(self, pcm: np.ndarray) -> Awaitable[bool]:
        """Queue a prompt; a prompt already playing is stopped (resolves False). Resolves True
        when the last frame has been sent, False when stopped, closed or failed."""
        with self._lock:
            ident = self.core.play(pcm)
        return self._request(ident)

    def feed(self, frame: np.ndarray) -> None:
        """One live 20 ms frame (a bridge's other leg) to send on our clock; see MediaSession.feed."""
        with self._lock:
            self.core.feed(frame)

    def stop_playback(self) -> None:
        with self._lock:
            self.core.stop_playback()
        self._drain()

    async def send_dtmf(self, digit: str, duration_ms: int = 100) -> None:
        """RFC 4733 events when negotiated (one digit after the other), else the tone in-band."""
        with self._lock:  # with a transmitter the event starts when its first packet leaves
            ident = self.core.send_dtmf(digit, duration_ms, self.loop.time() + self._ahead()[0])
        fut = self._request(ident)
        self._flush()
        await fut

    def _flush(self) -> None:
        """Send what the core has queued now (a DTMF start, an RTCP BYE), from the loop; with a
        transmitter, behind the frames already handed to it."""
        ahead, batch = self._ahead()
        with self._lock:
            out = self.core.datagrams_to_send()
            failure = self._send(out, batch) if out and self.failure is None else None
            dtmf = self.core.sending_dtmf
        self._submit(self.loop.time() + ahead, batch)
        if failure is not None:
            self._fail(failure)
        elif dtmf:
            self._arm()

    def set_listeners(self, on_digit: Callable[[str], None], on_audio: Callable[[np.ndarray], None]) -> None:
        self._on_digit, self._on_audio = on_digit, on_audio

    def set_failure_listener(self, on_failure: Callable[[str], None] | None) -> None:
        """`on_failure(reason)` is called once, soon (call_soon) after the media transport fails;
        media has stopped by then and close() still releases the ports. Set after a failure: soon."""
        self._on_failure = on_failure
        if on_failure is not None and self.failure is not None:
            self.loop.call_soon(on_failure, self.failure)

    def _receive(self, data: bytes, addr: Any, rtcp: bool) -> None:
        MediaTotals.received += 1
        core = self.core
        with self._lock:
            core.receive_datagram(data, addr, self.loop.time(), rtcp=rtcp)
            events, inband = core.has_events, core.inband_pending
        if events:
            self._drain()
        if inband:
            self._batch.add(self)

    def _drain(self) -> None:
        """The core's events to listeners and futures, in order (on the loop, lock released:
        a listener may call back into the session)."""
        with self._lock:
            events = []
            while (event := self.core.next_event()) is not None:
                events.append(event)
        for event in events:
            try:
                if isinstance(event, AudioReceived):
                    self._on_audio(event.frame)
                elif isinstance(event, DigitReceived):
                    self._on_digit(event.digit)
                elif isinstance(event, PlaybackFinished | DtmfSent):
                    ident = event.playback if isinstance(event, PlaybackFinished) else event.request
                    fut = self._waiting.pop(ident, None)
                    if fut is not None and not fut.done():
                        fut.set_result(event.completed if isinstance(event, PlaybackFinished) else None)
                else:
                    path = getattr(self._recorder, "path", "")
                    log.error("recording %s failed; stopped: %r", path, event.error)
                    self._close_recorder()
            except Exception:  # a listener's bug must not starve the others
                log.exception("%s listener failed", "digit" if isinstance(event, DigitReceived) else "audio")

    def start_recording(self, path: Path, both_directions: bool) -> None:
        self.stop_recording()
        self._recorder = WavRecorder(path, both_directions=both_directions)
        with self._lock:
            self.core.start_recording(self._recorder)

    def stop_recording(self) -> Path | None:
        with self._lock:
            self.core.stop_recording()
        return self._close_recorder()

    def _close_recorder(self) -> Path | None:
        rec, self._recorder = self._recorder, None
        try:
            return rec.close() if rec is not None else None
        except Exception:
            log.exception("closing recording %s failed", rec and rec.path)
            return None

    @property
    def stats(self) -> dict[str, Any]:
        with self._lock:
            core = self.core.stats
        return {"local_port": self.local_port, **core, "failed": self.failure,
                "send_errors": self._send_errors}

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
        with self._lock:
            if self._phase is not None:
                self._pacer.leave(self, self._phase)
                self._phase = None
            self.core.stop()
        if self._tx_id is not None:
            tx, ident, self._tx_id = self._pacer.transmitter, self._tx_id, None
            if tx is not None:  # its copies of our sockets close after what is queued has left
                tx.close(ident, self.loop.time() + self._pacer.ahead)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._drain()

    def close(self) -> None:
        """Stop timers, resolve pending playback, close the recording, release the ports."""
        if self.closed:
            return
        with self._lock:  # queues an RTCP BYE (RFC 3550 6.6), timed for when it leaves
            self.core.close(self.loop.time() + self._ahead()[0])
        self._flush()
        self.closed = True
        self._stop()
        self.stop_recording()
        for t in self._transports:
            t.close()  # asyncio closes the socket; we are closed: no failure reported
        for sock in self._socks[len(self._transports):]:
            sock.close()  # never handed to a transport (open_session failed half way)
        if self._pool is not None:
            self._pool.release(self.local_port)
        if self._on_closed is not None:
            self._on_closed(self)


if TYPE_CHECKING:
    def _implements_media_port(session: RtpSession) -> MediaPort:
        return session  # mypy checks RtpSession against the voice.callcontrol.call.MediaPort protocol
