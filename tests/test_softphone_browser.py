"""The softphone in a real Chromium (Debian's, headless, through Playwright) against the real service:
a sipp caller presses 0 in the demo flow, the queue rings the agent whose phone is `browser:a1`,
the page rings (panel + screen pop), the test clicks Answer; the agent's speech (Chromium's fake
microphone playing a flite WAV) reaches the caller's RTP socket and the caller's tone reaches the
page (WebRTC stats: packets and audio energy received); hold plays music to the caller, mute
silences the agent, the keypad sends RFC 4733 keys to the caller, a supervisor listens in from the
admin page, Hang up on the page ends the agent's side (the flow says goodbye and hangs up the
caller), and the interaction's transcript has the agent's words."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from tests.peers.pcap import PCMU, RtpStreamBuilder
from tests.peers.rtp import RtpEndpoint, heard_audio
from tests.peers.service import running_service
from tests.peers.sipp import run_sipp, sipp_background
from voice.asr.testaudio import render_phrase
from voice.audio import tone

pytestmark = [pytest.mark.peer, pytest.mark.browser]

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).parent / "artifacts"
CALLER = "+15550188"
SPEECH = "Hello, this is Ann from customer care. How can I help you today? I can see your last order."
CALLER_SAYS = "i would like to check my invoice please"


def _agent_voice(wav: Path) -> None:
    """The agent's microphone: the phrase, then 1.5 s of silence (Chromium loops the file), so
    the agent speaks in sentences with pauses, as people do."""
    import soundfile as sf

    subprocess.run(["flite", "-t", SPEECH, "-o", str(wav)], check=True, timeout=30)
    pcm, rate = sf.read(str(wav), dtype="int16")
    sf.write(str(wav), np.concatenate([pcm, np.zeros(int(1.5 * rate), dtype=np.int16)]), rate,
             subtype="PCM_16")


def _chromium_args(wav: Path) -> list[str]:
    return ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run",
            "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={wav}", "--autoplay-policy=no-user-gesture-required"]


async def _json(http: aiohttp.ClientSession, method: str, url: str, key: str, body: Any = None) -> Any:
    async with http.request(method, url, json=body, headers={"Authorization": f"Bearer {key}"}) as r:
        assert r.status < 300, await r.text()
        return await r.json()


def _loud_seconds(pcm: np.ndarray, threshold: float = 300.0) -> float:
    """Seconds of 20 ms frames louder than `threshold` RMS (speech present)."""
    frames = pcm[: len(pcm) // 160 * 160].astype(np.float64).reshape(-1, 160)
    return float((np.sqrt((frames ** 2).mean(axis=1)) > threshold).sum() * 0.02)


def _dominant_hz(pcm: np.ndarray) -> float:
    x = pcm.astype(np.float64)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / 8000)[int(np.argmax(spectrum))])


STATS_JS = """async () => {
  const pc = window.softphone.pc;
  if (!pc) return null;
  let out = null;
  (await pc.getStats()).forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "audio")
      out = { packets: s.packetsReceived, bytes: s.bytesReceived, energy: s.totalAudioEnergy || 0,
              level: s.audioLevel || 0 };
  });
  return out;
}"""


@pytest.mark.timeout(150)
async def test_an_agent_answers_in_the_browser_talks_holds_mutes_sends_keys_and_hangs_up(
        tmp_path: Path) -> None:
    from playwright.async_api import async_playwright, expect

    assert shutil.which(CHROMIUM), "chromium is missing: apt-get install chromium (see the Makefile)"
    wav = tmp_path / "agent.wav"
    _agent_voice(wav)
    with (running_service(tmp_path / "svc", start_timeout=90, sip={"t1_ms": 100}) as svc,
          RtpEndpoint() as caller_media):
        api = f"{svc.http_url}/api/v1"
        async with aiohttp.ClientSession() as http:
            customer = await _json(http, "POST", f"{api}/customers", svc.api_key,
                                   {"name": "Dana Scully", "phone": CALLER})
            await _json(http, "POST", f"{api}/agents", svc.api_key, {
                "id": "a1", "name": "Ann Agent", "sip_uri": "browser:a1", "skills": ["agents", "support"],
                "password": "agent-secret-1"})
            await _json(http, "PATCH", f"{api}/agents/a1", svc.api_key, {"state": "available"})
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=_chromium_args(wav),
                                               headless=True)
            try:
                page = await browser.new_page(viewport={"width": 1280, "height": 900})
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                await page.goto(f"{svc.http_url}/agent/login")
                await page.fill("#agent", "a1")
                await page.fill("#password", "agent-secret-1")
                await page.click("#signin")
                await expect(page.locator("#sp-status")).to_have_text("ready", timeout=15000)

                caller = asyncio.ensure_future(asyncio.to_thread(
                    run_sipp, "listen_call.xml", svc.sip_address, workdir=tmp_path / "caller", calls=1,
                    timeout=120, keys={"rtp_port": caller_media.port},
                    replace={"<sip:sipp@[local_ip]": f"<sip:{CALLER}@[local_ip]",
                             'timeout="30000"': 'timeout="90000"'}))
                deadline = time.monotonic() + 15
                while not caller_media.sources:
                    assert time.monotonic() < deadline, "no RTP from the service"
                    await asyncio.sleep(0.05)
                service_rtp = next(iter(caller_media.sources))
                caller_media.send(RtpStreamBuilder().silence(200).digits("0").packets, service_rtp)

                # the page rings with the screen pop
                await expect(page.locator("#softphone")).to_have_class("softphone ringing", timeout=30000)
                await expect(page.locator("#sp-caller")).to_contain_text(CALLER)
                await expect(page.locator("#caller-number")).to_have_text(CALLER)
                await expect(page.locator("#customer .customer-name")).to_have_text("Dana Scully")
                await page.click("#sp-answer")
                await expect(page.locator("#sp-status")).to_have_text("on call", timeout=15000)
                await expect(page.locator("#state")).to_have_text("on call")

                # the agent's speech reaches the caller
                mark = len(caller_media.received)
                await asyncio.sleep(3.0)
                talk = heard_audio([p for p in caller_media.received[mark:] if p.payload_type == PCMU])
                assert len(talk) > 2.5 * 8000
                assert _loud_seconds(talk) > 0.8, "the agent's speech did not reach the caller"

                # the caller's 1 kHz tone reaches the page: packets and audio energy received
                before = await page.evaluate(STATS_JS)
                assert before is not None and before["packets"] > 50
                await asyncio.sleep(1.5)  # the caller is silent: the service sends silence
                quiet = await page.evaluate(STATS_JS)
                up = RtpStreamBuilder(seq=5000, timestamp=400000, ssrc=0x5151).audio(tone(1000, 1500, 0.3))
                caller_media.send(up.packets, service_rtp)
                await asyncio.sleep(up.duration + 1.0)
                during = await page.evaluate(STATS_JS)
                assert during["packets"] > quiet["packets"] + 50 and during["bytes"] > quiet["bytes"]
                quiet_energy = quiet["energy"] - before["energy"]
                tone_energy = during["energy"] - quiet["energy"]
                assert tone_energy > 0.01 and tone_energy > 5 * quiet_energy, (before, quiet, during)

                ARTIFACTS.mkdir(exist_ok=True)
                await page.screenshot(path=str(ARTIFACTS / "softphone.png"), full_page=True)

                # a supervisor listens in from the admin page (own session): audio arrives there
                admin_context = await browser.new_context()
                admin = await admin_context.new_page()
                admin.on("pageerror", lambda exc: errors.append(f"admin: {exc}"))
                await admin.goto(f"{svc.http_url}/admin/login")
                await admin.fill("#key", svc.api_key)
                await admin.press("#key", "Enter")
                await expect(admin.locator("#listen-call")).to_contain_text(f"{CALLER} → a1", timeout=10000)
                await admin.click("#listen-start")
                await expect(admin.locator("#listen-status")).to_have_text("listening", timeout=15000)
                await asyncio.sleep(2.0)
                heard = await admin.evaluate(STATS_JS.replace("window.softphone.pc", "window.listenIn.pc"))
                assert heard is not None and heard["packets"] > 50 and heard["energy"] > 0.001, heard
                await admin.click("#listen-stop")
                await expect(admin.locator("#listen-status")).to_have_text("stopped")
                await admin_context.close()

                # hold: the caller hears the hold tune (no speech), resume brings the agent back
                await page.click("#sp-hold")
                await expect(page.locator("#sp-status")).to_have_text("on hold")
                mark = len(caller_media.received)
                await asyncio.sleep(2.0)
                held = heard_audio([p for p in caller_media.received[mark:] if p.payload_type == PCMU][10:])
                assert _loud_seconds(held, 500) > 1.0 and 250 < _dominant_hz(held) < 540
                await page.click("#sp-hold")
                await expect(page.locator("#sp-status")).to_have_text("on call")

                # mute: the caller hears (almost) nothing of the agent; the caller speaks meanwhile
                await page.click("#sp-mute")
                await expect(page.locator("#sp-mute")).to_have_text("Unmute")
                await asyncio.sleep(0.6)
                mark = len(caller_media.received)
                says = RtpStreamBuilder(seq=100, timestamp=16000, ssrc=0x6161).audio(
                    render_phrase(CALLER_SAYS, voice="slt")).silence(1000)
                caller_media.send(says.packets, service_rtp)
                await asyncio.sleep(max(2.0, says.duration))
                muted = heard_audio([p for p in caller_media.received[mark:] if p.payload_type == PCMU])
                assert len(muted) > 1.5 * 8000 and _loud_seconds(muted) < 0.1
                await page.click("#sp-mute")

                # the keypad: keys to the caller as RFC 4733 events
                await page.click("#sp-keys")
                for key in "42#":
                    await page.click(f'.sp-key[data-key="{key}"]')
                    await asyncio.sleep(0.25)
                deadline = time.monotonic() + 5
                while caller_media.digits() != "42#" and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                assert caller_media.digits() == "42#"

                # hang up on the page: the agent's side ends, the flow says goodbye and hangs up
                await page.click("#sp-hangup")
                await expect(page.locator("#sp-status")).to_have_text("you hung up")
                result = await caller
                assert result.ok, result.describe()
                await expect(page.locator("#state")).to_have_text("wrap up", timeout=10000)
                assert errors == []
            finally:
                await browser.close()
        async with aiohttp.ClientSession() as http:
            agent = await _json(http, "GET", f"{api}/agents/a1", svc.api_key)
            assert agent["state"] == "wrap_up"
            timeline = await _json(http, "GET", f"{api}/customers/{customer['id']}/interactions", svc.api_key)
            call = next(i for i in timeline["interactions"] if i["channel"] == "voice")
            detail = await _json(http, "GET", f"{api}/interactions/{call['id']}", svc.api_key)
    assert detail["ivr"]["transfer_target"] == "queue:agents", json.dumps(detail)[:2000]
    # the agent's side of the conversation is in the timeline, transcribed by the service's speech
    # pool from what the browser sent. (Both speakers together: tests/test_webrtc.py; here, on a
    # loaded machine, the caller's last utterance may still be decoding when the record is written.)
    speech = [s for s in detail["transcript"] if s["kind"] == "speech"]
    agent_words = {w for s in speech if s["speaker"] == "agent" for w in s["text"].split()}
    assert len(agent_words & set(SPEECH.lower().replace(",", "").replace(".", "").split())) >= 3, speech


@pytest.mark.timeout(150)
async def test_a_blind_transfer_from_the_page_reaches_a_sip_phone(tmp_path: Path) -> None:
    """The agent answers in the browser and transfers to a SIP phone (sipp): the page shows the
    transfer, the caller hears the phone's audio, the phone hangs up and the flow ends the call."""
    from playwright.async_api import async_playwright, expect

    wav = tmp_path / "agent.wav"
    _agent_voice(wav)
    with (
        running_service(tmp_path / "svc", start_timeout=90, sip={"t1_ms": 100}) as svc,
        RtpEndpoint() as caller_media,
        RtpEndpoint() as phone_media,
        sipp_background("agent_answer_hangup.xml", workdir=tmp_path / "phone",
                        keys={"rtp_port": phone_media.port},
                        replace={'milliseconds="1200"': 'milliseconds="3000"'}) as phone,
    ):
        api = f"{svc.http_url}/api/v1"
        async with aiohttp.ClientSession() as http:
            await _json(http, "POST", f"{api}/agents", svc.api_key, {
                "id": "a1", "name": "Ann Agent", "sip_uri": "browser:a1", "skills": ["agents"],
                "password": "agent-secret-1"})
            await _json(http, "PATCH", f"{api}/agents/a1", svc.api_key, {"state": "available"})
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=_chromium_args(wav),
                                               headless=True)
            try:
                page = await browser.new_page(viewport={"width": 1280, "height": 900})
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                await page.goto(f"{svc.http_url}/agent/login")
                await page.fill("#agent", "a1")
                await page.fill("#password", "agent-secret-1")
                await page.click("#signin")
                await expect(page.locator("#sp-status")).to_have_text("ready", timeout=15000)
                caller = asyncio.ensure_future(asyncio.to_thread(
                    run_sipp, "listen_call.xml", svc.sip_address, workdir=tmp_path / "caller", calls=1,
                    timeout=120, keys={"rtp_port": caller_media.port},
                    replace={"<sip:sipp@[local_ip]": f"<sip:{CALLER}@[local_ip]",
                             'timeout="30000"': 'timeout="90000"'}))
                deadline = time.monotonic() + 15
                while not caller_media.sources:
                    assert time.monotonic() < deadline, "no RTP from the service"
                    await asyncio.sleep(0.05)
                service_rtp = next(iter(caller_media.sources))
                caller_media.send(RtpStreamBuilder().silence(200).digits("0").packets, service_rtp)
                await expect(page.locator("#softphone")).to_have_class("softphone ringing", timeout=30000)
                await page.click("#sp-answer")
                await expect(page.locator("#sp-status")).to_have_text("on call", timeout=15000)

                await page.fill("#sp-xfer-target", "tel:123")  # refused, the field named on the page
                await page.click("#sp-transfer")
                await expect(page.locator("#sp-sent")).to_contain_text("sip:")
                await page.fill("#sp-xfer-target", f"sip:a2@{phone.address}")
                await page.click("#sp-transfer")
                await expect(page.locator("#sp-status")).to_have_text("transferred")
                # the phone answers: its 700 Hz reaches the caller through the service
                deadline = time.monotonic() + 15
                while not phone_media.sources:
                    assert time.monotonic() < deadline, "the transfer target got no RTP"
                    await asyncio.sleep(0.05)
                mark = len(caller_media.received)
                phone_media.send(RtpStreamBuilder().audio(tone(700, 1000, 0.3)).packets,
                                 next(iter(phone_media.sources)))
                await asyncio.sleep(1.3)
                heard = heard_audio([p for p in caller_media.received[mark:] if p.payload_type == PCMU])
                assert _loud_seconds(heard, 1000) > 0.6 and abs(_dominant_hz(heard) - 700) < 20
                result = await caller  # the phone hangs up; the flow says goodbye and hangs up
                assert result.ok, result.describe()
                await expect(page.locator("#state")).to_have_text("wrap up", timeout=10000)
                assert errors == []
            finally:
                await browser.close()
    assert phone.result is not None and phone.result.successful == 1, phone.result.describe()
