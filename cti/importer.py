"""`voice customers import FILE`: load a CRM export (CSV with a header row, or JSON lines).

Columns/keys name, phone, email, account, external_id are the customer and its identities;
every other column becomes an attribute. A row whose identities match a customer updates it;
otherwise a customer is created. A bad row is reported with its line number and skipped.

CSV cells are text; attribute cells keep their type the way a person reads them: `42`, `-3`,
`42.50` become numbers, `true`/`false` booleans, anything else (`00123`, `1e5`, `abc`) stays text.
A column header may name the type instead: `balance:number`, `vip:bool`, `zip:text` (a cell
that does not fit the named type is an error for that row).
"""

from __future__ import annotations

import asyncio
import csv
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cti.db import migrate, open_database
from cti.identity import IDENTITY_KINDS, IdentityError, normalize_identity
from cti.store import CustomerStore, IdentityConflict
from cti.validation import ApiError, check_text

_MULTI_SEPARATOR = ";"  # a CSV cell may hold several phones: "+1555...;+1555..."


@dataclass
class ImportReport:
    imported: int = 0
    updated: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"line {n}: {msg}" for n, msg in self.errors]
        out.append(f"imported {self.imported}, updated {self.updated}, errors {len(self.errors)}")
        return out


def read_rows(path: Path) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """(line number, row) pairs; a row that cannot be read is a string saying why."""
    with open(path, encoding="utf-8-sig", newline="") as fh:
        first = fh.read(1)
        fh.seek(0)
        if path.suffix.lower() in (".jsonl", ".ndjson", ".json") or first == "{":
            for number, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError as exc:
                    yield number, f"not valid JSON: {exc}"
                    continue
                yield number, row if isinstance(row, dict) else "expected a JSON object"
            return
        reader = csv.DictReader(fh)
        for row in reader:
            if None in row:
                yield reader.line_num, "more cells than header columns"
                continue
            try:
                yield reader.line_num, typed_row(row)
            except ValueError as exc:
                yield reader.line_num, str(exc)


_NUMBER = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?")
_TYPES = ("text", "number", "bool")


def cell_value(column: str, raw: str, kind: str | None) -> Any:
    """One CSV attribute cell as its type (see the module docstring)."""
    text = raw.strip()
    if kind == "text":
        return raw
    if kind in (None, "number") and _NUMBER.fullmatch(text):
        return float(text) if "." in text else int(text)
    if kind in (None, "bool") and text.lower() in ("true", "false"):
        return text.lower() == "true"
    if kind is not None:
        raise ValueError(f"{column}: {raw[:40]!r} is not a {kind}")
    return raw


def typed_row(row: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in row.items():
        if not key or value in (None, ""):
            continue
        column, _, kind = key.strip().partition(":")
        column = column.strip()
        if kind and kind.strip() not in _TYPES:
            raise ValueError(f"column {key!r}: unknown type (use {', '.join(_TYPES)})")
        if column in ("name", *IDENTITY_KINDS):
            out[column] = value
        else:
            out[column] = cell_value(column, value, kind.strip() or None)
    return out


def parse_row(row: dict[str, Any], default_country: str
              ) -> tuple[str | None, list[tuple[str, str]], dict[str, Any]]:
    check_text(row, "")
    name = row.get("name")
    if name is not None and not isinstance(name, str):
        raise ValueError("name: must be text")
    identities: list[tuple[str, str]] = []
    for kind in IDENTITY_KINDS:
        value = row.get(kind)
        if value is None or value == "":
            continue
        values = value if isinstance(value, list) else str(value).split(_MULTI_SEPARATOR)
        for raw in values:
            if str(raw).strip():
                try:
                    identities.append((kind, normalize_identity(kind, str(raw), default_country)))
                except IdentityError as exc:
                    raise ValueError(f"{kind}: {exc}") from None
    if not identities:
        raise ValueError("no phone, email, account or external_id")
    attributes = {k: v for k, v in row.items() if k not in ("name", *IDENTITY_KINDS)}
    if isinstance(attributes.get("attributes"), dict):  # JSON lines may nest them
        attributes = {**attributes.pop("attributes"), **attributes}
    return (name.strip() or None) if name else None, list(dict.fromkeys(identities)), attributes


async def import_file(store: CustomerStore, path: Path) -> ImportReport:
    report = ImportReport()
    for number, row in read_rows(path):
        if isinstance(row, str):
            report.errors.append((number, row))
            continue
        try:
            name, identities, attributes = parse_row(row, store.default_country)
            _, created = await store.upsert_customer(name=name, identities=identities, attributes=attributes)
        except (ValueError, ApiError) as exc:
            report.errors.append((number, f"{exc.field}: {exc.message}" if isinstance(exc, ApiError)
                                  else str(exc)))
            continue
        except IdentityConflict as exc:
            report.errors.append((number, f"identities belong to different customers: "
                                          f"{', '.join(exc.customer_ids)}"))
            continue
        if created:
            report.imported += 1
        else:
            report.updated += 1
    return report


async def _run(url: str, default_country: str, path: Path) -> ImportReport:
    db = open_database(url)
    try:
        await migrate(db)
        return await import_file(CustomerStore(db, default_country=default_country), path)
    finally:
        await db.dispose()


def run_import(url: str, default_country: str, path: Path) -> ImportReport:
    """Import `path` into the database at `url` (migrated first); UnicodeDecodeError if not UTF-8."""
    return asyncio.run(_run(url, default_country, path))
