"""pyVoIP 1.6.8 (PyPI) as a third-party SIP phone: registers to a registrar (Kamailio), calls
through it, sends digits as in-band tones, and listens.

What pyVoIP 1.6.8 can and cannot do (read from its source, confirmed on loopback):
- No RFC 4733 sending: it offers telephone-event (101) in its SDP and *parses* received events, but
  only ever sends audio. Digits therefore go in-band (DTMF tone pairs in the audio), so a UAS must
  run in-band detection even though telephone-event was negotiated.
- Audio in and out is 8-bit unsigned linear PCM at 8 kHz (it converts with audioop); it always
  sends PCMU when offered first, and its "PCMA" encoder is really µ-law (encode_packet bug).
- Every request and response goes to the registrar address it was built with (INVITE, ACK, BYE,
  200 to BYE/CANCEL), never to Contact or Via: it only works through a proxy.
- Request-URI and To are `sip:<number>@<registrar host>` without the port, so the proxy must treat
  its bare IP as itself (our Kamailio config aliases host:5060 for that).
- The ACK for the 200 carries a *new random To tag* (gen_ack uses gen_tag()) and reuses the INVITE's
  Via branch, so a strict UAS cannot match it to the dialog (RFC 3261 section 13.2.2.4) and will keep
  retransmitting the 200 until Timer H-like expiry (64*T1) and then BYE.
- The BYE has the 200's Via headers copied in, no Route; RTP is symmetric (one socket sends and
  receives), so strict latching works. No marker bit on the first packet.
- It answers an incoming INVITE only after a built-in 1 s Timer (INVITE->200 >= 1 s as answerer),
  and processes the 200 to its own INVITE on its receive thread, ACKing about 1 s later.
- invite() blocks on a socket read until 100/180/401 arrives; register() waits up to 30 s. We run
  those on helper threads with our own timeouts and always stop the phone.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from tests.peers import HOST, RTP_PORTS, free_port
from tests.peers.pcap import dtmf_tone


def _pyvoip() -> Any:
    import pyVoIP.VoIP as voip  # imported late: it pulls audioop (deprecated) at import time

    return voip


def to_u8(pcm: np.ndarray) -> bytes:
    """16-bit signed PCM to pyVoIP's 8-bit unsigned audio."""
    return ((pcm.astype(np.int32) >> 8) + 128).astype(np.uint8).tobytes()


def from_u8(data: bytes) -> np.ndarray:
    return ((np.frombuffer(data, dtype=np.uint8).astype(np.int32) - 128) << 8).astype(np.int16)


def _bounded(fn: Callable[[], Any], timeout: float, what: str) -> Any:
    """Run a blocking pyVoIP call on a daemon thread; TimeoutError if it does not return in time."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed to the caller's thread
            box["error"] = exc

    t = threading.Thread(target=run, name=f"pyvoip-{what}", daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise TimeoutError(f"pyVoIP {what} did not return within {timeout:.0f}s")
    if "error" in box:
        raise box["error"]
    return box.get("value")


@dataclass
class PhoneCall:
    """A pyVoIP VoIPCall with bounded waits."""

    call: Any

    @property
    def state(self) -> str:
        return str(self.call.state.value)

    def wait_state(self, state: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.state == state:
                return True
            if self.state == "ENDED":
                return state == "ENDED"
            time.sleep(0.05)
        return self.state == state

    def play(self, pcm: np.ndarray) -> float:
        """Queue audio; pyVoIP's transmitter sends it at 20 ms per packet. Returns its duration."""
        self.call.write_audio(to_u8(pcm))
        return len(pcm) / 8000

    def send_digits(
        self, digits: str, tone_ms: int = 200, gap_ms: int = 100, amplitude: int = 12000
    ) -> float:
        """In-band DTMF (pyVoIP cannot send RFC 4733). Returns seconds of audio queued.

        Defaults are generous (200 ms, each tone about -11 dBFS) because pyVoIP's 8-bit audio path
        adds a lot of quantisation noise."""
        silence = np.zeros(8 * gap_ms, dtype=np.int16)
        pcm = np.concatenate([np.concatenate([dtmf_tone(d, tone_ms, amplitude), silence]) for d in digits])
        return self.play(np.concatenate([silence, pcm]))

    def listen(self, seconds: float) -> np.ndarray:
        """What the far end sent during `seconds`, as 16-bit PCM (silence where nothing came)."""
        chunks = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and self.state == "ANSWERED":
            chunks.append(self.call.read_audio(160, blocking=False))
            time.sleep(0.02)
        return from_u8(b"".join(chunks)) if chunks else np.zeros(0, dtype=np.int16)

    def dtmf_received(self) -> str:
        """RFC 4733 digits pyVoIP parsed from the far end."""
        return str(self.call.get_dtmf(length=64))

    def hangup(self, timeout: float = 5.0) -> None:
        if self.state == "ANSWERED":
            _bounded(self.call.hangup, timeout, "hangup")


class PyVoipPhone:
    """A registered pyVoIP phone on 127.0.0.1. Use `with PyVoipPhone(...) as phone:`."""

    def __init__(
        self,
        registrar: tuple[str, int],
        username: str,
        password: str = "secret",
        *,
        on_call: Callable[[Any], None] | None = None,
        sip_port: int | None = None,
        rtp_ports: tuple[int, int] | None = None,
        fix_ack_to_tag: bool = False,
    ) -> None:
        """`fix_ack_to_tag` patches this phone's ACK to carry the 200's To tag (pyVoIP sends a random
        one), for tests that are about something else than tolerating that bug."""
        voip = _pyvoip()
        self.sip_port = sip_port or free_port()
        lo = rtp_ports[0] if rtp_ports else free_port(RTP_PORTS, tcp=False, count=20)
        hi = rtp_ports[1] if rtp_ports else lo + 19
        self.username = username
        self.phone = voip.VoIPPhone(
            registrar[0],
            registrar[1],
            username,
            password,
            myIP=HOST,
            callCallback=on_call,
            sipPort=self.sip_port,
            rtpPortLow=lo,
            rtpPortHigh=hi,
        )
        if fix_ack_to_tag:
            original = self.phone.sip.gen_ack

            def gen_ack(response: Any) -> str:
                tag = response.headers["To"]["tag"]
                ack = str(original(response))
                return (
                    re.sub(r"^(To: .*;tag=)[^\r\n]*", lambda m: m.group(1) + tag, ack, flags=re.M)
                    if tag
                    else ack
                )

            self.phone.sip.gen_ack = gen_ack

    def __enter__(self) -> PyVoipPhone:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 10.0) -> None:
        """Bind and REGISTER; raises if the registrar does not accept within `timeout`."""
        _bounded(self.phone.start, timeout, "start/register")
        status = str(self.phone.get_status().value)
        if status != "REGISTERED":
            self.stop()
            raise RuntimeError(f"pyVoIP phone {self.username} did not register: {status}")

    def stop(self, timeout: float = 10.0) -> None:
        """Hang up calls, deregister, close sockets (bounded; pyVoIP threads are daemons or exit)."""
        with contextlib.suppress(TimeoutError):
            _bounded(self.phone.stop, timeout, "stop")

    def call(self, number: str, *, answer_timeout: float = 10.0) -> PhoneCall:
        """INVITE `number`@registrar; returns once answered (TimeoutError otherwise)."""
        call = PhoneCall(_bounded(lambda: self.phone.call(number), answer_timeout, "invite"))
        if not call.wait_state("ANSWERED", answer_timeout):
            raise TimeoutError(
                f"call to {number} not answered within {answer_timeout:.0f}s (state {call.state})"
            )
        return call


@contextlib.contextmanager
def pyvoip_phone(registrar: tuple[str, int], username: str, **kwargs: Any) -> Iterator[PyVoipPhone]:
    with PyVoipPhone(registrar, username, **kwargs) as phone:
        yield phone
