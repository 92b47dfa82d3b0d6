"""What a surviving node does for a node that stopped heart-beating: one transaction, one survivor.

`claim_lost_node` is the compare-and-set (state up -> lost, only while `beats` is still the
value the survivor watched stand still), so two survivors never both take a node over, and a
node that only paused and beat again is not taken. In the same transaction:
- the lost node's agents are released: an agent ringing for one of its calls goes back to
  available (keeping their place in the idle order), an agent talking on one of its calls goes
  away (their phone may still hold a dead leg; they say when they are back);
- its calls still in progress (idempotency key `call:<node>:`) become `interrupted`.
`announce_released` then tells every node (routers) and the agents' pages, with the reason.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.engine import Connection

from cti import writes
from cti.agents import Agent
from cti.models import Interaction
from cti.nodes_table import NODES
from cti.queues import AgentState

AFTER_RINGING = AgentState.AVAILABLE
AFTER_ON_CALL = AgentState.AWAY


@dataclass(frozen=True, kw_only=True)
class ReleasedAgent:
    agent_id: str
    was: str  # ringing | on_call
    state: str  # available | away
    since: datetime
    call_id: str


@dataclass(frozen=True, kw_only=True)
class Takeover:
    node: str
    by: str
    interrupted: int = 0
    agents: list[ReleasedAgent] = field(default_factory=list)

    @property
    def reason(self) -> str:
        return f"node {self.node} stopped answering; its calls were ended"


def call_key_prefix(node: str) -> str:
    """The idempotency-key prefix of a node's call records (cti.history: `call:<node>:<Call-ID>;...`)."""
    return f"call:{node}:"


def claim_lost_node(conn: Connection, node: str, beats: int, by: str, now: datetime) -> Takeover | None:
    """Take `node` over if it is still `up` with `beats` unchanged; None when another node was
    faster or the node came back."""
    claimed = conn.execute(update(NODES).where(NODES.c.id == node, NODES.c.state == "up",
                                               NODES.c.beats == beats)
                           .values(state="lost", lost_at=now, taken_over_by=by))
    if not claimed.rowcount:
        return None
    prefix = call_key_prefix(node)
    its_calls = (select(Interaction.call_id)
                 .where(Interaction.status == "in_progress", Interaction.channel == "voice",
                        Interaction.call_id.is_not(None),
                        Interaction.idempotency_key.startswith(prefix, autoescape=True))
                 .scalar_subquery())
    # An agent's call_id is the call's key (`<node>:<Call-ID>;<tags>`, what the desk reserves
    # with); a SIP Call-ID of one of the node's calls in progress is matched too.
    rows = conn.execute(select(Agent.id, Agent.state, Agent.call_id, Agent.state_since)
                        .where(Agent.state.in_([AgentState.RINGING.value, AgentState.ON_CALL.value]),
                               or_(Agent.call_id.startswith(f"{node}:", autoescape=True),
                                   Agent.call_id.in_(its_calls)))).all()
    released: list[ReleasedAgent] = []
    for agent_id, state, call_id, since in rows:
        after = AFTER_RINGING if state == AgentState.RINGING.value else AFTER_ON_CALL
        # ringing keeps its place in the idle order (as cti.agents.release does); away starts now
        new_since = since if after is AgentState.AVAILABLE else now
        done = conn.execute(update(Agent).where(Agent.id == agent_id, Agent.state == state,
                                                Agent.call_id == call_id)
                            .values(state=after.value, state_since=new_since, call_id=None))
        if done.rowcount:
            released.append(ReleasedAgent(agent_id=agent_id, was=state, state=after.value,
                                          since=new_since, call_id=str(call_id)))
    interrupted = writes.mark_interrupted(conn, "voice", prefix)
    return Takeover(node=node, by=by, interrupted=interrupted, agents=released)


async def announce_released(bus: Any, takeover: Takeover) -> None:
    """Every node's router and the agent's page hear the new state (the desk's `state` event, as
    cti.routing publishes it) and why (`released`)."""
    for agent in takeover.agents:
        at = time.time()
        await bus.publish(agent.agent_id, {
            "type": "state", "agent_id": agent.agent_id, "state": agent.state,
            "since": agent.since.timestamp(), "call_id": None, "at": at, "reason": takeover.reason})
        await bus.publish(agent.agent_id, {
            "type": "released", "agent_id": agent.agent_id, "call_id": agent.call_id, "was": agent.was,
            "state": agent.state, "node": takeover.node, "by": takeover.by, "reason": takeover.reason})
