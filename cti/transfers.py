"""Blind transfers an agent makes from the softphone, as the desk runs them.

The agent's leg ends at once with `ConversationEnd.transfer_to` (cti.ports); the desk has already
put that agent in wrap-up (cti.routing AgentDesk._talk) when `blind_transfer` takes the caller on:
- `queue:NAME`: the caller goes back through the queue's routing (`route_to_queue`: waiting,
  music, the next agent's offer with a fresh screen pop), as a flow's `transfer: queue:NAME` does;
- another agent's phone (browser:<agent id>, or the SIP URI an agent has): that agent is reserved
  on the desk like a queue's offer (available -> ringing, compare-and-set; busy: the transfer
  fails), gets a screen pop, is on_call once answered and in wrap-up after;
- anything else (a SIP URI, a number): the connector rings it for `TRANSFER_RING` s while the
  caller hears the queue's music, then bridges the two.
Each transfer is one `AgentTransfer` on the outcome (the record's metadata `transfers` shows them).
If the target cannot be reached, the caller's conversation is over for the flow as if the agent
had hung up: the flow's after-agent branch runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from cti.ports import AgentConnection, CallView
from cti.queues import AgentState
from cti.waiting import CallerHold

if TYPE_CHECKING:
    from cti.routing import AgentDesk, QueueOutcome

log = logging.getLogger("cti.routing")

TRANSFER_RING = 30.0  # seconds a blind transfer's URI or number rings
MAX_TRANSFERS = 8  # per call: a loop of agents handing a caller on ends here
BROWSER = "browser:"


@dataclass(frozen=True, kw_only=True)
class AgentTransfer:
    """One blind transfer from an agent's softphone, and how it went."""

    by_agent: str  # who handed the caller on
    target: str  # queue:NAME (the queue the caller ended in), a URI, a number
    ok: bool  # someone took the caller
    reason: str  # connected, or why not (a queue outcome's reason, the SIP status)
    agent_id: str | None = None  # the agent who took the caller (a queue's, or browser:<id>)
    waited: float = 0.0  # seconds from the transfer to the target answering (or giving up)
    talk_seconds: float = 0.0
    hangup_by: str | None = None


async def blind_transfer(desk: AgentDesk, call: CallView, outcome: QueueOutcome, by_agent: str,
                         target: str) -> QueueOutcome:
    """Take the caller on to `target` after `by_agent` left; returns `outcome` with the transfers
    (this one, then any the next agent made) appended."""
    if len(outcome.transfers) >= MAX_TRANSFERS:
        step = AgentTransfer(by_agent=by_agent, target=target, ok=False, reason="too_many_transfers")
        return replace(outcome, transfers=(*outcome.transfers, step))
    log.info("call %s: agent %s transfers the caller to %s", call.key, by_agent,
             target if target.startswith("queue:") else "another phone")
    started = desk.clock()
    if target.startswith("queue:"):
        nxt = await desk.route_to_queue(call, target.removeprefix("queue:"))
        step = AgentTransfer(by_agent=by_agent, target=f"queue:{nxt.queue}", ok=nxt.ok, reason=nxt.reason,
                             agent_id=nxt.agent_id, waited=nxt.waited, talk_seconds=nxt.talk_seconds or 0.0,
                             hangup_by=nxt.hangup_by)
        return replace(outcome, transfers=(*outcome.transfers, step, *nxt.transfers))
    taker = next((a.id for a in desk.engine.agents.values() if a.sip_uri == target), None)
    if taker is not None and not await _reserve(desk, call, taker):
        step = AgentTransfer(by_agent=by_agent, target=target, ok=False, reason="agent_busy", agent_id=taker)
        return replace(outcome, transfers=(*outcome.transfers, step))
    connection, reason = await _ring(desk, call, target)
    waited = desk.clock() - started
    if connection is None or not connection.answered:
        if taker is not None:  # a direct transfer nobody took is no missed queue call: idle again
            with contextlib.suppress(Exception):
                await desk.set_agent_state(taker, AgentState.AVAILABLE)
        step = AgentTransfer(by_agent=by_agent, target=target, ok=False, reason=reason, waited=waited,
                             agent_id=taker)
        return replace(outcome, transfers=(*outcome.transfers, step))
    if taker is not None:
        await desk.set_agent_state(taker, AgentState.ON_CALL, call.key)
        desk.live.update(call.key, agent_id=taker)
    try:
        end = await connection.wait_finished()
    finally:
        connection.hangup()
        if taker is not None:
            with contextlib.suppress(Exception):
                await desk.set_agent_state(taker, AgentState.WRAP_UP, call.key)
            desk.live.update(call.key, agent_id=None)
    step = AgentTransfer(by_agent=by_agent, target=target, ok=True, reason="connected", agent_id=taker,
                         waited=waited, talk_seconds=end.talk_seconds, hangup_by=end.hangup_by)
    after = replace(outcome, transfers=(*outcome.transfers, step))
    if end.transfer_to and not call.ended:  # a browser agent reached directly hands on again
        return await blind_transfer(desk, call, after, taker or target, end.transfer_to)
    return after


async def _reserve(desk: AgentDesk, call: CallView, agent_id: str) -> bool:
    """available -> ringing for this call (the desk's compare-and-set), with the agent's pop."""
    if not await desk.agents.reserve(agent_id, call.key):
        return False
    await desk.set_agent_state(agent_id, AgentState.RINGING, call.key)
    await desk.publish_screen_pop(agent_id, await desk.build_screen_pop(call, agent_id, None))
    return True


async def _ring(desk: AgentDesk, call: CallView, target: str) -> tuple[AgentConnection | None, str]:
    """Ring `target` while the caller hears music; (the connection, why not when unanswered)."""
    if desk.connector is None:
        return None, "no_connector"
    hold = CallerHold(call, music=desk.music.get(desk.engine.defaults.music), ringback=None, voice=None,
                      announce_interval=0.0)
    hold.start()
    hold.ringing()
    dial = asyncio.ensure_future(desk.connector.connect(call, target, timeout=TRANSFER_RING))
    ended = asyncio.ensure_future(call.wait_ended())
    try:
        done, _ = await asyncio.wait({dial, ended}, timeout=TRANSFER_RING + 5,
                                     return_when=asyncio.FIRST_COMPLETED)
        if dial not in done:
            dial.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await dial
            return None, "abandoned" if call.ended else "timeout"
        try:
            connection = dial.result()
        except Exception as exc:
            log.exception("call %s: ringing the transfer target failed", call.key)
            return None, f"failed ({type(exc).__name__})"
        if connection.answered and call.ended:
            connection.hangup()
            return None, "abandoned"
        if not connection.answered:
            return connection, f"not answered ({connection.status} {connection.reason})".strip()
        return connection, "connected"
    finally:
        ended.cancel()
        await hold.close()
