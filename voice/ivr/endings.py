"""The handlers of the actions that end or hand on a call: transfer (a queue or a SIP URI),
record (a message), callback (virtual hold from a flow). Registered in voice.ivr.actions' table."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from voice.callcontrol.call import SAMPLE_RATE, CallEnded
from voice.config_values import QUEUE_NAME
from voice.ivr.actions import handler
from voice.ivr.interpreter import EndCall, FlowInterpreter
from voice.ivr.model import Flow, Node

log = logging.getLogger("voice.ivr")


@handler("transfer")
async def transfer(it: FlowInterpreter, flow: Flow, node: Node) -> str | None:
    args = node.args
    target, shown = it.text(args["to"])
    target = target.strip()
    ok = False
    reason = ""
    try:
        if target.startswith("queue:"):
            queue = target.removeprefix("queue:").strip()
            if not QUEUE_NAME.match(queue):
                # e.g. queue:{customer.last.queue} with no queue recorded: say so, take on_failure
                reason = (f"{shown!r} does not name a queue (queue:NAME, NAME of letters, digits, '.', '_' "
                          f"and '-')")
            elif it.transfer_queue is None:
                reason = "no agent queues configured"
            else:
                sensitive = bool(args.get("sensitive"))
                it.call.sensitive += sensitive  # the conversation's transcript masks every digit
                try:
                    res = await it.transfer_queue(it.call, queue, **_queue_options(it, args))
                finally:
                    it.call.sensitive -= sensitive
                ok = bool(getattr(res, "ok", res))
                reason = str(getattr(res, "reason", ""))
        else:
            res = await it.call.transfer(target)
            ok, reason = res.ok, res.reason
    except CallEnded:
        raise
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}"
    if not ok and it.call.ended:
        # The caller hung up while waiting or while the agent's phone rang: the flow is over (no
        # "transfer failed" and no on_failure branch played to nobody).
        raise CallEnded(it.call.end_cause or "bye")
    if ok:
        # A queue transfer keeps us in the media path: if the agent hung up first, the caller is
        # still here and may continue in the flow.
        if target.startswith("queue:") and args.get("after_call") and not it.call.ended:
            it.record.transfer_target = shown
            return str(args["after_call"])
        raise EndCall("transfer", shown)
    log.warning("call %s node %s: transfer to %s failed: %s", it.call.info.call_id, node.name, shown,
                it.redact(reason))
    it.record.transfers_failed.append(shown)
    return args.get("on_failure") or node.next


DEFAULT_PREFER_FOR = 30.0


def _queue_options(it: FlowInterpreter, args: dict[str, Any]) -> dict[str, Any]:
    """Agent affinity and the continued interaction of a queue transfer, when the flow gives them
    (an empty rendering, e.g. a last contact without an agent, gives nothing)."""
    options: dict[str, Any] = {}
    if args.get("prefer_agent") is not None:
        agent = it.text(args["prefer_agent"])[0].strip()[:200]
        if agent:
            prefer_for = args.get("prefer_for")
            options["prefer_agent"] = agent
            options["prefer_for"] = float(DEFAULT_PREFER_FOR if prefer_for is None else prefer_for)
    if args.get("continues") is not None:
        continues = it.text(args["continues"])[0].strip()
        if continues and len(continues) <= 64:
            options["continues"] = continues
    return options


def _beep() -> np.ndarray:
    t = np.arange(int(0.25 * SAMPLE_RATE)) / SAMPLE_RATE
    return (np.sin(2 * np.pi * 1000 * t) * 8000).astype(np.int16)


@handler("record")
async def record(it: FlowInterpreter, flow: Flow, node: Node) -> str | None:
    args = node.args
    into = args.get("into") or "recording"
    terminator = args.get("terminator") or "#"
    max_seconds = args.get("max_seconds") or 60.0
    if args.get("prompt"):
        await it.play(args["prompt"], dtmf_barge_in=False, speech_barge_in=False)
    if args.get("beep", True):
        await it.call.play(_beep(), dtmf_barge_in=False)
    safe_id = re.sub(r"[^A-Za-z0-9_.-]", "_", it.call.info.call_id)[:64]
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    path = it.recordings_dir / f"{stamp}-{safe_id}-{node.name}.wav"
    await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
    it.call.clear_digits()
    it.call.start_recording(path)
    saved: Path | None = None
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max_seconds
        while (left := deadline - loop.time()) > 0:
            if await it.call.receive_digit(left) in (terminator, None):
                break
    finally:
        saved = it.call.stop_recording()
    final = str(saved or path)
    it.vars[into] = final
    it.record.recordings.append(final)
    return node.next


# Sanity: every action in the language has a handler (fails at import, not mid-call).

@handler("callback")
async def callback(it: FlowInterpreter, flow: Flow, node: Node) -> str | None:
    """Virtual hold from a flow (e.g. outside business hours): the desk asks for the number and
    keeps the callback; then the call ends. Without callbacks, or no number: on_failure/next."""
    args = node.args
    queue, shown = it.text(args["queue"])
    queue = queue.strip().removeprefix("queue:").strip()
    reason = ""
    callback_id: str | None = None
    if not QUEUE_NAME.match(queue):
        reason = f"{shown!r} does not name a queue"
    elif it.request_callback is None:
        reason = "callbacks are not available here"
    else:
        earliest = None
        if args.get("hours") is not None:
            name = it.text(args["hours"])[0].strip()
            hours = it.hours.get(name)
            if hours is None:
                log.warning("call %s node %s: no [hours %s] section: the callback is placed at once",
                            it.call.info.call_id, node.name, name[:64])
            else:
                now = it.wall_clock()
                opens = hours.next_open(now)
                earliest = opens if opens is not None and opens > now else None
        callback_id = await it.request_callback(it.call, queue, earliest=earliest)
        reason = "no number was confirmed"
    if it.call.ended and callback_id is None:
        raise CallEnded(it.call.end_cause or "bye")
    if callback_id is not None:
        it.vars["callback"] = {"id": callback_id, "queue": queue}
        raise EndCall("callback")
    log.info("call %s node %s: no callback: %s", it.call.info.call_id, node.name, reason)
    return args.get("on_failure") or node.next
