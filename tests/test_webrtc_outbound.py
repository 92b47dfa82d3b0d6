"""Calls the service places to a browser agent (callbacks, click-to-call), with a real WebRTC peer
(an aiortc RTCPeerConnection as the agent's browser, see tests/test_webrtc.py): the page is rung
with no caller yet, hears ringback once answered, then the customer's call is bridged in; the
agent hanging up before or after that ends it. RTP ports 33000-33999 belong to the WebRTC tests."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from tests.peers.pcap import PCMU, RtpStreamBuilder
from tests.peers.rtp import heard_audio
from tests.test_webrtc import HOST, FakePage, caller_leg, dominant_hz, until
from voice.audio import tone
from voice.callcontrol.webrtc import BrowserPhones

pytestmark = pytest.mark.timeout(60)


async def test_the_page_rings_hears_ringback_then_talks_to_the_customer_until_it_hangs_up() -> None:
    phones = BrowserPhones()
    page = FakePage(phones)
    detach = phones.attach("ann", page.send)
    ringing = asyncio.ensure_future(phones.ring("browser:ann", timeout=10, display="Call Dana Scully"))
    offer = await asyncio.wait_for(page.offers.get(), 10)
    assert offer["outbound"] is True and offer["caller"] == "Call Dana Scully"
    await page.answer(offer, hz=400)
    leg = await asyncio.wait_for(ringing, 15)
    assert leg.answered and leg.status == 200 and leg.caller is None
    # no customer yet: keys, hold and transfers are refused, the agent hears ringback (440 + 480 Hz)
    with pytest.raises(Exception, match="answered call"):
        leg.set_hold(True)
    mark = len(page.heard)
    leg.start_ringback()
    await asyncio.sleep(1.0)
    heard = page.heard_since(mark)
    loud = heard[np.abs(heard) > 500]
    assert len(loud) > 48000 // 4 and 430 < dominant_hz(heard, 48000) < 490
    async with caller_leg() as customer:
        leg.attach_caller(customer.call, customer.rtp)
        # the customer says 1 kHz: the agent hears it; the agent's 400 Hz reaches the customer
        up = RtpStreamBuilder(codec=PCMU, ssrc=0x2222).audio(tone(1000, 1500, 0.3))
        mark = len(page.heard)
        customer.peer.send(up.packets, (HOST, customer.rtp.local_port))
        await asyncio.sleep(up.duration + 0.4)
        assert abs(dominant_hz(page.heard_since(mark), 48000) - 1000) < 30
        back = heard_audio([p for p in customer.peer.received if p.payload_type == PCMU][-40:])
        assert np.abs(back).max() > 1000 and abs(dominant_hz(back) - 400) < 20
        customer.signalling.remote_hangup("bye")
        end = await asyncio.wait_for(leg.wait_finished(), 5)
        assert end.hangup_by == "caller" and end.talk_seconds > 1
    await until(lambda: "rtc_end" in page.types(), 5, "rtc_end at the page")
    await page.close()
    detach()
    await phones.aclose()


async def test_an_unanswered_or_hung_up_outbound_page_leg_ends_without_a_customer() -> None:
    phones = BrowserPhones()
    leg = await asyncio.wait_for(phones.ring("browser:ann", timeout=5), 5)  # no page open
    assert not leg.answered and leg.status == 480
    page = FakePage(phones)
    detach = phones.attach("ann", page.send)
    leg = await asyncio.wait_for(phones.ring("browser:ann", timeout=0.5), 5)
    assert leg.status == 408 and not leg.answered  # offered, nobody answered
    ringing = asyncio.ensure_future(phones.ring("browser:ann", timeout=10, display="Call +15550177"))
    offer = await asyncio.wait_for(page.offers.get(), 10)
    while offer["caller"] != "Call +15550177":  # the withdrawn offer first
        offer = await asyncio.wait_for(page.offers.get(), 10)
    await page.answer(offer)
    leg = await asyncio.wait_for(ringing, 15)
    assert leg.answered
    leg.start_ringback()
    await phones.receive("ann", {"type": "rtc_hangup", "leg": leg.id})  # before the customer answered
    end = await asyncio.wait_for(leg.wait_finished(), 5)
    assert end.hangup_by == "agent" and end.talk_seconds == 0.0 and leg.ended
    with pytest.raises(RuntimeError):
        async with caller_leg() as customer:
            leg.attach_caller(customer.call, customer.rtp)
    await page.close()
    detach()
    await phones.aclose()
