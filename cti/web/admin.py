"""/admin: loaded flows (validation status, diagrams), live calls, queue lengths, agent states.

Sign in with an API key (form) or send it as a Bearer token. The flows come from the
`FlowCatalog` (cti.ports) under `FLOWS_KEY`: the service's live flows, or (an API-only process)
the flows directory read by voice.ivr.catalog. Its calls read files, so they run in a thread.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from cti.http import json_response
from cti.ports import FlowCatalog
from cti.web.agent import page
from cti.web.auth import (
    ADMIN_COOKIE,
    ADMIN_HOURS,
    admin_cookie_ok,
    admin_token,
    matching_api_key,
    require_admin,
    set_cookie,
    signin_failed,
    signin_refusal,
    signin_succeeded,
)
from cti.web.keys import DESK_KEY, FLOWS_KEY


async def admin_page(request: web.Request) -> web.StreamResponse:
    if not admin_cookie_ok(request):
        raise web.HTTPFound("/admin/login")
    return page("admin.html")


async def admin_login_page(request: web.Request) -> web.StreamResponse:
    return page("admin_login.html")


async def admin_login(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    refusal = signin_refusal(request, "admin")
    if refusal is not None:
        return refusal
    key = matching_api_key(request, str(form.get("key", "")))
    if key is None:
        signin_failed(request, "admin")
        raise web.HTTPFound("/admin/login?failed=1")
    signin_succeeded(request, "admin")
    resp = web.HTTPFound("/admin")
    set_cookie(resp, request, ADMIN_COOKIE, admin_token(key), max_age=ADMIN_HOURS * 3600)
    raise resp


async def admin_logout(request: web.Request) -> web.StreamResponse:
    resp = web.HTTPFound("/admin/login")
    resp.del_cookie(ADMIN_COOKIE, path="/")
    raise resp


def catalog(app: web.Application) -> FlowCatalog | None:
    return app.get(FLOWS_KEY)


def live_nodes(calls: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """{flow: {node: live calls there}} from the live calls' snapshot."""
    out: dict[str, dict[str, int]] = {}
    for call in calls:
        if call.get("flow") and call.get("node"):
            nodes = out.setdefault(call["flow"], {})
            nodes[call["node"]] = nodes.get(call["node"], 0) + 1
    return out


def flows_summary(flows: FlowCatalog, live: dict[str, dict[str, int]] | None = None) -> list[dict[str, Any]]:
    """Every flow with its status and diagram; `live` highlights the nodes where calls are now."""
    out = []
    for name in flows.names():
        errors = flows.errors(name)
        nodes = flows.node_count(name)
        here = (live or {}).get(name, {})
        out.append({"name": name, "valid": not errors, "loaded": nodes is not None, "errors": errors,
                    "nodes": nodes or 0, "live": here,
                    "svg": flows.diagram(name, live=here) if nodes is not None else None})
    return out


async def overview(request: web.Request) -> web.Response:
    require_admin(request)
    desk = request.app[DESK_KEY]
    flows_of = catalog(request.app)
    calls = desk.live.snapshot()
    flows = (await asyncio.to_thread(flows_summary, flows_of, live_nodes(calls))
             if flows_of is not None else [])
    return json_response({"flows": flows, "calls": calls, **desk.snapshot()})


