"""`voice asr transcribe FILE.wav`: a timed transcript of a recording."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from voice.asr.audio import Upsampler2x
from voice.asr.testaudio import render_phrase, speech_onset


# ---- the admin's transcribe command --------------------------------------------------------
def test_transcribe_command_prints_timed_segments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from voice.asr.cli import transcribe_main

    first = render_phrase("technical support", voice="awb")
    second = render_phrase("what is my account balance", voice="rms")
    wav = tmp_path / "call.wav"
    # a 16 kHz recording: the command brings it to the telephone rate itself
    sf.write(wav, Upsampler2x().process(np.concatenate([first, second])), 16000, subtype="PCM_16")
    args = argparse.Namespace(file=str(wav), engine="pocketsphinx", model=None, config=None)
    assert transcribe_main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "engine pocketsphinx" in lines[0]
    assert len(lines) == 3, lines
    assert lines[1].endswith("technical support")
    assert lines[2].endswith("what is my account balance")

    def start_of(line: str) -> float:
        minutes, seconds = line[1:].split(" - ")[0].split(":")
        return int(minutes) * 60 + float(seconds)

    assert start_of(lines[1]) == pytest.approx(speech_onset(first), abs=0.05)
    assert start_of(lines[2]) == pytest.approx(len(first) / 8000 + speech_onset(second), abs=0.05)


def test_transcribe_command_reports_an_unreadable_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from voice.asr.cli import transcribe_main

    bad = tmp_path / "not.wav"
    bad.write_text("hello")
    args = argparse.Namespace(file=str(bad), engine="pocketsphinx", model=None, config=None)
    assert transcribe_main(args) == 1
    assert "cannot read audio" in capsys.readouterr().err


def test_transcribe_with_a_grammar_shows_what_a_menu_would_take(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two digits (Allison) around a phrase that is not on the menu (the speaker-test voice)."""
    from tests.peers import human_speech
    from voice.asr.cli import transcribe_main
    from voice.asr.testaudio import silence

    if human_speech.available():
        pytest.fail(f"install {' '.join(human_speech.available())} (make setup does)")
    parts = [silence(0.3), human_speech.load_8k(human_speech.DIGITS[2][1]), silence(0.8),
             human_speech.load_8k(human_speech.OOG_PHRASES[1][1]), silence(0.8),
             human_speech.load_8k(human_speech.DIGITS[3][1]), silence(0.8)]
    wav = tmp_path / "menu.wav"
    sf.write(wav, np.concatenate(parts), 8000, subtype="PCM_16")
    args = argparse.Namespace(file=str(wav), engine="whisper", model=None, config=None,
                              grammar="one,two,three")
    assert transcribe_main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "engine whisper, grammar one, two, three" in lines[0]
    assert len(lines) == 4, lines
    assert lines[1].endswith(" two")
    assert " no match (min_confidence 0.30; heard " in lines[2]
    assert lines[3].endswith(" three")


def test_transcribe_rejects_an_empty_grammar(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from voice.asr.cli import transcribe_main

    wav = tmp_path / "x.wav"
    sf.write(wav, np.zeros(8000, dtype=np.int16), 8000, subtype="PCM_16")
    args = argparse.Namespace(file=str(wav), engine="whisper", model=None, config=None, grammar=" , ")
    assert transcribe_main(args) == 2
    assert "--grammar needs at least one word" in capsys.readouterr().err
