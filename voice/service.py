"""`voice run`: the SIP/RTP service, the IVR, and the HTTP API in one process and one loop."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import signal
import sys
from typing import Any

from aiohttp import web

from voice.aio.rtp import RtpPortPool
from voice.aio.sip import SipEndpoint
from voice.call import Call
from voice.calls import CallHandler, FlowRunner, local_address_for
from voice.config import Config, ConfigError, load_config
from voice.dialer import DialOutcome, dial_agent
from voice.sip import events as ev
from voice.sip.core import CallPolicy, LocalIdentity, SipCore
from voice.sip.digest import DigestVerifier
from voice.sip.register import Registration
from voice.sip.transaction import TimerValues

log = logging.getLogger("voice")


class Service:
    def __init__(self, config: Config, *, run_flow: FlowRunner | None = None) -> None:
        self.config = config
        self._run_flow = run_flow
        self.endpoint: SipEndpoint | None = None
        self.core: SipCore | None = None
        self.pool = RtpPortPool(config.rtp.port_min, config.rtp.port_max)
        self.registration: Registration | None = None
        self.http_runner: web.AppRunner | None = None
        self.http_port = 0
        self.history: Any = None
        self.lookup: Any = None
        self.calls: dict[str, CallHandler] = {}
        self._background: list[asyncio.Task[Any]] = []
        self.ivr: Any = None
        self.desk: Any = None  # cti.routing.AgentDesk: queues, agents, screen pops
        self.speech: Any = None  # voice.asr.SpeechRecognizer
        self._bridges: dict[str, asyncio.Task[DialOutcome]] = {}

    # ---- lifecycle ------------------------------------------------------------------
    async def start(self) -> None:
        cfg = self.config
        await self._start_http()
        await self._start_asr()
        self._start_ivr()
        listen = cfg.sip.listen
        host = local_address_for("192.0.2.1", cfg.sip.public_address, listen.host)
        user = cfg.register.username if cfg.register is not None else "voice"
        identity = LocalIdentity(host=host, port=listen.port, user=user, user_agent=cfg.sip.user_agent)
        verifier = DigestVerifier(cfg.sip.domain, cfg.sip.auth_users) if cfg.sip.auth_users else None
        policy = CallPolicy(trusted=cfg.sip.trusted, verifier=verifier, max_calls=cfg.sip.max_calls)
        t1 = cfg.sip.t1_ms / 1000
        self.core = SipCore(identity, policy, TimerValues(t1=t1, t2=max(4.0, 8 * t1), t4=max(5.0, 10 * t1)))
        self.endpoint = SipEndpoint(self.core, self._on_event)
        await self.endpoint.start(listen.host, listen.port, cfg.sip.transports)
        identity.port = self.endpoint.udp_port or self.endpoint.tcp_port
        log.info("SIP listening on %s (%s), RTP ports %d-%d, trusted %s", listen,
                 "+".join(cfg.sip.transports), cfg.rtp.port_min, cfg.rtp.port_max,
                 ", ".join(str(n) for n in cfg.sip.trusted))
        if cfg.register is not None:
            reg = cfg.register
            self.registration = Registration(self.core, registrar=reg.registrar, username=reg.username,
                                             password=reg.password, expires=reg.expires, domain=reg.domain)
            self.registration.start(self.endpoint.now())
            self.endpoint.flush()

    async def stop(self) -> None:
        if self.registration is not None and self.endpoint is not None:
            self.registration.stop(self.endpoint.now())
            self.endpoint.flush()
        for handler in list(self.calls.values()):
            if handler.call is not None and not handler.call.ended:
                with contextlib.suppress(Exception):
                    await handler.call.hangup("shutdown")
        tasks = [h.task for h in self.calls.values() if h.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        for task in self._background:
            task.cancel()
        if self.endpoint is not None:
            await asyncio.sleep(0.05)  # let the BYEs leave
            await self.endpoint.close()
        if self.ivr is not None:
            await self.ivr.close()
        if self.speech is not None:
            await self.speech.aclose()
        if self.http_runner is not None:
            await self.http_runner.cleanup()

    async def _start_http(self) -> None:
        from cti.history import CallHistory
        from cti.http import STORE_KEY, build_api
        from cti.lookup import make_lookup
        from cti.web import DESK_KEY

        app = build_api(self.config)
        self.http_runner = web.AppRunner(app, access_log=None)
        await self.http_runner.setup()  # runs cleanup_ctx startup: database open and migrated
        store = app[STORE_KEY]
        self.desk = app[DESK_KEY]
        self.desk.dial_agent = self._dial_agent
        self.history = CallHistory(store)
        self.lookup = make_lookup(store, self.config.cti.recent_interactions)
        interrupted = await self.history.mark_interrupted()
        if interrupted:
            log.warning("%d calls from a previous run were interrupted", interrupted)
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
        from voice.runtime import IvrRuntime

        self.ivr = IvrRuntime(self.config, lookup=self.lookup, desk=self.desk, speech=self.speech,
                              transfer_queue=self._transfer_queue)
        if self.desk is not None:
            from cti.routing import position_announcer

            self.desk.library = self.ivr.library
            self.desk.on_position = position_announcer(self.ivr.tts)
        self._background.extend(self.ivr.start())
        self._run_flow = self.ivr.run_call

    # ---- agents ---------------------------------------------------------------------------
    def _handler_of(self, call: Call) -> CallHandler | None:
        return next((h for h in self.calls.values() if h.call is call), None)

    async def _dial_agent(self, call: Call, slot: Any) -> bool:
        """The desk's dialer: ring the agent's phone; True once answered and bridged.

        The bridged conversation goes on in its own task (kept in _bridges) after this returns;
        the desk cancels us on its ring timeout or when the caller hangs up (a CANCEL goes out).
        """
        handler = self._handler_of(call)
        if handler is None:
            return False
        answered = asyncio.Event()
        task = asyncio.ensure_future(dial_agent(self, handler, slot.sip_uri, timeout=120.0,
                                                on_answered=lambda _leg: answered.set()))
        waiter = asyncio.ensure_future(answered.wait())
        try:
            await asyncio.wait({waiter, task}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            task.cancel()
            raise
        finally:
            waiter.cancel()
        if answered.is_set():
            self._bridges[call.info.call_id] = task
            return True
        return bool(task.result())

    async def _transfer_queue(self, call: Call, queue: str) -> Any:
        """`transfer: queue:NAME`: wait in the queue, talk to an agent, and come back to the flow
        when the agent hangs up first (the caller hanging up ends the call as usual)."""
        assert self.desk is not None
        outcome = await self.desk.transfer_queue(call, queue)
        bridge = self._bridges.pop(call.info.call_id, None)
        if not outcome.ok or bridge is None:
            return outcome
        try:
            talk = await bridge
        finally:
            await self.desk.agent_call_ended(outcome.agent_id)
        log.info("call %s: %s with agent %s for %.1fs, %s hung up", call.info.call_id, queue,
                 outcome.agent_id, talk.talk_seconds or 0.0, talk.hangup_by)
        return outcome

    # ---- SIP events ---------------------------------------------------------------------
    def _on_event(self, event: ev.Event) -> None:
        assert self.endpoint is not None and self._run_flow is not None
        if isinstance(event, ev.IncomingCall):
            sip = event.call
            media_host = local_address_for(sip.source.host, self.config.sip.public_address,
                                           self.config.sip.listen.host)
            handler = CallHandler(sip, endpoint=self.endpoint, pool=self.pool, media_host=media_host,
                                  run_flow=self._run_flow, history=self.history,
                                  record=self.config.rtp.record, recordings=self.config.ivr.recordings,
                                  answer_delay=self.config.sip.answer_delay_ms / 1000,
                                  own_user=self.core.identity.user if self.core else "")
            handler.start()
            if handler.task is not None:  # None: refused at once (488)
                key = sip.call_id + sip.dialog.local_tag
                self.calls[key] = handler
                handler.task.add_done_callback(lambda _t: self.calls.pop(key, None))
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
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    from voice.firstrun import ready_message

    print(ready_message(config, service.http_port, service.endpoint.udp_port if service.endpoint else None),
          flush=True)
    await stop.wait()
    log.info("stopping")
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
