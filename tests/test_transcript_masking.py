"""Card numbers and keys masked in the conversation's transcript (voice.callcontrol.masking): the
rules on their own, a `sensitive: true` queue transfer, and keys pressed to an agent during a
whole call in memory landing masked in the stored transcript."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tests.callmemory import (
    PHONE_ANSWER,
    Caller,
    Phone,
    Rig,
    hold_time_during_aiosqlite,
    run_virtual_checked,
    until,
)
from tests.test_ivr_interpreter import flow_of
from voice.callcontrol.call import TranscriptSegment
from voice.callcontrol.masking import MASK, mask_digit_runs, note_bridge_key
from voice.ivr.harness import make_call
from voice.ivr.scripted import run_script

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize(("said", "kept"), [
    ("my card is 4111 1111 1111 1111 thanks", "my card is **** thanks"),
    ("4111-1111-1111-1111", MASK),
    ("four one one one one one one one one one one one one one one one", MASK),
    ("Four one one one, 1111 2222 3333, expiry", "****, expiry"),
    ("order 12345 please", "order 12345 please"),  # short numbers stay
    ("call me on 030 1234 567", "call me on 030 1234 567"),  # 11 digits: a phone number
    ("one moment, I have two questions", "one moment, I have two questions"),
])
def test_digit_runs_of_card_length_are_masked(said: str, kept: str) -> None:
    assert mask_digit_runs(said) == kept


def test_the_call_masks_what_enters_its_transcript() -> None:
    async def scenario() -> None:
        call, _media, _sig = make_call()
        call.add_segment(TranscriptSegment(start=0, end=1, speaker="caller", kind="speech",
                                           text="it is 4111 1111 1111 1111",
                                           alternatives=(("it is 4111", 0.5),)))
        call.add_segment(TranscriptSegment(start=1, end=2, speaker="agent", kind="speech",
                                           text="so that is 4111111111111111, right"))
        call.add_segment(TranscriptSegment(start=2, end=2, speaker="caller", kind="dtmf", text="0"))
        call.add_segment(TranscriptSegment(start=2, end=3, speaker="caller", kind="speech", text="pin 1234"))
        call.sensitive += 1  # a sensitive transfer: every digit the caller says
        call.add_segment(TranscriptSegment(start=3, end=4, speaker="caller", kind="speech", text="pin 1234"))
        call.add_segment(TranscriptSegment(start=4, end=5, speaker="agent", kind="speech", text="code 42"))
        texts = [(s.speaker, s.kind, s.text) for s in call.transcript]
        assert texts == [("caller", "speech", "it is ****"), ("agent", "speech", "so that is ****, right"),
                         ("caller", "dtmf", "0"), ("caller", "speech", "pin 1234"),
                         ("caller", "speech", "pin ****"), ("agent", "speech", "code 42")]
        assert call.transcript[0].alternatives == ()  # the n-best would say what the mask hides

    asyncio.run(scenario())


def test_keys_during_a_conversation_become_one_masked_run_per_speaker() -> None:
    async def scenario() -> None:
        t = [10.0]
        call, _media, _sig = make_call(clock=lambda: t[0])
        for _ in range(16):
            note_bridge_key(call, "caller")
            t[0] += 0.3
        t[0] += 5
        note_bridge_key(call, "agent")
        note_bridge_key(call, "caller")  # after a pause: a run of its own
        runs = [(s.speaker, s.kind, s.text, s.start, s.end) for s in call.transcript]
        assert runs == [("caller", "dtmf", MASK, 0.0, 4.5), ("agent", "dtmf", MASK, 9.8, 9.8),
                        ("caller", "dtmf", MASK, 9.8, 9.8)]

    asyncio.run(scenario())


def test_a_sensitive_queue_transfer_masks_the_callers_digits_while_with_the_agent(tmp_path: Path) -> None:
    flow = flow_of(tmp_path, """
        start: go
        nodes:
          go:
            transfer: {to: "queue:payments", sensitive: true, on_failure: sorry}
          sorry: {hangup: Transfer failed.}
    """)
    seen: list[int] = []

    async def to_queue(call: Any, _name: str) -> bool:
        seen.append(call.sensitive)
        call.add_segment(TranscriptSegment(start=0, end=1, speaker="caller", kind="speech",
                                           text="it is 1234"))
        return True

    run = run_script(flow, [], tmp_path=tmp_path, transfer_queue=to_queue)
    assert seen == [1] and run.call.sensitive == 0  # only while with the agent
    assert [s.text for s in run.call.transcript if s.kind == "speech"] == ["it is ****"]


def test_keys_pressed_to_an_agent_are_stored_masked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hold_time_during_aiosqlite(monkeypatch)

    async def scenario() -> None:
        rig = await Rig(tmp_path).start()
        try:
            await rig.add_agent("ann", skills=["support"])
            caller, phone = Caller(rig), Phone(rig)
            caller.invite()
            await caller.answered()
            caller.ack()
            caller.session.press("0")
            await phone.rings()
            phone.reply(200, PHONE_ANSWER)
            await phone.acked()
            agent_media = rig.pool.sessions[1]
            await until(lambda: bool(agent_media.listeners_set), "the bridge")
            for key in "4111111111111111":  # the caller keys a card number for the agent
                caller.session.press(key)
                await asyncio.sleep(0.2)
            await until(lambda: len(agent_media.sent_dtmf) == 16, "the keys relayed to the agent")
            phone.bye()
            await caller.hung_up()
            await rig.calls_over()
        finally:
            await rig.close()

    run_virtual_checked(scenario())
    with sqlite3.connect(tmp_path / "data" / "voice.db") as db:
        rows = db.execute("SELECT speaker, kind, text FROM transcript_segments ORDER BY start, id"
                          ).fetchall()
    keyed = [r for r in rows if r[1] == "dtmf"]
    assert keyed == [("caller", "dtmf", "0"), ("caller", "dtmf", MASK)]  # the menu key, then the masked run
    assert not any("4111" in r[2] for r in rows)
