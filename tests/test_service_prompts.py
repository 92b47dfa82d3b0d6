"""TTS prompts as the caller hears them over a real SIP call: the RTP that reaches the caller is
the flow's speech, of the length the TTS engine renders for those words."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests.peers import wait_for
from tests.peers.pcap import RtpStreamBuilder
from tests.peers.rtp import RtpEndpoint, heard_audio
from tests.peers.service import running_service
from tests.peers.sipp import run_sipp
from tests.test_service_sip import call_records
from voice.tts import Tts

pytestmark = pytest.mark.peer
REPO = Path(__file__).resolve().parent.parent


def voiced_seconds(pcm: np.ndarray, threshold: float = 300.0) -> float:
    """Seconds of 20 ms frames louder than `threshold` RMS."""
    frames = pcm[: len(pcm) // 160 * 160].reshape(-1, 160).astype(np.float64)
    return float((np.sqrt((frames**2).mean(axis=1)) > threshold).sum()) * 0.02


def test_caller_hears_the_prompts_spoken_at_their_length(tmp_path: Path) -> None:
    with (
        running_service(tmp_path / "svc", ivr={"flows": str(REPO / "tests" / "flows"),
                                               "default_flow": "menu_echo"}) as svc,
        RtpEndpoint() as media,
    ):
        def call() -> object:
            return run_sipp("listen_call.xml", svc.sip_address, workdir=tmp_path / "sipp", calls=1,
                            timeout=40, keys={"rtp_port": media.port})

        outcome: list[object] = []
        caller = threading.Thread(target=lambda: outcome.append(call()))
        caller.start()
        deadline = time.monotonic() + 15
        while not media.sources and time.monotonic() < deadline:
            time.sleep(0.02)
        assert media.sources, "no RTP from the service"
        time.sleep(3.0)  # the menu prompt has been said in full
        media.send(RtpStreamBuilder().digits("2").packets, next(iter(media.sources)))
        caller.join(40)
        result = outcome[0]
        assert result.ok, result.describe()  # type: ignore[attr-defined]
        wait_for(lambda: call_records(svc), 10, "the call's record")  # read through the API
        record = call_records(svc)[-1]
    assert [p["node"] for p in record["path"]] == ["menu", "two"]
    assert [p["text"] for p in record["prompts"]] == ["Press 1, 2 or 3.", "You pressed two. Goodbye."]

    tts = Tts("flite", "slt", tmp_path / "tts")
    expected = sum(voiced_seconds(asyncio.run(tts.render(t)))
                   for t in ("Press 1, 2 or 3.", "You pressed two. Goodbye."))
    heard = voiced_seconds(heard_audio(media.received))
    assert expected > 1.5
    assert abs(heard - expected) <= 0.15 * expected, f"heard {heard:.2f} s, TTS says {expected:.2f} s"
