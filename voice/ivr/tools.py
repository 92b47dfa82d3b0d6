"""`voice flows validate | schema | graph`: the admin's authoring tools."""

from __future__ import annotations

import argparse
import contextlib
import difflib
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

from voice.ivr.graph import to_mermaid, to_svg
from voice.ivr.library import SUFFIXES, FlowLibrary
from voice.ivr.model import FlowError
from voice.ivr.schema import flow_schema
from voice.ivr.validate import parse_flow


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The library logs every error for the service; the CLI prints them itself."""
    logger = logging.getLogger("voice.ivr")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


class _OneFolder(FlowLibrary):
    """A library of the flow files directly in one folder (no subfolders): for a file that lies
    outside the flows directory, so that a stray path never makes us read a whole tree."""

    def _files(self) -> dict[str, Path]:
        if not self.flows_dir.is_dir():
            return {}
        return {p.stem: p for p in sorted(self.flows_dir.glob("*"))
                if p.suffix in SUFFIXES and p.is_file() and not p.name.startswith(".")}


def _missing(path: Path) -> FlowError:
    near = []
    if path.parent.is_dir():
        names = [p.name for p in path.parent.iterdir() if p.suffix in SUFFIXES]
        near = difflib.get_close_matches(path.name, names, n=1)
    hint = f" (did you mean {path.parent / near[0]}?)" if near else ""
    return FlowError(file=str(path), line=0, node=None, kind="missing",
                     message=f"no such file{hint}")


def library_for_file(path: Path, prompts: Path, flows_dir: Path = Path("ivr_flows"),
                     ) -> tuple[FlowLibrary | None, FlowError | None]:
    """The library a single flow file is checked or simulated in: the flows directory when the file
    is inside it (sub-flows resolve), else only the file's own folder. Nothing is read when the
    file is missing or is not a flow file."""
    if not path.exists():
        return None, _missing(path)
    if path.suffix not in SUFFIXES or not path.is_file():
        return None, FlowError(file=str(path), line=0, node=None, kind="missing",
                               message="not a flow file", expected=".yaml or .yml")
    resolved, root = path.resolve(), flows_dir.resolve()
    if root.is_dir() and resolved.is_relative_to(root):
        return FlowLibrary(root, prompts_dir=prompts, default_flow="main", routes={}), None
    return _OneFolder(path.parent, prompts_dir=prompts, default_flow="main", routes={}), None


def flow_name(library: FlowLibrary, path: Path) -> str:
    return path.resolve().relative_to(library.flows_dir.resolve()).with_suffix("").as_posix()


def validate_path(path: Path, prompts: Path, flows_dir: Path = Path("ivr_flows"),
                  ) -> tuple[list[FlowError], int]:
    """(errors, number of files checked) for a flow file or a directory of flows."""
    if path.is_dir():
        library = FlowLibrary(path, prompts_dir=prompts, default_flow="main", routes={})
        with _quiet():
            errors = library.load()
        return errors, len(library._files())
    found, problem = library_for_file(path, prompts, flows_dir)
    if found is None:
        assert problem is not None
        return [problem], 0
    with _quiet():
        errors = found.load()
    return [e for e in errors if Path(e.file).resolve() == path.resolve()], 1


def validate_main(args: argparse.Namespace) -> int:
    errors, files = validate_path(Path(args.path), Path(args.prompts))
    for err in sorted(errors, key=lambda e: (e.file, e.line)):
        print(err)
    if errors:
        print(f"{len(errors)} problem(s) in {len({e.file for e in errors})} file(s)", file=sys.stderr)
        return 1
    print(f"ok: {files} flow file(s) valid")
    return 0


def schema_main(args: argparse.Namespace) -> int:
    print(json.dumps(flow_schema(), indent=2))
    return 0


def graph_main(args: argparse.Namespace) -> int:
    path = Path(args.file)
    flow, errors = parse_flow(path, path.stem, prompts_dir=None)
    if flow is None:
        for err in errors:
            print(err, file=sys.stderr)
        return 1
    fmt = args.format or ("svg" if args.output and args.output.endswith(".svg") else "mermaid")
    text = to_svg(flow) if fmt == "svg" else to_mermaid(flow)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0
