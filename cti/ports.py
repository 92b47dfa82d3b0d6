"""What the contact-center side needs from call control, declared here so cti imports nothing
from voice. The call-control package (voice/callcontrol) implements these structurally.

- `CallView`: a live call as the desk sees it (who is calling, what the IVR learned, play audio
  to the caller while waiting, wait for the end). Its awaits never raise when the caller hangs
  up: `play` returns False and `wait_ended` returns the cause.
- `AgentConnector`: ring an agent's URI for a call and, once answered, bridge the two; the
  returned `AgentConnection` says how the attempt went and, when answered, when and how the
  conversation ended. Cancelling `connect` while the agent's phone rings CANCELs the INVITE.
- `OutboundDialer`: calls the service places itself, not for an inbound caller (callbacks and
  click-to-call): ring an agent's phone first (`ring_agent`), then, while the agent hears
  ringback, the customer's number through the configured trunk (`call_customer`), bridged with
  the agent once answered and recorded like any call (direction outbound).
- `BrowserPhones`: the agents' browser softphones (WebRTC legs), as the agent page's websocket
  drives them: a page attaches its send function; what the page sends (answer, ICE, reject,
  hang up, hold, keys) is handed over as it came, and call control checks it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np


class CallerInfo(Protocol):
    @property
    def call_id(self) -> str: ...
    @property
    def caller(self) -> str: ...
    @property
    def caller_name(self) -> str | None: ...
    @property
    def dialled(self) -> str: ...


class CallView(Protocol):
    """A live call, as the desk (queues, screen pops) sees it."""

    @property
    def info(self) -> CallerInfo: ...

    @property
    def key(self) -> str:
        """The call's unique id on this service (dialog + node); `info.call_id` is the SIP Call-ID."""

    @property
    def interaction_id(self) -> str | None: ...

    @property
    def customer_id(self) -> str | None:
        """The customer the IVR identified (None until then)."""

    @property
    def identified_by(self) -> str | None:
        """How the customer was identified: "caller_id", "account", "email", ... (None until then)."""

    @property
    def transcript(self) -> Sequence[Any]:
        """Transcript segments so far (dataclasses with start, end, speaker, kind, text, ...)."""

    @property
    def ended(self) -> bool: ...

    async def play(self, pcm: np.ndarray, *, dtmf_barge_in: bool = False) -> bool:
        """Play 8 kHz int16 audio to the caller; True when played to the end, False when stopped
        (stop_playback, barge-in) or when the call ended. Never raises for a hang-up."""

    def stop_playback(self) -> None: ...

    async def wait_ended(self) -> str:
        """Until the call is over; returns its cause."""

    async def receive_digit(self, timeout: float | None) -> str | None:
        """The caller's next key (keys pressed earlier first); None after `timeout` s or when the
        call ended. Never raises for a hang-up."""


@dataclass(frozen=True, kw_only=True)
class ConversationEnd:
    """How a bridged conversation between caller and agent ended."""

    hangup_by: str  # "agent" | "caller" | "shutdown"
    talk_seconds: float
    recording: str | None = None
    # The agent handed the caller on (a blind transfer from the softphone): "queue:NAME", a SIP
    # URI, browser:<agent id> or a number. The desk runs it; the agent is free at once.
    transfer_to: str | None = None


class AgentConnection(Protocol):
    """One attempt to reach an agent for a call."""

    @property
    def answered(self) -> bool: ...

    @property
    def status(self) -> int | None:
        """Final SIP status of the attempt (200, 486, 408 for no answer, 487...)."""

    @property
    def reason(self) -> str: ...

    async def wait_finished(self) -> ConversationEnd:
        """When answered: until the bridged conversation is over (either side hung up)."""

    def hangup(self) -> None:
        """End the agent's side now (CANCEL while ringing, BYE once answered); idempotent."""


class AgentConnector(Protocol):
    """Rings agents' phones (SIP URIs, later browser legs) and bridges them to callers."""

    async def connect(self, call: CallView, agent_uri: str, *, timeout: float) -> AgentConnection:
        """Ring `agent_uri` for up to `timeout` s; returns once answered and bridged, or failed
        (busy, rejected, no answer, caller gone). Cancelled: the ringing INVITE is CANCELled."""


class OutboundLeg(Protocol):
    """A phone the service called (an agent's, before the customer is dialled)."""

    @property
    def answered(self) -> bool: ...

    @property
    def status(self) -> int | None: ...

    @property
    def reason(self) -> str: ...

    async def wait_ended(self) -> str:
        """Until this leg is over (either side); returns the cause."""

    def hangup(self) -> None:
        """CANCEL while ringing, BYE once answered; idempotent."""


@dataclass(frozen=True, kw_only=True)
class CustomerNumber:
    """Whom `OutboundDialer.call_customer` calls, and what the call's record says about it."""

    number: str  # E.164 or a local number; the trunk's prefix is put before it
    customer_id: str | None = None  # the record goes to this customer
    name: str | None = None
    metadata: dict[str, Any] | None = None  # merged into the record (callback_id, callback_of...)


class CustomerConnection(AgentConnection, Protocol):
    """The call to the customer: answered -> bridged with the agent's leg."""

    @property
    def interaction_id(self) -> str | None:
        """The call's record (known once the customer answered)."""


class OutboundDialer(Protocol):
    """Calls the service places itself (call control implements it)."""

    async def ring_agent(self, agent_uri: str, *, timeout: float, display: str | None = None) -> OutboundLeg:
        """Ring the agent's phone for up to `timeout` s; returns once answered or failed. An
        answered agent hears ringback until `call_customer` bridges them (or hangs up)."""

    async def call_customer(self, agent: OutboundLeg, customer: CustomerNumber, *, timeout: float,
                            on_ringing: Callable[[], None] | None = None) -> CustomerConnection:
        """Dial the customer through the trunk (digest auth, caller ID per config) for up to
        `timeout` s while the agent waits; answered: bridged with `agent` until either hangs up.
        `on_ringing` runs at the first 18x (or the answer). The agent hanging up cancels it."""


class FlowCatalog(Protocol):
    """The IVR's flows as the admin pages show them (voice.ivr.catalog implements it). Its
    methods may read files: the pages call them in a worker thread."""

    def names(self) -> list[str]:
        """Every flow file's name, loaded or not."""

    def errors(self, name: str) -> list[str]:
        """Validation problems of that flow (file:line ...); empty when it is live."""

    def node_count(self, name: str) -> int | None:
        """Nodes of the live flow; None when it did not load."""

    def diagram(self, name: str, *, live: Mapping[str, int] | None = None,
                counts: Mapping[str, Any] | None = None) -> str | None:
        """SVG of the flow; `live` highlights nodes with calls now, `counts` annotates reach."""


PageSend = Callable[[dict[str, Any]], Awaitable[None]]


class SoftphoneError(ValueError):
    """A page's softphone message that cannot be acted on; `field` names the offending key."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class BrowserPhones(Protocol):
    """The browser softphones of the agents signed in on this node (call control implements it).

    Messages to the page have a "type" starting with "rtc_" (rtc_offer, rtc_state, rtc_end);
    the page's are rtc_answer, rtc_ice, rtc_reject, rtc_hangup, rtc_hold, rtc_dtmf, rtc_transfer."""

    def attach(self, agent_id: str, send: PageSend) -> Callable[[], None]:
        """A page of `agent_id` is connected: calls for `browser:<agent_id>` are offered through
        `send`. Returns the function that detaches it (the websocket closed)."""

    async def receive(self, agent_id: str, message: dict[str, Any]) -> None:
        """One rtc_* message from a page of `agent_id`; raises SoftphoneError for bad input."""

    async def listen(self, call_id: str, offer_sdp: str) -> tuple[str, str]:
        """Silent monitor: a supervisor's receive-only SDP offer for the call with this key or
        Call-ID, talking to an agent in the browser or on a SIP desk phone; returns (listen id,
        SDP answer). SoftphoneError names the field when it cannot be done."""

    def stop_listening(self, listen_id: str) -> bool:
        """End a listen-in; False when there is none with this id."""
