"""FlowInterpreter: runs one call through a flow, node by node, until it ends.

Each node's action is a small handler in `voice.ivr.actions` (looked up by name). The
interpreter owns what the handlers share: variables, prompt playback (TTS and files with
DTMF and speech barge-in), one "turn" of caller input (keys or speech, whichever comes
first), retries with per-attempt no-input/no-match prompts, and the CallRecord.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
import time
import zoneinfo
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cti import metrics
from voice.callcontrol.call import SAMPLE_RATE, Call, CallEnded, TranscriptSegment, release_frames
from voice.hours import BusinessHours, now_view
from voice.ivr.expr import Expr, ExprError
from voice.ivr.model import Flow, Node, Prompt, PromptItem, Settings
from voice.ivr.prompts import PromptFiles
from voice.ivr.record import CallRecord
from voice.ivr.templates import MASK, Template
from voice.tts import Tts, TtsError

if TYPE_CHECKING:
    from voice.asr.base import SpeechListener, SpeechResult

log = logging.getLogger("voice.ivr")
_WARNED_HOURS: set[str] = set()


def _warn_no_hours(name: str) -> None:
    if name not in _WARNED_HOURS and len(_WARNED_HOURS) < 100:
        _WARNED_HOURS.add(name)
        log.warning("a flow asks for the business hours %r: no [hours %s] section in the configuration, "
                    "so the line counts as always open", name[:64], name[:64])
calls_log = logging.getLogger("voice.calls")
OWN_END_CAUSES = frozenset({"shutdown", "media_failed", "callback"})

MAX_STEPS = 2000  # nodes per call: a flow that loops without waiting for the caller is a bug
MAX_DEPTH = 16  # nested sub-flows
SORRY = "Sorry, something went wrong. Please call again later. Goodbye."
RETURN = "\0return"  # handler result: leave the current sub-flow

Lookup = Callable[..., Awaitable[dict[str, Any]]]
EventHook = Callable[[str, dict[str, Any]], None]


class EndCall(Exception):
    """Raised by handlers to finish the call: hangup (we hang up) or transfer (signalling took it)."""

    def __init__(self, ended: str, target: str | None = None) -> None:
        super().__init__(ended)
        self.ended = ended
        self.target = target


class FlowRuntimeError(Exception):
    pass


@dataclass(frozen=True)
class Turn:
    """What one wait for caller input produced."""

    kind: str  # "dtmf" | "speech" | "noinput"
    digit: str = ""
    speech: SpeechResult | None = None


class FlowInterpreter:
    def __init__(
        self,
        flow: Flow,
        call: Call,
        *,
        tts: Tts,
        speech: SpeechListener | None = None,
        lookup: Lookup | None = None,
        http: Any = None,
        recordings_dir: Path,
        prompts_dir: Path,
        transfer_queue: Callable[..., Awaitable[Any]] | None = None,  # (call, queue, **affinity)
        request_callback: Callable[..., Awaitable[str | None]] | None = None,  # (call, queue, earliest=)
        on_event: EventHook | None = None,
        log_record: bool = True,
        hours: Mapping[str, BusinessHours] | None = None,
        timezone: str = "UTC",
        wall_clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.flow = flow
        self.call = call
        self.tts = tts
        self.speech = speech
        self.lookup = lookup
        self.http = http
        self.recordings_dir = Path(recordings_dir)
        self.prompt_files = PromptFiles(prompts_dir)
        self.transfer_queue = transfer_queue
        self.request_callback = request_callback
        self.on_event = on_event
        self.log_record = log_record
        self.hours = dict(hours or {})
        self.zone = zoneinfo.ZoneInfo(timezone)
        self.wall_clock = wall_clock or (lambda: datetime.now(UTC))
        self.own_http: Any = None  # session opened on demand when none was given
        self.sensitive: set[str] = set(flow.sensitive)
        info = call.info
        self.vars: dict[str, Any] = {
            "caller": info.caller, "caller_name": info.caller_name, "dialled": info.dialled,
            "call_id": info.call_id, "flow": flow.name, "last_node": None,
        }
        self.vars.update(copy.deepcopy(flow.variables))
        self.record = CallRecord(call_id=info.call_id, caller=info.caller, dialled=info.dialled,
                                 flow=flow.name, started_at=info.started_at)
        self.current: Node | None = None
        self.current_flow = flow
        self.depth = 0
        self._steps = 0

    # ---- running -----------------------------------------------------------
    async def run(self) -> CallRecord:
        """Run the call to its end; never raises. Logs the record as one JSON line on voice.calls."""
        t0 = time.monotonic()
        self._log_line("call started", {"event": "call_start", "call_id": self.call.info.call_id,
                                        "interaction_id": self.call.interaction_id,
                                        "node_id": self.call.node, "flow": self.flow.name,
                                        "node": self.flow.start})
        try:
            await self._run_flow(self.flow, 0)
            await self._finish("hangup")
        except EndCall as end:
            release_frames(end)
            await self._finish(end.ended, end.target)
        except CallEnded as gone:
            release_frames(gone)
            # Ended by us for a reason of our own (the service stopping, media lost): say so, as
            # the interaction does; any other end of the dialog is the caller hanging up.
            self.record.ended = gone.cause if gone.cause in OWN_END_CAUSES else "caller_hangup"
        except asyncio.CancelledError:
            self.record.ended = "cancelled"
            self._close_record(t0)
            raise
        except Exception as exc:
            where = self.current.name if self.current else "?"
            log.error("call %s: flow %s failed at node %s: %s", self.call.info.call_id, self.flow.name, where,
                      self.redact(f"{type(exc).__name__}: {exc}"),
                      exc_info=not self.sensitive)  # a traceback could show sensitive values
            self.record.ended = "error"
            self.record.error = self.redact(f"{type(exc).__name__} at node {where}: {exc}")
            await self._apologise()
        finally:
            if self.own_http is not None:
                await self.own_http.close()
        self._close_record(t0)
        return self.record

    def _close_record(self, t0: float) -> None:
        self.record.duration = time.monotonic() - t0
        self.record.variables = self.public_variables()
        fields = self.record.log_fields(self.call.interaction_id)
        self._log_line("call ended", {"event": "call_end", "node_id": self.call.node, **fields})
        self.emit("end", {"ended": self.record.ended})

    def _log_line(self, msg: str, line: dict[str, Any]) -> None:
        """One line on voice.calls: JSON text (format = text), or its keys (format = json)."""
        if self.log_record:
            calls_log.info(json.dumps(line, separators=(",", ":")), extra={"fields": {"msg": msg, **line}})

    async def _finish(self, ended: str, target: str | None = None) -> None:
        self.record.ended = ended
        if target is not None:  # keep a queue transfer the caller came back from
            self.record.transfer_target = target
        if ended in ("hangup", "callback"):
            with contextlib.suppress(CallEnded):
                await self.call.hangup("flow" if ended == "hangup" else ended)

    async def _apologise(self) -> None:
        try:
            prompt = self.flow.settings.sorry or (PromptItem(kind="say", text=Template(SORRY)),)
            await asyncio.wait_for(self.play(prompt, dtmf_barge_in=False, speech_barge_in=False), 15)
        except Exception:  # the apology is best effort: the call may be gone or TTS broken
            log.debug("could not apologise", exc_info=True)
        with contextlib.suppress(Exception):
            await self.call.hangup("error")

    async def run_subflow(self, flow: Flow) -> None:
        self.depth += 1
        try:
            await self._run_flow(flow, self.depth)
        finally:
            self.depth -= 1

    async def _run_flow(self, flow: Flow, depth: int) -> None:
        from voice.ivr.actions import HANDLERS

        if depth > MAX_DEPTH:
            raise FlowRuntimeError(f"sub-flows nested deeper than {MAX_DEPTH} (recursion?)")
        name: str | None = flow.start
        while name is not None:
            self._steps += 1
            if self._steps > MAX_STEPS:
                raise FlowRuntimeError(f"more than {MAX_STEPS} nodes without the call ending (a loop?)")
            node = flow.nodes[name]
            self.current, self.current_flow = node, flow
            self.vars["last_node"] = name
            self.record.path.append({"flow": flow.name, "node": name, "t": round(self.call.elapsed(), 3)})
            metrics.flow_step(flow.name)
            self.emit("node", {"flow": flow.name, "node": name})
            if node.when is not None and not self.truth(node.when):
                name = node.otherwise or node.next
                continue
            target = await HANDLERS[node.action](self, flow, node)
            if target == RETURN:
                return
            name = target
        if depth == 0:
            return  # the end of the main flow: hang up

    # ---- variables -----------------------------------------------------------
    def functions(self) -> dict[str, Callable[..., Any]]:
        """The service functions expressions may call. Made per use: kept on self, the bound
        methods would make a cycle (interpreter -> dict -> method -> interpreter) per call that
        only a full garbage collection frees."""
        return {"open": self.is_open, "opening_hours": self.opening_hours}

    def is_open(self, name: Any) -> bool:
        """`open("support")`: the `[hours support]` section says the line is open now. A line
        without business hours never closes: no such section is open (and logged, once)."""
        hours = self.hours.get(str(name))
        if hours is None:
            _warn_no_hours(str(name))
            return True
        return hours.is_open(self.wall_clock())

    def opening_hours(self, name: Any) -> str:
        """`opening_hours("support")`: the `[hours support]` schedule, as said to a caller."""
        hours = self.hours.get(str(name))
        if hours is None:
            _warn_no_hours(str(name))
            return "at any time"
        return hours.describe() or "at no set times"  # no day open (e.g. every day closed)

    def _refresh_now(self) -> None:
        self.vars["now"] = now_view(self.wall_clock().astimezone(self.zone))

    def evaluate(self, expr: Expr) -> Any:
        self._refresh_now()
        try:
            return expr.evaluate(self.vars, self.functions())
        except ExprError as exc:
            log.warning("call %s node %s: %s", self.call.info.call_id, self._node_name(), exc)
            return None

    def truth(self, expr: Expr) -> bool:
        return bool(self.evaluate(expr))

    def text(self, template: Template) -> tuple[str, str]:
        """(spoken text, masked text for logs)."""
        self._refresh_now()
        return template.render(self.vars, self.sensitive, self.functions())

    def mask(self, var: str | None, value: str) -> str:
        return MASK if var in self.sensitive else value

    def redact(self, text: str) -> str:
        """`text` with the values of sensitive variables masked (for error messages and logs)."""
        for name in self.sensitive:
            value = self.vars.get(name)
            if value not in (None, ""):
                text = text.replace(str(value), MASK)
        return text

    def public_variables(self) -> dict[str, Any]:
        hidden = self.sensitive | {"call_id", "now"}
        return {k: v for k, v in self.vars.items() if k not in hidden and not k.startswith("_")}

    def emit(self, kind: str, data: dict[str, Any]) -> None:
        if self.on_event is not None:
            self.on_event(kind, data)

    def _node_name(self) -> str:
        return self.current.name if self.current else "?"

    # ---- prompts -------------------------------------------------------------
    async def render(self, item: PromptItem) -> tuple[np.ndarray, dict[str, Any]]:
        """Audio for one prompt item plus what the record shows of it."""
        if item.kind == "say" and item.text is not None:
            spoken, shown = self.text(item.text)
            pcm = self.tts.cached(" ".join(spoken.split()))
            if pcm is None:
                try:
                    pcm = await self.tts.render(spoken)
                except TtsError as exc:  # keep the call usable by keys even without a voice
                    log.error("call %s: TTS failed: %s", self.call.info.call_id, exc)
                    pcm = np.zeros(0, dtype=np.int16)
            return pcm, {"text": shown}
        if item.kind == "play" and item.file is not None:
            pcm = self.prompt_files.cached(item.file)
            if pcm is None:
                try:
                    pcm = await self.prompt_files.load(item.file)
                except (FileNotFoundError, RuntimeError) as exc:
                    log.error("call %s: prompt %s: %s", self.call.info.call_id, item.file, exc)
                    pcm = np.zeros(0, dtype=np.int16)
            return pcm, {"file": item.file}
        return np.zeros(int(item.seconds * SAMPLE_RATE), dtype=np.int16), {"silence": item.seconds}

    async def play(self, prompt: Prompt, *, dtmf_barge_in: bool, speech_barge_in: bool,
                   rendered: list[tuple[np.ndarray, dict[str, Any]]] | None = None) -> str | None:
        """Play the items in order; returns what interrupted them ("dtmf"/"speech") or None."""
        if rendered is None:
            rendered = [await self.render(item) for item in prompt]
        for item, (pcm, shown) in zip(prompt, rendered, strict=True):
            dtmf = dtmf_barge_in if item.dtmf_barge_in is None else item.dtmf_barge_in
            speech = speech_barge_in if item.speech_barge_in is None else item.speech_barge_in
            start = self.call.elapsed()
            entry = {"node": self._node_name(), **shown, "t": round(start, 3)}
            self.record.prompts.append(entry)
            self.emit("prompt", entry)
            result = await self.call.play(pcm, dtmf_barge_in=dtmf, speech_barge_in=speech)
            if "text" in shown:
                self.call.add_segment(TranscriptSegment(start=start, end=self.call.elapsed(),
                                                        speaker="system", kind="prompt", text=shown["text"]))
            if not result.completed and result.interrupted_by in ("dtmf", "speech"):
                entry["interrupted_by"] = result.interrupted_by
                return result.interrupted_by
        return None

    @staticmethod
    def seconds(prompt_audio: list[np.ndarray]) -> float:
        return sum(len(p) for p in prompt_audio) / SAMPLE_RATE

    # ---- input ---------------------------------------------------------------
    def note_input(self, kind: str, value: str, status: str, var: str | None = None, **extra: Any) -> None:
        shown = self.mask(var, value) if value else value
        entry = {"node": self._node_name(), "kind": kind, "value": shown, "status": status,
                 "t": round(self.call.elapsed(), 3), **extra}
        self.record.inputs.append(entry)
        self.emit("input", entry)
        if kind == "dtmf" and value:
            t = self.call.elapsed()
            self.call.add_segment(
                TranscriptSegment(start=t, end=t, speaker="caller", kind="dtmf", text=shown))

    async def turn(self, prompt: Prompt, *, timeout: float, speech: bool, options: list[str] | None,
                   dtmf_barge_in: bool, speech_barge_in: bool, sensitive_var: str | None = None) -> Turn:
        """Play the prompt and wait for the first key or a speech result (or silence)."""
        listen: asyncio.Task[SpeechResult] | None = None
        n_segments = len(self.call.transcript)
        rendered = [await self.render(item) for item in prompt]
        if speech and self.speech is not None:
            # listening starts with the prompt (speech barge-in); silence counts once the prompt is over
            wait = timeout + self.seconds([audio for audio, _ in rendered])
            heard = self.speech.listen(self.call, options=options, no_input_timeout=wait,
                                       barge_in=speech_barge_in)
            listen = asyncio.ensure_future(heard)
        try:
            await self.play(prompt, dtmf_barge_in=dtmf_barge_in, speech_barge_in=speech_barge_in and speech,
                            rendered=rendered)
            self.emit("input_wait", {"node": self._node_name(), "speech": listen is not None})
            if listen is not None and listen.done():
                result = listen.result()
                if result.status in ("match", "nomatch"):
                    return self._speech_turn(result, n_segments, sensitive_var)
            digit_task = asyncio.ensure_future(self.call.receive_digit(timeout))
            try:
                waiting: set[asyncio.Future[Any]] = {digit_task}
                speaking = False  # the no-input time ran out while the caller was mid-utterance
                if listen is not None and not listen.done():
                    waiting.add(listen)
                while True:
                    done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                    if digit_task in done:
                        digit = digit_task.result()
                        if digit:
                            return Turn("dtmf", digit=digit)
                        if listen is None or listen.done() or not self.call.speech_in_progress:
                            return Turn("noinput")
                        # VoiceXML: no-input never fires while the caller is speaking; the
                        # recognizer ends the utterance (end of speech or maximum length).
                        waiting.discard(digit_task)
                        digit_task = asyncio.ensure_future(self.call.receive_digit(None))
                        waiting.add(digit_task)
                        speaking = True
                        continue
                    assert listen is not None
                    waiting.discard(listen)
                    result = listen.result()
                    if result.status in ("match", "nomatch"):
                        return self._speech_turn(result, n_segments, sensitive_var)
                    if speaking:  # the no-input time is over and the utterance gave nothing
                        return Turn("noinput")
                    if result.status == "error":
                        log.warning("call %s: speech recognition failed; keys only", self.call.info.call_id)
            finally:
                if not digit_task.done():
                    digit_task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, CallEnded):
                        await digit_task
        finally:
            if listen is not None and not listen.done():
                listen.cancel()
                with contextlib.suppress(asyncio.CancelledError, CallEnded, Exception):
                    await listen

    def _speech_turn(self, result: SpeechResult, n_segments: int, sensitive_var: str | None) -> Turn:
        if sensitive_var is not None:  # the listener wrote the words into the transcript: mask them
            t = self.call.transcript
            for i in range(n_segments, len(t)):
                if t[i].speaker == "caller" and t[i].kind == "speech":
                    t[i] = TranscriptSegment(start=t[i].start, end=t[i].end, speaker="caller", kind="speech",
                                             text=MASK, confidence=t[i].confidence, engine=t[i].engine)
                    # (no alternatives: the n-best would say what the mask hides)
        return Turn("speech", speech=result)

    async def attempts(self, node: Node, args: dict[str, Any],
                       attempt: Callable[[Prompt], Awaitable[tuple[str, str | None]]]) -> str | None:
        """Retry loop shared by every input: per-attempt no-input/no-match prompts, then give up.

        `attempt(prompt)` returns ("ok", target) or ("noinput"|"nomatch"|"retry", None).
        """
        settings = self.flow_settings()
        tries = args.get("attempts") or settings.attempts
        prompt: Prompt = args.get("prompt") or ()
        counts = {"noinput": 0, "nomatch": 0, "retry": 0}
        message: Prompt = ()
        status = "noinput"
        for i in range(tries):
            replay = i == 0 or args.get("reprompt", True)
            status, target = await attempt(message + (prompt if replay else ()))
            if status == "ok":
                return target
            if status == "retry":  # e.g. the caller said "no" to the read-back: ask again, no apology
                message = ()
                continue
            counts[status] += 1
            handlers = args.get("no_input" if status == "noinput" else "no_match") or []
            if not handlers and status == "nomatch":
                handlers = [(PromptItem(kind="say", text=Template("Sorry, I didn't get that.")),)]
            message = handlers[min(counts[status], len(handlers)) - 1] if handlers else ()
        if message:
            await self.play(message, dtmf_barge_in=False, speech_barge_in=False)
        if status == "noinput":
            target = args.get("on_no_input") or args.get("on_failure")
        else:
            target = args.get("on_no_match") or args.get("on_failure") or args.get("on_no_input")
        log.info("call %s node %s: attempts used up (%s)", self.call.info.call_id, node.name, status)
        return target

    def flow_settings(self) -> Settings:
        return self.current_flow.settings
