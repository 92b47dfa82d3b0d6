"""The OpenAPI paths beyond the customer store: agents, queues, the events websocket (in prose),
interaction search, reports, data rights, and the operator endpoints (/metrics, /healthz, /readyz).
Merged into cti.openapi.openapi_document."""

from __future__ import annotations

from typing import Any

from cti.openapi import PHONE_PATTERN

TEXT = {"type": "string"}
TIME = {"type": "string", "format": "date-time"}
UUID = {"type": "string", "format": "uuid"}
AGENT_ID = {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"}
NON_BLANK = r"\S"  # text with at least one non-space character
_PLAIN = r"^[^\u0000]*$"  # no NUL: neither database stores it
AGENT_STATES = ("available", "on_call", "wrap_up", "away")

WEBSOCKET = """\
A websocket (upgrade this GET). Authenticate with the agent's session cookie (from POST
/agent/login) or an API key. The server sends JSON text messages, each with a `type`:

- `hello` `{"type": "hello", "agent": Agent}` once, on connect;
- `state` `{"type": "state", "agent_id", "state", "since", "call_id", "reason", "wrap_up_left"}` on
  every state change (`reason`: why away; `wrap_up_left`: seconds until wrap-up ends, null: manual);
- `screen_pop` `{"type": "screen_pop", "call_id", "interaction_id", "caller", "customer", "found",
  "ivr", "transcript", "recent_interactions", "last_by_channel", "queue"}` when the agent's phone
  starts ringing;
- `missed` `{"type": "missed", "call_id"}` when the agent let a call ring out;
- `pong` in answer to a client's `{"type": "ping"}`.

The server closes with 1001 on shutdown. Without an upgrade the request gets 400."""


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {**schema, "nullable": True}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref("Error")}}}


def _ok(description: str, schema: dict[str, Any], media: str = "application/json") -> dict[str, Any]:
    return {"description": description, "content": {media: {"schema": schema}}}


def _query(name: str, schema: dict[str, Any], description: str = "") -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def _text(max_len: int) -> dict[str, Any]:
    return {"type": "string", "minLength": 1, "maxLength": max_len, "pattern": NON_BLANK}


_AUTH = {"401": _error("missing or wrong API key")}
_BODY = {"400": _error("malformed JSON"), "413": _error("body larger than [http] max_body"),
         "422": _error("invalid field (named in error.field)")}
_AGENT_PARAM = {"name": "agent_id", "in": "path", "required": True, "schema": {"type": "string"}}
_ID_PARAM = {"name": "id", "in": "path", "required": True, "schema": UUID}
_RANGE = [_query("since", TIME, "from this time (inclusive), RFC 3339 with a time zone"),
          _query("until", TIME, "to this time (exclusive)")]


def schemas() -> dict[str, Any]:
    skills = {"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": 64}}
    agent_fields = {
        "name": _text(200),
        "sip_uri": {"type": "string", "maxLength": 500, "pattern": r"^sips?:.*\S"},
        "skills": skills,
        "password": {"type": "string", "minLength": 8, "maxLength": 200},
    }
    counts = {"type": "object", "additionalProperties": {"type": "integer"}}
    rates = {k: {"type": "number", "nullable": True} for k in (
        "containment_rate", "abandonment_rate", "service_level", "asa_seconds", "aht_seconds")}
    totals = {"type": "object", "properties": {
        **{k: {"type": "integer"} for k in ("calls", "contained", "agent", "abandoned")}, **rates}}
    return {
        "Agent": {"type": "object", "properties": {
            "id": TEXT, "name": TEXT, "sip_uri": TEXT, "skills": {"type": "array", "items": TEXT},
            "state": {"type": "string", "enum": ["available", "ringing", "on_call", "wrap_up", "away"]},
            "state_since": {**TIME, "nullable": True}, "call_id": {**TEXT, "nullable": True},
            "reason": {**TEXT, "nullable": True, "description": "why away ([agents] away_reasons)"}}},
        # null = not given, for every optional field
        "AgentInput": {"type": "object", "additionalProperties": False,
                       "required": ["id", "name", "sip_uri"],
                       "properties": {"id": AGENT_ID, **agent_fields,
                                      **{k: _nullable(agent_fields[k]) for k in ("skills", "password")}}},
        "AgentPatch": {"type": "object", "additionalProperties": False, "properties": {
            **{k: _nullable(v) for k, v in agent_fields.items()},
            "state": _nullable({"type": "string", "enum": [*AGENT_STATES, None]}),
            "reason": _nullable({**TEXT, "description": "with state away: one of [agents] away_reasons"})}},
        "Queues": {"type": "object", "properties": {
            "queues": counts, "positions": counts,
            "agents": {"type": "array", "items": {"type": "object"}},
            "calls": {"type": "array", "items": {"type": "object"}}}},
        "InteractionListItem": {"allOf": [_ref("InteractionSummary"), {"type": "object", "properties": {
            "call_id": {**TEXT, "nullable": True}}}]},
        "InteractionPage": {"type": "object", "properties": {
            "interactions": {"type": "array", "items": _ref("InteractionListItem")},
            "next_cursor": {**TEXT, "nullable": True}}},
        "ReportTotals": totals,
        "Report": {"type": "object", "properties": {
            "totals": totals, "truncated": {"type": "boolean"},
            "days": {"type": "array", "items": {"allOf": [totals, {"type": "object", "properties": {
                "day": {"type": "string", "format": "date"}}}]}},
            "flows": {"type": "array", "items": {"allOf": [totals, {"type": "object", "properties": {
                "flow": TEXT, "nodes": {"type": "object", "additionalProperties": {
                    "type": "object", "properties": {"reached": {"type": "integer"},
                                                     "left": {"type": "integer"}}}}}}]}}}},
        "CustomerExport": {"type": "object", "properties": {
            "customer": _ref("Customer"), "exported_at": TIME,
            "recordings": {"type": "array", "items": TEXT},
            "interactions": {"type": "array", "items": {"type": "object", "properties": {
                "id": UUID, "transcript": {"type": "array", "items": {"type": "object"}},
                "notes": {"type": "array", "items": {"type": "object"}},
                "recordings": {"type": "array", "items": TEXT}}}}}},
        "CustomerDeleted": {"type": "object", "properties": {
            "deleted": UUID, **{k: {"type": "integer"} for k in (
                "interactions", "segments", "notes", "identities", "recordings_removed",
                "recordings_not_found")}}},
        "Readiness": {"type": "object", "properties": {
            "status": {"type": "string", "enum": ["ready", "not ready"]},
            "checks": {"type": "object", "additionalProperties": TEXT}}},
    }


def paths(channels: tuple[str, ...]) -> dict[str, Any]:
    agent_body = {"required": True, "content": {"application/json": {"schema": _ref("AgentInput")}}}
    patch_body = {"required": True, "content": {"application/json": {"schema": _ref("AgentPatch")}}}
    cursor = {"type": "string", "maxLength": 200, "pattern": _PLAIN}
    return {
        "/api/v1/agents": {
            "post": {"operationId": "createAgent", "summary": "Create an agent", "requestBody": agent_body,
                     "responses": {"201": _ok("created", _ref("Agent")), "409": _error("the id is taken"),
                                   **_BODY, **_AUTH}},
            "get": {"operationId": "listAgents", "summary": "Every agent",
                    "responses": {"200": _ok("the agents", {"type": "object", "properties": {
                        "agents": {"type": "array", "items": _ref("Agent")}}}), **_AUTH}}},
        "/api/v1/agents/{agent_id}": {
            "get": {"operationId": "getAgent", "parameters": [_AGENT_PARAM],
                    "responses": {"200": _ok("the agent", _ref("Agent")), "404": _error("no such agent"),
                                  **_AUTH}},
            "patch": {"operationId": "updateAgent", "summary": "Rename, re-skill, set password or state",
                      "parameters": [_AGENT_PARAM], "requestBody": patch_body,
                      "responses": {"200": _ok("updated", _ref("Agent")), "404": _error("no such agent"),
                                    **_BODY, **_AUTH}}},
        "/api/v1/agents/{agent_id}/events": {"get": {
            "operationId": "agentEvents", "summary": "The agent's events websocket", "description": WEBSOCKET,
            "parameters": [_AGENT_PARAM],
            "responses": {"101": {"description": "switching to the websocket protocol"},
                          "400": _error("not a websocket upgrade"), "404": _error("no such agent"),
                          **_AUTH}}},
        "/api/v1/queues": {"get": {
            "operationId": "queues", "summary": "Waiting callers per queue, positions, agents, live calls",
            "responses": {"200": _ok("this node's view", _ref("Queues")), **_AUTH}}},
        "/api/v1/reports/calls.csv": {"get": {
            "operationId": "callsCsv", "summary": "The CDR: one row per call, oldest first",
            "description": "Columns: interaction_id, call_id, start, answer, end, caller, dialled, flow, "
                           "last_node, queue, agent, wait_seconds, talk_seconds, duration_seconds, outcome "
                           "(contained, agent, abandoned, transferred, error, interrupted, in_progress).",
            "parameters": _RANGE,
            "responses": {"200": _ok("CSV with a header row", TEXT, "text/csv"),
                          "422": _error("bad since/until"), **_AUTH}}},
        "/api/v1/reports/summary": {"get": {
            "operationId": "callsSummary",
            "summary": "Calls, containment, abandonment, ASA, AHT: totals, per day, per flow and node",
            "parameters": _RANGE,
            "responses": {"200": _ok("the report", _ref("Report")), "422": _error("bad since/until"),
                          **_AUTH}}},
        "/api/v1/customers/{id}/export": {"get": {
            "operationId": "exportCustomer", "summary": "Everything held about a customer (data access)",
            "parameters": [_ID_PARAM],
            "responses": {"200": _ok("identities, interactions, transcripts, notes, recording names",
                                     _ref("CustomerExport")),
                          "404": _error("no such customer"), **_AUTH}}},
        "/metrics": {"get": {
            "operationId": "metrics", "summary": "Prometheus metrics (text format)", "security": [],
            "responses": {"200": _ok("the metrics", TEXT, "text/plain")}}},
        "/healthz": {"get": {
            "operationId": "healthz", "summary": "Liveness: the process answers", "security": [],
            "responses": {"200": _ok("alive", {"type": "object", "properties": {"status": TEXT}})}}},
        "/readyz": {"get": {
            "operationId": "readyz", "summary": "Readiness: database, SIP, speech workers", "security": [],
            "responses": {"200": _ok("ready", _ref("Readiness")),
                          "503": _ok("not ready: each failing check with its reason", _ref("Readiness"))}}},
    } | {"_list_interactions": {"get": {
        "operationId": "listInteractions",
        "summary": "Find interactions (calls by Call-ID, phone...), newest first",
        "parameters": [
            _query("phone", {"type": "string", "minLength": 1, "maxLength": 40, "pattern": PHONE_PATTERN},
                   "the customer's phone, any format"),
            _query("customer_id", UUID), _query("channel", {"type": "string", "enum": list(channels)}),
            _query("call_id", {"type": "string", "minLength": 1, "maxLength": 300, "pattern": _PLAIN}),
            *_RANGE,
            _query("limit", {"type": "integer", "minimum": 1, "maximum": 200, "default": 50}),
            _query("cursor", cursor, "next_cursor of the previous page")],
        "responses": {"200": _ok("one page", _ref("InteractionPage")), "422": _error("a bad parameter"),
                      **_AUTH}}},
        "_delete_customer": {"delete": {
            "operationId": "deleteCustomer",
            "summary": "Erase a customer: identities, interactions, transcripts, notes, recording files",
            "description": "An audit row keeps who (a fingerprint of the API key) and when, and the counts; "
                           "never the personal data.",
            "parameters": [_ID_PARAM],
            "responses": {"200": _ok("erased", _ref("CustomerDeleted")), "404": _error("no such customer"),
                          **_AUTH}}}}


def merge(document: dict[str, Any], channels: tuple[str, ...]) -> dict[str, Any]:
    """Add these paths and schemas to the store's document (operations on shared paths merged in)."""
    document["components"]["schemas"].update(schemas())
    extra = paths(channels)
    document["paths"]["/api/v1/interactions"].update(extra.pop("_list_interactions"))
    document["paths"]["/api/v1/customers/{id}"].update(extra.pop("_delete_customer"))
    document["paths"].update(extra)
    return document
