"""Parse and validate flow files: every problem at once, each with file:line and a hint.

`parse_flow()` checks one file on its own (structure, actions, keys, node references,
reachability, prompt files, regexes, expressions, templates); `check_links()` checks what
needs the whole library (sub-flow references, variables never assigned anywhere).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from voice.config_values import QUEUE_NAME
from voice.ivr.expr import Expr, ExprError
from voice.ivr.model import BUILTIN_VARS, Flow, FlowError, MenuOption, Node, PromptItem, Settings
from voice.ivr.spec import ACTIONS, FLOW_KEYS, NODE_KEYS, SETTINGS_KEYS, ActionSpec, Field
from voice.ivr.templates import Template, TemplateError
from voice.ivr.yamlsrc import LDict, LList, YamlProblem, load_yaml

DTMF_KEYS = set("0123456789*#ABCD")
_IDENT = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_NO_TARGET = object()


def nearest(name: object, choices: Iterable[str]) -> str | None:
    options = list(choices)
    found = difflib.get_close_matches(str(name), options, n=1, cutoff=0.5)
    if found:
        return found[0]
    # `max_digits` -> `max`, `no_input_prompt` -> `no_input`: a valid name inside the wrong one
    inside = [c for c in options if len(c) >= 3 and (c in str(name) or str(name) in c)]
    return max(inside, key=len) if inside else None


class _Parser:
    def __init__(self, file: str, prompts_dir: Path | None) -> None:
        self.file = file
        self.prompts_dir = prompts_dir
        self.errors: list[FlowError] = []
        self.node = ""
        self.node_refs: list[tuple[str, str, int]] = []  # (from node, target, line)
        self.flow_refs: list[tuple[str, str, int]] = []
        self.assigned: set[str] = set()
        self.read: list[tuple[str, str, int]] = []  # (node, variable, line)
        self.sensitive: set[str] = set()

    def error(self, line: int, kind: str, message: str, **kw: Any) -> None:
        self.errors.append(FlowError(file=self.file, line=line, node=self.node or None, kind=kind,
                                     message=message, **kw))

    # ---- field conversion ------------------------------------------------
    def keys(self, data: LDict, allowed: dict[str, Field], what: str) -> None:
        for key in data:
            if key not in allowed:
                self.error(data.line_of(key), "unknown_key", f"unknown key {key!r} in {what}",
                           expected=", ".join(allowed), found=repr(key), hint=nearest(key, allowed))
        for key, f in allowed.items():
            if f.required and key not in data:
                self.error(data.line, "missing_key", f"{what} needs {key!r}", expected=f"{key}: <{f.type}>")

    def fields(self, data: LDict, allowed: dict[str, Field], what: str) -> dict[str, Any]:
        self.keys(data, allowed, what)
        out: dict[str, Any] = {}
        for key, value in data.items():
            if key in allowed:
                out[key] = self.convert(allowed[key].type, value, data.value_line(key), f"{what} {key!r}")
        return out

    def bad(self, line: int, what: str, expected: str, value: Any) -> None:
        self.error(line, "bad_value", f"bad value for {what}", expected=expected, found=repr(value))

    def convert(self, ftype: str, value: Any, line: int, what: str) -> Any:
        if ftype == "prompt":
            return self.prompt(value, line, what)
        if ftype == "prompts":
            items = value if isinstance(value, LList) else [value]
            lines = value.item_lines if isinstance(value, LList) else [line]
            return [self.prompt(v, ln, what) for v, ln in zip(items, lines, strict=False)]
        if ftype == "files":
            items = value if isinstance(value, list) else [value]
            return tuple(self.prompt(LDictOf({"play": v}, line), line, what)[0] for v in items)
        if ftype == "node":
            if not isinstance(value, str):
                self.bad(line, what, "a node name", value)
                return None
            self.node_refs.append((self.node, value, line))
            return value
        if ftype == "flow":
            if not isinstance(value, str):
                self.bad(line, what, "a flow name", value)
                return None
            self.flow_refs.append((self.node, value, line))
            return value
        if ftype == "expr":
            return self.expr(value, line, what)
        if ftype == "template":
            return self.template(str(value) if isinstance(value, (int, float)) else value, line, what)
        if ftype == "var":
            if not isinstance(value, str) or not _IDENT.match(value) or value in BUILTIN_VARS:
                self.bad(line, what, "a variable name (letters, digits, _; not a built-in)", value)
                return None
            self.assigned.add(value)
            return value
        if ftype == "int":
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                self.bad(line, what, "a whole number >= 0", value)
                return None
            return value
        if ftype == "number":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                self.bad(line, what, "a number of seconds >= 0", value)
                return None
            return float(value)
        if ftype == "fraction":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                self.bad(line, what, "a confidence from 0 to 1 (e.g. 0.6)", value)
                return None
            return float(value)
        if ftype == "bool":
            if not isinstance(value, bool):
                self.bad(line, what, "true or false", value)
                return None
            return value
        if ftype == "str":
            return str(value)
        if ftype == "none":
            if value not in (None, True):
                self.bad(line, what, "nothing (or true)", value)
            return None
        if ftype.startswith("enum:"):
            choices = ftype[5:].split("|")
            if value not in choices:
                self.error(line, "bad_value", f"bad value for {what}", expected=" | ".join(choices),
                           found=repr(value), hint=nearest(value, choices))
                return None
            return value
        if ftype == "regex":
            try:
                return re.compile(str(value))
            except re.error as exc:
                self.error(line, "bad_regex", f"bad regular expression in {what}: {exc}",
                           expected="a Python regular expression", found=repr(value))
                return None
        if ftype == "key":
            key = str(value)
            if len(key) != 1 or key not in DTMF_KEYS:
                self.bad(line, what, "one DTMF key (0-9 * # A-D)", value)
                return None
            return key
        if ftype == "words":
            items = value if isinstance(value, list) else [value]
            if not all(isinstance(w, (str, int)) and not isinstance(w, bool) for w in items):
                self.bad(line, what, "a word or a list of words", value)
                return ()
            return tuple(str(w).lower().strip() for w in items)
        if ftype == "options":
            return self.options(value, line, what)
        if ftype == "branches":
            return self.branches(value, line, what)
        if ftype == "assignments":
            return self.assignments(value, line, what)
        if ftype == "headers":
            if not isinstance(value, LDict):
                self.bad(line, what, "a mapping of header: text", value)
                return {}
            return {str(k): self.template(str(v), value.value_line(k), f"header {k}")
                    for k, v in value.items()}
        if ftype == "json":
            return self.json_templates(value, line, what)
        raise AssertionError(f"unknown field type {ftype}")

    def expr(self, value: Any, line: int, what: str) -> Expr | None:
        source = value if isinstance(value, str) else repr(value)
        try:
            e = Expr(source)
        except ExprError as exc:
            self.error(line, "bad_expression", f"{what}: {exc}", expected="a safe expression",
                       found=repr(source))
            return None
        self.read.extend((self.node, n, line) for n in e.names)
        return e

    def template(self, value: Any, line: int, what: str) -> Template | None:
        if not isinstance(value, str):
            self.bad(line, what, "text", value)
            return None
        try:
            t = Template(value)
        except TemplateError as exc:
            self.error(line, "bad_template", f"{what}: {exc}", found=repr(value))
            return None
        self.read.extend((self.node, n, line) for n in t.names)
        return t

    def json_templates(self, value: Any, line: int, what: str) -> Any:
        if isinstance(value, str):
            return self.template(value, line, what)
        if isinstance(value, LDict):
            return {k: self.json_templates(v, value.value_line(k), what) for k, v in value.items()}
        if isinstance(value, list):
            return [self.json_templates(v, line, what) for v in value]
        return value

    def prompt(self, value: Any, line: int, what: str) -> tuple[PromptItem, ...]:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            t = self.template(str(value), line, what)
            return (PromptItem(kind="say", text=t),) if t else ()
        if isinstance(value, LList):
            out: list[PromptItem] = []
            for i, item in enumerate(value):
                out.extend(self.prompt(item, value.line_of(i), what))
            return tuple(out)
        if not isinstance(value, LDict):
            self.bad(line, what, "text, {say: text}, {play: file}, {silence: seconds} or a list", value)
            return ()
        allowed = {"say": Field("template"), "play": Field("str"), "silence": Field("number"),
                   "dtmf_barge_in": Field("bool"), "speech_barge_in": Field("bool")}
        f = self.fields(value, allowed, f"prompt in {what}")
        kinds = [k for k in ("say", "play", "silence") if k in value]
        if len(kinds) != 1:
            self.error(value.line, "bad_value", f"a prompt item in {what} needs one of say/play/silence",
                       expected="say | play | silence", found=", ".join(kinds) or "none")
            return ()
        barge: dict[str, Any] = {"dtmf_barge_in": f.get("dtmf_barge_in"),
                                 "speech_barge_in": f.get("speech_barge_in")}
        if kinds[0] == "say":
            return (PromptItem(kind="say", text=f["say"], **barge),) if f["say"] else ()
        if kinds[0] == "silence":
            return (PromptItem(kind="silence", seconds=f["silence"] or 0.0, **barge),)
        file = str(value["play"])
        if self.prompts_dir is not None and prompt_path(self.prompts_dir, file) is None:
            self.error(value.value_line("play"), "missing_prompt", f"prompt file {file!r} not found",
                       expected=f"a file in {self.prompts_dir}", found=file,
                       hint=nearest(file, [p.name for p in self.prompts_dir.glob("*")]
                                    if self.prompts_dir.is_dir() else []))
        return (PromptItem(kind="play", file=file, **barge),)

    def options(self, value: Any, line: int, what: str) -> list[MenuOption]:
        if not isinstance(value, LList) or not value:
            self.bad(line, what, "a list of options ({dtmf, words, goto})", value)
            return []
        allowed = {"dtmf": Field("str"), "words": Field("words"), "goto": Field("node", required=True),
                   "when": Field("expr"), "value": Field("str")}
        out: list[MenuOption] = []
        seen: dict[str, int] = {}
        for i, item in enumerate(value):
            ln = value.line_of(i)
            if not isinstance(item, LDict):
                self.bad(ln, what, "an option mapping {dtmf, words, goto}", item)
                continue
            f = self.fields(item, allowed, "menu option")
            raw = item.get("dtmf")
            keys = tuple(str(k) for k in (raw if isinstance(raw, list) else [] if raw is None else [raw]))
            for k in keys:
                if k not in DTMF_KEYS:
                    self.bad(item.value_line("dtmf"), "option dtmf", "one DTMF key (0-9 * # A-D)", k)
                elif k in seen and "when" not in item:
                    self.error(item.value_line("dtmf"), "bad_value", f"key {k!r} is already used by option "
                               f"on line {seen[k]}", expected="each key once (or a `when:`)", found=k)
                seen.setdefault(k, ln)
            words = f.get("words") or ()
            if not keys and not words:
                self.error(ln, "missing_key", "a menu option needs dtmf or words", expected="dtmf: KEY")
            value_str = f.get("value") or (words[0] if words else keys[0] if keys else "")
            if f.get("goto"):
                out.append(MenuOption(dtmf=keys, words=words, goto=f["goto"], when=f.get("when"),
                                      value=value_str, line=ln))
        return out

    def branches(self, value: Any, line: int, what: str) -> list[tuple[Expr | None, str]]:
        if not isinstance(value, LList) or not value:
            self.bad(line, what, "a list of {when, goto}", value)
            return []
        out: list[tuple[Expr | None, str]] = []
        for i, item in enumerate(value):
            if not isinstance(item, LDict):
                self.bad(value.line_of(i), what, "{when: EXPR, goto: NODE}", item)
                continue
            f = self.fields(item, {"when": Field("expr"), "goto": Field("node", required=True)}, "branch")
            if f.get("goto"):
                out.append((f.get("when"), f["goto"]))
        return out

    def assignments(self, value: Any, line: int, what: str) -> list[tuple[str, Expr]]:
        if not isinstance(value, LDict):
            self.bad(line, what, "a mapping of variable: expression", value)
            return []
        out: list[tuple[str, Expr]] = []
        for k, v in value.items():
            name = self.convert("var", k, value.line_of(k), f"{what} variable")
            e = self.expr(v, value.value_line(k), f"{what} {k}")
            if name and e:
                out.append((name, e))
        return out

    # ---- nodes -----------------------------------------------------------
    def parse_node(self, name: str, data: Any, line: int) -> Node | None:
        self.node = name
        if not isinstance(data, LDict):
            self.bad(line, f"node {name!r}", "a mapping with one action (say, menu, collect...)", data)
            return None
        actions = [k for k in data if k in ACTIONS]
        unknown = [k for k in data if k not in ACTIONS and k not in NODE_KEYS]
        for k in unknown:
            self.error(data.line_of(k), "unknown_action", f"unknown action or key {k!r}",
                       expected="an action (" + ", ".join(ACTIONS) + ") or " + ", ".join(NODE_KEYS),
                       found=repr(k), hint=nearest(k, [*ACTIONS, *NODE_KEYS]))
        if len(actions) > 1:
            self.error(data.line, "multiple_actions", "a node does exactly one thing",
                       expected="one action", found=", ".join(actions))
        if not actions:
            if not unknown:
                self.error(data.line, "missing_key", "node has no action", expected=", ".join(ACTIONS))
            return None
        action = actions[0]
        spec = ACTIONS[action]
        args = self.action_args(spec, data[action], data.value_line(action))
        common = self.fields(LDictSubset(data, NODE_KEYS), NODE_KEYS, f"node {name!r}")
        if "next" in data and "goto" in data:
            self.error(data.line_of("goto"), "bad_value", "use either next or goto, not both",
                       expected="one of next/goto", found="both")
        default_into = {"lookup": "customer", "http": "http", "record": "recording"}.get(action)
        if default_into and not args.get("into"):
            self.assigned.add(default_into)
        if action == "transfer":
            self.check_transfer(args, data)
        if spec.input:
            self.check_input(spec, args, data)
            if args.get("sensitive") and args.get("into"):
                self.sensitive.add(args["into"])
        nxt = common.get("next") or common.get("goto")
        return Node(name=name, action=action, args=args, next=nxt, when=common.get("when"),
                    otherwise=common.get("else"), line=line)

    def action_args(self, spec: ActionSpec, value: Any, line: int) -> dict[str, Any]:
        if spec.value is not None:
            return {"value": self.convert(spec.value, value, line, spec.name)}
        if spec.name == "hangup" and value in (None, True):
            return {}
        if not isinstance(value, LDict):
            if spec.shorthand is None:
                self.bad(line, spec.name, f"a mapping of {', '.join(spec.fields)}", value)
                return {}
            value = LDictOf({spec.shorthand: value}, line)
        return self.fields(value, spec.fields, spec.name)

    def check_transfer(self, args: dict[str, Any], data: LDict) -> None:
        """Queue options need a queue target; a written-out queue name must be one."""
        to = args.get("to")
        if not isinstance(to, Template):
            return
        body = data["transfer"]
        line_of = body.line_of if isinstance(body, LDict) else (lambda _k: data.line)
        source = to.source.strip()
        if source.startswith("queue:") and to.static and not QUEUE_NAME.match(source.removeprefix("queue:")):
            self.error(line_of("to"), "bad_value", "not a queue name", found=repr(source),
                       expected="queue:NAME, NAME of letters, digits, '.', '_' and '-'")
        for key in ("prefer_agent", "prefer_for", "continues", "after_call"):
            if key in args and args[key] is not None and not source.startswith("queue:"):
                self.error(line_of(key), "bad_value", f"{key} is for queue transfers", found=repr(source),
                           expected="to: queue:NAME (or queue:{expression})")
        if args.get("prefer_for") is not None and args.get("prefer_agent") is None:
            self.error(line_of("prefer_for"), "missing_key", "prefer_for without prefer_agent",
                       expected="prefer_agent: the agent to wait for", found="no prefer_agent")

    def check_input(self, spec: ActionSpec, args: dict[str, Any], data: LDict) -> None:
        if not (args.get("on_no_input") or args.get("on_failure")):
            self.error(data.line, "no_input_path", f"{spec.name} has no path for when the caller is silent",
                       expected="on_no_input: NODE or on_failure: NODE", found="neither")
        if spec.name == "collect" and args.get("confirm_below") is not None and not args.get("speech"):
            body = data[spec.name]
            line = body.line_of("confirm_below") if isinstance(body, LDict) else data.line
            self.error(line, "bad_value",
                       "confirm_below confirms spoken digits: the collect needs speech: true",
                       expected="speech: true", found="no speech")
        lo, hi = args.get("min"), args.get("max")
        if isinstance(lo, int) and isinstance(hi, int) and lo > hi:
            self.error(data.line, "bad_value", "min is larger than max", expected=f"min <= {hi}",
                       found=str(lo))


def LDictOf(values: dict[Any, Any], line: int) -> LDict:
    d = LDict()
    d.line = line
    for k, v in values.items():
        d[k] = v
        d.key_lines[k] = d.value_lines[k] = line
    return d


def LDictSubset(data: LDict, keys: Iterable[str]) -> LDict:
    d = LDictOf({}, data.line)
    for k in keys:
        if k in data:
            d[k] = data[k]
            d.key_lines[k], d.value_lines[k] = data.line_of(k), data.value_line(k)
    return d


def prompt_path(prompts_dir: Path, file: str) -> Path | None:
    """The prompt file for `file` (with or without .wav), or None; never outside prompts_dir."""
    for candidate in (file, f"{file}.wav"):
        p = (prompts_dir / candidate).resolve()
        if p.is_file() and prompts_dir.resolve() in p.parents:
            return p
    return None


def node_edges(node: Node) -> list[tuple[str, str]]:
    """(label, target) for every way out of a node (used for reachability and graphs)."""
    out: list[tuple[str, str]] = []
    a = node.args
    if node.action == "menu":
        for o in a.get("options", []):
            label = "/".join([*o.dtmf, *(f'"{w}"' for w in o.words[:2])])
            out.append((label, o.goto))
    if node.action == "branch":
        out.extend(((e.source if e else "else"), t) for e, t in a.get("value") or [])
    exits = ("on_yes", "on_no", "found", "not_found", "on_error", "on_failure", "on_no_input", "on_no_match",
             "after_call")
    for key in exits:
        if a.get(key):
            out.append((key.removeprefix("on_").replace("_", " "), a[key]))
    if node.when is not None and node.otherwise:
        out.append(("else", node.otherwise))
    if node.next:
        out.append(("", node.next))
    return out


def _settings(p: _Parser, data: Any, line: int) -> Settings:
    if data is None:
        return Settings()
    if not isinstance(data, LDict):
        p.bad(line, "settings", "a mapping", data)
        return Settings()
    f = {k: v for k, v in p.fields(data, SETTINGS_KEYS, "settings").items() if v is not None}
    return Settings(**f)


def parse_flow(path: Path, name: str, *, prompts_dir: Path | None, text: str | None = None,
               mtime: float = 0.0) -> tuple[Flow | None, list[FlowError]]:
    """Parse and check one file. Returns (flow, errors); the flow is None when there are errors."""
    p = _Parser(str(path), prompts_dir)
    try:
        raw = text if text is not None else path.read_text(encoding="utf-8")
        data, dups = load_yaml(raw)
    except (OSError, UnicodeDecodeError) as exc:
        p.error(1, "yaml", f"cannot read the file: {exc}")
        return None, p.errors
    except YamlProblem as exc:
        p.error(exc.line, "yaml", exc.message)
        return None, p.errors
    for line, key in dups:
        p.error(line, "duplicate_key", f"key {key!r} appears twice (the second would silently win)")
    if not isinstance(data, LDict):
        p.bad(1, "the file", "a mapping with start: and nodes:", type(data).__name__)
        return None, p.errors
    p.keys(data, FLOW_KEYS, "the flow")
    settings = _settings(p, data.get("settings"), data.value_line("settings"))
    variables = dict(data.get("vars") or {}) if isinstance(data.get("vars"), dict) else {}
    if "vars" in data and not isinstance(data["vars"], dict):
        p.bad(data.value_line("vars"), "vars", "a mapping of name: initial value", data["vars"])
    for k in variables:
        if not isinstance(k, str) or not _IDENT.match(k):
            p.bad(data["vars"].line_of(k), "vars", "a variable name", k)
    nodes: dict[str, Node] = {}
    raw_nodes = data.get("nodes")
    if not isinstance(raw_nodes, LDict) or not raw_nodes:
        if "nodes" in data:
            p.bad(data.value_line("nodes"), "nodes", "a mapping of node name: node", raw_nodes)
        return None, p.errors
    for node_name, body in raw_nodes.items():
        if not isinstance(node_name, str) or not _IDENT.match(node_name):
            p.node = ""
            p.bad(raw_nodes.line_of(node_name), "node name", "letters, digits and _", node_name)
            continue
        node = p.parse_node(node_name, body, raw_nodes.line_of(node_name))
        if node is not None:
            nodes[node_name] = node
    p.node = ""
    start = data.get("start")
    names = list(raw_nodes)
    if isinstance(start, str) and start not in raw_nodes:
        p.error(data.value_line("start"), "unknown_node", f"start node {start!r} does not exist",
                expected="a node name", found=repr(start), hint=nearest(start, names))
    for src, target, line in p.node_refs:
        if target not in raw_nodes:
            p.errors.append(FlowError(file=str(path), line=line, node=src or None, kind="unknown_node",
                                      message=f"goes to unknown node {target!r}", expected="a node here",
                                      found=repr(target), hint=nearest(target, names)))
    if isinstance(start, str) and start in nodes:
        seen = {start}
        todo = [start]
        while todo:
            for _, t in node_edges(nodes[todo.pop()]):
                if t in nodes and t not in seen:
                    seen.add(t)
                    todo.append(t)
        for n in nodes.values():
            if n.name not in seen:
                p.errors.append(FlowError(file=str(path), line=n.line, node=n.name, kind="unreachable",
                                          message="node is never reached from the start node",
                                          expected=f"a path from {start!r}", found="none"))
    if p.errors:
        return None, p.errors
    assert isinstance(start, str)
    flow = Flow(name=name, path=path, start=start, nodes=nodes, variables=variables, settings=settings,
                description=str(data.get("description") or ""), sensitive=frozenset(p.sensitive),
                mtime=mtime, calls=tuple(p.flow_refs), assigned=frozenset(p.assigned), reads=tuple(p.read))
    return flow, []


def check_links(flows: dict[str, Flow]) -> dict[str, list[FlowError]]:
    """Sub-flow references and unknown variables, per flow name."""
    out: dict[str, list[FlowError]] = {}
    for name, flow in flows.items():
        refs, assigned, read = flow.calls, flow.assigned, flow.reads
        errs: list[FlowError] = []
        known = set(BUILTIN_VARS) | set(flow.variables) | assigned
        for node, target, line in refs:
            if target not in flows:
                errs.append(FlowError(file=str(flow.path), line=line, node=node, kind="unknown_flow",
                                      message=f"calls unknown sub-flow {target!r}", expected="a flow name",
                                      found=repr(target), hint=nearest(target, flows)))
            else:
                sub = flows[target]
                known |= set(sub.variables) | sub.assigned
        for node, var, line in read:
            if var not in known:
                errs.append(FlowError(file=str(flow.path), line=line, node=node, kind="unknown_variable",
                                      message=f"variable {var!r} is never set in this flow",
                                      expected="a variable from vars:, an into:, set:, or a built-in",
                                      found=repr(var), hint=nearest(var, known)))
        if errs:
            out[name] = errs
    return out
