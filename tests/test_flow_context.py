"""Cross-channel context and time in flows: customer.last / last_on, now, open("NAME"), [hours]."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.test_ivr_interpreter import flow_of, said
from voice.config import ConfigError, load_config
from voice.hours import parse_hours
from voice.ivr.expr import Expr, ExprError
from voice.ivr.scripted import run_script

SUPPORT = parse_hours("support", {"timezone": "Europe/Berlin", "mon": "08:00-18:00",
                                  "fri": "08:00-12:00, 20:00-02:00", "holidays": "2026-12-25"})


def berlin(y: int, m: int, d: int, hh: int, mm: int = 0) -> datetime:
    return datetime(y, m, d, hh, mm, tzinfo=SUPPORT.zone)


def test_business_hours_by_weekday_time_zone_midnight_and_holidays() -> None:
    assert SUPPORT.is_open(berlin(2026, 11, 30, 8, 0))  # Monday 08:00 local
    assert not SUPPORT.is_open(berlin(2026, 11, 30, 18, 0))  # the end is exclusive
    assert not SUPPORT.is_open(berlin(2026, 11, 30, 7, 59))
    # the same instant written in UTC (07:30 UTC = 08:30 in Berlin in winter)
    assert SUPPORT.is_open(datetime(2026, 11, 30, 7, 30, tzinfo=UTC))
    assert not SUPPORT.is_open(berlin(2026, 12, 1, 10))  # Tuesday: not listed, closed
    assert SUPPORT.is_open(berlin(2026, 12, 4, 23, 30)) and SUPPORT.is_open(berlin(2026, 12, 5, 1, 30))
    assert not SUPPORT.is_open(berlin(2026, 12, 5, 2, 0))  # Friday night ends at 02:00 Saturday
    assert not SUPPORT.is_open(berlin(2026, 12, 4, 13, 0))  # the lunch gap
    # Friday 2026-12-25 is a holiday: closed all day, and its night does not spill into Saturday
    assert not SUPPORT.is_open(berlin(2026, 12, 25, 10)) and not SUPPORT.is_open(berlin(2026, 12, 26, 1))


def test_hours_sections_are_checked_with_the_key_named(tmp_path: Path) -> None:
    conf = tmp_path / "v.conf"
    conf.write_text("[hours support]\ntimezone = Europe/Berlin\nmon = 08:00-18:00\n[ivr]\ntimezone = UTC\n")
    assert load_config(conf).hours["support"].week[0][0][0].hour == 8
    for body, needle in (("mon = 8-18", "[hours support] mon: expected HH:MM-HH:MM"),
                         ("timezone = Mars/Olympus", "unknown time zone 'Mars/Olympus'"),
                         ("holidays = 25.12.2026", "holidays"),
                         ("lunch = 12:00-13:00", "lunch: unknown key")):
        conf.write_text(f"[hours support]\n{body}\n")
        with pytest.raises(ConfigError) as info:
            load_config(conf)
        assert needle in str(info.value) and str(conf) in str(info.value)


def test_open_is_a_service_function_and_unbound_elsewhere() -> None:
    expr = Expr('open("support") and now.hour >= 8')
    assert expr.names == {"now"}
    with pytest.raises(ExprError, match="not available here"):
        expr.evaluate({"now": {"hour": 9}})
    assert expr.evaluate({"now": {"hour": 9}}, {"open": lambda name: name == "support"}) is True
    with pytest.raises(ExprError, match="not allowed"):
        Expr('__import__("os")')


HOURS_FLOW = """
    start: check
    nodes:
      check:
        branch:
          - {when: 'open("support")', goto: opened}
          - {goto: closed}
      opened: {hangup: "We are open. It is {now.weekday} {now.time}."}
      closed: {hangup: We are closed.}
"""


@pytest.mark.parametrize(("when", "expected"), [
    (datetime(2026, 11, 30, 9, 15, tzinfo=UTC), "We are open. It is mon 10:15."),  # 10:15 in Berlin
    (datetime(2026, 11, 30, 19, 0, tzinfo=UTC), "We are closed."),
])
def test_a_flow_branches_on_business_hours_and_reads_the_clock(tmp_path: Path, when: datetime,
                                                                expected: str) -> None:
    flow = flow_of(tmp_path, HOURS_FLOW)
    run = run_script(flow, [], tmp_path=tmp_path, hours={"support": SUPPORT}, timezone="Europe/Berlin",
                     wall_clock=lambda: when)
    assert said(run) == [expected]


CONTEXT_FLOW = """
    start: who
    nodes:
      who:
        lookup: caller
        next: recent
      recent:
        branch:
          - when: >-
              customer.last and customer.last.channel == "chat" and customer.last.status == "open"
              and customer.last.age < 86400
            goto: continue
          - {goto: menu}
      continue: {hangup: "I see you contacted us by {customer.last.channel} about {customer.last.subject}."}
      menu: {hangup: "Main menu. Your last email was {customer.last_on.email.subject}."}
"""


def history(now: datetime, chat_age: timedelta, chat_status: str) -> dict[str, Any]:
    return {"found": True, "customer": {"id": "c1", "name": "Anna", "attributes": {}}, "attributes": {},
            "recent_interactions": [
                {"id": "this-call", "channel": "voice", "status": "in_progress",
                 "started_at": now.isoformat(), "subject": "Call to 100"},
                {"id": "i-chat", "channel": "chat", "status": chat_status, "agent": "ann",
                 "started_at": (now - chat_age).isoformat(), "subject": "a late refund", "summary": "refund"},
                {"id": "i-mail", "channel": "email", "status": "completed",
                 "started_at": (now - timedelta(days=3)).isoformat(), "subject": "Invoice 4711"},
            ]}


@pytest.mark.parametrize(("age", "status", "expected"), [
    (timedelta(hours=1), "open", "I see you contacted us by chat about a late refund."),
    (timedelta(hours=30), "open", "Main menu. Your last email was Invoice 4711."),  # too old
    (timedelta(hours=1), "closed", "Main menu. Your last email was Invoice 4711."),  # done with
])
def test_the_last_contact_on_any_channel_reaches_the_flow(tmp_path: Path, age: timedelta, status: str,
                                                          expected: str) -> None:
    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    found = history(now, age, status)

    async def lookup(**_query: Any) -> dict[str, Any]:
        return found

    flow = flow_of(tmp_path, textwrap.dedent(CONTEXT_FLOW))
    run = run_script(flow, [], tmp_path=tmp_path, lookup=lookup, wall_clock=lambda: now,
                     interaction_id="this-call")
    assert said(run) == [expected]
    customer = run.interpreter.vars["customer"]
    # this very call is not "the last contact"; each channel's newest is under last_on
    assert customer["last"]["id"] == "i-chat" and customer["last"]["age"] == int(age.total_seconds())
    assert set(customer["last_on"]) == {"chat", "email"} and customer["last_on"]["chat"]["agent"] == "ann"
    assert customer["last_on"]["email"]["status"] == "closed"


# ---- opening hours said to the caller, lines without hours, queue transfers that continue ------
def test_opening_hours_are_said_the_way_a_caller_hears_them() -> None:
    assert SUPPORT.describe() == ("Monday from 8 AM to 6 PM and Friday from 8 AM to noon and from 8 PM to "
                                  "2 AM")
    week = parse_hours("s", {"mon": "08:00-18:00", "tue": "08:00-18:00", "wed": "08:00-18:00",
                             "thu": "08:00-18:00", "fri": "08:00-18:00", "sat": "09:30-13:00",
                             "sun": "24h"})
    assert week.describe() == ("Monday to Friday from 8 AM to 6 PM, Saturday from 9:30 AM to 1 PM and "
                               "Sunday all day")
    assert parse_hours("s", {"sat": "10:00-24:00", "sun": "10:00-24:00"}).describe() == \
        "Saturday and Sunday from 10 AM to midnight"
    assert parse_hours("s", {}).describe() == ""


CLOSED_FLOW = """
    start: check
    nodes:
      check:
        branch:
          - {when: 'open("support")', goto: opened}
          - {goto: closed}
      opened: {hangup: "Open."}
      closed: {hangup: "We are closed. We are open {opening_hours('support')}."}
"""


def test_the_closed_message_reads_the_configured_hours_and_a_line_without_hours_is_open(
        tmp_path: Path) -> None:
    flow = flow_of(tmp_path, CLOSED_FLOW)
    sunday = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
    run = run_script(flow, [], tmp_path=tmp_path, hours={"support": SUPPORT}, wall_clock=lambda: sunday)
    assert said(run) == ["We are closed. We are open Monday from 8 AM to 6 PM and Friday from 8 AM to noon "
                         "and from 8 PM to 2 AM."]
    # no [hours support] section: the line never closes (a warning says so in the log)
    run = run_script(flow, [], tmp_path=tmp_path, wall_clock=lambda: sunday)
    assert said(run) == ["Open."]


CONTINUE_FLOW = """
    start: who
    vars: {target: ''}
    nodes:
      who:
        lookup: caller
        next: go
      go:
        transfer:
          to: "queue:{customer.last.queue}"
          prefer_agent: "{customer.last.agent}"
          prefer_for: 45
          continues: "{customer.last.id}"
          on_failure: failed
      failed: {hangup: "Transfer failed."}
"""


@pytest.mark.parametrize(("queue", "agent", "expected"), [
    ("billing", "ann", [("billing", {"prefer_agent": "ann", "prefer_for": 45.0, "continues": "i-chat"})]),
    ("billing", None, [("billing", {"continues": "i-chat"})]),  # no agent recorded: anyone
    (None, "ann", []),  # no queue recorded: "queue:" names no queue, on_failure
])
def test_a_queue_transfer_hands_the_affinity_and_the_continued_interaction_to_the_desk(
        tmp_path: Path, queue: str | None, agent: str | None, expected: list[Any]) -> None:
    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    found = history(now, timedelta(hours=1), "open")
    found["recent_interactions"][1].update(queue=queue, agent=agent)

    async def lookup(**_query: Any) -> dict[str, Any]:
        return found

    queued: list[Any] = []

    async def to_queue(_call: Any, name: str, **options: Any) -> bool:
        queued.append((name, options))
        return True

    flow = flow_of(tmp_path, CONTINUE_FLOW)
    run = run_script(flow, [], tmp_path=tmp_path, lookup=lookup, wall_clock=lambda: now,
                     interaction_id="this-call", transfer_queue=to_queue)
    assert queued == expected
    if expected:
        assert run.record.ended == "transfer" and run.record.transfer_target == f"queue:{queue}"
    else:
        assert said(run) == ["Transfer failed."] and run.record.transfers_failed == ["queue:"]


@pytest.mark.parametrize(("transfer", "kind", "needle"), [
    ("{to: 'sip:ann@pbx', prefer_agent: ann}", "bad_value", "prefer_agent is for queue transfers"),
    ("{to: 'sip:ann@pbx', continues: x}", "bad_value", "continues is for queue transfers"),
    ("{to: 'queue:support', prefer_for: 10}", "missing_key", "prefer_for without prefer_agent"),
    ("{to: 'queue:sup port'}", "bad_value", "not a queue name"),
])
def test_queue_options_are_checked_when_the_flow_loads(tmp_path: Path, transfer: str, kind: str,
                                                       needle: str) -> None:
    from voice.ivr.validate import parse_flow

    path = tmp_path / "t.yaml"
    path.write_text(f"start: go\nnodes:\n  go:\n    transfer: {transfer}\n")
    _flow, errors = parse_flow(path, "t", prompts_dir=tmp_path)
    assert [(e.kind, e.line) for e in errors if needle in e.message] == [(kind, 4)], errors
