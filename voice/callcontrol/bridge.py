"""Bridging two media legs through the service (caller <-> agent).

The service stays in the media path: every 20 ms frame received on one leg is
decoded to 16-bit PCM and fed to the other leg, which sends it on its own paced
clock (`RtpSession.feed`), encoded in its own codec. So PCMU on one side and PCMA
on the other need nothing special, each leg keeps its own sequence numbers,
timestamps and SSRC, and the added delay is at most one frame plus the small
bounded queue that absorbs the two clocks' phase difference.

Key presses are relayed as RFC 4733 events (or tones, when the other leg did not
negotiate telephone-event) only when they arrived as events: a leg without
telephone-event carries its tones in the audio, which is relayed as it is.

Recording both sides: the caller leg's own recorder in stereo, left what the
caller said, right what the caller was sent (the agent's audio), on the caller
leg's clock.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from voice.aio.rtp import RtpSession
    from voice.callcontrol.call import Call

log = logging.getLogger("voice.callcontrol.bridge")

AudioCallback = Callable[[np.ndarray], None]
DigitCallback = Callable[[str], None]
Subscribe = Callable[[AudioCallback, DigitCallback], Callable[[], None]]


class BridgeMedia(Protocol):
    """What a bridge needs of a leg's media: a voice.aio.rtp.RtpSession, or a browser leg."""

    @property
    def dtmf_payload_type(self) -> int | None: ...
    def feed(self, frame: np.ndarray) -> None: ...
    def stop_playback(self) -> None: ...
    def send_dtmf(self, digit: str, duration_ms: int = 100) -> Awaitable[None]: ...
    def start_recording(self, path: Path, both_directions: bool) -> None: ...
    def stop_recording(self) -> Path | None: ...


@dataclass(kw_only=True)
class BridgeSide:
    """One side of a bridge: the RTP session we send on, and how to hear what it receives."""

    media: BridgeMedia
    subscribe: Subscribe  # installs the two callbacks, returns a function removing them
    name: str = ""

    @classmethod
    def of_call(cls, call: Call, media: BridgeMedia, name: str = "caller") -> BridgeSide:
        """A leg owned by a Call (the IVR's caller): listen beside the Call, not instead of it."""

        def subscribe(on_audio: AudioCallback, on_digit: DigitCallback) -> Callable[[], None]:
            remove_audio = call.add_audio_listener(on_audio)
            remove_digit = call.add_digit_listener(on_digit)

            def remove() -> None:
                remove_audio()
                remove_digit()

            return remove

        return cls(media=media, subscribe=subscribe, name=name)

    @classmethod
    def of_session(cls, media: RtpSession, name: str = "agent") -> BridgeSide:
        """A bare RTP session (the agent leg): the bridge owns its listeners."""

        def subscribe(on_audio: AudioCallback, on_digit: DigitCallback) -> Callable[[], None]:
            media.set_listeners(on_digit, on_audio)
            return lambda: media.set_listeners(lambda _d: None, lambda _f: None)

        return cls(media=media, subscribe=subscribe, name=name)


@dataclass(frozen=True, kw_only=True)
class MonitoredCall:
    """A bridged conversation a supervisor may listen in on (a browser leg's, or a SIP desk
    phone's through OutboundDial): the caller's audio, the agent's, and when it is over."""

    caller: Call
    add_agent_listener: Callable[[AudioCallback], Callable[[], None]]  # returns the remover
    over: Callable[[], Awaitable[Any]]  # resolves when the conversation ends


@dataclass
class BridgeStats:
    frames: dict[str, int] = field(default_factory=dict)  # frames relayed, by receiving leg name
    digits: dict[str, list[str]] = field(default_factory=dict)  # digits relayed, by receiving leg name


class Bridge:
    """Media between `a` (the caller) and `b` (the agent) until `stop()`."""

    def __init__(self, a: BridgeSide, b: BridgeSide, *, relay_dtmf: bool = True,
                 on_key: Callable[[str], None] | None = None) -> None:
        """`on_key(side name)`: a key pressed on that side (the transcript notes it, masked)."""
        if a.media is b.media:
            raise ValueError("cannot bridge a session to itself")
        self.a, self.b = a, b
        self.relay_dtmf = relay_dtmf
        self.on_key = on_key
        self._taps: dict[str, list[AudioCallback]] = {a.name: [], b.name: []}
        self.stats = BridgeStats(frames={a.name: 0, b.name: 0}, digits={a.name: [], b.name: []})
        self._removers: list[Callable[[], None]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._recording = False
        self.running = False

    def start(self, *, record: Path | None = None) -> None:
        """Begin relaying; `record` writes both sides to one stereo WAV (left a, right b)."""
        if self.running:
            return
        self.running = True
        self.a.media.stop_playback()  # hold music or a queue prompt must not cover the agent
        self.b.media.stop_playback()
        for src, dst in ((self.a, self.b), (self.b, self.a)):
            self._removers.append(src.subscribe(self._audio_to(src, dst), self._digit_to(src, dst)))
        if record is not None:
            self.a.media.start_recording(record, True)
            self._recording = True

    def stop(self) -> Path | None:
        """Stop relaying; returns the recording's path when `start(record=...)` made one."""
        if not self.running:
            return None
        self.running = False
        for remove in self._removers:
            remove()
        self._removers.clear()
        for task in self._tasks:
            task.cancel()
        path = None
        if self._recording:
            self._recording = False
            path = self.a.media.stop_recording()
        return path

    def tap(self, side: str, listener: AudioCallback) -> Callable[[], None]:
        """Hear every frame `side` sends across (a supervisor listening in); returns the remover."""
        taps = self._taps[side]
        taps.append(listener)
        return lambda: taps.remove(listener) if listener in taps else None

    def _audio_to(self, src: BridgeSide, dst: BridgeSide) -> AudioCallback:
        taps = self._taps[src.name]

        def relay(frame: np.ndarray) -> None:
            if self.running:
                dst.media.feed(frame)
                self.stats.frames[src.name] += 1
                for tap in taps:
                    tap(frame)

        return relay

    def _digit_to(self, src: BridgeSide, dst: BridgeSide) -> DigitCallback:
        def relay(digit: str) -> None:
            if self.running and self.on_key is not None:
                self.on_key(src.name)
            # Without telephone-event on src the digit was detected in-band: its tone is in the audio.
            if not (self.running and self.relay_dtmf and src.media.dtmf_payload_type is not None):
                return
            self.stats.digits[src.name].append(digit)
            task = asyncio.ensure_future(self._send_digit(dst, digit))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        return relay

    async def _send_digit(self, dst: BridgeSide, digit: str) -> None:
        try:
            await dst.media.send_dtmf(digit, 100)
        except Exception:
            log.exception("relaying DTMF %r to the %s leg failed", digit, dst.name)
