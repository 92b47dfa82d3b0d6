"""Calls write their history (the API the SIP service calls), and the store-level CTI lookup."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from cti.history import MASK, CallHistory
from cti.lookup import lookup, make_lookup
from cti.store import CustomerStore

T0 = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)


def key(node: str, call_id: str, tags: str = "peer;ours") -> str:
    return f"{node}:{call_id};{tags}"


async def test_a_call_is_recorded_at_answer_and_completed_at_the_end(store: CustomerStore) -> None:
    anna = await store.create_customer(name="Anna", identities=[("phone", "+49301234567")], attributes={})
    history = CallHistory(store, node="n1")
    iid = await history.call_started(key=key("n1", "abc@host"), call_id="abc@host",
                                     caller='"Anna" <sip:+49301234567@pbx>', caller_name="Anna",
                                     dialled="100", started_at=T0)
    # A retransmitted INVITE handled twice (same dialog) must not make a second record.
    assert await history.call_started(key=key("n1", "abc@host"), call_id="abc@host", caller="+49301234567",
                                      caller_name=None, dialled="100", started_at=T0) == iid
    during = await store.get_interaction(iid)
    assert during is not None and during["status"] == "in_progress" and during["channel"] == "voice"
    # the known number's owner gets the call at once
    assert during["customer_id"] == anna["id"] and during["metadata"]["identified_by"] == "caller_id"

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
            {"start": 6.0, "end": 6.8, "speaker": "caller", "kind": "speech", "text": "billing",
             "confidence": 0.91, "engine": "whisper",
             "alternatives": [["billing", 0.91], ["building", 0.05]]},
            {"start": 7.0, "end": 7.8, "speaker": "caller", "kind": "speech", "text": "****",
             "confidence": 0.88, "engine": "whisper", "alternatives": [["four two", 0.88]]},
        ], details={"transfers": [{"target": "queue:billing", "agent_id": "ann", "waited": 4.0}]})
    done = await store.get_interaction(iid)
    assert done is not None
    assert done["status"] == "completed" and done["outcome"] == "caller_hangup"
    assert done["disposition"] is None  # the agent's field: the call end leaves it alone
    assert done["ended_at"] == "2024-06-01T12:01:35Z" and done["recording"] == "recordings/calls/abc.wav"
    assert done["ivr"]["path"] == ["welcome", "menu", "billing"]
    assert done["ivr"]["inputs"][0]["value"] == "2" and done["ivr"]["inputs"][1]["value"] == MASK == "****"
    assert [s["text"] for s in done["transcript"]] == ["Welcome", "2", MASK, "billing", MASK]
    # the recognizer's n-best is kept with its segment, and never beside a masked one
    assert done["transcript"][3]["alternatives"] == [["billing", 0.91], ["building", 0.05]]
    assert done["transcript"][4]["alternatives"] is None and done["transcript"][2]["alternatives"] is None
    # what call control added is merged into the metadata, what was there stays
    assert done["metadata"]["transfers"][0]["agent_id"] == "ann" and done["metadata"]["dialled"] == "100"

    found = await lookup(store, phone="030 1234567")
    assert found["found"] and found["customer"]["name"] == "Anna"
    assert found["recent_interactions"][0]["id"] == iid


async def test_an_unknown_caller_makes_no_customer_until_the_ivr_identifies_them(
        store: CustomerStore) -> None:
    bob = await store.create_customer(name="Bob", identities=[("account", "778899")], attributes={})
    history = CallHistory(store, node="n1")
    iid = await history.call_started(key=key("n1", "x2"), call_id="x2", caller="+15550123456",
                                     caller_name="BOB MOBILE", dialled="100", started_at=T0)
    rec = await store.get_interaction(iid)
    assert rec is not None and rec["customer_id"] is None
    assert rec["metadata"]["caller_phone"] == "+15550123456" and rec["call_id"] == "x2"
    assert await store.find_customer_id("phone", "+15550123456") is None  # no junk "Caller" customer
    # the IVR's lookup by account found Bob: the call is Bob's from now on
    await history.call_identified(iid, customer_id=bob["id"], by="account")
    rec = await store.get_interaction(iid)
    assert rec is not None and rec["customer_id"] == bob["id"]
    assert rec["metadata"]["identified_by"] == "account"
    timeline, _ = await store.timeline(bob["id"])
    assert [i["id"] for i in timeline] == [iid]


async def test_withheld_caller_gets_a_record_without_customer(store: CustomerStore) -> None:
    history = CallHistory(store, node="n1")
    iid = await history.call_started(key=key("n1", "x1"), call_id="x1", caller="anonymous", caller_name=None,
                                     dialled="100", started_at=T0)
    rec = await store.get_interaction(iid)
    assert rec is not None and rec["customer_id"] is None


async def test_a_reused_call_id_is_another_record(store: CustomerStore) -> None:
    history = CallHistory(store, node="n1")
    first = await history.call_started(key=key("n1", "dup@x", "tagA;o1"), call_id="dup@x", caller="+4930555",
                                       caller_name=None, dialled="1", started_at=T0)
    second = await history.call_started(key=key("n1", "dup@x", "tagB;o2"), call_id="dup@x", caller="+4930666",
                                        caller_name=None, dialled="1", started_at=T0)
    assert first != second
    a, b = await store.get_interaction(first), await store.get_interaction(second)
    assert a is not None and b is not None and a["metadata"]["caller"] == "+4930555"
    assert b["metadata"]["caller"] == "+4930666"


async def test_calls_left_in_progress_are_marked_interrupted(store: CustomerStore) -> None:
    history = CallHistory(store, node="n1")
    crashed = [await history.call_started(key=key("n1", f"c{i}"), call_id=f"c{i}", caller="+4930555",
                                          caller_name=None, dialled="1", started_at=T0) for i in range(3)]
    finished = await history.call_started(key=key("n1", "ok"), call_id="ok", caller="+4930555",
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
    crashed_on_b = await node_b.call_started(key=key("b_%", "same-id"), call_id="same-id", caller="+4930555",
                                             caller_name=None, dialled="1", started_at=T0)
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


async def test_a_call_records_the_queue_and_agent_that_handled_it(store: CustomerStore) -> None:
    """What a caller who comes back to continue this call is routed by (customer.last.queue/.agent)."""
    await store.create_customer(name="Anna", identities=[("phone", "+49301234567")], attributes={})
    history = CallHistory(store, node="n1")
    iid = await history.call_started(key=key("n1", "q@host"), call_id="q@host", caller="+49301234567",
                                     caller_name=None, dialled="100", started_at=T0)
    await history.call_finished(iid, ended_at=T0 + timedelta(seconds=60), ended="agent_hangup", ivr=None,
                                recording=None, transcript=[],
                                details={"queue": "billing", "agent_id": "ann", "wait_seconds": 3.0})
    done = await store.get_interaction(iid)
    assert done is not None and (done["queue"], done["agent"]) == ("billing", "ann")
    found = await lookup(store, phone="+49301234567")
    last = found["recent_interactions"][0]
    assert (last["queue"], last["agent"]) == ("billing", "ann")
    # an agent who already wrote a note on the call stays its agent
    other = await history.call_started(key=key("n1", "r@host"), call_id="r@host", caller="+49301234567",
                                       caller_name=None, dialled="100", started_at=T0)
    await store.db.run_write(_set_agent, other, "bob")
    await history.call_finished(other, ended_at=T0 + timedelta(seconds=60), ended="agent_hangup", ivr=None,
                                recording=None, transcript=[],
                                details={"queue": "support", "agent_id": "ann"})
    done = await store.get_interaction(other)
    assert done is not None and (done["queue"], done["agent"]) == ("support", "bob")


def _set_agent(conn: Any, interaction_id: str, agent: str) -> None:
    from sqlalchemy import update

    from cti.writes import INTERACTIONS

    conn.execute(update(INTERACTIONS).where(INTERACTIONS.c.id == interaction_id).values(agent=agent))
