"""The agent side of the HTTP service: agents API, agent page, admin page, events websocket.

`setup(app, config, schema=None)` is called by `cti.http.build_api`. Before the app starts, the
service puts its `AgentConnector` under `CONNECTOR_KEY` and its TTS under `VOICE_KEY` (see
cti.web.keys); after startup it finds the node's `AgentDesk` (queues, screen pops, live calls)
under `DESK_KEY`.

Admin API (Bearer API key, under /api/v1):
- POST /agents {"id", "name", "sip_uri", "skills": [...], "password"} -> 201 the agent
- GET /agents, GET /agents/{id}, PATCH /agents/{id} {"name"|"sip_uri"|"skills"|"password"|"state"}
- GET /queues -> queue lengths, waiting positions, service levels and agent states on this node
- GET /agents/{id}/events: the websocket (see cti.web.agent)
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from aiohttp import web

from cti import callbacks_api
from cti.agents import AGENT_ID, AgentExists, AgentNotFound, AgentStore
from cti.callback_desk import CallbackDesk
from cti.callbacks import CallbackStore, RetryRules
from cti.click_to_call import ClickToCall
from cti.events import make_bus
from cti.http import DATABASE_KEY, PREFIX, STORE_KEY, json_response, read_json
from cti.live import LiveCalls
from cti.queues import AgentState, QueueEngine, QueueSpec
from cti.routing import AgentDesk
from cti.security import SigninThrottle
from cti.validation import ApiError, check_text, invalid, require_object
from cti.web import admin, agent, softphone
from cti.web.keys import (
    CALLBACKS_KEY,
    CLICK_KEY,
    CONNECTOR_KEY,
    DESK_KEY,
    DIALER_KEY,
    SIGNIN_KEY,
    SOCKETS_KEY,
    VOICE_KEY,
)
from cti.wrapup import AgentPolicy

if TYPE_CHECKING:  # the service's configuration, named for the type checker only
    from voice.config import Config, QueuesConfig

__all__ = ["CONNECTOR_KEY", "DESK_KEY", "VOICE_KEY", "queue_engine", "setup"]

_FIELDS = {"id", "name", "sip_uri", "skills", "password", "state", "reason"}


def _text(body: dict[str, Any], key: str, *, required: bool, limit: int = 200) -> str | None:
    value = body.get(key)
    if value is None:
        if required:
            raise invalid(key, "required")
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise invalid(key, f"must be non-empty text of at most {limit} characters")
    return value.strip()


def _skills(body: dict[str, Any]) -> list[str] | None:
    skills = body.get("skills")
    if skills is None:
        return None
    if not isinstance(skills, list) or not all(isinstance(s, str) and 0 < len(s) <= 64 for s in skills):
        raise invalid("skills", "must be a list of names (queue names the agent serves)")
    return list(dict.fromkeys(skills))


def _sip_uri(body: dict[str, Any], required: bool) -> str | None:
    uri = _text(body, "sip_uri", required=required, limit=500)
    if uri is not None and not uri.startswith(("sip:", "sips:", "browser:")):
        raise invalid("sip_uri", "must be a sip: or sips: URI, or browser:<agent id> (the agent page)")
    return uri


def _password(body: dict[str, Any]) -> str | None:
    password = body.get("password")
    if password is not None and (not isinstance(password, str) or not 8 <= len(password) <= 200):
        raise invalid("password", "must be 8 to 200 characters")
    return password


async def create_agent(request: web.Request) -> web.Response:
    body = require_object(await read_json(request), _FIELDS - {"state", "reason"})
    check_text(body, "")
    agent_id = _text(body, "id", required=True, limit=64)
    assert agent_id is not None
    if not AGENT_ID.match(agent_id):
        raise invalid("id", "letters, digits, '.', '_' and '-' only, starting with a letter or digit")
    desk = request.app[DESK_KEY]
    try:
        created = await desk.agents.create_agent(
            agent_id=agent_id, name=_text(body, "name", required=True) or agent_id,
            sip_uri=_sip_uri(body, True) or "", skills=_skills(body) or [], password=_password(body))
    except AgentExists:
        raise ApiError(409, f"agent {agent_id!r} exists", "id") from None
    await desk.bus.publish(None, {"type": "agent", "agent": created})
    desk.apply_agent(created)
    return json_response(created, status=201, headers={"Location": f"{PREFIX}/agents/{agent_id}"})


async def list_agents(request: web.Request) -> web.Response:
    return json_response({"agents": await request.app[DESK_KEY].agents.list_agents()})


async def get_agent(request: web.Request) -> web.Response:
    found = await request.app[DESK_KEY].agents.get_agent(request.match_info["agent_id"])
    if found is None:
        raise ApiError(404, "no such agent", "agent_id")
    return json_response(found)


async def patch_agent(request: web.Request) -> web.Response:
    agent_id = request.match_info["agent_id"]
    body = require_object(await read_json(request), _FIELDS - {"id"})
    check_text(body, "")
    desk = request.app[DESK_KEY]
    state = body.get("state")
    if state is not None and state not in agent.AGENT_STATES:
        raise invalid("state", f"must be one of {', '.join(agent.AGENT_STATES)}")
    reason = agent.away_reason(desk.policy, state or "", body)
    try:
        updated = await desk.agents.update_agent(
            agent_id, name=_text(body, "name", required=False), sip_uri=_sip_uri(body, False),
            skills=_skills(body), password=_password(body))
        if state is not None:
            await desk.set_agent_state(agent_id, AgentState(state), reason=reason)
            updated = await desk.agents.get_agent(agent_id) or updated
    except AgentNotFound:
        raise ApiError(404, "no such agent", "agent_id") from None
    await desk.bus.publish(None, {"type": "agent", "agent": updated})
    desk.apply_agent(updated)
    return json_response(updated)


async def queues(request: web.Request) -> web.Response:
    desk = request.app[DESK_KEY]
    return json_response({**desk.snapshot(), "calls": desk.live.snapshot()})


def queue_spec(name: str, q: QueuesConfig, skill: str = "") -> QueueSpec:
    return QueueSpec(name=name, skill=skill, timeout=q.timeout, ring_timeout=q.ring_timeout,
                     no_answer=q.no_answer, music=str(q.music), announce_interval=q.announce_interval,
                     ringing=q.ringing, overflow=q.overflow.removeprefix("queue:") or None,
                     service_level=q.service_level_seconds, callback_key=q.callback_key)


def queue_engine(config: Config) -> QueueEngine:
    """The ACD with the config's queues: [queue NAME] sections, [queues] for every other queue."""
    return QueueEngine([queue_spec(name, q, q.skill) for name, q in config.queue.items()],
                       defaults=queue_spec("", config.queues))


def agent_policy(config: Config) -> AgentPolicy:
    """Dispositions, wrap-up time and away reasons from [agents]."""
    a = config.agents
    return AgentPolicy(dispositions=a.dispositions, wrap_up_seconds=float(a.wrap_up_seconds),
                       away_reasons=a.away_reasons)


def setup(app: web.Application, config: Config, *, schema: str | None = None) -> None:
    """Add the agent side's routes and its startup/cleanup to the API application."""
    app[SOCKETS_KEY] = weakref.WeakSet()
    http = config.http
    app[SIGNIN_KEY] = SigninThrottle(http.signin_failures, http.signin_window, http.signin_block)

    async def desk_ctx(app: web.Application) -> AsyncIterator[None]:
        # Runs after the database context: the store exists and is migrated.
        desk = AgentDesk(store=app[STORE_KEY], agents=AgentStore(app[DATABASE_KEY]),
                         bus=make_bus(config.database.url, schema=schema),
                         connector=app.get(CONNECTOR_KEY), voice=app.get(VOICE_KEY), live=LiveCalls(),
                         engine=queue_engine(config), recent=config.cti.recent_interactions,
                         policy=agent_policy(config))
        await desk.start()
        app[DESK_KEY] = desk
        cb = config.callbacks
        callbacks = CallbackDesk(desk, CallbackStore(app[DATABASE_KEY], RetryRules(
            retries=cb.retries, retry_interval=cb.retry_interval, give_up_after=cb.give_up_after)),
            app.get(DIALER_KEY), node=config.node.id, customer_ring_timeout=cb.ring_timeout,
            poll_interval=cb.poll_interval)
        desk.callbacks = callbacks
        await callbacks.start()
        app[CALLBACKS_KEY] = callbacks
        clicks = app[CLICK_KEY] = ClickToCall(desk, app.get(DIALER_KEY),
                                              agent_ring_timeout=config.queues.ring_timeout,
                                              customer_ring_timeout=cb.ring_timeout)
        try:
            yield
        finally:
            await clicks.close()
            await callbacks.close()
            await desk.close()

    async def close_sockets(app: web.Application) -> None:
        sockets: weakref.WeakSet[web.WebSocketResponse] = app[SOCKETS_KEY]
        for ws in list(sockets):
            with contextlib.suppress(Exception):
                await ws.close(code=1001, message=b"server shutdown")

    app.cleanup_ctx.append(desk_ctx)
    app.on_shutdown.append(close_sockets)
    r = app.router
    r.add_post(f"{PREFIX}/agents", create_agent)
    r.add_get(f"{PREFIX}/agents", list_agents)
    r.add_get(f"{PREFIX}/agents/{{agent_id}}", get_agent)
    r.add_patch(f"{PREFIX}/agents/{{agent_id}}", patch_agent)
    r.add_get(f"{PREFIX}/agents/{{agent_id}}/events", agent.events_socket)
    r.add_get(f"{PREFIX}/queues", queues)
    callbacks_api.setup(app)
    r.add_get("/agent", agent.agent_page)
    r.add_get("/agent/login", agent.login_page)
    r.add_post("/agent/login", agent.login)
    r.add_post("/agent/logout", agent.logout)
    r.add_get("/agent/api/me", agent.me)
    r.add_post("/agent/api/state", agent.post_state)
    r.add_post("/agent/api/accept", agent.accept)
    r.add_post("/agent/api/notes", agent.post_note)
    r.add_post("/agent/api/calls", agent.place_call)  # click-to-call (cti.click_to_call)
    r.add_get("/agent/api/customers", agent.search)
    r.add_get("/agent/api/customers/{id}", agent.customer_timeline)
    r.add_get("/agent/api/interactions/{id}", agent.interaction)
    r.add_get("/admin", admin.admin_page)
    r.add_get("/admin/login", admin.admin_login_page)
    r.add_post("/admin/login", admin.admin_login)
    r.add_post("/admin/logout", admin.admin_logout)
    r.add_get("/admin/api/overview", admin.overview)
    r.add_post("/admin/api/listen", softphone.listen_in)  # supervisor listen-in (browser and desk phones)
    r.add_delete("/admin/api/listen/{id}", softphone.listen_stop)
    r.add_static("/static/", agent.STATIC, append_version=False)
