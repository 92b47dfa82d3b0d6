"""Application keys of the agent side (kept apart so every web module can import them).

Set by the service on the application before `AppRunner.setup()` (the desk is built at startup):
- `PHONES_KEY`: call control's `BrowserPhones` (cti.ports), the agents' browser softphones;
  without it a page's rtc_register is answered with rtc_error;
- `CONNECTOR_KEY`: call control's `AgentConnector` (cti.ports); without it queue transfers fail
  with reason "no_connector" (an API-only process);
- `VOICE_KEY`: the TTS (`render(text) -> 8 kHz int16`) that tells waiting callers their position;
  without it they hear the music only.
- `DIALER_KEY`: call control's `OutboundDialer` (cti.ports), which places callbacks; without it
  callbacks are stored (the API, waiting callers) but placed by a node that has one.
After startup the node's `AgentDesk` is under `DESK_KEY`, its `CallbackDesk` under `CALLBACKS_KEY`,
its `ClickToCall` (agents' calls from the page, through the same dialer) under `CLICK_KEY`.
"""

from __future__ import annotations

import weakref

from aiohttp import web

from cti.callback_desk import CallbackDesk
from cti.click_to_call import ClickToCall
from cti.ports import AgentConnector, BrowserPhones, FlowCatalog, OutboundDialer
from cti.routing import AgentDesk
from cti.security import SigninThrottle
from cti.waiting import SpeechRenderer

DESK_KEY = web.AppKey("cti_desk", AgentDesk)
SOCKETS_KEY = web.AppKey("cti_sockets", weakref.WeakSet[web.WebSocketResponse])
CONNECTOR_KEY = web.AppKey("cti_connector", AgentConnector)
VOICE_KEY = web.AppKey("cti_voice", SpeechRenderer)
SIGNIN_KEY = web.AppKey("cti_signin_throttle", SigninThrottle)
FLOWS_KEY = web.AppKey("cti_flows", FlowCatalog)
PHONES_KEY = web.AppKey("cti_browser_phones", BrowserPhones)
DIALER_KEY = web.AppKey("cti_dialer", OutboundDialer)
CALLBACKS_KEY = web.AppKey("cti_callbacks", CallbackDesk)
CLICK_KEY = web.AppKey("cti_click_to_call", ClickToCall)
