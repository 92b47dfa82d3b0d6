"""POST/GET /api/v1/callbacks: any channel asks for a callback (a chat bot's "call me"), and the
requests are listed with their attempts; POST /api/v1/callbacks/{id}/cancel withdraws one that
is still waiting (the customer called in meanwhile, or no longer wants it). A callback
requested here waits in the queue like a waiting caller's (cti.callback_desk), ordered by when
it was requested."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from cti.callbacks import STATES, NewCallback
from cti.http import PREFIX, STORE_KEY, _path_id, json_response, read_json
from cti.identity import IdentityError, normalize_phone
from cti.openapi import PHONE_PATTERN, TIME, UUID
from cti.validation import ApiError, check_text, invalid, opt_str, require_object, timestamp
from cti.web.keys import CALLBACKS_KEY

QUEUE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_FIELDS = {"customer_id", "phone", "name", "queue", "reason", "earliest", "channel", "idempotency_key"}
_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


async def post_callback(request: web.Request) -> web.Response:
    body = require_object(await read_json(request), _FIELDS)
    check_text(body, "")
    store = request.app[STORE_KEY]
    queue = opt_str(body, "queue", 64)
    if not queue or not QUEUE.match(queue):
        raise invalid("queue", "is required: a queue name (letters, digits, '.', '_', '-'; at most 64)")
    customer_id = opt_str(body, "customer_id", 36)
    if customer_id is not None and not _ID.match(customer_id):
        raise invalid("customer_id", "must be a customer id (UUID)")
    raw_phone = opt_str(body, "phone", 40)
    customer = await store.get_customer(customer_id) if customer_id else None
    if customer_id and customer is None:
        raise ApiError(404, "no such customer", "customer_id")
    if raw_phone is not None:
        if not re.fullmatch(PHONE_PATTERN, raw_phone):
            raise invalid("phone", "not a phone number (digits, an optional leading +, 7 to 15 digits)")
        try:
            number = normalize_phone(raw_phone, store.default_country)
        except IdentityError as exc:
            raise invalid("phone", str(exc)) from None
    else:
        phones = (customer or {}).get("phones") or []
        if not phones:
            raise invalid("phone", "is required (the customer has no phone number on record)")
        number = phones[0]
    channel = opt_str(body, "channel", 40)
    if channel is None:
        channel = "api"
    elif not re.fullmatch(r"[a-z][a-z0-9_-]{0,39}", channel):
        raise invalid("channel", "must be a channel name (lower-case letters, digits, '_', '-')")
    key = opt_str(body, "idempotency_key", 200)
    name = opt_str(body, "name", 200)
    item = NewCallback(number=number, queue=queue, customer_id=customer_id,
                       name=name or (customer or {}).get("name"), reason=opt_str(body, "reason", 500),
                       channel=channel, earliest=timestamp(body, "earliest", False),
                       idempotency_key=f"api:{key}" if key else None)
    row, created = await request.app[CALLBACKS_KEY].request(item)
    return json_response(row, status=201 if created else 200,
                         headers={"Location": f"{PREFIX}/callbacks/{row['id']}"})


async def list_callbacks(request: web.Request) -> web.Response:
    for key in request.query:
        if key not in ("state", "queue", "limit"):
            raise invalid(key, "unknown query parameter (use state, queue, limit)")
    state = request.query.get("state")
    if state is not None and state not in STATES:
        raise invalid("state", f"must be one of {', '.join(STATES)}")
    queue = request.query.get("queue")
    if queue is not None and not QUEUE.match(queue):
        raise invalid("queue", "not a queue name")
    raw = request.query.get("limit", "100")
    if not re.fullmatch(r"\d{1,4}", raw) or not 1 <= int(raw) <= 1000:
        raise invalid("limit", "must be a whole number from 1 to 1000")
    rows = await request.app[CALLBACKS_KEY].store.list_callbacks(state=state, queue=queue, limit=int(raw))
    return json_response({"callbacks": rows})


async def get_callback(request: web.Request) -> web.Response:
    row = await request.app[CALLBACKS_KEY].store.get(_path_id(request, "callback"))
    if row is None:
        raise ApiError(404, "no such callback", "id")
    return json_response(row)


_BUSY = {"offering": "an agent is being offered it now", "dialing": "the customer is being called now"}


async def cancel_callback(request: web.Request) -> web.Response:
    callback_id = _path_id(request, "callback")
    reason = None
    if request.can_read_body:
        body = require_object(await read_json(request), {"reason"})
        check_text(body, "")
        reason = opt_str(body, "reason", 500)
    cancelled, row = await request.app[CALLBACKS_KEY].cancel(callback_id, reason)
    if row is None:
        raise ApiError(404, "no such callback", "id")
    if not cancelled:
        state = row["state"]
        why = _BUSY.get(state, f"it is {state} already")
        raise ApiError(409, f"only a queued callback can be cancelled: {why}", "state", {"state": state})
    return json_response(row)


def setup(app: web.Application) -> None:
    app.router.add_post(f"{PREFIX}/callbacks", post_callback)
    app.router.add_get(f"{PREFIX}/callbacks", list_callbacks)
    app.router.add_get(f"{PREFIX}/callbacks/{{id}}", get_callback)
    app.router.add_post(f"{PREFIX}/callbacks/{{id}}/cancel", cancel_callback)


# ---- the OpenAPI document's part -------------------------------------------------------------
_TEXT = {"type": "string"}
_QUEUE = {"type": "string", "pattern": QUEUE.pattern}


def openapi_schemas() -> dict[str, Any]:
    nullable_text = {"type": "string", "nullable": True}
    return {
        "CallbackInput": {"type": "object", "additionalProperties": False, "required": ["queue"],
                          "properties": {
            "queue": _QUEUE,
            "customer_id": {**UUID, "nullable": True},
            "phone": {"type": "string", "minLength": 1, "maxLength": 40, "pattern": PHONE_PATTERN,
                      "nullable": True, "description": "the number to call (default: the customer's phone)"},
            "name": {"type": "string", "maxLength": 200, "nullable": True},
            "reason": {"type": "string", "maxLength": 500, "nullable": True},
            "earliest": {**TIME, "nullable": True, "description": "not before this time (default: now)"},
            "channel": {"type": "string", "pattern": r"^[a-z][a-z0-9_-]{0,39}$", "nullable": True,
                        "description": "what asked for it (default: api)"},
            "idempotency_key": {"type": "string", "maxLength": 200, "nullable": True}}},
        "Callback": {"type": "object", "properties": {
            "id": UUID, "customer_id": {**UUID, "nullable": True}, "number": _TEXT, "name": nullable_text,
            "queue": _TEXT, "reason": nullable_text, "channel": _TEXT,
            "state": {"type": "string", "enum": list(STATES)}, "attempts": {"type": "integer"},
            "earliest": TIME, "entered_at": TIME, "give_up_at": TIME,
            "original_interaction_id": {**UUID, "nullable": True},
            "interaction_id": {**UUID, "nullable": True},
            "agent_id": nullable_text, "last_result": nullable_text,
            "history": {"type": "array", "items": {"type": "object"}},
            "created_at": TIME, "placed_at": {**TIME, "nullable": True},
            "finished_at": {**TIME, "nullable": True}}},
    }


def openapi_paths() -> dict[str, Any]:
    err = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    auth = {"401": {"description": "missing or wrong API key", **err}}
    one = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Callback"}}}}
    return {
        f"{PREFIX}/callbacks": {
            "post": {"operationId": "createCallback",
                     "summary": "Ask for a callback: the customer is called when an agent of the queue "
                                "is free",
                     "requestBody": {"required": True, "content": {"application/json": {
                         "schema": {"$ref": "#/components/schemas/CallbackInput"}}}},
                     "responses": {"201": {"description": "queued", **one},
                                   "200": {"description": "the one made before with this idempotency_key",
                                           **one},
                                   "400": {"description": "malformed JSON", **err},
                                   "404": {"description": "no such customer", **err},
                                   "413": {"description": "body larger than [http] max_body", **err},
                                   "422": {"description": "invalid field (named in error.field)", **err},
                                   **auth}},
            "get": {"operationId": "listCallbacks", "summary": "Callbacks, newest first",
                    "parameters": [
                        {"name": "state", "in": "query", "required": False,
                         "schema": {"type": "string", "enum": list(STATES)}},
                        {"name": "queue", "in": "query", "required": False, "schema": _QUEUE},
                        {"name": "limit", "in": "query", "required": False,
                         "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}}],
                    "responses": {"200": {"description": "the callbacks", "content": {"application/json": {
                        "schema": {"type": "object", "properties": {
                            "callbacks": {"type": "array",
                                          "items": {"$ref": "#/components/schemas/Callback"}}}}}}},
                        "422": {"description": "a bad parameter", **err}, **auth}}},
        f"{PREFIX}/callbacks/{{id}}": {
            "get": {"operationId": "getCallback", "summary": "One callback with its attempts",
                    "parameters": [{"name": "id", "in": "path", "required": True, "schema": UUID}],
                    "responses": {"200": {"description": "the callback", **one},
                                  "404": {"description": "no such callback", **err}, **auth}}},
        f"{PREFIX}/callbacks/{{id}}/cancel": {
            "post": {"operationId": "cancelCallback",
                     "summary": "Withdraw a callback that is still queued (never one being offered to "
                                "an agent or dialled)",
                     "parameters": [{"name": "id", "in": "path", "required": True, "schema": UUID}],
                     "requestBody": {"required": False, "content": {"application/json": {"schema": {
                         "type": "object", "additionalProperties": False, "properties": {
                             "reason": {"type": "string", "maxLength": 500, "nullable": True}}}}}},
                     "responses": {"200": {"description": "cancelled (state cancelled)", **one},
                                   "400": {"description": "malformed JSON", **err},
                                   "404": {"description": "no such callback", **err},
                                   "413": {"description": "body larger than [http] max_body", **err},
                                   "409": {"description": "not queued any more: error.state says what it is",
                                           **err},
                                   "422": {"description": "invalid field (named in error.field)", **err},
                                   **auth}}},
    }
