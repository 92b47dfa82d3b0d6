"""RFC 3261 section 12 dialogs (UAS side), sans-IO.

A Dialog holds the identifiers and sequence state of one call and builds the
requests we send inside it (BYE, REFER, re-INVITE): Request-URI = remote target,
Route = route set (12.2.1.1), CSeq strictly increasing (12.2.1.1), and checks the
CSeq of requests the peer sends (12.2.2: lower than the last one gets 500).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from voice.sip.message import Headers, NameAddr, Request, SipUri
from voice.sip.transaction import Address

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, REFER, NOTIFY"


@dataclass(kw_only=True)
class Dialog:
    call_id: str
    local_tag: str
    remote_tag: str
    local_uri: str  # To URI of the INVITE (our identity as the caller addressed it)
    remote_uri: str  # From URI of the INVITE
    remote_display: str | None
    remote_target: str  # Contact of the peer
    route_set: list[str] = field(default_factory=list)
    remote_seq: int = 0
    local_seq: int = field(default_factory=lambda: random.randint(1, 2**20))
    peer: Address  # where in-dialog requests go
    contact: str  # our Contact
    user_agent: str = ""

    @classmethod
    def from_invite(cls, invite: Request, *, local_tag: str, peer: Address, contact: str,
                    user_agent: str = "") -> Dialog:
        """12.1.1: the UAS builds its dialog state from the INVITE it answers."""
        contacts = invite.headers.get_all("Contact")
        remote_target = str(NameAddr.parse(contacts[0]).uri) if contacts else str(invite.from_.uri)
        return cls(
            call_id=invite.call_id,
            local_tag=local_tag,
            remote_tag=invite.from_.tag or "",
            local_uri=str(invite.to.uri),
            remote_uri=str(invite.from_.uri),
            remote_display=invite.from_.display,
            remote_target=remote_target,
            # 12.1.1: the route set is the Record-Route list in order.
            route_set=invite.headers.get_all("Record-Route"),
            remote_seq=invite.cseq.seq,
            peer=peer,
            contact=contact,
            user_agent=user_agent,
        )

    def accept_remote_cseq(self, request: Request) -> bool:
        """12.2.2: a request with a lower CSeq than the last is out of order."""
        seq = request.cseq.seq
        if request.method in ("ACK", "CANCEL"):
            return True
        if seq <= self.remote_seq:
            return False
        self.remote_seq = seq
        return True

    def update_target(self, request: Request) -> None:
        """12.2.2: a target refresh request (re-INVITE) may change the remote target."""
        contacts = request.headers.get_all("Contact")
        if contacts:
            self.remote_target = str(NameAddr.parse(contacts[0]).uri)

    def create_request(self, method: str, *, body: bytes = b"", content_type: str | None = None,
                       extra: tuple[tuple[str, str], ...] = ()) -> Request:
        """12.2.1.1: a request within the dialog. Via is added by the core when sent."""
        if method != "ACK":
            self.local_seq += 1
        headers = Headers()
        uri = self.remote_target
        routes = list(self.route_set)
        if routes:
            first = NameAddr.parse(routes[0]).uri
            if "lr" not in first.params:
                # Strict router (RFC 2543): it goes in the Request-URI, the target at the end.
                uri = str(first)
                routes = [*routes[1:], f"<{self.remote_target}>"]
        for route in routes:
            headers.add("Route", route)
        headers.add("Max-Forwards", "70")
        headers.add("From", f"<{self.local_uri}>;tag={self.local_tag}")
        to = f"<{self.remote_uri}>;tag={self.remote_tag}"
        if self.remote_display:
            to = f'"{self.remote_display}" ' + to
        headers.add("To", to)
        headers.add("Call-ID", self.call_id)
        headers.add("CSeq", f"{self.local_seq} {method}")
        headers.add("Contact", self.contact)
        if self.user_agent:
            headers.add("User-Agent", self.user_agent)
        for name, value in extra:
            headers.add(name, value)
        if body:
            headers.add("Content-Type", content_type or "application/sdp")
        return Request(method=method, uri=uri, headers=headers, body=body)

    def next_hop(self) -> Address:
        """Where to send in-dialog requests: the first route, else the remote target.

        Over a connection-oriented transport the call's own connection is reused.
        """
        target = NameAddr.parse(self.route_set[0]).uri if self.route_set else SipUri.parse(self.remote_target)
        transport = (target.params.get("transport") or self.peer.transport).lower()
        if transport == self.peer.transport and self.peer.reliable:
            return self.peer
        port = target.port or (5061 if target.scheme == "sips" else 5060)
        return Address(target.host.strip("[]"), port, transport if transport in ("udp", "tcp") else "udp")
