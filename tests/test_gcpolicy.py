"""Full garbage collections on the service's schedule (voice.gcpolicy) and their pause metric."""

from __future__ import annotations

import asyncio
import gc
import re
from pathlib import Path

from cti import metrics
from voice.gcpolicy import NEVER, FullCollections


def gen2_collections() -> float:
    text = metrics.render().decode()
    found = re.search(r'^voice_gc_pause_seconds_count\{generation="2"\} (\S+)', text, re.M)
    assert found, "voice_gc_pause_seconds is not exported"
    return float(found.group(1))


def test_full_collections_run_on_schedule_only_and_are_timed() -> None:
    saved = gc.get_threshold()
    metrics.GC_PAUSES.install()
    try:
        before = gen2_collections()

        async def main() -> int:
            policy = FullCollections(asyncio.get_running_loop(), 0.05)
            policy.start()
            # Python's own schedule no longer starts full collections; the younger two as before
            assert gc.get_threshold() == (saved[0], saved[1], NEVER)
            deadline = asyncio.get_running_loop().time() + 20  # a big heap makes each one slow
            while policy.runs < 3 and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.01)
            policy.stop()
            assert gc.get_threshold() == saved
            runs = policy.runs
            await asyncio.sleep(0.12)
            assert policy.runs == runs  # stopped means stopped
            assert policy.last_seconds > 0
            return runs

        runs = asyncio.run(main())
        assert runs >= 3  # every 0.05 s after the one before
        assert gen2_collections() - before >= runs  # each one in the histogram (and any others)
    finally:
        metrics.GC_PAUSES.remove()
        gc.set_threshold(*saved)


def test_config_default_and_off(tmp_path: Path) -> None:
    from voice.config import load_config

    path = tmp_path / "voice.conf"
    path.write_text("[node]\nfull_gc_interval = 0\n")
    assert load_config(path).node.full_gc_interval == 0
    path.write_text("")
    assert load_config(path).node.full_gc_interval == 60
