"""What runs on every answered call: the YAML flow for its dialled number, with TTS,
speech recognition and CTI lookups wired in. The service owns one IvrRuntime."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import aiohttp

from voice.callcontrol.call import Call
from voice.config import Config
from voice.tts import Tts

log = logging.getLogger("voice.ivr")


def make_tts(config: Config) -> Tts:
    """The service's TTS (one for prompts, queue announcements and the goodbye)."""
    return Tts(config.ivr.tts, config.ivr.tts_voice, Path("data") / "tts-cache")


class IvrRuntime:
    def __init__(self, config: Config, *, lookup: Any = None, speech: Any = None, desk: Any = None,
                 transfer_queue: Any = None, request_callback: Any = None, tts: Tts | None = None) -> None:
        from voice.ivr import FlowLibrary

        ivr = config.ivr
        self.config = config
        self.lookup = lookup
        self.speech = speech
        self.desk = desk  # cti.routing.AgentDesk: live calls for the admin page and screen pops
        self.transfer_queue = transfer_queue
        self.request_callback = request_callback
        self.tts = tts or make_tts(config)
        # Passing the TTS lets the library pre-render every static prompt at load and on reload.
        self.library = FlowLibrary(ivr.flows, prompts_dir=ivr.prompts, default_flow=ivr.default_flow,
                                   routes=ivr.routes, tts=self.tts)
        self.library.load()  # logs every error itself; invalid flows are not loaded
        self.http: aiohttp.ClientSession | None = None

    def start(self) -> list[asyncio.Task[Any]]:
        """Background tasks: prompt pre-rendering, then hot reload of flow files."""
        return [asyncio.ensure_future(self.library.watch())]

    async def run_call(self, call: Call) -> dict[str, Any] | None:
        from voice.ivr import FlowInterpreter

        if self.http is None:
            self.http = aiohttp.ClientSession()
        info = call.info
        flow = self.library.flow_for(info.dialled)
        on_event = None
        if self.desk is not None:
            self.desk.live.add(call.key, call_id=info.call_id, caller=info.caller,
                               caller_name=info.caller_name, dialled=info.dialled,
                               interaction_id=call.interaction_id)
            on_event = self.desk.live.ivr_hook(call.key)
        interpreter = FlowInterpreter(
            flow, call, tts=self.tts, speech=self.speech, lookup=self.lookup, http=self.http,
            recordings_dir=self.config.ivr.recordings, prompts_dir=self.config.ivr.prompts,
            transfer_queue=self.transfer_queue, request_callback=self.request_callback, on_event=on_event,
            hours=self.config.hours,
            timezone=self.config.ivr.timezone)
        try:
            record = await interpreter.run()
        finally:
            if self.desk is not None:
                self.desk.live.remove(call.key)
        result: dict[str, Any] = record.to_json()
        return result

    async def close(self) -> None:
        if self.http is not None:
            await self.http.close()
