"""A supervisor's silent listen-in on a call an agent took on a SIP desk phone (the OutboundDial
bridge), not only on browser legs: the in-memory call rig (tests/callmemory.py) on a real loop,
with an aiortc peer as the supervisor's page (ICE and DTLS on loopback)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription

from cti.ports import SoftphoneError
from tests.callmemory import PHONE_ANSWER, Caller, Phone, Rig, until
from voice.callcontrol.webrtc import BrowserPhones

pytestmark = pytest.mark.timeout(60)


def tone_frames(hz: float, n: int, start: int) -> list[np.ndarray]:
    t = (np.arange(160 * n) + 160 * start) / 8000
    pcm = (np.sin(2 * np.pi * hz * t) * 8000).astype(np.int16)
    return [pcm[i:i + 160] for i in range(0, len(pcm), 160)]


def test_a_supervisor_listens_in_on_a_desk_phone_conversation(tmp_path: Path) -> None:
    async def scenario() -> None:
        rig = await Rig(tmp_path).start()
        phones = BrowserPhones()
        rig.switch.browsers = phones
        phones.find_bridged = rig.switch.bridged_call
        pc = RTCPeerConnection()
        heard: list[np.ndarray] = []
        tasks: list[asyncio.Task[None]] = []
        try:
            await rig.add_agent("ann", skills=["support"])
            caller, phone = Caller(rig), Phone(rig)
            caller.invite()
            await caller.answered()
            caller.ack()
            caller.session.press("0")
            await phone.rings()
            phone.reply(200, PHONE_ANSWER)
            await phone.acked()
            agent_media = rig.pool.sessions[1]
            await until(lambda: bool(agent_media.listeners_set), "the bridge")
            (answer,) = rig.switch.calls.values()
            assert answer.call is not None
            key = answer.call.key

            pc.addTransceiver("audio", direction="recvonly")

            @pc.on("track")
            def on_track(track: Any) -> None:
                async def listen() -> None:
                    while True:
                        try:
                            frame = await track.recv()
                        except Exception:
                            return
                        heard.append(frame.to_ndarray().reshape(-1)[::2])

                tasks.append(asyncio.ensure_future(listen()))

            await pc.setLocalDescription(await pc.createOffer())
            with pytest.raises(SoftphoneError) as err:
                await phones.listen("no-such-call", pc.localDescription.sdp)
            assert err.value.field == "call_id"
            listen_id, sdp = await phones.listen(key, pc.localDescription.sdp)
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
            await until(lambda: pc.connectionState == "connected", "the supervisor's media", timeout=15)

            # both sides talk for 1.5 s, paced like RTP: the caller 1 kHz, the desk phone 400 Hz
            fed_to_caller = len(caller.session.fed)
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            for i, (said, answered) in enumerate(zip(tone_frames(1000, 75, 0), tone_frames(400, 75, 0),
                                                     strict=True)):
                caller.session.speak(said)
                agent_media.speak(answered)
                await asyncio.sleep(max(0.0, t0 + 0.02 * (i + 1) - loop.time()))
            await asyncio.sleep(0.2)
            assert len(caller.session.fed) - fed_to_caller == 75  # the caller hears only the agent
            mix = np.concatenate(heard[-50:]).astype(np.float64)  # 48 kHz
            spectrum = np.abs(np.fft.rfft(mix * np.hanning(len(mix))))
            freqs = np.fft.rfftfreq(len(mix), 1 / 48000)

            def band(hz: float) -> float:
                return float(spectrum[(freqs > hz - 30) & (freqs < hz + 30)].max())

            noise = float(np.median(spectrum))
            assert band(1000) > 50 * noise and band(400) > 50 * noise  # the caller and the agent

            # the agent hangs up: the listen-in ends with the conversation
            phone.bye()
            await until(lambda: listen_id not in phones.monitors, "the listen-in to close", timeout=10)
            await caller.hung_up()
            await rig.calls_over()
        finally:
            await pc.close()
            for task in tasks:
                task.cancel()
            await phones.aclose()
            await rig.close()

    asyncio.run(scenario())
