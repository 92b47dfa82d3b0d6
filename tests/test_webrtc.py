"""voice.callcontrol.webrtc with a real WebRTC peer: an aiortc RTCPeerConnection stands in for the
agent's browser (the Chromium test is tests/test_softphone_browser.py). The caller is a real
RtpSession talking to a plain UDP peer; signalling goes through BrowserPhones exactly as the agent
page's websocket hands it over. ICE runs on this machine's host candidates, DTLS-SRTP for real.
RTP ports 33000-33999 belong to the WebRTC tests.
"""

from __future__ import annotations

import asyncio
import fractions
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
import soundfile as sf
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from cti.ports import SoftphoneError
from tests.peers import free_port
from tests.peers.pcap import PCMU, RtpStreamBuilder
from tests.peers.rtp import RtpEndpoint, heard_audio, inband_digits
from voice.aio.rtp import RtpPortPool, RtpSession
from voice.audio import tone
from voice.callcontrol.call import Call, CallInfo
from voice.callcontrol.fake import FakeSignalling
from voice.callcontrol.webrtc import (
    TRANSFER_TARGET,
    TRIM_AFTER,
    BrowserLeg,
    BrowserPhones,
    CallerAudioTrack,
    WebRtcSettings,
    agent_of,
    hold_tune,
)

HOST = "127.0.0.1"
RTP_SPAN = (33000, 33999)


async def record_track(track: MediaStreamTrack, heard: list[np.ndarray]) -> None:
    """Append each audio frame `track` delivers (mono int16; the left channel of stereo) to
    `heard`, until the track ends."""
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            return
        data = frame.to_ndarray().reshape(-1)
        heard.append(data[::2] if frame.layout.name == "stereo" else data)


def dominant_hz(pcm: np.ndarray, rate: int = 8000) -> float:
    x = pcm.astype(np.float64)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[int(np.argmax(spectrum))])


class ToneTrack(MediaStreamTrack):
    """The 'browser microphone': a 48 kHz tone in 20 ms frames, paced like a capture device."""

    kind = "audio"

    def __init__(self, hz: float) -> None:
        super().__init__()
        self.hz, self.n = hz, 0
        self._t0: float | None = None

    async def recv(self) -> av.AudioFrame:
        loop = asyncio.get_running_loop()
        self._t0 = self._t0 if self._t0 is not None else loop.time()
        wait = self._t0 + self.n * 0.02 - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        t = (np.arange(960) + self.n * 960) / 48000
        pcm = (np.sin(2 * np.pi * self.hz * t) * 8000).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = 48000, self.n * 960, fractions.Fraction(1, 48000)
        self.n += 1
        return frame


@dataclass
class FakePage:
    """The agent page's side of the signalling, with an aiortc peer as its browser."""

    phones: BrowserPhones
    agent_id: str = "ann"
    messages: list[dict[str, Any]] = field(default_factory=list)
    offers: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    heard: list[np.ndarray] = field(default_factory=list)  # 48 kHz stereo -> left channel
    pc: RTCPeerConnection | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def send(self, message: dict[str, Any]) -> None:
        self.messages.append(message)
        if message["type"] == "rtc_offer":
            self.offers.put_nowait(message)

    def types(self) -> list[str]:
        return [m["type"] for m in self.messages]

    async def answer(self, offer: dict[str, Any], hz: float = 400.0) -> None:
        pc = self.pc = RTCPeerConnection()

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            self.tasks.append(asyncio.ensure_future(self._listen(track)))

        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer["sdp"], type="offer"))
        pc.addTrack(ToneTrack(hz))
        await pc.setLocalDescription(await pc.createAnswer())
        await self.phones.receive(self.agent_id, {"type": "rtc_answer", "leg": offer["leg"],
                                                  "sdp": pc.localDescription.sdp})

    async def _listen(self, track: MediaStreamTrack) -> None:
        await record_track(track, self.heard)

    def heard_since(self, start: int) -> np.ndarray:
        return np.concatenate(self.heard[start:]) if len(self.heard) > start else np.zeros(0, np.int16)

    async def close(self) -> None:
        if self.pc is not None:
            await self.pc.close()
        for t in self.tasks:
            t.cancel()


@dataclass
class Caller:
    call: Call
    rtp: RtpSession
    peer: RtpEndpoint
    signalling: FakeSignalling


@asynccontextmanager
async def caller_leg() -> AsyncIterator[Caller]:
    lo = free_port(RTP_SPAN, tcp=False, count=4)
    pool = RtpPortPool(lo, lo + 3)
    with RtpEndpoint(free_port(RTP_SPAN, tcp=False, count=2)) as peer:
        rtp = await pool.open_session(HOST)
        rtp.configure(remote=(HOST, peer.port), payload_type=PCMU, codec="PCMU", dtmf_payload_type=101)
        signalling = FakeSignalling()
        call = Call(CallInfo(call_id="webrtc-1@test", caller="+15550100", caller_name="Dana",
                             dialled="100", remote="127.0.0.1:5060"), rtp, signalling)
        try:
            yield Caller(call, rtp, peer, signalling)
        finally:
            rtp.close()


async def until(predicate: Any, timeout: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def test_browser_uris_and_the_hold_tune() -> None:
    assert agent_of("browser:ann") == "ann"
    assert agent_of("browser:") is None and agent_of("sip:ann@host") is None
    tune = hold_tune(4.0)
    assert tune.dtype == np.int16 and len(tune) >= 3 * 8000
    assert 1000 < np.abs(tune).max() < 32767 * 0.3  # audible, and soft
    assert 250 < dominant_hz(tune) < 540


async def test_the_browser_track_paces_plays_tones_first_and_trims_a_standing_backlog() -> None:
    track = CallerAudioTrack()
    loop = asyncio.get_running_loop()
    frames = [np.full(160, i, dtype=np.int16) for i in range(60)]
    for f in frames[:3]:
        track.feed(f)  # a burst: two frames more than the clock takes
    got, pts = [], []
    t0 = loop.time()
    for f in frames[3:40]:
        out = await track.recv()
        assert out.sample_rate == 8000 and out.samples == 160
        got.append(int(out.to_ndarray()[0, 0]))
        pts.append(out.pts)
        track.feed(f)
    elapsed = loop.time() - t0
    assert elapsed >= 36 * 0.02 - 0.005  # one frame per 20 ms, on absolute deadlines
    assert pts == [i * 160 for i in range(37)]
    assert track.trimmed == 1  # the backlog cost one frame after TRIM_AFTER slots, not every frame's delay
    assert got == list(range(TRIM_AFTER - 1)) + list(range(TRIM_AFTER, 38))  # the 25th slot skips one
    track.play(np.full(400, 7, dtype=np.int16))  # a key's tone goes first (3 frames, padded)
    played = [int((await track.recv()).to_ndarray()[0, -1]) for _ in range(4)]
    assert played[:2] == [7, 7] and played[2] == 0  # padding of the last tone frame
    track.stop()


@pytest.mark.timeout(60)
async def test_answer_audio_both_ways_hold_keys_and_hang_up_from_the_page(tmp_path: Path) -> None:
    phones = BrowserPhones()
    page = FakePage(phones)
    detach = phones.attach("ann", page.send)
    async with caller_leg() as caller:
        # [rtp] record = both: the call's recording is the caller leg's (voice.callcontrol.inbound)
        caller.rtp.start_recording(tmp_path / "call.wav", True)
        ringing = asyncio.ensure_future(phones.connect(caller.call, caller.rtp, "browser:ann", timeout=10))
        offer = await asyncio.wait_for(page.offers.get(), 10)
        assert offer["caller"] == "+15550100" and offer["call_id"] == "webrtc-1@test"
        assert "a=fingerprint:sha-256" in offer["sdp"] and "typ host" in offer["sdp"]  # DTLS-SRTP, ICE
        assert "opus/48000" in offer["sdp"].lower()
        await page.answer(offer, hz=400)
        leg = await asyncio.wait_for(ringing, 15)
        assert isinstance(leg, BrowserLeg)
        assert leg.answered and leg.status == 200, leg.reason
        assert "connected" in [m.get("state") for m in page.messages if m["type"] == "rtc_state"]

        # the caller says 1 kHz: the browser hears it (Opus, 48 kHz)
        up = RtpStreamBuilder(codec=PCMU, ssrc=0x1111).audio(tone(1000, 1500, 0.3))
        heard_before = len(page.heard)
        caller.peer.send(up.packets, (HOST, caller.rtp.local_port))
        await asyncio.sleep(up.duration + 0.4)
        to_agent = page.heard_since(heard_before)
        assert len(to_agent) > 48000 // 2
        assert abs(dominant_hz(to_agent, 48000) - 1000) < 30
        # the browser's 400 Hz reaches the caller, in PCMU on the caller leg's clock
        heard = heard_audio([p for p in caller.peer.received if p.payload_type == PCMU][-40:])
        assert np.abs(heard).max() > 1000 and abs(dominant_hz(heard) - 400) < 20
        assert leg.frames_received > 50

        # hold: the caller hears the hold tune instead of the agent
        await phones.receive("ann", {"type": "rtc_hold", "leg": leg.id, "on": True})
        mark = len(caller.peer.received)
        await asyncio.sleep(1.2)
        held = heard_audio([p for p in caller.peer.received[mark:] if p.payload_type == PCMU][10:])
        assert np.abs(held).max() > 1000 and abs(dominant_hz(held) - 400) > 50
        await phones.receive("ann", {"type": "rtc_hold", "leg": leg.id, "on": False})
        mark = len(caller.peer.received)
        await asyncio.sleep(0.8)
        back = heard_audio([p for p in caller.peer.received[mark:] if p.payload_type == PCMU][10:])
        assert abs(dominant_hz(back) - 400) < 20

        # a key the caller presses (RFC 4733) reaches the agent's ear as its tone
        mark = len(page.heard)
        keys = RtpStreamBuilder(codec=PCMU, ssrc=0x1111, seq=3000, timestamp=500000).silence(100).digits("8")
        caller.peer.send(keys.packets, (HOST, caller.rtp.local_port))
        await asyncio.sleep(keys.duration + 0.5)
        assert "8" in inband_digits(page.heard_since(mark)[::6])  # 48 kHz -> 8 kHz (the tone is < 1.7 kHz)

        # keys from the page's keypad reach the caller as RFC 4733 events
        await phones.receive("ann", {"type": "rtc_dtmf", "leg": leg.id, "digits": "19#"})
        await until(lambda: caller.peer.digits() == "19#", 5, "the keys at the caller")
        # the transcript keeps that keys went each way, never which (voice.callcontrol.masking)
        keyed = [(x.speaker, x.text) for x in caller.call.transcript if x.kind == "dtmf"]
        assert keyed == [("caller", "****"), ("agent", "****")]
        captions = [(m["speaker"], m["kind"], m["text"]) for m in page.messages if m["type"] == "rtc_caption"]
        assert captions == [("caller", "dtmf", "****"), ("agent", "dtmf", "****")]  # live, masked too

        # bad messages name the field and change nothing
        for bad, name in (({"type": "rtc_dtmf", "leg": leg.id, "digits": "12x"}, "digits"),
                          ({"type": "rtc_hold", "leg": leg.id, "on": "yes"}, "on"),
                          ({"type": "rtc_answer", "leg": leg.id, "sdp": "v=0"}, "leg"),
                          ({"type": "rtc_hangup", "leg": "nope"}, "leg"),
                          ({"type": "rtc_fly", "leg": leg.id}, "type")):
            with pytest.raises(SoftphoneError) as err:
                await phones.receive("ann", bad)
            assert err.value.field == name
        with pytest.raises(SoftphoneError):
            await phones.receive("bob", {"type": "rtc_hangup", "leg": leg.id})  # not bob's call
        assert not leg.ended

        # the agent hangs up on the page: the conversation ends, the caller's call goes on
        await phones.receive("ann", {"type": "rtc_hangup", "leg": leg.id})
        end = await asyncio.wait_for(leg.wait_finished(), 5)
        assert end.hangup_by == "agent" and end.talk_seconds > 3
        assert not caller.call.ended
        await until(lambda: leg.id not in phones.legs, 5, "the leg to be forgotten")
        assert "rtc_end" in page.types()
        recording = caller.rtp.stop_recording()
    await page.close()
    detach()
    await phones.aclose()
    # both legs in the recording: left what the caller said (1 kHz), right the browser agent (400 Hz)
    assert recording is not None
    pcm, rate = sf.read(str(recording), dtype="int16")
    assert rate == 8000 and pcm.ndim == 2
    left, right = loud_frames(pcm[:, 0]), loud_frames(pcm[:, 1])
    assert len(left) / 8000 > 1.0 and abs(dominant_hz(left) - 1000) < 20
    assert len(right) / 8000 > 2.0 and abs(dominant_hz(right) - 400) < 20


def loud_frames(pcm: np.ndarray, rms: float = 1000.0) -> np.ndarray:
    """The 20 ms frames of `pcm` louder than `rms`, end to end."""
    frames = pcm[: len(pcm) // 160 * 160].reshape(-1, 160).astype(np.float64)
    return frames[np.sqrt((frames ** 2).mean(axis=1)) > rms].reshape(-1)


@pytest.mark.timeout(30)
async def test_no_page_reject_and_the_caller_leaving_while_it_rings() -> None:
    phones = BrowserPhones(WebRtcSettings(connect_timeout=3))
    async with caller_leg() as caller:
        # no page open: fails at once, nothing offered
        leg = await asyncio.wait_for(phones.connect(caller.call, caller.rtp, "browser:ann", timeout=5), 5)
        assert not leg.answered and leg.status == 480

        page = FakePage(phones)
        detach = phones.attach("ann", page.send)
        ringing = asyncio.ensure_future(phones.connect(caller.call, caller.rtp, "browser:ann", timeout=10))
        offer = await asyncio.wait_for(page.offers.get(), 10)
        await phones.receive("ann", {"type": "rtc_reject", "leg": offer["leg"]})
        leg = await asyncio.wait_for(ringing, 5)
        assert not leg.answered and (leg.status, leg.reason) == (603, "declined")
        await until(lambda: "rtc_end" in page.types(), 5, "rtc_end after the rejection")

        # nobody answers: 408 after the ring time
        leg = await asyncio.wait_for(phones.connect(caller.call, caller.rtp, "browser:ann", timeout=0.5), 5)
        assert leg.status == 408
        assert (await page.offers.get())["leg"] == leg.id  # it was offered, and withdrawn

        # the caller hangs up while the page rings: 487, and the page stops ringing
        page.messages.clear()
        ringing = asyncio.ensure_future(phones.connect(caller.call, caller.rtp, "browser:ann", timeout=10))
        offer = await asyncio.wait_for(page.offers.get(), 10)
        caller.signalling.remote_hangup("bye")
        leg = await asyncio.wait_for(ringing, 5)
        assert leg.status == 487 and not leg.answered
        await until(lambda: any(m["type"] == "rtc_end" and m["leg"] == offer["leg"] for m in page.messages),
                    5, "rtc_end for the abandoned call")
        with pytest.raises(SoftphoneError):
            await phones.receive("ann", {"type": "rtc_answer", "leg": offer["leg"], "sdp": "v=0"})
        detach()
    await phones.aclose()


@pytest.mark.timeout(30)
async def test_the_caller_hanging_up_ends_the_browser_leg() -> None:
    phones = BrowserPhones()
    page = FakePage(phones)
    detach = phones.attach("ann", page.send)
    async with caller_leg() as caller:
        ringing = asyncio.ensure_future(phones.connect(caller.call, caller.rtp, "browser:ann", timeout=10))
        await page.answer(await asyncio.wait_for(page.offers.get(), 10))
        leg = await asyncio.wait_for(ringing, 15)
        assert leg.answered
        await asyncio.sleep(0.3)
        caller.signalling.remote_hangup("bye")
        end = await asyncio.wait_for(leg.wait_finished(), 5)
        assert end.hangup_by == "caller"
        await until(lambda: "rtc_end" in page.types(), 5, "rtc_end at the page")
        assert leg.ended
    await page.close()
    detach()
    await phones.aclose()


@pytest.mark.timeout(60)
async def test_a_blind_transfer_from_the_page_ends_the_agents_side_and_says_where_to() -> None:
    """The page's rtc_transfer ends the agent's leg at once; its end carries the target for the
    desk (cti.transfers), which rings the next one: here bob's browser, as the switch would."""
    phones = BrowserPhones()
    ann, bob = FakePage(phones, "ann"), FakePage(phones, "bob")
    detach = [phones.attach("ann", ann.send), phones.attach("bob", bob.send)]
    async with caller_leg() as caller:
        ringing = asyncio.ensure_future(phones.connect(caller.call, caller.rtp, "browser:ann", timeout=10))
        await ann.answer(await asyncio.wait_for(ann.offers.get(), 10), hz=400)
        leg = await asyncio.wait_for(ringing, 15)
        assert leg.answered
        await asyncio.sleep(1.0)
        for bad in ("browser:ann", "tel:+1555", "sip:", "queue:", "12 34"):
            with pytest.raises(SoftphoneError) as err:
                await phones.receive("ann", {"type": "rtc_transfer", "leg": leg.id, "target": bad})
            assert err.value.field == "target"

        await phones.receive("ann", {"type": "rtc_transfer", "leg": leg.id, "target": "browser:bob"})
        end = await asyncio.wait_for(leg.wait_finished(), 5)  # at once: the agent goes to wrap-up
        assert end.transfer_to == "browser:bob" and end.hangup_by == "agent" and end.talk_seconds > 0.9
        await until(lambda: {"type": "rtc_end", "leg": leg.id, "reason": "transferred"} in ann.messages,
                    5, "ann's page to hear of the transfer")
        assert not caller.call.ended
        ringing = asyncio.ensure_future(phones.connect(caller.call, caller.rtp, "browser:bob", timeout=10))
        await bob.answer(await asyncio.wait_for(bob.offers.get(), 10), hz=600)
        bobs = await asyncio.wait_for(ringing, 15)
        assert bobs.answered
        await asyncio.sleep(1.2)
        heard = heard_audio([p for p in caller.peer.received if p.payload_type == PCMU][-40:])
        assert abs(dominant_hz(heard) - 600) < 20  # the caller talks to bob now
        await phones.receive("bob", {"type": "rtc_hangup", "leg": bobs.id})
        end = await asyncio.wait_for(bobs.wait_finished(), 5)
        assert end.hangup_by == "agent" and end.transfer_to is None
    await ann.close()
    await bob.close()
    for d in detach:
        d()
    await phones.aclose()


def test_the_transfer_box_takes_queues_uris_agents_and_numbers() -> None:
    for good in ("queue:billing", "sip:2001@pbx.example.com", "browser:bob", "2001", "+4930123456"):
        assert TRANSFER_TARGET.fullmatch(good), good
    for bad in ("queue:", "tel:123", "sip:", "12 34", "browser:", "1"):
        assert not TRANSFER_TARGET.fullmatch(bad), bad


class SpeechTrack(MediaStreamTrack):
    """The 'browser microphone' saying one phrase (8 kHz PCM, sent as 48 kHz), then silence."""

    kind = "audio"

    def __init__(self, pcm8k: np.ndarray, delay: float) -> None:
        super().__init__()
        pcm = np.repeat(pcm8k, 6)  # 8 -> 48 kHz; the browser side's encoder filters it
        lead = np.zeros(int(delay * 48000), dtype=np.int16)
        self.pcm = np.concatenate([lead, pcm.astype(np.int16)])
        self.n = 0
        self._t0: float | None = None

    async def recv(self) -> av.AudioFrame:
        loop = asyncio.get_running_loop()
        self._t0 = self._t0 if self._t0 is not None else loop.time()
        wait = self._t0 + self.n * 0.02 - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        chunk = self.pcm[self.n * 960:(self.n + 1) * 960]
        if len(chunk) < 960:
            chunk = np.concatenate([chunk, np.zeros(960 - len(chunk), dtype=np.int16)])
        frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = 48000, self.n * 960, fractions.Fraction(1, 48000)
        self.n += 1
        return frame


@pytest.mark.timeout(120)
async def test_both_sides_of_the_conversation_land_in_the_transcript_as_two_speakers() -> None:
    from voice.asr.engine import EngineSpec
    from voice.asr.pool import RecognizerPool
    from voice.asr.testaudio import render_phrase

    pool = RecognizerPool(EngineSpec(name="pocketsphinx"), workers=1)
    await pool.start()
    phones = BrowserPhones(speech=lambda: pool)
    page = FakePage(phones)
    detach = phones.attach("ann", page.send)
    try:
        async with caller_leg() as caller:
            ringing = asyncio.ensure_future(
                phones.connect(caller.call, caller.rtp, "browser:ann", timeout=10))
            offer = await asyncio.wait_for(page.offers.get(), 10)
            pc = page.pc = RTCPeerConnection()
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer["sdp"], type="offer"))
            agent_says = render_phrase("thank you for calling how can i help you today", voice="kal")
            pc.addTrack(SpeechTrack(agent_says, delay=3.5))
            await pc.setLocalDescription(await pc.createAnswer())
            await phones.receive("ann", {"type": "rtc_answer", "leg": offer["leg"],
                                         "sdp": pc.localDescription.sdp})
            leg = await asyncio.wait_for(ringing, 15)
            assert leg.answered
            caller_says = render_phrase("i would like to check my invoice please", voice="slt")
            up = RtpStreamBuilder(codec=PCMU, ssrc=0x1111).silence(300).audio(caller_says).silence(1200)
            caller.peer.send(up.packets, (HOST, caller.rtp.local_port))
            # both have finished speaking (and their pauses ended the utterances) before the hang-up
            await asyncio.sleep(max(up.duration, 3.5 + len(agent_says) / 8000) + 3.0)
            # decoding runs in the pool's processes: on a loaded machine it may lag the call
            await until(lambda: {s.speaker for s in caller.call.transcript if s.kind == "speech"}
                        == {"caller", "agent"}, 45, "both speakers in the transcript")
            await phones.receive("ann", {"type": "rtc_hangup", "leg": leg.id})
            end = await asyncio.wait_for(leg.wait_finished(), 20)
            assert end.hangup_by == "agent"
            speech = [s for s in caller.call.transcript if s.kind == "speech"]
            by = {s.speaker: s for s in speech}
            assert set(by) == {"caller", "agent"}, speech
            captions = {m["speaker"] for m in page.messages
                        if m["type"] == "rtc_caption" and m["kind"] == "speech"}
            assert captions == {"caller", "agent"}  # live captions on the agent's page, both speakers
            assert by["caller"].start < by["agent"].start  # the caller spoke first, on the call's clock
            assert by["caller"].end - by["caller"].start > 1.0 and by["agent"].end - by["agent"].start > 1.0
            said = {"caller": "i would like to check my invoice please",
                    "agent": "thank you for calling how can i help you today"}
            for s in speech:  # free-form PocketSphinx is rough, but most of the words are there
                assert s.engine == "pocketsphinx"
                assert len(set(s.text.split()) & set(said[s.speaker].split())) >= 3, s
    finally:
        await page.close()
        detach()
        await phones.aclose()
        await pool.close()


def test_the_webrtc_config_section(tmp_path: Any) -> None:
    from voice.callcontrol.webrtc import browser_phones
    from voice.config import ConfigError, load_config

    good = tmp_path / "good.conf"
    good.write_text("[webrtc]\nturn_url = turn:turn.example.com:3478?transport=udp\nturn_username = a\n"
                    "turn_password = s3cret\ncodecs = pcmu, opus\n")
    config = load_config(good)
    assert config.webrtc.codecs == ("PCMU", "opus")
    phones = browser_phones(config)
    assert [s.page_form() for s in phones.settings.ice_servers] == [
        {"urls": "turn:turn.example.com:3478?transport=udp", "username": "a", "credential": "s3cret"}]
    for line, key in (("codecs = opus, g729", "codecs"), ("turn_url = http://x", "turn_url"),
                      ("turn = x", "turn")):
        bad = tmp_path / "bad.conf"
        bad.write_text(f"[webrtc]\n{line}\n")
        with pytest.raises(ConfigError, match=rf"\[webrtc\].*{key}"):
            load_config(bad)
