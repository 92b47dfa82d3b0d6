"""One handler per node action. Each takes (interpreter, flow, node) and returns the next
node name, None (end of flow), or RETURN (leave the sub-flow); EndCall ends the call."""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from voice.callcontrol.call import CallEnded
from voice.ivr.interpreter import RETURN, EndCall, FlowInterpreter, Turn
from voice.ivr.model import Flow, MenuOption, Node, Prompt, PromptItem
from voice.ivr.templates import Template

log = logging.getLogger("voice.ivr")

Handler = Callable[[FlowInterpreter, Flow, Node], Awaitable[str | None]]
HANDLERS: dict[str, Handler] = {}

YES_WORDS = ("yes", "yeah", "yep", "correct", "right", "that's right", "sure")
NO_WORDS = ("no", "nope", "wrong", "incorrect", "not right")
DIGIT_WORDS = {"zero": "0", "oh": "0", "o": "0", "one": "1", "two": "2", "to": "2", "too": "2",
               "three": "3", "four": "4", "for": "4", "five": "5", "six": "6", "seven": "7", "eight": "8",
               "nine": "9", "star": "*", "pound": "#", "hash": "#"}


def handler(name: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        HANDLERS[name] = fn
        return fn

    return register


def _barge(it: FlowInterpreter, args: dict[str, Any]) -> tuple[bool, bool]:
    s = it.flow_settings()
    d = args.get("dtmf_barge_in")
    sp = args.get("speech_barge_in")
    return (s.dtmf_barge_in if d is None else d), (s.speech_barge_in if sp is None else sp)


def _timeout(it: FlowInterpreter, args: dict[str, Any], key: str = "timeout") -> float:
    value = args.get(key)
    return float(value) if value is not None else it.flow_settings().timeout


def spoken_digits(text: str) -> str:
    """'one two three four' / '1 2 3 4' -> '1234' (what the recogniser heard, as keys)."""
    out = []
    for word in re.findall(r"[a-z']+|\d", text.lower()):
        if word.isdigit():
            out.append(word)
        elif word in DIGIT_WORDS:
            out.append(DIGIT_WORDS[word])
    return "".join(out)


def _matches(text: str, words: tuple[str, ...]) -> bool:
    """Keyword spotting: the whole phrase, or any listed phrase as whole words in what was heard."""
    heard = " " + " ".join(re.findall(r"[a-z0-9']+", text.lower())) + " "
    return any(f" {w} " in heard for w in words)


# ---- prompts and control ----------------------------------------------------
@handler("say")
async def say(it: FlowInterpreter, flow: Flow, node: Node) -> str | None:
    dtmf, _ = _barge(it, {})
    await it.play(node.args["value"] or (), dtmf_barge_in=dtmf, speech_barge_in=False)
    return node.next


HANDLERS["play"] = say


@handler("pause")
async def pause(it: FlowInterpreter, flow: Flow, node: Node) -> str | None:
    await it.call.sleep(float(node.args["value"] or 0))
    return node.next


@handler("set")
async def set_vars(it: FlowInterpreter, flow: Flow, node: Node) -> str | None:
    for name, expr in node.args["value"] or []:
        it.vars[name] = it.evaluate(expr)
    return node.next


@handler("branch")
async def branch(it: FlowInterpreter, flow: Flow, node: Node) -> str | None:
    for expr, target in node.args["value"] or []:
        if expr is None or it.truth(expr):
            return str(target)
    return node.next


@handler("call")
async def call_subflow(it: FlowInterpreter, flow: Flow, node: Node) -> str | None:
    sub = flow.subflows[node.args["flow"]]
    for name, value in sub.variables.items():
        it.vars.setdefault(name, value)
    for name, expr in node.args.get("with") or []:
        it.vars[name] = it.evaluate(expr)
    it.sensitive |= sub.sensitive
    await it.run_subflow(sub)
    it.current_flow = flow
    return node.next


@handler("return")
async def return_(it: FlowInterpreter, flow: Flow, node: Node) -> str | None:
    return RETURN


@handler("hangup")
async def hangup(it: FlowInterpreter, flow: Flow, node: Node) -> str | None:
    prompt = node.args.get("prompt")
    if prompt:
        await it.play(prompt, dtmf_barge_in=False, speech_barge_in=False)
    raise EndCall("hangup")


# ---- input ------------------------------------------------------------------
@handler("menu")
async def menu(it: FlowInterpreter, flow: Flow, node: Node) -> str | None:
    args = node.args
    options: list[MenuOption] = args["options"]
    dtmf_barge, speech_barge = _barge(it, args)
    words = [w for o in options for w in o.words]
    use_speech = bool(words) if args.get("speech") is None else bool(args["speech"])

    async def attempt(prompt: Prompt) -> tuple[str, str | None]:
        live = [o for o in options if o.when is None or it.truth(o.when)]
        turn = await it.turn(prompt, timeout=_timeout(it, args), speech=use_speech,
                             options=[w for o in live for w in o.words], dtmf_barge_in=dtmf_barge,
                             speech_barge_in=speech_barge)
        if turn.kind == "noinput":
            it.note_input("none", "", "noinput")
            return "noinput", None
        chosen: MenuOption | None = None
        if turn.kind == "dtmf":
            chosen = next((o for o in live if turn.digit in o.dtmf), None)
            it.note_input("dtmf", turn.digit, "match" if chosen else "nomatch")
        elif turn.speech is not None:
            # Only what the recognizer matched (grammar option, confidence >= [asr] min_confidence)
            # chooses: the text of a nomatch is a guess, and a caller is never routed on a guess.
            if turn.speech.status == "match":
                heard = turn.speech.option or turn.speech.text
                chosen = next((o for o in live if heard.lower().strip() in o.words), None) or next(
                    (o for o in live if _matches(heard, o.words)), None)
            it.note_input("speech", turn.speech.text, "match" if chosen else "nomatch",
                          **_speech_extra(turn.speech))
        if chosen is None:
            return "nomatch", None
        if args.get("into"):
            it.vars[args["into"]] = chosen.value
        if turn.kind == "speech" and _needs_confirming(args, turn):
            assert turn.speech is not None
            spoken = turn.speech.option or turn.speech.text
            question = args.get("confirm") or _heard_prompt(spoken)
            answer = await _yes_no(it, question, _timeout(it, args), dtmf_barge, speech_barge)
            if answer != "yes":
                if args.get("into"):
                    it.vars.pop(args["into"], None)
                return "retry", None
        return "ok", chosen.goto

    return await it.attempts(node, args, attempt)


async def _read_digits(it: FlowInterpreter, first: str, *, max_len: int, terminator: str,
                       inter_digit: float) -> tuple[str, bool]:
    """Digits after the first one until terminator, max length or inter-digit timeout."""
    digits = "" if first == terminator else first
    terminated = first == terminator
    while not terminated and len(digits) < max_len:
        d = await it.call.receive_digit(inter_digit)
        if d is None:
            break
        if d == terminator:
            terminated = True
        else:
            digits += d
    return digits, terminated


@handler("collect")
async def collect(it: FlowInterpreter, flow: Flow, node: Node) -> str | None:
    args = node.args
    var: str = args["into"]
    lo, hi = args.get("min") or 1, args.get("max") or 20
    terminator = args.get("terminator") or "#"
    pattern: re.Pattern[str] | None = args.get("pattern")
    inter = _timeout(it, args, "inter_digit_timeout") if args.get("inter_digit_timeout") is not None \
        else it.flow_settings().inter_digit_timeout
    first_timeout = args.get("first_digit_timeout") or _timeout(it, args)
    dtmf_barge, speech_barge = _barge(it, args)
    sensitive = var if args.get("sensitive") else None

    async def attempt(prompt: Prompt) -> tuple[str, str | None]:
        turn = await it.turn(prompt, timeout=first_timeout, speech=bool(args.get("speech")), options=None,
                             dtmf_barge_in=dtmf_barge, speech_barge_in=speech_barge, sensitive_var=sensitive)
        if turn.kind == "noinput":
            it.note_input("none", "", "noinput", var)
            return "noinput", None
        if turn.kind == "dtmf":
            digits, _ = await _read_digits(it, turn.digit, max_len=hi, terminator=terminator,
                                           inter_digit=inter)
            kind = "dtmf"
        else:
            assert turn.speech is not None
            # a nomatch's text is a guess: it never becomes the caller's digits
            heard = turn.speech.text if turn.speech.status == "match" else ""
            digits, kind = spoken_digits(heard), "speech"
        ok = lo <= len(digits) <= hi and (pattern is None or pattern.fullmatch(digits) is not None)
        extra = _speech_extra(turn.speech) if kind == "speech" and turn.speech is not None else {}
        if sensitive:
            extra.pop("nbest", None)  # the alternatives are digits too
        it.note_input(kind, digits, "match" if ok else "nomatch", var, **extra)
        if not ok:
            return "nomatch", None
        it.vars[var] = digits
        below = args.get("confirm_below")
        if below is not None and kind == "speech" and _needs_confirming(args, turn):
            question = args.get("confirm") or _heard_prompt(" ".join(digits))
            answer = await _yes_no(it, question, _timeout(it, args), dtmf_barge, speech_barge)
            if answer != "yes":
                it.vars.pop(var, None)
                return "retry", None
        elif args.get("confirm") and below is None:
            answer = await _yes_no(it, args["confirm"], _timeout(it, args), dtmf_barge, speech_barge)
            if answer != "yes":
                it.vars.pop(var, None)
                return "retry", None
        return "ok", node.next

    return await it.attempts(node, args, attempt)


def _speech_extra(speech: Any) -> dict[str, Any]:
    """What the IVR record keeps of a recognition: confidence, end of speech, the n-best."""
    extra: dict[str, Any] = {"confidence": round(speech.confidence, 3), "speech_end": round(speech.end, 3)}
    if speech.engine:
        extra["engine"] = speech.engine
    best = (speech.option or speech.text, round(speech.confidence, 3))
    nbest = [best, *[(t, round(c, 3)) for t, c in speech.alternatives if t != best[0]]]
    if best[0]:
        extra["nbest"] = [list(n) for n in nbest]
    return extra


def _needs_confirming(args: dict[str, Any], turn: Turn) -> bool:
    below = args.get("confirm_below")
    return below is not None and turn.speech is not None and turn.speech.confidence < below


def _heard_prompt(heard: str) -> Prompt:
    text = " ".join(re.findall(r"[A-Za-z0-9']+", heard))  # recognizer words only: no template syntax
    return (PromptItem(kind="say", text=Template(f"I heard {text}, is that right?")),)


async def _yes_no(it: FlowInterpreter, prompt: Prompt, timeout: float, dtmf_barge: bool,
                  speech_barge: bool) -> str | None:
    """One yes/no question: "yes", "no", or None for silence/anything else."""
    turn = await it.turn(prompt, timeout=timeout, speech=True, options=[*YES_WORDS, *NO_WORDS],
                         dtmf_barge_in=dtmf_barge, speech_barge_in=speech_barge)
    answer: str | None = None
    if turn.kind == "dtmf":
        answer = {"1": "yes", "2": "no"}.get(turn.digit)
        it.note_input("dtmf", turn.digit, "match" if answer else "nomatch")
    elif turn.kind == "speech" and turn.speech is not None:
        heard = f"{turn.speech.text} {turn.speech.option or ''}"  # the words, not only the grammar's pick
        # "no" first: "not right" contains "right"; a nomatch is a guess and answers nothing
        answer = None
        if turn.speech.status == "match":
            answer = "no" if _matches(heard, NO_WORDS) else "yes" if _matches(heard, YES_WORDS) else None
        it.note_input("speech", turn.speech.text, "match" if answer else "nomatch",
                      **_speech_extra(turn.speech))
    else:
        it.note_input("none", "", "noinput")
    return answer if turn.kind != "noinput" else "noinput"


@handler("confirm")
async def confirm(it: FlowInterpreter, flow: Flow, node: Node) -> str | None:
    args = node.args
    dtmf_barge, speech_barge = _barge(it, args)

    async def attempt(prompt: Prompt) -> tuple[str, str | None]:
        answer = await _yes_no(it, prompt, _timeout(it, args), dtmf_barge, speech_barge)
        if answer == "noinput":
            return "noinput", None
        if answer is None:
            return "nomatch", None
        return "ok", args[f"on_{answer}"]

    return await it.attempts(node, args, attempt)


@handler("ask")
async def ask(it: FlowInterpreter, flow: Flow, node: Node) -> str | None:
    args = node.args
    var: str = args["into"]
    options: tuple[str, ...] = args.get("options") or ()
    dtmf_barge, speech_barge = _barge(it, args)
    sensitive = var if args.get("sensitive") else None

    async def attempt(prompt: Prompt) -> tuple[str, str | None]:
        turn: Turn = await it.turn(prompt, timeout=_timeout(it, args), speech=True,
                                   options=list(options) or None, dtmf_barge_in=dtmf_barge,
                                   speech_barge_in=speech_barge, sensitive_var=sensitive)
        if turn.kind == "noinput":
            it.note_input("none", "", "noinput", var)
            return "noinput", None
        if turn.kind == "dtmf":  # no recogniser, or the caller preferred keys: take what they type
            value, _ = await _read_digits(it, turn.digit, max_len=32, terminator="#",
                                          inter_digit=it.flow_settings().inter_digit_timeout)
            it.note_input("dtmf", value, "match", var)
        else:
            assert turn.speech is not None
            value = turn.speech.option or turn.speech.text
            status = turn.speech.status
            if options and not (turn.speech.option or _matches(value, options)):
                status = "nomatch"
            it.note_input("speech", value, status, var, confidence=round(turn.speech.confidence, 3))
            if status != "match" or not value:
                return "nomatch", None
        it.vars[var] = value
        return "ok", node.next

    return await it.attempts(node, args, attempt)


# ---- data -------------------------------------------------------------------
@handler("lookup")
async def lookup(it: FlowInterpreter, flow: Flow, node: Node) -> str | None:
    args = node.args
    by = args.get("by") or "caller"
    into = args.get("into") or "customer"
    if by == "caller":
        query = {"phone": str(it.vars.get("caller") or "")}
    else:
        value = it.evaluate(args["value"]) if args.get("value") is not None else None
        query = {by: "" if value is None else str(value)}
    result: dict[str, Any] = {"found": False}
    failed = False
    if it.lookup is None:
        log.info("call %s: no customer store configured; lookup finds nothing", it.call.info.call_id)
    else:
        try:
            result = await it.lookup(**query)
        except CallEnded:
            raise
        except Exception as exc:
            log.warning("call %s node %s: lookup failed: %s", it.call.info.call_id, node.name,
                        it.redact(f"{type(exc).__name__}: {exc}"))
            failed = True
    customer = dict(result.get("customer") or {})
    if result.get("found") and customer.get("id"):
        # The call is this customer's from now on: its record, the live view and the agent's pop.
        it.call.identify(str(customer["id"]), "caller_id" if by == "caller" else str(by))
    attributes = {**(customer.get("attributes") or {}), **(result.get("attributes") or {})}
    # This very call is in the history already: "the last contact" means the ones before it.
    own = it.call.interaction_id

    def earlier(i: dict[str, Any]) -> bool:
        if own is not None:
            return i.get("id") != own
        return not (i.get("channel") == "voice" and i.get("status") == "in_progress")  # ours, on its way

    recent = [i for i in result.get("recent_interactions") or [] if earlier(i)]
    contexts = [interaction_context(i, it.wall_clock()) for i in recent]
    last_on: dict[str, dict[str, Any]] = {}
    for c in contexts:
        last_on.setdefault(str(c["channel"]), c)
    it.vars[into] = {**customer, "found": bool(result.get("found")), "attributes": attributes,
                     "recent_interactions": recent, "last": contexts[0] if contexts else None,
                     "last_on": last_on}
    if failed and args.get("on_error"):
        return str(args["on_error"])
    target = args.get("found") if it.vars[into]["found"] else args.get("not_found")
    return target or node.next


OPEN_STATUSES = frozenset({"open", "pending", "in_progress", "waiting", "new"})


def interaction_context(item: dict[str, Any], now: datetime) -> dict[str, Any]:
    """`customer.last` / `customer.last_on.chat`: what a flow may ask of an earlier contact."""
    started = _when(item.get("ended_at")) or _when(item.get("started_at"))
    status = str(item.get("status") or "")
    return {"id": item.get("id"), "channel": item.get("channel"), "summary": item.get("summary"),
            "subject": item.get("subject"), "agent": item.get("agent"),
            "disposition": item.get("disposition"), "queue": item.get("queue"),
            "status": "open" if status in OPEN_STATUSES else "closed",
            "age": round((now - started).total_seconds()) if started is not None else None}


def _when(text: Any) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _render_json(it: FlowInterpreter, value: Any) -> Any:
    if isinstance(value, Template):
        return it.text(value)[0]
    if isinstance(value, dict):
        return {k: _render_json(it, v) for k, v in value.items()}
    if isinstance(value, list):
        return [_render_json(it, v) for v in value]
    return value


@handler("http")
async def http(it: FlowInterpreter, flow: Flow, node: Node) -> str | None:
    import aiohttp

    args = node.args
    into = args.get("into") or "http"
    url, shown_url = it.text(args["url"])
    method = args.get("method") or "GET"
    timeout = args.get("timeout") or 5.0
    headers = {k: it.text(v)[0] for k, v in (args.get("headers") or {}).items()}
    body = _render_json(it, args["json"]) if "json" in args else None
    session = it.http
    if session is None:
        session = it.own_http = it.own_http or aiohttp.ClientSession()
    t0 = time.monotonic()
    try:
        async with session.request(method, url, headers=headers, json=body,
                                   timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            text = (await resp.content.read(65536)).decode("utf-8", "replace")
            data: Any = None
            if "json" in (resp.content_type or ""):
                with contextlib.suppress(ValueError):
                    import json

                    data = json.loads(text)
            it.vars[into] = {"status": resp.status, "ok": resp.status < 400, "json": data, "text": text}
            ok = resp.status < 400
    except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
        reason = type(exc).__name__ if isinstance(exc, TimeoutError) else it.redact(str(exc))
        it.vars[into] = {"status": None, "ok": False, "json": None, "text": "", "error": reason}
        ok = False
    log.info("call %s node %s: %s %s -> %s in %.0f ms", it.call.info.call_id, node.name, method, shown_url,
             it.vars[into]["status"] or it.vars[into].get("error"), (time.monotonic() - t0) * 1000)
    if not ok and args.get("on_error"):
        return str(args["on_error"])
    return node.next


# ---- endings ----------------------------------------------------------------
# The endings (transfer, record, callback) are in voice.ivr.endings, which registers them here.
from voice.ivr import endings  # noqa: E402, F401  (after `handler` and the helpers it uses)


def _check_registry() -> None:
    from voice.ivr.spec import ACTIONS

    missing = set(ACTIONS) - set(HANDLERS)
    if missing:
        raise RuntimeError(f"actions without a handler: {sorted(missing)}")


_check_registry()

