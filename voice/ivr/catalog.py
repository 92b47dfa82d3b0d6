"""The flows as cti's admin pages see them (cti.ports.FlowCatalog), over a FlowLibrary.

The service hands the admin pages its own live library (what calls run); a process that serves
only the API (tests, `voice` tools) gets one that loads the flows directory itself, at most every
few seconds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from voice.config import Config
from voice.ivr.graph import to_svg
from voice.ivr.library import FlowLibrary

RELOAD_EVERY = 5.0


class LibraryCatalog:
    """A FlowCatalog over the library `provider()` returns (None: no flows yet)."""

    def __init__(self, provider: Callable[[], FlowLibrary | None]) -> None:
        self.provider = provider

    def _library(self) -> FlowLibrary | None:
        return self.provider()

    def names(self) -> list[str]:
        lib = self._library()
        return [] if lib is None else sorted(set(lib.flows) | set(lib.errors))

    def errors(self, name: str) -> list[str]:
        lib = self._library()
        return [] if lib is None else [str(e) for e in lib.errors.get(name, [])]

    def node_count(self, name: str) -> int | None:
        lib = self._library()
        flow = lib.flows.get(name) if lib is not None else None
        return len(flow.nodes) if flow is not None else None

    def diagram(self, name: str, *, live: Mapping[str, int] | None = None,
                counts: Mapping[str, Any] | None = None) -> str | None:
        lib = self._library()
        flow = lib.flows.get(name) if lib is not None else None
        if flow is None:
            return None
        return to_svg(flow, live=dict(live) if live else None, counts=dict(counts) if counts else None)


def config_catalog(config: Config) -> LibraryCatalog:
    """A catalog that loads the config's flows directory itself (read-only, every few seconds)."""
    lock = threading.Lock()
    state: dict[str, Any] = {"at": 0.0, "library": None}
    ivr = config.ivr

    def provider() -> FlowLibrary | None:
        with lock:
            if state["library"] is None or time.monotonic() - state["at"] > RELOAD_EVERY:
                library = FlowLibrary(ivr.flows, prompts_dir=ivr.prompts, default_flow=ivr.default_flow,
                                      routes=ivr.routes)
                library.load()
                state.update(at=time.monotonic(), library=library)
            lib: FlowLibrary | None = state["library"]
            return lib

    return LibraryCatalog(provider)
