"""One call's media leg as a state machine without I/O (the aioquic shape).

Datagrams, their source address and the current time go in (`receive_datagram`); datagrams to
send come out (`datagrams_to_send`, each tagged for the RTP or the RTCP port) and so do events
(`next_event`: digits, audio frames, finished prompts and digits). Time moves only through
`tick(now)`, which the adapter calls at `get_timer()` (every 20 ms frame deadline; earlier while
an RFC 4733 event is being sent). Rules:

- No sockets, timers, files or name resolution here: `configure` takes IP address literals only
  (ValueError otherwise), so nothing downstream can ever resolve a name per packet.
- Sending runs on an absolute 20 ms schedule (`FrameClock`): a late tick sends the frames due, up to
  three; a longer stall skips frames (timestamps move on, the marker starts a new talkspurt).
- Idle policy: while no prompt plays we keep sending silence frames, as FreeSWITCH does and
  Asterisk does with `transmit_silence`. Carriers and SBCs hang up after 30-60 s without RTP, NAT
  pinholes close without outbound traffic, and a continuous stream keeps timestamps and the peer's
  jitter buffer steady. The marker is set on the first packet of the stream and after any gap.
- Receive: strict source latching (`SourceLatch`), a small reorder buffer, RFC 4733 digits once
  per press, and in-band Goertzel detection while the peer has sent no telephone-event yet.
  In-band blocks are classified in batches over many sessions (`detect_inband`), once per event
  loop iteration in the adapter; `tick` runs whatever is still pending, so the core alone is
  complete.
"""

from __future__ import annotations

import random
import struct
from collections import deque
from collections.abc import Iterable
from typing import Any

import numpy as np

from voice.rtp import g711
from voice.rtp.dtmf import GoertzelDetector, Rfc4733Receiver, Rfc4733Sender, key_tone
from voice.rtp.events import (
    AudioReceived,
    DigitReceived,
    DtmfSent,
    MediaEvent,
    Pcm,
    PlaybackFinished,
    Recorder,
    RecordingFailed,
)
from voice.rtp.jitter import ReorderBuffer
from voice.rtp.latch import Address, SourceLatch, media_address, normalize_host
from voice.rtp.pacing import FRAME_SAMPLES, FrameClock, RtpSender
from voice.rtp.packet import PacketError, RtpPacket
from voice.rtp.playback import Playback
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

Datagram = tuple[bytes, Address, bool]  # (data, destination, True: from our RTCP port)
Media = tuple[int, int, bytes]  # a received packet as the reorder buffer holds it: (type, timestamp, payload)
_SEQ_TS_SSRC = struct.Struct("!HII")

RTCP_INTERVAL = 5.0  # RFC 3550 6.2: the recommended minimum
FEED_MAX = 3  # live frames queued by feed(): 60 ms at most
DUPLICATE_KEY_S = 0.5  # an RFC 4733 event this soon after the same key heard in-band is that key
DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
CODECS = ("PCMU", "PCMA")

class MediaSession:
    """The sans-IO media state of one call leg (RTP and RTCP for one audio stream)."""

    def __init__(self, *, rng: random.Random | None = None, rtcp_interval: float = RTCP_INTERVAL,
                 epoch: float = 0.0) -> None:
        """`epoch`: Unix time minus the `now` clock, for the NTP times of our sender reports."""
        self.sender = RtpSender(rng)
        self.ssrc = self.sender.ssrc
        self.cname = f"voice-{self.ssrc:08x}"
        self.epoch = epoch
        self.rtcp_interval = rtcp_interval
        self.closed = False
        self.stopped = False  # closed, or halted by the adapter after a transport failure
        # negotiated state (configure)
        self.codec = "PCMU"
        self.payload_type = 0
        self.dtmf_payload_type: int | None = None
        self.direction = "sendrecv"
        self.remote: Address | None = None
        self._latch: SourceLatch | None = None
        self._silence = g711.silence_frame("PCMU")
        self._sending = False
        self._receiving = True
        # output
        self._out: list[Datagram] = []
        self._events: deque[MediaEvent] = deque()
        self._next_id = 0
        # send side
        self.clock: FrameClock | None = None
        self._playback: Playback | None = None
        self._live: deque[Pcm] = deque()
        self._dtmf: tuple[Rfc4733Sender, int] | None = None  # the event being sent, its request id
        self._dtmf_queue: deque[tuple[str, int, int]] = deque()  # (digit, duration_ms, request id)
        # receive side
        self._reorder: ReorderBuffer[Media] = ReorderBuffer()
        self._rx_ssrc: int | None = None
        self._rfc4733 = Rfc4733Receiver()
        self._rfc4733_seen = False
        self._inband: GoertzelDetector | None = None
        self._inband_frames: list[Pcm] = []
        self._last_inband: tuple[str, float] = ("", 0.0)
        self._rx_pending = np.zeros(0, dtype=np.int16)
        self.rx_stats = ReceptionStats()
        self._recorder: Recorder | None = None
        # RTCP
        self._next_rtcp = 0.0
        self._rtcp_remote: Address | None = None
        self._sent_since_report = False
        self.remote_report: dict[str, float] = {}
        self.counters: dict[str, int] = {"dropped_foreign": 0, "malformed": 0, "ignored": 0,
                                         "late_wakeups": 0, "skipped_frames": 0}
        self._packets_received = 0
        self._bytes_received = 0
        self._max_lateness = 0.0  # seconds

    # ---- negotiation -------------------------------------------------------------------------
    def configure(self, *, remote: tuple[Any, ...], payload_type: int, codec: str,
                  dtmf_payload_type: int | None, now: float, direction: str = "sendrecv",
                  clock: FrameClock | None = None) -> None:
        """Start media (first call) or update it in place (re-INVITE): never a second stream.
        `clock`: the send schedule to join on the first call (default: frames from `now`)."""
        if self.stopped:
            raise RuntimeError("RTP session is closed")
        if codec not in CODECS:
            raise ValueError(f"unsupported codec {codec!r} (expected one of {', '.join(CODECS)})")
        if direction not in DIRECTIONS:
            raise ValueError(f"bad direction {direction!r} (expected one of {', '.join(DIRECTIONS)})")
        address = media_address(remote)
        if address != self.remote:
            self.remote = address
            self._rtcp_remote = None
            self._latch = None  # a new address learns again
        types = frozenset(t for t in (payload_type, dtmf_payload_type) if t is not None)
        if self._latch is None or self._latch.payload_types != types:
            self._latch = SourceLatch(address, types, previous=self._latch)
        self.codec, self.payload_type = codec, payload_type
        self.dtmf_payload_type = dtmf_payload_type
        self._silence = g711.silence_frame(codec)
        self.direction = direction
        self._sending = (direction in ("sendrecv", "sendonly") and address[1] != 0
                         and address[0] not in ("0.0.0.0", "::"))
        self._receiving = direction in ("sendrecv", "recvonly")
        # In-band detection when the peer cannot send telephone-event, and also while it has not
        # sent any yet: some phones (pyVoIP 1.6.8) offer telephone-event but send tones in audio.
        if dtmf_payload_type is None or not self._rfc4733_seen:
            self._inband = self._inband or GoertzelDetector()
        else:
            self._inband = None
        if self.clock is None:
            self.clock = clock or FrameClock(now)
            self._next_rtcp = now + self.rtcp_interval

    @property
    def sending(self) -> bool:
        return self._sending

    @property
    def receiving(self) -> bool:
        return self._receiving

    # ---- the adapter's side ------------------------------------------------------------------
    def datagrams_to_send(self) -> list[Datagram]:
        """What to send now, in order; the list is the caller's."""
        out, self._out = self._out, []
        return out

    def next_event(self) -> MediaEvent | None:
        return self._events.popleft() if self._events else None

    @property
    def has_events(self) -> bool:
        return bool(self._events)

    @property
    def inband_pending(self) -> bool:
        """Audio waits for in-band detection (`detect_inband`, or the next `tick`)."""
        return bool(self._inband_frames)

    def get_timer(self) -> float | None:
        """When `tick` has work next (None: nothing until configure)."""
        if self.stopped or self.clock is None:
            return None
        t = min(self.clock.deadline(), self._next_rtcp)
        if self._dtmf is not None:
            t = min(t, self._dtmf[0].next_deadline() or t)
        held = self._reorder.deadline() if self._reorder.held else None
        return t if held is None else min(t, held)

    @property
    def sending_dtmf(self) -> bool:
        return self._dtmf is not None

    def stop(self) -> None:
        """Halt everything (the adapter's transport failed): no more ticks, sends or receives;
        pending prompts and digits finish as stopped. `close` still releases the rest."""
        if self.stopped:
            return
        self.stopped = True
        self.stop_playback()
        for _sender, ident in ([self._dtmf] if self._dtmf is not None else []):
            self._events.append(DtmfSent(request=ident))
        self._dtmf = None
        while self._dtmf_queue:
            self._events.append(DtmfSent(request=self._dtmf_queue.popleft()[2]))
        self._inband_frames.clear()

    def close(self, now: float) -> None:
        """Queue an RTCP BYE (RFC 3550 6.6) if media ran, then stop."""
        if self.closed:
            return
        if not self.stopped and self.clock is not None:
            self._send_rtcp(now, build_bye(self.ssrc))
        self.closed = True
        self.stop()

    # ---- send path ---------------------------------------------------------------------------
    def tick(self, now: float, ahead: float = 0.0) -> None:
        """Do what is due at `now`: frames on the schedule, RFC 4733 packets, reorder give-ups,
        RTCP reports, pending in-band detection. `ahead`: the packets leave that much later (the
        adapter hands them to a transmitter with their due time), so the send side works for
        `now + ahead`: the frames, RFC 4733 packets and RTCP reports due by then."""
        clock = self.clock
        if self.stopped or clock is None:
            return
        at = now + ahead
        self._tick_send(at, clock)
        self._tick_rest(now, at)

    def _tick_send(self, at: float, clock: FrameClock) -> None:
        """The send side of `tick`, for packets that leave at `at`."""
        if self._dtmf is not None:
            self._dtmf_due(at)
        lateness = at - (clock.t0 + clock.n * clock.period)
        if lateness >= 0:
            if lateness > self._max_lateness:
                self._max_lateness = lateness
            if lateness > 0.005:
                self.counters["late_wakeups"] += 1
            count = clock.take(at)
            if count == 1:
                self._send_frame()
            else:
                self._catch_up(clock, count)

    def _catch_up(self, clock: FrameClock, count: int) -> None:
        send = count if count <= clock.max_catchup else clock.max_catchup
        for _ in range(send):
            self._send_frame()
        if count > send:
            self.counters["skipped_frames"] += count - send
            self.sender.advance(count - send)
            self.sender.gap()

    def _tick_rest(self, now: float, at: float) -> None:
        """Receive-side work due at `now`; an RTCP report due by `at`, when it would leave."""
        if self._reorder.held:
            for media in self._reorder.poll(now):
                self._deliver(media, now)
        if self._inband_frames:
            detect_inband((self,), now)
        if at >= self._next_rtcp:
            self._next_rtcp = at + self.rtcp_interval
            self._send_rtcp(at)

    def _send_frame(self) -> None:
        sender = self.sender
        ours: Pcm | None = None
        live = self._live.popleft() if self._live else None  # consumed in step, even when replaced
        if self._dtmf is not None:
            sender.advance()  # RFC 4733 2.5.1.1: events replace audio, the clock runs on
            self._record_tick(None)
            return
        pb = self._playback
        if pb is not None:
            data = pb.data if pb.codec == self.codec else pb.encoded(self.codec)
            payload = data[pb.pos:pb.pos + FRAME_SAMPLES]
            if self._recorder is not None and self._recorder.both:
                ours = pb.pcm[pb.pos:pb.pos + FRAME_SAMPLES]
            pb.pos += FRAME_SAMPLES
            if pb.pos >= len(pb.pcm):
                payload += self._silence[: FRAME_SAMPLES - len(payload)]
                self._playback = None
                self._finished(pb, True)
        elif live is not None:
            payload = g711.encode(live, self.codec)
            ours = live
        else:
            payload = self._silence
        if self._sending and self._latch is not None:
            self._out.append((sender.frame(self.payload_type, payload), self._latch.send_to, False))
            self._sent_since_report = True
        else:
            sender.gap()  # on hold: the first packet after it starts a talkspurt (marker)
            sender.advance()
        if self._recorder is not None:
            self._record_tick(ours)

    def _record_tick(self, ours: Pcm | None) -> None:
        rec = self._recorder
        if rec is None:
            return
        try:
            rec.tick(ours)
        except Exception as exc:  # disk full, file removed: lose the recording, not the call
            self._recorder = None
            self._events.append(RecordingFailed(recorder=rec, error=exc))

    def _finished(self, pb: Playback, completed: bool) -> None:
        self._events.append(DtmfSent(request=pb.id) if pb.dtmf
                            else PlaybackFinished(playback=pb.id, completed=completed))

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def play(self, pcm: Pcm, *, _dtmf: bool = False) -> int:
        """Queue a prompt (mono int16); a prompt already playing is stopped. Returns the id its
        `PlaybackFinished` will carry. While on hold the prompt runs on silently, as a PBX
        generator does, so a flow never waits forever on a held call."""
        if pcm.dtype != np.int16 or pcm.ndim != 1:
            raise TypeError(f"play() needs mono int16 PCM, got {pcm.dtype} with shape {pcm.shape}")
        pb = Playback(pcm, self._new_id(), _dtmf)
        self.stop_playback()
        if self.stopped or len(pcm) == 0:
            self._finished(pb, not self.stopped)
        else:
            self._playback = pb
        return pb.id

    def stop_playback(self) -> None:
        pb, self._playback = self._playback, None
        if pb is not None:
            self._finished(pb, False)

    def feed(self, frame: Pcm) -> None:
        """Queue one live 20 ms int16 frame (another leg's audio, for a bridge) to send on our own
        clock. A playing prompt takes precedence; silence fills any slot without a frame. Beyond
        FEED_MAX frames the oldest is dropped, so the added delay stays bounded when the other
        leg's clock runs faster than ours."""
        if self.stopped:
            return
        if len(frame) != FRAME_SAMPLES:
            raise ValueError(f"feed() takes {FRAME_SAMPLES}-sample frames, got {len(frame)}")
        self._live.append(frame)
        while len(self._live) > FEED_MAX:
            self._live.popleft()

    @property
    def live_frames(self) -> int:
        """Frames queued by feed() and not sent yet (at most FEED_MAX)."""
        return len(self._live)

    def send_dtmf(self, digit: str, duration_ms: int, now: float) -> int:
        """Send one key press; returns the id its `DtmfSent` will carry. RFC 4733 events when
        negotiated (updates every 50 ms, 3 end packets, marker on the first; digits queue one
        after the other), else the dual tone in-band, which replaces a playing prompt."""
        if self.dtmf_payload_type is None:
            return self.play(key_tone(digit, duration_ms), _dtmf=True)
        Rfc4733Sender(digit, duration_ms, start=now, timestamp=0)  # ValueError for a bad digit now
        ident = self._new_id()
        if self.stopped:
            self._events.append(DtmfSent(request=ident))
            return ident
        self._dtmf_queue.append((digit, duration_ms, ident))
        if self._dtmf is None:
            self._dtmf_due(now)
        return ident

    def _dtmf_due(self, now: float) -> None:
        while True:
            if self._dtmf is None:
                if not self._dtmf_queue:
                    return
                digit, duration_ms, ident = self._dtmf_queue.popleft()
                self._dtmf = (Rfc4733Sender(digit, duration_ms, start=now, timestamp=self.sender.ts), ident)
            events, ident = self._dtmf
            for pkt in events.due(now):
                if self._sending and self._latch is not None:
                    data = self.sender.build(self.dtmf_payload_type or 101, pkt.payload,
                                             timestamp=events.timestamp, marker=pkt.marker)
                    self._out.append((data, self._latch.send_to, False))
            if not events.done:
                return
            self._dtmf = None
            self._events.append(DtmfSent(request=ident))

    # ---- receive path ------------------------------------------------------------------------
    def receive_datagram(self, data: bytes, addr: tuple[Any, ...], now: float, *, rtcp: bool = False) -> None:
        """One datagram from `addr` (as the socket reports it) on our RTP port, or RTCP port."""
        latch = self._latch
        if self.stopped or latch is None:
            return
        if rtcp or (len(data) >= 2 and 192 <= data[1] <= 223):  # RFC 5761 rtcp-mux on the RTP port
            self._receive_rtcp(data, addr, now)
            return
        if len(data) > 12 and data[0] == 0x80:  # no padding, extension or CSRC: nearly every packet
            seq, ts, ssrc = _SEQ_TS_SSRC.unpack_from(data, 2)
            pt, payload = data[1] & 0x7F, data[12:]
        else:
            try:
                pkt = RtpPacket.parse(data)
            except PacketError:
                self.counters["malformed"] += 1
                return
            pt, seq, ts, ssrc, payload = pkt.payload_type, pkt.sequence, pkt.timestamp, pkt.ssrc, pkt.payload
        if not latch.accept(addr, ssrc, seq, pt):
            self.counters["dropped_foreign"] += 1
            return
        if not self._receiving:
            self.counters["ignored"] += 1
            return
        if ssrc != self._rx_ssrc:  # new stream (peer restarted or was re-bridged)
            for old in self._reorder.reset():
                self._deliver(old, now)
            self._rx_ssrc = ssrc
            self._rfc4733.reset()  # event identity is (SSRC, timestamp): a new source starts afresh
        self.rx_stats.update(ssrc, seq, ts, now)
        self._packets_received += 1
        self._bytes_received += len(payload)
        for media in self._reorder.push(seq, (pt, ts, payload), now):
            self._deliver(media, now)

    def _deliver(self, media: Media, now: float) -> None:
        pt, timestamp, payload = media
        if pt == self.dtmf_payload_type:
            digit = self._rfc4733.receive(payload, timestamp)
            if not self._rfc4733_seen:
                self._rfc4733_seen = True
                self._inband = None  # the peer signals keys out of band: trust that from now on
                self._inband_frames.clear()
            if digit is not None:
                if digit == self._last_inband[0] and now - self._last_inband[1] < DUPLICATE_KEY_S:
                    return  # the same key already heard in the audio just before its first event
                self._events.append(DigitReceived(digit=digit, inband=False))
            return
        if pt != self.payload_type:
            self.counters["ignored"] += 1  # comfort noise (13) or an unnegotiated type
            return
        pcm = g711.decode(payload, self.codec)
        if len(pcm) != FRAME_SAMPLES or len(self._rx_pending):
            # other ptimes (10, 30 ms): re-cut into 20 ms frames
            pcm = np.concatenate([self._rx_pending, pcm])
            whole = len(pcm) // FRAME_SAMPLES * FRAME_SAMPLES
            self._rx_pending = pcm[whole:]
            frames = [pcm[i:i + FRAME_SAMPLES] for i in range(0, whole, FRAME_SAMPLES)]
        else:
            frames = [pcm]
        for frame in frames:
            self._events.append(AudioReceived(frame=frame))
            if self._recorder is not None:
                self._recorder.caller_frame(frame)
            if self._inband is not None:
                self._inband_frames.append(frame)

    def _inband_digits(self, digits: list[str], now: float) -> None:
        for digit in digits:
            self._last_inband = (digit, now)
            self._events.append(DigitReceived(digit=digit, inband=True))

    # ---- RTCP --------------------------------------------------------------------------------
    def _receive_rtcp(self, data: bytes, addr: tuple[Any, ...], now: float) -> None:
        assert self._latch is not None
        if normalize_host(addr[0]) != normalize_host(self._latch.send_to[0]):
            self.counters["dropped_foreign"] += 1
            return
        try:
            packets = parse(data)
        except (ValueError, IndexError):
            self.counters["malformed"] += 1
            return
        self._rtcp_remote = (addr[0], addr[1])
        for p in packets:
            if isinstance(p, SenderReport):
                self.rx_stats.on_sender_report(p, now)
            if isinstance(p, (SenderReport, ReceiverReport)):
                for b in p.blocks:
                    if b.ssrc == self.ssrc:
                        rtt = round_trip(b, now + self.epoch)
                        self.remote_report = {
                            "fraction_lost": b.fraction_lost / 256,
                            "cumulative_lost": float(b.cumulative_lost),
                            "jitter_ms": b.jitter * 1000 / 8000,
                            **({"rtt_ms": rtt * 1000} if rtt is not None else {}),
                        }
            elif isinstance(p, Bye):
                self.counters["rtcp_bye"] = self.counters.get("rtcp_bye", 0) + 1

    def _rtcp_packet(self, now: float) -> bytes:
        block = self.rx_stats.report_block(now)
        blocks = (block,) if block is not None else ()
        sender = self.sender
        if self._sent_since_report:
            head = build_sr(SenderReport(ssrc=self.ssrc, ntp=ntp_timestamp(now + self.epoch),
                                         rtp_timestamp=sender.ts, packets=sender.packets,
                                         octets=sender.octets, blocks=blocks))
        else:
            head = build_rr(ReceiverReport(ssrc=self.ssrc, blocks=blocks))
        self._sent_since_report = False
        return head + build_sdes(self.ssrc, self.cname)

    def rtcp_destination(self) -> Address | None:
        """Where our reports go: where the peer's came from, else RTP port + 1 (RFC 3550 11).
        None while not sending, or when the RTP port is 65535 (no port + 1 to guess)."""
        if self._rtcp_remote is not None:
            return self._rtcp_remote
        if self._latch is None or not self._sending:
            return None
        ip, port = self._latch.send_to
        return (ip, port + 1) if port < 65535 else None

    def _send_rtcp(self, now: float, extra: bytes = b"") -> None:
        dest = self.rtcp_destination()
        if dest is not None:
            self._out.append((self._rtcp_packet(now) + extra, dest, True))

    # ---- recording and stats -----------------------------------------------------------------
    def start_recording(self, recorder: Recorder) -> Recorder | None:
        """Write the call to `recorder` from now on; returns the one it replaces (to close)."""
        old, self._recorder = self._recorder, recorder
        return old

    def stop_recording(self) -> Recorder | None:
        rec, self._recorder = self._recorder, None
        return rec

    @property
    def stats(self) -> dict[str, Any]:
        s = self.rx_stats
        c = self.counters
        return {
            "ssrc": self.ssrc,
            "packets_sent": self.sender.packets,
            "bytes_sent": self.sender.octets,
            "packets_received": self._packets_received,
            "bytes_received": self._bytes_received,
            "lost": max(0, s.lost),
            "jitter_ms": round(s.jitter_ms, 3),
            "dropped_foreign": c["dropped_foreign"],
            "late": self._reorder.late,
            "malformed": c["malformed"],
            "ignored": c["ignored"],
            "late_wakeups": c["late_wakeups"],
            "skipped_frames": c["skipped_frames"],
            "max_lateness_ms": round(self._max_lateness * 1000, 3),
            "latched": self._latch.latched if self._latch is not None else None,
            "remote": dict(self.remote_report),
        }


def detect_inband(sessions: Iterable[MediaSession], now: float) -> None:
    """In-band DTMF for many sessions at once: digits become each session's `DigitReceived`.

    Per frame the detector's matrix product and checks cost a dozen numpy calls whose fixed
    overhead dwarfs the arithmetic on 160 samples; at 500 calls that was a tenth of a core. So the
    blocks of every session are classified in one batch (per detector settings), and each
    session's press/release rules then run on its own keys."""
    groups: dict[tuple[float, ...], list[tuple[MediaSession, GoertzelDetector, Any]]] = {}
    for session in sessions:
        frames, session._inband_frames = session._inband_frames, []
        detector = session._inband
        if not frames or detector is None or session.stopped:
            continue
        blocks = detector.take_blocks(frames[0] if len(frames) == 1 else np.concatenate(frames))
        if len(blocks):
            groups.setdefault(detector.settings, []).append((session, detector, blocks))
    for members in groups.values():
        blocks = np.concatenate([m[2] for m in members]) if len(members) > 1 else members[0][2]
        keys = members[0][1].classify_blocks(blocks)
        start = 0
        for session, detector, own in members:
            digits = detector.advance(keys[start:start + len(own)])
            if digits:
                session._inband_digits(digits, now)
            start += len(own)
