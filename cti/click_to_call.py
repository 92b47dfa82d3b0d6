"""Click-to-call: the signed-in agent calls a customer from the agent page.

Rules (the whole contract):
- `place(agent_id, number=..., customer_id=...)` answers at once; what follows runs in the
  background. The number is the one given, else the customer's first phone; either way it is
  normalized (cti.identity) and a bad one is refused naming the field. A number alone goes to
  the customer who owns it, when there is one.
- Only an `available` agent can place a call: the desk's compare-and-set (available -> ringing,
  keyed `click:<id>`) reserves them, so no queue call or callback is offered to them meanwhile;
  an agent in any other state (or one taken by a caller a moment before) is refused (`AgentBusy`).
- The agent's own phone rings first (`OutboundDialer.ring_agent`: their SIP phone, or their
  browser softphone for browser:ID; display "Call NAME") with a
  screen pop of the customer; not answered in the queues' ring time: the agent is available
  again (in the place they had), nobody was called. Answered: on_call, the customer's number is
  dialled through the trunk (`call_customer`) and bridged; the call is recorded like any other
  (a voice interaction, direction outbound, on the customer's timeline, metadata agent_id and
  click_to_call). After an answered agent leg the agent wraps up (as after any call).
- SIGTERM (`drain`): no new calls (503), those in progress may end; `close` cancels the rest.
- Every step is told to the agent's page: {"type": "outbound", "call_id", "state", "message"}
  with state ringing_agent, dialing, talking, agent_missed, not_reached, ended or failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any

from cti.agents import AgentNotFound
from cti.identity import IdentityError, normalize_phone
from cti.lookup import lookup
from cti.ports import CustomerNumber, OutboundDialer, OutboundLeg
from cti.queues import AgentState

if TYPE_CHECKING:
    from cti.routing import AgentDesk

log = logging.getLogger("cti.click_to_call")

PREFIX = "click:"
_RECENT_FIELDS = ("id", "channel", "direction", "started_at", "subject", "summary", "disposition")


class ClickToCallError(Exception):
    """A call that cannot be placed; `status` and `field` are the API's answer."""

    status = 422

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class BadNumber(ClickToCallError):
    status = 422


class UnknownCustomer(ClickToCallError):
    status = 404


class AgentBusy(ClickToCallError):
    status = 409


class NoDialer(ClickToCallError):
    status = 503


class ClickToCall:
    """This node's agent-placed calls, beside the `AgentDesk` whose agents it reserves."""

    def __init__(self, desk: AgentDesk, dialer: OutboundDialer | None, *, agent_ring_timeout: float = 20.0,
                 customer_ring_timeout: float = 30.0) -> None:
        self.desk = desk
        self.dialer = dialer
        self.agent_ring_timeout = agent_ring_timeout
        self.customer_ring_timeout = customer_ring_timeout
        self.calls: dict[str, asyncio.Task[None]] = {}  # call key -> its task
        self.draining = False

    async def drain(self, timeout: float) -> None:
        """SIGTERM: place no new calls (503); let those in progress end for up to `timeout` s."""
        self.draining = True
        tasks = list(self.calls.values())
        if tasks:
            log.info("draining: %d agent calls in progress, up to %.0f s", len(tasks), timeout)
            await asyncio.wait(tasks, timeout=timeout)

    async def close(self) -> None:
        tasks = list(self.calls.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)

    # ---- the request ---------------------------------------------------------------------
    async def place(self, agent_id: str, *, number: str | None = None,
                    customer_id: str | None = None) -> dict[str, Any]:
        """Check, reserve the agent and start the call; {"call_id", "number", "customer_id"}."""
        store = self.desk.store
        customer: dict[str, Any] | None = None
        if customer_id is not None:
            customer = await store.get_customer(customer_id)
            if customer is None:
                raise UnknownCustomer("customer_id", "no such customer")
        raw = number if number is not None else next(iter((customer or {}).get("phones") or []), None)
        if raw is None:
            raise BadNumber("customer_id", "this customer has no phone number")
        field = "number" if number is not None else "customer_id"
        try:
            phone = normalize_phone(raw, store.default_country)
        except IdentityError as exc:
            raise BadNumber(field, str(exc)) from None
        if customer is None:
            found = await store.find_customer_id("phone", phone)
            customer = await store.get_customer(found) if found is not None else None
        agent = await self.desk.agents.get_agent(agent_id)
        if agent is None:
            raise AgentBusy("agent", "no such agent")
        if agent["state"] != AgentState.AVAILABLE.value:
            raise AgentBusy("state", f"you are {agent['state'].replace('_', ' ')}: only an available "
                                     "agent can place a call")
        if self.dialer is None:
            raise NoDialer("number", "this node places no outbound calls")
        if self.draining:
            raise NoDialer("number", "this node is stopping: try again in a moment")
        key = PREFIX + uuid.uuid4().hex
        if not await self.desk.agents.reserve(agent_id, key):
            raise AgentBusy("state", "a call was offered to you a moment ago")
        since = self._since(agent_id)
        await self.desk._state_changed(agent_id, AgentState.RINGING, since, key)
        task = asyncio.ensure_future(self._run(key, agent, phone, customer))
        self.calls[key] = task
        task.add_done_callback(lambda _t: self.calls.pop(key, None))
        log.info("agent %s places call %s", agent_id, key)
        return {"call_id": key, "number": phone, "customer_id": customer["id"] if customer else None}

    def _since(self, agent_id: str) -> float:
        slot = self.desk.engine.agents.get(agent_id)
        return slot.since if slot is not None else time.time()

    # ---- the call ------------------------------------------------------------------------
    async def _tell(self, agent_id: str, key: str, state: str, message: str,
                    interaction_id: str | None = None) -> None:
        await self.desk.bus.publish(agent_id, {"type": "outbound", "agent_id": agent_id, "call_id": key,
                                               "state": state, "message": message,
                                               "interaction_id": interaction_id, "at": time.time()})

    def _record(self, agent_id: str, key: str, interaction_id: str | None) -> None:
        """The customer answered: the pop a reloaded page gets names the call's record (for notes)."""
        pop = self.desk._pops.get(agent_id)
        if pop is not None and pop.get("call_id") == key:
            pop["interaction_id"] = interaction_id

    async def _free(self, agent_id: str, key: str) -> None:
        """ringing for this call -> available in the place the agent had (if still ringing for it);
        every node and the page hear the agent's state as it now is."""
        desk = self.desk
        await desk.agents.release(agent_id, key, AgentState.AVAILABLE, keep_since=True)
        now = await desk.agents.get_agent(agent_id)
        if now is not None and now["state"] == AgentState.AVAILABLE.value and now["call_id"] is None:
            since = datetime.fromisoformat(now["state_since"]).timestamp()
            await desk._state_changed(agent_id, AgentState.AVAILABLE, since, None)

    async def _run(self, key: str, agent: dict[str, Any], phone: str,
                   customer: dict[str, Any] | None) -> None:
        desk, agent_id = self.desk, agent["id"]
        assert self.dialer is not None
        who = (customer or {}).get("name") or phone
        leg: OutboundLeg | None = None
        freed = talked = False
        try:
            await self._tell(agent_id, key, "ringing_agent", f"Your phone rings: answer it to call {who}")
            ring = asyncio.ensure_future(self.dialer.ring_agent(
                agent["sip_uri"], timeout=self.agent_ring_timeout, display=f"Call {who}"[:60]))
            try:  # the pop is built and sent while the agent's phone rings
                await desk.publish_screen_pop(agent_id, await self.screen_pop(key, agent_id, phone, customer))
            except Exception:
                log.exception("call %s: no screen pop for agent %s", key, agent_id)
            try:
                leg = await ring
            except asyncio.CancelledError:
                ring.cancel()
                raise
            if not leg.answered:
                freed = True
                await self._free(agent_id, key)
                await self._tell(agent_id, key, "agent_missed",
                                 f"Your phone did not answer ({leg.status or '-'} {leg.reason}".rstrip()
                                 + f"): {who} was not called")
                return
            since = await desk.agents.accept(agent_id, key)
            if since is None:  # moved on meanwhile (Away pressed on the page): their state stays
                leg.hangup()
                await self._tell(agent_id, key, "failed",
                                 f"You are no longer available: {who} was not called")
                return
            talked = True
            await desk._state_changed(agent_id, AgentState.ON_CALL, since.timestamp(), key)
            await self._tell(agent_id, key, "dialing", f"Calling {who} ({phone})")
            target = CustomerNumber(number=phone, customer_id=(customer or {}).get("id"),
                                    name=(customer or {}).get("name"),
                                    metadata={"agent_id": agent_id, "click_to_call": key})
            conn = await self.dialer.call_customer(leg, target, timeout=self.customer_ring_timeout)
            if not conn.answered:
                leg.hangup()
                await self._tell(agent_id, key, "not_reached",
                                 f"{who} was not reached ({conn.status or '-'} {conn.reason})")
                return
            self._record(agent_id, key, conn.interaction_id)
            await self._tell(agent_id, key, "talking", f"Talking to {who}", conn.interaction_id)
            end = await conn.wait_finished()
            await self._tell(agent_id, key, "ended", f"Call with {who} ended: {end.hangup_by} hung up "
                             f"after {end.talk_seconds:.0f} s", conn.interaction_id)
        except asyncio.CancelledError:
            if leg is not None:
                leg.hangup()
            raise
        except Exception as exc:
            log.exception("call %s: placing it failed", key)
            if leg is not None:
                leg.hangup()
            with contextlib.suppress(Exception):
                await self._tell(agent_id, key, "failed", f"The call failed: {type(exc).__name__}")
        finally:
            if leg is None or not leg.answered:  # never rang through: free again if still reserved
                with contextlib.suppress(Exception):
                    if not freed:
                        await self._free(agent_id, key)
            elif talked:
                with contextlib.suppress(AgentNotFound):
                    await desk.set_agent_state(agent_id, AgentState.WRAP_UP, key)

    async def screen_pop(self, key: str, agent_id: str, phone: str,
                         customer: dict[str, Any] | None) -> dict[str, Any]:
        """The pop of an outbound call: whom the agent calls, their record and history."""
        recent: list[dict[str, Any]] = []
        if customer is not None:
            recent, _ = await self.desk.store.timeline(customer["id"], limit=self.desk.recent)
        else:
            found = await lookup(self.desk.store, phone=phone, recent=self.desk.recent)
            customer, recent = found["customer"], found["recent_interactions"]
        recent = [{k: i.get(k) for k in _RECENT_FIELDS} for i in recent]
        by_channel: dict[str, dict[str, Any]] = {}
        for item in recent:
            by_channel.setdefault(str(item["channel"]), item)
        name = (customer or {}).get("name")
        text = f"Calling {name or phone}" + (f" ({phone})" if name else "")
        return {
            "type": "screen_pop", "call_id": key, "sip_call_id": None, "interaction_id": None,
            "agent_id": agent_id, "queue": None, "direction": "outbound",
            "caller": {"number": phone, "name": name, "dialled": phone},
            "customer": customer, "found": customer is not None,
            "identified_by": "click_to_call" if customer else None,
            "ivr": {"flow": None, "node": None, "path": [], "inputs": []}, "transcript": [],
            "recent_interactions": recent, "last_by_channel": by_channel,
            "outbound": {"number": phone, "text": text}, "text": text,
        }
