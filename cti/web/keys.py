"""Application keys of the agent side (kept apart so every web module can import them)."""

from __future__ import annotations

import weakref

from aiohttp import web

from cti.ports import BrowserPhones
from cti.routing import AgentDesk

DESK_KEY = web.AppKey("cti_desk", AgentDesk)
SOCKETS_KEY = web.AppKey("cti_sockets", weakref.WeakSet[web.WebSocketResponse])
# Call control's browser softphones (set by the service when it runs call control; absent otherwise).
PHONES_KEY = web.AppKey("cti_browser_phones", BrowserPhones)
