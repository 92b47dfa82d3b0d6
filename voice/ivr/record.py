"""What every call leaves behind: path, inputs, prompts, how it ended (sensitive values masked)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

ENDINGS = ("caller_hangup", "hangup", "transfer", "error")


@dataclass(kw_only=True)
class CallRecord:
    call_id: str
    caller: str
    dialled: str
    flow: str
    started_at: float = field(default_factory=time.time)
    path: list[dict[str, Any]] = field(default_factory=list)  # {"flow", "node", "t"}
    inputs: list[dict[str, Any]] = field(default_factory=list)  # {"node", "kind", "value", "status", "t"}
    prompts: list[dict[str, Any]] = field(default_factory=list)  # {"node", "text"|"file", "t", ...}
    ended: str = ""  # one of ENDINGS
    transfer_target: str | None = None
    transfers_failed: list[str] = field(default_factory=list)
    recordings: list[str] = field(default_factory=list)
    variables: dict[str, Any] = field(default_factory=dict)  # non-sensitive subset, set at the end
    error: str | None = None
    duration: float = 0.0

    @property
    def nodes(self) -> list[str]:
        return [p["node"] for p in self.path]

    def log_fields(self, interaction_id: str | None = None) -> dict[str, Any]:
        """What the per-call log line carries: ids, the path, inputs as recorded (sensitive ones
        already masked), how it ended. Never the caller's number, the prompts (they may say the
        customer's name or balance) or the variables (they hold the looked-up customer record)."""
        return {
            "call_id": self.call_id,
            "interaction_id": interaction_id,
            "flow": self.flow,
            "node": self.path[-1]["node"] if self.path else None,
            "dialled": self.dialled,
            "duration": round(self.duration, 3),
            "ended": self.ended,
            "transfer_target": self.transfer_target,
            "transfers_failed": list(self.transfers_failed),
            "path": [p["node"] for p in self.path],
            "inputs": [{k: i.get(k) for k in ("node", "kind", "value", "status") if k in i}
                       for i in self.inputs],
            "recordings": len(self.recordings),
            "error": self.error,
        }

    def to_json(self) -> dict[str, Any]:
        out = {
            "call_id": self.call_id,
            "caller": self.caller,
            "dialled": self.dialled,
            "flow": self.flow,
            "started_at": round(self.started_at, 3),
            "duration": round(self.duration, 3),
            "ended": self.ended,
            "transfer_target": self.transfer_target,
            "transfers_failed": self.transfers_failed,
            "path": self.path,
            "inputs": self.inputs,
            "prompts": self.prompts,
            "recordings": self.recordings,
            "variables": self.variables,
            "error": self.error,
        }
        # round-trip so the result is plain JSON whatever a lookup or HTTP call put into variables
        result: dict[str, Any] = json.loads(json.dumps(out, default=str))
        return result
