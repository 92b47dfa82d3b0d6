"""Run sipp (Debian package sip-tester, SIPp v3.6.1) and read back what it measured.

Flags that matter (found on 3.6.1):
- `-nostdin` lets sipp run in the foreground without a tty; its screen goes to our log file and
  `-trace_screen -screen_file F` keeps the final screens.
- `-trace_stat -stf F -fd 1`: `;`-separated CSV, a header row then one row per second plus a final
  one at exit; the last row holds the cumulative (C) counters we report.
- `-trace_rtt -rtt_freq 1`: `<scenario>_<pid>_rtt.csv` in the working directory (no name option),
  one row per measured `rtd`: `Date_ms;response_time_ms;rtd_no`, whole milliseconds only.
- `-trace_counts`: `<scenario>_<pid>_counts.csv`, per scenario message Sent/Recv/Retrans/Timeout/Unexp
  (how we see the UAS's 2xx retransmissions in no_ack.xml).
- `-trace_err -error_file F`: unexpected messages.
- `-timeout N -timeout_error` bounds the run and makes a timeout a failure; we also bound the
  subprocess. Exit codes: 0 all calls succeeded, 1 some failed, 97 internal exit, 99 no calls,
  255/254 fatal (bind errors).
- The built-in `uac_pcap` plays `pcap/g711a.pcap` (PCMA, 30 ms frames, ~7 s) then
  `pcap/dtmf_2833_1.pcap` (RFC 4733 event 1, end packet x3) relative to the working directory,
  so we run sipp in a directory whose `pcap/` holds tests/data's copies.
- sipp plays pcaps with its `[auto_media_port]` as the source port, the same port it puts in its
  SDP m= line (from `-mp` upwards, +4 per call), so its RTP is symmetric and a strictly latching
  UAS accepts it. It sends them from a raw socket, though, and binds only `-mp` and `-mp` + 2:
  what a UAS sends to the later calls' ports comes back as ICMP port unreachable
  (benchmarks/calls.py binds sinks there).
- SIGUSR1 is sipp's soft exit (like pressing q): used to stop a background UAS so it writes stats.
"""

from __future__ import annotations

import contextlib
import csv
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tests.peers import DATA, HOST, SCENARIOS, free_port, free_rtp_port, require, stop_process

BUILTIN = {
    "uac",
    "uas",
    "uac_pcap",
    "regexp",
    "3pcc-C-A",
    "3pcc-C-B",
    "3pcc-A",
    "3pcc-B",
    "branchc",
    "branchs",
}
EXIT_CODES = {
    0: "all calls successful",
    1: "at least one call failed",
    97: "exit on internal command",
    99: "normal exit without calls processed",
    255: "fatal error",
    254: "fatal error binding a socket",
}


@dataclass(kw_only=True)
class SippResult:
    """What one sipp run reported. Times are in milliseconds."""

    returncode: int
    successful: int = 0
    failed: int = 0
    created: int = 0
    retransmissions: int = 0
    failures: dict[str, int] = field(default_factory=dict)  # nonzero Failed*(C) counters
    response_time_ms: float | None = None  # average of rtd="true" responses (ResponseTime1(C))
    call_length_ms: float | None = None
    rtt_ms: list[float] = field(default_factory=list)  # every measured response time (-trace_rtt)
    counts: dict[str, int] = field(default_factory=dict)  # per scenario message (-trace_counts)
    elapsed_s: float = 0.0
    errors: str = ""  # -trace_err log text
    screen: str = ""  # final screens (-trace_screen) or the captured output
    stats: dict[str, str] = field(default_factory=dict)  # last row of the stat CSV
    workdir: Path = Path()

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.failed == 0 and self.successful > 0

    def count(self, message: str, kind: str = "Recv") -> int:
        """Sum of -trace_counts columns like `4_200_Recv` for message "200" and kind "Recv"."""
        return sum(v for k, v in self.counts.items() if k.split("_", 1)[-1] == f"{message}_{kind}")

    def rtt_percentile(self, q: float) -> float | None:
        return float(np.percentile(self.rtt_ms, q)) if self.rtt_ms else None

    def describe(self) -> str:
        """One paragraph for assertion messages."""
        return (
            f"sipp exit {self.returncode} ({EXIT_CODES.get(self.returncode, '?')}): "
            f"{self.successful} ok, {self.failed} failed {self.failures or ''}, "
            f"{self.retransmissions} retransmissions\nerrors:\n{self.errors[-3000:]}\n"
            f"screen:\n{self.screen[-3000:]}"
        )


def _duration_ms(text: str) -> float | None:
    """sipp durations look like HH:MM:SS:uuuuuu."""
    parts = text.strip().split(":")
    if len(parts) != 4:
        return None
    h, m, s, us = (int(p) for p in parts)
    return ((h * 60 + m) * 60 + s) * 1000 + us / 1000


def parse_stats(path: Path) -> dict[str, str]:
    """Last row of a -trace_stat CSV as {column: value}."""
    if not path.exists():
        return {}
    rows = list(csv.reader(path.read_text(errors="replace").splitlines(), delimiter=";"))
    if len(rows) < 2:
        return {}
    return dict(zip(rows[0], rows[-1], strict=False))


def parse_rtt(workdir: Path) -> list[float]:
    """Response times (ms) from every <scenario>_<pid>_rtt.csv (`Date_ms;response_time_ms;rtd_no`).

    sipp's clock ticks in whole milliseconds, so on loopback most values are 0 or 1."""
    out: list[float] = []
    for path in workdir.glob("*_rtt.csv"):
        for row in csv.reader(path.read_text(errors="replace").splitlines()[1:], delimiter=";"):
            if len(row) >= 2:
                with contextlib.suppress(ValueError):
                    out.append(float(row[1]))
    return out


def parse_counts(workdir: Path) -> dict[str, int]:
    """Per-message counters from -trace_counts (last row), e.g. {"4_200_Recv": 1, "4_200_Retrans": 2}."""
    out: dict[str, int] = {}
    for path in workdir.glob("*_counts.csv"):
        rows = list(csv.reader(path.read_text(errors="replace").splitlines(), delimiter=";"))
        if len(rows) >= 2:
            for key, value in zip(rows[0][2:], rows[-1][2:], strict=False):
                if key:
                    with contextlib.suppress(ValueError):
                        out[key] = int(value)
    return out


def result_from(workdir: Path, returncode: int, output: str, elapsed: float) -> SippResult:
    stats = parse_stats(workdir / "stats.csv")

    def num(key: str) -> int:
        try:
            return int(stats.get(key, "0") or 0)
        except ValueError:
            return 0

    failures = {k[6:-3]: num(k) for k in stats if k.startswith("Failed") and k.endswith("(C)") and num(k)}
    failures.pop("Call", None)
    errors = "\n".join(p.read_text(errors="replace") for p in sorted(workdir.glob("*errors.log")))
    screen_file = workdir / "screen.log"
    return SippResult(
        returncode=returncode,
        successful=num("SuccessfulCall(C)"),
        failed=num("FailedCall(C)"),
        created=num("TotalCallCreated"),
        retransmissions=num("Retransmissions(C)"),
        failures=failures,
        response_time_ms=_duration_ms(stats.get("ResponseTime1(C)", "")),
        call_length_ms=_duration_ms(stats.get("CallLength(C)", "")),
        rtt_ms=parse_rtt(workdir),
        counts=parse_counts(workdir),
        elapsed_s=elapsed,
        errors=errors,
        screen=screen_file.read_text(errors="replace") if screen_file.exists() else output,
        stats=stats,
        workdir=workdir,
    )


def prepare_workdir(workdir: Path, pcaps: Mapping[str, Path] | None = None) -> Path:
    """sipp resolves play_pcap_audio paths against its cwd: give it `pcap/` with tests/data's pcaps,
    plus `pcaps` ({name in pcap/: file}); `call.pcap` (played by dtmf_call.xml) defaults to digit 1."""
    folder = workdir / "pcap"
    folder.mkdir(parents=True, exist_ok=True)
    files = {p.name: p for p in DATA.glob("*.pcap")}
    files["call.pcap"] = DATA / "dtmf_2833_1.pcap"
    files.update(pcaps or {})
    for name, src in files.items():
        link = folder / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(Path(src).resolve())
    return workdir


def scenario_file(scenario: str | Path, workdir: Path, replace: Mapping[str, str] | None) -> str:
    """Built-in name, or the XML path (from tests/sipp/ when relative); with `replace`, a copy in
    `workdir` with those literal substitutions (e.g. shorter timeouts for a selfcheck)."""
    if str(scenario) in BUILTIN:
        return str(scenario)
    path = Path(scenario) if Path(scenario).is_absolute() else SCENARIOS / scenario
    if not replace:
        return str(path)
    text = path.read_text()
    for old, new in replace.items():
        if old not in text:
            raise ValueError(f"{path.name}: nothing to replace for {old!r}")
        text = text.replace(old, new)
    copy = workdir / path.name
    copy.write_text(text)
    return str(copy)


def build_argv(
    scenario: str | Path,
    target: str | None,
    *,
    workdir: Path,
    transport: str = "u1",
    calls: int | None = 1,
    limit: int | None = None,
    rate: float | None = None,
    rate_period_ms: int | None = None,
    local_port: int | None = None,
    media_port: int | None = None,
    rtp_echo: bool = False,
    service: str | None = None,
    keys: Mapping[str, object] | None = None,
    sets: Mapping[str, object] | None = None,
    timeout: float = 30.0,
    rtt: bool = True,
    extra: Sequence[str] = (),
) -> list[str]:
    argv = [require("sipp")]
    argv += ["-sn", str(scenario)] if str(scenario) in BUILTIN else ["-sf", str(scenario)]
    if target:
        argv.append(target)
    argv += ["-i", HOST, "-t", transport, "-nostdin", "-p", str(local_port or free_port())]
    argv += ["-mp", str(media_port or free_rtp_port(4)), "-mi", HOST]
    argv += ["-trace_stat", "-stf", str(workdir / "stats.csv"), "-fd", "1"]
    argv += ["-trace_err", "-error_file", str(workdir / "errors.log")]
    argv += ["-trace_screen", "-screen_file", str(workdir / "screen.log"), "-trace_counts"]
    if rtt:
        argv += ["-trace_rtt", "-rtt_freq", "1"]
    argv += ["-timeout", f"{max(1, round(timeout))}s", "-timeout_error"]
    if calls is not None:
        argv += ["-m", str(calls)]
    if limit is not None:
        argv += ["-l", str(limit)]
    if rate is not None:
        argv += ["-r", f"{rate:g}"]
    if rate_period_ms is not None:
        argv += ["-rp", f"{rate_period_ms}ms"]
    if rtp_echo:
        argv.append("-rtp_echo")
    if service is not None:
        argv += ["-s", service]
    for k, v in (keys or {}).items():
        argv += ["-key", k, str(v)]
    for k, v in (sets or {}).items():
        argv += ["-set", k, str(v)]
    return argv + list(extra)


def run_sipp(
    scenario: str | Path,
    target: str | None,
    *,
    workdir: Path,
    timeout: float = 30.0,
    pcaps: Mapping[str, Path] | None = None,
    replace: Mapping[str, str] | None = None,
    **options: Any,
) -> SippResult:
    """Run sipp in the foreground until it exits (bounded by `timeout` twice: sipp's and ours).

    `options` are build_argv's: transport ("u1", "t1", "un"...), calls (-m), limit (-l), rate (-r),
    rate_period_ms, local_port, media_port, rtp_echo, service (-s, the Request-URI user), keys
    (-key name value: [name] in the XML), sets (-set), rtt, extra (more argv)."""
    prepare_workdir(workdir, pcaps)
    sf = scenario_file(scenario, workdir, replace)
    argv = build_argv(sf, target, workdir=workdir, timeout=timeout, **options)
    (workdir / "argv.txt").write_text(" ".join(argv))
    started = time.monotonic()
    with open(workdir / "output.log", "wb") as out:
        proc = subprocess.Popen(
            argv,
            cwd=workdir,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            returncode = proc.wait(timeout + 10)
        except subprocess.TimeoutExpired:
            stop_process(proc, 2)
            returncode = -9
        finally:
            stop_process(proc, 2)
    output = (workdir / "output.log").read_text(errors="replace")
    return result_from(workdir, returncode, output, time.monotonic() - started)


class SippBackground:
    """A sipp process running while the test does other things (a UAS, or a UAC under load)."""

    def __init__(self, proc: subprocess.Popen[bytes], workdir: Path, port: int, media_port: int) -> None:
        self.proc, self.workdir, self.port, self.media_port = proc, workdir, port, media_port
        self.result: SippResult | None = None
        self._started = time.monotonic()

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    def stop(self, grace: float = 3.0) -> SippResult:
        """Soft exit (SIGUSR1) so sipp writes its final stats; SIGTERM/SIGKILL if it lingers."""
        if self.result is not None:
            return self.result
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGUSR1)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                stop_process(self.proc, 2)
        output = (self.workdir / "output.log").read_text(errors="replace")
        self.result = result_from(
            self.workdir, self.proc.returncode, output, time.monotonic() - self._started
        )
        return self.result

    def wait(self, timeout: float) -> SippResult:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        return self.stop()


@contextlib.contextmanager
def sipp_background(
    scenario: str | Path = "uas",
    target: str | None = None,
    *,
    workdir: Path,
    timeout: float = 60.0,
    calls: int | None = None,
    pcaps: Mapping[str, Path] | None = None,
    replace: Mapping[str, str] | None = None,
    **options: Any,
) -> Iterator[SippBackground]:
    """Start sipp (default: the built-in UAS) and stop it on exit; `.result` holds its stats then."""
    prepare_workdir(workdir, pcaps)
    scenario = scenario_file(scenario, workdir, replace)
    port = int(options.pop("local_port", 0) or free_port())
    media_port = int(options.pop("media_port", 0) or free_rtp_port(4))
    argv = build_argv(
        scenario,
        target,
        workdir=workdir,
        timeout=timeout,
        calls=calls,
        local_port=port,
        media_port=media_port,
        **options,
    )
    (workdir / "argv.txt").write_text(" ".join(argv))
    with open(workdir / "output.log", "wb") as out:
        proc = subprocess.Popen(
            argv,
            cwd=workdir,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    bg = SippBackground(proc, workdir, port, media_port)
    try:
        time.sleep(0.2)  # sipp binds within a few ms; a fatal bind error shows as an exit here
        if proc.poll() is not None:
            raise RuntimeError(
                f"sipp exited at start ({proc.returncode}):\n"
                + (workdir / "output.log").read_text(errors="replace")[-2000:]
            )
        yield bg
    finally:
        bg.stop()
