"""The agent's side over HTTP: sign-in, the /agent page, its JSON calls, and the events websocket.

Websocket contract (`GET /api/v1/agents/{agent_id}/events`, the agent's session cookie or an API
key): the server sends JSON objects, each with a "type":
- "hello": {"agent": {...}, "call": the screen pop of the call the agent is offered, on or wrapping
  up (else null), "missed": the last "missed" event while the agent is away because of it (else
  null)} once, on connect: a reloaded page or a new tab shows what the agent was looking at;
- "state": {"agent_id", "state", "since", "call_id"} on every state change;
- "screen_pop": {"call_id", "sip_call_id", "interaction_id", "caller", "customer", "found",
  "identified_by", "ivr", "transcript", "recent_interactions", "last_by_channel", "queue"} when
  the agent's phone starts ringing (`customer` is the one the IVR identified, else the caller ID's);
- "missed": {"call_id", "queue", "caller", "status", "state", "message"} when the agent let a call
  ring out (or their phone refused it); `message` says why they are now `state` (away, usually).
- "outbound": {"call_id", "state", "message", "interaction_id"} at each step of a call the agent
  placed from the page (POST /agent/api/calls, cti.click_to_call): ringing_agent, dialing,
  talking, ended, agent_missed, not_reached, failed.
Clients may send {"type": "ping"} and get {"type": "pong"}; the softphone's rtc_* messages are
described in cti.web.softphone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import weakref
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from cti.agents import AgentNotFound
from cti.click_to_call import ClickToCallError
from cti.http import STORE_KEY, json_response, read_json
from cti.queues import AgentState
from cti.validation import ApiError, check_text, invalid, require_object
from cti.web import softphone
from cti.web.auth import (
    AGENT_COOKIE,
    api_key_ok,
    own_auth,
    set_cookie,
    signin_failed,
    signin_refusal,
    signin_succeeded,
)
from cti.web.keys import CLICK_KEY, DESK_KEY, SOCKETS_KEY
from cti.wrapup import AgentPolicy

log = logging.getLogger("cti.web")
STATIC = Path(__file__).parent / "static"
AGENT_STATES = ("available", "on_call", "wrap_up", "away")
_SEND_TIMEOUT = 5.0
_CUSTOMER_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def page(name: str) -> web.FileResponse:
    resp = web.FileResponse(STATIC / name)
    # The page holds customer data: never in a shared cache; and nothing from other origins.
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["Content-Security-Policy"] = ("default-src 'self'; img-src 'self' data:; "
                                               "style-src 'self'; script-src 'self'; frame-ancestors 'none'")
    return resp


async def session_agent(request: web.Request) -> str | None:
    token = request.cookies.get(AGENT_COOKIE)
    return await request.app[DESK_KEY].agents.session_agent(token) if token else None


async def require_agent(request: web.Request) -> str:
    agent_id = await session_agent(request)
    if agent_id is None:
        raise ApiError(401, "sign in at /agent/login", "cookie")
    return agent_id


# ---- pages ---------------------------------------------------------------------------------
async def agent_page(request: web.Request) -> web.StreamResponse:
    if await session_agent(request) is None:
        raise web.HTTPFound("/agent/login")
    return page("agent.html")


async def login_page(request: web.Request) -> web.StreamResponse:
    return page("login.html")


async def login(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    agent_id, password = str(form.get("agent", "")), str(form.get("password", ""))
    account = f"agent:{agent_id}"
    refusal = signin_refusal(request, account)
    if refusal is not None:
        return refusal
    token = await request.app[DESK_KEY].agents.sign_in(agent_id, password) if agent_id and password else None
    if token is None:
        signin_failed(request, account)
        raise web.HTTPFound("/agent/login?failed=1")
    signin_succeeded(request, account)
    resp = web.HTTPFound("/agent")
    set_cookie(resp, request, AGENT_COOKIE, token, max_age=12 * 3600)
    raise resp


async def logout(request: web.Request) -> web.StreamResponse:
    token = request.cookies.get(AGENT_COOKIE)
    if token:
        await request.app[DESK_KEY].agents.sign_out(token)
    resp = web.HTTPFound("/agent/login")
    resp.del_cookie(AGENT_COOKIE, path="/")
    raise resp


# ---- the page's JSON calls (session cookie) ------------------------------------------------
async def me(request: web.Request) -> web.Response:
    """The agent, and the desk's codes: dispositions, away reasons, the wrap-up time ([agents])."""
    desk = request.app[DESK_KEY]
    agent = await desk.agents.get_agent(await require_agent(request))
    wrap_up_left = desk.wrap_up.left(agent["id"]) if agent is not None else None
    return json_response({"agent": agent, "desk": desk.policy.page_form(), "wrap_up_left": wrap_up_left})


def away_reason(policy: AgentPolicy, state: str, body: dict[str, Any]) -> str | None:
    """The `reason` of a state change: only with away, one of [agents] away_reasons when set."""
    reason = body.get("reason")
    if reason is None or reason == "":
        return None
    if state != "away":
        raise invalid("reason", "only an away state has a reason")
    if not isinstance(reason, str):
        raise invalid("reason", "must be a string")
    if policy.away_reasons and reason not in policy.away_reasons:
        raise invalid("reason", f"must be one of {', '.join(policy.away_reasons)}")
    if len(reason) > 40:
        raise invalid("reason", "at most 40 characters")
    return reason


async def post_state(request: web.Request) -> web.Response:
    agent_id = await require_agent(request)
    body = require_object(await read_json(request), {"state", "call_id", "reason"})
    state = body.get("state")
    if state not in AGENT_STATES:
        raise invalid("state", f"must be one of {', '.join(AGENT_STATES)}")
    call_id = body.get("call_id")
    if call_id is not None and not isinstance(call_id, str):
        raise invalid("call_id", "must be a string")
    desk = request.app[DESK_KEY]
    reason = away_reason(desk.policy, state, body)
    await desk.set_agent_state(agent_id, AgentState(state), call_id, reason=reason)
    return json_response(await desk.agents.get_agent(agent_id))


async def accept(request: web.Request) -> web.Response:
    """The agent took the call shown on screen: on a call. 409 (nothing changed) when that call is
    not offered to this agent (any more): the caller hung up, another agent took it, a typo."""
    agent_id = await require_agent(request)
    body = require_object(await read_json(request), {"call_id"})
    if not isinstance(body.get("call_id"), str) or not body["call_id"]:
        raise invalid("call_id", "required")
    desk = request.app[DESK_KEY]
    if not await desk.accept_offer(agent_id, body["call_id"]):
        raise ApiError(409, "this call is not offered to you (any more)", "call_id")
    return json_response(await desk.agents.get_agent(agent_id))


async def post_note(request: web.Request) -> web.Response:
    agent_id = await require_agent(request)
    body = require_object(await read_json(request), {"call_id", "interaction_id", "text", "disposition"})
    check_text(body, "")
    text, disposition = body.get("text") or "", body.get("disposition") or None
    if not isinstance(text, str) or len(text) > 10000:
        raise invalid("text", "must be text of at most 10000 characters")
    if disposition is not None and (not isinstance(disposition, str) or len(disposition) > 100):
        raise invalid("disposition", "must be text of at most 100 characters")
    if not text and not disposition:
        raise invalid("text", "give a note or a disposition")
    desk = request.app[DESK_KEY]
    codes = desk.policy.dispositions
    if disposition is not None and codes and disposition not in codes:
        raise invalid("disposition", f"must be one of {', '.join(codes)}")
    interaction_id = body.get("interaction_id")
    if not interaction_id and isinstance(body.get("call_id"), str):
        # the pop's call_id is the call's key (live on some node) or, from other clients, the Call-ID
        live = desk.live.get(body["call_id"])
        interaction_id = (live.interaction_id if live else None) or \
            await desk.agents.interaction_for_call(body["call_id"])
    if not isinstance(interaction_id, str) or not interaction_id:
        raise invalid("interaction_id", "no interaction for this call")
    try:
        note = await desk.agents.add_note(interaction_id, agent_id=agent_id, text=text,
                                          disposition=disposition)
    except AgentNotFound:
        raise ApiError(404, "no such interaction", "interaction_id") from None
    return json_response(note, status=201)


async def place_call(request: web.Request) -> web.Response:
    """Click-to-call: {"customer_id"} (their first phone) and/or {"number"}; 202 {"call_id",
    "number", "customer_id"} once the agent is reserved and their phone starts ringing (the rest
    is told over the websocket: "outbound" events). 409 when the agent is not available."""
    agent_id = await require_agent(request)
    body = require_object(await read_json(request), {"customer_id", "number"})
    check_text(body, "")
    number, customer_id = body.get("number"), body.get("customer_id")
    if number is not None and (not isinstance(number, str) or not number.strip() or len(number) > 64):
        raise invalid("number", "must be a phone number of at most 64 characters")
    if customer_id is not None and (not isinstance(customer_id, str) or not _CUSTOMER_ID.match(customer_id)):
        raise invalid("customer_id", "must be a customer id")
    if number is None and customer_id is None:
        raise invalid("number", "give a number or a customer_id")
    try:
        placed = await request.app[CLICK_KEY].place(agent_id, number=number, customer_id=customer_id)
    except ClickToCallError as exc:
        raise ApiError(exc.status, str(exc), exc.field) from None
    return json_response(placed, status=202)


async def search(request: web.Request) -> web.Response:
    await require_agent(request)
    q = request.query.get("q", "")
    if len(q) > 200 or "\x00" in q:
        raise invalid("q", "at most 200 characters")
    return json_response({"customers": await request.app[DESK_KEY].agents.search_customers(q)})


async def customer_timeline(request: web.Request) -> web.Response:
    await require_agent(request)
    store = request.app[STORE_KEY]
    customer = await store.get_customer(request.match_info["id"][:36])
    if customer is None:
        raise ApiError(404, "no such customer", "id")
    items, _ = await store.timeline(customer["id"], limit=50)
    return json_response({"customer": customer, "interactions": items})


async def interaction(request: web.Request) -> web.Response:
    await require_agent(request)
    found = await request.app[STORE_KEY].get_interaction(request.match_info["id"][:36])
    if found is None:
        raise ApiError(404, "no such interaction", "id")
    return json_response(found)  # with its notes


# ---- websocket -----------------------------------------------------------------------------
@own_auth
async def events_socket(request: web.Request) -> web.StreamResponse:
    agent_id = request.match_info["agent_id"]
    desk = request.app[DESK_KEY]
    if not api_key_ok(request) and await session_agent(request) != agent_id:
        raise ApiError(401, "sign in as this agent, or send Authorization: Bearer <API key>", "Authorization")
    agent = await desk.agents.get_agent(agent_id)
    if agent is None:
        raise ApiError(404, "no such agent", "agent_id")
    ws = web.WebSocketResponse(heartbeat=30)
    await ws.prepare(request)
    sockets: weakref.WeakSet[web.WebSocketResponse] = request.app[SOCKETS_KEY]
    sockets.add(ws)
    sub = desk.bus.subscribe(agent_id)
    phone = softphone.attach(request, agent_id, ws)
    reader = asyncio.ensure_future(_read(ws, phone))
    try:
        await ws.send_json({"type": "hello", "agent": agent, **desk.current_for(agent)})
        while not ws.closed:
            getter = asyncio.ensure_future(sub.get())
            done, _ = await asyncio.wait({getter, reader}, return_when=asyncio.FIRST_COMPLETED)
            if getter not in done:
                getter.cancel()
                break
            if sub.overflowed:
                break
            event = getter.result()
            await asyncio.wait_for(ws.send_str(json.dumps(event, ensure_ascii=False)), _SEND_TIMEOUT)
    except (ConnectionResetError, TimeoutError):
        log.info("agent %s: websocket gone", agent_id)
    finally:
        sub.close()
        phone.close()
        reader.cancel()
        with contextlib.suppress(Exception):
            await ws.close()
    return ws


async def _read(ws: web.WebSocketResponse, phone: softphone.PageLink) -> None:
    async for msg in ws:
        if msg.type == WSMsgType.TEXT:
            try:
                data: Any = json.loads(msg.data)
            except ValueError:
                continue
            if isinstance(data, dict) and data.get("type") == "ping":
                await ws.send_json({"type": "pong"})
            elif isinstance(data, dict):
                await phone.receive(data)  # the softphone's rtc_* signalling (cti.web.softphone)
        elif msg.type == WSMsgType.ERROR:
            return
