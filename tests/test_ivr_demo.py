"""The shipped demo flow ivr_flows/main.yaml, end to end against a scripted caller."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from voice.hours import parse_hours
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
        queues_ok: bool = True, options: list[dict[str, Any]] | None = None,
        **kw: Any) -> tuple[ScriptRun, list[str]]:
    """`options`: receives what each queue transfer asked of the desk (affinity, continues)."""
    queued: list[str] = []

    async def to_queue(call: Any, name: str, **asked: Any) -> bool:
        queued.append(name)
        if options is not None:
            options.append(asked)
        return queues_ok

    result = run_script(demo, steps, tmp_path=tmp_path, lookup=kw.pop("lookup", lookup), caller=caller,
                        transfer_queue=to_queue, prompts_dir=ROOT / "recordings" / "prompts", **kw)
    return result, queued


def test_billing_known_caller(demo: Flow, tmp_path: Path) -> None:
    r, _ = run(demo, tmp_path, [(1.0, "press", "1")])
    assert r.record.nodes == ["welcome", "identify", "route_caller", "main_menu", "billing", "read_balance",
                              "goodbye"]
    assert said(r)[-2:] == ["Ann Smith, your balance is 42 dollars and 50 cents.",
                            "Thank you for calling Example Corp. Goodbye."]
    assert r.record.ended == "hangup"


def test_billing_by_spoken_keyword_with_account_entry(demo: Flow, tmp_path: Path) -> None:
    steps = [(3.0, "say", "billing please"), (6.0, "press", "12345#"), (9.0, "press", "1")]
    r, _ = run(demo, tmp_path, steps, caller="+15559999")
    assert r.record.nodes == ["welcome", "identify", "route_caller", "main_menu", "billing", "ask_account",
                              "collect_account", "find", "done", "check_account", "read_balance", "goodbye"]
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
    assert r.record.nodes == ["welcome", "identify", "route_caller", "main_menu", "goodbye"]
    assert said(r).count(said(r)[1]) == 3 and said(r)[1].startswith(MENU)
    assert said(r)[-2:] == ["Sorry, I still didn't hear anything.",
                            "Thank you for calling Example Corp. Goodbye."]
    assert r.record.ended == "hangup" and r.signalling.hung_up == "flow" and not queued


def test_wrong_keys_go_to_an_agent(demo: Flow, tmp_path: Path) -> None:
    r, queued = run(demo, tmp_path, [(1, "press", "7"), (4, "press", "8"), (7, "press", "9")])
    assert [i["status"] for i in r.record.inputs] == ["nomatch"] * 3 and queued == ["agents"]


# ---- continuity and business hours ------------------------------------------------------------
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)  # a Tuesday
OFFER = "I see you contacted us by chat about a late refund. Press 1 or say yes to continue with that."
SUPPORT_HOURS = parse_hours("support", {"timezone": "Europe/Berlin", **{d: "08:00-18:00" for d in (
    "mon", "tue", "wed", "thu", "fri")}, "sat": "09:00-13:00", "holidays": "2026-12-24, 2026-12-25"})


def chatted(age: timedelta, status: str = "open", queue: str | None = "billing") -> Any:
    """A caller whose last contact is a chat `age` ago, handled by `queue` and agent ann."""
    async def found(**_kw: str) -> dict[str, Any]:
        return {"found": True, "customer": {"id": "c-1", "name": "Ann Smith"}, "attributes": {},
                "recent_interactions": [
                    {"id": "i-chat", "channel": "chat", "status": status, "agent": "ann", "queue": queue,
                     "started_at": (NOW - age).isoformat(), "subject": "a late refund", "summary": None}]}
    return found


@pytest.mark.parametrize("answer", [(3.0, "press", "1"), (3.0, "say", "yes")])
def test_a_recent_open_chat_is_offered_and_yes_goes_straight_to_its_queue(
        demo: Flow, tmp_path: Path, answer: Any) -> None:
    asked: list[dict[str, Any]] = []
    r, queued = run(demo, tmp_path, [answer], lookup=chatted(timedelta(hours=2)), wall_clock=lambda: NOW,
                    options=asked)
    assert r.record.nodes == ["welcome", "identify", "route_caller", "recent_contact", "offer_continue",
                              "continue_last", "to_last_queue", "after_agent"]  # no main menu
    assert OFFER in said(r) and MENU not in " ".join(said(r))
    assert queued == ["billing"] and r.record.transfer_target == "queue:billing"
    assert asked == [{"prefer_agent": "ann", "prefer_for": 30.0, "continues": "i-chat"}]


@pytest.mark.parametrize(("lookup_", "steps"), [
    (chatted(timedelta(hours=2)), [(3.0, "press", "2"), (9.0, "press", "2")]),  # no, thanks: the menu
    (chatted(timedelta(hours=25)), [(1.0, "press", "2")]),  # more than a day ago: not offered
    (chatted(timedelta(hours=2), status="completed"), [(1.0, "press", "2")]),  # closed: not offered
])
def test_no_or_an_old_or_closed_contact_leads_to_the_main_menu(demo: Flow, tmp_path: Path, lookup_: Any,
                                                               steps: list[Any]) -> None:
    r, queued = run(demo, tmp_path, steps, lookup=lookup_, wall_clock=lambda: NOW)
    assert "main_menu" in r.record.nodes and queued == ["support"]
    assert (OFFER in said(r)) == ("offer_continue" in r.record.nodes)


def test_a_continued_contact_without_a_queue_goes_to_support(demo: Flow, tmp_path: Path) -> None:
    r, queued = run(demo, tmp_path, [(3.0, "press", "1")], lookup=chatted(timedelta(hours=2), queue=None),
                    wall_clock=lambda: NOW)
    assert queued == ["support"] and r.record.transfer_target == "queue:support"


def test_when_the_last_queue_cannot_take_the_call_support_does(demo: Flow, tmp_path: Path) -> None:
    r, queued = run(demo, tmp_path, [(3.0, "press", "1"), (12.0, "press", "#")],
                    lookup=chatted(timedelta(hours=2)), wall_clock=lambda: NOW, queues_ok=False)
    assert queued == ["billing", "support"] and r.record.nodes[-2:] == ["voicemail", "goodbye"]


@pytest.mark.parametrize("when", [
    datetime(2026, 12, 1, 19, 0, tzinfo=UTC),  # Tuesday 20:00 in Berlin: after hours
    datetime(2026, 12, 24, 10, 0, tzinfo=UTC),  # a holiday (Thursday)
    datetime(2026, 12, 6, 10, 0, tzinfo=UTC),  # Sunday
])
def test_outside_business_hours_the_caller_hears_them_and_may_leave_a_voicemail(
        demo: Flow, tmp_path: Path, when: datetime) -> None:
    r, queued = run(demo, tmp_path, [(6.0, "press", "1"), (20.0, "press", "#")],
                    lookup=chatted(timedelta(hours=2)), wall_clock=lambda: when,
                    hours={"support": SUPPORT_HOURS})
    assert r.record.nodes == ["welcome", "identify", "route_caller", "closed", "closed_menu",
                              "closed_voicemail", "goodbye"]
    assert "We are closed right now. Our support line is open Monday to Friday from 8 AM to 6 PM and " \
           "Saturday from 9 AM to 1 PM." in said(r)
    assert r.record.recordings and not queued and OFFER not in said(r)


def test_within_business_hours_the_flow_goes_on_as_usual(demo: Flow, tmp_path: Path) -> None:
    r, queued = run(demo, tmp_path, [(1.0, "press", "2")], wall_clock=lambda: NOW,  # 13:00 in Berlin
                    hours={"support": SUPPORT_HOURS})
    assert "closed" not in r.record.nodes and queued == ["support"]


def test_silence_after_the_closed_message_ends_the_call(demo: Flow, tmp_path: Path) -> None:
    r, queued = run(demo, tmp_path, [], wall_clock=lambda: datetime(2026, 12, 6, 10, 0, tzinfo=UTC),
                    hours={"support": SUPPORT_HOURS})
    assert r.record.nodes[-2:] == ["closed_menu", "goodbye"] and not r.record.recordings and not queued


@pytest.mark.parametrize("taken", [True, False], ids=["callback-kept", "no-callback-then-voicemail"])
def test_outside_business_hours_the_caller_may_ask_for_a_callback_when_the_line_opens(
        demo: Flow, tmp_path: Path, taken: bool) -> None:
    asked: list[tuple[str, datetime | None]] = []

    async def request_callback(call: Any, queue: str, *, earliest: datetime | None = None) -> str | None:
        asked.append((queue, earliest))
        return "cb-1" if taken else None

    friday_night = datetime(2026, 12, 4, 20, 0, tzinfo=UTC)  # 21:00 in Berlin: open again Saturday 09:00
    steps = [(6.0, "press", "2")] if taken else [(6.0, "press", "2"), (25.0, "press", "#")]
    r, queued = run(demo, tmp_path, steps, wall_clock=lambda: friday_night, hours={"support": SUPPORT_HOURS},
                    request_callback=request_callback)
    assert any("To be called back when we open, press 2 or say callback." in text for text in said(r))
    assert asked == [("support", datetime(2026, 12, 5, 9, 0, tzinfo=SUPPORT_HOURS.zone))] and not queued
    if taken:
        assert r.record.nodes[-2:] == ["closed_menu", "closed_callback"] and r.record.ended == "callback"
        assert not r.record.recordings
    else:  # nothing kept (e.g. the caller pressed star): the voicemail instead
        assert r.record.nodes[-3:] == ["closed_callback", "closed_voicemail", "goodbye"]
        assert r.record.recordings
