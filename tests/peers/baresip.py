"""baresip (Debian, v1.0.0) as a headless softphone: generated config dir, speech from a WAV
(aufile source), controlled over its ctrl_tcp module (netstring JSON), what it hears dumped to WAV
by the sndfile filter.

Quirks found on 1.0.0: the `accounts` file is only read when the `account` module is loaded;
`net_interface 127.0.0.1` (not `lo`) keeps it on loopback; aufile is a *source* only (no aufile
player yet), so the player is ALSA's `null` device; aufile closes the call ("No such device") unless
the WAV matches `audio_srate` (we convert to 8 kHz mono with sox); without a tty the stdio UI is
useless, so commands go through ctrl_tcp (`{"command": "dial", "params": "sip:..."}`, netstrings);
`sndcode` sends a digit as RFC 4733 when telephone-event was negotiated; `regint=0`: no REGISTER.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.peers import HOST, RTP_PORTS, background, free_port, require, wait_for

MODULES = "/usr/lib/baresip/modules"


def _netstring(payload: bytes) -> bytes:
    return str(len(payload)).encode() + b":" + payload + b","


@dataclass
class Baresip:
    sip_port: int
    ctrl_port: int
    config_dir: Path
    log_path: Path
    events: list[dict[str, Any]] = field(default_factory=list)
    _sock: socket.socket | None = None
    _buf: bytes = b""

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def connect(self, timeout: float = 10.0) -> None:
        def attempt() -> bool:
            try:
                self._sock = socket.create_connection((HOST, self.ctrl_port), timeout=1)
            except OSError:
                return False
            return True

        wait_for(attempt, timeout, "baresip ctrl_tcp")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _read_message(self, deadline: float) -> dict[str, Any] | None:
        assert self._sock is not None
        while True:
            head, sep, rest = self._buf.partition(b":")
            if sep and head.isdigit() and len(rest) > int(head):
                size = int(head)
                payload, self._buf = rest[:size], rest[size + 1 :]
                return dict(json.loads(payload))
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self._sock.settimeout(remaining)
            try:
                chunk = self._sock.recv(65536)
            except TimeoutError:
                return None
            if not chunk:
                raise ConnectionError("baresip closed its control connection")
            self._buf += chunk

    def command(self, command: str, params: str = "", timeout: float = 5.0) -> dict[str, Any]:
        """Run a long-form command (`dial`, `hangup`, `sndcode`, `quit`...) and return its response."""
        assert self._sock is not None, "connect() first"
        token = f"t{time.monotonic_ns()}"
        self._sock.sendall(
            _netstring(json.dumps({"command": command, "params": params, "token": token}).encode())
        )
        deadline = time.monotonic() + timeout
        while (msg := self._read_message(deadline)) is not None:
            if msg.get("response") and msg.get("token") == token:
                return msg
            if msg.get("event"):
                self.events.append(msg)
        raise TimeoutError(f"baresip did not answer {command!r} within {timeout:.0f}s")

    def wait_event(self, kind: str, timeout: float) -> dict[str, Any]:
        """Wait for an event like CALL_ESTABLISHED or CALL_CLOSED (already seen ones count)."""
        for ev in self.events:
            if ev.get("type") == kind:
                return ev
        deadline = time.monotonic() + timeout
        while (msg := self._read_message(deadline)) is not None:
            if msg.get("event"):
                self.events.append(msg)
                if msg.get("type") == kind:
                    return msg
        raise TimeoutError(f"no baresip {kind} event within {timeout:.0f}s; events: {self.events}")

    def dial(self, uri: str, timeout: float = 10.0) -> dict[str, Any]:
        """Call `uri`; returns the CALL_ESTABLISHED event (RuntimeError if the call closes first)."""
        self.command("dial", uri)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for ev in self.events:
                if ev.get("type") == "CALL_ESTABLISHED":
                    return ev
                if ev.get("type") == "CALL_CLOSED":
                    raise RuntimeError(f"baresip call to {uri} closed: {ev.get('param')}\n{self.log[-2000:]}")
            msg = self._read_message(min(deadline, time.monotonic() + 0.2))
            if msg and msg.get("event"):
                self.events.append(msg)
        raise TimeoutError(f"baresip call to {uri} not established within {timeout:.0f}s: {self.events}")

    def send_digits(self, digits: str) -> None:
        for d in digits:
            self.command("sndcode", d)
            time.sleep(0.25)  # one key press each; baresip releases the key on the next code

    def hangup(self, timeout: float = 5.0) -> None:
        self.command("hangup")
        self.wait_event("CALL_CLOSED", timeout)

    def heard_files(self) -> list[Path]:
        """WAVs the sndfile filter wrote for received audio (decoder side)."""
        return sorted(self.config_dir.glob("*dec*.wav"))


@contextlib.contextmanager
def running_baresip(
    workdir: Path,
    *,
    source_wav: Path,
    user: str = "caller",
    rtp_ports: tuple[int, int] | None = None,
    timeout: float = 60.0,
) -> Iterator[Baresip]:
    """Start baresip with a fresh config in `workdir`; stopped (quit, then SIGTERM/SIGKILL) on exit.

    `timeout` is baresip's own `-t` bound: it quits by itself after that many seconds."""
    workdir.mkdir(parents=True, exist_ok=True)
    sip_port, ctrl_port = free_port(), free_port()
    lo = rtp_ports[0] if rtp_ports else free_port(RTP_PORTS, tcp=False, count=10)
    hi = rtp_ports[1] if rtp_ports else lo + 9
    source = workdir / "source-8k.wav"
    subprocess.run(
        [require("sox"), str(source_wav), "-r", "8000", "-c", "1", "-b", "16", str(source)],
        check=True,
        capture_output=True,
        timeout=30,
    )
    (workdir / "config").write_text(
        "\n".join(
            [
                "poll_method epoll",
                f"net_interface {HOST}",
                f"sip_listen {HOST}:{sip_port}",
                "audio_player alsa,null",
                "audio_alert alsa,null",
                f"audio_source aufile,{source.resolve()}",
                "audio_srate 8000",
                "audio_channels 1",
                f"rtp_ports {lo}-{hi}",
                f"module_path {MODULES}",
                "module account.so",
                "module g711.so",
                "module aufile.so",
                "module alsa.so",
                "module sndfile.so",
                "module_app menu.so",
                "module_app ctrl_tcp.so",
                f"ctrl_tcp_listen {HOST}:{ctrl_port}",
                f"snd_path {workdir}",
                "",
            ]
        )
    )
    (workdir / "accounts").write_text(
        f"<sip:{user}@{HOST}:{sip_port}>;regint=0;audio_codecs=PCMU/8000/1,PCMA/8000/1\n"
    )
    (workdir / "contacts").write_text("")
    argv = [require("baresip"), "-f", str(workdir), "-t", str(int(timeout))]
    log = workdir / "baresip.log"
    with background(argv, cwd=workdir, log=log) as proc:
        phone = Baresip(sip_port=sip_port, ctrl_port=ctrl_port, config_dir=workdir, log_path=log)
        try:
            phone.connect()
            yield phone
        finally:
            if proc.poll() is None and phone._sock is not None:
                with contextlib.suppress(OSError, TimeoutError, ConnectionError):
                    phone.command("quit", timeout=2)
                with contextlib.suppress(Exception):
                    proc.wait(3)
            phone.close()
