"""G.711 µ-law and A-law <-> 16-bit linear PCM through lookup tables.

The tables are built once at import from the ITU-T G.191 reference algorithm
(g711.c: ulaw_compress/ulaw_expand, alaw_compress/alaw_expand), vectorised with
numpy, so encoding a whole prompt is one fancy-index and decoding a 160-byte
frame is one more. The tests compare every input against a scalar transcription
of the reference code.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

Pcm = npt.NDArray[np.int16]

_ALL = np.arange(-32768, 32768, dtype=np.int32)  # index i <-> int16 value (i - 32768)


def _bit_length(v: npt.NDArray[np.int32]) -> npt.NDArray[np.int32]:
    """Number of significant bits of non-negative ints (0 -> 0)."""
    out = np.zeros_like(v)
    w = v.copy()
    while np.any(w):
        nz = w != 0
        out[nz] += 1
        w >>= 1
    return out


def _ulaw_compress(x: npt.NDArray[np.int32]) -> npt.NDArray[np.uint8]:
    # G.191: magnitude is the 1's complement for negatives, 14 MSBs kept, bias 33.
    absno = np.where(x < 0, ~x, x) >> 2
    absno = np.minimum(absno + 33, 0x1FFF)
    segno = 1 + _bit_length(absno >> 6)
    high = 0x08 - segno
    low = 0x0F - ((absno >> segno) & 0x0F)
    code = (high << 4) | low
    code = np.where(x >= 0, code | 0x80, code)
    out: npt.NDArray[np.uint8] = code.astype(np.uint8)
    return out


def _ulaw_expand(c: npt.NDArray[np.int32]) -> npt.NDArray[np.int16]:
    sign = np.where(c < 0x80, -1, 1)
    mant = ~c
    exponent = (mant >> 4) & 0x07
    step = 4 << (exponent + 1)
    mant &= 0x0F
    lin = sign * ((0x80 << exponent) + step * mant + step // 2 - 4 * 33)
    out: npt.NDArray[np.int16] = lin.astype(np.int16)
    return out


def _alaw_compress(x: npt.NDArray[np.int32]) -> npt.NDArray[np.uint8]:
    # G.191: 13 MSBs of the 1's-complement magnitude; segment = position of the top bit.
    ix = np.where(x < 0, ~x, x) >> 4
    iexp = np.maximum(_bit_length(ix) - 4, 0)
    big = ix > 15
    code = np.where(big, ((ix >> np.maximum(iexp - 1, 0)) - 16) + (iexp << 4), ix)
    code = np.where(x >= 0, code | 0x80, code)
    return (code ^ 0x55).astype(np.uint8)


def _alaw_expand(c: npt.NDArray[np.int32]) -> npt.NDArray[np.int16]:
    ix = (c ^ 0x55) & 0x7F
    iexp = ix >> 4
    mant = ix & 0x0F
    mant = np.where(iexp > 0, mant + 16, mant)
    mant = (mant << 4) + 0x08
    mant = np.where(iexp > 1, mant << np.maximum(iexp - 1, 0), mant)
    return np.where(c > 127, mant, -mant).astype(np.int16)


# Encode tables are indexed by the int16 sample reinterpreted as uint16.
_ORDER = _ALL.astype(np.int16).view(np.uint16).astype(np.int64)
ULAW_ENCODE: Final = np.empty(65536, dtype=np.uint8)
ULAW_ENCODE[_ORDER] = _ulaw_compress(_ALL)
ALAW_ENCODE: Final = np.empty(65536, dtype=np.uint8)
ALAW_ENCODE[_ORDER] = _alaw_compress(_ALL)
_CODES = np.arange(256, dtype=np.int32)
ULAW_DECODE: Final = _ulaw_expand(_CODES)
ALAW_DECODE: Final = _alaw_expand(_CODES)
for _t in (ULAW_ENCODE, ALAW_ENCODE, ULAW_DECODE, ALAW_DECODE):
    _t.setflags(write=False)

# Payload type numbers of RFC 3551 table 4 and the code for digital silence.
STATIC_PT: Final = {"PCMU": 0, "PCMA": 8}
SILENCE_BYTE: Final = {"PCMU": 0xFF, "PCMA": 0xD5}


def _tables(codec: str) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int16]]:
    if codec == "PCMU":
        return ULAW_ENCODE, ULAW_DECODE
    if codec == "PCMA":
        return ALAW_ENCODE, ALAW_DECODE
    raise ValueError(f"unknown G.711 codec {codec!r} (expected 'PCMU' or 'PCMA')")


def encode(pcm: Pcm, codec: str) -> bytes:
    """16-bit linear PCM -> G.711 bytes (one byte per sample)."""
    enc, _ = _tables(codec)
    samples = np.ascontiguousarray(pcm, dtype=np.int16)
    return enc[samples.view(np.uint16)].tobytes()


def decode(data: bytes, codec: str) -> Pcm:
    """G.711 bytes -> 16-bit linear PCM (a new array)."""
    _, dec = _tables(codec)
    return dec[np.frombuffer(data, dtype=np.uint8)]


def silence_frame(codec: str, samples: int = 160) -> bytes:
    """Digital silence in `codec` (decodes to 0 for µ-law, ±8 for A-law)."""
    _tables(codec)
    return bytes([SILENCE_BYTE[codec]]) * samples
