"""The customer store's HTTP API (aiohttp), everything under /api/v1.

`build_api(config)` gives a complete application that owns its database engine (opened,
migrated and closed in `cleanup_ctx`); the service mounts it or runs it, and finds the store
under `STORE_KEY`.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from cti.db import Database, migrate, open_database
from cti.identity import IDENTITY_KINDS, IdentityError, normalize_identity
from cti.lookup import lookup
from cti.openapi import openapi_document
from cti.outage import outage_middleware
from cti.security import security_event
from cti.store import CustomerStore, IdentityConflict, NotFound, decode_cursor
from cti.validation import ApiError, invalid, parse_customer, parse_ingest

if TYPE_CHECKING:
    # The service's configuration (voice.config) is only named for the type checker: cti imports
    # nothing from voice at run time.
    from cti.ports import AgentConnector, FlowCatalog, OutboundDialer
    from cti.waiting import SpeechRenderer
    from voice.config import Config

log = logging.getLogger(__name__)

PREFIX = "/api/v1"
STORE_KEY = web.AppKey("cti_store", CustomerStore)
DATABASE_KEY = web.AppKey("cti_database", Database)
CONFIG_KEY: web.AppKey[Config] = web.AppKey("cti_config")
_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(data: Any, status: int = 200, **kwargs: Any) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda o: json.dumps(o, ensure_ascii=False), **kwargs)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error leaves as JSON: {"error": {"status", "field", "message"}}."""
    try:
        return await handler(request)
    except ApiError as exc:
        return json_response(exc.body(), status=exc.status)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "www-authenticate")}
        return json_response(ApiError(exc.status, exc.reason).body(), status=exc.status, headers=headers)
    except Exception:
        log.exception("internal error on %s %s", request.method, request.path)
        return json_response(ApiError(500, "internal error").body(), status=500)


def auth_middleware(api_keys: tuple[str, ...]) -> Any:
    keys = [k.encode() for k in api_keys]
    public = {f"{PREFIX}/openapi.json"}

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        # Handlers marked `own_auth` (the agent events websocket) accept session cookies too.
        own = getattr(request.match_info.handler, "own_auth", False)
        if request.path.startswith(PREFIX) and request.path not in public and not own:
            header = request.headers.get("Authorization", "")
            scheme, _, token = header.partition(" ")
            given = token.strip().encode("utf-8", "replace")
            # Compare with every key, always: the time taken says nothing about which key nearly matched.
            ok = False
            for key in keys:
                ok |= hmac.compare_digest(given, key)
            if scheme.lower() != "bearer" or not ok:
                security_event("api_key_rejected", request.remote or "?", given="yes" if given else "no")
                raise ApiError(401, "missing or wrong API key (Authorization: Bearer <key>)", "Authorization",
                               ) from None
        return await handler(request)

    return check


async def read_json(request: web.Request) -> Any:
    limit = request.app[CONFIG_KEY].http.max_body
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, f"request body larger than {limit} bytes", "body")
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise ApiError(413, f"request body larger than {limit} bytes", "body") from None
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"malformed JSON: {exc}", "body") from None


def _store(request: web.Request) -> CustomerStore:
    return request.app[STORE_KEY]


def _path_id(request: web.Request, what: str) -> str:
    value = request.match_info["id"]
    if not _ID.match(value):
        raise ApiError(404, f"no {what} {value[:40]!r}", "id")
    return value


def _conflict(exc: IdentityConflict) -> ApiError:
    return ApiError(409, str(exc), exc.field, {"customer_ids": exc.customer_ids})


async def post_interaction(request: web.Request) -> web.Response:
    store = _store(request)
    item = parse_ingest(await read_json(request), channels=store.channels,
                        default_country=store.default_country)
    try:
        result = await store.ingest(item)
    except IdentityConflict as exc:
        raise _conflict(exc) from None
    body = {"interaction_id": result.interaction_id, "customer_id": result.customer_id,
            "created": result.created, "customer_created": result.customer_created}
    # 201 for the request that made it; 200 with the same ids for a retry (idempotency key seen).
    return json_response(body, status=201 if result.created else 200,
                         headers={"Location": f"{PREFIX}/interactions/{result.interaction_id}"})


async def get_interaction(request: web.Request) -> web.Response:
    found = await _store(request).get_interaction(_path_id(request, "interaction"))
    if found is None:
        raise ApiError(404, "no such interaction", "id")
    return json_response(found)


async def post_customer(request: web.Request) -> web.Response:
    store = _store(request)
    name, idents, attrs = parse_customer(await read_json(request), store.default_country)
    try:
        customer = await store.create_customer(name=name, identities=idents, attributes=attrs or {})
    except IdentityConflict as exc:
        raise _conflict(exc) from None
    return json_response(customer, status=201, headers={"Location": f"{PREFIX}/customers/{customer['id']}"})


def _query_identities(request: web.Request, store: CustomerStore) -> list[tuple[str, str]]:
    for key in request.query:
        if key not in IDENTITY_KINDS:
            raise invalid(key, f"unknown query parameter (use {', '.join(IDENTITY_KINDS)})")
    out = []
    for kind in IDENTITY_KINDS:
        for raw in request.query.getall(kind, []):
            if "\x00" in raw or len(raw) > 320:
                raise invalid(kind, "not a valid identity")
            try:
                out.append((kind, normalize_identity(kind, raw, store.default_country)))
            except IdentityError as exc:
                raise invalid(kind, str(exc)) from None
    return out


async def find_customers(request: web.Request) -> web.Response:
    store = _store(request)
    idents = _query_identities(request, store)
    if not idents:
        raise invalid("phone", "give at least one of phone, email, account, external_id")
    return json_response({"customers": await store.find_customers(idents)})


async def get_customer(request: web.Request) -> web.Response:
    found = await _store(request).get_customer(_path_id(request, "customer"))
    if found is None:
        raise ApiError(404, "no such customer", "id")
    return json_response(found)


async def patch_customer(request: web.Request) -> web.Response:
    store = _store(request)
    customer_id = _path_id(request, "customer")
    name, idents, attrs = parse_customer(await read_json(request), store.default_country, patch=True)
    try:
        return json_response(await store.update_customer(customer_id, name=name, attributes=attrs,
                                                         identities=idents))
    except NotFound:
        raise ApiError(404, "no such customer", "id") from None
    except IdentityConflict as exc:
        raise _conflict(exc) from None


def _int_param(request: web.Request, key: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(key)
    if raw is None:
        return default
    if not re.fullmatch(r"\d{1,6}", raw) or not lo <= int(raw) <= hi:
        raise invalid(key, f"must be a whole number from {lo} to {hi}")
    return int(raw)


async def timeline(request: web.Request) -> web.Response:
    store = _store(request)
    customer_id = _path_id(request, "customer")
    limit = _int_param(request, "limit", 20, 1, 200)
    raw_cursor = request.query.get("cursor")
    try:
        cursor = decode_cursor(raw_cursor) if raw_cursor else None
    except ValueError as exc:
        raise invalid("cursor", str(exc)) from None
    items, next_cursor = await store.timeline(customer_id, limit=limit, cursor=cursor)
    # An empty page is the only case that needs the extra query telling "no such customer" apart.
    if not items and not await store.customer_exists(customer_id):
        raise ApiError(404, "no such customer", "id")
    return json_response({"interactions": items, "next_cursor": next_cursor})


async def cti_lookup(request: web.Request) -> web.Response:
    for key in request.query:
        if key not in ("phone", "account", "recent"):
            raise invalid(key, "unknown query parameter (use phone, account, recent)")
    phone, account = request.query.get("phone"), request.query.get("account")
    if not phone and not account:
        raise invalid("phone", "give phone or account")
    if "\x00" in (phone or "") + (account or ""):
        raise invalid("phone" if phone and "\x00" in phone else "account", "must not contain NUL characters")
    recent = _int_param(request, "recent", request.app[CONFIG_KEY].cti.recent_interactions, 0, 100)
    return json_response(await lookup(_store(request), phone=phone, account=account, recent=recent))


async def openapi(request: web.Request) -> web.Response:
    return json_response(openapi_document(_store(request).channels))


def build_api(config: Config, *, schema: str | None = None, connector: AgentConnector | None = None,
              voice: SpeechRenderer | None = None, flows: FlowCatalog | None = None,
              dialer: OutboundDialer | None = None) -> web.Application:
    """The HTTP API as a complete application; `schema` (PostgreSQL) is for test isolation;
    `connector` (call control) rings agents for the desk's queues, `dialer` places callbacks,
    `voice` (TTS) tells waiting callers their place, `flows` is what the admin pages show (the
    IVR's flows)."""
    app = web.Application(
        client_max_size=config.http.max_body,
        middlewares=[error_middleware, auth_middleware(config.http.api_keys), outage_middleware],
    )
    app[CONFIG_KEY] = config
    if not config.http.api_keys:
        log.warning("no [http] api_keys configured: the HTTP API answers 401 to every request")

    async def database_ctx(app: web.Application) -> AsyncIterator[None]:
        db = open_database(config.database.url, schema=schema)
        try:
            await migrate(db)
            app[DATABASE_KEY] = db
            app[STORE_KEY] = CustomerStore(db, default_country=config.cti.default_country)
            yield
        finally:
            await db.dispose()

    app.cleanup_ctx.append(database_ctx)
    r = app.router
    r.add_post(f"{PREFIX}/interactions", post_interaction)
    r.add_get(f"{PREFIX}/interactions/{{id}}", get_interaction)
    r.add_post(f"{PREFIX}/customers", post_customer)
    r.add_get(f"{PREFIX}/customers", find_customers)
    r.add_get(f"{PREFIX}/customers/{{id}}", get_customer)
    r.add_patch(f"{PREFIX}/customers/{{id}}", patch_customer)
    r.add_get(f"{PREFIX}/customers/{{id}}/interactions", timeline)
    r.add_get(f"{PREFIX}/lookup", cti_lookup)
    r.add_get(f"{PREFIX}/openapi.json", openapi)
    from cti.web import setup as setup_agent_side  # imported here: cti.web imports this module
    from cti.web.keys import CONNECTOR_KEY, DIALER_KEY, FLOWS_KEY, VOICE_KEY

    if dialer is not None:
        app[DIALER_KEY] = dialer
    if connector is not None:
        app[CONNECTOR_KEY] = connector
    if voice is not None:
        app[VOICE_KEY] = voice
    if flows is not None:
        app[FLOWS_KEY] = flows
    setup_agent_side(app, config, schema=schema)
    from cti import ops, reports_api

    reports_api.setup(app)
    ops.setup(app)  # after the agent side: its startup reads the desk
    return app
