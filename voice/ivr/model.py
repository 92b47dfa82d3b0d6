"""Typed records a flow file is parsed into, and the validation error type."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voice.ivr.expr import Expr
from voice.ivr.templates import Template

BUILTIN_VARS = frozenset({"caller", "caller_name", "dialled", "call_id", "flow", "last_node", "now"})


@dataclass(frozen=True, kw_only=True)
class FlowError:
    """One problem in a flow file, phrased for the admin who wrote it."""

    file: str
    line: int
    node: str | None
    kind: str  # e.g. unknown_action, unknown_node, unreachable, missing_prompt, bad_regex, no_input_path
    message: str
    expected: str | None = None
    found: str | None = None
    hint: str | None = None  # nearest valid name

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:"
        if self.node:
            where += f" node {self.node!r}:"
        text = f"{where} {self.message}"
        if self.expected is not None:
            text += f"; expected {self.expected}"
        if self.found is not None:
            text += f", found {self.found}" if self.expected is not None else f"; found {self.found}"
        if self.hint:
            text += f" (did you mean {self.hint!r}?)"
        return text

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass(frozen=True, kw_only=True)
class PromptItem:
    kind: str  # "say" | "play" | "silence"
    text: Template | None = None
    file: str | None = None
    seconds: float = 0.0
    dtmf_barge_in: bool | None = None  # None: the node's / flow's setting
    speech_barge_in: bool | None = None


Prompt = tuple[PromptItem, ...]


@dataclass(frozen=True, kw_only=True)
class MenuOption:
    dtmf: tuple[str, ...]
    words: tuple[str, ...]
    goto: str
    when: Expr | None
    value: str
    line: int


@dataclass(frozen=True, kw_only=True)
class Settings:
    timeout: float = 5.0
    attempts: int = 3
    inter_digit_timeout: float = 3.0
    dtmf_barge_in: bool = True
    speech_barge_in: bool = True
    sorry: Prompt = ()


@dataclass(frozen=True, kw_only=True)
class Node:
    name: str
    action: str
    args: dict[str, Any]
    next: str | None = None
    when: Expr | None = None
    otherwise: str | None = None  # `else:` target when `when` is false
    line: int = 0


@dataclass(frozen=True, kw_only=True)
class Flow:
    name: str
    path: Path
    start: str
    nodes: dict[str, Node]
    variables: dict[str, Any] = field(default_factory=dict)
    settings: Settings = Settings()
    description: str = ""
    subflows: dict[str, Flow] = field(default_factory=dict)  # linked by FlowLibrary
    sensitive: frozenset[str] = frozenset()
    mtime: float = 0.0
    # recorded while parsing, for the library-wide checks
    calls: tuple[tuple[str, str, int], ...] = ()  # (node, sub-flow name, line)
    assigned: frozenset[str] = frozenset()
    reads: tuple[tuple[str, str, int], ...] = ()  # (node, variable, line)

    def prompts(self) -> list[PromptItem]:
        """Every prompt item in the flow (for pre-rendering static text at load)."""
        out: list[PromptItem] = []

        def walk(value: Any) -> None:
            if isinstance(value, PromptItem):
                out.append(value)
            elif isinstance(value, (list, tuple)):
                for v in value:
                    walk(v)
            elif isinstance(value, dict):
                for v in value.values():
                    walk(v)

        for node in self.nodes.values():
            walk(node.args)
        walk(self.settings.sorry)
        return out
