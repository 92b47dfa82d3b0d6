"""Virtual hold: a waiting caller presses the queue's `callback_key`, confirms the number (1) or
keys in another (then #), and hangs up keeping their place (cti.callback_desk calls them back).

Rules (the whole contract):
- The offer is part of the position announcement ("... press 9 to be called back ...") when the
  queue has a `callback_key`; the key works at any time while the caller waits (not while an
  agent's phone rings for them: they are about to be connected).
- The confirmation: "We will call you back at 5 5 5 ... Press 1 to confirm, or enter another
  number followed by the pound key." Up to `TRIES` tries; no valid answer (silence, a number of
  fewer than `MIN_DIGITS` digits, a withheld caller ID confirmed with 1) -> the caller goes on
  waiting with their place unchanged. `*` cancels at once.
- With no TTS (`voice` None) nothing can be asked: the key is not offered.
"""

from __future__ import annotations

from cti.ports import CallView
from cti.waiting import SpeechRenderer

OFFER_TEXT = " To hang up and be called back when an agent is free, keeping your place, press {key}."
CONFIRM_TEXT = ("We will call you back at {digits}. To confirm, press 1. To give another number, "
                "enter it now, followed by the pound key. {star}")
ASK_TEXT = "Please enter the number we should call, followed by the pound key. {star}"
DONE_TEXT = "Thank you. We will call you back at {digits} {when}. Goodbye."
KEEP_TEXT = "You keep your place in line. Please hold."
# While waiting in a queue (virtual hold) / from a flow's `callback:` (e.g. outside business hours)
STAR = {True: "To keep waiting, press star.", False: "To cancel, press star."}
WHEN = {True: "as soon as an agent is free", False: "as soon as we are open"}
TRIES = 2
MIN_DIGITS = 3
MAX_DIGITS = 20
FIRST_KEY_TIMEOUT = 8.0  # seconds after the question for the first key
NEXT_KEY_TIMEOUT = 5.0  # seconds between the keys of a number


def spoken(number: str) -> str:
    """Digits one by one ("+1 555" -> "plus 1 5 5 5"), as TTS should say a phone number."""
    return " ".join("plus" if c == "+" else c for c in number if c.isdigit() or c == "+")


def usable(number: str | None) -> bool:
    digits = "".join(c for c in (number or "") if c.isdigit())
    return MIN_DIGITS <= len(digits) <= MAX_DIGITS


async def _say(call: CallView, voice: SpeechRenderer, text: str) -> None:
    await call.play(await voice.render(text), dtmf_barge_in=True)


async def ask_callback_number(call: CallView, voice: SpeechRenderer, *, waiting: bool = True) -> str | None:
    """The number to call back (the caller ID confirmed, or keyed in), or None: keep waiting
    (`waiting`: the caller is in a queue) or no callback."""
    caller = call.info.caller
    star = STAR[waiting]
    ask = ASK_TEXT.format(star=star)
    for attempt in range(TRIES):
        if call.ended:
            return None
        confirm = attempt == 0 and usable(caller)
        text = CONFIRM_TEXT.format(digits=spoken(caller), star=star) if confirm else ask
        await _say(call, voice, text)
        key = await call.receive_digit(FIRST_KEY_TIMEOUT)
        if key is None or key == "*":
            break
        if key == "1" and confirm:
            return caller
        typed = "" if key == "#" else key
        while len(typed) <= MAX_DIGITS:
            key = await call.receive_digit(NEXT_KEY_TIMEOUT)
            if key is None or key == "#":
                break
            if key == "*":
                return None
            typed += key
        if usable(typed) and typed.isdigit():
            return typed
    if not call.ended and waiting:
        await _say(call, voice, KEEP_TEXT)
    return None


async def say_goodbye(call: CallView, voice: SpeechRenderer, number: str, *, waiting: bool = True) -> None:
    await call.play(await voice.render(DONE_TEXT.format(digits=spoken(number), when=WHEN[waiting])))
