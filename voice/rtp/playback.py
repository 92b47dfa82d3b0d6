"""A prompt being sent: its position, and its G.711 encoding made once per codec (and cached per
read-only array, as voice.audio.load_prompt returns them, until the array is collected)."""

from __future__ import annotations

import weakref

import numpy as np

from voice.rtp import g711

Pcm = np.ndarray

# G.711 encodings of read-only prompt arrays (voice.audio.load_prompt returns those),
# keyed by (id(array), codec) and dropped when the array is garbage collected.
_encoded: dict[tuple[int, str], bytes] = {}


def encoded_prompt(pcm: Pcm, codec: str) -> bytes:
    """The whole prompt in `codec`, encoded once per codec when the array is read-only."""
    if pcm.flags.writeable:
        return g711.encode(pcm, codec)
    key = (id(pcm), codec)
    data = _encoded.get(key)
    if data is None:
        data = _encoded[key] = g711.encode(pcm, codec)
        weakref.finalize(pcm, _encoded.pop, key, None)
    return data


class Playback:
    __slots__ = ("codec", "data", "dtmf", "id", "pcm", "pos")

    def __init__(self, pcm: Pcm, ident: int, dtmf: bool) -> None:
        self.pcm = pcm
        self.id = ident
        self.dtmf = dtmf  # an in-band digit from send_dtmf: its end is a DtmfSent
        self.pos = 0  # samples already sent
        self.codec = ""  # codec of `data`; a re-INVITE may change it mid-prompt
        self.data = b""

    def encoded(self, codec: str) -> bytes:
        if codec != self.codec:
            self.codec, self.data = codec, encoded_prompt(self.pcm, codec)
        return self.data
