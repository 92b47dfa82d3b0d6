# ruff: noqa: F811  (the `target` fixture is imported from tests.cti.conftest and taken as an argument)
"""Issue 10 item 5: agent and admin sign-in. An unknown id costs one scrypt like a wrong password,
off the event loop; failures are throttled per source and per account (429 + Retry-After) and
logged as security events."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from cti import agents as agents_module
from cti.http import build_api
from cti.security import SigninThrottle
from tests.agents_helpers import PASSWORD, make_agent, sign_in
from tests.cti.conftest import API_KEY, Target, make_config, target  # noqa: F401

_SCRYPT = hashlib.scrypt


@asynccontextmanager
async def app_with(target: Target, **http: Any) -> AsyncIterator[TestClient[Any, Any]]:
    client = TestClient(TestServer(build_api(make_config(target.url, **http), schema=target.schema),
                                   host="127.0.0.1", port=0))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()


class ScryptCounter:
    """Wraps hashlib.scrypt as cti.agents calls it: counts calls, and those made on the loop's thread,
    and how many loop turns happened while each hash ran."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop_thread = threading.get_ident()
        self.calls = 0
        self.on_loop = 0
        self.turns_during: list[int] = []
        self.turns = 0

    def __call__(self, *args: Any, **kwargs: Any) -> bytes:
        self.calls += 1
        if threading.get_ident() == self.loop_thread:
            self.on_loop += 1
        before = self.turns
        out = _SCRYPT(*args, **kwargs)
        self.turns_during.append(self.turns - before)
        return out


async def test_unknown_ids_cost_one_scrypt_off_the_loop_and_the_loop_keeps_turning(
        target: Target, monkeypatch: pytest.MonkeyPatch) -> None:
    async with app_with(target, signin_failures=0) as client:  # throttling off: measure the cost alone
        await make_agent(client, "ann", ["support"])
        counter = ScryptCounter(asyncio.get_running_loop())
        monkeypatch.setattr(agents_module.hashlib, "scrypt", counter)
        done = asyncio.Event()

        async def ticker() -> None:
            while not done.is_set():
                counter.turns += 1
                await asyncio.sleep(0)

        tick = asyncio.create_task(ticker())
        burst = [sign_in(client, f"ghost{n}", "whatever-password") for n in range(12)]
        results = await asyncio.gather(*burst)
        wrong = await sign_in(client, "ann", "not the password")
        done.set()
        await tick
        assert all(r.status == 302 and "failed=1" in r.headers["Location"] for r in [*results, wrong])
        assert counter.calls == 13  # one scrypt per sign-in, unknown id or wrong password alike
        assert counter.on_loop == 0  # none of them on the event loop
        assert sum(counter.turns_during) > 0  # the loop ran other work while the hashes ran


async def test_agent_sign_in_throttled_per_source_and_account(
        target: Target, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "cti.security")
    async with app_with(target, signin_failures=3, signin_window=60, signin_block=120) as client:
        await make_agent(client, "ann", ["support"])
        for n in range(3):
            r = await sign_in(client, "ann", f"guess {n} wrong")
            assert r.status == 302 and "failed=1" in r.headers["Location"]
        blocked = await sign_in(client, "ann", PASSWORD)  # the right password: still refused
        assert blocked.status == 429 and blocked.headers["Retry-After"] == "120"
        assert "Set-Cookie" not in blocked.headers
        lines = [r.getMessage() for r in caplog.records if r.name == "cti.security"]
        assert lines.count("SECURITY event=signin_failed src=127.0.0.1 account=agent:ann") == 3
        assert "SECURITY event=blocked src=127.0.0.1 reason=signin_failures seconds=120" in lines
        assert ("SECURITY event=blocked src=127.0.0.1 account=agent:ann reason=signin_failures seconds=120"
                in lines)
        assert not any("guess" in ln or PASSWORD in ln for ln in lines)


async def test_admin_sign_in_throttled(target: Target, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "cti.security")
    async with app_with(target, signin_failures=2, signin_block=60) as client:
        for _ in range(2):
            r = await client.post("/admin/login", data={"key": "not-the-key-0000000"}, allow_redirects=False)
            assert r.status == 302 and "failed=1" in r.headers["Location"]
        r = await client.post("/admin/login", data={"key": API_KEY}, allow_redirects=False)
        assert r.status == 429 and r.headers["Retry-After"] == "60"
        lines = [r.getMessage() for r in caplog.records if r.name == "cti.security"]
        assert lines.count("SECURITY event=signin_failed src=127.0.0.1 account=admin") == 2
        assert not any(API_KEY in ln or "not-the-key" in ln for ln in lines)


def test_signin_throttle_window_block_expiry_and_bound() -> None:
    t = SigninThrottle(failures=3, window=10, block=30)
    t.failed("198.51.100.1", "agent:ann", 0.0)
    t.failed("198.51.100.1", "agent:ann", 1.0)
    t.failed("198.51.100.1", "agent:ann", 12.0)  # the window restarted: 1 failure, not 3
    assert t.retry_after("198.51.100.1", "agent:ann", 12.0) == 0
    t.failed("198.51.100.2", "agent:ann", 13.0)
    t.failed("198.51.100.3", "agent:ann", 14.0)  # a third failure for ann, from three addresses
    assert t.retry_after("203.0.113.5", "agent:ann", 14.0) == 30  # the account is blocked everywhere
    assert t.retry_after("198.51.100.2", "agent:bob", 14.0) == 0  # the addresses are not
    assert t.retry_after("203.0.113.5", "agent:ann", 44.5) == 0
    for n in range(3 * SigninThrottle.MAX_ENTRIES):
        t.failed(f"10.0.{n >> 8 & 255}.{n & 255}", f"agent:x{n}", 100.0)
    assert len(t) <= SigninThrottle.MAX_ENTRIES
