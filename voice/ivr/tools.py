"""`voice flows validate | schema | graph`: the admin's authoring tools."""

from __future__ import annotations

import argparse
import contextlib
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


def validate_path(path: Path, prompts: Path) -> tuple[list[FlowError], int]:
    """(errors, number of files checked) for a flow file or a directory of flows."""
    root = path if path.is_dir() else path.parent
    if not root.exists():
        return [FlowError(file=str(path), line=0, node=None, kind="missing",
                          message="no such file or directory")], 0
    library = FlowLibrary(root, prompts_dir=prompts, default_flow="main", routes={})
    with _quiet():
        errors = library.load()
    if path.is_dir():
        return errors, len(library._files())
    if path.suffix not in SUFFIXES or not path.is_file():
        return [FlowError(file=str(path), line=0, node=None, kind="missing",
                          message="not a flow file", expected=".yaml or .yml")], 0
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
