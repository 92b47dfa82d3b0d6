"""Human speech for tests and benchmarks, from Debian packages (no synthetic voices).

Every recording is a person: Allison Smith's IVR prompts (asterisk-core-sounds-en-wav,
CC-BY-SA 3.0), the speaker-test voice (alsa-utils), CMU test utterances of several speakers
(pocketsphinx-testdata: LibriVox read sentences, spoken card names) and ktuberling's spoken
words (ktuberling-data, another speaker). Each is brought to 8 kHz and passed through a
G.711 µ-law round trip, as a caller's RTP delivers it.

Sets (name -> list of (reference text, path)):
- held-out (targets are measured on these; nothing was tuned on them):
  DIGITS, MENU_WORDS (16 options at one menu), OOG_PHRASES (8 phrases a menu must reject,
  speaker-test voice), SENTENCES (read sentences for free form);
- development (the grammar confidence floor was calibrated on these):
  DEV_WORDS (ktuberling), DEV_OOG (Allison's multi-word prompts).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np

ALLISON = Path("/usr/share/asterisk/sounds/en_US_f_Allison")
ALSA = Path("/usr/share/sounds/alsa")
PS_DATA = Path("/usr/share/pocketsphinx/test/data")
KTUBERLING = Path("/usr/share/ktuberling/sounds/en")
PACKAGES = ("asterisk-core-sounds-en-wav", "alsa-utils", "pocketsphinx-testdata", "ktuberling-data")

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
DIGITS = [(w, ALLISON / "digits" / f"{i}.wav") for i, w in enumerate(DIGIT_WORDS)]

_DAYS = ("sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday")
_MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august",
           "september", "october", "november", "december")
# one menu of 16 options: the week's days and nine of the NATO spelling words
_NATO = ("alpha", "bravo", "charlie", "delta", "echo", "hotel", "kilo", "lima", "oscar")
MENU_WORDS = [(d, ALLISON / "digits" / f"day-{i}.wav") for i, d in enumerate(_DAYS)] + [
    (w, ALLISON / "phonetic" / f"{w[0]}_p.wav") for w in _NATO
]
MONTHS = [(m, ALLISON / "digits" / f"mon-{i}.wav") for i, m in enumerate(_MONTHS)]

OOG_PHRASES = [
    (text, ALSA / f"{name}.wav")
    for name, text in (
        ("Front_Center", "front center"), ("Front_Left", "front left"), ("Front_Right", "front right"),
        ("Rear_Center", "rear center"), ("Rear_Left", "rear left"), ("Rear_Right", "rear right"),
        ("Side_Left", "side left"), ("Side_Right", "side right"),
    )
]

_LIBRIVOX = PS_DATA / "librivox"
_CARDS = PS_DATA / "cards"


def _transcriptions(path: Path) -> dict[str, str]:
    """CMU transcription lines: '<s> words </s> (utterance-id)'."""
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if "(" not in line:
            continue
        text, uid = line.rsplit("(", 1)
        out[uid.strip(" )")] = " ".join(w for w in text.split() if w not in ("<s>", "</s>"))
    return out


def sentences() -> list[tuple[str, Path]]:
    """Read sentences (LibriVox, several words each) and spoken card names (CMU speakers)."""
    rows = [(t, _LIBRIVOX / f"{uid}.wav") for uid, t in _transcriptions(_LIBRIVOX / "transcription").items()]
    rows += [(t, _CARDS / f"{uid}.wav") for uid, t in _transcriptions(_CARDS / "cards.transcription").items()]
    return rows


DEV_OOG = [
    (text, ALLISON / f"{name}.wav")
    for name, text in (
        ("please-try-again", "please try again"), ("one-moment-please", "one moment please"),
        ("im-sorry", "i'm sorry"), ("hello-world", "hello world"),
        ("all-circuits-busy-now", "all circuits are busy now"),
        ("something-terribly-wrong", "something is terribly wrong"),
        ("goodbye", "goodbye"), ("extension", "extension"), ("calling", "calling"), ("invalid", "invalid"),
    )
]


def dev_words() -> list[tuple[str, Path]]:
    """ktuberling's spoken object names: one word each, file name = word."""
    rows = []
    for p in sorted(KTUBERLING.glob("*.ogg")):
        word = p.stem.split("_")[-1]
        if word.isalpha() and len(word) > 2:
            rows.append((word, p))
    return rows


def available() -> list[str]:
    """The Debian packages missing on this machine (empty when every set can be loaded)."""
    probes = {PACKAGES[0]: ALLISON / "digits" / "0.wav", PACKAGES[1]: ALSA / "Front_Left.wav",
              PACKAGES[2]: _LIBRIVOX / "transcription", PACKAGES[3]: KTUBERLING / "ball.ogg"}
    return [pkg for pkg, probe in probes.items() if not probe.exists()]


@cache
def load_8k(path: Path, codec: str = "PCMU") -> np.ndarray:
    """The recording at 8 kHz mono int16 after a G.711 round trip (what RTP delivers)."""
    import soundfile as sf

    from voice.asr.audio import to_mono_8k
    from voice.asr.testaudio import g711_round_trip

    data, rate = sf.read(str(path), dtype="int16")
    return g711_round_trip(to_mono_8k(np.asarray(data), rate), codec)
