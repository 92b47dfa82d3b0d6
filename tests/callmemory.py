"""The whole call in memory: the real SIP core, switch, lifecycle, history, desk and IVR, with
only the sockets replaced, on the virtual-time loop (voice.ivr.vtime).

- `MemoryEndpoint`: voice.aio.sip.SipEndpoint without its sockets. now()/flush()/the timer are
  the real endpoint's (events go to `call.app.on_event` or the switch, the core's timer is armed
  with loop.call_at); what the core transmits lands in a `Network` the test reads as the wire,
  and what a scripted peer sends goes in through `feed`, as a datagram would.
- `FakeRtpSession` / `MemoryRtpPool`: an RTP session and port pool as call control uses them
  (voice.callcontrol.fake.FakeMedia plus configure/feed/close); prompts take their length in
  virtual time; `press`/`speak` are the far end's keys and voice, `fed` what a bridge relayed.
- `Caller` (the UAC dialling in) and `Phone` (the agent's desk phone, a UAS): scripted peers.
- `Rig`: what `voice run` composes (voice.service.Service), built on a real SQLite store.

Virtual time must stand still while the database works in a thread, as vtime does for the
thread pool (the SQLite writer and readers use it). The async sessions (aiosqlite: agent states,
reads) hop to aiosqlite's own thread instead, so `hold_time_during_aiosqlite` counts those
hops as busy too; otherwise the clock would race to the next SIP timer during a write.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import sqlite3
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest

from cti.agents import AgentStore
from cti.db import Database, migrate, open_database
from cti.events import EventBus
from cti.history import CallHistory
from cti.lookup import make_lookup
from cti.queues import AgentState
from cti.routing import AgentDesk
from cti.store import CustomerStore
from cti.wrapup import AgentPolicy
from tests.sipfake import SDP_OFFER, Peer, ack_for
from voice.aio.sip import SipEndpoint
from voice.callcontrol import AnswerSettings, CallRecorder, Lifecycle, Switch
from voice.callcontrol.fake import FakeMedia
from voice.config import Config, CtiConfig, IvrConfig
from voice.ivr.harness import FakeTts
from voice.ivr.runtime import IvrRuntime
from voice.ivr.vtime import VirtualTimeLoop
from voice.service import GOODBYE, Service
from voice.sip.core import CallPolicy, LocalIdentity, SipCore
from voice.sip.events import Event
from voice.sip.message import Request, Response, make_response, parse_message
from voice.sip.transaction import Address, TimerValues

T = TypeVar("T")
FLOWS = Path(__file__).parent / "flows"
T1 = 0.5  # Timer H (no ACK) is 64 * T1 = 32 s
AGENT_PHONE = Address("127.0.0.1", 5080, "udp")
PHONE_ANSWER = (b"v=0\r\no=- 7 7 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                b"m=audio 41000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
                b"a=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n")


# ---- virtual time and the database ------------------------------------------------------------
def hold_time_during_aiosqlite(monkeypatch: pytest.MonkeyPatch) -> None:
    """While an aiosqlite call runs on its thread, the virtual clock waits for real (busy)."""
    import aiosqlite.core

    def busy_while(method: Callable[..., Any]) -> Callable[..., Any]:
        async def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
            loop = asyncio.get_running_loop()
            if isinstance(loop, VirtualTimeLoop):
                loop.busy_threads += 1
            try:
                return await method(self, *args, **kwargs)
            finally:
                if isinstance(loop, VirtualTimeLoop):
                    loop.busy_threads -= 1

        return counted

    connection = aiosqlite.core.Connection
    for name in ("_execute", "_connect"):  # every statement, and opening the connection
        monkeypatch.setattr(connection, name, busy_while(getattr(connection, name)))


def run_virtual_checked(coro: Coroutine[Any, Any, T]) -> T:
    """Run on a fresh virtual-time loop; fail when a task is left running or failed unseen."""
    loop = VirtualTimeLoop()
    errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    try:
        result = loop.run_until_complete(coro)
        loop.run_until_complete(asyncio.sleep(0))
        left = [t for t in asyncio.all_tasks(loop) if not t.done()]
        assert not left, f"tasks still running after the scenario: {left}"
    finally:
        try:  # as asyncio.run does: nothing is left to be collected later on another thread
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            loop.close()
    assert not errors, [str(e.get("message")) + " " + repr(e.get("exception")) for e in errors]
    return result


async def until(condition: Callable[[], bool], what: str, *, timeout: float = 5.0) -> None:
    """Poll `condition` every 10 ms of virtual time (still while the database works) up to `timeout`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        await asyncio.sleep(0.01)


# ---- the wire ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sent:
    index: int
    message: Request | Response
    to: Address
    at: float  # loop time it left


def is_request(method: str, to: Address, call_id: str | None = None) -> Callable[[Sent], bool]:
    def match(s: Sent) -> bool:
        return (isinstance(s.message, Request) and s.message.method == method and _same(s.to, to)
                and (call_id is None or s.message.call_id == call_id))

    return match


def is_response(status: int, method: str, to: Address, call_id: str | None = None) -> Callable[[Sent], bool]:
    def match(s: Sent) -> bool:
        return (isinstance(s.message, Response) and s.message.status == status
                and s.message.cseq.method == method and _same(s.to, to)
                and (call_id is None or s.message.call_id == call_id))

    return match


def _same(a: Address, b: Address) -> bool:
    return (a.host, a.port) == (b.host, b.port)


class Network:
    """Everything the service sent, in order, with where to and when."""

    def __init__(self) -> None:
        self.sent: list[Sent] = []
        self._changed = asyncio.Event()

    def deliver(self, data: bytes, peer: Address) -> None:
        message = parse_message(data)
        self.sent.append(Sent(len(self.sent), message, peer, asyncio.get_running_loop().time()))
        self._changed.set()

    def matching(self, match: Callable[[Sent], bool]) -> list[Sent]:
        return [s for s in self.sent if match(s)]

    async def wait_for(self, match: Callable[[Sent], bool], *, after: int = 0, timeout: float = 10.0) -> Sent:
        """The first message sent at `after` or later that matches; waits up to `timeout` virtual s."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        scanned = after
        while True:
            for s in self.sent[scanned:]:
                if match(s):
                    return s
            scanned = max(scanned, len(self.sent))
            left = deadline - loop.time()
            if left <= 0:
                summary = [f"{s.index} {_line(s.message)} -> {s.to.host}:{s.to.port}" for s in self.sent]
                raise AssertionError(f"nothing matching was sent within {timeout} s; the wire: {summary}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except TimeoutError:
                pass


def _line(m: Request | Response) -> str:
    return f"{m.method} {m.call_id}" if isinstance(m, Request) else f"{m.status} {m.cseq.method} {m.call_id}"


class MemoryEndpoint(SipEndpoint):
    """The real endpoint's dispatch and timer; the sockets are the `Network`."""

    def __init__(self, core: SipCore, on_event: Callable[[Event], None], network: Network) -> None:
        super().__init__(core, on_event)
        self.network = network

    def _transmit(self, data: bytes, peer: Address) -> None:
        self.network.deliver(data, peer)


# ---- media ------------------------------------------------------------------------------------
class FakeRtpSession(FakeMedia):
    """An RTP session as call control uses it; prompts take their length in virtual time."""

    def __init__(self, pool: MemoryRtpPool, host: str, port: int) -> None:
        super().__init__(realtime=1.0)
        self.pool, self.host, self.local_port = pool, host, port
        self.closed = False
        self.codec, self.payload_type = "PCMU", 0
        self.dtmf_payload_type: int | None = None
        self.direction = "sendrecv"
        self.remote: tuple[str, int] | None = None
        self.configured = 0
        self.listeners_set = 0
        self.fed: list[np.ndarray] = []  # frames another leg's audio sent us (a bridge)
        self.on_failure: Callable[[str], None] | None = None

    def configure(self, *, remote: tuple[str, int], payload_type: int, codec: str,
                  dtmf_payload_type: int | None, direction: str = "sendrecv") -> None:
        if self.closed:
            raise RuntimeError("RTP session is closed")
        self.remote, self.payload_type, self.codec = (remote[0], int(remote[1])), payload_type, codec
        self.dtmf_payload_type, self.direction = dtmf_payload_type, direction
        self.configured += 1

    def set_failure_listener(self, on_failure: Callable[[str], None] | None) -> None:
        self.on_failure = on_failure

    def fail(self, reason: str) -> None:
        """The transport dies (as RtpSession reports it: once, soon after)."""
        if self.on_failure is not None:
            asyncio.get_running_loop().call_soon(self.on_failure, reason)

    def set_listeners(self, on_digit: Callable[[str], None], on_audio: Callable[[np.ndarray], None]) -> None:
        super().set_listeners(on_digit, on_audio)
        self.listeners_set += 1

    async def play(self, pcm: np.ndarray) -> bool:
        """As RtpSession.play: a prompt already playing is stopped (resolves False)."""
        self.stop_playback()
        if self.closed:
            return False
        return await super().play(pcm)

    def feed(self, frame: np.ndarray) -> None:
        if self.closed:
            return
        if len(frame) != 160:
            raise ValueError(f"feed() takes 160-sample frames, got {len(frame)}")
        self.fed.append(frame.copy())

    @property
    def stats(self) -> dict[str, Any]:
        return {"local_port": self.local_port, "played": len(self.played), "fed": len(self.fed),
                "codec": self.codec}

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.stop_playback()
        self.pool.released.append(self.local_port)
        self.pool._used.discard(self.local_port)


class MemoryRtpPool:
    """voice.aio.rtp.RtpPortPool's surface: even ports handed out, `sessions` in order."""

    def __init__(self, lo: int = 20000, hi: int = 20100) -> None:
        self.ports = list(range(lo, hi, 2))
        self._used: set[int] = set()
        self._next = itertools.cycle(self.ports)
        self.sessions: list[FakeRtpSession] = []
        self.released: list[int] = []

    @property
    def in_use(self) -> int:
        return len(self._used)

    def free(self) -> int:
        return len(self.ports) - len(self._used)

    async def open_session(self, host: str, **_: Any) -> FakeRtpSession:
        if len(self._used) >= len(self.ports):
            raise RuntimeError("no free RTP port")
        port = next(p for p in self._next if p not in self._used)
        self._used.add(port)
        session = FakeRtpSession(self, host, port)
        self.sessions.append(session)
        return session


# ---- the peers --------------------------------------------------------------------------------
class Caller:
    """A UAC dialling the service (tests.sipfake.Peer writes its requests)."""

    def __init__(self, rig: Rig, *, port: int = 5070, call_id: str | None = None) -> None:
        self.rig = rig
        self.peer = Peer(rig.core, port=port)
        if call_id is not None:
            self.peer.call_id = call_id
        self.addr = self.peer.addr
        self.ok: Response | None = None

    @property
    def call_id(self) -> str:
        return self.peer.call_id

    def send(self, text: str | bytes) -> None:
        self.rig.endpoint.feed(text.encode() if isinstance(text, str) else text, self.addr)

    def invite(self, body: str = SDP_OFFER) -> None:
        self.send(self.peer.request("INVITE", body=body))

    def mine(self, match: Callable[[Sent], bool]) -> Callable[[Sent], bool]:
        """`match`, for this caller's dialog only (a Call-ID may be reused by another caller)."""
        return lambda s: match(s) and (s.message.from_.tag if isinstance(s.message, Response)
                                       else s.message.to.tag) == self.peer.tag

    async def answered(self, timeout: float = 10.0) -> Response:
        sent = await self.rig.network.wait_for(self.mine(is_response(200, "INVITE", self.addr, self.call_id)),
                                               timeout=timeout)
        assert isinstance(sent.message, Response)
        self.ok = sent.message
        return sent.message

    def ack(self) -> None:
        assert self.ok is not None
        self.send(ack_for(self.peer, self.ok, cseq=1))

    def bye(self) -> None:
        assert self.ok is not None
        self.send(self.peer.request("BYE", to_tag=self.ok.to.tag))

    async def hung_up(self, *, after: int = 0, timeout: float = 30.0) -> Sent:
        """The service's BYE to us (answered 200, as a phone would)."""
        sent = await self.rig.network.wait_for(self.mine(is_request("BYE", self.addr, self.call_id)),
                                               after=after, timeout=timeout)
        assert isinstance(sent.message, Request)
        self.send(make_response(sent.message, 200).serialize())
        return sent

    @property
    def session(self) -> FakeRtpSession:
        """The service's RTP session for this call (its `press`/`speak` are this caller's)."""
        answer = next(a for a in self.rig.switch.calls.values()
                      if a.sip.call_id == self.call_id and a.sip.dialog.remote_tag == self.peer.tag)
        assert isinstance(answer.leg.rtp, FakeRtpSession)
        return answer.leg.rtp


class Phone:
    """The agent's desk phone (UAS): rings on the service's INVITE, answers, hangs up."""

    def __init__(self, rig: Rig, addr: Address = AGENT_PHONE) -> None:
        self.rig, self.addr = rig, addr
        self.tag = "phone" + uuid.uuid4().hex[:6]
        self.invite: Request | None = None
        self.ok: Response | None = None
        self.cseq = 0

    def send(self, data: bytes | str) -> None:
        self.rig.endpoint.feed(data.encode() if isinstance(data, str) else data, self.addr)

    async def rings(self, *, after: int = 0, timeout: float = 10.0) -> Sent:
        sent = await self.rig.network.wait_for(is_request("INVITE", self.addr), after=after, timeout=timeout)
        assert isinstance(sent.message, Request)
        self.invite = sent.message
        return sent

    def reply(self, status: int, body: bytes = b"") -> Response:
        assert self.invite is not None
        response = make_response(self.invite, status, to_tag=None if status == 100 else self.tag,
                                 headers=[("Contact", f"<sip:agent@{self.addr.host}:{self.addr.port}>")],
                                 body=body, content_type="application/sdp" if body else None)
        self.send(response.serialize())
        if status == 200:
            self.ok = response
        return response

    async def cancelled(self, *, timeout: float = 10.0) -> Sent:
        """The service's CANCEL of our ringing INVITE: 200 to it, 487 to the INVITE (RFC 3261 9.2)."""
        assert self.invite is not None
        sent = await self.rig.network.wait_for(is_request("CANCEL", self.addr, self.invite.call_id),
                                               timeout=timeout)
        assert isinstance(sent.message, Request)
        self.send(make_response(sent.message, 200).serialize())
        self.reply(487)
        return sent

    async def hung_up(self, *, after: int = 0, timeout: float = 10.0) -> Sent:
        """The service's BYE to the phone (answered 200)."""
        assert self.invite is not None
        sent = await self.rig.network.wait_for(is_request("BYE", self.addr, self.invite.call_id), after=after,
                                               timeout=timeout)
        assert isinstance(sent.message, Request)
        self.send(make_response(sent.message, 200).serialize())
        return sent

    async def acked(self, timeout: float = 10.0) -> Sent:
        assert self.invite is not None
        sent = await self.rig.network.wait_for(is_request("ACK", self.addr, self.invite.call_id),
                                               timeout=timeout)
        return sent

    def bye(self) -> None:
        """BYE inside the dialog: to the service's Contact, From/To swapped."""
        assert self.invite is not None and self.ok is not None
        self.cseq += 1
        contact = self.invite.contacts[0].uri
        self.send(
            f"BYE {contact} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {self.addr.host}:{self.addr.port}"
            f";branch=z9hG4bKphone{uuid.uuid4().hex[:8]};rport\r\n"
            f"Max-Forwards: 70\r\n"
            f"From: {self.ok.headers.get('To')}\r\n"
            f"To: {self.invite.headers.get('From')}\r\n"
            f"Call-ID: {self.invite.call_id}\r\nCSeq: {self.cseq} BYE\r\n"
            f"Content-Length: 0\r\n\r\n")


# ---- the composition --------------------------------------------------------------------------
class Rig:
    """What `voice run` composes (voice.service.Service), minus the sockets: SIP core, memory
    endpoint, switch, lifecycle with the call recorder over the real history on SQLite, the agent
    desk ringing agents through the switch, and the IVR runtime with a fake TTS."""

    def __init__(self, tmp_path: Path, *, node: str = "mem1", default_flow: str = "queue_agent",
                 db_path: Path | None = None, answer_delay: float = 0.0,
                 policy: AgentPolicy | None = None) -> None:
        self.tmp_path = tmp_path
        self.policy = policy  # [agents]: dispositions, wrap-up time, away reasons (desk defaults: None)
        self.node = node
        self.answer_delay = answer_delay
        self.db_path = db_path or tmp_path / "data" / "voice.db"
        self.url = f"sqlite+aiosqlite:///{self.db_path}"
        ivr = IvrConfig(flows=FLOWS, default_flow=default_flow, prompts=tmp_path / "prompts",
                        recordings=tmp_path / "recordings")
        self.config = Config(ivr=ivr, cti=CtiConfig(default_country="US", recent_interactions=5))

    async def start(self) -> Rig:
        self.db: Database = open_database(self.url)
        await migrate(self.db)
        self.store = CustomerStore(self.db, default_country="US")
        self.agents = AgentStore(self.db)
        self.history = CallHistory(self.store, node=self.node)
        self.recorder = CallRecorder(self.history)
        # The service's own glue: its lifecycle (with the log lines) and `_transfer_queue`, which
        # publishes CallTransferred once the desk is done with the call.
        self.service = Service(self.config)
        self.lifecycle: Lifecycle = self.service.lifecycle
        self.lifecycle.subscribe(self.recorder)
        self.network = Network()
        trusted = [ipaddress.ip_network("127.0.0.0/8")]
        self.core = SipCore(LocalIdentity(host="127.0.0.1", port=5060), CallPolicy(trusted=trusted),
                            TimerValues(t1=T1, t2=4.0, t4=5.0))
        self.pool = MemoryRtpPool()
        self.endpoint = MemoryEndpoint(self.core, self._on_event, self.network)
        self.tts = FakeTts()
        self.ivr = IvrRuntime(self.config, lookup=make_lookup(self.store, 5),
                              transfer_queue=self.service._transfer_queue)
        self.ivr.tts = self.tts
        settings = AnswerSettings(node=self.node, own_user="voice", answer_delay=self.answer_delay)
        self.switch = Switch(self.endpoint, self.pool, run_flow=self.ivr.run_call, lifecycle=self.lifecycle,
                             settings=settings, media_host=lambda _peer: "127.0.0.1",
                             goodbye=lambda: self.tts.render(GOODBYE))
        self.desk = AgentDesk(store=self.store, agents=self.agents, bus=EventBus(), recent=5,
                              connector=self.switch, policy=self.policy)
        self.ivr.desk = self.desk
        self.service.desk = self.desk
        await self.desk.start()
        return self

    def _on_event(self, event: Event) -> None:
        self.switch.on_event(event)

    async def add_agent(self, agent_id: str, *, skills: list[str], phone: Address = AGENT_PHONE,
                        state: AgentState = AgentState.AVAILABLE) -> None:
        await self.agents.create_agent(agent_id=agent_id, name=agent_id.title(),
                                       sip_uri=f"sip:{agent_id}@{phone.host}:{phone.port}", skills=skills,
                                       password=None)
        await self.agents.set_state(agent_id, state)
        await self.desk.reload_agents()

    async def calls_over(self, timeout: float = 60.0) -> None:
        """Until every call's task has finished and every history write is done."""
        tasks = [a.task for a in self.switch.calls.values() if a.task is not None]
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=timeout)
            assert not pending, f"{len(pending)} calls still up after {timeout} s"
        await self.recorder.aclose()
        assert not self.recorder.pending

    async def close(self) -> None:
        await self.switch.end_all(goodbye=False)
        await self.recorder.aclose()
        await self.ivr.close()
        await self.endpoint.close()
        await self.desk.close()
        await self.db.dispose()


# ---- reading the database afterwards (plain sqlite3, outside the loop) --------------------------
def voice_rows(db_path: Path) -> list[dict[str, Any]]:
    import json

    with sqlite3.connect(db_path) as db:
        db.row_factory = sqlite3.Row
        rows = [dict(r) for r in db.execute(
            "SELECT id, customer_id, call_id, status, outcome, disposition, idempotency_key, metadata, ivr "
            "FROM interactions WHERE channel = 'voice' ORDER BY started_at, id")]
    for r in rows:
        r["metadata"] = json.loads(r["metadata"]) if r["metadata"] else {}
        r["ivr"] = json.loads(r["ivr"]) if r["ivr"] else None
    return rows


def count(db_path: Path, table: str) -> int:
    with sqlite3.connect(db_path) as db:
        return int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def agent_state(db_path: Path, agent_id: str) -> str:
    with sqlite3.connect(db_path) as db:
        return str(db.execute("SELECT state FROM agents WHERE id = ?", (agent_id,)).fetchone()[0])
