"""What a menu or collect does with the recognizer's answer: never route on a guess.

A result the recognizer did not match (status nomatch: confidence under [asr] min_confidence,
or no grammar option) is a no-match with its prompt and retries, whatever its text says.
A match under the node's `confirm_below` is confirmed before the flow acts on it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.test_ivr_interpreter import flow_of
from voice.asr.base import SpeechResult
from voice.callcontrol.call import TranscriptSegment
from voice.ivr.harness import FakeTts, make_call
from voice.ivr.interpreter import FlowInterpreter
from voice.ivr.record import CallRecord
from voice.ivr.vtime import run_virtual

MENU = """
    start: menu
    settings: {timeout: 3, attempts: 2}
    nodes:
      menu:
        menu:
          prompt: Say billing or representative.
          no_match: Sorry, I did not get that.
          options:
            - {dtmf: "1", words: [billing], goto: billing}
            - {dtmf: "0", words: [representative, agent], goto: agent}
          on_failure: bye
      billing:
        hangup: Billing.
      agent:
        hangup: Connecting you to an agent.
      bye:
        hangup: Goodbye.
    """


class ReplayListener:
    """Answers each listen() with the next prepared SpeechResult, as the recognizer would."""

    def __init__(self, results: Sequence[SpeechResult]) -> None:
        self.results = list(results)
        self.options_seen: list[list[str] | None] = []

    async def listen(self, call: Any, *, options: Sequence[str] | None = None, no_input_timeout: float = 5.0,
                     **_: Any) -> SpeechResult:
        self.options_seen.append(list(options) if options is not None else None)
        await asyncio.sleep(0.3)
        if not self.results:
            await asyncio.sleep(no_input_timeout)
            return SpeechResult(status="noinput")
        res = self.results.pop(0)
        call.add_segment(TranscriptSegment(start=res.start, end=res.end, speaker="caller", kind="speech",
                                           text=res.text, confidence=res.confidence, engine=res.engine))
        return res


def run_flow(tmp_path: Path, text: str, results: Sequence[SpeechResult]) -> tuple[CallRecord, list[str]]:
    flow = flow_of(tmp_path, text)

    async def scenario() -> tuple[CallRecord, list[str]]:
        call, _media, _sig = make_call(realtime=1.0)
        interp = FlowInterpreter(flow, call, tts=FakeTts(), speech=ReplayListener(results),
                                 recordings_dir=tmp_path / "calls", prompts_dir=tmp_path / "prompts")
        record = await interp.run()
        return record, [p.get("text", "") for p in record.prompts]

    return run_virtual(scenario())


def test_a_nomatch_under_min_confidence_is_not_routed_on_its_text(tmp_path: Path) -> None:
    """The issue 11 bug: a talker saying no menu word went to the agent queue as "representative"
    at confidence 0.116, because menu() picked an option from the raw text of a nomatch."""
    guess = SpeechResult(status="nomatch", text="representative", confidence=0.116, engine="whisper")
    record, prompts = run_flow(tmp_path, MENU, [guess, guess])
    assert record.nodes[-1] == "bye", record.nodes
    assert "agent" not in record.nodes
    assert [i["status"] for i in record.inputs] == ["nomatch", "nomatch"]
    assert "Sorry, I did not get that." in prompts  # the no-match prompt, then the retry


def test_a_matched_option_routes(tmp_path: Path) -> None:
    heard = SpeechResult(status="match", text="agent", option="agent", confidence=0.9, engine="whisper")
    record, _ = run_flow(tmp_path, MENU, [heard])
    assert record.nodes[-1] == "agent"
    assert record.inputs[0]["status"] == "match" and record.inputs[0]["confidence"] == 0.9


def test_a_nomatch_then_a_match_uses_the_retry(tmp_path: Path) -> None:
    guess = SpeechResult(status="nomatch", text="billing", confidence=0.2, engine="whisper")
    heard = SpeechResult(status="match", text="billing", option="billing", confidence=0.8, engine="whisper")
    record, _ = run_flow(tmp_path, MENU, [guess, heard])
    assert record.nodes[-1] == "billing"
    assert [i["status"] for i in record.inputs] == ["nomatch", "match"]


CONFIRM_MENU = MENU.replace("          on_failure: bye\n",
                            "          on_failure: bye\n          confirm_below: 0.6\n", 1)
YES = SpeechResult(status="match", text="yes", option="yes", confidence=0.9, engine="whisper")
NO = SpeechResult(status="match", text="no", option="no", confidence=0.9, engine="whisper")


def test_a_choice_heard_under_confirm_below_is_confirmed_before_acting(tmp_path: Path) -> None:
    unsure = SpeechResult(status="match", text="billing", option="billing", confidence=0.45, engine="whisper",
                          alternatives=(("building", 0.2),))
    record, prompts = run_flow(tmp_path, CONFIRM_MENU, [unsure, YES])
    assert "I heard billing, is that right?" in prompts
    assert record.nodes[-1] == "billing"
    first = record.inputs[0]
    assert first["status"] == "match" and first["confidence"] == 0.45
    assert first["nbest"] == [["billing", 0.45], ["building", 0.2]]  # the record keeps the n-best


def test_a_no_to_the_confirmation_asks_again(tmp_path: Path) -> None:
    unsure = SpeechResult(status="match", text="billing", option="billing", confidence=0.45, engine="whisper")
    sure = SpeechResult(status="match", text="agent", option="agent", confidence=0.95, engine="whisper")
    record, prompts = run_flow(tmp_path, CONFIRM_MENU, [unsure, NO, sure])
    assert prompts.count("Say billing or representative.") == 2
    assert "I heard agent, is that right?" not in prompts  # 0.95 >= 0.6: acted on at once
    assert record.nodes[-1] == "agent"


def test_a_confident_choice_is_not_confirmed(tmp_path: Path) -> None:
    sure = SpeechResult(status="match", text="billing", option="billing", confidence=0.8, engine="whisper")
    record, prompts = run_flow(tmp_path, CONFIRM_MENU, [sure])
    assert not any(p.startswith("I heard") for p in prompts)
    assert record.nodes[-1] == "billing"


COLLECT = """
    start: account
    settings: {timeout: 3, attempts: 2}
    nodes:
      account:
        collect:
          prompt: Say your account number.
          into: account
          min: 4
          max: 4
          speech: true
          confirm_below: 0.6
          on_failure: bye
        next: done
      done:
        hangup: "Thanks, {account}."
      bye:
        hangup: Goodbye.
    """


def test_collect_confirms_spoken_digits_heard_with_low_confidence(tmp_path: Path) -> None:
    unsure = SpeechResult(status="match", text="one two three four", confidence=0.5, engine="whisper")
    record, prompts = run_flow(tmp_path, COLLECT, [unsure, YES])
    assert "I heard 1 2 3 4, is that right?" in prompts
    assert record.nodes[-1] == "done" and "Thanks, 1234." in prompts


def test_collect_ignores_the_text_of_a_nomatch(tmp_path: Path) -> None:
    guess = SpeechResult(status="nomatch", text="one two three four", confidence=0.1, engine="whisper")
    record, _ = run_flow(tmp_path, COLLECT, [guess, guess])
    assert record.nodes[-1] == "bye"
    assert [i["status"] for i in record.inputs] == ["nomatch", "nomatch"]


def test_confirm_below_is_validated_with_file_and_line(tmp_path: Path) -> None:
    import textwrap

    from voice.ivr.library import FlowLibrary

    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "f.yaml").write_text(textwrap.dedent(CONFIRM_MENU.replace("0.6", "1.5")))
    (flows / "g.yaml").write_text(textwrap.dedent(COLLECT.replace("          speech: true\n", "")))
    lib = FlowLibrary(flows, prompts_dir=tmp_path, default_flow="f", routes={})
    errors = [str(e) for e in lib.load()]
    assert any("f.yaml:13:" in e and "confirm_below" in e and "0 to 1" in e and "1.5" in e
               for e in errors), errors
    assert any("g.yaml:" in e and "needs speech: true" in e for e in errors), errors


def test_a_guessed_yes_does_not_confirm(tmp_path: Path) -> None:
    unsure = SpeechResult(status="match", text="billing", option="billing", confidence=0.45, engine="whisper")
    guessed_yes = SpeechResult(status="nomatch", text="yes", confidence=0.1, engine="whisper")
    record, _ = run_flow(tmp_path, CONFIRM_MENU, [unsure, guessed_yes])
    assert "billing" not in record.nodes
    assert record.inputs[1]["status"] == "nomatch"
