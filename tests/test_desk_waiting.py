"""What a waiting caller hears, in memory on virtual time (voice.ivr.vtime): music on hold with no
gap, the position at once and at the interval, ringback or music while the agent's phone rings;
then the same through the whole desk (SQLite, the queue engine, a fake connector)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cti.agents import AgentStore
from cti.db import migrate, open_database
from cti.events import EventBus
from cti.queues import AgentState, QueueEngine, QueueSpec
from cti.routing import AgentDesk
from cti.store import CustomerStore
from cti.waiting import SAMPLE_RATE, CallerHold, MusicLibrary, hold_music, load_music, position_text, ringback
from tests.desk_fakes import FakeCall, FakeConnector, Heard, plays
from voice.ivr.vtime import run_virtual

ROOT = Path(__file__).resolve().parent.parent
MAX_GAP = 1.0  # seconds of dead air we accept anywhere


class FakeVoice:
    """A TTS that takes `delay` seconds (loop time) and gives each text its own 2 s tone."""

    def __init__(self, delay: float = 0.3) -> None:
        self.delay = delay
        self.sounds: dict[str, np.ndarray] = {}

    async def render(self, text: str) -> np.ndarray:
        await asyncio.sleep(self.delay)
        if text not in self.sounds:
            t = np.arange(2 * SAMPLE_RATE) / SAMPLE_RATE
            f = 300 + 50 * len(self.sounds)
            self.sounds[text] = (np.sin(2 * np.pi * f * t) * 6000).astype(np.int16)
        return self.sounds[text]

    def said(self, call: FakeCall, position: int) -> list[Heard]:
        sound = self.sounds.get(position_text(position))
        return [] if sound is None else list(plays(call, sound))


def longest_silence(pcm: np.ndarray, threshold: float = 200.0) -> float:
    """Seconds of the longest stretch whose 20 ms energy stays under `threshold`."""
    frames = np.abs(pcm[: len(pcm) // 160 * 160].astype(np.float64)).reshape(-1, 160).mean(axis=1)
    longest = run = 0
    for quiet in frames < threshold:
        run = run + 1 if quiet else 0
        longest = max(longest, run)
    return longest * 0.02


def offset_in(pcm: np.ndarray, sound: np.ndarray) -> int:
    return (pcm.__array_interface__["data"][0] - sound.__array_interface__["data"][0]) // sound.itemsize


def virtual(coro_fn: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """On virtual time: the desk's database work runs in the store's thread pools, which the loop
    waits for (voice.ivr.vtime), so a hold of minutes takes milliseconds and no timer overtakes it."""
    run_virtual(coro_fn())


def test_the_builtin_music_has_no_silence_and_the_committed_file_is_what_the_generator_makes() -> None:
    music = hold_music()
    assert len(music) == 16 * SAMPLE_RATE and longest_silence(music) == 0.0
    assert 3000 < np.abs(music).max() < 12000  # audible, not shouting
    np.testing.assert_array_equal(hold_music(), music)  # reproducible
    committed = load_music(ROOT / "recordings" / "moh" / "default.wav")
    assert len(committed) == len(music)
    assert np.abs(committed.astype(int) - music).max() < 300  # G.711 mu-law quantisation only
    tone = ringback()
    assert np.abs(tone[: 2 * SAMPLE_RATE]).min() < np.abs(tone[: 2 * SAMPLE_RATE]).max()  # a tone...
    assert not tone[2 * SAMPLE_RATE:].any()  # ...then the cadence's pause


def test_music_plays_without_gaps_and_the_position_is_said_on_change_and_every_interval() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        call, voice, music = FakeCall("hold-1"), FakeVoice(), hold_music()
        hold = CallerHold(call, music=music, ringback=None, voice=voice, announce_interval=15.0)
        t0 = loop.time()
        hold.start()
        hold.position(3)
        await asyncio.sleep(20)
        hold.position(2)
        await asyncio.sleep(30)
        hold.ringing()  # an agent's phone rings: the music goes on, no announcements
        await asyncio.sleep(10)
        hold.waiting()  # they did not answer
        await asyncio.sleep(10)
        await hold.close()
        t_end = loop.time()

        assert call.overlaps == 0
        assert max((b - a for a, b in call.gaps(t0, t_end)), default=0.0) <= MAX_GAP
        assert longest_silence(call.audio(t0, t_end)) <= MAX_GAP
        threes, twos = voice.said(call, 3), voice.said(call, 2)
        # said at once (after the 0.3 s render, the music playing meanwhile), and again 15 s later
        assert [round(h.start - t0, 1) for h in threes] == [0.3, 17.3]
        assert all(h.complete for h in threes)
        # the change to 2 at t=20 interrupts what plays; said again every 15 s, none while ringing
        assert [round(h.start - t0, 1) for h in twos][:3] == [20.3, 37.3, 60.0]
        assert not [h for h in twos if 50 <= h.start - t0 < 60]
        # the music resumes where it stopped, never from the top
        music_plays = plays(call, music)
        for prev, nxt in itertools.pairwise(music_plays):
            played = min(len(prev.pcm), round((prev.end - prev.start) * SAMPLE_RATE))
            assert offset_in(nxt.pcm, music) == (offset_in(prev.pcm, music) + played) % len(music)
        assert not call.heard[-1].complete or call.heard[-1].end <= t_end  # close stopped it

    virtual(scenario)


def test_ringback_while_the_agent_rings_then_music_again() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        call, music, tone = FakeCall("hold-2"), hold_music(), ringback()
        hold = CallerHold(call, music=music, ringback=tone, voice=None, announce_interval=30.0)
        t0 = loop.time()
        hold.start()
        await asyncio.sleep(5)
        hold.ringing()
        await asyncio.sleep(14)
        hold.waiting()
        await asyncio.sleep(3)
        await hold.close()
        t_end = loop.time()
        rings = plays(call, tone)
        assert rings and round(rings[0].start - t0, 3) == 5.0  # at once, not after the music slice
        assert round(rings[-1].end - t0, 3) == 19.0
        assert [round(h.start - t0, 3) for h in rings] == [5.0, 11.0, 17.0]  # the cadence repeats
        assert all(h.start - t0 >= 19.0 or h.end - t0 <= 5.0 for h in plays(call, music))
        assert max((b - a for a, b in call.gaps(t0, t_end)), default=0.0) <= MAX_GAP
        assert call.overlaps == 0

    virtual(scenario)


def test_closing_the_hold_stops_what_plays_at_once_and_the_words_fit_the_place() -> None:
    assert position_text(1) == "You are next in line. Please hold."
    assert position_text(3) == "You are number 3 in line. Please hold."

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        call, voice = FakeCall("hold-4"), FakeVoice()
        hold = CallerHold(call, music=hold_music(), ringback=None, voice=voice, announce_interval=30)
        hold.start()
        hold.position(4)
        await asyncio.sleep(1.0)  # the announcement (2 s) is playing
        assert not voice.said(call, 4)  # still playing (a play is recorded when it ends)
        stopped_at = loop.time()
        await hold.close()  # an agent answered: the bridge takes the caller's ear now
        assert loop.time() == stopped_at
        last = call.heard[-1]
        assert not last.complete and last.end == stopped_at and voice.said(call, 4)[-1] is last
        await asyncio.sleep(10)
        assert call.heard[-1] is last  # nothing more

    virtual(scenario)


def test_a_caller_who_hangs_up_ends_the_hold() -> None:
    async def scenario() -> None:
        call = FakeCall("hold-3")
        hold = CallerHold(call, music=hold_music(), ringback=None, voice=FakeVoice(), announce_interval=10)
        hold.start()
        hold.position(1)
        await asyncio.sleep(3)
        call.hang_up()
        await asyncio.sleep(0.1)
        assert hold._task is not None and hold._task.done()
        heard = len(call.heard)
        await asyncio.sleep(30)
        assert len(call.heard) == heard  # nothing more is played to a call that ended
        await hold.close()

    virtual(scenario)


@pytest.mark.timeout(60)
def test_through_the_desk_callers_hear_music_position_and_ringback_until_the_agent_answers(
        tmp_path: Path) -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        db = open_database(f"sqlite+aiosqlite:///{tmp_path / 'voice.db'}")
        await migrate(db)
        agents = AgentStore(db)
        await agents.create_agent(agent_id="ann", name="Ann", sip_uri="sip:ann@127.0.0.1",
                                  skills=["support"], password=None)
        voice = FakeVoice()
        spec = QueueSpec(name="support", ring_timeout=20, announce_interval=12, ringing="ringback",
                         service_level=60)
        connector = FakeConnector({"ann": 8.0}, talk=None)  # ann's phone rings 8 s before she answers
        music = MusicLibrary()
        desk = AgentDesk(store=CustomerStore(db), agents=agents, bus=EventBus(), connector=connector,
                         voice=voice, engine=QueueEngine([spec]), music=music, clock=loop.time)
        await desk.start()
        try:
            first, second = FakeCall("desk-1", "+4930111"), FakeCall("desk-2", "+4930222")
            t0 = loop.time()
            r1 = asyncio.ensure_future(desk.transfer_queue(first, "support"))
            await asyncio.sleep(1)
            r2 = asyncio.ensure_future(desk.transfer_queue(second, "support"))
            await asyncio.sleep(39)
            await desk.set_agent_state("ann", AgentState.AVAILABLE)  # at t=40: first is offered
            while not connector.connections:
                await asyncio.sleep(0.1)
            t_answer = loop.time()
            assert 47.5 < t_answer - t0 < 49  # rang 8 s
            await asyncio.sleep(5)
            connector.connections[0].finish("agent", 5.0)
            o1 = await r1
            assert o1.ok and o1.hangup_by == "agent" and o1.talk_seconds == 5.0
            assert (await agents.get_agent("ann"))["state"] == "wrap_up"  # type: ignore[index]
            second.hang_up()
            o2 = await r2
            assert o2.reason == "abandoned"
            t_end = loop.time()

            # the first caller: no dead air from entering the queue to the agent answering
            gaps = first.gaps(t0, t_answer)
            assert max((b - a for a, b in gaps), default=0.0) <= MAX_GAP, gaps
            assert first.overlaps == 0
            # "You are next in line" at once (0.3 s to render), then 12 s after each announcement ended
            assert [round(h.start - t0, 1) for h in voice.said(first, 1)] == [0.3, 14.3, 28.3]
            rings = plays(first, music.ringback)
            # ringback from the moment ann is offered (t=40) until she answers: no announcement between
            rang = [(round(h.start - t0, 1), round(h.end - t0, 1)) for h in rings]
            assert rang == [(40.0, 46.0), (46.0, 48.0)]
            assert not [h for h in first.heard if h.start > t_answer + 0.01]  # the bridge takes over
            # the second caller: "2" at once, "1" when the first left the line, no dead air
            assert [round(h.start - t0, 1) for h in voice.said(second, 2)] == [1.3, 15.3, 29.3]
            assert [round(h.start - t0, 1) for h in voice.said(second, 1)][:1] == [40.3]
            gaps = second.gaps(t0 + 1, t_end)
            assert max((b - a for a, b in gaps), default=0.0) <= MAX_GAP, gaps
            service = desk.snapshot()["service"]["support"]
            assert service["answered"] == 1 and service["abandoned"] == 1 and service["service_level"] == 0.5
        finally:
            await desk.close()
            await db.dispose()

    virtual(scenario)


def test_a_timed_out_caller_moves_to_the_overflow_queue(tmp_path: Path) -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        db = open_database(f"sqlite+aiosqlite:///{tmp_path / 'voice.db'}")
        await migrate(db)
        agents = AgentStore(db)
        await agents.create_agent(agent_id="ann", name="Ann", sip_uri="sip:ann@127.0.0.1",
                                  skills=["support"], password=None)
        await agents.create_agent(agent_id="gus", name="Gus", sip_uri="sip:gus@127.0.0.1",
                                  skills=["general"], password=None)
        connector = FakeConnector({"gus": 1.0})
        engine = QueueEngine([QueueSpec(name="support", timeout=10, overflow="general"),
                              QueueSpec(name="general", timeout=10, overflow="support")])
        desk = AgentDesk(store=CustomerStore(db), agents=agents, bus=EventBus(), connector=connector,
                         engine=engine, clock=loop.time)
        await desk.start()
        try:
            await desk.set_agent_state("gus", AgentState.AVAILABLE)
            call = FakeCall("ovf-1")
            outcome = await desk.transfer_queue(call, "support")  # ann is away
            assert outcome.ok and outcome.agent_id == "gus" and outcome.queue == "general"
            assert 10 <= outcome.waited < 13
            await desk.set_agent_state("gus", AgentState.AWAY)
            lonely = await desk.transfer_queue(FakeCall("ovf-2"), "support")  # both away: no loop
            assert not lonely.ok and lonely.reason == "timeout" and 19 <= lonely.waited < 22
        finally:
            await desk.close()
            await db.dispose()

    virtual(scenario)


def test_a_transfer_cancelled_while_the_agent_rings_cancels_the_ringing_and_frees_the_agent(
        tmp_path: Path) -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        db = open_database(f"sqlite+aiosqlite:///{tmp_path / 'voice.db'}")
        await migrate(db)
        agents = AgentStore(db)
        await agents.create_agent(agent_id="ann", name="Ann", sip_uri="sip:ann@127.0.0.1",
                                  skills=["support"], password=None)
        connector = FakeConnector({"ann": None}, talk=None)  # rings on
        desk = AgentDesk(store=CustomerStore(db), agents=agents, bus=EventBus(), connector=connector,
                         clock=loop.time)
        await desk.start()
        try:
            await desk.set_agent_state("ann", AgentState.AVAILABLE)
            call = FakeCall("cancel-1")
            routed = asyncio.ensure_future(desk.transfer_queue(call, "support"))
            await asyncio.sleep(3)
            assert (await agents.get_agent("ann"))["state"] == "ringing"  # type: ignore[index]
            routed.cancel()  # e.g. the service stops at once
            with pytest.raises(asyncio.CancelledError):
                await routed
            assert connector.cancelled == ["ann"]  # the INVITE is CANCELled
            ann = await agents.get_agent("ann")
            assert ann is not None and ann["state"] == "available" and ann["call_id"] is None
            heard = len(call.heard)
            await asyncio.sleep(5)
            assert len(call.heard) == heard  # the hold music stopped too

            # cancelled during the conversation: the agent's leg is hung up, the agent wraps up
            connector.answer_after["ann"] = 0.0
            call = FakeCall("cancel-2")
            routed = asyncio.ensure_future(desk.transfer_queue(call, "support"))
            while not connector.connections:
                await asyncio.sleep(0.1)
            routed.cancel()
            with pytest.raises(asyncio.CancelledError):
                await routed
            assert connector.connections[0].hung_up
            assert (await agents.get_agent("ann"))["state"] == "wrap_up"  # type: ignore[index]
        finally:
            await desk.close()
            await db.dispose()

    virtual(scenario)
