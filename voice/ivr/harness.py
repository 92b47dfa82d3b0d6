"""Run a flow against an in-memory call: for tests, `voice simulate` and benchmarks.

`FakeTts` "speaks" a fixed 60 ms of silence per word without an engine, so prompt
lengths are realistic on a virtual clock while nothing is synthesised.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from voice.callcontrol.call import SAMPLE_RATE, Call, CallInfo
from voice.callcontrol.fake import FakeMedia, FakeSignalling
from voice.ivr.interpreter import FlowInterpreter
from voice.ivr.model import Flow
from voice.tts import Tts


class FakeTts(Tts):
    def __init__(self, seconds_per_word: float = 0.06) -> None:
        super().__init__("flite", "none", Path("/nonexistent"))
        self.seconds_per_word = seconds_per_word
        self.spoken: list[str] = []

    def cached(self, text: str) -> np.ndarray | None:
        return None

    async def render(self, text: str) -> np.ndarray:
        text = " ".join(text.split())
        self.spoken.append(text)
        return np.zeros(int(len(text.split()) * self.seconds_per_word * SAMPLE_RATE), dtype=np.int16)


def make_call(*, caller: str = "+15550100", dialled: str = "100", realtime: float = 1.0,
              clock: Callable[[], float] | None = None) -> tuple[Call, FakeMedia, FakeSignalling]:
    """A Call on fake ports (must be called on the running loop); playback takes `realtime` x length."""
    import asyncio

    media, signalling = FakeMedia(realtime=realtime), FakeSignalling()
    info = CallInfo(call_id=uuid.uuid4().hex, caller=caller, caller_name=None, dialled=dialled,
                    remote="127.0.0.1:5060")
    call = Call(info, media, signalling, clock=clock or asyncio.get_running_loop().time)
    return call, media, signalling


def make_interpreter(flow: Flow, call: Call, *, tts: Tts | None = None, recordings_dir: Path,
                     prompts_dir: Path, **kw: Any) -> FlowInterpreter:
    return FlowInterpreter(flow, call, tts=tts or FakeTts(), recordings_dir=recordings_dir,
                           prompts_dir=prompts_dir, **kw)
