"""The interpreter against a scripted in-memory call, on virtual time (no real waiting)."""

from __future__ import annotations

import gc
import json
import logging
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from voice.ivr.library import FlowLibrary
from voice.ivr.model import Flow
from voice.ivr.scripted import ScriptRun, run_script


def flow_of(tmp_path: Path, text: str, extra: dict[str, str] | None = None) -> Flow:
    flows = tmp_path / "flows"
    flows.mkdir(exist_ok=True)
    (tmp_path / "prompts").mkdir(exist_ok=True)
    (flows / "f.yaml").write_text(textwrap.dedent(text))
    for name, body in (extra or {}).items():
        (flows / name).parent.mkdir(parents=True, exist_ok=True)
        (flows / name).write_text(textwrap.dedent(body))
    lib = FlowLibrary(flows, prompts_dir=tmp_path / "prompts", default_flow="f", routes={})
    assert lib.load() == []
    return lib.flows["f"]


def said(run: ScriptRun) -> list[str]:
    return [p["text"] for p in run.record.prompts if "text" in p]


MENU = """
    start: menu
    settings: {timeout: 5, attempts: 3}
    nodes:
      menu:
        menu:
          prompt: For sales press 1 or say sales. For support press 2 or say support.
          options:
            - {dtmf: "1", words: [sales], goto: sales}
            - {dtmf: "2", words: [support, help], goto: support}
            - {dtmf: "9", goto: secret, when: "caller == '+1999'"}
          no_input: [Nothing heard one., Nothing heard two.]
          no_match: [Wrong one., Wrong two.]
          on_no_input: silent
          on_no_match: confused
          into: choice
      sales: {hangup: Sales.}
      support: {hangup: Support.}
      secret: {hangup: Secret.}
      silent: {hangup: Bye silent.}
      confused: {hangup: Bye confused.}
"""


def test_menu_by_digit_with_dtmf_barge_in(tmp_path: Path) -> None:
    run = run_script(flow_of(tmp_path, MENU), [(0.3, "press", "2")], tmp_path=tmp_path)
    assert run.record.nodes == ["menu", "support"]
    assert run.record.prompts[0]["interrupted_by"] == "dtmf"  # 13 words = 0.78 s, pressed at 0.3 s
    assert run.record.inputs == [{"node": "menu", "kind": "dtmf", "value": "2", "status": "match", "t": 0.3}]
    assert run.record.variables["choice"] == "support"
    assert run.record.ended == "hangup" and run.signalling.hung_up == "flow"
    assert said(run)[-1] == "Support."


def test_menu_by_keyword(tmp_path: Path) -> None:
    run = run_script(flow_of(tmp_path, MENU), [(1.0, "say", "I need some help please")], tmp_path=tmp_path)
    assert run.record.nodes[-1] == "support"
    assert run.record.inputs[0]["kind"] == "speech" and run.record.inputs[0]["status"] == "match"
    assert any(s.kind == "speech" and s.text == "I need some help please" for s in run.call.transcript)


def test_menu_option_when_hides_an_option(tmp_path: Path) -> None:
    flow = flow_of(tmp_path, MENU)
    hidden = run_script(flow, [(1.0, "press", "9"), (3.0, "press", "1")], tmp_path=tmp_path)
    assert hidden.record.nodes == ["menu", "sales"] and hidden.record.inputs[0]["status"] == "nomatch"
    shown = run_script(flow, [(1.0, "press", "9")], tmp_path=tmp_path, caller="+1999")
    assert shown.record.nodes == ["menu", "secret"]


def test_no_input_retries_with_per_attempt_prompts_on_virtual_time(tmp_path: Path) -> None:
    t0 = time.monotonic()
    run = run_script(flow_of(tmp_path, MENU), [], tmp_path=tmp_path)
    assert time.monotonic() - t0 < 2.0  # three 5 s timeouts did not really pass
    assert run.duration > 15.0
    prompt = said(run)[0]
    assert said(run) == [prompt, "Nothing heard one.", prompt, "Nothing heard two.", prompt,
                         "Nothing heard two.", "Bye silent."]
    assert [i["status"] for i in run.record.inputs] == ["noinput"] * 3
    assert run.record.nodes == ["menu", "silent"]


def test_no_match_retries_exhausted(tmp_path: Path) -> None:
    run = run_script(flow_of(tmp_path, MENU), [(1, "press", "7"), (3, "press", "8"), (5, "say", "pizza")],
                     tmp_path=tmp_path)
    assert [i["status"] for i in run.record.inputs] == ["nomatch"] * 3
    assert "Wrong one." in said(run) and "Wrong two." in said(run)
    assert run.record.nodes == ["menu", "confused"]


def test_speech_barge_in_stops_the_prompt(tmp_path: Path) -> None:
    root = Path(__file__).parent / "flows"
    lib = FlowLibrary(root, prompts_dir=tmp_path, default_flow="speech_menu", routes={})
    assert lib.load() == []
    run = run_script(lib.flows["speech_menu"], [(0.1, "say", "sales")], tmp_path=tmp_path)
    assert run.record.prompts[0]["interrupted_by"] == "speech"
    assert run.record.nodes == ["ask", "sales"]


COLLECT = """
    start: get
    nodes:
      get:
        collect:
          prompt: Enter your code.
          into: code
          min: 4
          max: 6
          terminator: "#"
          first_digit_timeout: 2
          timeout: 10
          inter_digit_timeout: 1.5
          pattern: "[1-9][0-9]*"
          no_match: Invalid code.
          on_failure: failed
        next: done
      done: {hangup: "Code {code|digits}."}
      failed: {hangup: Failed.}
"""


@pytest.mark.parametrize(("steps", "code"), [
    ([(0.5, "press", "1234#")], "1234"),  # terminator
    ([(0.5, "press", "1234567")], "123456"),  # max length ends collection; the 7 stays type-ahead
    ([(0.5, "press", "12"), (1.0, "press", "34"), (4.0, "press", "9")], "1234"),  # inter-digit timeout
])
def test_collect_digits(tmp_path: Path, steps: list[Any], code: str) -> None:
    run = run_script(flow_of(tmp_path, COLLECT), steps, tmp_path=tmp_path)
    assert run.record.variables["code"] == code
    assert said(run)[-1] == f"Code {' '.join(code)}."


def test_collect_first_digit_timeout_and_pattern(tmp_path: Path) -> None:
    flow = flow_of(tmp_path, COLLECT)
    # nothing pressed: each attempt gives up 2 s after the prompt (not the 10 s timeout)
    run = run_script(flow, [], tmp_path=tmp_path)
    times = [i["t"] for i in run.record.inputs]
    assert [i["status"] for i in run.record.inputs] == ["noinput"] * 3
    assert times[0] == pytest.approx(0.18 + 2.0)
    assert run.record.nodes == ["get", "failed"]
    # too short, then against the pattern, then right
    run = run_script(flow, [(0.5, "press", "12#"), (1.5, "press", "0123#"), (2.5, "press", "5555#")],
                     tmp_path=tmp_path)
    assert [i["status"] for i in run.record.inputs] == ["nomatch", "nomatch", "match"]
    assert said(run).count("Invalid code.") == 2 and run.record.variables["code"] == "5555"


def test_collect_with_confirmation(tmp_path: Path) -> None:
    flow = flow_of(tmp_path, """
        start: get
        nodes:
          get:
            collect:
              prompt: Enter your PIN.
              into: pin
              max: 4
              sensitive: true
              confirm: "I heard {pin|digits}. Press 1 if correct, 2 to retry."
              on_failure: failed
            next: done
          done: {hangup: Thanks.}
          failed: {hangup: Failed.}
    """)
    run = run_script(flow, [(0.5, "press", "1111"), (2.5, "press", "2"), (4.5, "press", "4321"),
                            (6.5, "say", "yes that's right")], tmp_path=tmp_path)
    assert run.record.nodes == ["get", "done"]
    assert run.interpreter.vars["pin"] == "4321"
    assert "pin" not in run.record.variables
    assert said(run).count("I heard ****. Press 1 if correct, 2 to retry.") == 2
    assert "I heard 4 3 2 1. Press 1 if correct, 2 to retry." in run.tts.spoken  # the caller hears it
    heard = "I heard ****. Press 1 if correct, 2 to retry."
    assert said(run)[:3] == ["Enter your PIN.", heard, "Enter your PIN."]  # "no": again, no apology


def test_sensitive_digits_masked_in_record_transcript_and_logs(tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    flow = flow_of(tmp_path, """
        start: get
        nodes:
          get:
            collect: {prompt: Card number., into: card, max: 8, sensitive: true, on_failure: done}
            next: echo
          echo:
            say: "You said {card|digits}, ending {card}."
            next: done
          done: {hangup: Bye.}
    """)
    caplog.set_level(logging.DEBUG)
    run = run_script(flow, [(0.5, "press", "98765432")], tmp_path=tmp_path)
    assert run.interpreter.vars["card"] == "98765432"
    blob = json.dumps(run.record.to_json())
    transcript = " ".join(s.text for s in run.call.transcript)
    for text in (blob, transcript, caplog.text):
        assert "98765432" not in text and "9 8 7 6" not in text
    assert run.record.inputs[0]["value"] == "****"
    assert any(s.kind == "dtmf" and s.text == "****" for s in run.call.transcript)
    assert json.loads(caplog.records[-1].getMessage())["ended"] == "hangup"  # the voice.calls line


def test_sensitive_values_masked_in_error_messages(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    flow = flow_of(tmp_path, """
        start: get
        nodes:
          get:
            collect: {prompt: PIN., into: pin, max: 4, sensitive: true, on_failure: who}
            next: who
          who:
            lookup: {by: account, value: pin, on_error: bye}
          bye: {hangup: Bye.}
    """)

    async def lookup(**kw: str) -> Any:
        raise ValueError(f"no account {kw['account']}")

    run = run_script(flow, [(0.2, "press", "8642")], tmp_path=tmp_path, lookup=lookup)
    assert run.record.nodes == ["get", "who", "bye"]
    assert "lookup failed: ValueError: no account ****" in caplog.text and "8642" not in caplog.text


def test_subflow_conditions_set_and_branch(tmp_path: Path) -> None:
    flow = flow_of(tmp_path, """
        start: init
        vars: {count: 0}
        nodes:
          init:
            set: {count: "count + 2", label: "'vip' if caller == '+15550100' else 'std'"}
            next: sub
          sub:
            call: {flow: lib/double, with: {n: "count * 10"}}
            next: check
          check:
            branch:
              - when: "result > 100"
                goto: big
              - goto: small
          big:
            when: "label == 'std'"
            else: vip
            hangup: Big standard.
          small: {hangup: Small.}
          vip: {hangup: "Big {label}."}
    """, {"lib/double.yaml": """
        start: calc
        vars: {n: 1}
        nodes:
          calc:
            set: {result: "n * 2"}
            next: out
          out:
            return:
    """})
    run = run_script(flow, [], tmp_path=tmp_path)
    assert run.record.variables["result"] == 40
    assert run.record.nodes == ["init", "sub", "calc", "out", "check", "small"]
    assert run.record.path[2]["flow"] == "lib/double"
    run = run_script(flow, [], tmp_path=tmp_path, caller="+1")  # label std: count 2 -> n 20 -> 40, small
    assert run.record.nodes[-1] == "small"


def test_cti_lookup_by_caller_and_by_account(tmp_path: Path) -> None:
    flow = flow_of(tmp_path, """
        start: who
        nodes:
          who:
            lookup: {by: caller, found: known, not_found: ask}
          ask:
            collect: {prompt: Account number., into: account, max: 4, on_failure: bye}
            next: by_account
          by_account:
            lookup: {by: account, value: account, into: cust, found: known2, not_found: bye, on_error: oops}
          known: {hangup: "Hello {customer.name}, you owe {customer.attributes.balance|money}."}
          known2: {hangup: "Hello {cust.name}."}
          oops: {hangup: Lookup failed.}
          bye: {hangup: Bye.}
    """)
    calls: list[dict[str, str]] = []

    async def lookup(**kw: str) -> dict[str, Any]:
        calls.append(kw)
        if kw.get("account") == "0000":
            raise ConnectionError("db down")
        if kw.get("phone") == "+15550100" or kw.get("account") == "1234":
            return {"found": True, "customer": {"name": "Ann"}, "attributes": {"balance": 12.3},
                    "recent_interactions": [{"channel": "email"}]}
        return {"found": False, "customer": None, "attributes": {}, "recent_interactions": []}

    run = run_script(flow, [], tmp_path=tmp_path, lookup=lookup)
    assert said(run) == ["Hello Ann, you owe 12 dollars and 30 cents."]
    assert run.record.variables["customer"]["recent_interactions"] == [{"channel": "email"}]
    run = run_script(flow, [(0.3, "press", "1234")], tmp_path=tmp_path, lookup=lookup, caller="+1")
    assert said(run)[-1] == "Hello Ann." and calls[-1] == {"account": "1234"}
    run = run_script(flow, [(0.3, "press", "0000")], tmp_path=tmp_path, lookup=lookup, caller="+1")
    assert said(run)[-1] == "Lookup failed."
    run = run_script(flow, [], tmp_path=tmp_path, caller="+1")  # no customer store at all
    assert run.record.nodes[:2] == ["who", "ask"]


TRANSFER = """
    start: go
    nodes:
      go:
        transfer: {to: "{target}", on_failure: sorry}
      sorry: {hangup: Transfer failed.}
"""


@pytest.mark.parametrize(("target", "queue_ok", "ended", "sip"), [
    ("sip:100@127.0.0.1", None, "transfer", ["sip:100@127.0.0.1"]),
    ("queue:support", None, "hangup", []),  # no agent queues yet: the failure branch
    ("queue:support", True, "transfer", []),
    ("queue:support", False, "hangup", []),
])
def test_transfer(tmp_path: Path, target: str, queue_ok: bool | None, ended: str, sip: list[str]) -> None:
    flow = flow_of(tmp_path, "    vars: {target: ''}\n" + TRANSFER)
    queued: list[str] = []

    async def to_queue(call: Any, name: str) -> bool:
        queued.append(name)
        return bool(queue_ok)

    kw: dict[str, Any] = {"transfer_queue": to_queue} if queue_ok is not None else {}
    run = run_script(flow.__class__(**{**flow.__dict__, "variables": {"target": target}}), [],
                     tmp_path=tmp_path, **kw)
    assert run.record.ended == ended and run.signalling.transfers == sip
    if ended == "transfer":
        assert run.record.transfer_target == target and run.signalling.hung_up is None
    else:
        assert run.record.transfers_failed == [target] and said(run) == ["Transfer failed."]
    assert queued == (["support"] if queue_ok is not None else [])


def test_record_voicemail(tmp_path: Path) -> None:
    flow = flow_of(tmp_path, """
        start: vm
        nodes:
          vm:
            record: {prompt: Leave a message., max_seconds: 30, into: msg}
            next: bye
          bye: {hangup: "Saved."}
    """)
    run = run_script(flow, [(2.0, "press", "#")], tmp_path=tmp_path)
    path = Path(run.record.variables["msg"])
    assert path.parent == tmp_path / "calls" and path.suffix == ".wav"
    assert run.record.recordings == [str(path)] and run.media.recording is None
    assert 2.0 <= run.duration < 3.0  # stopped by '#' long before 30 s
    run = run_script(flow, [], tmp_path=tmp_path)
    assert run.duration == pytest.approx(30 + 0.18 + 0.25 + 0.06)  # prompt, beep, max_seconds, bye


def test_caller_hangs_up_mid_flow(tmp_path: Path) -> None:
    run = run_script(flow_of(tmp_path, MENU), [(7.0, "hangup", "")], tmp_path=tmp_path)
    assert run.record.ended == "caller_hangup" and run.record.nodes == ["menu"]
    assert run.signalling.hung_up is None


def cyclic_garbage_of(run: Any) -> list[str]:
    """What run(), once its result is dropped, leaves that only the cycle collector can free: the
    names of the frames, tracebacks, tasks, coroutines and flow objects among it."""
    gc.collect()
    gc.disable()
    try:
        result = run()
        del result
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        kinds = ("frame", "traceback", "coroutine", "Task", "FlowInterpreter", "CallRecord", "CallEnded")
        return sorted({type(o).__name__ for o in gc.garbage if type(o).__name__ in kinds})
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


@pytest.mark.parametrize("script", [
    [(7.0, "hangup", "")],  # while the menu waits for a key or speech
    [(1.0, "hangup", "")],  # during the prompt
    [(7.0, "press", "1")],  # to the end of the flow: we hang up
])
def test_a_finished_call_leaves_no_cycles_for_the_collector(tmp_path: Path, script: list[Any]) -> None:
    # A full collection holds the media back (voice.gcpolicy): an ended call's objects must go by
    # reference counting. CallEnded used to travel through tasks that kept it, its traceback kept
    # their frames (~100 objects a call); the interpreter kept bound methods of itself.
    flow = flow_of(tmp_path, MENU)
    assert cyclic_garbage_of(lambda: run_script(flow, script, tmp_path=tmp_path)) == []


def test_unexpected_error_apologises_and_hangs_up(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    flow = flow_of(tmp_path, "start: who\nnodes:\n  who:\n    lookup: caller\n")

    async def broken(**kw: str) -> Any:
        return 42  # not a dict: the interpreter trips over it

    run = run_script(flow, [], tmp_path=tmp_path, lookup=broken)
    assert run.record.ended == "error" and "AttributeError at node who" in (run.record.error or "")
    assert said(run) == ["Sorry, something went wrong. Please call again later. Goodbye."]
    assert run.signalling.hung_up == "error"
    assert "Traceback" in caplog.text


def test_endless_loop_is_stopped(tmp_path: Path) -> None:
    flow = flow_of(tmp_path, """
        start: a
        nodes:
          a: {set: {n: "1"}, next: b}
          b: {set: {n: "2"}, next: a}
    """)
    run = run_script(flow, [], tmp_path=tmp_path)
    assert run.record.ended == "error" and "more than 2000 nodes" in (run.record.error or "")


def test_end_of_main_flow_hangs_up_and_record_is_json(tmp_path: Path) -> None:
    run = run_script(flow_of(tmp_path, "start: a\nnodes:\n  a:\n    say: Hi.\n"), [], tmp_path=tmp_path)
    data = run.record.to_json()
    assert data["ended"] == "hangup" and data["path"][0]["node"] == "a"
    assert json.loads(json.dumps(data)) == data


@pytest.mark.parametrize(("steps", "end"), [
    ([(0.5, "say", "yes please")], "paid"),
    ([(0.5, "press", "2")], "kept"),
    ([(0.5, "say", "no that's not right")], "kept"),
    ([(0.5, "press", "5"), (2.0, "say", "maybe")], "unsure"),
])
def test_confirm_action(tmp_path: Path, steps: list[Any], end: str) -> None:
    flow = flow_of(tmp_path, """
        start: sure
        vars: {amount: 20}
        nodes:
          sure:
            confirm:
              prompt: "Pay {amount|money} now? Press 1 or say yes, press 2 or say no."
              attempts: 2
              on_yes: paid
              on_no: kept
              on_failure: unsure
          paid: {hangup: Paid.}
          kept: {hangup: Not paid.}
          unsure: {hangup: Unsure.}
    """)
    run = run_script(flow, steps, tmp_path=tmp_path)
    assert run.record.nodes == ["sure", end]
    assert said(run)[0] == "Pay 20 dollars now? Press 1 or say yes, press 2 or say no."


ASK = """
    start: why
    nodes:
      why:
        ask: {prompt: "What is your call about?", into: reason, on_failure: bye}
        next: echo
      echo: {hangup: "You said {reason}."}
      bye: {hangup: Bye.}
"""


def test_ask_free_form_speech_and_key_fallback(tmp_path: Path) -> None:
    flow = flow_of(tmp_path, ASK)
    run = run_script(flow, [(0.5, "say", "my internet is down")], tmp_path=tmp_path)
    assert said(run)[-1] == "You said my internet is down."
    run = run_script(flow, [(0.5, "press", "42#")], tmp_path=tmp_path, speech=False)  # no recogniser
    assert said(run)[-1] == "You said 42."


def test_recorded_prompt_file_is_played_at_8khz(tmp_path: Path) -> None:
    import numpy as np
    import soundfile as sf

    (tmp_path / "prompts").mkdir()
    tone = (np.sin(np.arange(16000) * 2 * np.pi * 440 / 16000) * 10000).astype(np.int16)
    sf.write(tmp_path / "prompts" / "chime.wav", tone, 16000)
    flow = flow_of(tmp_path, "start: a\nnodes:\n  a:\n    play: chime\n")
    run = run_script(flow, [], tmp_path=tmp_path)
    assert run.record.prompts == [{"node": "a", "file": "chime", "t": 0.0}]
    assert len(run.media.played[0]) == 8000 and run.duration == pytest.approx(1.0)


def test_no_input_does_not_fire_while_the_caller_is_still_speaking(tmp_path: Path) -> None:
    """VoiceXML: once speech has started, the turn waits for the recognizer, not the no-input timer."""
    import asyncio

    from voice.asr.base import SpeechResult
    from voice.ivr.harness import FakeTts, make_call
    from voice.ivr.interpreter import FlowInterpreter
    from voice.ivr.vtime import run_virtual

    flow = flow_of(tmp_path, """
        start: ask
        settings: {timeout: 3, attempts: 1}
        nodes:
          ask:
            menu:
              prompt: Say billing.
              options:
                - {dtmf: "1", words: [billing], goto: billing}
              on_failure: bye
          billing:
            hangup: Billing.
          bye:
            hangup: Nothing heard.
        """)

    class LongTalker:
        """Starts talking 0.5 s in and finishes 6 s later: longer than the 3 s no-input time."""

        async def listen(self, call: Any, *, options: Any = None, no_input_timeout: float = 5.0,
                         **_: Any) -> SpeechResult:
            await asyncio.sleep(0.5)
            call.speech_in_progress = True
            call.interrupt_playback("speech")
            await asyncio.sleep(6.0)
            call.speech_in_progress = False
            return SpeechResult(status="match", text="billing", option="billing", confidence=0.9)

    async def scenario() -> Any:
        call, _media, _sig = make_call(realtime=1.0)
        interp = FlowInterpreter(flow, call, tts=FakeTts(), speech=LongTalker(),
                                 recordings_dir=tmp_path / "calls", prompts_dir=tmp_path / "prompts")
        return await interp.run()

    record = run_virtual(scenario())
    assert [i["kind"] for i in record.inputs] == ["speech"]
    assert record.nodes[-1] == "billing"
