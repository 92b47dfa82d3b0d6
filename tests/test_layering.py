"""The layering the architecture promises, checked: cti imports nothing from voice at run time
(it declares what it needs in cti.ports), and the sans-IO cores import no I/O."""

from __future__ import annotations

import subprocess
import sys

from tests.peers import REPO


def test_cti_imports_nothing_from_voice() -> None:
    code = ("import pkgutil, importlib, sys, cti\n"
            "for m in pkgutil.walk_packages(cti.__path__, 'cti.'):\n"
            "    if not m.name.startswith('cti.migrations'):\n"
            "        importlib.import_module(m.name)\n"
            "print(' '.join(sorted(n for n in sys.modules if n == 'voice' or n.startswith('voice.'))))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"cti pulled in: {out.stdout.strip()}"
