"""Application keys of the agent side (kept apart so every web module can import them)."""

from __future__ import annotations

import weakref

from aiohttp import web

from cti.routing import AgentDesk
from cti.security import SigninThrottle

DESK_KEY = web.AppKey("cti_desk", AgentDesk)
SOCKETS_KEY = web.AppKey("cti_sockets", weakref.WeakSet[web.WebSocketResponse])
SIGNIN_KEY = web.AppKey("cti_signin_throttle", SigninThrottle)
