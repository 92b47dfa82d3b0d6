"""Caller speech for tests and benchmarks: TTS phrases as a phone line would deliver them.

`render_phrase` speaks a phrase with flite or espeak-ng, converts it with sox to
8 kHz mono, pads it with silence, and passes it through a G.711 encode/decode
round trip (what RTP does to it). Files go to a temporary directory and are deleted.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import numpy as np

from voice.rtp import g711

FLITE_VOICES = ("slt", "kal", "awb", "rms")


def g711_round_trip(pcm: np.ndarray, codec: str = "PCMU") -> np.ndarray:
    return np.asarray(g711.decode(g711.encode(pcm.astype(np.int16), codec), codec), dtype=np.int16)


def render_phrase(
    text: str,
    *,
    tts: str = "flite",
    voice: str = "slt",
    lead: float = 1.0,
    tail: float = 1.2,
    codec: str = "PCMU",
    words_per_minute: int | None = None,
) -> np.ndarray:
    """8 kHz int16 audio of `text` with `lead`/`tail` seconds of silence, through G.711."""
    with tempfile.TemporaryDirectory(prefix="voice-asr-") as tmp:
        raw = Path(tmp) / "raw.wav"
        out = Path(tmp) / "out.wav"
        if tts == "flite":
            cmd = ["flite", "-voice", voice, "-t", text, "-o", str(raw)]
        elif tts == "espeak-ng":
            cmd = ["espeak-ng", "-v", voice, "-w", str(raw), text]
            if words_per_minute:
                cmd[1:1] = ["-s", str(words_per_minute)]
        else:
            raise ValueError(f"unknown TTS {tts!r} (flite or espeak-ng)")
        subprocess.run(cmd, check=True, capture_output=True, timeout=60)
        subprocess.run(
            [
                "sox",
                str(raw),
                "-r",
                "8000",
                "-c",
                "1",
                "-b",
                "16",
                "-e",
                "signed",
                str(out),
                "pad",
                str(lead),
                str(tail),
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        import soundfile as sf

        pcm, rate = sf.read(str(out), dtype="int16")
    assert rate == 8000
    return g711_round_trip(np.asarray(pcm), codec)


def silence(seconds: float, codec: str = "PCMU") -> np.ndarray:
    return g711_round_trip(np.zeros(int(seconds * 8000), dtype=np.int16), codec)


def white_noise(seconds: float, level: float = 0.3, seed: int = 7, codec: str = "PCMU") -> np.ndarray:
    """Uniform white noise at `level` of full scale (a hiss or a bad line, not speech)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-level, level, int(seconds * 8000)) * 32767
    return g711_round_trip(x.astype(np.int16), codec)


def speech_onset(pcm: np.ndarray, level: float = 0.01) -> float:
    """Seconds to the first sample above `level` of full scale (where the talker starts)."""
    idx = np.flatnonzero(np.abs(pcm.astype(np.int32)) > level * 32768)
    return float(idx[0]) / 8000 if len(idx) else float("nan")


def write_wav(path: str | Path, pcm: np.ndarray, rate: int = 8000) -> Path:
    """Save int16 mono audio (e.g. to turn into an RTP pcap for sipp)."""
    import soundfile as sf

    sf.write(str(path), pcm.astype(np.int16), rate, subtype="PCM_16")
    return Path(path)
