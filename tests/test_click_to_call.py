# ruff: noqa: F811  (the `target` fixture is imported from tests.cti.conftest and taken as an argument)
"""Click-to-call through the real HTTP server (SQLite and PostgreSQL), call control faked as
cti.ports says: who may place a call (signed in, available), what a bad number or customer gets,
the order agent first then customer, the agent's states and the page's events."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from cti.ports import ConversationEnd, CustomerNumber
from tests.agents_helpers import BEARER, desk_of, make_agent, next_of, running_app, seed_customer, sign_in
from tests.cti.conftest import Target, target  # noqa: F401  (fixture: SQLite and PostgreSQL)

RECORD = "22222222-3333-4444-8555-666666666666"


class Leg:
    def __init__(self, answered: bool, status: int) -> None:
        self.answered, self.status, self.reason = answered, status, "OK" if answered else "Timeout"
        self.hung_up = False

    async def wait_ended(self) -> str:
        return "local"

    def hangup(self) -> None:
        self.hung_up = True


class CustomerCall:
    def __init__(self, answered: bool) -> None:
        self.answered, self.status = answered, 200 if answered else 486
        self.reason = "OK" if answered else "Busy Here"
        self.interaction_id = RECORD if answered else None
        self.over = asyncio.Event()

    async def wait_finished(self) -> ConversationEnd:
        await self.over.wait()
        return ConversationEnd(hangup_by="caller", talk_seconds=12.0)

    def hangup(self) -> None:
        self.over.set()


class Dialer:
    """The agent answers (or not, `agent_answers`); the customer answers unless `busy`."""

    def __init__(self, *, agent_answers: bool = True, busy: bool = False) -> None:
        self.agent_answers, self.busy = agent_answers, busy
        self.log: list[tuple[str, str]] = []
        self.customers: list[CustomerNumber] = []
        self.legs: list[Leg] = []
        self.calls: list[CustomerCall] = []
        self.ringing = asyncio.Event()  # set while the agent's phone rings; the test lets it answer
        self.answer = asyncio.Event()

    async def ring_agent(self, agent_uri: str, *, timeout: float, display: str | None = None) -> Leg:
        self.log.append(("agent", agent_uri))
        self.display = display
        self.ringing.set()
        await asyncio.wait_for(self.answer.wait(), 5)
        leg = Leg(self.agent_answers, 200 if self.agent_answers else 408)
        self.legs.append(leg)
        return leg

    async def call_customer(self, agent: Any, customer: CustomerNumber, *, timeout: float,
                            on_ringing: Callable[[], None] | None = None) -> CustomerCall:
        self.log.append(("customer", customer.number))
        self.customers.append(customer)
        call = CustomerCall(not self.busy)
        self.calls.append(call)
        return call


async def _state(client: Any, agent_id: str) -> str:
    got: dict[str, Any] = await (await client.get(f"/api/v1/agents/{agent_id}", headers=BEARER)).json()
    return str(got["state"])


async def _until(check: Callable[[], Any], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.02)


async def test_placing_a_call_needs_a_signed_in_available_agent_and_a_good_number(target: Target) -> None:
    dialer = Dialer()
    async with running_app(target, dialer=dialer) as client:
        customer_id, _ = await seed_customer(client)
        nameless = await client.post("/api/v1/customers", headers=BEARER, json={"name": "No Phone",
                                                                                "email": "np@example.org"})
        no_phone = (await nameless.json())["id"]
        await make_agent(client, "ann", ["support"])  # away
        assert (await client.post("/agent/api/calls", json={"customer_id": customer_id})).status == 401
        await sign_in(client, "ann")

        async def error(body: Any, status: int) -> str:
            resp = await client.post("/agent/api/calls", json=body)
            assert resp.status == status, await resp.text()
            field: str = (await resp.json())["error"]["field"]
            return field

        assert await error({"customer_id": customer_id}, 409) == "state"  # away: nothing placed
        await client.post("/agent/api/state", json={"state": "available"})
        assert await error({"number": "not a number"}, 422) == "number"
        assert await error({"number": "+1 555"}, 422) == "number"  # too short for NANP
        assert await error({"number": 4930123456}, 422) == "number"
        assert await error({}, 422) == "number"
        assert await error({"customer_id": "nope"}, 422) == "customer_id"
        assert await error({"customer_id": "0" * 8 + "-0000-4000-8000-" + "0" * 12}, 404) == "customer_id"
        assert await error({"customer_id": no_phone}, 422) == "customer_id"
        assert await error({"number": "+4930123456", "extra": 1}, 422) == "extra"
        assert await error([1], 422) == "body"
        assert dialer.log == [] and await _state(client, "ann") == "available"  # nothing was rung

        resp = await client.post("/agent/api/calls", json={"number": "030 123456"})  # DE number
        assert resp.status == 202, await resp.text()
        placed = await resp.json()
        assert placed["number"] == "+4930123456" and placed["customer_id"] == customer_id  # the owner
        await asyncio.wait_for(dialer.ringing.wait(), 5)
        assert await _state(client, "ann") == "ringing"  # reserved: no queue call, no second click
        assert await error({"number": "+4930123456"}, 409) == "state"
        dialer.answer.set()
        await _until(lambda: _async(bool(dialer.calls)))
        dialer.calls[0].hangup()
        await _until(lambda: _is(client, "ann", "wrap_up"))
        assert dialer.log == [("agent", "sip:ann@127.0.0.1:5099"), ("customer", "+4930123456")]


async def _async(value: bool) -> bool:
    return value


async def _is(client: Any, agent_id: str, state: str) -> bool:
    return await _state(client, agent_id) == state


async def test_the_agent_is_rung_first_then_the_customer_and_the_page_follows_it(target: Target) -> None:
    dialer = Dialer()
    async with running_app(target, dialer=dialer) as client:
        customer_id, _ = await seed_customer(client)
        await make_agent(client, "ann", ["support"], state="available")
        await sign_in(client, "ann")
        async with client.ws_connect("/api/v1/agents/ann/events") as ws:
            await next_of(ws, "hello")
            resp = await client.post("/agent/api/calls", json={"customer_id": customer_id})
            assert resp.status == 202, await resp.text()
            key = (await resp.json())["call_id"]
            assert (await next_of(ws, "outbound"))["state"] == "ringing_agent"
            pop = await next_of(ws, "screen_pop")
            assert pop["call_id"] == key and pop["customer"]["id"] == customer_id
            assert pop["direction"] == "outbound" and pop["text"] == "Calling Anna Schmidt (+4930123456)"
            assert [i["channel"] for i in pop["recent_interactions"]] == ["chat", "email"]
            assert dialer.log == [("agent", "sip:ann@127.0.0.1:5099")]  # nobody else called yet
            assert dialer.display == "Call Anna Schmidt"
            dialer.answer.set()
            steps = [(await next_of(ws, "outbound"))["state"] for _ in range(2)]
            assert steps == ["dialing", "talking"]
            assert await _state(client, "ann") == "on_call"
            (customer,) = dialer.customers
            assert customer.number == "+4930123456" and customer.customer_id == customer_id
            assert customer.metadata == {"agent_id": "ann", "click_to_call": key}
            # a reloaded page gets the pop back, now naming the call's record (notes go there)
            assert desk_of(client).current_for(await desk_of(client).agents.get_agent("ann") or {}
                                               )["call"]["interaction_id"] == RECORD
            dialer.calls[0].hangup()
            ended = await next_of(ws, "outbound")
            assert ended["state"] == "ended" and ended["interaction_id"] == RECORD
            assert "caller hung up after 12 s" in ended["message"]
            state = await next_of(ws, "state")
            while state["state"] != "wrap_up":
                state = await next_of(ws, "state")
            assert state["call_id"] == key


async def test_an_unanswered_agent_phone_calls_nobody_and_leaves_the_agent_available(target: Target) -> None:
    dialer = Dialer(agent_answers=False)
    async with running_app(target, dialer=dialer) as client:
        await make_agent(client, "ann", ["support"], state="available")
        before = desk_of(client).engine.agents["ann"].since
        await sign_in(client, "ann")
        async with client.ws_connect("/api/v1/agents/ann/events") as ws:
            await next_of(ws, "hello")
            assert (await client.post("/agent/api/calls", json={"number": "+4930999888"})).status == 202
            dialer.answer.set()
            await next_of(ws, "outbound")  # ringing_agent
            missed = await next_of(ws, "outbound")
            assert missed["state"] == "agent_missed" and "+4930999888 was not called" in missed["message"]
        assert dialer.log == [("agent", "sip:ann@127.0.0.1:5099")]
        assert await _state(client, "ann") == "available"
        assert desk_of(client).engine.agents["ann"].since == before  # their place in the idle order


async def test_a_busy_customer_is_told_and_the_agent_wraps_up(target: Target) -> None:
    dialer = Dialer(busy=True)
    async with running_app(target, dialer=dialer) as client:
        await make_agent(client, "ann", ["support"], state="available")
        await sign_in(client, "ann")
        async with client.ws_connect("/api/v1/agents/ann/events") as ws:
            await next_of(ws, "hello")
            assert (await client.post("/agent/api/calls", json={"number": "+4930999888"})).status == 202
            dialer.answer.set()
            states = [(await next_of(ws, "outbound"))["state"] for _ in range(3)]
            assert states == ["ringing_agent", "dialing", "not_reached"]
        assert dialer.legs[0].hung_up  # the agent's phone is not left hearing ringback
        await _until(lambda: _is(client, "ann", "wrap_up"))


async def test_no_dialer_is_refused_and_a_browser_agent_is_rung_on_their_page(target: Target) -> None:
    async with running_app(target) as client:  # no OutboundDialer (an API-only process)
        await make_agent(client, "ann", ["support"], state="available")
        await sign_in(client, "ann")
        resp = await client.post("/agent/api/calls", json={"number": "+4930999888"})
        assert resp.status == 503 and await _state(client, "ann") == "available"
    dialer = Dialer()
    async with running_app(target, dialer=dialer) as client:
        await make_agent(client, "bob", ["support"], state="available")
        await client.patch("/api/v1/agents/bob", headers=BEARER, json={"sip_uri": "browser:bob"})
        await sign_in(client, "bob")
        assert (await client.post("/agent/api/calls", json={"number": "+4930999888"})).status == 202
        dialer.answer.set()
        await _until(lambda: _async(bool(dialer.calls)))
        assert dialer.log == [("agent", "browser:bob"), ("customer", "+4930999888")]
        dialer.calls[0].hangup()
        await _until(lambda: _is(client, "bob", "wrap_up"))


async def test_going_away_while_the_phone_rings_calls_nobody_and_keeps_the_agent_away(target: Target) -> None:
    dialer = Dialer()
    async with running_app(target, dialer=dialer) as client:
        await make_agent(client, "ann", ["support"], state="available")
        await sign_in(client, "ann")
        async with client.ws_connect("/api/v1/agents/ann/events") as ws:
            await next_of(ws, "hello")
            assert (await client.post("/agent/api/calls", json={"number": "+4930999888"})).status == 202
            await asyncio.wait_for(dialer.ringing.wait(), 5)
            await client.post("/agent/api/state", json={"state": "away", "reason": "lunch"})
            dialer.answer.set()  # the phone is picked up anyway
            await next_of(ws, "outbound")  # ringing_agent
            failed = await next_of(ws, "outbound")
            assert failed["state"] == "failed" and "no longer available" in failed["message"]
        assert dialer.log == [("agent", "sip:ann@127.0.0.1:5099")] and dialer.legs[0].hung_up
        assert await _state(client, "ann") == "away"


async def test_a_draining_node_places_no_new_calls_and_lets_the_one_in_progress_end(target: Target) -> None:
    from cti.web.keys import CLICK_KEY

    dialer = Dialer()
    async with running_app(target, dialer=dialer) as client:
        await make_agent(client, "ann", ["support"], state="available")
        await make_agent(client, "bob", ["support"], state="available")
        await sign_in(client, "ann")
        assert (await client.post("/agent/api/calls", json={"number": "+4930999888"})).status == 202
        await asyncio.wait_for(dialer.ringing.wait(), 5)
        clicks = client.server.app[CLICK_KEY]  # type: ignore[union-attr]
        draining = asyncio.ensure_future(clicks.drain(10))
        await asyncio.sleep(0.05)
        client.session.cookie_jar.clear()
        await sign_in(client, "bob")
        refused = await client.post("/agent/api/calls", json={"number": "+4930999777"})
        assert refused.status == 503 and await _state(client, "bob") == "available"
        dialer.answer.set()
        await _until(lambda: _async(bool(dialer.calls)))
        assert not draining.done()  # ann's call goes on
        dialer.calls[0].hangup()
        await asyncio.wait_for(draining, 5)
        assert await _state(client, "ann") == "wrap_up"
