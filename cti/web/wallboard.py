"""Supervisors' pages: /wallboard (live) and /admin/reports (history), both behind the admin
sign-in, fed by /admin/api/wallboard and /admin/api/reports (JSON; charts and diagrams are SVG
drawn here).

Live: calls in the IVR, waiting per queue with the longest wait, agents by state, and today's
calls: service level (share of queued calls an agent answered within the queue's
service_level_seconds, default 20), abandoned, containment. History per day and per flow:
calls, IVR containment, abandonment rate, ASA, AHT, and on each flow diagram how many calls
reached each node and how many ended there.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from aiohttp import web

from cti import cdr
from cti.charts import bar_chart
from cti.http import STORE_KEY, _int_param, json_response
from cti.ops import desk_snapshot
from cti.ports import FlowCatalog
from cti.web.agent import page
from cti.web.auth import admin_cookie_ok, require_admin
from cti.web.keys import DESK_KEY

DEFAULT_SERVICE_LEVEL = 20.0


def service_level_seconds(desk: Any) -> float:
    """The queues' service-level target ([queue NAME] service_level_seconds where configured)."""
    targets = [getattr(spec, "service_level_seconds", None) for spec in desk.engine.specs.values()]
    known = [float(t) for t in targets if isinstance(t, int | float)]
    return min(known) if known else DEFAULT_SERVICE_LEVEL


async def wallboard_page(request: web.Request) -> web.StreamResponse:
    if not admin_cookie_ok(request):
        raise web.HTTPFound("/admin/login")
    return page("wallboard.html")


async def reports_page(request: web.Request) -> web.StreamResponse:
    if not admin_cookie_ok(request):
        raise web.HTTPFound("/admin/login")
    return page("reports.html")


async def wallboard_data(request: web.Request) -> web.Response:
    require_admin(request)
    desk = request.app[DESK_KEY]
    snap = desk_snapshot(desk)
    live = desk.live.snapshot()
    by_state: dict[str, int] = {}
    away: dict[str, int] = {}  # away agents by their reason ("" for none given)
    for agent in snap["agents"]:
        by_state[agent["state"]] = by_state.get(agent["state"], 0) + 1
        if agent["state"] == "away":
            away[agent.get("reason") or ""] = away.get(agent.get("reason") or "", 0) + 1
    rows, _ = await request.app[STORE_KEY].db.run_read(cdr.calls_between, cdr.today_start(), None)
    today = (await asyncio.to_thread(cdr.report, rows, service_level=service_level_seconds(desk)))["totals"]
    return json_response({
        "calls_in_ivr": sum(1 for c in live if not c.get("queue") and not c.get("agent_id")),
        "calls_live": len(live),
        "queues": [{"queue": q, "waiting": n, "longest_wait": round(snap["longest_wait"].get(q, 0.0), 1)}
                   for q, n in snap["queues"].items()],
        "agents": by_state,
        "away_reasons": away,
        "today": today,
        "service_level_seconds": service_level_seconds(desk),
    })


def _report_view(report: dict[str, Any], flows_of: FlowCatalog | None) -> dict[str, Any]:
    """Charts and annotated diagrams for a report (blocking: runs in a thread)."""
    days = report["days"]
    chart = bar_chart([d["day"][5:] for d in days], [
        ("calls", [d["calls"] for d in days]), ("contained", [d["contained"] for d in days]),
        ("to an agent", [d["agent"] for d in days]), ("abandoned", [d["abandoned"] for d in days])],
        title="Calls per day")
    flows = []
    for item in report["flows"]:
        svg = flows_of.diagram(item["flow"], counts=item["nodes"]) if flows_of is not None else None
        flows.append({**item, "svg": svg})
    return {**report, "flows": flows, "chart": chart}


async def reports_data(request: web.Request) -> web.Response:
    from cti.web.admin import catalog

    require_admin(request)
    for key in request.query:
        if key != "days":
            raise web.HTTPUnprocessableEntity(reason=f"unknown query parameter {key[:40]!r} (use days)")
    days = _int_param(request, "days", 7, 1, 366)
    desk = request.app[DESK_KEY]
    since = cdr.today_start() - timedelta(days=days - 1)
    rows, cut = await request.app[STORE_KEY].db.run_read(cdr.calls_between, since, None)
    report = await asyncio.to_thread(cdr.report, rows, service_level=service_level_seconds(desk))
    view = await asyncio.to_thread(_report_view, report, catalog(request.app))
    return json_response({**view, "since": since.date().isoformat(), "days_shown": days, "truncated": cut})


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/wallboard", wallboard_page)
    r.add_get("/admin/reports", reports_page)
    r.add_get("/admin/api/wallboard", wallboard_data)
    r.add_get("/admin/api/reports", reports_data)
