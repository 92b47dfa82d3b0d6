"""`voice customers import` and `voice db upgrade`: the configuration read here, the work done by
cti (which reads no configuration file itself)."""

from __future__ import annotations

import argparse
from pathlib import Path

from voice.config import ConfigError, load_config


def import_main(args: argparse.Namespace) -> int:
    """Entry point of `voice customers import FILE [--config FILE]`; exit 1 if any row failed."""
    from cti.importer import run_import

    try:
        config = load_config(getattr(args, "config", None))
    except ConfigError as exc:
        print(f"error: {exc}")
        return 2
    path = Path(args.file)
    if not path.is_file():
        print(f"error: {path}: file not found")
        return 2
    try:
        report = run_import(config.database.url, config.cti.default_country, path)
    except UnicodeDecodeError as exc:
        print(f"error: {path}: not UTF-8 text ({exc})")
        return 2
    for line in report.lines():
        print(line)
    return 1 if report.errors else 0


def upgrade_main(args: argparse.Namespace) -> int:
    """`voice db upgrade [--config FILE]`: apply the migrations to the configured database."""
    from cti.db import upgrade

    try:
        config = load_config(getattr(args, "config", None))
    except ConfigError as exc:
        print(f"error: {exc}")
        return 2
    print(f"database is up to date: {upgrade(config.database.url)}")
    return 0
