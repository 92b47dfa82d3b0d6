"""G.711 tables against a scalar transcription of the ITU-T G.191 reference code (g711.c)."""

from __future__ import annotations

import numpy as np
import pytest

from voice.rtp import g711


def ref_ulaw_compress(lin: int) -> int:
    absno = ((~lin) >> 2) if lin < 0 else (lin >> 2)
    absno += 33
    if absno > 0x1FFF:
        absno = 0x1FFF
    i = absno >> 6
    segno = 1
    while i != 0:
        segno += 1
        i >>= 1
    high_nibble = 0x0008 - segno
    low_nibble = 0x000F - ((absno >> segno) & 0x000F)
    out = (high_nibble << 4) | low_nibble
    if lin >= 0:
        out |= 0x0080
    return out


def ref_ulaw_expand(log: int) -> int:
    sign = -1 if log < 0x0080 else 1
    mantissa = ~log
    exponent = (mantissa >> 4) & 0x0007
    segment = exponent + 1
    mantissa &= 0x000F
    step = 4 << segment
    return sign * ((0x0080 << exponent) + step * mantissa + step // 2 - 4 * 33)


def ref_alaw_compress(lin: int) -> int:
    ix = ((~lin) >> 4) if lin < 0 else (lin >> 4)
    if ix > 15:
        iexp = 1
        while ix > 16 + 15:
            ix >>= 1
            iexp += 1
        ix -= 16
        ix += iexp << 4
    if lin >= 0:
        ix |= 0x0080
    return ix ^ 0x0055


def ref_alaw_expand(log: int) -> int:
    ix = (log ^ 0x0055) & 0x007F
    iexp = ix >> 4
    mant = ix & 0x000F
    if iexp > 0:
        mant += 16
    mant = (mant << 4) + 0x0008
    if iexp > 1:
        mant <<= iexp - 1
    return mant if log > 127 else -mant


ALL = np.arange(-32768, 32768, dtype=np.int16)


@pytest.mark.parametrize(
    ("codec", "compress", "expand"),
    [("PCMU", ref_ulaw_compress, ref_ulaw_expand), ("PCMA", ref_alaw_compress, ref_alaw_expand)],
)
def test_tables_match_reference_for_every_input(codec, compress, expand):
    expected_codes = bytes(compress(int(v)) for v in ALL)
    assert g711.encode(ALL, codec) == expected_codes
    decoded = g711.decode(bytes(range(256)), codec)
    assert decoded.dtype == np.int16
    assert decoded.tolist() == [expand(c) for c in range(256)]


@pytest.mark.parametrize("codec", ["PCMU", "PCMA"])
def test_round_trip_is_idempotent_and_silence_decodes_small(codec):
    codes = bytes(range(256))
    back = g711.encode(g711.decode(codes, codec), codec)
    # µ-law has two zeros (0x7F "negative zero" and 0xFF); both decode to 0, which encodes as 0xFF
    expected = codes.replace(b"\x7f", b"\xff") if codec == "PCMU" else codes
    assert back == expected
    assert np.abs(g711.decode(g711.silence_frame(codec), codec)).max() <= 8
    assert len(g711.silence_frame(codec)) == 160


def test_quantisation_error_is_bounded_relative_to_level():
    x = np.linspace(-30000, 30000, 5001).astype(np.int16)
    for codec in ("PCMU", "PCMA"):
        y = g711.decode(g711.encode(x, codec), codec).astype(np.int32)
        err = np.abs(y - x.astype(np.int32))
        # logarithmic companding: error stays under ~1/16 of the magnitude (plus the smallest step)
        assert np.all(err <= np.abs(x.astype(np.int32)) / 16 + 70), codec


def test_unknown_codec_fails_loudly():
    with pytest.raises(ValueError, match="G722"):
        g711.encode(ALL[:10], "G722")
