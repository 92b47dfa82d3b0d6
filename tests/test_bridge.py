"""voice.callcontrol.bridge on loopback: two RtpSessions bridged, each talking to a plain UDP peer.

The caller side speaks PCMA, the agent side PCMU: audio must cross both ways (converted through
16-bit PCM), digits cross as RFC 4733, and a stereo recording holds each side on its channel.
RTP ports 51000-52999 belong to the outbound/bridge tests.
"""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import numpy as np
import soundfile as sf

from tests.peers import free_port
from tests.peers.pcap import PCMA, PCMU, RtpStreamBuilder
from tests.peers.rtp import RtpEndpoint, heard_audio
from voice.aio.rtp import RtpPortPool, RtpSession
from voice.audio import tone
from voice.callcontrol.bridge import Bridge, BridgeSide

HOST = "127.0.0.1"
RTP_SPAN = (51000, 52999)


def dominant_hz(pcm: np.ndarray) -> float:
    pcm = pcm.astype(np.float64)
    spectrum = np.abs(np.fft.rfft(pcm * np.hanning(len(pcm))))
    return float(np.fft.rfftfreq(len(pcm), 1 / 8000)[int(np.argmax(spectrum))])


async def legs(pool: RtpPortPool, caller_peer: RtpEndpoint, agent_peer: RtpEndpoint
               ) -> tuple[RtpSession, RtpSession]:
    a = await pool.open_session(HOST)
    b = await pool.open_session(HOST)
    a.configure(remote=(HOST, caller_peer.port), payload_type=PCMA, codec="PCMA", dtmf_payload_type=101)
    b.configure(remote=(HOST, agent_peer.port), payload_type=PCMU, codec="PCMU", dtmf_payload_type=101)
    return a, b


async def test_audio_both_ways_with_codec_conversion_dtmf_and_stereo_recording(tmp_path: Path) -> None:
    lo = free_port(RTP_SPAN, tcp=False, count=8)
    pool = RtpPortPool(lo, lo + 7)
    with RtpEndpoint(free_port(RTP_SPAN, tcp=False, count=2)) as caller, \
            RtpEndpoint(free_port(RTP_SPAN, tcp=False, count=2)) as agent:
        a, b = await legs(pool, caller, agent)
        bridge = Bridge(BridgeSide.of_session(a, "caller"), BridgeSide.of_session(b, "agent"))
        wav = tmp_path / "bridge.wav"
        bridge.start(record=wav)
        # caller: 1 kHz in PCMA then digit 5; agent: 400 Hz in PCMU
        up = RtpStreamBuilder(codec=PCMA, ssrc=0x1111).audio(tone(1000, 600, 0.3)).digits("5")
        down = RtpStreamBuilder(codec=PCMU, ssrc=0x2222).audio(tone(400, 600, 0.3))
        caller.send(up.packets, (HOST, a.local_port))
        agent.send(down.packets, (HOST, b.local_port))
        await asyncio.sleep(up.duration + 0.3)
        path = bridge.stop()
        stats = dict(bridge.stats.frames)
        a.close()
        b.close()

    assert path == wav
    assert stats["caller"] >= 25 and stats["agent"] >= 25, stats
    # what the agent heard: PCMU packets carrying the caller's 1 kHz, then the relayed digit
    to_agent = [p for p in agent.received if p.payload_type == PCMU]
    heard_by_agent = heard_audio(to_agent)
    loud = heard_by_agent[np.abs(heard_by_agent) > 2000]
    assert len(loud) > 1000 and abs(dominant_hz(heard_by_agent) - 1000) < 20
    assert agent.digits() == "5"
    # what the caller heard: PCMA packets carrying the agent's 400 Hz
    heard_by_caller = heard_audio([p for p in caller.received if p.payload_type == PCMA])
    assert abs(dominant_hz(heard_by_caller) - 400) < 20
    # each leg sent one stream on its own clock: one SSRC, consecutive sequence numbers (events included)
    for peer in (agent, caller):
        assert len({p.ssrc for p in peer.received}) == 1
        seqs = [p.seq for p in peer.received]  # loopback keeps the order; steps are mod 2**16
        assert all((q - p) & 0xFFFF == 1 for p, q in itertools.pairwise(seqs))
    # the recording: left the caller (1 kHz), right the agent (400 Hz)
    data, rate = sf.read(str(wav), dtype="int16")
    assert rate == 8000 and data.ndim == 2 and data.shape[1] == 2
    assert abs(dominant_hz(data[:, 0]) - 1000) < 20 and abs(dominant_hz(data[:, 1]) - 400) < 20


async def test_stop_detaches_and_feed_queue_stays_bounded() -> None:
    lo = free_port(RTP_SPAN, tcp=False, count=8)
    pool = RtpPortPool(lo, lo + 7)
    with RtpEndpoint(free_port(RTP_SPAN, tcp=False, count=2)) as caller, \
            RtpEndpoint(free_port(RTP_SPAN, tcp=False, count=2)) as agent:
        a, b = await legs(pool, caller, agent)
        bridge = Bridge(BridgeSide.of_session(a, "caller"), BridgeSide.of_session(b, "agent"))
        bridge.start()
        # a burst of 50 frames at once: the agent leg keeps at most a few queued (bounded delay)
        burst = RtpStreamBuilder(codec=PCMA, ssrc=0x3333).audio(tone(1000, 1000, 0.3))
        caller.send([p.__class__(**{**p.__dict__, "time": 0.0}) for p in burst.packets], (HOST, a.local_port))
        await asyncio.sleep(0.3)
        assert b.core.live_frames <= 3
        bridge.stop()
        relayed = bridge.stats.frames["caller"]
        caller.send(burst.packets[:5], (HOST, a.local_port))
        await asyncio.sleep(0.3)
        assert bridge.stats.frames["caller"] == relayed  # detached: nothing relayed after stop()
        a.close()
        b.close()
