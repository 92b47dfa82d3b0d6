"""The built-in call logic used before any flow runs (and by the SIP tests): answer, play a
prompt, collect digits up to '#', say them back as tones, log them, hang up.

Real deployments run YAML flows (voice/ivr); this keeps the SIP/RTP path testable alone.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from voice.audio import silence, tone
from voice.call import Call, CallEnded

log = logging.getLogger("voice.demo")

PROMPT = np.concatenate([tone(440, 300), silence(100), tone(660, 300)])


async def demo_flow(call: Call, *, max_digits: int = 8, first_timeout: float = 20.0,
                    inter_timeout: float = 5.0) -> dict[str, Any]:
    digits = ""
    ended = "hangup"
    try:
        await call.play(PROMPT)
        timeout = first_timeout
        while len(digits) < max_digits:
            digit = await call.receive_digit(timeout)
            if digit is None or digit == "#":
                break
            digits += digit
            timeout = inter_timeout
        log.info("call %s from %s entered %r", call.info.call_id, call.info.caller, digits)
        for _ in digits:
            await call.play(tone(880, 120), dtmf_barge_in=False)
            await call.play(silence(80), dtmf_barge_in=False)
        await call.hangup("demo_done")
    except CallEnded:
        ended = "caller_hangup"
        log.info("call %s from %s hung up after entering %r", call.info.call_id, call.info.caller, digits)
    return {"flow": "builtin-demo", "digits": digits, "ended": ended}
