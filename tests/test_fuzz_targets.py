"""The fuzz targets' contracts (fuzz/*.py) over their seed corpora, without atheris: the seeds
include inputs that broke them before (fuzz/seeds/sip/latin1-display.sip: issue 10 item 6)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

SEEDS = Path(__file__).resolve().parent.parent / "fuzz" / "seeds"


@pytest.mark.parametrize(("target", "seeds"), [("fuzz_sip", "sip"), ("fuzz_sip_core", "sip"),
                                               ("fuzz_sdp", "sdp"), ("fuzz_rtp", "rtp")])
def test_fuzz_target_accepts_its_seeds(target: str, seeds: str) -> None:
    module = importlib.import_module(f"fuzz.{target}")
    files = sorted((SEEDS / seeds).iterdir())
    assert files
    for path in files:
        data = path.read_bytes()
        module.test_one_input(data)
        for cut in (1, len(data) // 3, len(data) - 1):  # truncated variants too
            module.test_one_input(data[:cut])
