"""The contract between speech recognition and its users (the IVR, the transcriber).

`SpeechListener.listen()` attaches to a live Call's audio, waits for speech, endpoints it,
recognizes it (off the event loop) and returns one SpeechResult. It adds the
utterance to the call's transcript itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from voice.callcontrol.call import Call

SpeechStatus = Literal["match", "nomatch", "noinput", "error"]


@dataclass(frozen=True, kw_only=True)
class SpeechResult:
    status: SpeechStatus
    text: str = ""
    confidence: float = 0.0
    option: str | None = None  # the grammar option matched (one of `options`), if any
    start: float = 0.0  # seconds from call start
    end: float = 0.0
    engine: str = ""
    # other readings, best first, as (text, confidence): kept in the IVR record's input entry
    alternatives: tuple[tuple[str, float], ...] = ()


class SpeechListener(Protocol):
    async def listen(
        self,
        call: Call,
        *,
        options: Sequence[str] | None = None,  # phrases for grammar mode; None = free form
        no_input_timeout: float = 5.0,
        complete_timeout: float | None = None,  # silence that ends a matching utterance
        incomplete_timeout: float | None = None,
        max_speech: float | None = None,
        barge_in: bool = True,  # on speech start, call.interrupt_playback("speech") if allowed
    ) -> SpeechResult: ...
