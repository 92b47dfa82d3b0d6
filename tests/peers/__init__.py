"""Drivers for third-party SIP/RTP peers on loopback (sipp, kamailio, baresip, pyVoIP) and the service.

Shared here: free-port picking inside a range and bounded subprocesses that are always killed.
Every peer binds 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data"
SCENARIOS = REPO / "tests" / "sipp"

# Ranges for the peers' own selfcheck tests (the service under test picks its own).
SIP_PORTS = (40000, 44999)
RTP_PORTS = (53000, 60999)

# Ports handed out by this process, with when: a driver binds its ports within seconds, so a port
# handed out more than TAKEN_FOR seconds ago is free again once it can be bound (a long suite
# would otherwise use up the ranges).
_taken: dict[int, float] = {}
_cursors: dict[tuple[int, int], int] = {}  # span -> where its next block is looked for
TAKEN_FOR = 120.0
_lock = threading.Lock()


def _bindable(port: int, kinds: Sequence[int]) -> bool:
    for kind in kinds:
        s = socket.socket(socket.AF_INET, kind)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
        finally:
            s.close()
    return True


def worker_span(span: tuple[int, int], need: int = 1) -> tuple[int, int]:
    """This test process's share of `span` when pytest-xdist runs several (gw0, gw1, ...): the
    workers never pick the same port, whatever their timing. The whole span without xdist, or
    when a share would be too small for `need` ports."""
    worker, count = os.environ.get("PYTEST_XDIST_WORKER", ""), os.environ.get("PYTEST_XDIST_WORKER_COUNT", "")
    if not worker.startswith("gw") or not count.isdigit() or int(count) < 2:
        return span
    k, n = int(worker[2:]), int(count)
    lo, hi = span
    width = (hi - lo + 1) // n
    if width < need * 4 or k >= n:
        return span
    return lo + k * width, lo + (k + 1) * width - 1


def free_port(span: tuple[int, int] = SIP_PORTS, *, tcp: bool = True, count: int = 1, step: int = 1) -> int:
    """A port p in `span` with p .. p+(count-1)*step free for UDP (and TCP when `tcp`).

    Ports handed out by this process are remembered so two drivers in one test never get the same
    one; under pytest-xdist each worker picks from its own share of the span (`worker_span`).
    """
    kinds = [socket.SOCK_DGRAM, socket.SOCK_STREAM] if tcp else [socket.SOCK_DGRAM]
    lo, hi = worker_span(span, count * step)
    size = count * step
    # Next fit from where this span's last block ended (a random place at first, so separate test
    # processes rarely meet): blocks handed out in a row leave no holes, so a big block still fits
    # after many small ones; ports come back TAKEN_FOR seconds after they were handed out.
    with _lock:
        cursor = _cursors.setdefault((lo, hi), lo + random.randrange(0, max(1, (hi - lo - size) // 2)) * 2)
    starts = list(range(cursor, hi - size, 2)) + list(range(lo, min(cursor, hi - size), 2))
    for base in starts:
        base -= base % 2  # even, as RTP wants
        ports = [base + i * step for i in range(count)]
        with _lock:
            now = time.monotonic()
            if any(now - _taken.get(p, -TAKEN_FOR) < TAKEN_FOR for p in ports):
                continue
            if all(_bindable(p, kinds) for p in ports):
                _taken.update(dict.fromkeys(ports, now))
                _cursors[(lo, hi)] = base + size + (size % 2)
                return base
    raise RuntimeError(f"no free port block of {count} in {lo}-{hi}")


def free_rtp_port(count: int = 1) -> int:
    """An even RTP port (with its RTCP neighbour) from the RTP range; `count` pairs in a row."""
    return free_port(RTP_PORTS, tcp=False, count=count * 2)


def require(binary: str) -> str:
    path = shutil.which(binary) or (f"/usr/sbin/{binary}" if os.path.exists(f"/usr/sbin/{binary}") else None)
    if path is None:
        raise RuntimeError(f"{binary} is not installed (make setup installs the Debian packages)")
    return path


def stop_process(proc: subprocess.Popen[bytes] | subprocess.Popen[str], grace: float = 5.0) -> None:
    """SIGTERM the process group, SIGKILL after `grace` seconds."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


@contextlib.contextmanager
def background(
    argv: Sequence[str], *, cwd: Path | None = None, log: Path, grace: float = 5.0, stdin: bool = False
) -> Iterator[subprocess.Popen[bytes]]:
    """Start `argv` in its own process group with output to `log`; always stopped on exit."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            list(argv),
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            yield proc
        finally:
            if proc.stdin is not None:
                with contextlib.suppress(OSError):
                    proc.stdin.close()
            stop_process(proc, grace)


def wait_for(predicate: object, timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll `predicate()` until true; TimeoutError naming `what` otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {what}")


def sip_options(port: int, host: str = HOST, timeout: float = 1.0) -> str | None:
    """Send one OPTIONS over UDP and return the status line of the answer (None on no answer)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind((HOST, 0))
        sock.settimeout(timeout)
        lport = sock.getsockname()[1]
        tag = random.randrange(1 << 30)
        msg = (
            f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {HOST}:{lport};branch=z9hG4bKprobe{tag};rport\r\n"
            f"Max-Forwards: 70\r\n"
            f"From: <sip:probe@{HOST}>;tag={tag}\r\n"
            f"To: <sip:{host}:{port}>\r\n"
            f"Call-ID: probe-{tag}@{HOST}\r\n"
            f"CSeq: 1 OPTIONS\r\n"
            f"Contact: <sip:probe@{HOST}:{lport}>\r\n"
            f"Accept: application/sdp\r\n"
            f"Content-Length: 0\r\n\r\n"
        )
        sock.sendto(msg.encode(), (host, port))
        data = sock.recv(65535)
        return data.split(b"\r\n", 1)[0].decode(errors="replace")
    except (TimeoutError, ConnectionRefusedError):
        return None
    finally:
        sock.close()
