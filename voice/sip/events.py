"""Events the SIP core hands to the application (frozen, keyword-only, as in h11)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from voice.sip.outbound import OutboundCall
    from voice.sip.register import Registration
    from voice.sip.session import DialogCall, InboundCall


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

    call: DialogCall
    body: bytes


@dataclass(frozen=True, kw_only=True)
class CallEnded(Event):
    """The call is over: reason is bye, cancel, no_ack, local, rejected, transferred or error.

    For an OutboundCall only once it was answered; before that its end is OutboundFailed."""

    call: DialogCall  # InboundCall or OutboundCall
    reason: str


@dataclass(frozen=True, kw_only=True)
class ReInvite(Event):
    """A re-INVITE (hold, unhold, new media): call `call.answer_reinvite()` or `reject_reinvite()`."""

    call: DialogCall  # InboundCall or OutboundCall
    offer: bytes


@dataclass(frozen=True, kw_only=True)
class DtmfInfo(Event):
    """A key press sent as SIP INFO (application/dtmf-relay)."""

    call: DialogCall  # InboundCall or OutboundCall
    digit: str
    duration_ms: int


@dataclass(frozen=True, kw_only=True)
class TransferProgress(Event):
    """Progress of a REFER we sent: status is the SIP code (202 accepted, 200 done, >=300 failed)."""

    call: DialogCall  # InboundCall or OutboundCall
    status: int
    final: bool


@dataclass(frozen=True, kw_only=True)
class RegistrationChanged(Event):
    registration: Registration
    registered: bool
    status: int | None
    expires: int


@dataclass(frozen=True, kw_only=True)
class OutboundRinging(Event):
    """A provisional response (180 Ringing, 183 Session Progress...) to an INVITE we sent."""

    call: OutboundCall
    status: int
    body: bytes  # early media SDP (183), often empty


@dataclass(frozen=True, kw_only=True)
class OutboundAnswered(Event):
    """The callee answered (2xx, ACKed): body is the SDP answer to our offer."""

    call: OutboundCall
    body: bytes


@dataclass(frozen=True, kw_only=True)
class OutboundFailed(Event):
    """An INVITE we sent ended without a dialog: status is the final response (408 on timeout,
    487 after our CANCEL); the call's only end event."""

    call: OutboundCall
    status: int
    reason: str
