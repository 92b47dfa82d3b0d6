"""JSON Schema (draft 2020-12) of flow files, generated from the language table in spec.py."""

from __future__ import annotations

from typing import Any

from voice.ivr.spec import ACTIONS, FLOW_KEYS, NODE_KEYS, SETTINGS_KEYS, Field

_ITEM = {
    "type": "object",
    "properties": {
        "say": {"type": "string", "description": "text for TTS; {var} and {var|money} allowed"},
        "play": {"type": "string", "description": "file in the prompts directory"},
        "silence": {"type": "number", "minimum": 0},
        "dtmf_barge_in": {"type": "boolean"},
        "speech_barge_in": {"type": "boolean"},
    },
    "additionalProperties": False,
    "oneOf": [{"required": ["say"]}, {"required": ["play"]}, {"required": ["silence"]}],
}
_SCALAR_TEXT = {"type": ["string", "number"]}


def _type(ftype: str) -> dict[str, Any]:
    ref = {"prompt": "#/$defs/prompt", "options": "#/$defs/options", "branches": "#/$defs/branches",
           "assignments": "#/$defs/assignments", "settings": "#/$defs/settings", "nodes": "#/$defs/nodes"}
    if ftype in ref:
        return {"$ref": ref[ftype]}
    if ftype == "prompts":
        return {"anyOf": [{"$ref": "#/$defs/prompt"}, {"type": "array", "items": {"$ref": "#/$defs/prompt"}}]}
    if ftype == "files":
        return {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}
    if ftype in ("node", "flow", "str", "regex", "template"):
        return {"type": "string"} if ftype != "template" else dict(_SCALAR_TEXT)
    if ftype == "var":
        return {"type": "string", "pattern": "^[A-Za-z][A-Za-z0-9_]*$"}
    if ftype == "expr":
        return {"type": ["string", "number", "boolean", "null"]}
    if ftype == "int":
        return {"type": "integer", "minimum": 0}
    if ftype == "number":
        return {"type": "number", "minimum": 0}
    if ftype == "fraction":
        return {"type": "number", "minimum": 0, "maximum": 1}
    if ftype == "bool":
        return {"type": "boolean"}
    if ftype == "key":
        return {"anyOf": [{"type": "string", "pattern": "^[0-9*#A-D]$"},
                          {"type": "integer", "minimum": 0, "maximum": 9}]}
    if ftype == "words":
        return {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": ["string", "integer"]}}]}
    if ftype == "headers":
        return {"type": "object", "additionalProperties": {"type": "string"}}
    if ftype == "json":
        return {}
    if ftype == "none":
        return {"enum": [None, True]}
    if ftype.startswith("enum:"):
        return {"enum": ftype[5:].split("|")}
    raise AssertionError(ftype)


def _object(fields: dict[str, Field]) -> dict[str, Any]:
    props = {}
    for k, f in fields.items():
        props[k] = _type(f.type) | ({"description": f.help} if f.help else {})
    out: dict[str, Any] = {"type": "object", "properties": props, "additionalProperties": False}
    required = [k for k, f in fields.items() if f.required]
    if required:
        out["required"] = required
    return out


def flow_schema() -> dict[str, Any]:
    actions: dict[str, Any] = {}
    for name, spec in ACTIONS.items():
        if spec.value is not None:
            s = _type(spec.value)
        else:
            s = _object(spec.fields)
            if spec.shorthand:
                alt = _type(spec.fields[spec.shorthand].type)
                s = {"anyOf": [alt, s] + ([{"enum": [None, True]}] if name == "hangup" else [])}
        actions[name] = s | {"description": spec.help}
    node = {
        "type": "object",
        "properties": {**{k: _type(f.type) for k, f in NODE_KEYS.items()}, **actions},
        "additionalProperties": False,
        "oneOf": [{"required": [a]} for a in ACTIONS],
    }
    option = _object({"dtmf": Field("key"), "words": Field("words"), "goto": Field("node", True),
                      "when": Field("expr"), "value": Field("str")})
    option["properties"]["dtmf"] = {"anyOf": [_type("key"), {"type": "array", "items": _type("key")}]}
    top = _object(FLOW_KEYS)
    top["properties"]["vars"] = {"type": "object"}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://voice.local/schemas/ivr-flow.json",
        "title": "IVR flow",
        "description": "An IVR flow file (ivr_flows/*.yaml); see ivr_flows/README.md",
        **top,
        "$defs": {
            "prompt": {"anyOf": [dict(_SCALAR_TEXT), _ITEM,
                                 {"type": "array", "items": {"anyOf": [dict(_SCALAR_TEXT), _ITEM]}}]},
            "options": {"type": "array", "minItems": 1, "items": option},
            "branches": {"type": "array", "minItems": 1,
                         "items": _object({"when": Field("expr"), "goto": Field("node", True)})},
            "assignments": {"type": "object", "propertyNames": {"pattern": "^[A-Za-z][A-Za-z0-9_]*$"},
                            "additionalProperties": _type("expr")},
            "settings": _object(SETTINGS_KEYS),
            "nodes": {"type": "object", "minProperties": 1,
                      "propertyNames": {"pattern": "^[A-Za-z][A-Za-z0-9_]*$"},
                      "additionalProperties": node},
        },
    }
