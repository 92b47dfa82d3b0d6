"""Identity normalization: every spelling of a number lands on one E.164 value."""

from __future__ import annotations

import pytest

from cti.identity import IdentityError, normalize_email, normalize_identity, normalize_phone


@pytest.mark.parametrize(
    ("raw", "country", "expected"),
    [
        ("+1 (555) 123-4567", "US", "+15551234567"),
        ("(555) 123-4567", "US", "+15551234567"),
        ('"Alice" <sip:+15551234567@pbx.example.com;user=phone>', "US", "+15551234567"),
        ("Alice <tel:+1-555-123-4567;ext=12>", "US", "+15551234567"),
        ("sip:0301234567@pbx", "DE", "+49301234567"),
        ("sips:+442079460958@host:5061", "US", "+442079460958"),
        ("tel:030-1234567", "DE", "+49301234567"),
        ("0049 30 1234567", "US", "+49301234567"),
        ("030 1234567", "DE", "+49301234567"),
    ],
)
def test_phone_forms_normalize_to_e164(raw: str, country: str, expected: str) -> None:
    assert normalize_phone(raw, country) == expected


@pytest.mark.parametrize(
    "raw", ["", "anonymous", "sip:anonymous@anonymous.invalid", "12", "+1 555 abc", "<>"])
def test_non_numbers_are_rejected(raw: str) -> None:
    with pytest.raises(IdentityError):
        normalize_phone(raw, "US")


def test_email_is_case_folded_and_checked() -> None:
    assert normalize_email("  Anna.Schmidt@Example.COM ") == "anna.schmidt@example.com"
    assert normalize_email("mailto:BOB@example.org") == "bob@example.org"
    with pytest.raises(IdentityError):
        normalize_email("not-an-email")


def test_account_and_external_id_are_trimmed_tokens() -> None:
    assert normalize_identity("account", "  A-1001 ") == "A-1001"
    with pytest.raises(IdentityError):
        normalize_identity("external_id", "   ")
    with pytest.raises(IdentityError):
        normalize_identity("shoe_size", "44")
