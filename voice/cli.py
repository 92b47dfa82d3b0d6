"""The `voice` command. Each subcommand's work lives in its own package; imports are lazy
so `voice flows validate` does not load the SIP stack or speech models."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence


def _lazy(target: str) -> object:
    """Handler that imports `module:function` only when the subcommand runs."""

    def run(args: argparse.Namespace) -> int:
        module, func = target.split(":")
        result = getattr(importlib.import_module(module), func)(args)
        return int(result or 0)

    return run


def build_parser() -> argparse.ArgumentParser:
    from voice import __version__

    parser = argparse.ArgumentParser(prog="voice", description=__doc__)
    parser.add_argument("--version", action="version", version=f"voice {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="start the SIP/RTP service, IVR and HTTP API")
    run.add_argument("--config", "-c", help="INI config file (see sip.example.conf)")
    run.set_defaults(handler=_lazy("voice.service:main"))

    cl = sub.add_parser("cluster", help="run N nodes behind Kamailio's dispatcher on this machine")
    cl.add_argument("--config", "-c", required=True,
                    help="base config: [sip] listen is Kamailio's, the nodes take the next ports")
    cl.add_argument("--nodes", "-n", type=int, default=2, help="how many nodes (default 2)")
    cl.add_argument("--workdir", default="data/cluster", help="node configs, logs and cluster.json")
    cl.add_argument("--kamailio", default="kamailio", help="the kamailio binary")
    cl.add_argument("--pike-density", type=int, default=400,
                    help="requests per 2 s one source address may send before pike blocks it")
    cl.add_argument("--children", type=int, default=4, help="Kamailio UDP worker processes")
    cl.set_defaults(handler=_lazy("voice.cluster:main"))

    flows = sub.add_parser("flows", help="IVR flow authoring tools")
    fsub = flows.add_subparsers(dest="flows_command", required=True)
    v = fsub.add_parser("validate", help="check flow files; every problem with file:line")
    v.add_argument("path", nargs="?", default="ivr_flows")
    v.add_argument("--prompts", default="recordings/prompts", help="directory of recorded prompts")
    v.set_defaults(handler=_lazy("voice.ivr.tools:validate_main"))
    s = fsub.add_parser("schema", help="print the JSON Schema of flow files")
    s.set_defaults(handler=_lazy("voice.ivr.tools:schema_main"))
    g = fsub.add_parser("graph", help="write a flow as a diagram (Mermaid text or SVG)")
    g.add_argument("file")
    g.add_argument("--format", choices=["mermaid", "svg"], default=None)
    g.add_argument("--output", "-o", help="output file (format from its suffix); stdout if absent")
    g.set_defaults(handler=_lazy("voice.ivr.tools:graph_main"))

    sim = sub.add_parser("simulate", help="try a flow as a text-mode caller")
    sim.add_argument("file")
    sim.add_argument("--caller", default="+15550100", help="caller ID to present")
    sim.add_argument("--config", "-c", help="config file (database for CTI lookups)")
    sim.set_defaults(handler=_lazy("voice.ivr.simulate:main"))

    asr = sub.add_parser("asr", help="speech recognition tools")
    asub = asr.add_subparsers(dest="asr_command", required=True)
    t = asub.add_parser("transcribe", help="print a transcript of a WAV recording")
    t.add_argument("file")
    t.add_argument("--engine", choices=["auto", "whisper", "vosk", "pocketsphinx"], default=None)
    t.add_argument("--model", help="model for the engine: Vosk directory, or Whisper tiny.en|base|directory")
    t.add_argument("--grammar", help='a menu\'s words, comma-separated ("one,two,three"): grammar mode')
    t.add_argument("--config", "-c")
    t.set_defaults(handler=_lazy("voice.asr.cli:transcribe_main"))

    cust = sub.add_parser("customers", help="customer store tools")
    csub = cust.add_subparsers(dest="customers_command", required=True)
    imp = csub.add_parser("import", help="bulk-import customers from CSV or JSON lines")
    imp.add_argument("file")
    imp.add_argument("--config", "-c")
    imp.set_defaults(handler=_lazy("voice.storetools:import_main"))

    db = sub.add_parser("db", help="database tools")
    dsub = db.add_subparsers(dest="db_command", required=True)
    up = dsub.add_parser("upgrade", help="apply database migrations")
    up.add_argument("--config", "-c")
    up.set_defaults(handler=_lazy("voice.storetools:upgrade_main"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
