"""A SpeechListener that "hears" typed text: for `voice simulate` and scripted tests."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from voice.asr.base import SpeechResult, SpeechStatus
from voice.callcontrol.call import TranscriptSegment

if TYPE_CHECKING:
    from voice.callcontrol.call import Call


class TextListener:
    """`say(text)` delivers an utterance to the current (or next) listen() call."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self.listening = False
        self.heard: list[str] = []

    def say(self, text: str) -> None:
        self._queue.put_nowait(text)

    async def listen(
        self,
        call: Call,
        *,
        options: Sequence[str] | None = None,
        no_input_timeout: float = 5.0,
        complete_timeout: float | None = None,
        incomplete_timeout: float | None = None,
        max_speech: float | None = None,
        barge_in: bool = True,
    ) -> SpeechResult:
        self.listening = True
        start = call.elapsed()
        try:
            text = await asyncio.wait_for(self._queue.get(), no_input_timeout)
        except TimeoutError:
            return SpeechResult(status="noinput", start=start, end=call.elapsed(), engine="text")
        finally:
            self.listening = False
        if barge_in and call.speech_barge_in:
            call.interrupt_playback("speech")
        self.heard.append(text)
        words = " " + " ".join(re.findall(r"[a-z0-9']+", text.lower())) + " "
        option = None
        for o in options or ():
            if f" {o.lower()} " in words:
                option = o
                break
        status: SpeechStatus = "match" if option is not None or not options else "nomatch"
        now = call.elapsed()
        call.add_segment(TranscriptSegment(start=start, end=now, speaker="caller", kind="speech", text=text,
                                           confidence=1.0, engine="text"))
        return SpeechResult(status=status, text=text, confidence=1.0, option=option, start=start, end=now,
                            engine="text")
