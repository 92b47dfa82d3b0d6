"""Calls write their history (the API the SIP service calls), and the store-level CTI lookup."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cti.history import MASK, CallHistory
from cti.lookup import lookup, make_lookup
from cti.store import CustomerStore

T0 = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)


def key(node: str, call_id: str, remote_tag: str = "caller1") -> str:
    """A call's key as call control makes it (voice.callcontrol.inbound.call_key)."""
    return f"{node}:{call_id};{remote_tag};local1"


async def test_a_call_is_recorded_at_answer_and_completed_at_the_end(store: CustomerStore) -> None:
    history = CallHistory(store)
    iid = await history.call_started(key=key("", "abc@host"), call_id="abc@host",
                                     caller='"Anna" <sip:+49301234567@pbx>', caller_name="Anna",
                                     dialled="100", started_at=T0)
    # A retransmitted INVITE handled twice must not make a second record.
    assert await history.call_started(key=key("", "abc@host"), call_id="abc@host", caller="+49301234567",
                                      caller_name=None, dialled="100", started_at=T0) == iid
    during = await store.get_interaction(iid)
    assert during is not None and during["status"] == "in_progress" and during["channel"] == "voice"

    await history.call_finished(
        iid, ended_at=T0 + timedelta(seconds=95), ended="caller_hangup",
        ivr={"flow": "main", "path": ["welcome", "menu", "billing"],
             "inputs": [{"name": "menu", "value": "2"}, {"name": "pin", "value": "1234", "sensitive": True}],
             "ended": "transfer"},
        recording="recordings/calls/abc.wav",
        transcript=[
            {"start": 0.0, "end": 2.0, "speaker": "system", "kind": "prompt", "text": "Welcome",
             "confidence": None, "engine": None},
            {"start": 3.0, "end": 3.1, "speaker": "caller", "kind": "dtmf", "text": "2",
             "confidence": None, "engine": None},
            {"start": 5.0, "end": 5.4, "speaker": "caller", "kind": "dtmf", "text": "1234",
             "sensitive": True},
        ])
    done = await store.get_interaction(iid)
    assert done is not None
    assert done["status"] == "completed" and done["disposition"] == "caller_hangup"
    assert done["ended_at"] == "2024-06-01T12:01:35Z" and done["recording"] == "recordings/calls/abc.wav"
    assert done["ivr"]["path"] == ["welcome", "menu", "billing"]
    assert done["ivr"]["inputs"][0]["value"] == "2" and done["ivr"]["inputs"][1]["value"] == MASK
    assert [s["text"] for s in done["transcript"]] == ["Welcome", "2", MASK]

    # An unknown number makes no customer (issue 9); the number stays in the record's metadata.
    assert done["customer_id"] is None and done["metadata"]["caller_phone"] == "+49301234567"
    assert (await lookup(store, phone="030 1234567"))["found"] is False
    # Once the number is somebody's, their next call is theirs, identified by caller ID.
    anna = await store.create_customer(name="Anna", identities=[("phone", "+49301234567")], attributes={})
    again = await history.call_started(key=key("", "abc@host", "caller2"), call_id="abc@host",
                                       caller="+49301234567", caller_name=None, dialled="100", started_at=T0)
    assert again != iid
    found = await lookup(store, phone="030 1234567")
    assert found["found"] and found["customer"]["id"] == anna["id"]
    assert [i["id"] for i in found["recent_interactions"]] == [again]
    rec = await store.get_interaction(again)
    assert rec is not None and rec["metadata"]["identified_by"] == "caller_id"


async def test_withheld_caller_gets_a_record_without_customer(store: CustomerStore) -> None:
    history = CallHistory(store)
    iid = await history.call_started(key=key("", "x1"), call_id="x1", caller="anonymous", caller_name=None,
                                     dialled="100", started_at=T0)
    rec = await store.get_interaction(iid)
    assert rec is not None and rec["customer_id"] is None


async def test_calls_left_in_progress_are_marked_interrupted(store: CustomerStore) -> None:
    history = CallHistory(store)
    crashed = [await history.call_started(key=key("", f"c{i}"), call_id=f"c{i}", caller="+4930555",
                                          caller_name=None, dialled="1", started_at=T0) for i in range(3)]
    finished = await history.call_started(key=key("", "ok"), call_id="ok", caller="+4930555",
                                          caller_name=None, dialled="1", started_at=T0)
    await history.call_finished(finished, ended_at=T0, ended="hangup", ivr=None, recording=None,
                                transcript=[])
    assert await history.mark_interrupted() == 3
    assert await history.mark_interrupted() == 0
    for iid in crashed:
        rec = await store.get_interaction(iid)
        assert rec is not None and rec["status"] == "interrupted"
    rec = await store.get_interaction(finished)
    assert rec is not None and rec["status"] == "completed"


async def test_a_restarting_node_marks_only_its_own_calls(store: CustomerStore) -> None:
    node_a, node_b = CallHistory(store, node="a"), CallHistory(store, node="b_%")
    live_on_a = await node_a.call_started(key=key("a", "same-id"), call_id="same-id", caller="+4930555",
                                          caller_name=None, dialled="1", started_at=T0)
    crashed_on_b = await node_b.call_started(key=key("b_%", "same-id"), call_id="same-id",
                                             caller="+4930555", caller_name=None, dialled="1", started_at=T0)
    assert live_on_a != crashed_on_b
    assert await node_b.mark_interrupted() == 1
    a, b = await store.get_interaction(live_on_a), await store.get_interaction(crashed_on_b)
    assert a is not None and b is not None
    assert (a["status"], b["status"]) == ("in_progress", "interrupted")


async def test_bound_lookup_for_the_ivr_returns_an_empty_result_for_strangers(store: CustomerStore) -> None:
    find = make_lookup(store, recent=3)
    assert await find(phone="+15550101010") == {
        "found": False, "customer": None, "attributes": {}, "recent_interactions": []}
    assert (await find(account=""))["found"] is False
