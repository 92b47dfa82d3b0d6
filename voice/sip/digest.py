"""HTTP Digest authentication as SIP uses it (RFC 3261 22.4, RFC 2617, RFC 7616, RFC 8760).

Client side: `Challenge.parse` + `authorization`. Server side: `DigestVerifier`, whose nonces
are HMAC-signed timestamps, so it keeps no per-caller state. Passwords never reach a repr.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

__all__ = ["Challenge", "DigestError", "DigestVerifier", "authorization", "parse_auth_params"]


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
    """Server side of Digest: issues stateless nonces and checks credentials against `users`."""

    def __init__(
        self,
        realm: str,
        users: Mapping[str, str],
        *,
        secret: bytes | None = None,
        nonce_ttl: float = 300.0,
        algorithm: str = "MD5",
    ) -> None:
        _hash_for(algorithm)
        self.realm = realm
        self._users = users
        self._secret = secret if secret is not None else secrets.token_bytes(32)
        self.nonce_ttl = nonce_ttl
        self.algorithm = algorithm
        self.last_stale = False  # set by verify(): the credentials were right but the nonce had expired

    def __repr__(self) -> str:
        return f"DigestVerifier(realm={self.realm!r}, users={len(self._users)}, algorithm={self.algorithm})"

    def _sign(self, stamp: str) -> str:
        return hmac.new(self._secret, f"{stamp}:{self.realm}".encode(), hashlib.sha256).hexdigest()[:32]

    def make_nonce(self, now: float) -> str:
        stamp = f"{int(now * 1000):x}"
        return f"{stamp}.{self._sign(stamp)}"

    def challenge(self, now: float, stale: bool = False) -> str:
        """A WWW-Authenticate (or Proxy-Authenticate) value with a fresh nonce and qop="auth"."""
        value = (
            f"Digest realm={_quote(self.realm)}, nonce={_quote(self.make_nonce(now))}, "
            f'algorithm={self.algorithm}, qop="auth"'
        )
        return value + (", stale=true" if stale else "")

    def _nonce_time(self, nonce: str) -> float | None:
        stamp, dot, sig = nonce.partition(".")
        if not dot or not stamp or len(stamp) > 16 or not hmac.compare_digest(sig, self._sign(stamp)):
            return None
        try:
            return int(stamp, 16) / 1000.0
        except ValueError:
            return None

    def verify(self, header_value: str, *, method: str, now: float) -> str | None:
        """The authenticated username, or None (wrong, forged, stale or garbage credentials)."""
        self.last_stale = False
        try:
            scheme, p = parse_auth_params(header_value)
            if scheme.lower() != "digest" or p.get("realm") != self.realm:
                return None
            username, nonce, uri, given = p["username"], p["nonce"], p["uri"], p["response"]
            algorithm = p.get("algorithm", "MD5")
            if algorithm.upper() != self.algorithm.upper():
                return None
            issued = self._nonce_time(nonce)
            password = self._users.get(username)
            if issued is None or password is None or issued > now + 1.0:
                return None
            qop = p.get("qop")
            if qop is not None and (qop != "auth" or "nc" not in p or "cnonce" not in p):
                return None
            expected = _response(
                algorithm,
                (username, self.realm, password),
                nonce,
                p.get("cnonce"),
                qop,
                p.get("nc"),
                method,
                uri,
            )
            if not hmac.compare_digest(expected, given.lower()):
                return None
            if now - issued > self.nonce_ttl:
                self.last_stale = True  # RFC 7616 3.3: re-challenge with stale=true
                return None
            return username
        except (KeyError, ValueError, TypeError):
            return None
