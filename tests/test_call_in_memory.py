"""The whole call in memory, on virtual time: INVITE -> flow -> DTMF -> queue -> agent leg ->
hangup -> history row, through the real SIP core, switch, lifecycle, recorder, history, desk and
IVR; only the sockets are fakes (tests/callmemory.py). The real-peer tests (test_call_records,
test_service_agents) cover the same paths over loopback.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from cti.history import CallHistory
from cti.identity import normalize_token
from cti.queues import AgentState
from tests.callmemory import (
    PHONE_ANSWER,
    T1,
    Caller,
    Phone,
    Rig,
    agent_state,
    count,
    hold_time_during_aiosqlite,
    is_request,
    is_response,
    run_virtual_checked,
    until,
    voice_rows,
)
from tests.sipfake import SDP_OFFER, ack_for

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(autouse=True)
def _virtual_time_waits_for_the_database(monkeypatch: pytest.MonkeyPatch) -> None:
    hold_time_during_aiosqlite(monkeypatch)


@pytest.fixture(autouse=True)
def _no_warnings_logged(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """A failed history write or a crashed handler is only logged: it must fail these tests."""
    caplog.set_level(logging.INFO)
    yield
    bad = [r for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith(("voice", "cti"))]
    assert not bad, [f"{r.name}: {r.getMessage()}" for r in bad]


def tone(seed: int, frames: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(-8000, 8000, 160, dtype=np.int16) for _ in range(frames)]


def test_the_whole_call_from_invite_to_the_agent_and_back_to_one_history_row(tmp_path: Path) -> None:
    async def scenario() -> None:
        rig = await Rig(tmp_path).start()
        try:
            await rig.add_agent("ann", skills=["support"])
            caller, phone = Caller(rig), Phone(rig)
            caller.invite()
            ok = await caller.answered()
            assert ok.body and b"m=audio" in ok.body
            assert rig.network.matching(is_response(180, "INVITE", caller.addr))  # rang first
            caller.ack()
            media = caller.session
            await asyncio.sleep(1.0)  # the menu prompt plays, then the menu waits for a key
            assert media.played and rig.tts.spoken[0].startswith("Welcome to the test line.")
            # Nothing goes to the agent before the caller asks for one.
            assert not rig.network.matching(is_request("INVITE", phone.addr))
            pressed_at = len(rig.network.sent)
            media.press("0")

            ringing = await phone.rings(after=pressed_at)
            invite = ringing.message
            assert ringing.index >= pressed_at
            assert invite.headers.get("X-Voice-Call-ID") == caller.call_id
            assert invite.from_.uri.user == "+15550100"  # the caller's number, for the phone's display
            assert invite.body and b"m=audio" in invite.body
            assert rig.desk.engine.agents["ann"].state is AgentState.RINGING
            assert agent_state(rig.db_path, "ann") == "ringing"
            phone.reply(100)
            phone.reply(180)
            phone.reply(200, PHONE_ANSWER)
            await phone.acked()
            # The agent's leg: the second RTP session of the pool, configured from the phone's answer.
            agent_media = rig.pool.sessions[1]
            assert agent_media.remote == ("127.0.0.1", 41000) and agent_media.codec == "PCMU"
            assert agent_media.dtmf_payload_type == 101
            await until(lambda: bool(agent_media.listeners_set), "the bridge takes the agent's media")
            await until(lambda: rig.desk.engine.agents["ann"].state is AgentState.ON_CALL, "agent on call")
            assert agent_state(rig.db_path, "ann") == "on_call"
            await rig.recorder.aclose()  # the record exists while the call is up
            assert [r["status"] for r in voice_rows(rig.db_path)] == ["in_progress"]

            # Media across the bridge, both ways, frame for frame; keys as RFC 4733 events.
            said = tone(1, 5)
            media.speak(np.concatenate(said))
            assert len(agent_media.fed) == 5
            assert all(np.array_equal(a, b) for a, b in zip(agent_media.fed, said, strict=True))
            answered = tone(2, 3)
            agent_media.speak(np.concatenate(answered))
            assert len(media.fed) == 3
            assert all(np.array_equal(a, b) for a, b in zip(media.fed, answered, strict=True))
            media.press("5")
            await asyncio.sleep(0.01)
            assert agent_media.sent_dtmf == ["5"]

            # The agent hangs up: the caller is still with us, hears the goodbye, then our BYE.
            before_bye = len(rig.network.sent)
            agent_bye_at = asyncio.get_running_loop().time()
            phone.bye()
            assert rig.network.matching(is_response(200, "BYE", phone.addr))
            bye = await caller.hung_up(after=before_bye)
            assert rig.tts.spoken[-1] == "Thank you for talking with us. Goodbye."
            assert bye.at - agent_bye_at >= 7 * 0.06 - 1e-6  # the goodbye (7 words) played before our BYE
            await rig.calls_over()
            assert agent_media.closed and media.closed and rig.pool.in_use == 0
            assert rig.desk.engine.agents["ann"].state is AgentState.WRAP_UP
            assert not rig.switch.calls and not rig.switch.dials
        finally:
            await rig.close()

    run_virtual_checked(scenario())
    (row,) = voice_rows(tmp_path / "data" / "voice.db")  # exactly one voice interaction
    assert row["status"] == "completed"
    assert row["outcome"] == "flow"  # the flow hung up after the agent's call
    ivr = row["ivr"]
    assert [p["node"] for p in ivr["path"]] == ["welcome", "to_support", "after_agent"]
    assert ivr["ended"] == "hangup" and ivr["transfer_target"] == "queue:support"
    assert [i["value"] for i in ivr["inputs"]] == ["0"]
    (transfer,) = row["metadata"]["transfers"]
    assert transfer["target"] == "queue:support" and transfer["ok"] is True
    assert transfer["agent_id"] == "ann" and transfer["hangup_by"] == "agent"
    assert transfer["waited"] >= 0 and transfer["talk_seconds"] > 0  # the desk passes the talk time on
    assert row["metadata"]["node"] == "mem1" and row["metadata"]["caller"] == "+15550100"
    assert row["idempotency_key"].startswith("call:mem1:")
    assert agent_state(tmp_path / "data" / "voice.db", "ann") == "wrap_up"


async def caller_in_the_queue(rig: Rig) -> tuple[Caller, Phone]:
    """A caller who pressed 0, and the agent's phone ringing for them."""
    await rig.add_agent("ann", skills=["support"])
    caller, phone = Caller(rig), Phone(rig)
    caller.invite()
    await caller.answered()
    caller.ack()
    caller.session.press("0")
    await phone.rings()
    phone.reply(180)
    return caller, phone


def test_the_caller_hanging_up_while_the_agent_rings_cancels_the_agents_invite(tmp_path: Path) -> None:
    async def scenario() -> None:
        rig = await Rig(tmp_path).start()
        try:
            caller, phone = await caller_in_the_queue(rig)
            assert agent_state(rig.db_path, "ann") == "ringing"
            caller.bye()
            await phone.cancelled()
            await rig.network.wait_for(is_request("ACK", phone.addr))  # the ACK for our 487
            await rig.calls_over()
            assert all(s.closed for s in rig.pool.sessions) and rig.pool.in_use == 0
            # Back to idle in the place they had: the caller left, the agent did nothing wrong.
            assert rig.desk.engine.agents["ann"].state is AgentState.AVAILABLE
            assert not rig.switch.calls and not rig.switch.dials
        finally:
            await rig.close()

    run_virtual_checked(scenario())
    db = tmp_path / "data" / "voice.db"
    assert agent_state(db, "ann") == "available"
    (row,) = voice_rows(db)
    assert row["status"] == "completed" and row["outcome"] == "bye"
    (transfer,) = row["metadata"]["transfers"]
    assert transfer["ok"] is False and transfer["target"] == "queue:support"
    # The flow ends where the caller left it: no on_failure branch played to nobody.
    assert [p["node"] for p in row["ivr"]["path"]] == ["welcome", "to_support"]
    assert row["ivr"]["ended"] == "caller_hangup" and row["ivr"]["transfers_failed"] == []


def test_the_caller_hanging_up_during_the_conversation_ends_the_agents_leg(tmp_path: Path) -> None:
    async def scenario() -> None:
        rig = await Rig(tmp_path).start()
        try:
            caller, phone = await caller_in_the_queue(rig)
            phone.reply(200, PHONE_ANSWER)
            await phone.acked()
            await asyncio.sleep(3.0)  # they talk
            caller.bye()
            await phone.hung_up()
            await rig.calls_over()
            assert rig.pool.in_use == 0
            assert rig.desk.engine.agents["ann"].state is AgentState.WRAP_UP
        finally:
            await rig.close()

    run_virtual_checked(scenario())
    db = tmp_path / "data" / "voice.db"
    assert agent_state(db, "ann") == "wrap_up"
    (row,) = voice_rows(db)
    assert row["status"] == "completed" and row["outcome"] == "bye"
    (transfer,) = row["metadata"]["transfers"]
    assert transfer["ok"] is True and transfer["agent_id"] == "ann" and transfer["hangup_by"] == "caller"


def test_a_key_sent_by_sip_info_works_like_one_in_the_media(tmp_path: Path) -> None:
    async def scenario() -> None:
        rig = await Rig(tmp_path).start()
        try:
            await rig.add_agent("ann", skills=["support"])
            caller, phone = Caller(rig), Phone(rig)
            caller.invite()
            ok = await caller.answered()
            caller.ack()
            body = "Signal=0\r\nDuration=160\r\n"
            caller.send(caller.peer.request("INFO", to_tag=ok.to.tag, body=body).replace(
                "Content-Type: application/sdp", "Content-Type: application/dtmf-relay"))
            assert rig.network.matching(is_response(200, "INFO", caller.addr))
            await phone.rings()
            phone.reply(180)
            caller.bye()
            await phone.cancelled()
            await rig.calls_over()
        finally:
            await rig.close()

    run_virtual_checked(scenario())
    (row,) = voice_rows(tmp_path / "data" / "voice.db")
    assert [i["value"] for i in row["ivr"]["inputs"]] == ["0"]


def test_hold_and_unhold_by_re_invite_update_the_one_media_session(tmp_path: Path) -> None:
    async def scenario() -> None:
        rig = await Rig(tmp_path).start()
        try:
            caller = Caller(rig)
            caller.invite()
            ok = await caller.answered()
            caller.ack()
            media = caller.session
            assert media.configured == 1 and media.direction == "sendrecv"
            for direction, ours in (("sendonly", "recvonly"), ("sendrecv", "sendrecv")):
                before = len(rig.network.sent)
                offer = SDP_OFFER.replace("a=sendrecv", f"a={direction}").replace("o=- 1 1", "o=- 1 2")
                caller.send(caller.peer.request("INVITE", to_tag=ok.to.tag, body=offer))
                answer = await rig.network.wait_for(is_response(200, "INVITE", caller.addr), after=before)
                assert f"a={ours}".encode() in answer.message.body
                caller.send(ack_for(caller.peer, answer.message, cseq=caller.peer.cseq))
                assert media.direction == direction.replace("sendonly", "recvonly")
            assert media.configured == 3 and len(rig.pool.sessions) == 1  # updated in place
            caller.bye()
            await rig.calls_over()
        finally:
            await rig.close()

    run_virtual_checked(scenario())
    (row,) = voice_rows(tmp_path / "data" / "voice.db")
    assert row["status"] == "completed" and row["outcome"] == "bye"


# ---- the call's one record, whatever the timing -----------------------------------------------
def test_a_bye_before_the_ack_still_leaves_one_completed_record(tmp_path: Path) -> None:
    async def scenario() -> None:
        rig = await Rig(tmp_path).start()
        try:
            caller = Caller(rig)
            caller.invite()
            await caller.answered()
            caller.bye()  # the BYE overtakes the ACK (or the ACK was lost)
            assert rig.network.matching(is_response(200, "BYE", caller.addr))
            caller.ack()
            await rig.calls_over()
        finally:
            await rig.close()

    run_virtual_checked(scenario())
    (row,) = voice_rows(tmp_path / "data" / "voice.db")
    assert row["status"] == "completed" and row["outcome"] == "bye"


def test_a_media_transport_that_fails_ends_the_call_with_a_bye_and_says_why(tmp_path: Path) -> None:
    async def scenario() -> None:
        rig = await Rig(tmp_path).start()
        try:
            caller = Caller(rig)
            caller.invite()
            await caller.answered()
            caller.ack()
            await asyncio.sleep(1.0)  # the flow is greeting the caller
            rig.pool.sessions[0].fail("sendto: OverflowError")
            await rig.calls_over()
            assert rig.network.matching(is_request("BYE", caller.addr)), "the caller got no BYE"
            assert rig.pool.sessions[0].closed
        finally:
            await rig.close()

    run_virtual_checked(scenario())
    (row,) = voice_rows(tmp_path / "data" / "voice.db")
    assert row["status"] == "completed" and row["outcome"] == "media_failed"
    assert row["ivr"]["ended"] == "media_failed"


def test_a_call_cancelled_before_it_was_answered_leaves_no_record(tmp_path: Path) -> None:
    async def scenario() -> None:
        rig = await Rig(tmp_path, answer_delay=2.0).start()
        try:
            caller = Caller(rig)
            invite = caller.peer.request("INVITE", body=SDP_OFFER)
            caller.send(invite)
            await rig.network.wait_for(is_response(180, "INVITE", caller.addr))
            await asyncio.sleep(0.5)
            branch = invite.split(";branch=", 1)[1].split(";", 1)[0]
            caller.send(caller.peer.request("CANCEL", cseq=1, branch=branch))
            assert rig.network.matching(is_response(200, "CANCEL", caller.addr))
            await rig.network.wait_for(is_response(487, "INVITE", caller.addr))
            await rig.calls_over()
            assert not rig.network.matching(is_response(200, "INVITE", caller.addr))
            assert all(s.closed for s in rig.pool.sessions) and rig.pool.in_use == 0
        finally:
            await rig.close()

    run_virtual_checked(scenario())
    assert voice_rows(tmp_path / "data" / "voice.db") == []  # never answered: nothing to record


def test_drain_refuses_new_calls_then_says_goodbye_and_records_shutdown(tmp_path: Path) -> None:
    async def scenario() -> None:
        rig = await Rig(tmp_path).start()
        try:
            caller = Caller(rig)
            caller.invite()
            await caller.answered()
            caller.ack()
            loop = asyncio.get_running_loop()
            started = loop.time()
            drain = asyncio.ensure_future(rig.switch.drain(3.0))
            await asyncio.sleep(0.5)
            late = Caller(rig, port=5072)
            late.invite()
            refused = await rig.network.wait_for(is_response(503, "INVITE", late.addr))
            assert refused.message.headers.get("Retry-After")
            assert not caller.session.closed  # the call in progress goes on meanwhile
            bye = await caller.hung_up()
            assert bye.at - started >= 3.0  # after the drain time...
            assert any("line is closing" in text for text in rig.tts.spoken)  # ...and the goodbye
            await drain
            await rig.calls_over()
        finally:
            await rig.close()

    run_virtual_checked(scenario())
    (row,) = voice_rows(tmp_path / "data" / "voice.db")  # the refused call has none
    assert row["status"] == "completed" and row["outcome"] == "shutdown"
    assert row["ivr"]["ended"] == "shutdown"  # the IVR record and the interaction agree


def test_an_ack_that_never_comes_ends_the_call_at_timer_h_with_one_record(tmp_path: Path) -> None:
    ended: dict[str, float] = {}

    async def scenario() -> None:
        rig = await Rig(tmp_path).start()
        try:
            caller = Caller(rig)
            caller.invite()
            ok = await caller.answered()
            answered_at = asyncio.get_running_loop().time()
            (answer,) = rig.switch.calls.values()
            cause = await asyncio.wait_for(answer.leg.end, 64 * T1 + 5)  # virtual seconds
            ended["after"] = asyncio.get_running_loop().time() - answered_at
            ended["retransmits"] = len(rig.network.matching(is_response(200, "INVITE", caller.addr)))
            assert cause == "no_ack" and ok.to.tag
            await rig.calls_over()
        finally:
            await rig.close()

    run_virtual_checked(scenario())
    assert 64 * T1 - 1 <= ended["after"] <= 64 * T1 + 1  # Timer H, not sooner
    assert ended["retransmits"] > 3  # the 2xx was retransmitted meanwhile (Timer G)
    (row,) = voice_rows(tmp_path / "data" / "voice.db")
    assert row["status"] == "completed" and row["outcome"] == "no_ack"


def test_two_invites_with_one_call_id_and_different_from_tags_are_two_records(tmp_path: Path) -> None:
    async def scenario() -> None:
        rig = await Rig(tmp_path).start()
        try:
            first = Caller(rig, port=5070, call_id="same-call-id@buggy.example")
            second = Caller(rig, port=5072, call_id="same-call-id@buggy.example")
            assert first.peer.tag != second.peer.tag
            first.invite()
            second.invite()
            for caller in (first, second):
                await caller.answered()
                caller.ack()
            assert len(rig.switch.calls) == 2
            for caller in (first, second):
                caller.bye()
            await rig.calls_over()
        finally:
            await rig.close()

    run_virtual_checked(scenario())
    rows = voice_rows(tmp_path / "data" / "voice.db")
    assert len(rows) == 2
    assert {r["call_id"] for r in rows} == {"same-call-id@buggy.example"}
    assert len({r["idempotency_key"] for r in rows}) == 2
    assert all(r["status"] == "completed" and r["outcome"] == "bye" for r in rows)


def test_calls_reusing_one_call_id_one_after_another_are_one_record_each(tmp_path: Path) -> None:
    """The sipp scenario of test_call_records (-cid_str without %u), without sipp."""

    async def scenario() -> None:
        rig = await Rig(tmp_path).start()
        try:
            for _ in range(3):
                caller = Caller(rig, port=5070, call_id="same-call-id@buggy.example")
                caller.invite()
                await caller.answered()
                caller.ack()
                await asyncio.sleep(0.5)
                before = len(rig.network.sent)
                caller.bye()
                await rig.network.wait_for(caller.mine(is_response(200, "BYE", caller.addr)), after=before)
                await asyncio.sleep(0.5)
            await rig.calls_over()
        finally:
            await rig.close()

    run_virtual_checked(scenario())
    rows = voice_rows(tmp_path / "data" / "voice.db")
    assert len(rows) == 3 and len({r["idempotency_key"] for r in rows}) == 3
    assert all(r["status"] == "completed" and r["outcome"] == "bye" for r in rows)


def test_mark_interrupted_of_one_node_leaves_another_nodes_live_call_alone(tmp_path: Path) -> None:
    db_path = tmp_path / "data" / "voice.db"
    counted: dict[str, int] = {}

    async def scenario() -> None:
        from datetime import UTC, datetime

        # Node "edge-1" runs a live call; node "edge_1" (an underscore: a LIKE wildcard, were the
        # prefix not escaped) restarts on the same database and left one call of its own behind.
        rig = await Rig(tmp_path, node="edge-1", db_path=db_path).start()
        other = CallHistory(rig.store, node="edge_1")
        try:
            await other.call_started(key="edge_1:left-over@x;a;b", call_id="left-over@x", caller="+15550111",
                                     caller_name=None, dialled="100", started_at=datetime.now(UTC))
            caller = Caller(rig)
            caller.invite()
            await caller.answered()
            caller.ack()
            await rig.recorder.aclose()  # its record is written (in progress)
            counted["live_before"] = sum(r["status"] == "in_progress" for r in voice_rows(db_path))
            counted["marked"] = await other.mark_interrupted()
            counted["statuses_after_restart"] = len({r["status"] for r in voice_rows(db_path)})
            caller.bye()
            await rig.calls_over()
        finally:
            await rig.close()

    run_virtual_checked(scenario())
    assert counted["live_before"] == 2 and counted["marked"] == 1
    rows = {r["call_id"]: r for r in voice_rows(db_path)}
    assert rows["left-over@x"]["status"] == "interrupted"
    live = next(r for cid, r in rows.items() if cid != "left-over@x")
    assert live["status"] == "completed" and live["outcome"] == "bye"
    assert live["metadata"]["node"] == "edge-1"


def test_a_lookup_by_account_attaches_the_call_to_that_customer(tmp_path: Path) -> None:
    db_path = tmp_path / "data" / "voice.db"
    ids: dict[str, str] = {}

    async def scenario() -> None:
        rig = await Rig(tmp_path, default_flow="account_lookup", db_path=db_path).start()
        try:
            anna = await rig.store.create_customer(
                name="Anna Schmidt", identities=[("account", normalize_token("4711", "account"))],
                attributes={})
            ids["anna"] = anna["id"]
            # The known account, from a number nobody owns.
            known = Caller(rig, port=5070)
            known.invite()
            await known.answered()
            known.ack()
            known.session.press("4711#")
            await known.hung_up()
            # An unknown account from another unknown number.
            unknown = Caller(rig, port=5072)
            unknown.invite()
            await unknown.answered()
            unknown.ack()
            unknown.session.press("9999#")
            await unknown.hung_up()
            await rig.calls_over()
            ids["known"], ids["unknown"] = known.call_id, unknown.call_id
            ids["spoken"] = " | ".join(rig.tts.spoken)
        finally:
            await rig.close()

    run_virtual_checked(scenario())
    assert "Thank you, Anna Schmidt. Goodbye." in ids["spoken"]
    rows = {r["call_id"]: r for r in voice_rows(db_path)}
    assert len(rows) == 2
    known = rows[ids["known"]]
    assert known["customer_id"] == ids["anna"]
    assert known["metadata"]["identified_by"] == "account"
    assert known["metadata"]["caller_phone"] == "+15550100"  # still findable by the calling number
    assert known["status"] == "completed"
    assert [p["node"] for p in known["ivr"]["path"]] == ["ask", "find", "known"]
    assert known["ivr"]["inputs"][0]["value"] == "****"  # the account number was sensitive
    unknown = rows[ids["unknown"]]
    assert unknown["customer_id"] is None and "identified_by" not in unknown["metadata"]
    assert [p["node"] for p in unknown["ivr"]["path"]] == ["ask", "find", "unknown"]
    assert count(db_path, "customers") == 1  # no customer made up for the unknown caller


def test_the_agents_screen_pop_shows_the_customer_the_ivr_identified_by_account(tmp_path: Path) -> None:
    db_path = tmp_path / "data" / "voice.db"

    async def scenario() -> None:
        rig = await Rig(tmp_path, default_flow="account_then_agent", db_path=db_path).start()
        try:
            anna = await rig.store.create_customer(
                name="Anna Schmidt", identities=[("account", normalize_token("4711", "account"))],
                attributes={"tier": "gold"})
            # The calling number belongs to somebody else: the pop must not show them.
            bert = await rig.store.create_customer(name="Bert Caller", identities=[("phone", "+15550100")],
                                                   attributes={})
            await rig.add_agent("ann", skills=["support"])
            pops = rig.desk.bus.subscribe("ann")
            caller, phone = Caller(rig), Phone(rig)
            caller.invite()
            await caller.answered()
            caller.ack()
            caller.session.press("4711#")
            await phone.rings()
            phone.reply(180)
            pop = pops.queue.get_nowait()
            while pop["type"] != "screen_pop":
                pop = pops.queue.get_nowait()
            assert pop["customer"] is not None and pop["customer"]["id"] == anna["id"], pop["customer"]
            assert pop["customer"]["id"] != bert["id"]
            assert pop["found"] is True and pop["identified_by"] == "account"
            assert pop["caller"]["number"] == "+15550100"
            caller.bye()  # (the desk's queue waits on the wall clock: no ring-out on virtual time)
            await phone.cancelled()
            await rig.calls_over()
        finally:
            await rig.close()

    run_virtual_checked(scenario())
    (row,) = voice_rows(db_path)
    assert row["metadata"]["identified_by"] == "account" and row["status"] == "completed"
    assert row["customer_id"] is not None and row["metadata"]["caller_phone"] == "+15550100"
