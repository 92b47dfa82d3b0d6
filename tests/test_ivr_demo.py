"""The shipped demo flow ivr_flows/main.yaml, end to end against a scripted caller."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from voice.ivr.library import FlowLibrary
from voice.ivr.model import Flow
from voice.ivr.scripted import ScriptRun, run_script

ROOT = Path(__file__).resolve().parent.parent
MENU = "For billing, press 1 or say billing."


@pytest.fixture(scope="module")
def demo() -> Flow:
    lib = FlowLibrary(ROOT / "ivr_flows", prompts_dir=ROOT / "recordings" / "prompts", default_flow="main",
                      routes={})
    assert lib.load() == []
    return lib.flow_for("anything")


async def lookup(**kw: str) -> dict[str, Any]:
    if kw.get("phone") == "+15550100" or kw.get("account") == "12345":
        return {"found": True, "customer": {"name": "Ann Smith"}, "attributes": {"balance": "42.50"},
                "recent_interactions": []}
    return {"found": False, "customer": None, "attributes": {}, "recent_interactions": []}


def said(run: ScriptRun) -> list[str]:
    return [p["text"] for p in run.record.prompts if "text" in p]


def run(demo: Flow, tmp_path: Path, steps: list[Any], *, caller: str = "+15550100",
        queues_ok: bool = True) -> tuple[ScriptRun, list[str]]:
    queued: list[str] = []

    async def to_queue(call: Any, name: str) -> bool:
        queued.append(name)
        return queues_ok

    result = run_script(demo, steps, tmp_path=tmp_path, lookup=lookup, caller=caller,
                        transfer_queue=to_queue, prompts_dir=ROOT / "recordings" / "prompts")
    return result, queued


def test_billing_known_caller(demo: Flow, tmp_path: Path) -> None:
    r, _ = run(demo, tmp_path, [(1.0, "press", "1")])
    assert r.record.nodes == ["welcome", "identify", "main_menu", "billing", "read_balance", "goodbye"]
    assert said(r)[-2:] == ["Ann Smith, your balance is 42 dollars and 50 cents.",
                            "Thank you for calling Example Corp. Goodbye."]
    assert r.record.ended == "hangup"


def test_billing_by_spoken_keyword_with_account_entry(demo: Flow, tmp_path: Path) -> None:
    steps = [(3.0, "say", "billing please"), (6.0, "press", "12345#"), (9.0, "press", "1")]
    r, _ = run(demo, tmp_path, steps, caller="+15559999")
    assert r.record.nodes == ["welcome", "identify", "main_menu", "billing", "ask_account", "collect_account",
                              "find", "done", "check_account", "read_balance", "goodbye"]
    assert "I heard ****. If that is correct, press 1 or say yes. Otherwise, press 2 or say no." in said(r)
    assert "Ann Smith, your balance is 42 dollars and 50 cents." in said(r)
    assert "account" not in r.record.variables and "12345" not in str(r.record.to_json())


def test_support_transfers_to_the_support_queue(demo: Flow, tmp_path: Path) -> None:
    r, queued = run(demo, tmp_path, [(1.0, "press", "2")])
    # the (fake) agent hung up first: the caller comes back to after_call and hears goodbye
    assert r.record.nodes[-3:] == ["support", "to_support", "after_agent"] and queued == ["support"]
    assert r.record.ended == "hangup" and r.record.transfer_target == "queue:support"


@pytest.mark.parametrize("steps", [[(1.0, "press", "0")], [(1.0, "say", "operator")],
                                   [(1.0, "say", "agent")]])
def test_agent_by_key_or_word(demo: Flow, tmp_path: Path, steps: list[Any]) -> None:
    r, queued = run(demo, tmp_path, steps)
    assert r.record.nodes[-3:] == ["agent", "to_agent", "after_agent"] and queued == ["agents"]
    assert r.record.transfer_target == "queue:agents"


def test_no_queue_answer_leaves_a_voicemail(demo: Flow, tmp_path: Path) -> None:
    r, _ = run(demo, tmp_path, [(1.0, "press", "0"), (8.0, "press", "#")], queues_ok=False)
    assert r.record.nodes[-3:] == ["to_agent", "voicemail", "goodbye"]
    assert r.record.recordings and r.record.ended == "hangup"


def test_silence_ends_the_call_cleanly(demo: Flow, tmp_path: Path) -> None:
    r, queued = run(demo, tmp_path, [])
    assert r.record.nodes == ["welcome", "identify", "main_menu", "goodbye"]
    assert said(r).count(said(r)[1]) == 3 and said(r)[1].startswith(MENU)
    assert said(r)[-2:] == ["Sorry, I still didn't hear anything.",
                            "Thank you for calling Example Corp. Goodbye."]
    assert r.record.ended == "hangup" and r.signalling.hung_up == "flow" and not queued


def test_wrong_keys_go_to_an_agent(demo: Flow, tmp_path: Path) -> None:
    r, queued = run(demo, tmp_path, [(1, "press", "7"), (4, "press", "8"), (7, "press", "9")])
    assert [i["status"] for i in r.record.inputs] == ["nomatch"] * 3 and queued == ["agents"]
