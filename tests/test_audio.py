"""voice.audio: prompt loading/resampling/caching, generated audio, WAV recorder."""

from __future__ import annotations

import os

import numpy as np
import pytest
import soundfile as sf

from voice.audio import WavRecorder, load_prompt, load_prompt_async, resample, silence, tone


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.asarray(x, dtype=float) ** 2)))


@pytest.mark.parametrize("src", [11025, 16000, 22050, 44100, 48000, 6000])
def test_resample_keeps_the_voice_band_and_removes_aliases(src):
    n = np.arange(src)  # one second
    y = resample(np.sin(2 * np.pi * 1000 * n / src), src, 8000)
    assert len(y) == 8000
    ref = np.sin(2 * np.pi * 1000 * np.arange(8000) / 8000)
    assert np.abs(y[200:-200] - ref[200:-200]).max() < 1e-3  # a 1 kHz tone comes out exact
    if src > 10000:
        alias = resample(np.sin(2 * np.pi * 5000 * n / src), src, 8000)  # would fold to 3 kHz
        assert rms(alias[200:-200]) < 0.01 * rms(ref)  # at least 40 dB down


def test_load_prompt_any_format_to_mono_8k_cached_by_mtime(tmp_path):
    t = np.arange(48000) / 48000
    stereo = np.stack([0.5 * np.sin(2 * np.pi * 440 * t), 0.5 * np.sin(2 * np.pi * 440 * t)], axis=1)
    flac = tmp_path / "p.flac"
    sf.write(str(flac), stereo, 48000, subtype="PCM_24")
    pcm = load_prompt(flac)
    assert pcm.dtype == np.int16 and pcm.ndim == 1 and len(pcm) == 8000
    assert not pcm.flags.writeable
    assert abs(rms(pcm[100:-100]) - 0.5 * 32767 / np.sqrt(2)) < 200
    assert load_prompt(flac) is pcm  # cache hit
    wav = tmp_path / "q.wav"
    sf.write(str(wav), np.zeros(16000, dtype=np.int16), 16000)
    assert len(load_prompt(wav)) == 8000
    # the file changes: the cache notices through the mtime
    sf.write(str(flac), stereo[:24000] * 0.1, 48000, subtype="PCM_24")
    st = os.stat(flac)
    os.utime(flac, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    again = load_prompt(flac)
    assert again is not pcm and len(again) == 4000


async def test_load_prompt_async(tmp_path):
    wav = tmp_path / "a.wav"
    sf.write(str(wav), tone(300, 100), 8000)
    pcm = await load_prompt_async(wav)
    assert np.array_equal(pcm, tone(300, 100))


def test_tone_and_silence():
    t = tone(1000, 250, amplitude=0.5)
    assert t.dtype == np.int16 and len(t) == 2000
    assert abs(int(t.max()) - 16384) < 2
    spec = np.abs(np.fft.rfft(t.astype(float)))
    assert int(np.argmax(spec)) * 8000 / len(t) == 1000
    s = silence(60)
    assert s.dtype == np.int16 and len(s) == 480 and not s.any()


def test_recorder_mono_fills_gaps_with_silence_and_flushes_incrementally(tmp_path):
    path = tmp_path / "sub" / "mono.wav"
    rec = WavRecorder(path, flush_frames=5)
    frames = [np.full(160, 100 * (i + 1), np.int16) for i in range(8)]
    for i, f in enumerate(frames):
        rec.caller_frame(f)
        rec.tick()
        if i == 3:
            rec.tick()  # a 20 ms slot in which the caller sent nothing
    assert sf.info(str(path)).frames == 5 * 160  # the first block is already on disk
    assert rec.close() == path
    data, rate = sf.read(str(path), dtype="int16")
    assert rate == 8000 and len(data) == 9 * 160
    levels = [int(data[i * 160]) for i in range(9)]
    assert levels == [100, 200, 300, 400, 0, 500, 600, 700, 800]


def test_recorder_stereo_left_caller_right_us(tmp_path):
    path = tmp_path / "both.wav"
    rec = WavRecorder(path, both_directions=True)
    rec.caller_frame(np.full(160, 7, np.int16))
    rec.tick(np.full(160, -9, np.int16))
    rec.tick(np.full(60, 5, np.int16))  # end of a prompt: a short frame is padded
    rec.close()
    rec.close()
    data, _ = sf.read(str(path), dtype="int16")
    assert data.shape == (320, 2)
    assert set(data[:160, 0]) == {7} and set(data[:160, 1]) == {-9}
    assert set(data[160:, 0]) == {0} and set(data[160:220, 1]) == {5} and set(data[220:, 1]) == {0}


def test_recorder_drops_oldest_when_caller_runs_ahead(tmp_path):
    rec = WavRecorder(tmp_path / "d.wav")
    for i in range(WavRecorder.MAX_QUEUE + 3):
        rec.caller_frame(np.full(160, i, np.int16))
    rec.tick()
    rec.close()
    data, _ = sf.read(str(tmp_path / "d.wav"), dtype="int16")
    assert int(data[0]) == 3
