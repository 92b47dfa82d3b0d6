"""History writes the database could not take yet, kept on disk until it takes them.

While the database is away the call recorder keeps each call's writes in memory and retries them;
a node that is stopped or killed then would lose them, and the calls they describe would come back
as `interrupted` (or not at all). So every write that has to wait is also appended to this node's
spool file (JSON lines, fsync'd, in order), and a line saying it was done follows once the database
has it. A starting node replays what the file holds that was not done, before it marks its own
unfinished calls interrupted; the history's writes are idempotent (the call's record is found by
its key, a finish updates it), so a write that landed just before the kill is harmless twice.

Appends go through one writer thread, in the order they were asked for; asking never blocks the
event loop. The file is emptied whenever nothing in it is still outstanding.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

log = logging.getLogger("voice.callcontrol")


@dataclass
class SpooledWrite:
    """One history write: the CallHistory method and its keyword arguments, for one call."""

    key: str
    method: str  # call_started | call_identified | call_finished
    kwargs: dict[str, Any]
    seq: int | None = None  # its line in the spool, once it is there
    done: bool = field(default=False, compare=False)
    call: Any = field(default=None, compare=False, repr=False)  # live only: gets the record's id


def _encode(value: Any) -> Any:
    if isinstance(value, datetime):
        return {"$datetime": value.isoformat()}
    raise TypeError(f"cannot spool a {type(value).__name__}")


def _decode(obj: dict[str, Any]) -> Any:
    if set(obj) == {"$datetime"}:
        return datetime.fromisoformat(obj["$datetime"])
    return obj


class WriteSpool:
    """The spool file of one node: `keep()` a waiting write, `done()` once the database has it,
    `load()` at start for what a previous run left."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seq = 0
        self._outstanding: set[int] = set()
        self._lines: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._unwritten = 0  # lines asked for and not on disk yet
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self.failed = False  # the disk refused a write: the spool is off, the calls go on

    def load(self) -> list[SpooledWrite]:
        """The writes a previous run kept and did not finish, in their order. A torn last line
        (the process died while writing it) is skipped."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        kept: dict[int, SpooledWrite] = {}
        for n, line in enumerate(text.splitlines(), 1):
            try:
                item = json.loads(line, object_hook=_decode)
                if "done" in item:
                    kept.pop(int(item["done"]), None)
                    continue
                seq = int(item["seq"])
                kept[seq] = SpooledWrite(key=str(item["key"]), method=str(item["method"]),
                                         kwargs=dict(item["kwargs"]), seq=seq)
            except (ValueError, KeyError, TypeError):
                log.warning("%s:%d: unreadable spool line skipped", self.path, n)
        self._seq = max(kept, default=0)
        self._outstanding = set(kept)
        return [kept[s] for s in sorted(kept)]

    def keep(self, write: SpooledWrite) -> None:
        """Append `write` (once); returns at once, the writer thread does the disk work."""
        if write.seq is not None or self.failed:
            return
        try:
            line = json.dumps({"seq": self._seq + 1, "key": write.key, "method": write.method,
                               "kwargs": write.kwargs}, default=_encode, separators=(",", ":"))
        except (TypeError, ValueError) as exc:  # a bug, not the disk: this write stays in memory only
            log.error("call %s: %s cannot be spooled: %s", write.key, write.method, exc)
            return
        self._seq += 1
        write.seq = self._seq
        self._outstanding.add(write.seq)
        self._put(line)

    def done(self, write: SpooledWrite) -> None:
        if write.seq is None or write.seq not in self._outstanding:
            return
        self._outstanding.discard(write.seq)
        self._put(json.dumps({"done": write.seq}) if self._outstanding else None)

    @property
    def outstanding(self) -> int:
        return len(self._outstanding)

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait (blocking) until what was asked is on disk; False after `timeout`."""
        with self._cond:
            return self._cond.wait_for(lambda: self._unwritten == 0, timeout)

    def _put(self, line: str | None) -> None:
        """A line to append, or None: nothing is outstanding, empty the file."""
        with self._cond:
            self._unwritten += 1
        self._lines.put(line)
        if self._thread is None:
            self._thread = threading.Thread(target=self._write, name="history-spool", daemon=True)
            self._thread.start()

    def _write(self) -> None:
        while True:
            batch = [self._lines.get()]
            while not self._lines.empty():
                batch.append(self._lines.get())
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with self.path.open("a", encoding="utf-8") as f:
                    for line in batch:
                        if line is None:
                            f.truncate(0)
                        else:
                            f.write(line + "\n")
                    f.flush()
                    os.fsync(f.fileno())
            except OSError as exc:
                if not self.failed:
                    log.error("history spool %s cannot be written (%s): waiting writes are kept in "
                              "memory only", self.path, exc)
                self.failed = True
            with self._cond:
                self._unwritten -= len(batch)
                if self._unwritten == 0:
                    self._cond.notify_all()
