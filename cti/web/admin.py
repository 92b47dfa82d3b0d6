"""/admin: loaded flows (validation status, diagrams), live calls, queue lengths, agent states.

Sign in with an API key (form) or send it as a Bearer token. The flows come from the service's
FlowLibrary (`desk.library`, set by the service); without one, the flows directory of the config
is loaded here (read-only, in a worker thread, at most every few seconds).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web

from cti.http import CONFIG_KEY, json_response
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
from cti.web.keys import DESK_KEY

_RELOAD_EVERY = 5.0
_own_library: dict[int, tuple[float, Any]] = {}  # id(app) -> (loaded at, FlowLibrary)


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


async def _library(app: web.Application) -> Any:
    desk = app[DESK_KEY]
    if desk.library is not None:
        return desk.library
    loaded_at, library = _own_library.get(id(app), (0.0, None))
    if library is None or time.monotonic() - loaded_at > _RELOAD_EVERY:
        from voice.ivr import FlowLibrary

        ivr = app[CONFIG_KEY].ivr
        library = FlowLibrary(ivr.flows, prompts_dir=ivr.prompts, default_flow=ivr.default_flow,
                              routes=ivr.routes)
        await asyncio.to_thread(library.load)  # YAML parsing: off the event loop
        _own_library[id(app)] = (time.monotonic(), library)
    return library


def live_nodes(calls: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """{flow: {node: live calls there}} from the live calls' snapshot."""
    out: dict[str, dict[str, int]] = {}
    for call in calls:
        if call.get("flow") and call.get("node"):
            nodes = out.setdefault(call["flow"], {})
            nodes[call["node"]] = nodes.get(call["node"], 0) + 1
    return out


def flows_summary(library: Any, live: dict[str, dict[str, int]] | None = None) -> list[dict[str, Any]]:
    """Every flow with its status and diagram; `live` highlights the nodes where calls are now."""
    from voice.ivr.graph import to_svg

    out = []
    for name in sorted(set(library.flows) | set(library.errors)):
        flow = library.flows.get(name)
        errors = [str(e) for e in library.errors.get(name, [])]
        here = (live or {}).get(name, {})
        out.append({"name": name, "valid": not errors, "loaded": flow is not None, "errors": errors,
                    "nodes": len(flow.nodes) if flow else 0, "live": here,
                    "svg": to_svg(flow, live=here) if flow else None})
    return out


async def overview(request: web.Request) -> web.Response:
    require_admin(request)
    desk = request.app[DESK_KEY]
    library = await _library(request.app)
    calls = desk.live.snapshot()
    flows = await asyncio.to_thread(flows_summary, library, live_nodes(calls)) if library is not None else []
    return json_response({"flows": flows, "calls": calls, **desk.snapshot()})


def drop_own_library(app: web.Application) -> None:
    _own_library.pop(id(app), None)
