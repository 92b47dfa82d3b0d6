"""The agent page's softphone, server side: WebRTC signalling on the agent's events websocket.

A socket becomes a softphone when the page sends {"type": "rtc_register"}; from then on calls for
`browser:<agent_id>` are offered on it (rtc_offer), and what the page sends (rtc_answer, rtc_ice,
rtc_reject, rtc_hangup, rtc_hold, rtc_dtmf, rtc_transfer) goes to call control through the
cti.ports.BrowserPhones port (the app's PHONES_KEY). Sockets that never register (the desk's own,
an API client's) are not offered calls. A bad message is answered with {"type": "rtc_error",
"field", "error"} and the socket stays open; nothing a page sends is logged (SDP holds addresses).

Supervisors listen in from the admin page over plain HTTP (one offer, one answer, like WHEP):
POST /admin/api/listen {"call_id", "sdp"} -> 201 {"listen", "sdp"}; DELETE /admin/api/listen/{id}.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web

from cti.http import json_response, read_json
from cti.ports import BrowserPhones, SoftphoneError
from cti.validation import ApiError, invalid, require_object
from cti.web.auth import require_admin
from cti.web.keys import PHONES_KEY

log = logging.getLogger("cti.web.softphone")
_SEND_TIMEOUT = 5.0


class PageLink:
    """One agent websocket, as the softphone sees it."""

    def __init__(self, phones: BrowserPhones | None, agent_id: str, ws: web.WebSocketResponse) -> None:
        self.phones, self.agent_id, self.ws = phones, agent_id, ws
        self._detach: Callable[[], None] | None = None

    async def _send(self, message: dict[str, Any]) -> None:
        await asyncio.wait_for(self.ws.send_json(message), _SEND_TIMEOUT)

    async def receive(self, message: dict[str, Any]) -> None:
        """Act on an rtc_* message from the page; other types are not ours and are ignored."""
        kind = message.get("type")
        if not isinstance(kind, str) or not kind.startswith("rtc_"):
            return
        try:
            if self.phones is None:
                raise SoftphoneError("type", "this service takes no calls in the browser")
            if kind == "rtc_register":
                if self._detach is None:
                    self._detach = self.phones.attach(self.agent_id, self._send)
                await self._send({"type": "rtc_registered"})
            else:
                await self.phones.receive(self.agent_id, message)
        except SoftphoneError as exc:
            await self._error(message, exc.field, str(exc))
        except Exception:  # a bug behind the port must not close the agent's socket
            log.exception("agent %s: softphone message %s failed", self.agent_id, kind)
            await self._error(message, "type", "the service could not act on this message")

    async def _error(self, message: dict[str, Any], field: str, error: str) -> None:
        leg = message.get("leg")
        await self._send({"type": "rtc_error", "field": field, "error": error,
                          "leg": leg if isinstance(leg, str) else None})

    def close(self) -> None:
        if self._detach is not None:
            detach, self._detach = self._detach, None
            detach()


def attach(request: web.Request, agent_id: str, ws: web.WebSocketResponse) -> PageLink:
    """The softphone side of an agent's events websocket (call `close()` when it ends)."""
    return PageLink(request.app.get(PHONES_KEY), agent_id, ws)


# ---- supervisor listen-in (the admin page) ---------------------------------------------------
def _phones(request: web.Request) -> BrowserPhones:
    phones = request.app.get(PHONES_KEY)
    if phones is None:
        raise ApiError(404, "this service takes no calls in the browser", "call_id")
    return phones


async def listen_in(request: web.Request) -> web.Response:
    """POST /admin/api/listen {"call_id", "sdp"}: the supervisor page's receive-only offer ->
    {"listen", "sdp"} (the answer). Silent monitor: nobody on the call hears the supervisor."""
    require_admin(request)
    body = require_object(await read_json(request), {"call_id", "sdp"})
    call_id, sdp = body.get("call_id"), body.get("sdp")
    if not isinstance(call_id, str) or not call_id or len(call_id) > 500:
        raise invalid("call_id", "required: the Call-ID of a live call")
    if not isinstance(sdp, str) or not sdp:
        raise invalid("sdp", "required: an SDP offer that receives audio")
    try:
        listen_id, answer = await _phones(request).listen(call_id, sdp)
    except SoftphoneError as exc:
        raise ApiError(404 if exc.field == "call_id" else 422, str(exc), exc.field) from None
    log.info("a supervisor listens in on a call (listen %s)", listen_id)
    return json_response({"listen": listen_id, "sdp": answer}, status=201)


async def listen_stop(request: web.Request) -> web.Response:
    """DELETE /admin/api/listen/{id}."""
    require_admin(request)
    if not _phones(request).stop_listening(request.match_info["id"][:64]):
        raise ApiError(404, "no such listen-in", "id")
    return web.Response(status=204)
