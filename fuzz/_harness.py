"""Shared entry point of the fuzz targets: run one under atheris (libFuzzer) with its seeds.

    python fuzz/fuzz_sip.py [libFuzzer flags] [corpus dirs]

`make fuzz FUZZ_SECONDS=60` runs every target for that long on a scratch copy of fuzz/seeds/.
Each target's `test_one_input(data)` raises only when the code under test breaks its contract
(an exception other than its documented parse error, or output that violates an invariant);
tests/test_fuzz_targets.py runs the same function over the seeds without atheris.
"""

from __future__ import annotations

import sys
from collections.abc import Callable


def main(test_one_input: Callable[[bytes], None]) -> None:
    import logging

    import atheris

    logging.disable(logging.CRITICAL)  # security events and warnings are expected by the million

    atheris.instrument_all()  # the project's modules are imported already: instrument them for coverage
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
