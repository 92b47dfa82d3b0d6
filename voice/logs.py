"""Logging setup: `[log] format = text | json`, and the JSON formatter.

JSON lines carry `ts` (UTC, ms), `level`, `logger`, `msg`, and the record's `fields` when it has
some (`log.info("...", extra={"fields": {...}})`: the per-call line and security events use
this), so a log shipper gets keys instead of text to parse. Tracebacks go in `exc`.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
QUIET = ("aiosqlite", "asyncio", "alembic", "sqlalchemy")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out["msg"] = fields.get("msg") or record.getMessage()
            out.update({k: v for k, v in fields.items() if k not in ("ts", "level", "logger", "msg")})
        else:
            out["msg"] = record.getMessage()
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str, separators=(",", ":"))


def setup_logging(level: str, fmt: str = "text", stream: Any = None) -> logging.Handler:
    """Configure the root logger once: level, text or JSON lines on stderr (or `stream`)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()))
    for noisy in QUIET:
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return handler
