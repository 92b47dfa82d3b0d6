"""Callbacks (virtual hold) through the whole desk on virtual time (SQLite, the queue engine, the
callback scheduler; call control faked as cti.ports says): a waiting caller presses the key and
confirms, keeps their place, the agent is rung first with the pop, then the customer; retries and
give-up; two nodes (or a restarted one) never place one callback twice."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cti.agents import AgentStore
from cti.callback_desk import CallbackDesk
from cti.callbacks import CallbackStore, NewCallback, RetryRules
from cti.db import Database, migrate, open_database
from cti.events import EventBus
from cti.ports import ConversationEnd, CustomerNumber
from cti.queues import AgentState, QueueEngine, QueueSpec
from cti.routing import AgentDesk
from cti.store import CustomerStore
from cti.virtual_hold import CONFIRM_TEXT, DONE_TEXT, STAR, WHEN, spoken
from cti.waiting import SAMPLE_RATE, position_text
from tests.desk_fakes import FakeCall, FakeConnector
from voice.ivr.vtime import run_virtual

ORIGINAL = "aaaaaaaa-1111-4111-8111-111111111111"  # the waiting caller's interaction
CALLBACK_RECORD = "11111111-2222-4333-8444-555555555555"  # the callback call's own


class TextVoice:
    """A TTS that remembers what it said; each text is 1 s of a tone."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    async def render(self, text: str) -> np.ndarray:
        self.texts.append(text)
        await asyncio.sleep(0.1)
        t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
        return (np.sin(2 * np.pi * 440 * t) * 4000).astype(np.int16)


class FakeLeg:
    def __init__(self, answered: bool, status: int) -> None:
        self.answered, self.status, self.reason = answered, status, "OK" if answered else "Timeout"
        self.ended = asyncio.get_running_loop().create_future()

    async def wait_ended(self) -> str:
        return await asyncio.shield(self.ended)

    def hangup(self) -> None:
        if not self.ended.done():
            self.ended.set_result("local")


class FakeCustomerCall:
    def __init__(self, answered: bool, status: int, talk: float) -> None:
        self.answered, self.status = answered, status
        self.reason = "OK" if answered else "Busy Here"
        self.interaction_id = CALLBACK_RECORD if answered else None
        self.talk = talk

    async def wait_finished(self) -> ConversationEnd:
        await asyncio.sleep(self.talk)
        return ConversationEnd(hangup_by="caller", talk_seconds=self.talk)

    def hangup(self) -> None:
        return None


class FakeDialer:
    """Agents answer after `agent_ring` s (None: never, 408); customers in `busy` answer 486."""

    def __init__(self, *, agent_ring: dict[str, float | None] | None = None, busy: set[str] = frozenset(),
                 talk: float = 3.0) -> None:
        self.agent_ring = agent_ring or {}
        self.busy = set(busy)
        self.talk = talk
        self.log: list[tuple[str, str, float]] = []  # ("agent"|"customer", uri or number, loop time)
        self.customers: list[CustomerNumber] = []

    async def ring_agent(self, agent_uri: str, *, timeout: float, display: str | None = None) -> FakeLeg:
        loop = asyncio.get_running_loop()
        self.log.append(("agent", agent_uri, loop.time()))
        after = self.agent_ring.get(agent_uri.removeprefix("sip:").split("@")[0], 0.5)
        if after is None or after > timeout:
            await asyncio.sleep(timeout)
            return FakeLeg(False, 408)
        await asyncio.sleep(after)
        return FakeLeg(True, 200)

    async def call_customer(self, agent: Any, customer: CustomerNumber, *, timeout: float,
                            on_ringing: Callable[[], None] | None = None) -> FakeCustomerCall:
        self.log.append(("customer", customer.number, asyncio.get_running_loop().time()))
        self.customers.append(customer)
        if on_ringing is not None:
            on_ringing()
        if customer.number in self.busy:
            await asyncio.sleep(1)
            return FakeCustomerCall(False, 486, 0)
        await asyncio.sleep(2)
        return FakeCustomerCall(True, 200, self.talk)


class Node:
    """One node's desk: AgentDesk + CallbackDesk on a shared database."""

    def __init__(self, db: Database, dialer: FakeDialer | None, *, node: str = "n1",
                 rules: RetryRules | None = None, voice: TextVoice | None = None,
                 spec: QueueSpec | None = None) -> None:
        self.db, self.dialer = db, dialer
        spec = spec or QueueSpec(name="support", ring_timeout=10, callback_key="9", announce_interval=0)
        self.desk = AgentDesk(store=CustomerStore(db), agents=AgentStore(db), bus=EventBus(),
                              connector=FakeConnector({}), clock=asyncio.get_running_loop().time,
                              voice=voice, engine=QueueEngine([spec]))
        self.callbacks = CallbackDesk(self.desk, CallbackStore(db, rules or RetryRules()), dialer, node=node,
                                      customer_ring_timeout=20, poll_interval=0.5)
        self.desk.callbacks = self.callbacks
        self.pops: list[dict[str, Any]] = []
        self.desk.bus.add_listener(
            lambda _a, e: self.pops.append(e) if e.get("type") == "screen_pop" else None)

    async def __aenter__(self) -> Node:
        await self.desk.start()
        await self.callbacks.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.callbacks.close()
        await self.desk.close()


async def database(tmp_path: Path, agents: tuple[str, ...] = ("ann",)) -> Database:
    db = open_database(f"sqlite+aiosqlite:///{tmp_path / 'voice.db'}")
    await migrate(db)
    store = AgentStore(db)
    for a in agents:
        await store.create_agent(agent_id=a, name=a.title(), sip_uri=f"sip:{a}@127.0.0.1", skills=["support"],
                                 password=None)
    return db


async def until(check: Callable[[], Any], timeout: float = 120.0) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not (result := check()):
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.1)
    return result


async def until_async(check: Callable[[], Coroutine[Any, Any, Any]], timeout: float = 120.0) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not (result := await check()):
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.1)
    return result


def test_the_caller_presses_9_confirms_and_is_called_back_by_the_free_agent_first(tmp_path: Path) -> None:
    async def scenario() -> None:
        db = await database(tmp_path)
        voice = TextVoice()
        dialer = FakeDialer(agent_ring={"ann": 2.0})
        try:
            async with Node(db, dialer, voice=voice) as node:
                desk = node.desk
                caller = FakeCall("cb-1", "+4930111222", interaction_id=ORIGINAL)
                waiting = asyncio.ensure_future(desk.transfer_queue(caller, "support"))
                await asyncio.sleep(5)
                assert position_text(1, "9") in voice.texts  # the offer is in the announcement
                caller.press("9")
                confirm = CONFIRM_TEXT.format(digits=spoken("+4930111222"), star=STAR[True])
                await until(lambda: confirm in voice.texts)
                caller.press("1")
                outcome = await asyncio.wait_for(waiting, 30)
                assert outcome.reason == "callback" and not outcome.ok and outcome.callback_id
                assert DONE_TEXT.format(digits=spoken("+4930111222"), when=WHEN[True]) in voice.texts
                row = await node.callbacks.store.get(outcome.callback_id)
                assert row is not None and row["state"] == "queued" and row["number"] == "+4930111222"
                assert row["original_interaction_id"] == caller.interaction_id and row["channel"] == "voice"

                await asyncio.sleep(360)  # six minutes later ann becomes free
                await desk.set_agent_state("ann", AgentState.AVAILABLE)
                done = await until_async(lambda: _state(node, outcome.callback_id, "done"))
                kinds = [k for k, _, _ in dialer.log]
                assert kinds == ["agent", "customer"]  # the agent first, then the customer
                pop = node.pops[-1]
                assert pop["callback"]["id"] == outcome.callback_id
                assert pop["text"].startswith("Callback for +4930111222 (+4930111222), waited 6 min")
                customer = dialer.customers[0]
                assert customer.metadata is not None
                assert customer.metadata["callback_of"] == caller.interaction_id
                assert done["attempts"] == 1 and done["interaction_id"] == CALLBACK_RECORD

                async def ann_in_wrap_up() -> bool:  # written just after the callback's row
                    return (await desk.agents.get_agent("ann"))["state"] == "wrap_up"  # type: ignore[index]

                await until_async(ann_in_wrap_up, timeout=10)
        finally:
            await db.dispose()

    run_virtual(scenario())


async def _state(node: Node, callback_id: str, state: str) -> dict[str, Any] | None:
    row = await node.callbacks.store.get(callback_id)
    return row if row is not None and row["state"] == state else None


def test_a_callback_keeps_its_place_before_callers_who_came_later(tmp_path: Path) -> None:
    async def scenario() -> None:
        db = await database(tmp_path)
        dialer = FakeDialer()
        try:
            async with Node(db, dialer) as node:
                desk = node.desk
                # the callback's caller entered the queue 10 minutes ago; this caller entered now
                entered = datetime.now(UTC) - timedelta(minutes=10)
                row, _ = await node.callbacks.request(NewCallback(number="+4930999", queue="support",
                                                                  entered_at=entered))
                later = FakeCall("later-1", "+4930555")
                waiting = asyncio.ensure_future(desk.transfer_queue(later, "support"))
                await asyncio.sleep(2)
                await desk.set_agent_state("ann", AgentState.AVAILABLE)
                await until_async(lambda: _state(node, row["id"], "done"))
                assert not waiting.done()  # ann served the callback; the later caller still waits
                assert desk.engine.position(later.key) == 1
                later.hang_up()
                assert (await waiting).reason == "abandoned"
        finally:
            await db.dispose()

    run_virtual(scenario())


def test_retries_then_gives_up_and_an_agent_who_does_not_answer_costs_no_attempt(tmp_path: Path) -> None:
    async def scenario() -> None:
        db = await database(tmp_path, agents=("ann", "bob"))
        dialer = FakeDialer(agent_ring={"ann": None, "bob": 0.5}, busy={"+4930777"})
        try:
            async with Node(db, dialer, rules=RetryRules(retries=1, retry_interval=0.0)) as node:
                desk = node.desk
                row, _ = await node.callbacks.request(NewCallback(number="+4930777", queue="support"))
                await desk.set_agent_state("ann", AgentState.AVAILABLE)
                await until(lambda: any(k == "agent" and "ann" in u for k, u, _ in dialer.log))
                await asyncio.sleep(11)  # ann's phone rings out: she goes away, the callback waits
                assert (await desk.agents.get_agent("ann"))["state"] == "away"  # type: ignore[index]
                queued = await node.callbacks.store.get(row["id"])
                assert queued is not None and queued["state"] == "queued" and queued["attempts"] == 0
                await desk.set_agent_state("bob", AgentState.AVAILABLE)
                await until(lambda: sum(k == "customer" for k, _, _ in dialer.log) == 1)
                await until_async(lambda: _attempts(node, row["id"], 1, "queued"))
                await desk.set_agent_state("bob", AgentState.AVAILABLE)  # after wrap-up
                failed = await until_async(lambda: _state(node, row["id"], "failed"))
                assert failed["attempts"] == 2 and len(failed["history"]) == 2
                assert all("486" in h["result"] for h in failed["history"])
        finally:
            await db.dispose()

    run_virtual(scenario())


def test_a_browser_agent_takes_a_callback_on_the_page_before_a_caller_who_came_later(tmp_path: Path) -> None:
    """Browser agents (browser:ID) take callbacks like desk phones: their page rings first
    (`ring_agent("browser:bea")`), then the customer is called; the older callback goes first."""
    async def scenario() -> None:
        db = await database(tmp_path, agents=())
        await AgentStore(db).create_agent(agent_id="bea", name="Bea", sip_uri="browser:bea",
                                          skills=["support"], password=None)
        dialer = FakeDialer()
        try:
            async with Node(db, dialer) as node:
                desk = node.desk
                desk.connector = FakeConnector({"browser:bea": 0.5})
                entered = datetime.now(UTC) - timedelta(minutes=10)
                row, _ = await node.callbacks.request(NewCallback(number="+4930999", queue="support",
                                                                  entered_at=entered))
                caller = FakeCall("line-1", "+4930555")
                waiting = asyncio.ensure_future(desk.transfer_queue(caller, "support"))
                await asyncio.sleep(1)
                await desk.set_agent_state("bea", AgentState.AVAILABLE)
                done = await until_async(lambda: _state(node, row["id"], "done"))
                assert [(kind, who) for kind, who, _ in dialer.log] == [("agent", "browser:bea"),
                                                                      ("customer", "+4930999")]
                assert done["history"][0]["agent_id"] == "bea"
                assert node.pops[-1]["callback"]["id"] == row["id"]  # the page's pop
                assert not waiting.done() and desk.engine.position(caller.key) == 1

                async def bea_in_wrap_up() -> bool:  # written just after the callback's row
                    return (await desk.agents.get_agent("bea"))["state"] == "wrap_up"  # type: ignore[index]

                await until_async(bea_in_wrap_up, timeout=10)
                await desk.set_agent_state("bea", AgentState.AVAILABLE)  # then the caller on the line
                outcome = await asyncio.wait_for(waiting, 30)
                assert outcome.ok and outcome.agent_id == "bea"
        finally:
            await db.dispose()

    run_virtual(scenario())


async def _attempts(node: Node, callback_id: str, attempts: int, state: str) -> bool:
    row = await node.callbacks.store.get(callback_id)
    return row is not None and row["attempts"] == attempts and row["state"] == state


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = open_database(f"sqlite+aiosqlite:///{tmp_path / 'voice.db'}")
    await migrate(database)
    yield database
    await database.dispose()


async def test_one_claim_wins_and_a_restarted_node_puts_back_what_it_left(db: Database) -> None:
    store = CallbackStore(db, RetryRules(retries=0, retry_interval=1))
    agents = AgentStore(db)
    for name in ("ann", "bob"):
        await agents.create_agent(agent_id=name, name=name, sip_uri=f"sip:{name}@127.0.0.1",
                                  skills=["support"], password=None)
        await agents.set_state(name, AgentState.AVAILABLE)
    row, created = await store.create(NewCallback(number="+4930123", queue="support", idempotency_key="k1"))
    same = NewCallback(number="+4930123", queue="support", idempotency_key="k1")
    again, created_again = await store.create(same)
    assert created and not created_again and again["id"] == row["id"]
    results = await asyncio.gather(*(store.claim(row["id"], f"n{i}", "ann") for i in range(5)))
    assert sorted(results) == ["ok"] + ["taken"] * 4
    assert (await agents.get_agent("ann"))["state"] == "ringing"  # type: ignore[index]
    winner = f"n{results.index('ok')}"
    assert await store.recover(winner) == {"requeued": 1, "interrupted": 0}  # offered only: back in line
    assert (await store.get(row["id"]))["state"] == "queued"  # type: ignore[index]
    assert (await agents.get_agent("ann"))["state"] == "available"  # type: ignore[index]
    assert await store.claim(row["id"], "n1", "ann") == "ok" and await store.dialing(row["id"], "n1", "ann")
    assert await store.claim(row["id"], "n2", "bob") == "taken"  # dialing: nobody else may take it
    # n1 dies while the customer's phone rang: on restart the attempt counts (retries=0: failed)
    assert await store.recover("n1") == {"requeued": 0, "interrupted": 1}
    final = await store.get(row["id"])
    assert final is not None and final["state"] == "failed" and final["attempts"] == 1
    assert (await agents.get_agent("ann"))["state"] == "away"  # type: ignore[index]
    # another one answered just before the crash: done at the restart, never called again
    other, _ = await store.create(NewCallback(number="+4930456", queue="support"))
    assert await store.claim(other["id"], "n1", "bob") == "ok"
    assert await store.dialing(other["id"], "n1", "bob")
    assert await store.answered(other["id"], "n1", CALLBACK_RECORD)
    assert await store.recover("n1") == {"requeued": 0, "interrupted": 1}
    assert (await store.get(other["id"]))["state"] == "done"  # type: ignore[index]
    # an agent taken meanwhile: the claim gives the callback back at once
    third, _ = await store.create(NewCallback(number="+4930789", queue="support"))
    assert await store.claim(third["id"], "n1", "bob") == "busy"
    assert (await store.get(third["id"]))["state"] == "queued"  # type: ignore[index]
