"""FlowLibrary: every flow of a directory, validated as a whole, hot-reloaded on change.

A flow's name is its path under the directory without `.yaml` (`main`, `lib/identify`).
A file that fails validation is never loaded; when a loaded file changes into an invalid
one, the last good version keeps running and every error is logged. Calls hold the Flow
object they started with, so a reload never changes a call in progress.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Mapping
from pathlib import Path

from voice.ivr.model import Flow, FlowError
from voice.ivr.validate import check_links, parse_flow

log = logging.getLogger("voice.ivr")

SUFFIXES = (".yaml", ".yml")


class FlowLibrary:
    def __init__(self, flows_dir: Path, *, prompts_dir: Path, default_flow: str,
                 routes: Mapping[str, str], tts: object | None = None) -> None:
        """`tts` (a voice.tts.Tts), when given, lets watch() pre-render static prompt text."""
        self.flows_dir = Path(flows_dir)
        self.prompts_dir = Path(prompts_dir)
        self.default_flow = default_flow
        self.routes = dict(routes)
        self.tts = tts
        self.flows: dict[str, Flow] = {}  # last good, linked versions
        self._parsed: dict[str, Flow] = {}  # last good, unlinked
        self._mtimes: dict[Path, float] = {}
        self.errors: dict[str, list[FlowError]] = {}

    def _files(self) -> dict[str, Path]:
        if not self.flows_dir.is_dir():
            return {}
        out = {}
        for path in sorted(self.flows_dir.rglob("*")):
            if path.suffix in SUFFIXES and path.is_file() and not any(p.startswith(".") for p in path.parts):
                out[path.relative_to(self.flows_dir).with_suffix("").as_posix()] = path
        return out

    def load(self) -> list[FlowError]:
        """Load every file; invalid ones are left out. Returns (and logs) every error."""
        return self._reload(force=True)

    def _reload(self, force: bool = False) -> list[FlowError]:
        files = self._files()
        changed: dict[str, Path] = {}
        for name, path in files.items():
            try:
                mtime = path.stat().st_mtime
            except OSError:
                continue
            if force or self._mtimes.get(path) != mtime:
                self._mtimes[path] = mtime
                changed[name] = path
        removed = [n for n in self._parsed if n not in files]
        if not changed and not removed:
            return []
        new_errors: dict[str, list[FlowError]] = {}
        candidates = {n: f for n, f in self._parsed.items() if n in files}
        for name, path in changed.items():
            flow, errs = parse_flow(path, name, prompts_dir=self.prompts_dir, mtime=self._mtimes[path])
            if flow is not None:
                candidates[name] = flow
            else:
                new_errors[name] = errs
        # links (sub-flows, variables) are checked on the new set; a flow whose links break stays old
        for name, errs in check_links(candidates).items():
            new_errors.setdefault(name, []).extend(errs)
            if name in self._parsed and name not in changed:
                continue  # unchanged flow broken by another file: keep it, report
            candidates.pop(name, None)
            if name in self._parsed:
                candidates[name] = self._parsed[name]
        for name in removed:
            log.warning("flow %s was removed; calls already in it finish normally", name)
        for name in list(new_errors):
            verb = "refused (keeping the last good version)" if name in self._parsed else "not loaded"
            log.error("flow %s %s: %d problem(s)", name, verb, len(new_errors[name]))
            for err in new_errors[name]:
                log.error("  %s", err)
        old_linked = self.flows
        self.flows = _link(candidates, self._parsed, old_linked)
        self._parsed = candidates
        for name in new_errors:
            if name not in changed and name in old_linked:  # broken by another file: keep its old links
                self.flows[name] = old_linked[name]
        for name in changed:
            if name not in new_errors:
                log.info("flow %s loaded (%d nodes)", name, len(self.flows[name].nodes))
        self.errors = new_errors
        return [e for errs in new_errors.values() for e in errs]

    def flow_for(self, dialled: str) -> Flow:
        """The flow for a dialled number (routes), else the default flow. KeyError if neither loaded."""
        name = self.routes.get(dialled, self.default_flow)
        flow = self.flows.get(name) or self.flows.get(self.default_flow)
        if flow is None:
            raise KeyError(f"no valid flow {name!r} (loaded: {', '.join(sorted(self.flows)) or 'none'})")
        return flow

    async def prerender(self) -> int:
        """Render every static TTS text of every flow into the cache; returns how many."""
        if self.tts is None:
            return 0
        texts = {item.text.source for flow in self.flows.values() for item in flow.prompts()
                 if item.kind == "say" and item.text is not None and item.text.static}
        count = 0
        for text in sorted(texts):
            try:
                await self.tts.render(text)  # type: ignore[attr-defined]
                count += 1
            except Exception as exc:
                log.error("pre-rendering %r failed: %s", text[:60], exc)
        return count

    async def watch(self, interval: float = 1.0) -> None:
        """Run forever: reload changed files every `interval` seconds (and pre-render prompts)."""
        await self.prerender()
        while True:
            await asyncio.sleep(interval)
            before = dict(self.flows)
            # stat() of a few files is cheap, but a flows dir on a slow disk must not stall calls
            await asyncio.to_thread(self._reload)
            if any(self.flows.get(n) is not f for n, f in before.items()) or set(self.flows) != set(before):
                await self.prerender()


def _link(flows: dict[str, Flow], prev_parsed: dict[str, Flow],
          prev_linked: dict[str, Flow]) -> dict[str, Flow]:
    """Flow objects whose `subflows` point at the current versions. An unchanged flow whose
    sub-flows are unchanged keeps its object; calls in progress keep whatever they hold."""
    linked: dict[str, Flow] = {}

    def get(name: str) -> Flow:
        if name in linked:
            return linked[name]
        flow = flows[name]
        subs: dict[str, Flow] = {}
        linked[name] = dataclasses.replace(flow, subflows=subs)  # placeholder first: recursion is allowed
        for _, target, _ in flow.calls:
            if target in flows:
                subs[target] = get(target)
        old = prev_linked.get(name)
        if (old is not None and prev_parsed.get(name) is flow and old.subflows.keys() == subs.keys()
                and all(old.subflows[t] is subs[t] for t in subs)):
            linked[name] = old
        return linked[name]

    for name in flows:
        get(name)
    return linked
