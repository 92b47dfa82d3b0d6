"""Calls write their history: an interaction when the call is answered, completed when it ends.

The record is created at answer time so a crash mid-call still leaves it; the next start of the
service marks such records `interrupted`. All writes go through the async store, so they never
block the event loop or the media.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from cti.identity import IdentityError, normalize_phone
from cti.store import CustomerStore, NewInteraction, Segment

MASK = "****"  # the one mask, as voice.ivr.templates.MASK


def mask_ivr(ivr: dict[str, Any] | None) -> dict[str, Any] | None:
    """Copy of the IVR record with every input marked `sensitive` masked.

    Accepts inputs as a list of `{"name", "value", "sensitive"}` or a mapping of name to such
    a dict; the IVR should already mask them, this is the second lock on the door.
    """
    if ivr is None:
        return None
    out = dict(ivr)
    inputs = ivr.get("inputs")
    if isinstance(inputs, list):
        out["inputs"] = [_mask_input(i) for i in inputs]
    elif isinstance(inputs, dict):
        out["inputs"] = {k: _mask_input(v) for k, v in inputs.items()}
    return out


def _mask_input(item: Any) -> Any:
    if isinstance(item, dict) and item.get("sensitive"):
        return {**item, "value": MASK}
    return item


def segment_from_dict(d: dict[str, Any]) -> Segment:
    text = str(d.get("text", ""))
    alternatives = [(str(t), float(c)) for t, c in d.get("alternatives") or ()]
    if d.get("sensitive") or text == MASK:
        text, alternatives = MASK, []  # the n-best would say what the mask hides
    conf = d.get("confidence")
    return Segment(start=float(d["start"]), end=float(d["end"]), speaker=str(d["speaker"]),
                   kind=str(d["kind"]), text=text, confidence=None if conf is None else float(conf),
                   engine=d.get("engine"), alternatives=alternatives or None)


class CallHistory:
    """What the SIP service calls as calls start and end."""

    def __init__(self, store: CustomerStore, *, node: str = "") -> None:
        """`node` names this service instance when several share one database, so that a starting
        node marks only its own unfinished calls interrupted, not its peers' live ones."""
        self.store = store
        self.node = node
        self.key_prefix = f"call:{node}:" if node else "call:"

    async def call_started(self, *, key: str, call_id: str, caller: str, caller_name: str | None,
                           dialled: str, started_at: datetime, node: str | None = None,
                           customer_id: str | None = None, interaction_id: str | None = None,
                           direction: str = "inbound", metadata: dict[str, Any] | None = None) -> str:
        """Create the voice interaction (status in_progress); returns its id (the one given as
        `interaction_id` unless this dialog already has a record). `direction` is outbound for a
        call the service placed (a callback, a click-to-call): `caller` is then the number called,
        and `metadata` links it (callback_id, callback_of; agent_id, click_to_call).

        `key` is the call's unique id on its node (Call-ID and both dialog tags): a Call-ID reused
        by another caller is another record. The interaction goes to the customer who owns the
        calling number when there is one; an unknown number makes no customer (the IVR may still
        identify the caller, see `call_identified`), the number and Call-ID stay in its metadata.
        """
        identities: list[tuple[str, str]] = []
        phone: str | None = None
        try:
            phone = normalize_phone(caller, self.store.default_country)
        except IdentityError:
            pass
        if customer_id is None and phone is not None and await self.store.find_customer_id("phone", phone):
            identities.append(("phone", phone))
        meta: dict[str, Any] = {"caller": caller, "caller_name": caller_name, "dialled": dialled,
                                "caller_phone": phone, "node": node or self.node, **(metadata or {})}
        if identities:
            meta["identified_by"] = "caller_id"
        if direction == "inbound":
            subject = f"Call to {dialled}"
        else:  # a callback, or an agent's click-to-call
            subject = f"{'Callback' if (metadata or {}).get('callback_id') else 'Outbound call'} to {dialled}"
        result = await self.store.ingest(NewInteraction(
            channel="voice", direction=direction, started_at=started_at, identities=identities,
            name=None, status="in_progress", subject=subject, metadata=meta,
            call_id=call_id, idempotency_key=f"call:{key}",  # key: "<node>:<Call-ID>;<tags>"
            id=interaction_id,
        ))
        if customer_id is not None:
            await self.store.attach_interaction(result.interaction_id, customer_id)
        return result.interaction_id

    async def call_identified(self, interaction_id: str, *, customer_id: str, by: str) -> None:
        """The IVR identified the caller: the interaction is that customer's from now on."""
        await self.store.attach_interaction(interaction_id, customer_id, {"identified_by": by})

    async def call_finished(self, interaction_id: str, *, ended_at: datetime, ended: str,
                            ivr: dict[str, Any] | None, recording: str | None,
                            transcript: list[dict[str, Any]], details: dict[str, Any] | None = None) -> None:
        """Complete the interaction: how it ended (`outcome`; an agent's disposition stays), the IVR
        record, the recording, the transcript, and what call control adds (queue transfers: agent,
        wait and talk time) into its metadata."""
        await self.store.finish_interaction(
            interaction_id, ended_at=ended_at, status="completed", outcome=ended,
            ivr=mask_ivr(ivr), recording=recording, transcript=[segment_from_dict(d) for d in transcript],
            metadata=details or None,
        )

    async def add_call_facts(self, interaction_id: str, **facts: Any) -> bool:
        """What the CDR and the reports need from call control, merged into the interaction's
        metadata: offered_at / answered_at (datetimes), queue, agent_id, wait_seconds (queued until
        an agent answered or the caller left), talk_seconds, outcome (cti.cdr.OUTCOMES)."""
        from cti.cdr import add_call_facts

        return await self.store.db.run_write(add_call_facts, interaction_id, facts)

    async def mark_interrupted(self) -> int:
        """At service start: calls left in progress by a previous run become `interrupted`."""
        return await self.store.mark_interrupted("voice", key_prefix=self.key_prefix)
