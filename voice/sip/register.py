"""Registering the service to an upstream registrar/PBX (RFC 3261 section 10), sans-IO.

Digest auth (RFC 2617/7616, qop=auth) on 401/407; the binding is refreshed before
it expires (at 80% of the granted time, at least 5 s early); failures retry with
back-off. `stop()` removes the binding (Expires: 0).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from voice.sip import events as ev
from voice.sip.digest import Challenge, authorization
from voice.sip.message import Headers, NameAddr, Request, Response, SipUri, new_call_id, new_tag
from voice.sip.timers import Timer
from voice.sip.transaction import Address

if TYPE_CHECKING:
    from voice.sip.core import SipCore


class Registration:
    def __init__(self, core: SipCore, *, registrar: str, username: str, password: str,
                 expires: int = 3600, domain: str | None = None, transport: str = "udp") -> None:
        self.core = core
        self.registrar = SipUri.parse(registrar if ":" in registrar else f"sip:{registrar}")
        self.username = username
        self._password = password
        self.expires = expires
        self.domain = domain or self.registrar.host
        self.transport = transport
        self.call_id = new_call_id(core.identity.host)
        self.tag = new_tag()
        self.cseq = 0
        self.registered = False
        self.granted = 0
        self.last_status: int | None = None
        self._timer: Timer | None = None
        self._auth_tries = 0
        self._stopping = False

    def __repr__(self) -> str:  # never show the password
        return f"<Registration {self.username}@{self.domain} registered={self.registered}>"

    @property
    def peer(self) -> Address:
        port = self.registrar.port or 5060
        return Address(self.registrar.host, port, self.transport)

    def start(self, now: float) -> None:
        self._stopping = False
        self._auth_tries = 0
        self._send(now, self.expires)

    def stop(self, now: float) -> None:
        self._stopping = True
        if self._timer is not None:
            self._timer.cancel()
        if self.registered:
            self._send(now, 0)

    def _request(self, expires: int, auth: tuple[str, str] | None) -> Request:
        self.cseq += 1
        aor = f"sip:{self.username}@{self.domain}"
        headers = Headers()
        headers.add("Max-Forwards", "70")
        headers.add("From", f"<{aor}>;tag={self.tag}")
        headers.add("To", f"<{aor}>")
        headers.add("Call-ID", self.call_id)
        headers.add("CSeq", f"{self.cseq} REGISTER")
        headers.add("Contact", self.core.identity.contact(self.transport))
        headers.add("Expires", str(expires))
        headers.add("User-Agent", self.core.identity.user_agent)
        if auth is not None:
            headers.add(*auth)
        uri = f"sip:{self.registrar.host}" + (f":{self.registrar.port}" if self.registrar.port else "")
        return Request(method="REGISTER", uri=uri, headers=headers)

    def _send(self, now: float, expires: int, auth: tuple[str, str] | None = None) -> None:
        request = self._request(expires, auth)
        self.core.send_request(request, self.peer, now, lambda r: self._on_response(r, request, expires))

    def _on_response(self, response: Response | None, request: Request, expires: int) -> None:
        if response is not None and response.status < 200:
            return
        status = response.status if response is not None else 408
        self.last_status = status
        if response is not None and status in (401, 407) and self._auth_tries < 2:
            header = "WWW-Authenticate" if status == 401 else "Proxy-Authenticate"
            value = response.headers.get(header)
            if value:
                self._auth_tries += 1
                challenge = Challenge.parse(value)
                credentials = authorization(challenge, method="REGISTER", uri=request.uri,
                                            username=self.username, password=self._password,
                                            nc=self._auth_tries)
                name = "Authorization" if status == 401 else "Proxy-Authorization"
                self._send(self.core.now, expires, (name, credentials))
                return
        self._auth_tries = 0
        if 200 <= status < 300:
            self.granted = self._granted(response, expires) if response is not None else expires
            self.registered = self.granted > 0
            if self.registered and not self._stopping:
                refresh = max(min(self.granted * 0.8, self.granted - 5), 1)
                self._schedule(refresh)
        else:
            self.registered = False
            if not self._stopping:
                self._schedule(30.0 if status != 423 else 1.0)
        self.core.emit(ev.RegistrationChanged(registration=self, registered=self.registered,
                                              status=status, expires=self.granted))

    def _schedule(self, delay: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.core.timers.schedule(self.core.now + delay,
                                                lambda t: self._send(t, self.expires), "register")

    def _granted(self, response: Response, asked: int) -> int:
        """10.2.4: the registrar's expiry for our binding (Contact param, else Expires header)."""
        mine = self.core.identity.contact(self.transport)
        mine_uri = NameAddr.parse(mine).uri
        for value in response.headers.get_all("Contact"):
            try:
                contact = NameAddr.parse(value)
            except ValueError:
                continue
            if contact.uri.host == mine_uri.host and contact.uri.port == mine_uri.port:
                exp = contact.params.get("expires")
                if exp and exp.isdigit():
                    return int(exp)
        header = response.headers.get("Expires")
        return int(header) if header and header.strip().isdigit() else asked
