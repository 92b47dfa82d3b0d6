"""What the transcript must not keep: card numbers said on a call, keys pressed to an agent.

Applied where a segment enters the call's transcript (`Call.add_segment`), so the stored
transcript, the screen pop and anything shown live read the same masked text:
- in every speech segment (caller or agent, IVR or conversation), a run of 12 or more digits
  (card numbers: digits or digit words, spaces, dashes and dots between them) becomes MASK;
- while the call is in a sensitive context (`Call.sensitive`: a sensitive collect/ask, or a
  `transfer` with `sensitive: true`, e.g. a payments queue), every digit the caller says is masked;
- keys pressed during a bridged conversation land as one masked dtmf segment per run of keys
  (`note_bridge_key`): that a caller keyed something is kept, never what.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from voice.callcontrol.call import Call, TranscriptSegment

MASK = "****"  # as the IVR masks sensitive values (voice.ivr.templates)
CARD_DIGITS = 12  # a run this long is treated as a card number
KEY_RUN_GAP = 3.0  # seconds between keys that still belong to one masked run

_WORDS = {"zero": "0", "oh": "0", "one": "1", "two": "2", "three": "3", "four": "4",
          "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9"}
_DIGIT = r"(?:\d|\b(?:" + "|".join(sorted(_WORDS, key=len, reverse=True)) + r")\b)"
_SEP = r"[\s,.\-/]*"
# A run of digits and digit words with separators between them (the longest run at each place).
_RUN = re.compile(rf"{_DIGIT}(?:{_SEP}{_DIGIT})*", re.IGNORECASE)


def _digits_in(run: str) -> int:
    return sum(1 for tok in re.findall(r"\d|[A-Za-z]+", run) if tok.isdigit() or tok.lower() in _WORDS)


def mask_digit_runs(text: str, at_least: int = CARD_DIGITS) -> str:
    """`text` with every run of at least `at_least` digits (or digit words) replaced by MASK."""
    def one(match: re.Match[str]) -> str:
        run = match.group(0)
        return MASK if _digits_in(run) >= at_least else run

    return _RUN.sub(one, text)


def mask_segment(segment: TranscriptSegment, *, sensitive: bool) -> TranscriptSegment:
    """The segment as the transcript may keep it (alternatives dropped when anything is masked:
    the n-best would say what the mask hides)."""
    if segment.kind != "speech" or segment.text == MASK:
        return segment
    at_least = 1 if sensitive and segment.speaker == "caller" else CARD_DIGITS
    text = mask_digit_runs(segment.text, at_least)
    if text == segment.text:
        return segment
    return replace(segment, text=text, alternatives=())


def note_bridge_key(call: Call, speaker: str) -> None:
    """A key pressed during a bridged conversation: a masked dtmf segment, or the end of the
    speaker's run of keys moved on when the last key was less than KEY_RUN_GAP s ago."""
    from voice.callcontrol.call import TranscriptSegment

    now = round(call.elapsed(), 3)
    transcript = call.transcript
    for i in range(len(transcript) - 1, max(-1, len(transcript) - 4), -1):  # the last few segments
        last = transcript[i]
        if last.speaker != speaker:
            continue
        if last.kind == "dtmf" and last.text == MASK and now - last.end < KEY_RUN_GAP:
            transcript[i] = replace(last, end=now)
            return
        break
    call.add_segment(TranscriptSegment(start=now, end=now, speaker=speaker, kind="dtmf", text=MASK))
