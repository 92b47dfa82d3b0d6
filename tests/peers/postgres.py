"""A PostgreSQL server of the test's own (initdb + pg_ctl on a temporary data directory), so a
test may stop and start it without touching the machine's shared server at 127.0.0.1:5432.

    with running_postgres() as pg:
        url = pg.url                      # postgresql+asyncpg://postgres@127.0.0.1:<port>/postgres
        pg.stop(); ...; pg.start()

Run as root (as in CI containers), initdb and postgres refuse to work; they run as the
`postgres` system user then, on a data directory that user owns.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.peers import HOST, free_port, require

PORTS = (31000, 31999)


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for base in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (base / name).exists():
            return str(base / name)
    return require(name)


@dataclass
class PgServer:
    port: int
    datadir: Path
    user: str | None  # the system user it runs as (None: ourselves)

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@{HOST}:{self.port}/postgres"

    def _run(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        cmd = list(argv) if self.user is None else ["runuser", "-u", self.user, "--", *argv]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses={HOST} -c unix_socket_directories='' -c fsync=off"
        out = self._run(_tool("pg_ctl"), "start", "-w", "-t", "60", "-D", str(self.datadir / "data"),
                        "-l", str(self.datadir / "server.log"), "-o", options)
        if out.returncode != 0:
            log = (self.datadir / "server.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"pg_ctl start failed: {out.stdout}{out.stderr}\n{log}")

    def stop(self, mode: str = "fast") -> None:
        out = self._run(_tool("pg_ctl"), "stop", "-w", "-m", mode, "-D", str(self.datadir / "data"))
        if out.returncode != 0 and "not running" not in out.stderr + out.stdout:
            raise RuntimeError(f"pg_ctl stop failed: {out.stdout}{out.stderr}")


@contextlib.contextmanager
def running_postgres() -> Iterator[PgServer]:
    """initdb (trust auth, superuser `postgres`) and start; stopped and removed on exit."""
    user = "postgres" if os.geteuid() == 0 else None
    base = Path(tempfile.mkdtemp(prefix="voice-pg-"))
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(base, entry.pw_uid, entry.pw_gid)
    server = PgServer(port=free_port(PORTS), datadir=base, user=user)
    try:
        init = server._run(_tool("initdb"), "-D", str(base / "data"), "-A", "trust", "-U", "postgres",
                           "-E", "UTF8", "--no-sync", timeout=120)
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed: {init.stdout}{init.stderr}")
        server.start()
        yield server
    finally:
        with contextlib.suppress(Exception):
            server.stop("immediate")
        shutil.rmtree(base, ignore_errors=True)
