"""Who is asking: an API key (Bearer), an agent's session cookie, or an admin's session cookie.

Agent sessions are random tokens kept (hashed) in the database, so they work on every node.
Admin sessions are stateless: `<expiry>.<HMAC-SHA256 of it under an API key>`, so any node with
the same [http] api_keys accepts them, and removing a key from the config ends its sessions.
Cookies are HttpOnly and SameSite=Strict: scripts cannot read them, other sites cannot send them.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from cti.http import CONFIG_KEY, json_response
from cti.security import security_event
from cti.validation import ApiError
from cti.web.keys import SIGNIN_KEY

AGENT_COOKIE = "voice_agent"
ADMIN_COOKIE = "voice_admin"
ADMIN_HOURS = 12


def api_key_ok(request: web.Request) -> bool:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    given = token.strip().encode("utf-8", "replace")
    ok = False
    for key in request.app[CONFIG_KEY].http.api_keys:
        ok |= hmac.compare_digest(given, key.encode())
    return ok and scheme.lower() == "bearer"


def set_cookie(response: web.StreamResponse, request: web.Request, name: str, value: str,
               max_age: int) -> None:
    response.set_cookie(name, value, max_age=max_age, path="/", httponly=True, samesite="Strict",
                        secure=request.secure)


def _admin_mac(key: str, expiry: str) -> str:
    return hmac.new(hashlib.sha256(b"voice-admin:" + key.encode()).digest(), expiry.encode(),
                    hashlib.sha256).hexdigest()


def admin_token(api_key: str, now: float | None = None) -> str:
    expiry = str(int((now or time.time()) + ADMIN_HOURS * 3600))
    return f"{expiry}.{_admin_mac(api_key, expiry)}"


def admin_cookie_ok(request: web.Request) -> bool:
    expiry, _, mac = request.cookies.get(ADMIN_COOKIE, "").partition(".")
    if not expiry.isdigit() or int(expiry) < time.time():
        return False
    ok = False
    for key in request.app[CONFIG_KEY].http.api_keys:
        ok |= hmac.compare_digest(mac, _admin_mac(key, expiry))
    return ok


def matching_api_key(request: web.Request, given: str) -> str | None:
    for key in request.app[CONFIG_KEY].http.api_keys:
        if hmac.compare_digest(given.encode("utf-8", "replace"), key.encode()):
            return key
    return None


def require_admin(request: web.Request) -> None:
    if not (api_key_ok(request) or admin_cookie_ok(request)):
        raise ApiError(401, "sign in at /admin, or send Authorization: Bearer <API key>", "Authorization")


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def own_auth(handler: Handler) -> Handler:
    """Mark a /api/v1 handler that authenticates by itself (cookies as well as API keys)."""
    handler.own_auth = True  # type: ignore[attr-defined]
    return handler


# ---- sign-in throttling (cti/security.py) ------------------------------------------------
def signin_refusal(request: web.Request, account: str) -> web.Response | None:
    """A 429 (with Retry-After) when this source or this account is blocked for failed sign-ins."""
    wait = request.app[SIGNIN_KEY].retry_after(request.remote or "-", account, time.monotonic())
    if not wait:
        return None
    body = ApiError(429, f"too many failed sign-ins: try again in {wait} s").body()
    return json_response(body, status=429, headers={"Retry-After": str(wait)})


def signin_failed(request: web.Request, account: str) -> None:
    src = request.remote or "-"
    security_event("signin_failed", src, account=account)
    request.app[SIGNIN_KEY].failed(src, account, time.monotonic())


def signin_succeeded(request: web.Request, account: str) -> None:
    request.app[SIGNIN_KEY].succeeded(request.remote or "-", account)
