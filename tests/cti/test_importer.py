"""`voice customers import` and `voice db upgrade`: the commands, with bad lines reported."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cti.importer import import_file
from cti.lookup import lookup
from cti.store import CustomerStore
from voice.cli import main as voice_main

CSV = """name,phone,email,account,external_id,tier,balance
Anna Schmidt,030 1234567,anna@example.com,A-1,crm-1,gold,10.50
Bob,+1 212 555 0100,,A-2,,silver,
Broken,call me,,,,,
No Identity,,,,,bronze,1
Anna S.,+49 30 1234567,,,,platinum,
Clash,+12125550100,anna@example.com,,,,
Dora,+4930999888;+4930999777,,,,,
"""


async def test_csv_import_creates_updates_and_reports_bad_lines(store: CustomerStore, tmp_path: Path) -> None:
    path = tmp_path / "crm.csv"
    path.write_text(CSV)
    report = await import_file(store, path)
    assert (report.imported, report.updated) == (3, 1)
    assert [n for n, _ in report.errors] == [4, 5, 7]
    assert "phone" in report.errors[0][1] and "different customers" in report.errors[2][1]
    anna = await lookup(store, phone="+49301234567")
    assert anna["customer"]["name"] == "Anna S."
    assert anna["attributes"] == {"tier": "platinum", "balance": 10.5}  # numbers stay numbers
    assert anna["customer"]["external_ids"] == ["crm-1"]
    dora = await lookup(store, phone="+4930999777")
    assert dora["customer"]["phones"] == ["+4930999888", "+4930999777"]


async def test_json_lines_import(store: CustomerStore, tmp_path: Path) -> None:
    path = tmp_path / "crm.jsonl"
    rows = [{"name": "Eve", "email": "EVE@example.com", "attributes": {"tier": "gold"}, "segment": "b2b"},
            "not an object", {"name": "Finn", "account": ["F-1", "F-2"]}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n{broken\n")
    report = await import_file(store, path)
    assert (report.imported, report.updated, [n for n, _ in report.errors]) == (2, 0, [2, 4])
    eve = await store.find_customers([("email", "eve@example.com")])
    assert eve[0]["attributes"] == {"tier": "gold", "segment": "b2b"}
    assert (await lookup(store, account="F-2"))["customer"]["name"] == "Finn"


def _config_file(tmp_path: Path) -> Path:
    # The CLI reads only the INI file, which cannot name a schema: the CLI test uses SQLite.
    cfg = tmp_path / "voice.conf"
    cfg.write_text(f"[database]\nurl = sqlite+aiosqlite:///{tmp_path / 'sub' / 'voice.db'}\n"
                   "[cti]\ndefault_country = DE\n")
    return cfg


def test_commands_upgrade_and_import(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _config_file(tmp_path)
    assert voice_main(["db", "upgrade", "--config", str(cfg)]) == 0
    assert voice_main(["db", "upgrade", "--config", str(cfg)]) == 0  # idempotent
    assert (tmp_path / "sub" / "voice.db").is_file()
    csv_path = tmp_path / "crm.csv"
    csv_path.write_text(CSV)
    assert voice_main(["customers", "import", str(csv_path), "--config", str(cfg)]) == 1
    out = capsys.readouterr().out
    assert "line 4: phone:" in out and "imported 3, updated 1, errors 3" in out
    assert voice_main(["customers", "import", str(tmp_path / "missing.csv"), "--config", str(cfg)]) == 2
