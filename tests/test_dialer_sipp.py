"""Switch.connect (the desk's AgentConnector) with real peers on loopback: sipp calls in (the
caller), the switch dials a second sipp acting as the agent's phone and bridges them. Each
sipp's SDP points at a Python RTP endpoint the test owns, so the test sends audio on both sides
and checks what crossed the bridge.

SIP ports 50000-50999, RTP ports 51000-52999.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cti.ports import ConversationEnd
from tests.peers import free_port
from tests.peers.pcap import PCMU, RtpStreamBuilder
from tests.peers.rtp import RtpEndpoint, heard_audio, rms
from tests.peers.sipp import SippResult, run_sipp, sipp_background
from voice.aio.rtp import RtpPortPool
from voice.aio.sip import SipEndpoint
from voice.audio import tone
from voice.callcontrol import AnswerSettings, Call, DeskCall, Lifecycle, Switch
from voice.callcontrol.dial import OutboundDial
from voice.callcontrol.lifecycle import CallFinished, LifecycleEvent
from voice.sip import events as ev
from voice.sip.core import CallPolicy, LocalIdentity, SipCore

HOST = "127.0.0.1"
SIP_SPAN = (50000, 50999)
RTP_SPAN = (51000, 52999)

pytestmark = pytest.mark.timeout(60)


def dominant_hz(pcm: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64) * np.hanning(len(pcm))))
    return float(np.fft.rfftfreq(len(pcm), 1 / 8000)[int(np.argmax(spectrum))])


class MiniService:
    """The parts of voice.service.Service the switch uses: one SipEndpoint, one RTP pool, a Switch
    answering every call with the test's flow; lifecycle events collected."""

    def __init__(self, flow: Callable[[Call], Awaitable[dict[str, Any] | None]]) -> None:
        self.flow = flow
        self.endpoint: SipEndpoint | None = None
        self.switch: Switch | None = None
        lo = free_port(RTP_SPAN, tcp=False, count=8)
        self.pool = RtpPortPool(lo, lo + 7)
        self.events: list[LifecycleEvent] = []

    async def start(self) -> None:
        port = free_port(SIP_SPAN)
        core = SipCore(LocalIdentity(host=HOST, port=port),
                       CallPolicy(trusted=[ipaddress.ip_network("127.0.0.0/8")]))
        self.endpoint = SipEndpoint(core, self.on_event)
        self.switch = Switch(self.endpoint, self.pool, run_flow=self.flow,
                             lifecycle=Lifecycle([self.events.append]), settings=AnswerSettings(node="test"),
                             media_host=lambda _peer: HOST)
        await self.endpoint.start(HOST, port, ("udp",))

    @property
    def address(self) -> str:
        assert self.endpoint is not None
        return f"{HOST}:{self.endpoint.udp_port}"

    def on_event(self, event: ev.Event) -> None:
        assert self.switch is not None
        self.switch.on_event(event)

    async def connect(self, call: Call, uri: str, timeout: float) -> OutboundDial:
        assert self.switch is not None
        connection = await self.switch.connect(DeskCall(call), uri, timeout=timeout)
        assert isinstance(connection, OutboundDial)
        return connection


@pytest.fixture
async def peers() -> AsyncIterator[tuple[RtpEndpoint, RtpEndpoint]]:
    with RtpEndpoint(free_port(RTP_SPAN, tcp=False, count=2)) as caller, \
            RtpEndpoint(free_port(RTP_SPAN, tcp=False, count=2)) as agent:
        yield caller, agent


def speak(endpoint: RtpEndpoint, port: int, hz: int, ms: int, ssrc: int) -> None:
    """Send `ms` of a PCMU tone from `endpoint` (symmetric RTP) to the service's `port`."""
    endpoint.send(RtpStreamBuilder(codec=PCMU, ssrc=ssrc).audio(tone(hz, ms, 0.3)).packets, (HOST, port))


async def call_in(service: MiniService, caller_ep: RtpEndpoint, workdir: Path,
                  bye_after_ms: int) -> SippResult:
    """sipp calls the service; its media goes to `caller_ep`; it hangs up after `bye_after_ms`
    unless the service does first."""
    return await asyncio.to_thread(
        run_sipp, "listen_call.xml", service.address, workdir=workdir, timeout=30, service="support",
        keys={"rtp_port": caller_ep.port}, replace={'timeout="30000"': f'timeout="{bye_after_ms}"'},
        local_port=free_port(SIP_SPAN), media_port=free_port(RTP_SPAN, tcp=False, count=8))


@dataclass
class Outcome:
    connection: OutboundDial
    end: ConversationEnd | None = None
    agent_stats: dict[str, Any] = field(default_factory=dict)
    caller_stats: dict[str, Any] = field(default_factory=dict)


async def talk(service: MiniService, call: Call, uri: str, timeout: float,
               agent_ep: RtpEndpoint | None = None) -> Outcome:
    """What the desk does: connect, and when answered wait for the conversation's end."""
    connection = await service.connect(call, uri, timeout)
    out = Outcome(connection)
    if connection.answered:
        assert connection.leg is not None and connection.leg.rtp is not None
        rtp = connection.leg.rtp
        if agent_ep is not None:  # the agent (400 Hz) talks once answered
            speak(agent_ep, rtp.local_port, 400, 2500, 0xA9E7)
        out.end = await connection.wait_finished()
        out.agent_stats = dict(rtp.stats)
    out.caller_stats = dict(call.media.stats)  # type: ignore[attr-defined]
    return out


async def test_caller_hangs_up_agent_gets_bye_audio_both_ways(peers: tuple[RtpEndpoint, RtpEndpoint],
                                                              tmp_path: Path) -> None:
    caller_ep, agent_ep = peers
    outcomes: list[Outcome] = []
    with sipp_background("uas_answer.xml", workdir=tmp_path / "agent", keys={"rtp_port": agent_ep.port},
                         local_port=free_port(SIP_SPAN), media_port=free_port(RTP_SPAN, tcp=False, count=8),
                         timeout=30) as agent_phone:

        async def flow(call: Call) -> None:
            # the caller talks (1 kHz) from the moment the call is up
            speak(caller_ep, call.media.local_port, 1000, 2500, 0xCA11)  # type: ignore[attr-defined]
            outcomes.append(await talk(service, call, f"sip:agent@{agent_phone.address}", 5, agent_ep))

        service = MiniService(flow)
        await service.start()
        try:
            caller = await call_in(service, caller_ep, tmp_path / "caller", bye_after_ms=2000)
            for _ in range(50):
                if outcomes:
                    break
                await asyncio.sleep(0.05)
        finally:
            assert service.endpoint is not None
            await asyncio.sleep(0.2)  # the agent's 200 to our BYE
            await service.endpoint.close()
        agent = agent_phone.stop()

    assert caller.ok, caller.describe()
    assert agent.ok, agent.describe()  # it got our BYE and answered it
    (outcome,) = outcomes
    assert outcome.connection.answered and outcome.connection.status == 200, outcome
    assert outcome.end is not None and outcome.end.hangup_by == "caller", outcome
    # audio flowed both ways: counted on each leg's RtpSession and heard at each far end
    assert outcome.agent_stats["packets_received"] > 40 and outcome.caller_stats["packets_received"] > 40
    heard_by_agent = heard_audio(agent_ep.received)
    heard_by_caller = heard_audio(caller_ep.received)
    assert abs(dominant_hz(heard_by_agent) - 1000) < 20 and abs(dominant_hz(heard_by_caller) - 400) < 20
    # the caller's call has its lifecycle: answered once, finished once, by the caller's BYE
    finished = [e for e in service.events if isinstance(e, CallFinished)]
    assert len(finished) == 1 and finished[0].cause == "bye"


async def test_agent_hangs_up_caller_goes_on(peers: tuple[RtpEndpoint, RtpEndpoint], tmp_path: Path) -> None:
    caller_ep, agent_ep = peers
    outcomes: list[Outcome] = []
    after_call: list[bool] = []
    with sipp_background("agent_answer_hangup.xml", workdir=tmp_path / "agent",
                         keys={"rtp_port": agent_ep.port}, local_port=free_port(SIP_SPAN),
                         media_port=free_port(RTP_SPAN, tcp=False, count=8), timeout=30) as agent_phone:

        async def flow(call: Call) -> None:
            speak(caller_ep, call.media.local_port, 1000, 1500, 0xCA11)  # type: ignore[attr-defined]
            outcomes.append(await talk(service, call, f"sip:agent@{agent_phone.address}", 5, agent_ep))
            # the flow's after-call branch: the caller is still there and hears a goodbye tone
            result = await call.play(tone(700, 400, 0.3))
            after_call.append(result.completed)
            await call.hangup("flow_end")

        service = MiniService(flow)
        await service.start()
        try:
            caller = await call_in(service, caller_ep, tmp_path / "caller", bye_after_ms=15000)
        finally:
            assert service.endpoint is not None
            await service.endpoint.close()
        agent = agent_phone.stop()

    assert agent.ok, agent.describe()  # it sent BYE and got our 200
    assert caller.ok, caller.describe()  # it got the service's BYE after the goodbye, not its own timeout
    (outcome,) = outcomes
    assert outcome.connection.answered and outcome.end is not None and outcome.end.hangup_by == "agent"
    assert outcome.agent_stats["packets_received"] > 20 and outcome.caller_stats["packets_received"] > 20
    assert after_call == [True]
    heard = heard_audio(caller_ep.received)
    loud = np.flatnonzero(np.abs(heard) > 1000)
    tail = heard[loud[-1] - 2400:loud[-1]]  # the last 300 ms of sound the caller heard: the goodbye
    assert rms(tail) > 1000 and abs(dominant_hz(tail) - 700) < 20
    finished = [e for e in service.events if isinstance(e, CallFinished)]
    assert len(finished) == 1 and finished[0].cause == "flow_end"


async def test_no_answer_is_cancelled(peers: tuple[RtpEndpoint, RtpEndpoint], tmp_path: Path) -> None:
    caller_ep, _ = peers
    outcomes: list[Outcome] = []
    with sipp_background("uas_cancel.xml", workdir=tmp_path / "agent", local_port=free_port(SIP_SPAN),
                         media_port=free_port(RTP_SPAN, tcp=False, count=8), timeout=30) as agent_phone:

        async def flow(call: Call) -> None:
            outcomes.append(await talk(service, call, f"sip:agent@{agent_phone.address}", 0.8))
            await call.hangup("flow_end")

        service = MiniService(flow)
        await service.start()
        try:
            caller = await call_in(service, caller_ep, tmp_path / "caller", bye_after_ms=15000)
            await asyncio.sleep(0.3)  # the phone's 487 and our ACK
        finally:
            assert service.endpoint is not None
            await service.endpoint.close()
        agent = agent_phone.stop()

    assert caller.ok, caller.describe()
    assert agent.ok, agent.describe()  # CANCEL, 200, 487, ACK as the phone expects
    (outcome,) = outcomes
    connection = outcome.connection
    assert not connection.answered and connection.status == 408 and connection.reason == "no answer"
    assert service.pool.in_use == 0


async def test_caller_hangs_up_while_the_agent_rings(peers: tuple[RtpEndpoint, RtpEndpoint],
                                                     tmp_path: Path) -> None:
    caller_ep, _ = peers
    outcomes: list[Outcome] = []
    with sipp_background("uas_cancel.xml", workdir=tmp_path / "agent", local_port=free_port(SIP_SPAN),
                         media_port=free_port(RTP_SPAN, tcp=False, count=8), timeout=30) as agent_phone:

        async def flow(call: Call) -> None:
            outcomes.append(await talk(service, call, f"sip:agent@{agent_phone.address}", 20))

        service = MiniService(flow)
        await service.start()
        try:
            caller = await call_in(service, caller_ep, tmp_path / "caller", bye_after_ms=600)
            await asyncio.sleep(0.3)  # the phone's 487 and our ACK
        finally:
            assert service.endpoint is not None
            await service.endpoint.close()
        agent = agent_phone.stop()

    assert caller.ok, caller.describe()
    assert agent.ok, agent.describe()  # the ringing phone got our CANCEL
    (outcome,) = outcomes
    assert not outcome.connection.answered and outcome.connection.reason == "caller hung up"
    assert service.pool.in_use == 0
