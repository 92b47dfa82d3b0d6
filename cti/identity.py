"""Identity normalization: one canonical spelling per phone number, email, account and CRM id.

Two spellings of the same number must land on the same customer, so every identity is
normalized before it is stored or looked up: phones to E.164 (RFC 3966 `tel:` and
RFC 3261 `sip:` URIs and caller-ID display forms accepted), emails case-folded.
"""

from __future__ import annotations

import functools
import re

import phonenumbers

IDENTITY_KINDS = ("phone", "email", "account", "external_id")

# `"Alice" <sip:+15551234567@host;user=phone>` or `Alice <tel:+1-555-123-4567>`: take what is inside <>.
_ANGLE = re.compile(r"<([^<>]*)>")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class IdentityError(ValueError):
    """An identity value that cannot be normalized; the message says why."""


@functools.lru_cache(maxsize=8192)
def normalize_phone(raw: str, default_country: str = "US") -> str:
    """Return the E.164 form (`+15551234567`) of a phone number, URI or caller ID.

    Cached: phonenumbers' parse costs more than the rest of an ingest request, and the same
    callers come back (errors raise, and are not cached).
    """
    text = raw.strip()
    m = _ANGLE.search(text)
    if m:
        text = m.group(1).strip()
    lower = text.lower()
    if lower.startswith(("sip:", "sips:")):
        # RFC 3261 19.1.1: sip:user@host;params — the number is the user part.
        text = text.split(":", 1)[1]
        text = text.split("@", 1)[0].split(";", 1)[0]
    elif lower.startswith("tel:"):
        # RFC 3966 3: tel:+1-201-555-0123;ext=1234 — visual separators allowed, params after ';'.
        text = text[4:].split(";", 1)[0]
    text = text.strip()
    if not text or not re.fullmatch(r"[+0-9()\-.\s/]+", text):
        raise IdentityError(f"not a phone number: {raw!r}")
    if text.startswith("00"):  # international prefix used in most of the world
        text = "+" + text[2:]
    try:
        number = phonenumbers.parse(text, None if text.startswith("+") else default_country)
    except phonenumbers.NumberParseException as exc:
        raise IdentityError(f"not a phone number: {raw!r} ({exc})") from None
    if not phonenumbers.is_possible_number(number):
        raise IdentityError(f"not a possible phone number: {raw!r}")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalize_email(raw: str) -> str:
    text = raw.strip()
    if text.lower().startswith("mailto:"):
        text = text[7:]
    if len(text) > 320 or not _EMAIL.match(text):
        raise IdentityError(f"not an email address: {raw!r}")
    return text.casefold()


def normalize_token(raw: str, what: str, max_len: int = 200) -> str:
    text = raw.strip()
    if not text:
        raise IdentityError(f"{what} must not be empty")
    if len(text) > max_len:
        raise IdentityError(f"{what} is longer than {max_len} characters")
    return text


def normalize_identity(kind: str, raw: str, default_country: str = "US") -> str:
    """Normalize one identity of the given kind (one of IDENTITY_KINDS)."""
    if kind == "phone":
        return normalize_phone(raw, default_country)
    if kind == "email":
        return normalize_email(raw)
    if kind in ("account", "external_id"):
        return normalize_token(raw, kind)
    raise IdentityError(f"unknown identity kind {kind!r}")
