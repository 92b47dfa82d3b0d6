"""`voice simulate FILE`: be the caller in a terminal.

Prompts print as text (no audio is rendered). Type digits (`1`, `1234#`) to press keys,
words (`billing`) to speak, or an empty line to stay silent (the no-input timer then
fires at once: time is virtual and only moves while the flow waits for you). At the end
of input the caller stays silent until the flow ends the call.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TextIO

from voice.hours import BusinessHours
from voice.ivr.harness import FakeTts, make_call
from voice.ivr.interpreter import FlowInterpreter
from voice.ivr.library import FlowLibrary
from voice.ivr.textlistener import TextListener
from voice.ivr.vtime import run_virtual

_KEYS = re.compile(r"^[0-9*#A-D]+$")


class Simulator:
    def __init__(self, library: FlowLibrary, flow_name: str, caller: str, *, lookup: Any = None,
                 prompts_dir: Path, recordings_dir: Path, read_line: Callable[[], str] | None = None,
                 out: TextIO | None = None, hours: Mapping[str, BusinessHours] | None = None,
                 timezone: str = "UTC") -> None:
        """`hours`/`timezone`: the config's [hours NAME] sections and [ivr] timezone (`open()`)."""
        self.hours = dict(hours or {})
        self.timezone = timezone
        self.library = library
        self.flow_name = flow_name
        self.caller = caller
        self.lookup = lookup
        self.prompts_dir = prompts_dir
        self.recordings_dir = recordings_dir
        self.read_line = read_line or sys.stdin.readline
        self.out = out or sys.stdout  # looked up per run: the default would pin the stdout of import time
        self.want_input = asyncio.Event()

    def show(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def on_event(self, kind: str, data: dict[str, Any]) -> None:
        if kind == "prompt":
            what = data.get("text") or (f"[plays {data['file']}]" if "file" in data else "[silence]")
            self.show(f"  IVR: {what}")
        elif kind == "input_wait":
            self.want_input.set()
        elif kind == "end":
            self.show(f"  -- call ended: {data['ended']}")

    async def run(self) -> int:
        flow = self.library.flows.get(self.flow_name)
        if flow is None:
            self.show(f"flow {self.flow_name!r} is not loaded (see the errors above)")
            return 1
        call, media, signalling = make_call(caller=self.caller, realtime=0.0)
        listener = TextListener()

        async def transfer_queue(_call: Any, queue: str, **options: Any) -> bool:
            extra = "".join(f", {k} {v!r}" for k, v in options.items())
            self.show(f"  -- transferred to agent queue {queue!r}{extra}")
            return True

        interp = FlowInterpreter(flow, call, tts=FakeTts(), speech=listener, lookup=self.lookup,
                                 recordings_dir=self.recordings_dir, prompts_dir=self.prompts_dir,
                                 transfer_queue=transfer_queue, on_event=self.on_event, log_record=False,
                                 hours=self.hours, timezone=self.timezone)
        task = asyncio.ensure_future(interp.run())
        self.show(f"Calling flow {flow.name!r} as {self.caller}. "
                  "Type keys, words, or an empty line for silence.")
        eof = False
        while not task.done() and not eof:
            waiter = asyncio.ensure_future(self.want_input.wait())
            await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            if task.done():
                break
            line = await asyncio.get_running_loop().run_in_executor(None, self.read_line)
            eof = line == ""  # end of input: silence from now on, the flow's timers end the call
            text = line.strip()
            if not text:
                self.want_input.clear()  # silence: let the flow's timers run
            elif _KEYS.match(text):
                media.press(text)
            else:
                listener.say(text)
        record = await task
        for msg in signalling.transfers:
            self.show(f"  -- SIP transfer to {msg}")
        self.show(f"  -- path: {' > '.join(record.nodes)}")
        return 0


def _busy(lookup: Any) -> Any:
    """Database I/O runs in driver threads the virtual clock cannot see: hold time still meanwhile."""

    async def wrapped(**kw: Any) -> Any:
        loop = asyncio.get_running_loop()
        loop.busy_threads += 1  # type: ignore[attr-defined]
        try:
            return await lookup(**kw)
        finally:
            loop.busy_threads -= 1  # type: ignore[attr-defined]

    return wrapped


def main(args: argparse.Namespace) -> int:
    path = Path(args.file)
    prompts, recordings = Path("recordings/prompts"), Path("recordings/calls")
    cfg = None
    if args.config:
        from voice.config import ConfigError, load_config

        try:
            cfg = load_config(args.config)
        except ConfigError as exc:
            print(exc, file=sys.stderr)
            return 2
        prompts, recordings = cfg.ivr.prompts, cfg.ivr.recordings
    from voice.ivr.tools import flow_name, library_for_file

    found, problem = library_for_file(path, prompts, cfg.ivr.flows if cfg is not None else Path("ivr_flows"))
    if found is None:
        print(problem, file=sys.stderr)
        return 2
    library = found
    name = flow_name(library, path)
    for err in library.load():
        print(err, file=sys.stderr)
    logging.getLogger("voice.ivr").setLevel(logging.ERROR)

    async def go() -> int:
        lookup, db = None, None
        if cfg is not None:  # look callers up in the configured customer store
            try:
                from cti.db import open_database
                from cti.lookup import make_lookup
                from cti.store import CustomerStore

                db = open_database(cfg.database.url)
                store = CustomerStore(db, default_country=cfg.cti.default_country)
                lookup = _busy(make_lookup(store, cfg.cti.recent_interactions))
            except Exception as exc:  # the simulator still works without customer data
                print(f"customer store unavailable ({exc}); lookups find nothing", file=sys.stderr)
        try:
            sim = Simulator(library, name, args.caller, lookup=lookup, prompts_dir=prompts,
                            recordings_dir=recordings, hours=cfg.hours if cfg is not None else None,
                            timezone=cfg.ivr.timezone if cfg is not None else "UTC")
            return await sim.run()
        finally:
            if db is not None:
                await db.dispose()

    return run_virtual(go())
