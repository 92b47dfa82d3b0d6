"""asyncio adapter for RTP media: one datagram endpoint pair (RTP, RTCP) per call.

No thread per call, and no timer per call either: one `voice.aio.pacer.Pacer` per event loop
runs a few timers spread over the 20 ms frame; each session joins the least busy one, its
`voice.rtp.pacing.FrameClock` on that timer's absolute schedule. Everything protocol-shaped
(packets, G.711, DTMF, latching, reordering, RTCP) lives in the sans-IO
`voice.rtp` package; this module only feeds it datagrams and the loop's time.

Idle policy: while no prompt plays we keep sending silence frames, as FreeSWITCH
does and Asterisk does with `transmit_silence`. Many carriers and SBCs hang up
after 30-60 s without RTP (rtp timeout), NAT pinholes for the peer's replies
close without outbound traffic, and a continuous stream keeps the timestamps
and the peer's jitter buffer steady. The marker bit is set on the first packet of
the stream and on the first packet after we stopped sending (hold, stall).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import functools
import logging
import os
import socket
import time
import weakref
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from voice.aio.pacer import InbandBatch, Pacer
from voice.audio import WavRecorder, dtmf_tone
from voice.rtp import g711
from voice.rtp.dtmf import GoertzelDetector, Rfc4733Receiver, Rfc4733Sender
from voice.rtp.jitter import ReorderBuffer
from voice.rtp.latch import SourceLatch, normalize_host
from voice.rtp.pacing import FRAME_SAMPLES, FrameClock, RtpSender
from voice.rtp.packet import PacketError, RtpPacket, is_rtcp
from voice.rtp.rtcp import (
    Bye,
    ReceiverReport,
    ReceptionStats,
    SenderReport,
    build_bye,
    build_rr,
    build_sdes,
    build_sr,
    ntp_timestamp,
    parse,
    round_trip,
)

if TYPE_CHECKING:
    from voice.callcontrol.call import MediaPort

log = logging.getLogger(__name__)

RTCP_INTERVAL = 5.0
FEED_MAX = 3  # live frames queued by feed(): 60 ms at most
DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
CODECS = ("PCMU", "PCMA")

# G.711 encodings of read-only prompt arrays (voice.audio.load_prompt returns those),
# keyed by (id(array), codec) and dropped when the array is garbage collected.
_encoded: dict[tuple[int, str], bytes] = {}


def encoded_prompt(pcm: np.ndarray, codec: str) -> bytes:
    """The whole prompt in `codec`, encoded once per codec when the array is read-only."""
    if pcm.flags.writeable:
        return g711.encode(pcm, codec)
    key = (id(pcm), codec)
    data = _encoded.get(key)
    if data is None:
        data = _encoded[key] = g711.encode(pcm, codec)
        weakref.finalize(pcm, _encoded.pop, key, None)
    return data


class _Playback:
    __slots__ = ("codec", "data", "done", "pcm", "pos")

    def __init__(self, pcm: np.ndarray, done: asyncio.Future[bool]) -> None:
        self.pcm = pcm
        self.done = done
        self.pos = 0  # samples already sent
        self.codec = ""  # codec of `data`; a re-INVITE may change it mid-prompt
        self.data = b""

    def encoded(self, codec: str) -> bytes:
        if codec != self.codec:
            self.codec, self.data = codec, encoded_prompt(self.pcm, codec)
        return self.data


class _Endpoint(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: Callable[[bytes, Any], None]) -> None:
        self.on_datagram = on_datagram

    def datagram_received(self, data: bytes, addr: Any) -> None:
        try:
            self.on_datagram(data, addr)
        except Exception:  # a listener bug must not close the transport (asyncio would)
            log.exception("error handling a media datagram from %s", addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable from a peer that went away: normal at the end of calls
        log.debug("RTP socket error: %s", exc)


def _bind_pair(host: str, port: int) -> tuple[socket.socket, socket.socket]:
    """Non-blocking UDP sockets bound to (host, port) and (host, port + 1); OSError if either is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    socks: list[socket.socket] = []
    try:
        for p in (port, port + 1):
            sock = socket.socket(family, socket.SOCK_DGRAM)
            socks.append(sock)
            sock.setblocking(False)
            sock.bind((host, p))
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    return socks[0], socks[1]


class RtpPortPool:
    """Even RTP ports (RTCP = port + 1) from [lo, hi], handed out round-robin.

    Round-robin rather than lowest-free: a port just released is reused last, so
    late packets of the previous call do not reach the next one.
    """

    def __init__(self, lo: int, hi: int) -> None:
        first = lo + (lo & 1)
        self.ports = list(range(first, hi, 2))  # port + 1 <= hi
        if not self.ports:
            raise ValueError(f"RTP port range {lo}-{hi} holds no even port pair")
        self._used: set[int] = set()
        self._cursor = 0

    @property
    def in_use(self) -> int:
        return len(self._used)

    def _release(self, port: int) -> None:
        self._used.discard(port)

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
            # Bound here and handed over: the "port taken" error is then the kernel's own on any
            # event loop (uvloop wraps bind errors in its own), and asyncio skips resolving the address.
            session = RtpSession(loop, host, port, self, on_closed)
            try:
                rtp, _ = await loop.create_datagram_endpoint(
                    functools.partial(_Endpoint, session._on_rtp), sock=socks[0])
            except BaseException:
                for sock in socks:
                    sock.close()
                raise
            try:
                rtcp, _ = await loop.create_datagram_endpoint(
                    functools.partial(_Endpoint, session._on_rtcp), sock=socks[1])
            except BaseException:
                rtp.close()
                socks[1].close()
                raise
            session._attach(rtp, rtcp)
            self._used.add(port)
            self._cursor = (self._cursor + i + 1) % n
            return session
        raise RuntimeError("no free RTP port")


class RtpSession:
    """One call's media leg; implements `voice.callcontrol.call.MediaPort`."""

    def __init__(self, loop: asyncio.AbstractEventLoop, host: str, port: int, pool: RtpPortPool | None,
                 on_closed: Callable[[RtpSession], None] | None) -> None:
        self.loop = loop
        self.host = host
        self.local_port = port
        self._pool = pool
        self._on_closed = on_closed
        self._rtp: asyncio.DatagramTransport | None = None
        self._rtcp: asyncio.DatagramTransport | None = None
        self.closed = False
        # negotiated state (configure)
        self.codec = "PCMU"
        self.payload_type = 0
        self.dtmf_payload_type: int | None = None
        self.direction = "sendrecv"
        self._remote: tuple[str, int] | None = None
        self._latch: SourceLatch | None = None
        self._silence = g711.silence_frame("PCMU")
        # send side
        self.sender = RtpSender()
        self.clock: FrameClock | None = None
        self._phase: int | None = None  # our slot in the loop's Pacer while the clock runs
        self._playback: _Playback | None = None
        self._live: collections.deque[np.ndarray] = collections.deque()  # feed(): bridged frames
        self._dtmf_active = False
        self._dtmf_timer: asyncio.TimerHandle | None = None
        self._dtmf_done: asyncio.Future[None] | None = None
        self._dtmf_lock = asyncio.Lock()
        self._was_sending = False
        # receive side
        self._reorder: ReorderBuffer[RtpPacket] = ReorderBuffer()
        self._rx_ssrc: int | None = None
        self._rfc4733 = Rfc4733Receiver()
        self._inband: GoertzelDetector | None = None
        self._inband_batch = InbandBatch.for_loop(loop)
        self._rfc4733_seen = False
        self._last_inband: tuple[str, float] = ("", 0.0)
        self._rx_pending = np.zeros(0, dtype=np.int16)
        self.rx_stats = ReceptionStats()
        self._on_digit: Callable[[str], None] = lambda d: None
        self._on_audio: Callable[[np.ndarray], None] = lambda f: None
        self._recorder: WavRecorder | None = None
        # RTCP
        self.cname = f"voice-{os.getpid()}-{self.sender.ssrc:08x}@{host}"
        self.rtcp_interval = RTCP_INTERVAL
        self._next_rtcp = 0.0
        self._rtcp_remote: tuple[str, int] | None = None
        self._sent_since_report = False
        self.remote_report: dict[str, float] = {}
        # counters
        self.counters = {"packets_received": 0, "bytes_received": 0, "dropped_foreign": 0,
                         "malformed": 0, "ignored": 0, "late_wakeups": 0, "skipped_frames": 0,
                         "max_lateness_ms": 0.0}

    def _attach(self, rtp: asyncio.DatagramTransport, rtcp: asyncio.DatagramTransport) -> None:
        self._rtp, self._rtcp = rtp, rtcp

    # ---- negotiation -------------------------------------------------------------------------
    def configure(self, *, remote: tuple[str, int], payload_type: int, codec: str,
                  dtmf_payload_type: int | None, direction: str = "sendrecv") -> None:
        """Start media (first call) or update it in place (re-INVITE): never a second stream."""
        if self.closed:
            raise RuntimeError("RTP session is closed")
        if codec not in CODECS:
            raise ValueError(f"unsupported codec {codec!r} (expected one of {', '.join(CODECS)})")
        if direction not in DIRECTIONS:
            raise ValueError(f"bad direction {direction!r} (expected one of {', '.join(DIRECTIONS)})")
        remote = (remote[0], int(remote[1]))
        if remote != self._remote:
            self._remote = remote
            self._rtcp_remote = None
            self._latch = None  # built below with the new payload types
        types = frozenset(t for t in (payload_type, dtmf_payload_type) if t is not None)
        if self._latch is None or self._latch.payload_types != types:
            latched = self._latch.latched if self._latch is not None else None
            self._latch = SourceLatch(remote, types)
            self._latch.latched = latched
        self.codec, self.payload_type = codec, payload_type
        self.dtmf_payload_type = dtmf_payload_type
        self._silence = g711.silence_frame(codec)
        self.direction = direction
        # In-band detection when the peer cannot send telephone-event, and also while it has not
        # sent any yet: some phones (pyVoIP 1.6.8) offer telephone-event but send tones in audio.
        if dtmf_payload_type is None or not self._rfc4733_seen:
            self._inband = self._inband or GoertzelDetector()
        else:
            self._inband = None
        if self.clock is None:
            self._phase, self.clock = Pacer.for_loop(self.loop).join(self)
            self._next_rtcp = self.loop.time() + self.rtcp_interval

    @property
    def sending(self) -> bool:
        return (self.direction in ("sendrecv", "sendonly") and self._remote is not None
                and self._remote[0] not in ("0.0.0.0", "::") and self._remote[1] != 0)

    @property
    def receiving(self) -> bool:
        return self.direction in ("sendrecv", "recvonly")

    # ---- send path ---------------------------------------------------------------------------
    def _on_tick(self, now: float) -> None:
        """The Pacer's wake-up for our phase (`now` is at or after our clock's deadline)."""
        clock = self.clock
        if self.closed or clock is None:
            return
        try:
            self._tick(clock, now)
        except Exception:  # never let one bad frame end the call's media: log and keep the schedule
            log.exception("RTP tick failed on port %d", self.local_port)

    def _tick(self, clock: FrameClock, now: float) -> None:
        lateness = clock.lateness(now)
        due = clock.due(now)
        if lateness > 0.005:
            self.counters["late_wakeups"] += 1
        if lateness * 1000 > self.counters["max_lateness_ms"]:
            self.counters["max_lateness_ms"] = lateness * 1000
        for _ in range(due.send):
            self._send_frame()
        if due.skipped:
            self.counters["skipped_frames"] += due.skipped
            self.sender.advance(due.skipped)
            self.sender.gap()
        if len(self._reorder):
            for pkt in self._reorder.poll(now):
                self._deliver(pkt)
        if now >= self._next_rtcp:
            self._next_rtcp = now + self.rtcp_interval
            self._send_rtcp()

    def _send_frame(self) -> None:
        sender = self.sender
        ours: np.ndarray | None = None
        if self._dtmf_active:
            sender.advance()  # RFC 4733 2.5.1.1: events replace audio, the clock runs on
            if self._live:
                self._live.popleft()  # the live frame of this slot is replaced too
            if self._recorder is not None:
                self._record_tick(None)
            return
        pb = self._playback
        live = self._live.popleft() if self._live else None  # consumed in step even under a prompt
        if pb is not None:
            payload = pb.encoded(self.codec)[pb.pos:pb.pos + FRAME_SAMPLES]
            if self._recorder is not None and self._recorder.both:
                ours = pb.pcm[pb.pos:pb.pos + FRAME_SAMPLES]
            pb.pos += FRAME_SAMPLES
            if len(payload) < FRAME_SAMPLES:
                payload += self._silence[: FRAME_SAMPLES - len(payload)]
            if pb.pos >= len(pb.pcm):
                self._playback = None
                if not pb.done.done():
                    pb.done.set_result(True)
        elif live is not None:
            payload = g711.encode(live, self.codec)
            ours = live
        else:
            payload = self._silence
        if self.sending and self._rtp is not None and self._latch is not None:
            self._rtp.sendto(sender.build(self.payload_type, payload), self._latch.send_to)
            self._sent_since_report = True
        else:
            sender.gap()  # on hold: the first packet after it starts a talkspurt (marker)
        sender.advance()
        if self._recorder is not None:
            self._record_tick(ours)

    def _record_tick(self, ours: np.ndarray | None) -> None:
        assert self._recorder is not None
        try:
            self._recorder.tick(ours)
        except Exception:  # disk full, file removed: lose the recording, not the call
            log.exception("recording %s failed; stopped", self._recorder.path)
            rec, self._recorder = self._recorder, None
            with contextlib.suppress(Exception):
                rec.close()

    def play(self, pcm: np.ndarray) -> Awaitable[bool]:
        """Queue a prompt; a prompt already playing is stopped (resolves False). Resolves True
        when the last frame has been sent. While on hold the prompt runs on silently, as a
        PBX generator does, so a flow never waits forever on a held call."""
        if pcm.dtype != np.int16 or pcm.ndim != 1:
            raise TypeError(f"play() needs mono int16 PCM, got {pcm.dtype} with shape {pcm.shape}")
        fut: asyncio.Future[bool] = self.loop.create_future()
        self.stop_playback()
        if self.closed:
            fut.set_result(False)
        elif len(pcm) == 0:
            fut.set_result(True)
        else:
            self._playback = _Playback(pcm, fut)
        return fut

    def feed(self, frame: np.ndarray) -> None:
        """Queue one live 20 ms int16 frame (another leg's audio, for a bridge) to send on our own
        clock. A playing prompt takes precedence; silence fills any slot without a frame. Beyond
        FEED_MAX frames the oldest is dropped, so the added delay stays bounded when the other
        leg's clock runs faster than ours."""
        if self.closed:
            return
        if len(frame) != FRAME_SAMPLES:
            raise ValueError(f"feed() takes {FRAME_SAMPLES}-sample frames, got {len(frame)}")
        self._live.append(frame)
        while len(self._live) > FEED_MAX:
            self._live.popleft()

    def stop_playback(self) -> None:
        pb, self._playback = self._playback, None
        if pb is not None and not pb.done.done():
            pb.done.set_result(False)

    async def send_dtmf(self, digit: str, duration_ms: int = 100) -> None:
        """RFC 4733 events when negotiated (updates every 50 ms, 3 end packets, marker on the
        first), else the dual tone in-band (which replaces a playing prompt)."""
        if self.dtmf_payload_type is None:
            await self.play(dtmf_tone(digit, duration_ms))
            return
        async with self._dtmf_lock:
            if self.closed:
                return
            events = Rfc4733Sender(digit, duration_ms, start=self.loop.time(), timestamp=self.sender.ts)
            done: asyncio.Future[None] = self.loop.create_future()
            self._dtmf_done = done
            self._dtmf_active = True  # audio frames are replaced by the event (RFC 4733 2.5.1.1)

            def emit() -> None:
                self._dtmf_timer = None
                for pkt in events.due(self.loop.time()):
                    if self.sending and self._rtp is not None and self._latch is not None:
                        data = self.sender.build(self.dtmf_payload_type or 101, pkt.payload,
                                                 timestamp=events.timestamp, marker=pkt.marker)
                        self._rtp.sendto(data, self._latch.send_to)
                deadline = events.next_deadline()
                if deadline is None:
                    if not done.done():
                        done.set_result(None)
                elif not self.closed:
                    self._dtmf_timer = self.loop.call_at(deadline, emit)

            emit()
            try:
                await done
            finally:
                if self._dtmf_timer is not None:
                    self._dtmf_timer.cancel()
                    self._dtmf_timer = None
                self._dtmf_active = False

    # ---- receive path ------------------------------------------------------------------------
    def set_listeners(self, on_digit: Callable[[str], None], on_audio: Callable[[np.ndarray], None]) -> None:
        self._on_digit, self._on_audio = on_digit, on_audio

    def _on_rtp(self, data: bytes, addr: Any) -> None:
        if self.closed or self._latch is None:
            return
        if is_rtcp(data):  # RFC 5761 rtcp-mux: some peers send RTCP on the RTP port
            self._on_rtcp(data, addr)
            return
        try:
            pkt = RtpPacket.parse(data)
        except PacketError:
            self.counters["malformed"] += 1
            return
        if not self._latch.accept(addr, pkt.ssrc, pkt.sequence, pkt.payload_type):
            self.counters["dropped_foreign"] += 1
            return
        if not self.receiving:
            self.counters["ignored"] += 1
            return
        now = self.loop.time()
        if pkt.ssrc != self._rx_ssrc:  # new stream (peer restarted or was re-bridged)
            for old in self._reorder.reset():
                self._deliver(old)
            self._rx_ssrc = pkt.ssrc
            self._rfc4733.reset()  # event identity is (SSRC, timestamp): a new source starts afresh
        self.rx_stats.update(pkt.ssrc, pkt.sequence, pkt.timestamp, now)
        self.counters["packets_received"] += 1
        self.counters["bytes_received"] += len(pkt.payload)
        for p in self._reorder.push(pkt.sequence, pkt, now):
            self._deliver(p)

    def _deliver(self, pkt: RtpPacket) -> None:
        if pkt.payload_type == self.dtmf_payload_type:
            digit = self._rfc4733.receive(pkt.payload, pkt.timestamp)
            if not self._rfc4733_seen:
                self._rfc4733_seen = True
                self._inband = None  # the peer signals keys out of band: trust that from now on
            if digit is not None:
                if digit == self._last_inband[0] and self.loop.time() - self._last_inband[1] < 0.5:
                    return  # the same key already heard in the audio just before its first event
                self._emit_digit(digit)
            return
        if pkt.payload_type != self.payload_type:
            self.counters["ignored"] += 1  # comfort noise (13) or an unnegotiated type
            return
        pcm = g711.decode(pkt.payload, self.codec)
        if len(pcm) != FRAME_SAMPLES or len(self._rx_pending):
            # other ptimes (10, 30 ms): re-cut into 20 ms frames
            pcm = np.concatenate([self._rx_pending, pcm])
            whole = len(pcm) // FRAME_SAMPLES * FRAME_SAMPLES
            self._rx_pending = pcm[whole:]
            frames = [pcm[i:i + FRAME_SAMPLES] for i in range(0, whole, FRAME_SAMPLES)]
        else:
            frames = [pcm]
        for frame in frames:
            try:
                self._on_audio(frame)
            except Exception:  # a listener's bug must not starve the recorder and detector
                log.exception("audio listener failed")
            if self._recorder is not None:
                self._recorder.caller_frame(frame)
            if self._inband is not None:
                self._inband_batch.add(self, frame)

    def _inband_digit(self, digit: str) -> None:
        if not self.closed:
            self._last_inband = (digit, self.loop.time())
            self._emit_digit(digit)

    def _emit_digit(self, digit: str) -> None:
        try:
            self._on_digit(digit)
        except Exception:
            log.exception("digit listener failed")

    # ---- RTCP --------------------------------------------------------------------------------
    def _on_rtcp(self, data: bytes, addr: Any) -> None:
        if self.closed or self._latch is None:
            return
        peer_ip = self._latch.send_to[0]
        if normalize_host(addr[0]) != peer_ip:
            self.counters["dropped_foreign"] += 1
            return
        try:
            packets = parse(data)
        except (ValueError, IndexError):
            self.counters["malformed"] += 1
            return
        self._rtcp_remote = (addr[0], addr[1])
        now = self.loop.time()
        for p in packets:
            if isinstance(p, SenderReport):
                self.rx_stats.on_sender_report(p, now)
            if isinstance(p, (SenderReport, ReceiverReport)):
                for b in p.blocks:
                    if b.ssrc == self.sender.ssrc:
                        rtt = round_trip(b, time.time())
                        self.remote_report = {
                            "fraction_lost": b.fraction_lost / 256,
                            "cumulative_lost": float(b.cumulative_lost),
                            "jitter_ms": b.jitter * 1000 / 8000,
                            **({"rtt_ms": rtt * 1000} if rtt is not None else {}),
                        }
            elif isinstance(p, Bye):
                log.debug("RTCP BYE from %s", addr)

    def _rtcp_packet(self) -> bytes:
        now = self.loop.time()
        block = self.rx_stats.report_block(now)
        blocks = (block,) if block is not None else ()
        if self._sent_since_report:
            head = build_sr(SenderReport(ssrc=self.sender.ssrc, ntp=ntp_timestamp(time.time()),
                                         rtp_timestamp=self.sender.ts, packets=self.sender.packets,
                                         octets=self.sender.octets, blocks=blocks))
        else:
            head = build_rr(ReceiverReport(ssrc=self.sender.ssrc, blocks=blocks))
        self._sent_since_report = False
        return head + build_sdes(self.sender.ssrc, self.cname)

    def _rtcp_dest(self) -> tuple[str, int] | None:
        if self._rtcp_remote is not None:
            return self._rtcp_remote
        if self._latch is None or not self.sending:
            return None
        ip, port = self._latch.send_to
        return (ip, port + 1)

    def _send_rtcp(self, extra: bytes = b"") -> None:
        dest = self._rtcp_dest()
        if dest is not None and self._rtcp is not None:
            self._rtcp.sendto(self._rtcp_packet() + extra, dest)

    # ---- recording ---------------------------------------------------------------------------
    def start_recording(self, path: Path, both_directions: bool) -> None:
        self.stop_recording()
        self._recorder = WavRecorder(path, both_directions=both_directions)

    def stop_recording(self) -> Path | None:
        rec, self._recorder = self._recorder, None
        return rec.close() if rec is not None else None

    # ---- stats and teardown ------------------------------------------------------------------
    @property
    def stats(self) -> dict[str, Any]:
        s = self.rx_stats
        return {
            "local_port": self.local_port,
            "ssrc": self.sender.ssrc,
            "packets_sent": self.sender.packets,
            "bytes_sent": self.sender.octets,
            "packets_received": self.counters["packets_received"],
            "bytes_received": self.counters["bytes_received"],
            "lost": max(0, s.lost),
            "jitter_ms": round(s.jitter_ms, 3),
            "dropped_foreign": self.counters["dropped_foreign"],
            "late": self._reorder.late,
            "malformed": self.counters["malformed"],
            "ignored": self.counters["ignored"],
            "late_wakeups": self.counters["late_wakeups"],
            "skipped_frames": self.counters["skipped_frames"],
            "max_lateness_ms": round(self.counters["max_lateness_ms"], 3),
            "latched": self._latch.latched if self._latch is not None else None,
            "remote": dict(self.remote_report),
        }

    def close(self) -> None:
        """Stop timers, resolve pending playback, close the recording, release the ports."""
        if self.closed:
            return
        with contextlib.suppress(OSError):
            if self.clock is not None:
                self._send_rtcp(build_bye(self.sender.ssrc))  # RFC 3550 6.6
        self.closed = True
        if self._phase is not None:
            Pacer.for_loop(self.loop).leave(self, self._phase)
            self._phase = None
        if self._dtmf_timer is not None:
            self._dtmf_timer.cancel()
        if self._dtmf_done is not None and not self._dtmf_done.done():
            self._dtmf_done.set_result(None)
        self.stop_playback()
        self.stop_recording()
        for t in (self._rtp, self._rtcp):
            if t is not None:
                t.close()
        if self._pool is not None:
            self._pool._release(self.local_port)
        if self._on_closed is not None:
            self._on_closed(self)


if TYPE_CHECKING:
    def _implements_media_port(session: RtpSession) -> MediaPort:
        return session  # mypy checks RtpSession against the voice.callcontrol.call.MediaPort protocol
