"""Scripted callers on virtual time: press keys and speak at chosen moments, run a flow.

    record, ctx = run_script(flow, [(1.0, "press", "12#"), (3.0, "say", "billing")], ...)

Times are seconds of virtual time from the start of the call; nothing really waits.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voice.callcontrol.call import Call
from voice.callcontrol.fake import FakeMedia, FakeSignalling
from voice.ivr.harness import FakeTts, make_call
from voice.ivr.interpreter import FlowInterpreter
from voice.ivr.model import Flow
from voice.ivr.record import CallRecord
from voice.ivr.textlistener import TextListener
from voice.ivr.vtime import run_virtual
from voice.tts import Tts

Step = tuple[float, str, str]  # (at seconds, "press" | "say" | "hangup", argument)


@dataclass
class ScriptRun:
    record: CallRecord
    call: Call
    media: FakeMedia
    signalling: FakeSignalling
    tts: Tts
    listener: TextListener | None
    interpreter: FlowInterpreter
    duration: float  # virtual seconds the call lasted
    events: list[tuple[float, str, dict[str, Any]]] = field(default_factory=list)


async def run_script_async(flow: Flow, steps: list[Step], *, tmp_path: Path, speech: bool = True,
                           tts: Tts | None = None, caller: str = "+15550100", **kw: Any) -> ScriptRun:
    loop = asyncio.get_running_loop()
    call, media, signalling = make_call(caller=caller, realtime=1.0)
    call.interaction_id = kw.pop("interaction_id", None)
    listener = TextListener() if speech else None
    tts = tts or FakeTts()
    events: list[tuple[float, str, dict[str, Any]]] = []
    t0 = loop.time()
    interp = FlowInterpreter(flow, call, tts=tts, speech=listener, recordings_dir=tmp_path / "calls",
                             prompts_dir=kw.pop("prompts_dir", tmp_path / "prompts"),
                             on_event=lambda k, d: events.append((loop.time() - t0, k, d)), **kw)

    async def caller_script() -> None:
        for at, what, arg in sorted(steps, key=lambda s: s[0]):
            await asyncio.sleep(max(0.0, t0 + at - loop.time()))
            if what == "press":
                media.press(arg)
            elif what == "say":
                assert listener is not None
                listener.say(arg)
            elif what == "hangup":
                signalling.remote_hangup("caller hung up")

    script = asyncio.ensure_future(caller_script())
    record = await interp.run()
    duration = loop.time() - t0
    script.cancel()
    try:
        await script
    except asyncio.CancelledError:
        pass
    return ScriptRun(record, call, media, signalling, tts, listener, interp, duration, events)


def run_script(flow: Flow, steps: list[Step], **kw: Any) -> ScriptRun:
    """Run on a fresh virtual-time loop (call from synchronous tests)."""
    return run_virtual(run_script_async(flow, steps, **kw))
