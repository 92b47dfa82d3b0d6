"""First-run papercuts: missing flow files named as missing, simulate/validate never reading
outside the flows directory, CSV import keeping numbers and booleans, `|money` refusing text."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cti.importer import cell_value, typed_row
from voice.ivr.templates import FilterError, Template, money
from voice.ivr.tools import library_for_file, validate_path

REPO = Path(__file__).resolve().parent.parent
FLOW = "start: bye\nnodes:\n  bye: {hangup: Bye.}\n"


def voice(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "voice.cli", *args], capture_output=True, text=True,
                          timeout=60, cwd=cwd, input="")


def test_validate_names_a_missing_file_and_suggests_the_near_one(tmp_path: Path) -> None:
    flows = tmp_path / "ivr_flows"
    flows.mkdir()
    (flows / "main.yaml").write_text(FLOW)
    out = voice("flows", "validate", "ivr_flows/mian.yaml", cwd=tmp_path)
    assert out.returncode == 1
    assert "ivr_flows/mian.yaml:0: no such file (did you mean ivr_flows/main.yaml?)" in out.stdout
    assert "not a flow file" not in out.stdout
    (tmp_path / "notes.txt").write_text("x")
    out = voice("flows", "validate", "notes.txt", cwd=tmp_path)
    assert out.returncode == 1 and "not a flow file" in out.stdout
    assert voice("flows", "validate", "ivr_flows/main.yaml", cwd=tmp_path).returncode == 0


def test_a_file_outside_the_flows_directory_reads_only_its_own_folder(tmp_path: Path) -> None:
    (tmp_path / "deep" / "er").mkdir(parents=True)
    (tmp_path / "deep" / "er" / "broken.yaml").write_text("start: [\n")
    (tmp_path / "one.yaml").write_text(FLOW)
    library, problem = library_for_file(tmp_path / "one.yaml", tmp_path / "prompts", REPO / "ivr_flows")
    assert problem is None and library is not None
    assert list(library._files()) == ["one"]  # no walk through deep/er
    errors, files = validate_path(tmp_path / "one.yaml", tmp_path / "prompts", REPO / "ivr_flows")
    assert errors == [] and files == 1
    # inside the flows directory, sub-flows resolve from its root
    library, _ = library_for_file(REPO / "ivr_flows" / "main.yaml", REPO / "recordings", REPO / "ivr_flows")
    assert library is not None and "lib/account_entry" in library._files()


def test_simulate_a_typo_loads_nothing(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "other.yaml").write_text("start: [\n")  # would be reported if it were read
    out = voice("simulate", "mian.yaml", cwd=tmp_path)
    assert out.returncode == 2
    assert "mian.yaml:0: no such file" in out.stderr and "other.yaml" not in out.stderr + out.stdout


def test_csv_cells_keep_numbers_and_booleans() -> None:
    row = typed_row({"name": "123", "phone": "030 1", "balance": "42.50", "visits": "7", "vip": "TRUE",
                     "zip": "00123", "code": "1e5", "note": "abc", "pin:text": "42", "limit:number": "10"})
    assert row == {"name": "123", "phone": "030 1", "balance": 42.5, "visits": 7, "vip": True,
                   "zip": "00123", "code": "1e5", "note": "abc", "pin": "42", "limit": 10}
    with pytest.raises(ValueError, match="balance: 'abc' is not a number"):
        cell_value("balance", "abc", "number")
    with pytest.raises(ValueError, match="unknown type"):
        typed_row({"x:date": "1"})


def test_money_refuses_what_is_not_a_number() -> None:
    assert money("") == "" and money(None) == ""
    for bad in ("abc", True, "nan", "Infinity", [1]):
        with pytest.raises(FilterError, match="not a number"):
            money(bad)
    with pytest.raises(FilterError):
        Template("You owe {balance|money}.").render({"balance": "abc"})
