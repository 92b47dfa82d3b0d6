# ruff: noqa: F811  (the `target` fixture is imported from tests.cti.conftest and taken as an argument)
"""After-call work: the wrap-up countdown on virtual time (the whole call in memory), and the
agent page's disposition codes and away reasons through the real HTTP app ([agents] config)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cti.queues import AgentState
from cti.wrapup import AgentPolicy
from tests.agents_helpers import BEARER, desk_of, inbound_call, make_agent, running_app, sign_in
from tests.callmemory import (
    PHONE_ANSWER,
    Caller,
    Phone,
    Rig,
    agent_state,
    hold_time_during_aiosqlite,
    run_virtual_checked,
    until,
    voice_rows,
)
from tests.cti.conftest import Target, make_config, target  # noqa: F401  (fixture)
from voice.config import Config, ConfigError, load_config

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(autouse=True)
def _virtual_time_waits_for_the_database(monkeypatch: pytest.MonkeyPatch) -> None:
    hold_time_during_aiosqlite(monkeypatch)


@pytest.fixture(autouse=True)
def _no_warnings_logged(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.INFO)
    yield
    bad = [r for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith(("voice", "cti"))]
    assert not bad, [f"{r.name}: {r.getMessage()}" for r in bad]


async def call_ann_hangs_up(rig: Rig) -> None:
    await rig.add_agent("ann", skills=["support"])
    caller, phone = Caller(rig), Phone(rig)
    caller.invite()
    await caller.answered()
    caller.ack()
    caller.session.press("0")
    await phone.rings()
    phone.reply(200, PHONE_ANSWER)
    await phone.acked()
    await asyncio.sleep(2.0)
    phone.bye()
    await caller.hung_up()
    await rig.calls_over()


def test_the_wrap_up_countdown_returns_the_agent_to_available(tmp_path: Path) -> None:
    states: list[tuple[float, dict[str, Any]]] = []  # (loop time, event)

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        rig = await Rig(tmp_path, policy=AgentPolicy(wrap_up_seconds=30)).start()
        rig.desk.bus.add_listener(
            lambda _a, ev: states.append((loop.time(), ev)) if ev.get("type") == "state" else None)
        try:
            await call_ann_hangs_up(rig)
            began, wrap = next((t, ev) for t, ev in states if ev["state"] == "wrap_up")
            assert wrap["wrap_up_left"] == 30 and wrap["call_id"]
            await asyncio.sleep(began + 28 - loop.time())
            assert rig.desk.engine.agents["ann"].state is AgentState.WRAP_UP
            assert 1 < (rig.desk.wrap_up.left("ann") or 0) < 3
            await until(lambda: rig.desk.engine.agents["ann"].state is AgentState.AVAILABLE,
                        "ann available again", timeout=10)
            ended, last = states[-1]
            assert last["state"] == "available" and last["call_id"] is None
            assert 29.9 < ended - began < 31
            assert agent_state(rig.db_path, "ann") == "available"
        finally:
            await rig.close()

    run_virtual_checked(scenario())
    (row,) = voice_rows(tmp_path / "data" / "voice.db")
    assert row["status"] == "completed"


def test_an_agent_who_moves_on_during_wrap_up_keeps_their_choice(tmp_path: Path) -> None:
    async def scenario() -> None:
        rig = await Rig(tmp_path, policy=AgentPolicy(wrap_up_seconds=30)).start()
        try:
            await call_ann_hangs_up(rig)
            await asyncio.sleep(5)
            await rig.desk.set_agent_state("ann", AgentState.AWAY, reason="lunch")
            assert rig.desk.wrap_up.left("ann") is None  # the countdown is gone
            await asyncio.sleep(40)
            assert rig.desk.engine.agents["ann"].state is AgentState.AWAY
            assert (await rig.agents.get_agent("ann") or {})["reason"] == "lunch"
            assert rig.desk.snapshot()["agents"][0]["reason"] == "lunch"
        finally:
            await rig.close()

    run_virtual_checked(scenario())
    assert agent_state(tmp_path / "data" / "voice.db", "ann") == "away"


def test_manual_wrap_up_waits_for_the_agent(tmp_path: Path) -> None:
    async def scenario() -> None:
        rig = await Rig(tmp_path, policy=AgentPolicy(wrap_up_seconds=0)).start()
        try:
            await call_ann_hangs_up(rig)
            await asyncio.sleep(600)
            assert rig.desk.engine.agents["ann"].state is AgentState.WRAP_UP
            assert rig.desk.wrap_up.left("ann") is None
        finally:
            await rig.close()

    run_virtual_checked(scenario())


def test_the_agents_section_of_the_config(tmp_path: Path) -> None:
    def load_config_text(text: str) -> Config:
        path = tmp_path / "sip.conf"
        path.write_text(text)
        return load_config(path)

    config = load_config_text("[agents]\ndispositions = resolved, callback, sale\nwrap_up_seconds = 45\n"
                              "away_reasons = break, lunch\n")
    assert config.agents.dispositions == ("resolved", "callback", "sale")
    assert config.agents.wrap_up_seconds == 45 and config.agents.away_reasons == ("break", "lunch")
    assert load_config_text("").agents.wrap_up_seconds == 0
    with pytest.raises(ConfigError, match="wrap_up_seconds"):
        load_config_text("[agents]\nwrap_up_seconds = -1\n")
    with pytest.raises(ConfigError, match="dispositions"):
        load_config_text("[agents]\ndispositions = ok, not ok!\n")


async def test_the_page_gets_the_codes_and_away_reasons_are_kept_and_listed(target: Target) -> None:
    from dataclasses import replace

    from voice.config import AgentsConfig

    config = replace(make_config(target.url), agents=AgentsConfig(
        dispositions=("resolved", "callback"), wrap_up_seconds=20, away_reasons=("break", "lunch")))
    async with running_app(target, config=config) as client:
        await make_agent(client, "ann", ["support"], state="available")
        await sign_in(client, "ann")
        me = await (await client.get("/agent/api/me")).json()
        assert me["desk"] == {"dispositions": ["resolved", "callback"], "away_reasons": ["break", "lunch"],
                              "wrap_up_seconds": 20}
        away = await client.post("/agent/api/state", json={"state": "away", "reason": "lunch"})
        assert away.status == 200 and (await away.json())["reason"] == "lunch"
        listed = await (await client.get("/api/v1/agents", headers=BEARER)).json()
        assert listed["agents"][0]["state"] == "away" and listed["agents"][0]["reason"] == "lunch"
        for bad in ({"state": "away", "reason": "nap"}, {"state": "available", "reason": "lunch"},
                    {"state": "away", "reason": 3}):
            resp = await client.post("/agent/api/state", json=bad)
            assert resp.status == 422 and (await resp.json())["error"]["field"] == "reason", bad
        back = await (await client.post("/agent/api/state", json={"state": "available"})).json()
        assert back["reason"] is None  # the reason goes with the away state
        patched = await client.patch("/api/v1/agents/ann", json={"state": "away", "reason": "break"},
                                     headers=BEARER)
        assert (await patched.json())["reason"] == "break"

        call, interaction_id = await inbound_call(client, "wrap-1@test")
        wrong = await client.post("/agent/api/notes", json={"interaction_id": interaction_id, "text": "",
                                                           "disposition": "sale"})
        assert wrong.status == 422 and (await wrong.json())["error"]["field"] == "disposition"
        ok = await client.post("/agent/api/notes", json={"interaction_id": interaction_id, "text": "",
                                                        "disposition": "callback"})
        assert ok.status == 201
        found = await desk_of(client).store.get_interaction(interaction_id)
        assert found is not None and found["disposition"] == "callback"
        assert call.key
