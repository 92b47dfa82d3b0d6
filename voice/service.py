"""`voice run`: the SIP/RTP service, the IVR, and the HTTP API in one process and one loop."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import signal
import sys
from datetime import datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web

from voice.aio.pacer import Pacer, realtime_loop_thread
from voice.aio.rtp import RtpPortPool
from voice.aio.sip import SipEndpoint
from voice.callcontrol import (
    AnswerSettings,
    Call,
    CallMetrics,
    CallRecorder,
    CallTransferred,
    DeskCall,
    Lifecycle,
    Switch,
    local_address_for,
    log_lifecycle,
)
from voice.callcontrol.inbound import FlowRunner
from voice.callcontrol.originate import AgentLeg, Originator, trunk_of
from voice.callcontrol.spool import WriteSpool
from voice.callcontrol.webrtc import browser_phones
from voice.config import Config, ConfigError, load_config
from voice.gcpolicy import FullCollections
from voice.sip import events as ev
from voice.sip.core import CallPolicy, LocalIdentity, SipCore
from voice.sip.digest import DigestVerifier
from voice.sip.register import Registration
from voice.sip.throttle import SourceThrottle
from voice.sip.transaction import TimerValues

if TYPE_CHECKING:
    from collections.abc import Callable

    import numpy as np

    from cti.ports import AgentConnection, CallView, CustomerConnection, CustomerNumber, OutboundLeg
    from cti.routing import QueueOutcome

log = logging.getLogger("voice")

GOODBYE = "We are sorry, this line is closing now. Please call again in a few minutes. Goodbye."


class Service:
    """Composes the parts: HTTP API and desk (cti), speech, the IVR, the SIP core and the switch
    that owns the calls. It holds no call state of its own."""

    def __init__(self, config: Config, *, run_flow: FlowRunner | None = None) -> None:
        self.config = config
        self._run_flow = run_flow
        self._run_flow_given = run_flow is not None
        self.endpoint: SipEndpoint | None = None
        self.core: SipCore | None = None
        self.switch: Switch | None = None
        self.pool = RtpPortPool(config.rtp.port_min, config.rtp.port_max)
        Pacer.use(realtime=config.rtp.realtime, send_ahead=config.rtp.send_ahead_ms / 1000)
        self.call_metrics = CallMetrics()
        self.lifecycle = Lifecycle([log_lifecycle, self.call_metrics])
        self.lifecycle.subscribe_refusals(self.call_metrics)
        self.recorder: CallRecorder | None = None
        self.registration: Registration | None = None
        self.originator: Originator | None = None  # calls we place: callbacks (cti.ports.OutboundDialer)
        self.http_runner: web.AppRunner | None = None
        self.http_port = 0
        self.history: Any = None
        self.lookup: Any = None
        self._background: list[asyncio.Task[Any]] = []
        self.ivr: Any = None
        self.desk: Any = None  # cti.routing.AgentDesk: queues, agents, screen pops
        self.speech: Any = None  # voice.asr.SpeechRecognizer
        self.tts: Any = None  # voice.tts.Tts
        # agents' browser softphones (voice.callcontrol.webrtc); conversations are transcribed
        # once speech recognition has started
        self.phones = browser_phones(config, speech=lambda: self.speech.pool if self.speech else None)
        self.nodes: Any = None  # cti.nodes.NodeMonitor: heartbeats, taking over lost nodes

    @property
    def degraded(self) -> bool:
        """Up but not whole: the database is away (history writes queue, heartbeats fail)."""
        return bool((self.recorder is not None and self.recorder.degraded)
                    or (self.nodes is not None and self.nodes.failing))

    # ---- lifecycle ------------------------------------------------------------------
    async def start(self) -> None:
        cfg = self.config
        await self._start_http()
        await self._start_asr()
        await Pacer.shared().transmitter_ready()  # before SIP listens: calls get the transmitter
        self._start_ivr()
        listen = cfg.sip.listen
        host = local_address_for("192.0.2.1", cfg.sip.public_address, listen.host)
        user = cfg.register.username if cfg.register is not None else "voice"
        identity = LocalIdentity(host=host, port=listen.port, user=user, user_agent=cfg.sip.user_agent)
        verifier = (DigestVerifier(cfg.sip.domain, cfg.sip.auth_users, algorithms=cfg.sip.digest_algorithms)
                    if cfg.sip.auth_users else None)
        # The core asks before any provisional response: no free media port, or draining -> 503.
        policy = CallPolicy(trusted=cfg.sip.trusted, verifier=verifier, max_calls=cfg.sip.max_calls,
                            has_capacity=lambda: self.switch is not None and self.switch.accepting(),
                            throttle=SourceThrottle(cfg.throttle))
        t1 = cfg.sip.t1_ms / 1000
        self.core = SipCore(identity, policy, TimerValues(t1=t1, t2=max(4.0, 8 * t1), t4=max(5.0, 10 * t1)))
        self.endpoint = SipEndpoint(self.core, self._on_event)
        assert self._run_flow is not None
        settings = AnswerSettings(node=cfg.node.id, record=cfg.rtp.record, recordings=cfg.ivr.recordings,
                                  answer_delay=cfg.sip.answer_delay_ms / 1000, own_user=user)
        self.switch = Switch(self.endpoint, self.pool, run_flow=self._run_flow, lifecycle=self.lifecycle,
                             settings=settings, media_host=self._media_host, goodbye=self._goodbye,
                             browsers=self.phones, number_domain=self._number_domain())
        self.originator = Originator(self.switch.link, self.pool, trunk=trunk_of(cfg),
                                     lifecycle=self.lifecycle, node=cfg.node.id, media_host=self._media_host,
                                     browsers=self.phones)
        await self.endpoint.start(listen.host, listen.port, cfg.sip.transports)
        identity.port = self.endpoint.udp_port or self.endpoint.tcp_port
        log.info("node %s: SIP listening on %s (%s), RTP ports %d-%d, trusted %s", cfg.node.id, listen,
                 "+".join(cfg.sip.transports), cfg.rtp.port_min, cfg.rtp.port_max,
                 ", ".join(str(n) for n in cfg.sip.trusted))
        self._readiness()
        if cfg.register is not None:
            reg = cfg.register
            self.registration = Registration(self.core, registrar=reg.registrar, username=reg.username,
                                             password=reg.password, expires=reg.expires, domain=reg.domain)
            self.registration.start(self.endpoint.now())
            self.endpoint.flush()
        await self._start_heartbeat()

    async def _start_heartbeat(self) -> None:
        from cti.http import STORE_KEY
        from cti.nodes import NodeMonitor

        assert self.http_runner is not None and self.switch is not None
        node, switch, http = self.config.node, self.switch, self.config.http.listen
        db = self.http_runner.app[STORE_KEY].db
        self.nodes = NodeMonitor(db, node.id, interval=node.heartbeat_interval, lost_after=node.lost_after,
                                 bus=getattr(self.desk, "bus", None), sip=str(self.config.sip.listen),
                                 http=f"{http.host}:{self.http_port}", calls=lambda: len(switch.calls))
        await self.nodes.start()

    async def drain(self, timeout: float | None = None) -> None:
        """Stop taking calls and let those in progress finish (then goodbye and end them)."""
        limit = self.config.sip.drain_timeout if timeout is None else timeout
        callbacks, clicks = self._callbacks(), self._clicks()
        await asyncio.gather(*([callbacks.drain(limit)] if callbacks is not None else []),
                             *([clicks.drain(limit)] if clicks is not None else []),
                             *([self.switch.drain(limit)] if self.switch is not None else []))

    async def stop(self) -> None:
        if self.registration is not None and self.endpoint is not None:
            self.registration.stop(self.endpoint.now())
            self.endpoint.flush()
        callbacks = self._callbacks()
        if callbacks is not None:  # no new callbacks placed; those being offered go back in line
            await callbacks.close()
        if self.originator is not None:
            await self.originator.end_all()
        if self.switch is not None:
            self.switch.draining = True
            await self.switch.end_all(goodbye=False)
        await self.phones.aclose()
        if self.recorder is not None:
            await self.recorder.aclose()
        for task in self._background:
            task.cancel()
        if self.endpoint is not None:
            await asyncio.sleep(0.05)  # let the BYEs leave
            await self.endpoint.close()
        if self.ivr is not None:
            await self.ivr.close()
        if self.speech is not None:
            await self.speech.aclose()
        if self.nodes is not None:
            await self.nodes.stop()
        if self.http_runner is not None:
            await self.http_runner.cleanup()

    def _callbacks(self) -> Any:
        """The desk's callback scheduler (cti.callback_desk.CallbackDesk), once HTTP is up."""
        if self.http_runner is None:
            return None
        from cti.web.keys import CALLBACKS_KEY

        return self.http_runner.app.get(CALLBACKS_KEY)

    def _clicks(self) -> Any:
        """The agents' click-to-calls (cti.click_to_call.ClickToCall), once HTTP is up."""
        if self.http_runner is None:
            return None
        from cti.web.keys import CLICK_KEY

        return self.http_runner.app.get(CLICK_KEY)

    def _readiness(self) -> None:
        """What /readyz reports besides the database: SIP listening, speech workers up; and the
        media layer's totals and send lateness for /metrics."""
        from cti import metrics
        from cti.ops import add_readiness_check
        from voice.aio.pacer import MediaTotals

        metrics.set_rtp_totals_provider(MediaTotals.snapshot)
        MediaTotals.observer = metrics.rtp_send_lateness

        assert self.http_runner is not None
        app = self.http_runner.app

        def sip() -> str | None:
            ep = self.endpoint
            if ep is None or not (ep.udp_port or ep.tcp_port):
                return "SIP not listening"
            if self.switch is not None and self.switch.draining:
                return "draining: not taking new calls"
            return None

        def speech() -> str | None:
            if self.config.asr.engine == "none" or self._run_flow_given:
                return None
            return None if self.speech is not None else "speech workers not running (keys only)"

        def history() -> str | None:
            if not self.degraded:
                return None
            queued = self.recorder.queued if self.recorder is not None else 0
            return f"degraded: the database is unavailable; {queued} calls' records wait in memory"

        add_readiness_check(app, "sip", sip)
        add_readiness_check(app, "speech", speech)
        add_readiness_check(app, "history", history)

    def _media_host(self, peer_host: str) -> str:
        return local_address_for(peer_host, self.config.sip.public_address, self.config.sip.listen.host)

    async def _goodbye(self) -> np.ndarray | None:
        if self.ivr is None:
            return None
        pcm: np.ndarray = await self.ivr.tts.render(GOODBYE)
        return pcm

    async def _start_http(self) -> None:
        from cti.history import CallHistory
        from cti.http import STORE_KEY, build_api
        from cti.lookup import make_lookup
        from cti.web import DESK_KEY
        from cti.web.keys import PHONES_KEY
        from voice.ivr.runtime import make_tts

        self.tts = make_tts(self.config)
        from voice.ivr.catalog import LibraryCatalog

        # The admin pages show the flows calls run (the IVR's library, once it is loaded).
        flows = LibraryCatalog(lambda: self.ivr.library if self.ivr is not None else None)
        app = build_api(self.config, connector=self, voice=self.tts, flows=flows, dialer=self)
        app[PHONES_KEY] = self.phones
        self.http_runner = web.AppRunner(app, access_log=None)
        await self.http_runner.setup()  # runs cleanup_ctx startup: database open and migrated
        store = app[STORE_KEY]
        self.desk = app[DESK_KEY]
        self.history = CallHistory(store, node=self.config.node.id)
        node = self.config.node
        self.recorder = CallRecorder(self.history, spool=WriteSpool(node.spool / f"{node.id}.jsonl"))
        self.lifecycle.subscribe(self.recorder)
        self.lookup = make_lookup(store, self.config.cti.recent_interactions)
        await self.recorder.replay()  # what this node kept while the database was away, first
        interrupted = await self.history.mark_interrupted()
        if interrupted:
            log.warning("%d calls of node %s from a previous run were interrupted", interrupted,
                        self.config.node.id)
        listen = self.config.http.listen
        site = web.TCPSite(self.http_runner, listen.host, listen.port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.http_port = sockets[0].getsockname()[1] if sockets else listen.port
        log.info("HTTP API on %s:%d", listen.host, self.http_port)

    async def _start_asr(self) -> None:
        """Speech recognition workers (models load once per worker). Without them, flows still run
        on keys alone: a broken speech setup must not keep the phones from being answered."""
        if self._run_flow is not None:
            return
        if self.config.asr.engine == "none":
            log.info("speech recognition is off ([asr] engine = none): flows take keys only")
            return
        from voice.asr import SpeechRecognizer

        try:
            self.speech = await asyncio.wait_for(SpeechRecognizer.start(self.config.asr), 120)
        except Exception as exc:
            log.error("speech recognition is off: %s", exc)

    def _start_ivr(self) -> None:
        if self._run_flow is not None:
            return
        from voice.ivr.runtime import IvrRuntime

        self.ivr = IvrRuntime(self.config, lookup=self.lookup, desk=self.desk, speech=self.speech,
                              transfer_queue=self._transfer_queue, request_callback=self._request_callback,
                              tts=self.tts)
        self._background.extend(self.ivr.start())
        self._run_flow = self.ivr.run_call

    def _number_domain(self) -> str:
        """Where a bare number (a transfer from the softphone) is dialled: the registrar's domain
        when the node registers to a provider, else [sip] domain."""
        reg = self.config.register
        if reg is not None:
            return reg.domain or reg.registrar.removeprefix("sip:").split(";")[0]
        return self.config.sip.domain

    # ---- agents ---------------------------------------------------------------------------
    async def connect(self, call: CallView, agent_uri: str, *, timeout: float) -> AgentConnection:
        """The desk's AgentConnector (cti.ports): the switch rings the agent and bridges."""
        if self.switch is None:
            raise RuntimeError("the SIP side is not started")
        return await self.switch.connect(call, agent_uri, timeout=timeout)

    async def ring_agent(self, agent_uri: str, *, timeout: float, display: str | None = None) -> OutboundLeg:
        """The desk's OutboundDialer (cti.ports), first leg of a callback: the agent's phone."""
        if self.originator is None:
            raise RuntimeError("the SIP side is not started")
        return await self.originator.ring_agent(agent_uri, timeout=timeout, display=display)

    async def call_customer(self, agent: OutboundLeg, customer: CustomerNumber, *, timeout: float,
                            on_ringing: Callable[[], None] | None = None) -> CustomerConnection:
        """Second leg: the customer, through the trunk, bridged with the agent."""
        if self.originator is None or not isinstance(agent, AgentLeg):
            raise RuntimeError("the SIP side is not started")
        return await self.originator.call_customer(agent, customer, timeout=timeout, on_ringing=on_ringing)

    async def _transfer_queue(self, call: Call, queue: str, *, prefer_agent: str | None = None,
                              prefer_for: float = 0.0, continues: str | None = None) -> Any:
        """`transfer: queue:NAME`: wait in the queue and talk to an agent (the desk does both);
        the flow goes on when the agent hangs up first. The agent affinity and the continued
        interaction go to the desk as the flow gave them."""
        assert self.desk is not None
        outcome: QueueOutcome = await self.desk.transfer_queue(
            DeskCall(call), queue, prefer_agent=prefer_agent, prefer_for=prefer_for, continues=continues)
        self.lifecycle.publish(CallTransferred(
            call=call, target=f"queue:{outcome.queue}", ok=outcome.ok, agent_id=outcome.agent_id,
            waited=outcome.waited, talk_seconds=outcome.talk_seconds or 0.0, hangup_by=outcome.hangup_by,
            callback_id=outcome.callback_id))
        if outcome.reason == "callback" and not call.ended:
            await call.hangup("callback")  # they keep their place: the desk calls them back
        for step in outcome.transfers:  # blind transfers from the agents' softphones
            self.lifecycle.publish(CallTransferred(
                call=call, target=step.target, ok=step.ok, agent_id=step.agent_id, waited=step.waited,
                talk_seconds=step.talk_seconds, hangup_by=step.hangup_by, by_agent=step.by_agent,
                reason=None if step.ok else step.reason))
        return outcome

    async def _request_callback(self, call: Call, queue: str, *,
                                earliest: datetime | None = None) -> str | None:
        """A flow's `callback:`: the desk asks for the number and keeps the callback (None: not
        taken). The call's record links to it; the flow then hangs up."""
        assert self.desk is not None
        callback_id: str | None = await self.desk.request_callback(DeskCall(call), queue, earliest=earliest)
        if callback_id is not None:
            self.lifecycle.publish(CallTransferred(call=call, target=f"callback:{queue}", ok=True,
                                                   agent_id=None, waited=0.0, talk_seconds=0.0,
                                                   callback_id=callback_id))
        return callback_id

    # ---- SIP events ---------------------------------------------------------------------
    def _on_event(self, event: ev.Event) -> None:
        if isinstance(event, ev.IncomingCall):
            assert self.switch is not None
            self.switch.on_event(event)
        elif isinstance(event, ev.RegistrationChanged):
            if event.registered:
                log.info("registered to %s for %ds", event.registration.registrar, event.expires)
            elif event.status is not None and 200 <= event.status < 300:
                log.info("unregistered from %s", event.registration.registrar)
            else:
                log.warning("registration to %s failed (%s)", event.registration.registrar, event.status)


def setup_logging(level: str, fmt: str = "text", sip_trace: str = "no") -> None:
    from voice import logs, sipwire

    logs.setup_logging(level, fmt)
    sipwire.configure(sip_trace)


async def serve(config: Config) -> None:
    service = Service(config)
    await service.start()
    # Everything loaded so far (libraries, flows, prompts, the database layer) lives as long as the
    # process: move it out of the collector's sight, so that a full collection during calls scans
    # only the calls' objects (it took up to 80 ms at 200 calls, and the media waits for it).
    gc.collect()
    gc.freeze()
    from cti import metrics

    metrics.watch_gc()  # voice_gc_pause_seconds: how long collections hold the media back
    if config.node.full_gc_interval:
        FullCollections(asyncio.get_running_loop(), config.node.full_gc_interval).start()
    if config.rtp.realtime_loop:
        realtime_loop_thread()
    stop = asyncio.Event()
    signals = 0
    ending: list[asyncio.Future[None]] = []
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        nonlocal signals
        signals += 1
        stop.set()
        if signals > 1:
            log.warning("second stop signal: ending every call now")
            if service.switch is not None:
                ending.append(asyncio.ensure_future(service.switch.end_all(goodbye=False)))

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    from voice.firstrun import ready_message

    print(ready_message(config, service.http_port, service.endpoint.udp_port if service.endpoint else None),
          flush=True)
    await stop.wait()
    log.info("stopping: draining calls for up to %d s (signal again to stop at once)",
             config.sip.drain_timeout)
    drain = asyncio.ensure_future(service.drain())
    while not drain.done():
        await asyncio.wait({drain}, timeout=0.2)
        if signals > 1:
            drain.cancel()
            break
    await service.stop()


def main(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"voice: configuration error: {exc}", file=sys.stderr)
        return 2
    from voice.firstrun import with_api_key

    config = with_api_key(config)  # the first run generates one (data/api_key) when none is configured
    setup_logging(config.log_level, config.log_format, config.sip_trace)
    try:
        asyncio.run(serve(config))
    except OSError as exc:
        print(f"voice: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0
