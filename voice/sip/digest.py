"""HTTP Digest authentication as SIP uses it (RFC 3261 22.4, RFC 2617, RFC 7616, RFC 8760).

Client side: `Challenge.parse` + `authorization`. Server side: `DigestVerifier`, whose nonces
are HMAC-signed timestamps, so it keeps no per-caller state. Passwords never reach a repr.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from voice.sip.uri import SipUri

__all__ = ["Challenge", "DigestError", "DigestVerifier", "authorization", "parse_auth_params",
           "same_resource"]


class DigestError(ValueError):
    """A challenge or credentials header that cannot be used."""


_PARAM_RE = re.compile(r'\s*([A-Za-z0-9\-_.]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,"]*)\s*(?:,|$)', re.S)
_HASHES: dict[str, Callable[[bytes], str]] = {
    "MD5": lambda b: hashlib.md5(b, usedforsecurity=False).hexdigest(),
    "SHA-256": lambda b: hashlib.sha256(b).hexdigest(),
    "SHA-512-256": lambda b: hashlib.new("sha512_256", b).hexdigest(),
}


def parse_auth_params(value: str) -> tuple[str, dict[str, str]]:
    """Split 'Digest a=b, c="d"' into ('Digest', {'a': 'b', 'c': 'd'}) (names lower-cased, unquoted)."""
    scheme, _, rest = value.strip().partition(" ")
    if not scheme:
        raise DigestError("empty authentication header")
    params: dict[str, str] = {}
    pos = 0
    rest = rest.strip()
    while pos < len(rest):
        m = _PARAM_RE.match(rest, pos)
        if m is None or m.end() == pos:
            raise DigestError("malformed authentication parameters")
        name, raw = m.group(1).lower(), m.group(2)
        if raw.startswith('"'):
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        params[name] = raw
        pos = m.end()
    return scheme, params


def _hash_for(algorithm: str) -> Callable[[bytes], str]:
    base = algorithm.upper().removesuffix("-SESS")
    if base not in _HASHES:
        raise DigestError(f"unsupported digest algorithm {algorithm!r}")
    return _HASHES[base]


def _h(fn: Callable[[bytes], str], *parts: str) -> str:
    return fn(":".join(parts).encode("utf-8"))


def _response(
    algorithm: str, ha1_parts: tuple[str, str, str], nonce: str, cnonce: str | None, qop: str | None,
    nc: str | None, method: str, uri: str, body: bytes = b"",
) -> str:  # fmt: skip
    """RFC 2617 3.2.2.1 / RFC 7616 3.4.1 request-digest."""
    fn = _hash_for(algorithm)
    ha1 = _h(fn, *ha1_parts)
    if algorithm.upper().endswith("-SESS"):
        ha1 = _h(fn, ha1, nonce, cnonce or "")
    ha2 = _h(fn, method, uri) if qop != "auth-int" else _h(fn, method, uri, fn(body))
    if qop in ("auth", "auth-int"):
        return _h(fn, ha1, nonce, nc or "", cnonce or "", qop, ha2)
    return _h(fn, ha1, nonce, ha2)  # RFC 2069 compatibility: no qop


@dataclass
class Challenge:
    """A WWW-Authenticate / Proxy-Authenticate Digest challenge."""

    realm: str
    nonce: str
    opaque: str | None = None
    algorithm: str = "MD5"
    qop: list[str] = field(default_factory=list)
    stale: bool = False

    @classmethod
    def parse(cls, header_value: str) -> Challenge:
        scheme, params = parse_auth_params(header_value)
        if scheme.lower() != "digest":
            raise DigestError(f"not a Digest challenge: {scheme!r}")
        if "realm" not in params or "nonce" not in params:
            raise DigestError("challenge lacks realm or nonce")
        qop = [q.strip().lower() for q in params.get("qop", "").split(",") if q.strip()]
        return cls(
            realm=params["realm"],
            nonce=params["nonce"],
            opaque=params.get("opaque"),
            algorithm=params.get("algorithm", "MD5"),
            qop=qop,
            stale=params.get("stale", "").lower() == "true",
        )


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def authorization(
    challenge: Challenge,
    *,
    method: str,
    uri: str,
    username: str,
    password: str,
    nc: int = 1,
    cnonce: str | None = None,
    body: bytes = b"",
) -> str:
    """The Authorization / Proxy-Authorization value answering `challenge` (qop=auth when offered)."""
    qop: str | None = None
    if "auth" in challenge.qop:
        qop = "auth"
    elif "auth-int" in challenge.qop:
        qop = "auth-int"
    elif challenge.qop:
        raise DigestError(f"no supported qop in {challenge.qop}")
    if qop is not None or challenge.algorithm.upper().endswith("-SESS"):
        cnonce = cnonce or secrets.token_hex(8)
    nc_text = f"{nc:08x}"
    response = _response(
        challenge.algorithm, (username, challenge.realm, password), challenge.nonce, cnonce, qop,
        nc_text, method, uri, body,
    )  # fmt: skip
    parts = [
        f"username={_quote(username)}",
        f"realm={_quote(challenge.realm)}",
        f"nonce={_quote(challenge.nonce)}",
        f"uri={_quote(uri)}",
        f"response={_quote(response)}",
        f"algorithm={challenge.algorithm}",
    ]
    if cnonce is not None:
        parts.append(f"cnonce={_quote(cnonce)}")
    if challenge.opaque is not None:
        parts.append(f"opaque={_quote(challenge.opaque)}")
    if qop is not None:
        parts += [f"qop={qop}", f"nc={nc_text}"]
    return "Digest " + ", ".join(parts)


class DigestVerifier:
    """Server side of Digest (RFC 7616 3.3-3.5): issues nonces it can verify and checks credentials.

    Nonces are `<issued ms>.<HMAC>`: any nonce this verifier signed is recognized without a
    table, and one older than `nonce_ttl` is stale. What it remembers is which `nc` values each
    nonce has been used with (only after a correct response, so only a caller who knows a password
    adds entries), so the same Authorization replayed in a new request fails (RFC 7616 3.4.5).
    The table is bounded: when full, the oldest nonces are forgotten and every nonce issued up to
    then counts as stale, so forgetting never lets a replay through.
    """

    MAX_NONCES = 10000  # nonces remembered with their nc values
    MAX_NC_PER_NONCE = 256  # requests one nonce may authenticate before the client gets a new one
    DEFAULT_ALGORITHMS = ("SHA-256", "MD5")  # RFC 8760 2: most preferred first; MD5 for old phones

    def __init__(
        self,
        realm: str,
        users: Mapping[str, str],
        *,
        secret: bytes | None = None,
        nonce_ttl: float = 300.0,
        algorithm: str | None = None,
        algorithms: Sequence[str] | None = None,
    ) -> None:
        chosen = tuple(algorithms) if algorithms else (algorithm,) if algorithm else self.DEFAULT_ALGORITHMS
        for name in chosen:
            _hash_for(name)
        self.realm = realm
        self._users = users
        self._secret = secret if secret is not None else secrets.token_bytes(32)
        self.nonce_ttl = nonce_ttl
        self.algorithms = chosen
        self.algorithm = chosen[0]
        self._dummy_password = secrets.token_hex(16)  # hashed for unknown users, so they cost the same
        self._used: OrderedDict[str, set[str]] = OrderedDict()  # nonce -> nc values seen
        self._floor = -1.0  # nonces issued at or before this time count as stale (table overflowed)
        self.last_stale = False  # set by verify(): the credentials were right but the nonce had expired
        self.last_reason = ""  # set by verify() on failure, for the security log (never sent to the peer)

    def __repr__(self) -> str:
        return (f"DigestVerifier(realm={self.realm!r}, users={len(self._users)}, "
                f"algorithms={','.join(self.algorithms)})")

    def _sign(self, stamp: str) -> str:
        return hmac.new(self._secret, f"{stamp}:{self.realm}".encode(), hashlib.sha256).hexdigest()[:32]

    def make_nonce(self, now: float) -> str:
        stamp = f"{int(now * 1000):x}"
        return f"{stamp}.{self._sign(stamp)}"

    def challenges(self, now: float, stale: bool = False) -> list[str]:
        """WWW-Authenticate (or Proxy-Authenticate) values, one per algorithm, most preferred first
        (RFC 8760 2), sharing one fresh nonce, each with qop="auth"."""
        nonce = self.make_nonce(now)
        suffix = ", stale=true" if stale else ""
        return [
            f'Digest realm={_quote(self.realm)}, nonce={_quote(nonce)}, algorithm={name}, qop="auth"{suffix}'
            for name in self.algorithms
        ]

    def challenge(self, now: float, stale: bool = False) -> str:
        """The most preferred challenge alone (see `challenges`)."""
        return self.challenges(now, stale)[0]

    def _nonce_time(self, nonce: str) -> float | None:
        stamp, dot, sig = nonce.partition(".")
        if not dot or not stamp or len(stamp) > 16 or not hmac.compare_digest(sig, self._sign(stamp)):
            return None
        try:
            return int(stamp, 16) / 1000.0
        except ValueError:
            return None

    def _fail(self, reason: str, stale: bool = False) -> None:
        self.last_reason = reason
        self.last_stale = stale

    def verify(self, header_value: str, *, method: str, now: float, uri: str | None = None) -> str | None:
        """The authenticated username, or None (wrong, forged, stale, replayed or garbage credentials).

        `uri`: the Request-URI; the credentials' `uri=` must name the same resource (RFC 7616
        3.4.6), so a response computed for another request cannot be reused for this one."""
        self.last_stale = False
        self.last_reason = ""
        try:
            scheme, p = parse_auth_params(header_value)
            if scheme.lower() != "digest" or p.get("realm") != self.realm:
                self._fail("bad_realm")
                return None
            username, nonce, cred_uri, given = p["username"], p["nonce"], p["uri"], p["response"]
            algorithm = p.get("algorithm", "MD5")
            if algorithm.upper() not in (a.upper() for a in self.algorithms):
                self._fail("bad_algorithm")
                return None
            issued = self._nonce_time(nonce)
            if issued is None or issued > now + 1.0:
                self._fail("bad_nonce")
                return None
            qop = p.get("qop")
            if qop is not None and (qop != "auth" or "nc" not in p or "cnonce" not in p):
                self._fail("bad_qop")
                return None
            nc = p.get("nc", "") if qop is not None else ""
            if qop is not None and (len(nc) != 8 or any(c not in "0123456789abcdefABCDEF" for c in nc)):
                self._fail("bad_nc")
                return None
            known = username in self._users
            # An unknown user is hashed with a throwaway password: the same work, the same answer.
            password = self._users[username] if known else self._dummy_password
            expected = _response(algorithm, (username, self.realm, password), nonce, p.get("cnonce"), qop,
                                 p.get("nc"), method, cred_uri)
            if not hmac.compare_digest(expected, given.lower()) or not known:
                self._fail("wrong_password" if known else "unknown_user")
                return None
            if now - issued > self.nonce_ttl or issued <= self._floor:
                self._fail("stale_nonce", stale=True)  # RFC 7616 3.3: re-challenge with stale=true
                return None
            if uri is not None and not same_resource(cred_uri, uri):
                self._fail("uri_mismatch")
                return None
            return username if self._first_use(nonce, nc.lower(), issued, now) else None
        except (KeyError, ValueError, TypeError):
            self._fail("malformed")
            return None

    def _first_use(self, nonce: str, nc: str, issued: float, now: float) -> bool:
        """Record (nonce, nc); False when it was used before (a replay)."""
        self._prune(now)
        seen = self._used.get(nonce)
        if seen is None:
            seen = self._used[nonce] = set()
            while len(self._used) > self.MAX_NONCES:
                old, _ = self._used.popitem(last=False)
                self._floor = max(self._floor, self._nonce_time(old) or self._floor)
        if nc in seen:
            self._fail("replay")
            return False
        if len(seen) >= self.MAX_NC_PER_NONCE:
            self._fail("stale_nonce", stale=True)  # used up: the client gets a fresh nonce
            return False
        seen.add(nc)
        return True

    def _prune(self, now: float) -> None:
        """Forget nonces past their lifetime: verify() calls them stale without the table."""
        while self._used:
            nonce = next(iter(self._used))
            issued = self._nonce_time(nonce)
            if issued is not None and now - issued <= self.nonce_ttl:
                break
            self._used.popitem(last=False)

    @property
    def remembered(self) -> int:
        """Nonces in the replay table (bounded by MAX_NONCES)."""
        return len(self._used)


def same_resource(given: str, request_uri: str) -> bool:
    """Whether a digest `uri=` names the Request-URI: the same string, or the same SIP URI after
    RFC 3261 19.1.4 comparison of scheme, user, host and port (case-insensitive host)."""
    if given == request_uri:
        return True
    try:
        a, b = SipUri.parse(given), SipUri.parse(request_uri)
    except ValueError:  # SipParseError included
        return False
    return (a.scheme, a.user, a.host.lower(), a.port, a.opaque) == (b.scheme, b.user, b.host.lower(), b.port,
                                                                   b.opaque)
