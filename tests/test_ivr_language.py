"""The flow language: safe expressions, templates, YAML loading, and one test per validation error."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import jsonschema
import pytest
import yaml

from voice.cli import main as cli_main
from voice.ivr.expr import Expr, ExprError
from voice.ivr.library import FlowLibrary
from voice.ivr.schema import flow_schema
from voice.ivr.templates import Template, TemplateError, digits, money
from voice.ivr.validate import parse_flow
from voice.ivr.yamlsrc import load_yaml

ROOT = Path(__file__).resolve().parent.parent


# ---- expressions -------------------------------------------------------------
def test_expression_evaluates_whitelisted_syntax() -> None:
    v = {"customer": {"found": True, "attributes": {"balance": 42.5}}, "tries": 2, "digits": "1234",
         "tags": ["gold"]}
    assert Expr("customer.found and customer.attributes.balance > 40").evaluate(v) is True
    assert Expr("tries + 1").evaluate(v) == 3
    assert Expr("len(digits) == 4 and 'gold' in tags").evaluate(v) is True
    assert Expr("customer['attributes']['balance'] * 2").evaluate(v) == 85.0
    assert Expr("'a' if tries > 5 else lower('B')").evaluate(v) == "b"
    assert Expr("missing.deep.value == null").evaluate(v) is True
    assert Expr("int('7') + abs(-1)").evaluate(v) == 8


@pytest.mark.parametrize("source", [
    "__import__('os').system('true')",
    "customer.__class__",
    "().__class__.__bases__",
    "(lambda: 1)()",
    "exec('import os')",
    "eval('1')",
    "customer.get('x')",
    "[x for x in tags]",
    "2 ** 1000000",
    "_private",
    "f'{x}'",
    "digits[1:2]",
])
def test_dangerous_expressions_are_rejected_at_parse_time(source: str) -> None:
    with pytest.raises(ExprError):
        Expr(source)


def test_open_is_the_business_hours_check_never_a_file() -> None:
    """`open` in a flow is the service's `open("NAME")` (business hours), bound per call: unbound
    it fails, and the interpreter's binding knows only [hours] sections."""
    expr = Expr("open('/etc/passwd')")
    with pytest.raises(ExprError, match="not available here"):
        expr.evaluate({})
    asked: list[str] = []
    assert expr.evaluate({}, {"open": lambda name: asked.append(name) or False}) is False
    assert asked == ["/etc/passwd"]


def test_runtime_errors_are_expr_errors_and_huge_strings_refused() -> None:
    with pytest.raises(ExprError, match="ZeroDivisionError"):
        Expr("1 / x").evaluate({"x": 0})
    with pytest.raises(ExprError, match="longer than"):
        Expr("'a' * 100000").evaluate({})


# ---- templates ---------------------------------------------------------------
@pytest.mark.parametrize(("value", "spoken"), [
    (42.5, "42 dollars and 50 cents"), (1, "1 dollar"), (0.01, "1 cent"), (0, "0 dollars"),
    ("1234.567", "1234 dollars and 57 cents"), (-3.2, "minus 3 dollars and 20 cents"),
])
def test_money(value: object, spoken: str) -> None:
    assert money(value) == spoken


def test_template_filters_and_masking() -> None:
    t = Template("Hi {customer.name}, {{literal}} balance {customer.balance|money}; account {acct|digits}.")
    spoken, shown = t.render({"customer": {"name": "Ann", "balance": "7.5"}, "acct": "1234"}, {"acct"})
    assert spoken == "Hi Ann, {literal} balance 7 dollars and 50 cents; account 1 2 3 4."
    assert shown == "Hi Ann, {literal} balance 7 dollars and 50 cents; account ****."
    assert digits("12#") == "1 2 pound"
    assert Template("plain").static and not t.static
    with pytest.raises(TemplateError, match="unknown filter"):
        Template("{x|monay}")
    with pytest.raises(TemplateError, match="unbalanced"):
        Template("oops { here")


def test_yaml_uses_yaml12_booleans_and_records_lines() -> None:
    data, dups = load_yaml("a: [yes, no, on]\nb: true\nc:\n  d: 1\nc: 2\n")
    assert data["a"] == ["yes", "no", "on"] and data["b"] is True
    assert data.line_of("b") == 2
    assert dups == [(5, "c")]


# ---- validation: one test per error kind ---------------------------------------
def _check(tmp_path: Path, body: str, *, files: dict[str, str] | None = None) -> list:
    (tmp_path / "flows").mkdir(exist_ok=True)
    (tmp_path / "prompts").mkdir(exist_ok=True)
    (tmp_path / "prompts" / "hello.wav").write_bytes(b"")
    (tmp_path / "flows" / "f.yaml").write_text(textwrap.dedent(body))
    for name, text in (files or {}).items():
        (tmp_path / "flows" / name).write_text(textwrap.dedent(text))
    lib = FlowLibrary(tmp_path / "flows", prompts_dir=tmp_path / "prompts", default_flow="f", routes={})
    return [e for e in lib.load() if e.file.endswith("f.yaml")]


def _only(errors: list, kind: str):  # type: ignore[no-untyped-def]
    found = [e for e in errors if e.kind == kind]
    assert found, f"no {kind} error in {[str(e) for e in errors]}"
    return found[0]


def test_error_unknown_action_suggests_nearest(tmp_path: Path) -> None:
    e = _only(_check(tmp_path, """
        start: a
        nodes:
          a:
            sya: hello
    """), "unknown_action")
    assert (e.line, e.node, e.hint) == (5, "a", "say")
    assert "f.yaml:5: node 'a': unknown action or key 'sya'" in str(e)
    assert "did you mean 'say'" in str(e)


def test_error_unknown_node_in_goto(tmp_path: Path) -> None:
    e = _only(_check(tmp_path, """
        start: a
        nodes:
          a:
            say: hi
            next: goodby
          goodbye:
            hangup: bye
    """), "unknown_node")
    assert (e.line, e.node, e.found, e.hint) == (6, "a", "'goodby'", "goodbye")


def test_error_unreachable_node(tmp_path: Path) -> None:
    e = _only(_check(tmp_path, """
        start: a
        nodes:
          a:
            hangup: bye
          orphan:
            say: never
    """), "unreachable")
    assert (e.node, e.line) == ("orphan", 6)


def test_error_missing_prompt_file(tmp_path: Path) -> None:
    e = _only(_check(tmp_path, """
        start: a
        nodes:
          a:
            say:
              - play: helo.wav
            next: b
          b:
            play: hello
    """), "missing_prompt")
    assert (e.line, e.hint) == (6, "hello.wav")


def test_error_bad_regex(tmp_path: Path) -> None:
    e = _only(_check(tmp_path, """
        start: a
        nodes:
          a:
            collect:
              into: pin
              pattern: "[0-9"
              on_failure: a
    """), "bad_regex")
    assert e.line == 7 and e.node == "a"


def test_error_input_without_no_input_path(tmp_path: Path) -> None:
    e = _only(_check(tmp_path, """
        start: a
        nodes:
          a:
            menu:
              options:
                - {dtmf: "1", goto: a}
    """), "no_input_path")
    assert e.expected == "on_no_input: NODE or on_failure: NODE"


def test_error_unknown_key_in_action(tmp_path: Path) -> None:
    e = _only(_check(tmp_path, """
        start: a
        nodes:
          a:
            collect:
              into: pin
              max_digits: 4
              on_failure: a
    """), "unknown_key")
    assert (e.line, e.hint) == (7, "max")


def test_error_unknown_variable_in_template(tmp_path: Path) -> None:
    e = _only(_check(tmp_path, """
        start: a
        vars: {balance: 0}
        nodes:
          a:
            say: "You owe {balanse|money}"
    """), "unknown_variable")
    assert (e.line, e.hint) == (6, "balance")


def test_error_unknown_subflow(tmp_path: Path) -> None:
    e = _only(_check(tmp_path, """
        start: a
        nodes:
          a:
            call: lib_identfy
    """, files={"lib_identify.yaml": "start: x\nnodes:\n  x:\n    return:\n"}), "unknown_flow")
    assert e.hint == "lib_identify"


def test_error_bad_expression_is_rejected_at_validation(tmp_path: Path) -> None:
    errors = _check(tmp_path, """
        start: a
        nodes:
          a:
            when: "__import__('os').system('x')"
            say: hi
            next: b
          b:
            set:
              x: "(lambda: 1)()"
    """)
    assert [e.line for e in errors if e.kind == "bad_expression"] == [5, 10]


def test_error_bad_value_and_missing_key_and_yaml(tmp_path: Path) -> None:
    errors = _check(tmp_path, """
        start: a
        nodes:
          a:
            collect:
              timeout: soon
              on_failure: a
    """)
    assert _only(errors, "bad_value").expected == "a number of seconds >= 0"
    assert "'into'" in _only(errors, "missing_key").message
    yaml_err = _only(_check(tmp_path, "start: a\nnodes: [\n"), "yaml")
    assert yaml_err.line >= 2


def test_error_two_actions_in_one_node_and_duplicate_keys(tmp_path: Path) -> None:
    errors = _check(tmp_path, """
        start: a
        nodes:
          a:
            say: hi
            hangup: bye
    """)
    assert _only(errors, "multiple_actions").found == "say, hangup"
    errors = _check(tmp_path, """
        start: a
        nodes:
          a:
            hangup: bye
          a:
            say: again
    """)
    assert _only(errors, "duplicate_key").line == 6


def test_all_errors_reported_at_once(tmp_path: Path) -> None:
    errors = _check(tmp_path, """
        start: a
        nodes:
          a:
            menu:
              prompt: {play: nope.wav}
              options:
                - {dtmf: "1", goto: nowhere}
          b:
            hangup: bye
    """)
    assert {"missing_prompt", "unknown_node", "no_input_path", "unreachable"} <= {e.kind for e in errors}


# ---- shipped flows, schema, CLI ------------------------------------------------
def _shipped() -> list[Path]:
    return sorted((ROOT / "ivr_flows").rglob("*.yaml")) + sorted((ROOT / "tests" / "flows").rglob("*.yaml"))


def test_shipped_flows_validate_and_match_the_json_schema() -> None:
    schema = flow_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    assert len(_shipped()) >= 3
    for path in _shipped():
        data = yaml.safe_load(path.read_text())
        assert not list(validator.iter_errors(data)), path
    for root in (ROOT / "ivr_flows", ROOT / "tests" / "flows"):
        lib = FlowLibrary(root, prompts_dir=ROOT / "recordings" / "prompts", default_flow="main", routes={})
        assert lib.load() == []


def test_schema_rejects_a_typo() -> None:
    validator = jsonschema.Draft202012Validator(flow_schema())
    bad = {"start": "a", "nodes": {"a": {"sya": "hi"}}}
    assert list(validator.iter_errors(bad))


def test_cli_validate_exit_codes_and_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["flows", "validate", str(ROOT / "ivr_flows"),
                     "--prompts", str(ROOT / "recordings" / "prompts")]) == 0
    (tmp_path / "bad.yaml").write_text("start: a\nnodes:\n  a:\n    sya: hi\n")
    assert cli_main(["flows", "validate", str(tmp_path / "bad.yaml"), "--prompts", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "bad.yaml:4: node 'a': unknown action or key 'sya'" in out


def test_cli_schema_and_graph(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["flows", "schema"]) == 0
    assert json.loads(capsys.readouterr().out)["$schema"].endswith("2020-12/schema")
    main = str(ROOT / "ivr_flows" / "main.yaml")
    assert cli_main(["flows", "graph", main]) == 0
    mermaid = capsys.readouterr().out
    assert mermaid.startswith("flowchart TD")
    assert 'main_menu -- "1/#quot;billing#quot;/#quot;bill#quot;" --> billing' in mermaid
    svg_path = tmp_path / "main.svg"
    assert cli_main(["flows", "graph", main, "-o", str(svg_path)]) == 0
    svg = svg_path.read_text()
    assert svg.startswith("<svg") and svg.count("<rect") == 26 and ">closed_callback<" in svg


def test_parse_flow_names_errors_with_file_and_line(tmp_path: Path) -> None:
    flow, errors = parse_flow(tmp_path / "x.yaml", "x", prompts_dir=None, text="start: a\nnodes:\n  a: 3\n")
    assert flow is None and str(errors[0]).startswith(f"{tmp_path / 'x.yaml'}:3: node 'a': bad value")
