"""Turning engine text into a flow answer: normalization and grammar-option matching."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

_PUNCT = re.compile(r"[^\w\s']|_", re.UNICODE)


def normalize(text: str) -> str:
    """Lowercase, strip punctuation, collapse spaces (NFC first so Hangul compares equal)."""
    text = unicodedata.normalize("NFC", text).lower()
    return " ".join(t for t in (t.strip("'") for t in _PUNCT.sub(" ", text).split()) if t)


def option_words(option: str) -> list[str]:
    return normalize(option).split()


@dataclass(frozen=True, kw_only=True)
class OptionMatch:
    option: str  # the flow's option, as the flow spelled it
    first_word: int  # index in the hypothesis words
    n_words: int


def match_option(words: Sequence[str], options: Sequence[str]) -> OptionMatch | None:
    """The one option the hypothesis contains as a contiguous phrase, allowing extra words around it.

    Options found only inside a longer found option ("one" inside "one two") do not count.
    Two different options both present is ambiguous: no match, so the flow can re-ask. So is
    an option beside a word of another one: "billing inquiry" heard as "billing yes" (options
    "billing inquiry" and "yes") is not a yes, and routing the caller on it would be a guess.
    """
    hyp = [normalize(w) for w in words]
    hyp = [w for w in hyp if w]
    found: list[OptionMatch] = []
    for option in options:
        ow = option_words(option)
        if not ow:
            continue
        for i in range(len(hyp) - len(ow) + 1):
            if hyp[i : i + len(ow)] == ow:
                found.append(OptionMatch(option=option, first_word=i, n_words=len(ow)))
                break
    # drop matches whose span lies inside a longer match's span
    kept = [
        m
        for m in found
        if not any(
            o is not m
            and o.n_words > m.n_words
            and o.first_word <= m.first_word
            and m.first_word + m.n_words <= o.first_word + o.n_words
            for o in found
        )
    ]
    distinct = {normalize(m.option) for m in kept}
    if len(distinct) != 1:
        return None
    best = max(kept, key=lambda m: m.n_words)
    own = set(option_words(best.option))
    others = {w for o in options for w in option_words(o)} - own
    extra = hyp[: best.first_word] + hyp[best.first_word + best.n_words :]
    if any(w in others for w in extra):
        return None
    return best


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance between two strings (letters inserted, deleted or replaced)."""
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[len(b)]
