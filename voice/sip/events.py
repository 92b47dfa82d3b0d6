"""Events the SIP core hands to the application (frozen, keyword-only, as in h11)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from voice.sip.register import Registration
    from voice.sip.session import InboundCall


@dataclass(frozen=True, kw_only=True)
class Event:
    pass


@dataclass(frozen=True, kw_only=True)
class IncomingCall(Event):
    """A new INVITE passed every check; answer, ring or reject it."""

    call: InboundCall


@dataclass(frozen=True, kw_only=True)
class CallConfirmed(Event):
    """The ACK for our 2xx arrived (its body is the answer when the INVITE had no offer)."""

    call: InboundCall
    body: bytes


@dataclass(frozen=True, kw_only=True)
class CallEnded(Event):
    """The call is over: reason is bye, cancel, no_ack, local, rejected, transferred or error."""

    call: InboundCall
    reason: str


@dataclass(frozen=True, kw_only=True)
class ReInvite(Event):
    """A re-INVITE (hold, unhold, new media): call `call.answer_reinvite()` or `reject_reinvite()`."""

    call: InboundCall
    offer: bytes


@dataclass(frozen=True, kw_only=True)
class DtmfInfo(Event):
    """A key press sent as SIP INFO (application/dtmf-relay)."""

    call: InboundCall
    digit: str
    duration_ms: int


@dataclass(frozen=True, kw_only=True)
class TransferProgress(Event):
    """Progress of a REFER we sent: status is the SIP code (202 accepted, 200 done, >=300 failed)."""

    call: InboundCall
    status: int
    final: bool


@dataclass(frozen=True, kw_only=True)
class RegistrationChanged(Event):
    registration: Registration
    registered: bool
    status: int | None
    expires: int
