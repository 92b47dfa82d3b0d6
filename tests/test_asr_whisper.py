"""The Whisper engine with the pinned tiny.en weights, on human recordings through G.711.

Recordings come from Debian packages (tests/peers/human_speech.py); the engine is loaded
once per module (about a second), a pool once for the end-to-end test.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio

from tests.peers import human_speech as human
from voice.asr.engine import EngineError, EngineSpec, create_engine, resolve_engine
from voice.asr.listener import SpeechRecognizer
from voice.asr.pool import RecognizerPool
from voice.asr.testaudio import silence
from voice.asr.whisper_engine import WhisperEngine, number_words, pick_compute_type, spoken_words
from voice.asr.whisper_models import BUNDLED, resolve_model_dir
from voice.callcontrol.call import Call, CallInfo
from voice.callcontrol.fake import FakeMedia, FakeSignalling


@pytest.fixture(autouse=True, scope="module")
def _recordings() -> None:
    missing = human.available()
    if missing:
        pytest.fail(f"human recordings missing: install {' '.join(missing)} (make setup does)")

DIGITS = list(human.DIGIT_WORDS)
MENU = [w for w, _ in human.MENU_WORDS]


@pytest.fixture(scope="module")
def engine() -> Iterator[WhisperEngine]:
    yield WhisperEngine(None)


def decode(engine: WhisperEngine, path: Path, options: list[str] | None) -> tuple[str, float]:
    stream = engine.open_stream(options)
    pcm = human.load_8k(path)
    for i in range(0, len(pcm), 800):  # 100 ms chunks, as the listener sends them
        stream.accept(pcm[i : i + 800])
    res = stream.finish()
    return res.text, res.confidence


# ---- weights: pinned, verified, never downloaded -------------------------------------------
def test_the_bundled_model_is_verified_by_sha256() -> None:
    directory = resolve_model_dir(None)
    digest = hashlib.sha256((directory / "config.json").read_bytes()).hexdigest()
    assert digest == BUNDLED["tiny.en"].files["config.json"]


def _copy_model(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).symlink_to(f)  # model.bin is 75 MB: link, do not copy
    return dst


def test_an_operator_directory_is_checked_against_its_sha256sums(tmp_path: Path) -> None:
    model = _copy_model(resolve_model_dir(None), tmp_path / "tiny")
    sums = "".join(f"{d}  {n}\n" for n, d in BUNDLED["tiny.en"].files.items())
    (model / "SHA256SUMS").write_text(sums)
    assert resolve_model_dir(str(model)) == model
    (model / "config.json").unlink()
    (model / "config.json").write_text("{}")  # a replaced file
    with pytest.raises(EngineError, match=r"config.json: sha256 .* expected 14b1b421"):
        resolve_model_dir(str(model))


def test_an_unknown_model_name_is_an_error_not_a_download(tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="not a directory and not a bundled model"):
        create_engine(EngineSpec(name="whisper", model="large-v3"))
    with pytest.raises(EngineError, match="whisper model file missing"):
        resolve_model_dir(str(tmp_path))


def test_engine_auto_picks_whisper_when_its_model_is_installed() -> None:
    assert resolve_engine("auto", None).name == "whisper"
    assert resolve_engine("auto", None, "ko").name == "pocketsphinx"  # tiny.en is English only
    assert resolve_engine("auto", None, whisper_model="/nonexistent").name == "pocketsphinx"
    assert resolve_engine("whisper", None, whisper_model="base").model == "base"


def test_compute_type_defaults_per_device() -> None:
    assert pick_compute_type("auto", "cpu") == "int8"
    assert pick_compute_type("auto", "cuda") == "float16"
    assert pick_compute_type("float32", "cpu") == "float32"


def test_numbers_are_spelled_as_flows_spell_them() -> None:
    assert number_words("10") == ["ten"] and number_words("42") == ["forty", "two"]
    assert spoken_words("Call 555, please.") == ["call", "five", "five", "five", "please"]


# ---- grammar mode: human speech -------------------------------------------------------------
@pytest.mark.parametrize(("word", "path"), human.DIGITS[::3], ids=[w for w, _ in human.DIGITS[::3]])
def test_spoken_digits_at_a_digits_menu(engine: WhisperEngine, word: str, path: Path) -> None:
    text, conf = decode(engine, path, DIGITS)
    assert text == word and conf >= 0.3


@pytest.mark.parametrize(("word", "path"), human.MENU_WORDS[::4], ids=[w for w, _ in human.MENU_WORDS[::4]])
def test_menu_words(engine: WhisperEngine, word: str, path: Path) -> None:
    text, conf = decode(engine, path, MENU)
    assert text == word and conf >= 0.3


@pytest.mark.parametrize(("phrase", "path"), human.OOG_PHRASES[::2],
                         ids=[p for p, _ in human.OOG_PHRASES[::2]])
def test_out_of_grammar_speech_is_rejected(engine: WhisperEngine, phrase: str, path: Path) -> None:
    for options in (DIGITS, ["one", "two", "three"], MENU):
        _, conf = decode(engine, path, options)
        assert conf < 0.3, (phrase, options)


def test_a_longer_answer_around_the_option_costs_confidence(engine: WhisperEngine) -> None:
    alone, _ = decode(engine, human.DIGITS[1][1], DIGITS)
    assert alone == "one"
    # "one moment please" at a digits menu: it contains "one", but the caller did not choose one
    text, conf = decode(engine, human.ALLISON / "one-moment-please.wav", DIGITS)
    assert conf < 0.3, text


# ---- free form --------------------------------------------------------------------------------
def test_free_form_read_sentence(engine: WhisperEngine) -> None:
    from benchmarks.asr import wer

    ref, path = human.sentences()[4]  # "he might even have been made amiable himself"
    text, conf = decode(engine, path, None)
    edits, _ = wer(ref, text)
    assert edits <= 1, text
    assert conf > 0.3


def test_too_little_audio_is_no_result(engine: WhisperEngine) -> None:
    stream = engine.open_stream(DIGITS)
    stream.accept(np.zeros(400, dtype=np.int16))
    assert stream.finish().text == ""


# ---- through the worker pool and the listener, as a call does ---------------------------------
@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def recognizer() -> AsyncIterator[SpeechRecognizer]:
    pool = RecognizerPool(EngineSpec(name="whisper"), workers=1, batch=4)
    await pool.start()
    yield SpeechRecognizer(pool, complete_timeout=0.5)
    await pool.close()


@pytest.mark.asyncio(loop_scope="module")
async def test_a_call_at_a_menu_through_the_pool(recognizer: SpeechRecognizer) -> None:
    media = FakeMedia(realtime=0.0)
    info = CallInfo(call_id="w1", caller="+15550100", caller_name=None, dialled="100",
                    remote="127.0.0.1:5060")
    call = Call(info, media, FakeSignalling())
    task = asyncio.create_task(recognizer.listen(call, options=MENU))
    await asyncio.sleep(0)
    media.speak(np.concatenate([silence(0.3), human.load_8k(human.MENU_WORDS[2][1]), silence(1.0)]))
    result = await asyncio.wait_for(task, 30)
    assert (result.status, result.option, result.engine) == ("match", "tuesday", "whisper")
    [seg] = call.transcript
    assert seg.text == "tuesday" and seg.confidence == pytest.approx(result.confidence, abs=0.001)
    [stats] = await recognizer.pool.stats()
    assert stats["model_loads"] == 1 and stats["decodes"] == 1


@pytest.mark.asyncio(loop_scope="module")
async def test_utterances_that_end_together_are_decoded_together(recognizer: SpeechRecognizer) -> None:
    """The pool's shared queue: a free worker takes every waiting utterance of one grammar."""
    pool = recognizer.pool
    assert not pool.streaming
    before = sum(s["decodes"] for s in await pool.stats())
    sessions = []
    for _, path in human.DIGITS[:4]:
        session = pool.open(DIGITS)
        session.send(human.load_8k(path))
        sessions.append(session)
    results = await asyncio.wait_for(asyncio.gather(*(s.finish() for s in sessions)), 60)
    assert [r.text for r in results] == DIGITS[:4]
    assert max(r.batch for r in results) > 1  # at least two shared an encoder pass
    assert sum(s["decodes"] for s in await pool.stats()) == before + 4
