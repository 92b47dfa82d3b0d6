"""Calls the service places itself (cti.ports.OutboundDialer): callbacks and click-to-call.

Two legs, in this order, so no customer ever answers a call nobody is on:
1. `AgentLeg`: the agent's phone is rung (an INVITE from our own SIP core with an RTP session
   from the pool, like `dial.OutboundDial` but with no caller behind it); answered, the agent
   hears ringback while step 2 runs.
2. `CustomerDial`: the customer's number is dialled through the trunk (`Trunk`: the request URI
   `sip:<prefix><number>@<domain>` sent to the trunk's host, digest credentials for a 401/407,
   the From user and display name the config presents). Answered, it becomes a `Call` (so the
   lifecycle, the history record and the metrics are the same as an inbound call's, with
   direction outbound) and is bridged with the agent's leg until either side hangs up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cti.ports import ConversationEnd, CustomerNumber
from cti.waiting import ringback
from voice.callcontrol.bridge import Bridge, BridgeSide
from voice.callcontrol.call import Call, CallInfo
from voice.callcontrol.leg import CODECS, Leg, SipLink
from voice.callcontrol.lifecycle import CallAnswered, CallFinished, Lifecycle
from voice.sip.outbound import next_hop_for
from voice.sip.sdp import build_offer
from voice.sip.transaction import Address

if TYPE_CHECKING:
    from voice.aio.rtp import RtpPortPool, RtpSession
    from voice.callcontrol.browser_leg import BrowserLeg
    from voice.callcontrol.webrtc import BrowserPhones
    from voice.config import Config

log = logging.getLogger("voice.callcontrol")


@dataclass(frozen=True, kw_only=True)
class Trunk:
    """Where calls to customers go: the next hop, the request URI's domain, credentials, caller ID."""

    uri: str  # sip:host[:port][;transport=...] (a user part, if any, is replaced by the number)
    username: str | None = None
    password: str | None = None
    caller_id: str = "voice"
    caller_name: str | None = None
    prefix: str = ""
    domain: str | None = None

    @property
    def next_hop(self) -> Address:
        return next_hop_for(self.uri)

    def request_uri(self, number: str) -> str:
        """`sip:<prefix><number>@<domain>` (the domain defaults to the trunk's host:port)."""
        hop = self.next_hop
        host = self.domain or (f"[{hop.host}]" if ":" in hop.host else hop.host)
        port = "" if self.domain or hop.port == 5060 else f":{hop.port}"
        transport = f";transport={hop.transport}" if hop.transport != "udp" else ""
        user = self.prefix + "".join(c for c in number if c.isdigit() or c in "+*#")
        return f"sip:{user}@{host}{port}{transport}"

    @property
    def credentials(self) -> tuple[str, str] | None:
        if self.username is None or self.password is None:
            return None
        return self.username, self.password


def trunk_of(config: Config) -> Trunk | None:
    """The [trunk] section (or the [register] registrar standing in for it) as a Trunk."""
    t = config.trunk
    if t is None:
        return None
    caller_id = t.caller_id or (config.register.username if config.register is not None else "") or "voice"
    return Trunk(uri=t.uri, username=t.username, password=t.password, caller_id=caller_id,
                 caller_name=t.caller_name, prefix=t.prefix, domain=t.domain)


async def _place(link: SipLink, pool: RtpPortPool, uri: str, *, media_host: str, codecs: Sequence[str],
                 from_user: str, from_display: str | None, peer: Address | None = None,
                 extra_headers: Sequence[tuple[str, str]] = (),
                 credentials: tuple[str, str] | None = None) -> Leg | None:
    """INVITE `uri` with an offer for a fresh RTP session; None when no RTP port is free."""
    try:
        rtp = await pool.open_session(media_host)
    except RuntimeError:
        return None
    offer = build_offer(media_host, rtp.local_port, int(time.time()) & 0x7FFFFFFF, 1, codecs)
    sip = link.core.invite(uri, from_user=from_user, from_display=from_display, sdp_offer=offer,
                           peer=peer, now=link.endpoint.now(), extra_headers=extra_headers,
                           credentials=credentials)
    leg = Leg(link, sip, media_host=media_host, codecs=codecs)
    leg.attach_media(rtp)
    link.endpoint.flush()
    return leg


async def _until_answered(leg: Leg, timeout: float, also: asyncio.Future[Any] | None = None) -> bool:
    """True once `leg` answered with usable media; otherwise it is ended (CANCEL) and False."""
    waiters: set[asyncio.Future[Any]] = {leg.confirmed, *(() if also is None else (also,))}
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        leg.end_now("local")
        raise
    if leg.confirmed.done() and leg.confirmed.result() and not leg.ended:
        return True
    if not leg.confirmed.done():
        leg.fail(408, "no answer")
    leg.end_now("local")
    return False


class AgentLeg:
    """The agent's phone, rung first (cti.ports.OutboundLeg)."""

    def __init__(self, leg: Leg | None, *, status: int | None = None, reason: str = "") -> None:
        self.leg = leg
        self._status, self._reason = status, reason
        self.answered = False
        self._ringback: asyncio.Task[None] | None = None

    @property
    def status(self) -> int | None:
        return self.leg.status if self.leg is not None and self.leg.status is not None else self._status

    @property
    def reason(self) -> str:
        return self.leg.reason if self.leg is not None and self.leg.reason else self._reason

    @property
    def ended(self) -> bool:
        return self.leg is None or self.leg.ended

    async def wait_ended(self) -> str:
        if self.leg is None:
            return "failed"
        return await asyncio.shield(self.leg.end)

    def hangup(self) -> None:
        self.stop_ringback()
        if self.leg is not None:
            self.leg.end_now("local")

    def start_ringback(self) -> None:
        """The agent hears ringback while the customer's phone rings."""
        rtp = self.leg.rtp if self.leg is not None else None
        if rtp is None or self._ringback is not None:
            return

        async def loop(rtp: RtpSession) -> None:
            while not rtp.closed:
                if not await rtp.play(ringback()):
                    return

        self._ringback = asyncio.ensure_future(loop(rtp))

    def stop_ringback(self) -> None:
        if self._ringback is not None:
            self._ringback.cancel()
            self._ringback = None
            if self.leg is not None and self.leg.rtp is not None and not self.leg.rtp.closed:
                self.leg.rtp.stop_playback()


class BrowserAgentLeg(AgentLeg):
    """The agent's browser softphone (browser:<id>), rung first (cti.ports.OutboundLeg): a WebRTC
    leg with no caller yet (voice.callcontrol.browser_leg), bridged by `attach_caller`."""

    def __init__(self, browser: BrowserLeg) -> None:
        super().__init__(None)
        self.browser = browser
        self.answered = browser.answered

    @property
    def status(self) -> int | None:
        return self.browser.status

    @property
    def reason(self) -> str:
        return self.browser.reason

    @property
    def ended(self) -> bool:
        return self.browser.ended

    async def wait_ended(self) -> str:
        return await asyncio.shield(self.browser.end)

    def hangup(self) -> None:
        self.browser.hangup()

    def start_ringback(self) -> None:
        self.browser.start_ringback()

    def stop_ringback(self) -> None:
        self.browser.stop_ringback()


class CustomerDial:
    """The call to the customer (cti.ports.CustomerConnection), bridged with the agent's leg."""

    def __init__(self, agent: AgentLeg, customer: CustomerNumber) -> None:
        self.agent = agent
        self.customer = customer
        self.leg: Leg | None = None
        self.call: Call | None = None
        self._status: int | None = None
        self._reason = ""
        self._finished: asyncio.Future[ConversationEnd] = asyncio.get_running_loop().create_future()
        self.task: asyncio.Task[None] | None = None

    @property
    def answered(self) -> bool:
        return self.call is not None

    @property
    def status(self) -> int | None:
        return self.leg.status if self.leg is not None and self.leg.status is not None else self._status

    @property
    def reason(self) -> str:
        return self.leg.reason if self.leg is not None and self.leg.reason else self._reason

    @property
    def interaction_id(self) -> str | None:
        return self.call.interaction_id if self.call is not None else None

    async def wait_finished(self) -> ConversationEnd:
        return await asyncio.shield(self._finished)

    def hangup(self) -> None:
        if self.leg is not None:
            self.leg.end_now("local")
        self.agent.hangup()
        if self.task is None and not self._finished.done():
            self._finished.set_result(ConversationEnd(hangup_by="agent", talk_seconds=0.0))

    def fail(self, status: int | None, reason: str) -> CustomerDial:
        self._status, self._reason = status, reason
        return self


class Originator:
    """cti.ports.OutboundDialer on this node's SIP core, RTP pool and lifecycle."""

    def __init__(self, link: SipLink, pool: RtpPortPool, *, trunk: Trunk | None, lifecycle: Lifecycle,
                 node: str, media_host: Callable[[str], str], browsers: BrowserPhones | None = None) -> None:
        self.link, self.pool, self.trunk = link, pool, trunk
        self.browsers = browsers  # agents whose URI is browser:<agent_id> (voice.callcontrol.webrtc)
        self.lifecycle, self.node, self.media_host = lifecycle, node, media_host
        self.active: set[CustomerDial] = set()
        self.agents: set[AgentLeg] = set()

    async def ring_agent(self, agent_uri: str, *, timeout: float, display: str | None = None) -> AgentLeg:
        if agent_uri.startswith("browser:"):  # the agent's page: a WebRTC leg, no caller yet
            if self.browsers is None:
                return AgentLeg(None, status=501, reason="browser agents are not enabled on this node")
            return BrowserAgentLeg(await self.browsers.ring(agent_uri, timeout=timeout, display=display))
        host = self.media_host(next_hop_for(agent_uri).host)
        caller_id = self.trunk.caller_id if self.trunk is not None else "voice"
        leg = await _place(self.link, self.pool, agent_uri, media_host=host, codecs=CODECS,
                           from_user=caller_id, from_display=display)
        if leg is None:
            return AgentLeg(None, status=503, reason="no free RTP port")
        agent = AgentLeg(leg)
        self.agents.add(agent)
        leg.end.add_done_callback(lambda _f: self.agents.discard(agent))
        agent.answered = await _until_answered(leg, timeout)
        return agent

    async def call_customer(self, agent: AgentLeg, customer: CustomerNumber, *, timeout: float,
                            on_ringing: Callable[[], None] | None = None) -> CustomerDial:
        dial = CustomerDial(agent, customer)
        trunk = self.trunk
        if trunk is None:
            agent.hangup()
            return dial.fail(503, "no trunk configured ([trunk] or [register])")
        sip_phone = not isinstance(agent, BrowserAgentLeg)
        if not agent.answered or agent.ended or (sip_phone and (agent.leg is None or agent.leg.rtp is None)):
            return dial.fail(None, "the agent hung up")
        hop = trunk.next_hop
        uri = trunk.request_uri(customer.number)
        agent.start_ringback()
        first = agent.leg.rtp.codec if agent.leg is not None and agent.leg.rtp is not None else CODECS[0]
        leg = await _place(self.link, self.pool, uri, media_host=self.media_host(hop.host),
                           codecs=(first, *(c for c in CODECS if c != first)),
                           from_user=trunk.caller_id, from_display=trunk.caller_name, peer=hop,
                           credentials=trunk.credentials)
        if leg is None:
            agent.stop_ringback()
            return dial.fail(503, "no free RTP port")
        dial.leg = leg
        invited_at = time.time()
        leg.on_ringing = on_ringing
        agent_gone = asyncio.ensure_future(agent.wait_ended())
        try:
            answered = await _until_answered(leg, timeout, agent_gone)
        finally:
            agent_gone.cancel()
        agent.stop_ringback()
        if not answered or agent.ended:
            if agent.ended:
                dial._reason = "the agent hung up"
            leg.end_now("local")
            return dial
        assert leg.rtp is not None
        sip = leg.sip
        info = CallInfo(call_id=sip.call_id, caller=customer.number, caller_name=customer.name,
                        dialled=customer.number, remote=f"{hop.host}:{hop.port}", started_at=invited_at)
        key = f"{self.node}:{sip.call_id};{sip.dialog.local_tag};{sip.dialog.remote_tag}"
        call = dial.call = Call(info, leg.rtp, leg, key=key, node=self.node)
        if customer.customer_id:
            how = "callback" if (customer.metadata or {}).get("callback_id") else "click_to_call"
            call.customer_id, call.identified_by = customer.customer_id, how
        self.lifecycle.publish(CallAnswered(call=call, node=self.node, direction="outbound",
                                            metadata=dict(customer.metadata or {})))
        self.active.add(dial)
        if isinstance(agent, BrowserAgentLeg):
            dial.task = asyncio.ensure_future(self._bridged_browser(dial, call, leg, agent))
        else:
            dial.task = asyncio.ensure_future(self._bridged(dial, call, leg, agent))
        return dial

    async def _bridged_browser(self, dial: CustomerDial, call: Call, leg: Leg,
                               agent: BrowserAgentLeg) -> None:
        """The browser leg bridges (and transcribes) the customer itself; here: who ended it."""
        assert leg.rtp is not None
        browser = agent.browser
        hangup_by = "caller"
        try:
            browser.attach_caller(call, leg.rtp)
            end = await browser.wait_finished()
            hangup_by = end.hangup_by
            talk = end.talk_seconds
        except Exception:
            log.exception("outbound call %s: bridging the browser leg failed", call.key)
            talk = 0.0
        finally:
            browser.hangup()
            leg.end_now("agent_hangup" if hangup_by == "agent" else "local")
            self.active.discard(dial)
        cause = await call.wait_ended()
        if not dial._finished.done():
            dial._finished.set_result(ConversationEnd(hangup_by=hangup_by, talk_seconds=talk))
        self.lifecycle.publish(CallFinished(call=call, cause=cause, node=self.node,
                                            details={"hangup_by": hangup_by}))

    async def _bridged(self, dial: CustomerDial, call: Call, leg: Leg, agent: AgentLeg) -> None:
        assert agent.leg is not None and agent.leg.rtp is not None and leg.rtp is not None
        bridge = Bridge(BridgeSide.of_call(call, leg.rtp, "caller"),
                        BridgeSide.of_session(agent.leg.rtp, "agent"))
        started = time.monotonic()
        bridge.start()
        hangup_by = "caller"
        try:
            ends: set[asyncio.Future[str]] = {leg.end, agent.leg.end}
            await asyncio.wait(ends, return_when=asyncio.FIRST_COMPLETED)
            if agent.leg.end.done() and not leg.end.done():
                hangup_by = "agent"
            elif leg.end.done() and leg.end.result() == "shutdown":
                hangup_by = "shutdown"
        finally:
            bridge.stop()
            agent.hangup()
            leg.end_now("agent_hangup" if hangup_by == "agent" else "local")
            self.active.discard(dial)
            cause = await call.wait_ended()
            if not dial._finished.done():
                dial._finished.set_result(ConversationEnd(hangup_by=hangup_by,
                                                          talk_seconds=time.monotonic() - started))
            self.lifecycle.publish(CallFinished(call=call, cause=cause, node=self.node,
                                                details={"hangup_by": hangup_by}))

    async def end_all(self) -> None:
        """Shutdown: end every outbound call and agent leg now."""
        for dial in list(self.active):
            if dial.leg is not None:
                dial.leg.end_now("shutdown")
        for agent in list(self.agents):
            agent.hangup()
        tasks = [d.task for d in self.active if d.task is not None]
        if tasks:
            with contextlib.suppress(Exception):
                await asyncio.wait(tasks, timeout=5)
