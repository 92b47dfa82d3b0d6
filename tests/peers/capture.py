"""Packet capture on loopback with dumpcap (Wireshark's capture engine, installed with tshark):
what a peer really put on the wire, with kernel timestamps, for pacing and latency figures."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from tests.peers import background, require
from tests.peers.pcap import RtpPacket, read_pcap


@contextlib.contextmanager
def capture(path: Path, bpf: str, *, snaplen: int = 0, buffer_mb: int = 64) -> Iterator[Path]:
    """Capture `lo` traffic matching the BPF filter `bpf` into the libpcap file `path` (-P) while the
    block runs. `snaplen` 0 keeps whole packets; 64 keeps Ethernet+IP+UDP+RTP headers only."""
    argv = [require("dumpcap"), "-i", "lo", "-f", bpf, "-P", "-q", "-B", str(buffer_mb), "-w", str(path)]
    if snaplen:
        argv += ["-s", str(snaplen)]
    with background(argv, log=path.with_suffix(".log"), grace=5.0) as proc:
        # dumpcap says "Capturing on 'Loopback: lo'" once the filter is installed
        deadline = time.monotonic() + 10
        while "Capturing on" not in path.with_suffix(".log").read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"dumpcap did not start: {path.with_suffix('.log').read_text(errors='replace')}"
                )
            time.sleep(0.05)
        time.sleep(0.3)  # the message comes a moment before the kernel filter is attached
        yield path
        time.sleep(0.2)
        # SIGINT is dumpcap's clean stop (it flushes its buffer); SIGTERM loses the last packets
        proc.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)


def capture_summary(path: Path) -> str:
    """dumpcap's closing line ("Packets received/dropped on interface ...: N/D ..."), if written."""
    log = path.with_suffix(".log")
    lines = (
        [ln for ln in log.read_text(errors="replace").splitlines() if "dropped" in ln] if log.exists() else []
    )
    return lines[-1].strip() if lines else "no dumpcap summary"


class RtpCapture:
    """The RTP a capture saw, available once the capture block has ended."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def packets(self) -> list[RtpPacket]:
        return list(read_pcap(self.path)) if self.path.exists() else []

    def payloads_by_ssrc(self) -> dict[int, bytes]:
        """Received payload bytes per SSRC, in capture order (G.711 audio and events alike)."""
        out: dict[int, bytes] = {}
        for p in self.packets():
            out[p.ssrc] = out.get(p.ssrc, b"") + p.payload
        return out


@contextlib.contextmanager
def capture_rtp(path: Path, ports: tuple[int, int]) -> Iterator[RtpCapture]:
    """Capture UDP to destination ports `ports` (inclusive) on lo: what a peer sent there, even
    when nobody listens on those ports."""
    with capture(path, f"udp and dst portrange {ports[0]}-{ports[1]}"):
        yield RtpCapture(path)
