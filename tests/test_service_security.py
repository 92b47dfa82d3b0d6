"""Issue 10 items 3 and 4 against the running service (`voice run`) over real UDP on loopback:
a scripted caller outside [sip] trusted answers the service's digest challenges; a replayed
Authorization is refused; a password guesser is blocked after [throttle] auth_failures (default 10)
and then refused 403 even with the right password; every failure and the block are SECURITY lines.

(sipp is not the caller here: it reads only the first WWW-Authenticate and knows only MD5, and
the service offers SHA-256 first, RFC 8760.)"""

from __future__ import annotations

import socket
import time
import uuid
from pathlib import Path

import pytest

from tests.peers import HOST
from tests.peers.service import RunningService, running_service
from voice.sip.digest import Challenge, authorization
from voice.sip.message import Response, parse_message

pytestmark = pytest.mark.peer


class Caller:
    def __init__(self, svc: RunningService) -> None:
        self.svc = svc
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((HOST, 0))
        self.sock.settimeout(5)
        self.port = self.sock.getsockname()[1]
        self.ruri = f"sip:100@{HOST}:{svc.sip_port}"

    def invite(self, auth: str | None = None, call_id: str | None = None) -> Response:
        call_id = call_id or uuid.uuid4().hex
        branch = "z9hG4bK" + uuid.uuid4().hex[:12]
        sdp = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
               "m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")
        text = (f"INVITE {self.ruri} SIP/2.0\r\nVia: SIP/2.0/UDP {HOST}:{self.port};branch={branch};rport\r\n"
                f"From: <sip:alice@{HOST}>;tag={uuid.uuid4().hex[:8]}\r\nTo: <sip:100@{HOST}>\r\n"
                f"Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@{HOST}:{self.port}>\r\n"
                f"Max-Forwards: 70\r\n" + (f"Authorization: {auth}\r\n" if auth else "")
                + f"Content-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n{sdp}")
        self.sock.sendto(text.encode(), (HOST, self.svc.sip_port))
        while True:
            message = parse_message(self.sock.recv(65535))
            assert isinstance(message, Response)
            if message.call_id == call_id and message.status >= 200:
                return message

    def challenges(self) -> list[Challenge]:
        response = self.invite()
        assert response.status == 401
        return [Challenge.parse(v) for v in response.headers.get_all("WWW-Authenticate")]

    def close(self) -> None:
        self.sock.close()


def security_lines(svc: RunningService) -> list[str]:
    return [ln.split(": ", 1)[1] for ln in svc.log.splitlines() if " SECURITY " in ln]


def test_digest_replay_guessing_and_block_on_the_running_service(tmp_path: Path) -> None:
    with running_service(tmp_path / "svc", sip={"trusted": "10.0.0.0/8", "auth_users": "alice:wonderland"},
                         asr={"engine": "none"}) as svc:
        caller = Caller(svc)
        try:
            sha, md5 = caller.challenges()
            assert (sha.algorithm, md5.algorithm) == ("SHA-256", "MD5")
            good = authorization(sha, method="INVITE", uri=caller.ruri, username="alice",
                                 password="wonderland")
            answered = caller.invite(good)
            assert answered.status == 200
            # The same header again, on a new call: a replay.
            assert caller.invite(good).status == 401
            md5_good = authorization(md5, method="INVITE", uri=caller.ruri, username="alice",
                                     password="wonderland", nc=2)
            assert caller.invite(md5_good).status == 200
            # A guesser from the same address: ten wrong passwords, then the right one is refused too.
            (fresh, _) = caller.challenges()
            for n in range(10):
                guess = authorization(fresh, method="INVITE", uri=caller.ruri, username="alice",
                                      password=f"guess{n}", nc=n + 1)
                assert caller.invite(guess).status == 401
            right = authorization(fresh, method="INVITE", uri=caller.ruri, username="alice",
                                  password="wonderland", nc=20)
            refused = caller.invite(right)
            assert refused.status == 403
        finally:
            caller.close()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and len(security_lines(svc)) < 12:  # the log is written async
            time.sleep(0.1)
        lines = security_lines(svc)
        assert lines.count("SECURITY event=auth_failed src=127.0.0.1 user=alice reason=replay") == 1
        # The MD5 success cleared the count; the tenth guess then blocked the address.
        assert lines.count("SECURITY event=auth_failed src=127.0.0.1 user=alice reason=wrong_password") == 10
        assert lines.count("SECURITY event=blocked src=127.0.0.1 reason=auth_failures seconds=600") == 1
        assert len(lines) == 12  # nothing more while blocked
        assert "guess" not in svc.log and "wonderland" not in svc.log
