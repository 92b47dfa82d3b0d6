"""The OpenAPI 3.0 document of /api/v1, built from the same names the handlers check."""

from __future__ import annotations

from typing import Any

from cti.records import INGEST_STATUSES
from cti.store import DIRECTIONS, SEGMENT_KINDS

UUID = {"type": "string", "format": "uuid"}
# Digits with single spaces, dots or dashes between them, an optional leading +. Only an
# approximation of "a number phonenumbers accepts" (a real numbering plan decides: 422 if not).
PHONE_PATTERN = r"^\+?[1-9](?:[ .-]?[0-9]){6,14}$"
TIME = {"type": "string", "format": "date-time"}


ATTRIBUTES = {"type": "object", "propertyNames": {"minLength": 1, "maxLength": 100}}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {**schema, "nullable": True}


def _identity(max_len: int = 320, **extra: Any) -> dict[str, Any]:
    one = {"type": "string", "minLength": 1, "maxLength": max_len, **extra}
    return {"oneOf": [one, {"type": "array", "items": one, "maxItems": 20}]}


def _identity_given(schema: dict[str, Any]) -> dict[str, Any]:
    """An identity property that names at least one identity (not null, not an empty list)."""
    one, many = schema["oneOf"]
    return {"oneOf": [one, {**many, "minItems": 1}]}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref("Error")}}}


def _ok(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


_COMMON_ERRORS = {"401": _error("missing or wrong API key")}
_BODY_ERRORS = {
    "400": _error("malformed JSON"),
    "413": _error("body larger than [http] max_body"),
    "422": _error("invalid field (named in error.field)"),
}
_ID_PARAM = {"name": "id", "in": "path", "required": True, "schema": UUID}


def _query(name: str, schema: dict[str, Any] | None = None, description: str = "") -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema or {"type": "string"},
            "description": description}


def _identity_query(kind: str) -> dict[str, Any]:
    extra: dict[str, Any] = {"pattern": PHONE_PATTERN} if kind == "phone" else (
        {"format": "email"} if kind == "email" else {})
    return {"type": "string", "minLength": 1, "maxLength": 40 if kind == "phone" else 320, **extra}


def openapi_document(channels: tuple[str, ...]) -> dict[str, Any]:
    text = {"type": "string"}
    segment_properties = {
        "start": {"type": "number", "minimum": 0}, "end": {"type": "number", "minimum": 0},
        "speaker": {"type": "string", "minLength": 1, "maxLength": 40},
        "kind": {"type": "string", "enum": list(SEGMENT_KINDS)}, "text": _nullable(text),
        "confidence": _nullable({"type": "number", "minimum": 0, "maximum": 1}),
        "engine": _nullable({"type": "string", "maxLength": 100})}
    identity_props = {
        # A pattern only approximates "a number phonenumbers accepts"; the server decides (422 if not).
        "phone": _identity(40, pattern=PHONE_PATTERN),
        "email": _identity(format="email"), "account": _identity(200), "external_id": _identity(200),
    }
    schemas: dict[str, Any] = {
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {
            "type": "object", "required": ["status", "message"],
            "properties": {"status": {"type": "integer"}, "field": _nullable(text), "message": text,
                           "customer_ids": {"type": "array", "items": text}}}}},
        "Customer": {"type": "object", "properties": {
            "id": UUID, "name": _nullable(text),
            "phones": {"type": "array", "items": text}, "emails": {"type": "array", "items": text},
            "accounts": {"type": "array", "items": text}, "external_ids": {"type": "array", "items": text},
            "attributes": {"type": "object"}, "created_at": TIME, "updated_at": TIME}},
        # null = not given (the server treats an absent field and null alike)
        "CustomerInput": {"type": "object", "additionalProperties": False, "properties": {
            "name": _nullable({"type": "string", "maxLength": 200}), "attributes": _nullable(ATTRIBUTES),
            **{k: _nullable(v) for k, v in identity_props.items()}}},
        "CustomerCreate": {"allOf": [_ref("CustomerInput"), {
            "description": "a name or at least one identity",
            "anyOf": [{"required": ["name"], "properties": {"name": {"type": "string", "minLength": 1}}},
                      *({"required": [k], "properties": {k: _identity_given(v)}}
                        for k, v in identity_props.items())]}]},
        "CustomerRef": {"type": "object", "additionalProperties": False,
                        "description": "at least one of phone, email, account, external_id",
                        "anyOf": [{"required": [k], "properties": {k: _identity_given(v)}}
                                  for k, v in identity_props.items()],
                        "properties": {"name": _nullable({"type": "string", "maxLength": 200}),
                                       **{k: _nullable(v) for k, v in identity_props.items()}}},
        "Segment": {"type": "object", "additionalProperties": False,
                    "required": ["start", "end", "speaker", "kind"], "properties": segment_properties},
        "InteractionInput": {
            "type": "object", "additionalProperties": False,
            "required": ["channel", "direction", "started_at", "customer"],
            "properties": {
                "channel": {"type": "string", "enum": list(channels)},
                "direction": {"type": "string", "enum": list(DIRECTIONS)},
                "started_at": TIME, "ended_at": _nullable(TIME), "customer": _ref("CustomerRef"),
                "agent": _nullable({"type": "string", "maxLength": 200}),
                "subject": _nullable({"type": "string", "maxLength": 500}),
                "summary": _nullable({"type": "string", "maxLength": 20000}),
                "content": _nullable(text), "disposition": _nullable({"type": "string", "maxLength": 100}),
                "recording": _nullable({"type": "string", "maxLength": 1000}),
                "queue": _nullable({"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
                                    "description": "the queue that handled it: a caller who continues "
                                                   "this conversation is routed there"}),
                "status": _nullable({"type": "string", "enum": [*INGEST_STATUSES, None],
                                     "description": "open/pending: the conversation goes on (default "
                                                    "completed)"}),
                "metadata": _nullable({"type": "object"}),
                "idempotency_key": _nullable({"type": "string", "maxLength": 200}),
                "message_id": _nullable({"type": "string", "maxLength": 200}),
                "transcript": _nullable({"type": "array", "items": _ref("Segment")}),
            }},
        "IngestResult": {"type": "object", "properties": {
            "interaction_id": UUID, "customer_id": _nullable(UUID), "created": {"type": "boolean"},
            "customer_created": {"type": "boolean"}}},
        "InteractionSummary": {"type": "object", "properties": {
            "id": UUID, "customer_id": _nullable(UUID), "channel": text, "direction": text, "status": text,
            "started_at": TIME, "ended_at": _nullable(TIME), "agent": _nullable(text),
            "subject": _nullable(text), "summary": _nullable(text), "disposition": _nullable(text),
            "queue": _nullable(text)}},
        "Interaction": {"allOf": [_ref("InteractionSummary"), {"type": "object", "properties": {
            "content": _nullable(text), "metadata": {"type": "object"}, "ivr": _nullable({"type": "object"}),
            "recording": _nullable(text), "call_id": _nullable(text), "idempotency_key": _nullable(text),
            "created_at": TIME, "transcript": {"type": "array", "items": _ref("StoredSegment")}}}]},
        "StoredSegment": {"allOf": [{"type": "object", "properties": {
            k: v for k, v in segment_properties.items()}}, {"type": "object", "properties": {
                "alternatives": _nullable({
                    "type": "array", "description": "the recognizer's n-best: [text, confidence], best first",
                    "items": {"type": "array", "items": {}, "minItems": 2, "maxItems": 2}})}}]},
        "Timeline": {"type": "object", "properties": {
            "interactions": {"type": "array", "items": _ref("InteractionSummary")},
            "next_cursor": _nullable(text)}},
        "Lookup": {"type": "object", "properties": {
            "found": {"type": "boolean"}, "customer": {"allOf": [_ref("Customer")], "nullable": True},
            "attributes": {"type": "object"},
            "recent_interactions": {"type": "array", "items": {"type": "object"}}}},
    }
    paths: dict[str, Any] = {
        "/api/v1/interactions": {"post": {
            "operationId": "ingestInteraction", "summary": "Ingest an interaction from any channel",
            "requestBody": _body(_ref("InteractionInput")),
            "responses": {"201": _ok("stored", _ref("IngestResult")),
                          "200": _ok("a retry: the first result, nothing new stored", _ref("IngestResult")),
                          "409": _error("identities belong to different customers"),
                          **_BODY_ERRORS, **_COMMON_ERRORS}}},
        "/api/v1/interactions/{id}": {"get": {
            "operationId": "getInteraction", "summary": "An interaction with its transcript",
            "parameters": [_ID_PARAM],
            "responses": {"200": _ok("the interaction", _ref("Interaction")), "404": _error("not found"),
                          **_COMMON_ERRORS}}},
        "/api/v1/customers": {
            "post": {"operationId": "createCustomer", "summary": "Create a customer",
                     "requestBody": _body(_ref("CustomerCreate")),
                     "responses": {"201": _ok("created", _ref("Customer")),
                                   "409": _error("an identity belongs to another customer"),
                                   **_BODY_ERRORS, **_COMMON_ERRORS}},
            "get": {"operationId": "findCustomers", "summary": "Customers by identity",
                    "description": "Give at least one of phone, email, account, external_id (422 without).",
                    "parameters": [_query(k, _identity_query(k)) for k in ("phone", "email", "account",
                                                                         "external_id")],
                    "responses": {"200": _ok("matches", {"type": "object", "properties": {
                        "customers": {"type": "array", "items": _ref("Customer")}}}),
                        "422": _error("no or invalid identity"), **_COMMON_ERRORS}}},
        "/api/v1/customers/{id}": {
            "get": {"operationId": "getCustomer", "parameters": [_ID_PARAM],
                    "responses": {"200": _ok("the customer", _ref("Customer")), "404": _error("not found"),
                                  **_COMMON_ERRORS}},
            "patch": {"operationId": "updateCustomer",
                      "summary": "Set name, merge attributes (null deletes), add identities",
                      "parameters": [_ID_PARAM], "requestBody": _body(
                          {"allOf": [_ref("CustomerInput"), {"minProperties": 1}],
                           "description": "name, attributes or identities to change (422 when nothing)"}),
                      "responses": {"200": _ok("updated", _ref("Customer")), "404": _error("not found"),
                                    "409": _error("an identity belongs to another customer"),
                                    **_BODY_ERRORS, **_COMMON_ERRORS}}},
        "/api/v1/customers/{id}/interactions": {"get": {
            "operationId": "customerTimeline", "summary": "Timeline across channels, newest first",
            "parameters": [_ID_PARAM,
                           _query("limit", {"type": "integer", "minimum": 1, "maximum": 200, "default": 20}),
                           _query("cursor", description="next_cursor of the previous page")],
            "responses": {"200": _ok("one page", _ref("Timeline")), "404": _error("no such customer"),
                          "422": _error("bad limit or cursor"), **_COMMON_ERRORS}}},
        "/api/v1/lookup": {"get": {
            "operationId": "ctiLookup", "summary": "CTI lookup by caller ID or account number",
            "parameters": [_query("phone"), _query("account"),
                           _query("recent", {"type": "integer", "minimum": 0, "maximum": 100})],
            "responses": {"200": _ok("found or empty", _ref("Lookup")), "422": _error("no phone or account"),
                          **_COMMON_ERRORS}}},
        "/api/v1/openapi.json": {"get": {
            "operationId": "openapi", "security": [],
            "responses": {"200": _ok("this document", {"type": "object"})}}},
    }
    from cti.openapi_ops import merge

    return _with_callbacks(merge({
        "openapi": "3.0.3",
        "info": {"title": "voice customer store API", "version": "1"},
        "servers": [{"url": "/"}],
        "components": {"schemas": schemas,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}],
        "paths": paths,
    }, channels))


def _with_callbacks(document: dict[str, Any]) -> dict[str, Any]:
    from cti.callbacks_api import openapi_paths, openapi_schemas

    document["components"]["schemas"].update(openapi_schemas())
    document["paths"].update(openapi_paths())
    return document
