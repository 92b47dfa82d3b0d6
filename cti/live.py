"""Live calls on this node, as the admin page and screen pops see them.

The service registers a call when it is answered, under the call's unique key (`CallView.key`:
dialog + node; the SIP Call-ID alone may repeat), hands `ivr_hook(key)` to the flow interpreter as
its `on_event`, and removes the call when it ends. The hook keeps the current node, the path and
the inputs (already masked by the interpreter when sensitive).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

MAX_PATH = 200  # a looping menu must not grow the entry without bound


@dataclass(kw_only=True)
class LiveCall:
    key: str  # CallView.key
    call_id: str  # the SIP Call-ID, as the admin page shows it
    caller: str
    caller_name: str | None = None
    dialled: str = ""
    flow: str | None = None
    node: str | None = None
    started: float = field(default_factory=time.time)
    interaction_id: str | None = None
    path: list[str] = field(default_factory=list)
    inputs: list[dict[str, Any]] = field(default_factory=list)
    queue: str | None = None
    agent_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "call_id": self.call_id, "caller": self.caller,
                "caller_name": self.caller_name, "dialled": self.dialled, "flow": self.flow,
                "node": self.node, "started": self.started, "interaction_id": self.interaction_id,
                "queue": self.queue, "agent_id": self.agent_id}


class LiveCalls:
    def __init__(self) -> None:
        self.calls: dict[str, LiveCall] = {}

    def add(self, key: str, *, caller: str, call_id: str | None = None, caller_name: str | None = None,
            dialled: str = "", flow: str | None = None, interaction_id: str | None = None,
            started: float | None = None) -> LiveCall:
        """`key`: the call's unique key; `call_id`: its SIP Call-ID (default: the key)."""
        entry = LiveCall(key=key, call_id=call_id or key, caller=caller, caller_name=caller_name,
                         dialled=dialled, flow=flow, interaction_id=interaction_id,
                         started=time.time() if started is None else started)
        self.calls[key] = entry
        return entry

    def update(self, key: str, **fields: Any) -> None:
        entry = self.calls.get(key)
        if entry is not None:
            for key, value in fields.items():
                setattr(entry, key, value)

    def remove(self, key: str) -> None:
        self.calls.pop(key, None)

    def get(self, key: str) -> LiveCall | None:
        return self.calls.get(key)

    def ivr_hook(self, key: str) -> Callable[[str, dict[str, Any]], None]:
        """An `on_event` for FlowInterpreter: follows the node, path and inputs of the call."""

        def on_event(kind: str, data: dict[str, Any]) -> None:
            entry = self.calls.get(key)
            if entry is None:
                return
            if kind == "node":
                entry.node = data.get("node")
                entry.flow = entry.flow or data.get("flow")
                if len(entry.path) < MAX_PATH:
                    entry.path.append(str(data.get("node")))
            elif kind == "input" and len(entry.inputs) < MAX_PATH:
                entry.inputs.append({k: data.get(k) for k in ("node", "kind", "var", "value", "status")
                                     if k in data})
            elif kind == "end":
                entry.node = None

        return on_event

    def snapshot(self) -> list[dict[str, Any]]:
        return [c.to_json() for c in sorted(self.calls.values(), key=lambda c: c.started)]
