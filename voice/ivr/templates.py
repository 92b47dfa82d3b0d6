"""Prompt text with variables: "Hello {customer.name}, you owe {balance|money}."

`{expression|filter|filter}`; `{{` and `}}` are literal braces. Filters shape values for
speech: money, digits, spell, number, phone, upper, lower. A value read from a sensitive
variable is masked in the text kept for logs and transcripts.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from voice.ivr.expr import Expr, ExprError

MASK = "****"


class FilterError(ValueError):
    """A filter was given a value it cannot say (e.g. `|money` on text): the flow fails there
    instead of reading "abc dollars" to the caller."""


def money(value: Any, currency: str = "dollar") -> str:
    """42.5 -> '42 dollars and 50 cents'; 1 -> '1 dollar'; 0.05 -> '5 cents'; '' -> ''.

    Anything that is not a finite number (text, a boolean, NaN) raises FilterError."""
    if value is None or value == "":
        return ""
    if isinstance(value, bool):
        raise FilterError(f"money: {value!r} is not a number")
    try:
        amount = Decimal(str(value).strip())
        if not amount.is_finite():
            raise InvalidOperation
        amount = amount.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    except (InvalidOperation, ValueError):
        raise FilterError(f"money: {str(value)[:40]!r} is not a number") from None
    sign = "minus " if amount < 0 else ""
    amount = abs(amount)
    whole, cents = int(amount), int((amount - int(amount)) * 100)
    unit = currency if whole == 1 else currency + "s"
    cent_word = "cent" if cents == 1 else "cents"
    if whole and cents:
        return f"{sign}{whole} {unit} and {cents} {cent_word}"
    if cents:
        return f"{sign}{cents} {cent_word}"
    return f"{sign}{whole} {unit}"


def digits(value: Any) -> str:
    """'1234' -> '1 2 3 4' (read one by one); `#` and `*` spoken as words."""
    names = {"#": "pound", "*": "star"}
    return " ".join(names.get(c, c) for c in str(value) if not c.isspace())


def spell(value: Any) -> str:
    return " ".join(c for c in str(value) if not c.isspace())


def number(value: Any) -> str:
    try:
        d = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return str(value)
    return f"{d.normalize():f}"


def phone(value: Any) -> str:
    """'+15550100' -> '1 5 5 5, 0 1 0 0': digits in small groups so TTS pauses."""
    ds = [c for c in str(value) if c.isdigit()]
    groups = [ds[max(0, i - 4) : i] for i in range(len(ds), 0, -4)][::-1]
    return ", ".join(" ".join(g) for g in groups)


FILTERS: dict[str, Callable[[Any], str]] = {
    "money": money,
    "digits": digits,
    "spell": spell,
    "number": number,
    "phone": phone,
    "upper": lambda v: str(v).upper(),
    "lower": lambda v: str(v).lower(),
}


class TemplateError(Exception):
    pass


_FIELD = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
_FILTER_TAIL = re.compile(r"\|\s*([A-Za-z_]\w*)\s*$")


class Template:
    """A parsed text template; `static` is True when it has no fields (render once at load)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.parts: list[str | tuple[Expr, list[str]]] = []
        pos = 0
        literal: list[str] = []
        for m in _FIELD.finditer(source):
            literal.append(source[pos : m.start()])
            pos = m.end()
            tok = m.group(0)
            if tok in ("{{", "}}"):
                literal.append(tok[0])
                continue
            if m.group(1) is None:
                raise TemplateError(f"unbalanced {tok!r} in text (write {tok}{tok} for a literal brace)")
            inner = m.group(1)
            filters: list[str] = []
            while (fm := _FILTER_TAIL.search(inner)) is not None:
                filters.insert(0, fm.group(1))
                inner = inner[: fm.start()]
            for f in filters:
                if f not in FILTERS:
                    raise TemplateError(f"unknown filter {f!r} (known: {', '.join(sorted(FILTERS))})")
            if not inner.strip():
                raise TemplateError("empty {} field")
            try:
                expr = Expr(inner)
            except ExprError as exc:
                raise TemplateError(f"in {{{m.group(1)}}}: {exc}") from None
            if literal:
                self.parts.append("".join(literal))
                literal = []
            self.parts.append((expr, filters))
        literal.append(source[pos:])
        if "".join(literal):
            self.parts.append("".join(literal))
        self.static = all(isinstance(p, str) for p in self.parts)
        self.names: set[str] = set()
        for p in self.parts:
            if not isinstance(p, str):
                self.names |= p[0].names

    def render(self, variables: Mapping[str, Any], sensitive: Collection[str] = (),
               functions: Mapping[str, Callable[..., Any]] | None = None) -> tuple[str, str]:
        """Returns (text to speak, text safe for logs: sensitive values masked). `functions`
        binds the service functions (`open`, `opening_hours`)."""
        spoken: list[str] = []
        shown: list[str] = []
        for p in self.parts:
            if isinstance(p, str):
                spoken.append(p)
                shown.append(p)
                continue
            expr, filters = p
            try:
                value = expr.evaluate(variables, functions)
            except ExprError:
                value = None
            text = "" if value is None else value
            for f in filters:
                text = FILTERS[f](text)
            spoken.append(str(text))
            shown.append(MASK if expr.names & set(sensitive) else str(text))
        return "".join(spoken), "".join(shown)
