"""DTMF: RFC 4733 receive/send and in-band Goertzel detection."""

from __future__ import annotations

import random
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from voice.audio import dtmf_tone, silence
from voice.rtp.dtmf import (
    EVENT_DIGITS,
    GoertzelDetector,
    Rfc4733Receiver,
    Rfc4733Sender,
    TelephoneEvent,
    rfc4733_packets,
)
from voice.rtp.packet import RtpPacket

DATA = Path(__file__).parent / "data" / "rtp"


def read_pcap_udp_payloads(path: Path) -> list[bytes]:
    """A tiny libpcap reader: Ethernet / IPv4 / UDP payloads, in file order."""
    raw = path.read_bytes()
    magic = raw[:4]
    endian = {b"\xd4\xc3\xb2\xa1": "<", b"\xa1\xb2\xc3\xd4": ">"}[magic]
    (linktype,) = struct.unpack_from(endian + "I", raw, 20)
    assert linktype == 1, "expects Ethernet captures"
    out, pos = [], 24
    while pos + 16 <= len(raw):
        _sec, _usec, incl, _orig = struct.unpack_from(endian + "IIII", raw, pos)
        frame = raw[pos + 16:pos + 16 + incl]
        pos += 16 + incl
        if struct.unpack_from("!H", frame, 12)[0] != 0x0800:
            continue
        ip = frame[14:]
        ihl = (ip[0] & 0x0F) * 4
        if ip[9] != 17:
            continue
        (udp_len,) = struct.unpack_from("!H", ip, ihl + 4)
        out.append(bytes(ip[ihl + 8:ihl + udp_len]))
    return out


PCAPS = {"0": "0", "1": "1", "2": "2", "3": "3", "4": "4", "5": "5", "6": "6", "7": "7", "8": "8",
         "9": "9", "pound": "#", "star": "*"}


@pytest.mark.parametrize(("name", "digit"), sorted(PCAPS.items()))
def test_sipp_pcaps_give_exactly_one_digit(name, digit):
    packets = [RtpPacket.parse(p) for p in read_pcap_udp_payloads(DATA / f"dtmf_2833_{name}.pcap")]
    assert len(packets) == 10 and all(p.payload_type == 101 for p in packets)
    assert packets[0].marker
    ends = [p for p in packets if TelephoneEvent.parse(p.payload).end]
    assert len(ends) == 3  # the capture carries the three end packets
    rx = Rfc4733Receiver()
    got = [d for p in packets if (d := rx.receive(p.payload, p.timestamp))]
    assert got == [digit]


def test_original_sipp_pcap_matches_copy():
    system = Path("/usr/share/sip-tester/dtmf_2833_1.pcap")
    if system.exists():  # the copy lets a clean clone run without sip-tester
        assert system.read_bytes() == (DATA / "dtmf_2833_1.pcap").read_bytes()
    assert (DATA / "dtmf_2833_1.pcap").stat().st_size == 764


def event_stream(digit: str, ts: int, updates: int = 4, ends: int = 3) -> list[tuple[bytes, int]]:
    code = EVENT_DIGITS.index(digit)
    out = [(TelephoneEvent(event=code, end=False, volume=10, duration=160 * (i + 1)).serialize(), ts)
           for i in range(updates)]
    end = TelephoneEvent(event=code, end=True, volume=10, duration=160 * (updates + 1)).serialize()
    out += [(end, ts)] * ends
    return out


def feed(rx: Rfc4733Receiver, packets: list[tuple[bytes, int]]) -> str:
    return "".join(d for p, ts in packets if (d := rx.receive(p, ts)))


def test_every_event_code_maps_to_its_key_and_others_are_ignored():
    rx = Rfc4733Receiver()
    got = []
    for code in range(256):
        payload = TelephoneEvent(event=code, end=False, volume=10, duration=400).serialize()
        got.append(rx.receive(payload, 1000 + code * 800))
    assert "".join(g for g in got if g) == "0123456789*#ABCD"
    assert all(g is None for g in got[16:])  # flash (16) and 17-255 do not crash nor produce keys


def test_lost_first_packets_and_end_only_still_give_the_digit():
    rx = Rfc4733Receiver()
    s1 = event_stream("5", 1000)[2:]  # first two updates lost
    s2 = event_stream("5", 5000)[4:]  # only the end packets arrive: same key again, new press
    s3 = event_stream("9", 9000)[-1:]  # a single end packet survived
    assert feed(rx, s1 + s2 + s3) == "559"


def test_reordered_and_duplicated_packets_do_not_repeat_a_digit():
    rx = Rfc4733Receiver()
    a, b = event_stream("1", 100), event_stream("2", 2000)
    mixed = a[:3] + b[:2] + a[3:] + b[2:] + a[-2:]  # late packets of "1" after "2" began
    assert feed(rx, mixed) == "12"


def test_random_loss_and_reordering_keep_each_press_once():
    rng = random.Random(7)
    digits = "".join(rng.choice(EVENT_DIGITS) for _ in range(40))
    presses = [event_stream(d, 10_000 + i * 2400) for i, d in enumerate(digits)]
    stream = []
    for p in presses:
        kept = [x for x in p if rng.random() > 0.4] or [p[-1]]  # at least one packet survives
        stream.extend(kept)
    # swap neighbours now and then (reordering within a small window)
    for i in range(0, len(stream) - 1, 3):
        if rng.random() < 0.5:
            stream[i], stream[i + 1] = stream[i + 1], stream[i]
    rx = Rfc4733Receiver()
    assert feed(rx, stream) == digits


def test_short_payload_is_ignored():
    assert Rfc4733Receiver().receive(b"\x01\x02", 5) is None


def test_long_event_split_into_segments_is_one_press():
    rx = Rfc4733Receiver()
    code = EVENT_DIGITS.index("7")
    first = TelephoneEvent(event=code, end=False, volume=10, duration=0xFFFF).serialize()
    second = TelephoneEvent(event=code, end=True, volume=10, duration=800).serialize()
    assert rx.receive(first, 1000) == "7"
    assert rx.receive(second, 1000 + 0xFFFF) is None


def test_sender_schedule_matches_rfc4733():
    pkts = rfc4733_packets("#", 200)
    events = [TelephoneEvent.parse(p.payload) for p in pkts]
    assert pkts[0].marker and not any(p.marker for p in pkts[1:])
    assert [round(p.offset, 3) for p in pkts] == [0.0, 0.05, 0.1, 0.15, 0.2, 0.25]
    assert [e.duration for e in events] == [400, 800, 1200, 1600, 1600, 1600]
    assert [e.end for e in events] == [False, False, False, True, True, True]
    assert {e.event for e in events} == {11}
    rx = Rfc4733Receiver()
    assert feed(rx, [(p.payload, 4242) for p in pkts]) == "#"
    with pytest.raises(ValueError, match="DTMF"):
        rfc4733_packets("x", 100)


def test_sender_on_a_moved_clock():
    tx = Rfc4733Sender("A", 100, start=50.0, timestamp=777)
    assert tx.next_deadline() == 50.0
    first = tx.due(50.0)
    assert len(first) == 1 and first[0].marker and TelephoneEvent.parse(first[0].payload).event == 12
    assert tx.due(50.049) == [] and tx.next_deadline() == pytest.approx(50.05)
    late = tx.due(50.2)  # a late wake-up gets every packet that is due, in order
    assert [TelephoneEvent.parse(p.payload).end for p in late] == [True, True, True]
    assert tx.done and tx.next_deadline() is None and tx.due(99.0) == []


# ---- in-band ----------------------------------------------------------------------------------
def detect(pcm: np.ndarray, frame: int = 160) -> str:
    det = GoertzelDetector()
    return "".join(d for i in range(0, len(pcm), frame) for d in det.process(pcm[i:i + frame]))


def test_generated_tones_all_keys():
    keys = "123A456B789C*0#D"
    pcm = np.concatenate([np.concatenate([dtmf_tone(k, 60), silence(60)]) for k in keys])
    assert detect(pcm) == keys


def test_minimum_duration_and_once_per_press():
    assert detect(np.concatenate([silence(50), dtmf_tone("5", 45), silence(50)])) == "5"
    assert detect(np.concatenate([silence(50), dtmf_tone("5", 20), silence(50)])) == ""
    assert detect(np.concatenate([silence(20), dtmf_tone("8", 1500), silence(20)])) == "8"
    # the same key twice with a pause is two presses
    assert detect(np.concatenate([dtmf_tone("3", 80), silence(60), dtmf_tone("3", 80)])) == "33"


def test_twist_limits():
    n = np.arange(800)
    low, high = 852.0, 1477.0  # key 9
    def mix(low_amp, high_amp):
        x = low_amp * np.sin(2 * np.pi * low * n / 8000) + high_amp * np.sin(2 * np.pi * high * n / 8000)
        return (x * 32767).astype(np.int16)
    assert detect(mix(0.3, 0.3 * 10 ** (-3 / 20))) == "9"  # 3 dB normal twist: accepted
    assert detect(mix(0.3, 0.3 * 10 ** (-14 / 20))) == ""  # 14 dB: rejected
    assert detect(mix(0.3 * 10 ** (-10 / 20), 0.3)) == ""  # 10 dB reverse twist: rejected


def test_tones_in_noise_detected_and_noise_alone_silent():
    rng = np.random.default_rng(1)
    keys = "0123456789*#"
    tones = np.concatenate([np.concatenate([dtmf_tone(k, 70, amplitude=0.2), silence(70)]) for k in keys])
    noise = rng.normal(0, 0.02 * 32767, len(tones))  # about 20 dB below the tones
    assert detect(np.clip(tones + noise, -32768, 32767).astype(np.int16)) == keys
    loud_noise = rng.normal(0, 0.2 * 32767, 8000 * 5)
    assert detect(np.clip(loud_noise, -32768, 32767).astype(np.int16)) == ""


def test_no_false_positives_on_speech(tmp_path):
    # flite and sox are system packages that `make setup` installs (Makefile APT_PACKAGES)
    assert shutil.which("flite") and shutil.which("sox")
    raw, wav8k = tmp_path / "x.wav", tmp_path / "x8.wav"
    sentences = ["hello this is a test of the system",
                 "please enter your account number followed by the pound key"]
    speech = []
    for text in sentences:
        subprocess.run(["flite", "-voice", "slt", "-t", text, "-o", str(raw)], check=True)
        subprocess.run(["sox", str(raw), "-r", "8000", "-b", "16", "-c", "1", str(wav8k)], check=True)
        pcm, rate = sf.read(str(wav8k), dtype="int16")
        assert rate == 8000 and len(pcm) > 8000
        speech.append(pcm)
    assert detect(np.concatenate(speech)) == ""
    # and a key pressed over the speech prompt's end is still heard
    assert detect(np.concatenate([speech[0][-4000:], dtmf_tone("7", 80), silence(40)])) == "7"


def test_key_tone_is_voice_audio_dtmf_tone() -> None:
    from voice.audio import dtmf_tone
    from voice.rtp.dtmf import key_tone

    for digit in "159#D":
        assert np.array_equal(key_tone(digit, 120), dtmf_tone(digit, 120))
