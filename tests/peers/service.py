"""The voice service itself as a subprocess for real-peer tests and benchmarks.

    with running_service(tmp_path, sip={"t1_ms": "50"}) as svc:
        run_sipp("uac_pcap", svc.sip_address, workdir=tmp_path / "sipp")

Writes a config (SIP on 127.0.0.1:<free port> UDP+TCP, an RTP port block, HTTP on a free port,
SQLite and recordings in tmp, the repo's ivr_flows), starts `python -m voice.cli run --config F`
with the current interpreter, waits for a 200 to a raw OPTIONS, and stops it with SIGTERM
(SIGKILL after 5 s). Keyword arguments are config sections: {key: value} merged over the defaults.
"""

from __future__ import annotations

import contextlib
import secrets
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.peers import HOST, REPO, RTP_PORTS, background, free_port, sip_options


@dataclass
class RunningService:
    sip_port: int
    http_port: int
    rtp_ports: tuple[int, int]
    config_path: Path
    log_path: Path
    api_key: str
    workdir: Path
    pid: int = 0

    @property
    def sip_address(self) -> str:
        return f"{HOST}:{self.sip_port}"

    @property
    def http_url(self) -> str:
        return f"http://{HOST}:{self.http_port}"

    @property
    def log(self) -> str:
        """Everything the service printed so far (stdout and stderr)."""
        return self.log_path.read_text(errors="replace")


def write_config(
    workdir: Path,
    sections: Mapping[str, Mapping[str, object]],
    *,
    rtp_pairs: int = 50,
    sip_port: int | None = None,
) -> tuple[Path, dict[str, dict[str, str]]]:
    """The test config: defaults below, `sections` merged over them (a value of None drops a key)."""
    rtp_lo = free_port(RTP_PORTS, tcp=False, count=rtp_pairs * 2)
    defaults: dict[str, dict[str, str]] = {
        "sip": {"listen": f"{HOST}:{sip_port or free_port()}", "transports": "udp, tcp"},
        "rtp": {"ports": f"{rtp_lo}-{rtp_lo + rtp_pairs * 2 - 1}"},
        "http": {"listen": f"{HOST}:{free_port()}", "api_keys": secrets.token_hex(16)},
        "database": {"url": f"sqlite+aiosqlite:///{workdir / 'voice.db'}"},
        "node": {"spool": str(workdir / "spool")},
        "ivr": {"flows": str(REPO / "ivr_flows"), "recordings": str(workdir / "recordings")},
        "log": {"level": "info"},
        # PocketSphinx unless a test asks for more: `auto` means Whisper (2 workers, ~180 MB each)
        "asr": {"engine": "pocketsphinx"},
    }
    if (REPO / "recordings" / "prompts").is_dir():
        defaults["ivr"]["prompts"] = str(REPO / "recordings" / "prompts")
    for section, values in sections.items():
        merged = defaults.setdefault(section, {})
        for key, value in values.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = str(value)
    (workdir / "recordings").mkdir(parents=True, exist_ok=True)
    path = workdir / "voice.conf"
    path.write_text(
        "".join(
            f"[{s}]\n" + "".join(f"{k} = {v}\n" for k, v in kv.items()) + "\n" for s, kv in defaults.items()
        )
    )
    return path, defaults


@contextlib.contextmanager
def running_service(
    tmp_path: Path, *, start_timeout: float = 60.0, rtp_pairs: int = 50, **sections: Mapping[str, object]
) -> Iterator[RunningService]:
    """Start the service on loopback; it is always stopped when the block ends."""
    workdir = tmp_path / "service"
    workdir.mkdir(parents=True, exist_ok=True)
    config_path, config = write_config(workdir, sections, rtp_pairs=rtp_pairs)
    sip_port = int(config["sip"]["listen"].rsplit(":", 1)[1])
    http_port = int(config["http"]["listen"].rsplit(":", 1)[1])
    lo, hi = (int(p) for p in config["rtp"]["ports"].split("-"))
    log = workdir / "service.log"
    argv = [sys.executable, "-m", "voice.cli", "run", "--config", str(config_path)]
    with background(argv, cwd=REPO, log=log, grace=5.0) as proc:
        svc = RunningService(
            sip_port=sip_port,
            http_port=http_port,
            rtp_ports=(lo, hi),
            config_path=config_path,
            log_path=log,
            api_key=config["http"].get("api_keys", ""),
            workdir=workdir,
            pid=proc.pid,
        )
        deadline = time.monotonic() + start_timeout
        while True:
            status = sip_options(sip_port, timeout=0.3)
            if status is not None and " 200 " in f"{status} ":
                break
            if proc.poll() is not None:
                raise RuntimeError(f"voice service exited with {proc.returncode}:\n{svc.log[-4000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"voice service gave no 200 to OPTIONS within {start_timeout:.0f}s "
                    f"(last answer: {status!r}):\n{svc.log[-4000:]}"
                )
            time.sleep(0.1)
        yield svc


@pytest.fixture
def voice_service(tmp_path: Path) -> Iterator[RunningService]:
    """The service with default test config (import this fixture into a test module or conftest)."""
    with running_service(tmp_path) as svc:
        yield svc


async def api_json(session: Any, method: str, url: str, key: str | None = None,
                   body: dict[str, Any] | None = None, status: int | None = None) -> Any:
    """One call to the service's HTTP API (an aiohttp session), with its key if given (else the
    session's own sign-in cookie); the JSON of a 2xx answer, or of `status` when given."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with session.request(method, url, json=body, headers=headers) as r:
        assert (r.status == status) if status else r.status < 300, await r.text()
        return await r.json()
