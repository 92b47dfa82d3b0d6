"""Every answered call leaves exactly one record, through the real service and real sipp callers.

- a burst of calls that hang up right after the ACK (the BYE races the answer path): as many
  completed voice interactions as sipp counted answered calls, none merged;
- several calls reusing one Call-ID (each with its own From tag): one record each;
- an INVITE without SDP (delayed offer): our offer in the 200, the answer from the ACK, media;
- SIGTERM drains: new calls get 503 with Retry-After, the call in progress goes on, then hears
  the goodbye and is ended; its interaction and its IVR record both say `shutdown`.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from tests.peers import HOST, free_port, wait_for
from tests.peers.rtp import RtpEndpoint, heard_audio, rms
from tests.peers.service import RunningService, running_service
from tests.peers.sipp import run_sipp, sipp_background

pytestmark = [pytest.mark.peer, pytest.mark.timeout(180)]

KEYS_ONLY = {"engine": "none"}


def voice_rows(svc: RunningService) -> list[dict[str, Any]]:
    with sqlite3.connect(svc.workdir / "voice.db") as db:
        db.row_factory = sqlite3.Row
        rows = db.execute("SELECT id, call_id, status, outcome, disposition, idempotency_key, metadata, ivr "
                          "FROM interactions WHERE channel = 'voice'").fetchall()
    return [dict(r) for r in rows]


def invite_without_sdp_probe(port: int, call_id: str) -> str:
    """A raw INVITE over UDP; returns the first final status line (skipping 1xx)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind((HOST, 0))
        sock.settimeout(3)
        lport = sock.getsockname()[1]
        msg = (f"INVITE sip:100@{HOST}:{port} SIP/2.0\r\n"
               f"Via: SIP/2.0/UDP {HOST}:{lport};branch=z9hG4bKdrain{lport};rport\r\n"
               "Max-Forwards: 70\r\n"
               f"From: <sip:+15550199@{HOST}>;tag=drain{lport}\r\n"
               f"To: <sip:100@{HOST}:{port}>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\n"
               f"Contact: <sip:probe@{HOST}:{lport}>\r\nContent-Length: 0\r\n\r\n")
        sock.sendto(msg.encode(), (HOST, port))
        while True:
            data = sock.recv(65535).decode(errors="replace")
            status = data.split("\r\n", 1)[0]
            if not status.startswith("SIP/2.0 1"):
                return data
    finally:
        sock.close()


def test_a_burst_of_calls_hanging_up_at_once_leaves_one_record_each(tmp_path: Path) -> None:
    # (loopback exempt from the per-source INVITE rate: this is about records, not throttling)
    with running_service(tmp_path, asr=KEYS_ONLY, rtp_pairs=200, sip={"t1_ms": "100"},
                         throttle={"exempt": "127.0.0.0/8"}) as svc:
        # sipp's built-in UAC: INVITE, 200, ACK and BYE at once (no pause), 300 calls at 100/s.
        result = run_sipp("uac", svc.sip_address, workdir=tmp_path / "sipp", calls=300, rate=100,
                          limit=100, timeout=90, service="100", media_port=free_port(tcp=False, count=8))
        assert result.successful > 0, result.describe()
        wait_for(lambda: all(r["status"] == "completed" for r in voice_rows(svc)), 30, "records completed")
        rows = voice_rows(svc)
    # sipp's message 4 is the 200 to its INVITE: every call it saw answered has its one record
    answered = result.counts.get("4_200_Recv", 0)
    assert answered >= result.successful > 250, result.describe()
    assert len(rows) == answered, (len(rows), answered, result.describe())
    assert len({r["idempotency_key"] for r in rows}) == len(rows)
    assert len({r["call_id"] for r in rows}) == len(rows)  # nothing merged into another call's record
    assert all(r["status"] == "completed" for r in rows)


SDP = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       "m=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
       "a=sendrecv\r\n")


def raw_call(sip_port: int, call_id: str, from_tag: str, rtp_port: int,
             caller: str | None = None) -> list[str]:
    """A minimal UAC over UDP: INVITE, ACK the 200, BYE, and the status lines it got."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((HOST, 0))
    sock.settimeout(5)
    lport = sock.getsockname()[1]
    caller = caller or f"+1555010{lport % 1000:03d}"
    statuses: list[str] = []

    def request(method: str, cseq: int, to_tag: str = "", body: str = "") -> None:
        branch = f"z9hG4bK{from_tag}{method}{cseq}"
        to = f"<sip:100@{HOST}:{sip_port}>" + (f";tag={to_tag}" if to_tag else "")
        msg = (f"{method} sip:100@{HOST}:{sip_port} SIP/2.0\r\n"
               f"Via: SIP/2.0/UDP {HOST}:{lport};branch={branch};rport\r\nMax-Forwards: 70\r\n"
               f"From: <sip:{caller}@{HOST}>;tag={from_tag}\r\nTo: {to}\r\n"
               f"Call-ID: {call_id}\r\nCSeq: {cseq} {method}\r\nContact: <sip:uac@{HOST}:{lport}>\r\n"
               + ("Content-Type: application/sdp\r\n" if body else "")
               + f"Content-Length: {len(body)}\r\n\r\n{body}")
        sock.sendto(msg.encode(), (HOST, sip_port))

    def final(method: str) -> str:
        while True:
            data = sock.recv(65535).decode(errors="replace")
            head = data.split("\r\n", 1)[0]
            cseq = data.split("\r\nCSeq:", 1)[1].split("\r\n", 1)[0] if "\r\nCSeq:" in data else ""
            provisional = head.startswith("SIP/2.0 1")
            if data.startswith("SIP/2.0 ") and cseq.endswith(f" {method}") and not provisional:
                statuses.append(head)
                return data
            if data.startswith("BYE "):  # the service hung up first: answer it
                statuses.append("BYE from service")

    try:
        request("INVITE", 1, body=SDP.format(port=rtp_port))
        answer = final("INVITE")
        to_tag = answer.split("\r\nTo:", 1)[1].split("\r\n", 1)[0].split("tag=", 1)[1].strip()
        request("ACK", 1, to_tag)
        time.sleep(0.3)
        request("BYE", 2, to_tag)
        final("BYE")
    finally:
        sock.close()
    return statuses


def test_calls_reusing_one_call_id_each_have_their_own_record(tmp_path: Path) -> None:
    with running_service(tmp_path, asr=KEYS_ONLY, sip={"t1_ms": "100"}) as svc:
        # five calls, one after the other, all with the same Call-ID and each with its own From tag
        # (a buggy UA, or another caller behind a proxy that reuses ids): sipp cannot, a raw UAC can
        for n in range(5):
            statuses = raw_call(svc.sip_port, "same-call-id@buggy.example", f"uac{n}x", free_port(tcp=False),
                                caller=f"+1555010{n:03d}")  # five callers (not from the port: may repeat)
            assert statuses[0] == "SIP/2.0 200 OK" and statuses[-1] == "SIP/2.0 200 OK", statuses
        wait_for(lambda: [r["status"] for r in voice_rows(svc)] == ["completed"] * 5, 30,
                 "five completed records")
        rows = voice_rows(svc)
    assert {r["call_id"] for r in rows} == {"same-call-id@buggy.example"}
    assert len({r["idempotency_key"] for r in rows}) == 5  # the dialog's tags make each one distinct
    assert len({json.loads(r["metadata"])["caller"] for r in rows}) == 5  # nobody's record overwritten
    node = json.loads(rows[0]["metadata"])["node"]
    assert all(r["idempotency_key"].startswith(f"call:{node}:same-call-id@buggy.example;uac") for r in rows)


def test_delayed_offer_gets_our_offer_in_the_200_and_media_after_the_ack(tmp_path: Path) -> None:
    with running_service(tmp_path, asr=KEYS_ONLY) as svc, \
            RtpEndpoint(free_port(tcp=False, count=2)) as caller_ep:
        result = run_sipp("delayed_offer.xml", svc.sip_address, workdir=tmp_path / "sipp", timeout=30,
                          service="100", keys={"rtp_port": caller_ep.port},
                          replace={'timeout="30000"': 'timeout="3000"'},
                          media_port=free_port(tcp=False, count=8))
        assert result.ok, result.describe()  # the 200 carried an m=audio offer (checked by sipp)
        heard = heard_audio(caller_ep.received)
        assert len(heard) > 8000 and rms(heard) > 300  # the greeting reached the port in our ACK's answer
        wait_for(lambda: [r["status"] for r in voice_rows(svc)] == ["completed"], 20, "the call's record")


def test_sigterm_drains_then_says_goodbye_and_records_shutdown(tmp_path: Path) -> None:
    with running_service(tmp_path, asr=KEYS_ONLY, sip={"drain_timeout": "3", "t1_ms": "100"}) as svc, \
            RtpEndpoint(free_port(tcp=False, count=2)) as caller_ep, \
            sipp_background("listen_call.xml", svc.sip_address, workdir=tmp_path / "sipp", timeout=40,
                            service="100", keys={"rtp_port": caller_ep.port}, calls=1,
                            replace={'timeout="30000"': 'timeout="25000"'}) as caller:
        wait_for(lambda: len(voice_rows(svc)) == 1, 15, "the call answered")
        time.sleep(1.0)
        os.kill(svc.pid, signal.SIGTERM)
        time.sleep(0.5)
        # draining: a new call is refused with 503 and Retry-After, the old one is still up
        refused = invite_without_sdp_probe(svc.sip_port, "during-drain@test")
        assert refused.startswith("SIP/2.0 503"), refused
        assert "\r\nRetry-After: " in refused
        assert voice_rows(svc)[0]["status"] == "in_progress"
        heard_before = len(caller_ep.received)
        # after the drain time, the caller hears the goodbye and gets the service's BYE
        wait_for(lambda: caller.proc.poll() is not None, 20, "sipp to get the BYE and exit")
        result = caller.stop()
        assert result.ok, result.describe()
        assert len(caller_ep.received) > heard_before + 50  # > 1 s more audio: the goodbye
        wait_for(lambda: svc_exited(svc), 15, "the service to exit")
        (row,) = voice_rows(svc)
    assert row["status"] == "completed" and row["outcome"] == "shutdown", row
    assert json.loads(row["ivr"])["ended"] == "shutdown"


def svc_exited(svc: RunningService) -> bool:
    try:
        os.kill(svc.pid, 0)
    except ProcessLookupError:
        return True
    with open(f"/proc/{svc.pid}/stat") as fh:  # a zombie has exited too
        return fh.read().split(") ", 1)[1].startswith("Z")
