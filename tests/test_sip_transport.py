"""Issue 10 items 7 and 10, the asyncio SIP adapter on loopback: next-hop names resolved
asynchronously with a timeout and a cache, failures logged once with the name cut short and
never left as "Task exception was never retrieved"; messages too large for UDP go over TCP
(RFC 3261 18.1.1) or are logged, never dropped silently."""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.sipfake import make_core
from voice.aio.resolve import check_name
from voice.aio.sip import SipEndpoint
from voice.sip.transaction import Address

OPTIONS = (b"OPTIONS sip:x@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKt1\r\n"
           b"From: <sip:a@b>;tag=1\r\nTo: <sip:x@example.com>\r\nCall-ID: t1\r\nCSeq: 1 OPTIONS\r\n"
           b"Content-Length: 0\r\n\r\n")


@pytest.fixture
async def endpoint() -> AsyncIterator[tuple[SipEndpoint, list[dict[str, Any]]]]:
    loop = asyncio.get_running_loop()
    unhandled: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: unhandled.append(context))
    ep = SipEndpoint(make_core(), lambda _e: None)
    await ep.start("127.0.0.1", 0, ("udp",))
    try:
        yield ep, unhandled
    finally:
        await ep.close()
        gc.collect()  # a task whose exception nobody retrieved complains when collected
        await asyncio.sleep(0)
        loop.set_exception_handler(previous)


async def settle(ep: SipEndpoint) -> None:
    for _ in range(200):
        if not ep._tasks:
            return
        await asyncio.sleep(0.01)


def udp_listener() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock


async def test_a_name_with_a_label_too_long_fails_once_without_a_task_exception(
        endpoint: tuple[SipEndpoint, list[dict[str, Any]]], caplog: pytest.LogCaptureFixture) -> None:
    ep, unhandled = endpoint
    caplog.set_level(logging.WARNING, "voice.sip")
    name = "a" * 5000 + ".example.com"
    for _ in range(20):
        ep._transmit(OPTIONS, Address(name, 5060, "udp"))
    await settle(ep)
    lines = [r.getMessage() for r in caplog.records if "cannot resolve" in r.getMessage()]
    assert len(lines) == 1 and len(lines[0]) < 250 and "5012 chars" in lines[0]
    assert ep.resolver.lookups == 0  # not a DNS name: no query was sent for it
    assert ep.stats["unresolved_dropped"] == 20
    gc.collect()
    await asyncio.sleep(0)
    assert unhandled == []


async def test_unicode_error_from_getaddrinfo_is_handled(
        endpoint: tuple[SipEndpoint, list[dict[str, Any]]], caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    ep, unhandled = endpoint
    caplog.set_level(logging.WARNING, "voice.sip")

    async def broken(*_a: Any, **_k: Any) -> Any:
        raise UnicodeError("encoding with 'idna' codec failed (UnicodeError: label too long)")

    monkeypatch.setattr(ep.loop, "getaddrinfo", broken)
    ep._transmit(OPTIONS, Address("odd.example", 5060, "udp"))
    await ep._connect_and_send(OPTIONS, Address("odd.example", 5061, "tcp"))
    await settle(ep)
    assert sum("cannot resolve odd.example" in r.getMessage() for r in caplog.records) == 2  # one per port
    gc.collect()
    await asyncio.sleep(0)
    assert unhandled == []


async def test_a_slow_name_times_out_and_is_remembered(
        endpoint: tuple[SipEndpoint, list[dict[str, Any]]], caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    ep, _ = endpoint
    caplog.set_level(logging.WARNING, "voice.sip")
    calls = 0

    async def slow(*_a: Any, **_k: Any) -> Any:
        nonlocal calls
        calls += 1
        await asyncio.sleep(30)

    monkeypatch.setattr(ep.loop, "getaddrinfo", slow)
    ep.resolver.timeout = 0.05
    for _ in range(5):  # five messages while the first lookup is in flight: one lookup
        ep._transmit(OPTIONS, Address("slow.example", 5060, "udp"))
    await settle(ep)
    ep._transmit(OPTIONS, Address("slow.example", 5060, "udp"))  # the failure is cached
    await settle(ep)
    assert calls == 1
    lines = [r.getMessage() for r in caplog.records if "slow.example" in r.getMessage()]
    assert len(lines) == 1 and "no answer within 0.05 s" in lines[0]


async def test_names_are_cached_and_delivered(endpoint: tuple[SipEndpoint, list[dict[str, Any]]]) -> None:
    ep, _ = endpoint
    sink = udp_listener()
    port = sink.getsockname()[1]
    try:
        for _ in range(3):
            ep._transmit(OPTIONS, Address("localhost", port, "udp"))
            await settle(ep)
        assert ep.resolver.lookups == 1
        got = [await asyncio.wait_for(ep.loop.sock_recv(sink, 65535), 5) for _ in range(3)]
        assert got == [OPTIONS] * 3
    finally:
        sink.close()


async def test_large_request_goes_over_tcp_with_a_tcp_via(
        endpoint: tuple[SipEndpoint, list[dict[str, Any]]]) -> None:
    ep, _ = endpoint
    received: asyncio.Queue[bytes] = asyncio.Queue()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.readuntil(b"\r\n\r\n")
        length = int(data.split(b"Content-Length: ")[1].split(b"\r\n")[0])
        await received.put(data + await reader.readexactly(length))
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    body = b"x" * 1500
    big = OPTIONS.replace(b"Content-Length: 0", b"Content-Type: text/plain\r\nContent-Length: 1500") + body
    try:
        ep._transmit(big, Address("127.0.0.1", port, "udp"))
        got = await asyncio.wait_for(received.get(), 5)
    finally:
        server.close()
    assert got.startswith(b"OPTIONS ") and got.endswith(body)
    assert b"Via: SIP/2.0/TCP 127.0.0.1:5060;branch=z9hG4bKt1" in got
    assert ep.stats["requests_over_tcp"] == 1


async def test_large_request_falls_back_to_udp_when_tcp_is_refused(
        endpoint: tuple[SipEndpoint, list[dict[str, Any]]], caplog: pytest.LogCaptureFixture) -> None:
    ep, _ = endpoint
    caplog.set_level(logging.WARNING, "voice.sip")
    sink = udp_listener()  # nothing listens on TCP at this port: the connection is refused
    port = sink.getsockname()[1]
    big = (OPTIONS.replace(b"Content-Length: 0", b"Content-Type: text/plain\r\nContent-Length: 2000")
           + b"y" * 2000)
    try:
        for _ in range(3):
            ep._transmit(big, Address("127.0.0.1", port, "udp"))
            await settle(ep)
        got = await asyncio.wait_for(ep.loop.sock_recv(sink, 65535), 5)
    finally:
        sink.close()
    assert got == big  # the original, UDP Via and all (RFC 3261 18.1.1: retry over UDP)
    assert sum("TCP connection failed" in r.getMessage() for r in caplog.records) == 1  # logged once


async def test_response_too_large_for_udp_is_logged_once_not_silent(
        endpoint: tuple[SipEndpoint, list[dict[str, Any]]], caplog: pytest.LogCaptureFixture) -> None:
    ep, unhandled = endpoint
    caplog.set_level(logging.WARNING, "voice.sip")
    huge = b"SIP/2.0 200 OK\r\n" + b"X-Pad: " + b"z" * 70000 + b"\r\nContent-Length: 0\r\n\r\n"
    for _ in range(5):
        ep._transmit(huge, Address("127.0.0.1", 5999, "udp"))
    lines = [r.getMessage() for r in caplog.records if "larger than a UDP datagram" in r.getMessage()]
    assert len(lines) == 1 and "70046 bytes" in lines[0]
    assert ep.stats["oversized_dropped"] == 5
    assert unhandled == []


@pytest.mark.parametrize(("name", "ok"), [("pbx.example.com", True), ("a" * 63 + ".x", True),
                                          ("a" * 64 + ".x", False), ("x" * 254, False), ("", False),
                                          ("bad..dots", False), ("Jürgen.example", True)])
def test_check_name(name: str, ok: bool) -> None:
    assert (check_name(name) is None) is ok
