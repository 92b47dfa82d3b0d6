"""Blind transfers from an agent's softphone, the whole call in memory on virtual time (the rig of
tests/callmemory.py: real SIP core, switch, desk, IVR, recorder, history on SQLite).

The first agent talks on a SIP phone whose connection is wrapped by `Softphone`, which does what
the browser leg does when the page sends rtc_transfer (voice.callcontrol.browser_leg): it ends the
agent's side and the conversation's end carries `transfer_to`. The browser leg itself is checked
for that in tests/test_webrtc.py, and with Chromium in tests/test_softphone_browser.py.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from cti.ports import AgentConnection, CallView, ConversationEnd
from cti.queues import AgentState
from tests.callmemory import (
    PHONE_ANSWER,
    Caller,
    Phone,
    Rig,
    agent_state,
    hold_time_during_aiosqlite,
    is_request,
    run_virtual_checked,
    until,
    voice_rows,
)
from voice.sip.transaction import Address

pytestmark = pytest.mark.timeout(60)

BOB_PHONE = Address("127.0.0.1", 5090, "udp")


@pytest.fixture(autouse=True)
def _virtual_time_waits_for_the_database(monkeypatch: pytest.MonkeyPatch) -> None:
    hold_time_during_aiosqlite(monkeypatch)


@pytest.fixture(autouse=True)
def _no_warnings_logged(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.INFO)
    yield
    bad = [r for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith(("voice", "cti"))]
    assert not bad, [f"{r.name}: {r.getMessage()}" for r in bad]


class Softphone:
    """An agent connection that can be blind-transferred, as the browser leg can."""

    def __init__(self, inner: AgentConnection) -> None:
        self.inner = inner
        self._target: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    @property
    def answered(self) -> bool:
        return self.inner.answered

    @property
    def status(self) -> int | None:
        return self.inner.status

    @property
    def reason(self) -> str:
        return self.inner.reason

    def transfer(self, target: str) -> None:
        self._target.set_result(target)

    async def wait_finished(self) -> ConversationEnd:
        finished = asyncio.ensure_future(self.inner.wait_finished())
        await asyncio.wait({finished, self._target}, return_when=asyncio.FIRST_COMPLETED)
        if not self._target.done() or finished.done():
            self._target.cancel()
            return await finished
        self.inner.hangup()  # the agent's side ends now
        end = await finished
        return replace(end, hangup_by="agent", transfer_to=self._target.result())

    def hangup(self) -> None:
        self.inner.hangup()


class SoftphoneDesk:
    """The switch as the desk's connector, with the first agent's connection a Softphone."""

    def __init__(self, rig: Rig, agent_uri: str) -> None:
        self.switch, self.agent_uri = rig.switch, agent_uri
        self.phones: list[Softphone] = []

    async def connect(self, call: CallView, agent_uri: str, *, timeout: float) -> AgentConnection:
        connection = await self.switch.connect(call, agent_uri, timeout=timeout)
        if agent_uri != self.agent_uri:
            return connection
        phone = Softphone(connection)
        self.phones.append(phone)
        return phone


async def ann_talking(rig: Rig) -> tuple[Caller, Phone, SoftphoneDesk]:
    await rig.add_agent("ann", skills=["support"])
    await rig.add_agent("bob", skills=["billing"], phone=BOB_PHONE)
    desk = SoftphoneDesk(rig, "sip:ann@127.0.0.1:5080")
    rig.desk.connector = desk
    caller, ann = Caller(rig), Phone(rig)
    caller.invite()
    await caller.answered()
    caller.ack()
    await asyncio.sleep(1.0)
    caller.session.press("0")
    await ann.rings()
    ann.reply(200, PHONE_ANSWER)
    await ann.acked()
    await until(lambda: rig.desk.engine.agents["ann"].state is AgentState.ON_CALL, "ann on the call")
    await asyncio.sleep(2.0)  # they talk
    return caller, ann, desk


def test_a_transfer_to_a_queue_reaches_a_second_agent_and_frees_the_first(tmp_path: Path) -> None:
    pops: list[dict[str, Any]] = []

    async def scenario() -> None:
        rig = await Rig(tmp_path).start()
        rig.desk.bus.add_listener(
            lambda _agent, ev: pops.append(ev) if ev.get("type") == "screen_pop" else None)
        try:
            caller, ann, desk = await ann_talking(rig)
            bob = Phone(rig, BOB_PHONE)
            desk.phones[0].transfer("queue:billing")
            await ann.hung_up()
            # The first agent is free at once: wrap-up, not on the call they handed on.
            await until(lambda: rig.desk.engine.agents["ann"].state is AgentState.WRAP_UP, "ann in wrap-up")
            assert agent_state(rig.db_path, "ann") == "wrap_up"
            await bob.rings()
            await until(lambda: any(p["agent_id"] == "bob" for p in pops), "bob's screen pop")
            pop = next(p for p in pops if p["agent_id"] == "bob")
            assert pop["queue"] == "billing" and pop["caller"]["number"] == "+15550100"
            assert pop["interaction_id"] == caller_interaction(rig)
            bob.reply(200, PHONE_ANSWER)
            await bob.acked()
            await until(lambda: rig.desk.engine.agents["bob"].state is AgentState.ON_CALL, "bob on the call")
            assert agent_state(rig.db_path, "ann") == "wrap_up"  # still: nothing puts ann back on it
            await asyncio.sleep(2.0)
            bob.bye()  # the flow goes on after the agents: goodbye, and our BYE to the caller
            await caller.hung_up()
            await rig.calls_over()
            assert rig.desk.engine.agents["bob"].state is AgentState.WRAP_UP
        finally:
            await rig.close()

    run_virtual_checked(scenario())
    (row,) = voice_rows(tmp_path / "data" / "voice.db")
    first, second = row["metadata"]["transfers"]
    assert first["target"] == "queue:support" and first["agent_id"] == "ann" and first["ok"] is True
    assert first["hangup_by"] == "agent" and "by_agent" not in first
    assert second["target"] == "queue:billing" and second["agent_id"] == "bob" and second["ok"] is True
    assert second["by_agent"] == "ann" and second["hangup_by"] == "agent" and second["talk_seconds"] > 0
    assert [p["node"] for p in row["ivr"]["path"]] == ["welcome", "to_support", "after_agent"]


def caller_interaction(rig: Rig) -> str | None:
    (answer,) = rig.switch.calls.values()
    assert answer.call is not None
    return answer.call.interaction_id


def test_a_transfer_to_a_number_rings_it_while_the_caller_hears_music(tmp_path: Path) -> None:
    async def scenario() -> None:
        rig = await Rig(tmp_path).start()
        rig.switch.number_domain = f"{BOB_PHONE.host}:{BOB_PHONE.port}"
        try:
            caller, ann, desk = await ann_talking(rig)
            outside = Phone(rig, BOB_PHONE)
            played = len(caller.session.played)
            desk.phones[0].transfer("2001")
            await ann.hung_up()
            ringing = await outside.rings()
            assert str(ringing.message.uri).startswith("sip:2001@")
            await until(lambda: rig.desk.engine.agents["ann"].state is AgentState.WRAP_UP, "ann in wrap-up")
            await asyncio.sleep(1.0)
            assert len(caller.session.played) > played  # music while the number rings
            outside.reply(200, PHONE_ANSWER)
            await outside.acked()
            await asyncio.sleep(1.0)
            outside.bye()
            await caller.hung_up()
            await rig.calls_over()
        finally:
            await rig.close()

    run_virtual_checked(scenario())
    (row,) = voice_rows(tmp_path / "data" / "voice.db")
    _first, second = row["metadata"]["transfers"]
    assert second["target"] == "2001" and second["ok"] is True and second["by_agent"] == "ann"
    assert agent_state(tmp_path / "data" / "voice.db", "ann") == "wrap_up"


def test_a_transfer_nobody_takes_ends_the_agents_part_of_the_flow(tmp_path: Path) -> None:
    async def scenario() -> None:
        rig = await Rig(tmp_path).start()
        try:
            caller, ann, desk = await ann_talking(rig)
            desk.phones[0].transfer("queue:nobody")  # no agent has the skill
            await ann.hung_up()
            await caller.hung_up()  # the flow's after-agent branch: goodbye and hang up
            await rig.calls_over()
        finally:
            await rig.close()

    run_virtual_checked(scenario())
    (row,) = voice_rows(tmp_path / "data" / "voice.db")
    _first, second = row["metadata"]["transfers"]
    assert second["target"] == "queue:nobody" and second["ok"] is False and second["by_agent"] == "ann"
    assert second["reason"] == "no_agents"
    assert [p["node"] for p in row["ivr"]["path"]] == ["welcome", "to_support", "after_agent"]


def test_a_transfer_to_another_agents_phone_reserves_them_on_the_desk(tmp_path: Path) -> None:
    pops: list[dict[str, Any]] = []

    async def scenario() -> None:
        rig = await Rig(tmp_path).start()
        rig.desk.bus.add_listener(
            lambda _agent, ev: pops.append(ev) if ev.get("type") == "screen_pop" else None)
        try:
            caller, ann, desk = await ann_talking(rig)
            bob = Phone(rig, BOB_PHONE)
            desk.phones[0].transfer("sip:bob@127.0.0.1:5090")  # bob's own phone, not his queue
            await ann.hung_up()
            await bob.rings()
            assert rig.desk.engine.agents["bob"].state is AgentState.RINGING
            assert any(p["agent_id"] == "bob" and p["queue"] is None for p in pops)  # his screen pop
            bob.reply(200, PHONE_ANSWER)
            await bob.acked()
            await until(lambda: rig.desk.engine.agents["bob"].state is AgentState.ON_CALL, "bob on the call")
            assert agent_state(rig.db_path, "ann") == "wrap_up"
            bob.bye()
            await caller.hung_up()
            await rig.calls_over()
            assert rig.desk.engine.agents["bob"].state is AgentState.WRAP_UP
            assert agent_state(rig.db_path, "bob") == "wrap_up"
        finally:
            await rig.close()

    run_virtual_checked(scenario())
    (row,) = voice_rows(tmp_path / "data" / "voice.db")
    _first, second = row["metadata"]["transfers"]
    assert second["agent_id"] == "bob" and second["ok"] is True and second["by_agent"] == "ann"


def test_a_transfer_to_a_busy_agent_fails_without_ringing_them(tmp_path: Path) -> None:
    async def scenario() -> None:
        rig = await Rig(tmp_path).start()
        try:
            caller, ann, desk = await ann_talking(rig)
            await rig.desk.set_agent_state("bob", AgentState.AWAY, reason="lunch")
            sent = len(rig.network.sent)
            desk.phones[0].transfer("sip:bob@127.0.0.1:5090")
            await ann.hung_up()
            await caller.hung_up()  # nobody took the caller: the flow's after-agent branch
            await rig.calls_over()
            assert not [s for s in rig.network.matching(is_request("INVITE", BOB_PHONE)) if s.index >= sent]
            assert rig.desk.engine.agents["bob"].state is AgentState.AWAY
        finally:
            await rig.close()

    run_virtual_checked(scenario())
    (row,) = voice_rows(tmp_path / "data" / "voice.db")
    _first, second = row["metadata"]["transfers"]
    assert second["ok"] is False and second["agent_id"] == "bob" and second["by_agent"] == "ann"
    assert second["reason"] == "agent_busy"
