"""IVR pieces that meet the outside: HTTP action (real local server), TTS (real flite),
flow library hot reload and routing, and the text-mode simulator."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import sys
import textwrap
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiohttp import web

from voice.cli import main as cli_main
from voice.ivr import FlowInterpreter, FlowLibrary, Tts
from voice.ivr.harness import FakeTts, make_call
from voice.ivr.vtime import run_virtual

ROOT = Path(__file__).resolve().parent.parent

HTTP_FLOW = """
start: get
vars: {base: "", acct: "42"}
nodes:
  get:
    http:
      url: "{base}/{acct}"
      method: POST
      json: {account: "{acct}", source: ivr}
      headers: {X-Call: "{caller}"}
      timeout: 0.3
      into: api
      on_error: failed
    next: ok
  ok: {hangup: "Balance {api.json.balance|money}."}
  failed: {hangup: "Sorry, status {api.status}."}
"""


@pytest.fixture
async def api_server() -> Any:
    release = asyncio.Event()
    seen: list[dict[str, Any]] = []

    async def handle(request: web.Request) -> web.Response:
        acct = request.match_info["acct"]
        seen.append({"body": await request.json(), "x_call": request.headers.get("X-Call")})
        if acct == "slow":
            await release.wait()
        if acct == "broken":
            return web.json_response({"error": "boom"}, status=500)
        return web.json_response({"balance": 42.5})

    app = web.Application()
    app.router.add_post("/{acct}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}", seen
    release.set()
    await runner.cleanup()


def _http_flow(tmp_path: Path) -> Any:
    (tmp_path / "f.yaml").write_text(HTTP_FLOW)
    lib = FlowLibrary(tmp_path, prompts_dir=tmp_path, default_flow="f", routes={})
    assert lib.load() == []
    return lib.flows["f"]


@pytest.mark.parametrize(("acct", "said"), [
    ("42", "Balance 42 dollars and 50 cents."),
    ("broken", "Sorry, status 500."),
    ("slow", "Sorry, status ."),  # timeout: no status at all
])
async def test_http_action(tmp_path: Path, api_server: Any, acct: str, said: str) -> None:
    base, seen = api_server
    flow = _http_flow(tmp_path)
    tts = FakeTts()
    call, _media, _sig = make_call(realtime=0.0)
    async with aiohttp.ClientSession() as session:
        interp = FlowInterpreter(flow, call, tts=tts, http=session if acct != "42" else None,
                                 recordings_dir=tmp_path, prompts_dir=tmp_path)
        interp.vars.update(base=base, acct=acct)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        record = await interp.run()
    assert tts.spoken[-1] == said
    assert seen[-1] == {"body": {"account": acct, "source": "ivr"}, "x_call": "+15550100"}
    if acct == "slow":
        assert 0.25 < loop.time() - t0 < 2.0 and record.variables["api"]["error"] == "TimeoutError"
    assert record.ended == "hangup"


async def test_tts_with_flite_renders_caches_and_plays(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    tts = Tts("flite", "slt", tmp_path / "cache")
    pcm = await tts.render("Your balance is 42 dollars.")
    assert pcm.dtype == np.int16 and 1.0 < len(pcm) / 8000 < 4.0
    assert np.sqrt(np.mean(pcm.astype(np.float64) ** 2)) > 300  # speech, not silence
    assert len(list((tmp_path / "cache").glob("flite-slt-*.wav"))) == 1
    assert tts.cached("Your balance is 42 dollars.") is pcm
    monkeypatch.setenv("PATH", "")  # a fresh instance must come from the disk cache, not the engine
    again = await Tts("flite", "slt", tmp_path / "cache").render("Your  balance is 42 dollars.")
    assert np.array_equal(again, pcm)
    (tmp_path / "f.yaml").write_text("start: a\nnodes:\n  a:\n    say: Your balance is 42 dollars.\n")
    lib = FlowLibrary(tmp_path, prompts_dir=tmp_path, default_flow="f", routes={}, tts=tts)
    assert lib.load() == [] and await lib.prerender() == 1
    call, media, _ = make_call(realtime=0.0)
    record = await FlowInterpreter(lib.flows["f"], call, tts=tts, recordings_dir=tmp_path,
                                   prompts_dir=tmp_path).run()
    assert record.ended == "hangup" and np.array_equal(media.played[0], pcm)


def _write(path: Path, text: str, mtime: float) -> None:
    path.write_text(textwrap.dedent(text))
    os.utime(path, (mtime, mtime))


def test_library_hot_reload_keeps_last_good_version(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    flows = tmp_path / "flows"
    flows.mkdir()
    _write(flows / "main.yaml", "start: a\nnodes:\n  a:\n    hangup: Version one.\n", 1000)
    _write(flows / "sales.yaml", "start: a\nnodes:\n  a:\n    call: lib/common\n", 1000)
    (flows / "lib").mkdir()
    _write(flows / "lib" / "common.yaml", "start: x\nnodes:\n  x:\n    say: Common.\n", 1000)
    _write(flows / "broken.yaml", "start: a\nnodes:\n  a:\n    sya: hi\n", 1000)
    lib = FlowLibrary(flows, prompts_dir=tmp_path, default_flow="main",
                      routes={"200": "sales", "300": "broken"})
    errors = lib.load()
    assert [e.kind for e in errors] == ["unknown_action"] and "broken" not in lib.flows
    assert lib.flow_for("200").name == "sales" and lib.flow_for("999").name == "main"
    assert lib.flow_for("300").name == "main"  # routed to an invalid flow: the default answers
    assert lib.flow_for("200").subflows["lib/common"].name == "lib/common"
    v1 = lib.flow_for("1")

    async def scenario() -> None:
        watcher = asyncio.ensure_future(lib.watch(interval=1.0))
        await asyncio.sleep(0.5)
        _write(flows / "main.yaml", "start: a\nnodes:\n  a:\n    hangup: Version two.\n", 2000)
        await asyncio.sleep(1.5)
        v2 = lib.flow_for("1")
        assert v2 is not v1 and v2.nodes["a"].args["prompt"][0].text.source == "Version two."
        assert v1.nodes["a"].args["prompt"][0].text.source == "Version one."  # calls keep theirs
        _write(flows / "main.yaml", "start: a\nnodes:\n  a:\n    hangup: {{bad\n", 3000)
        await asyncio.sleep(1.5)
        assert lib.flow_for("1") is v2
        _write(flows / "lib" / "common.yaml", "start: x\nnodes:\n  x:\n    say: Common two.\n", 4000)
        await asyncio.sleep(1.5)
        assert lib.flow_for("200").subflows["lib/common"].nodes["x"].args["value"][0].text.source == \
            "Common two."
        watcher.cancel()
        with pytest.raises(asyncio.CancelledError):
            await watcher

    caplog.set_level(logging.INFO, logger="voice.ivr")
    run_virtual(scenario())
    assert "flow main refused (keeping the last good version)" in caplog.text
    assert "main.yaml:5: not valid YAML" in caplog.text


def test_simulate_cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "stdin", io.StringIO("\nsupport\n"))
    assert cli_main(["simulate", "ivr_flows/main.yaml"]) == 0
    out = capsys.readouterr().out
    assert "IVR: Sorry, I didn't hear anything." in out
    assert "transferred to agent queue 'support'" in out
    assert "path: welcome > identify > route_caller > main_menu > support > to_support" in out


def test_simulate_with_a_config_uses_its_business_hours(monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str],
                                                       tmp_path: Path) -> None:
    conf = tmp_path / "v.conf"
    conf.write_text(f"[database]\nurl = sqlite+aiosqlite:///{tmp_path / 'v.db'}\n"
                    "[hours support]\nmon = closed\n")  # never open
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n\n"))
    assert cli_main(["simulate", "--config", str(conf), "ivr_flows/main.yaml"]) == 0
    out = capsys.readouterr().out
    assert "IVR: We are closed right now. Our support line is open at no set times." in out
    assert "path: welcome > identify > route_caller > closed > closed_menu > goodbye" in out


def test_call_keeps_the_key_pressed_after_a_receive_digit_timeout() -> None:
    """Regression (voice/call.py _until_ended): a timed-out wait must not swallow the next key."""

    async def scenario() -> list[str | None]:
        call, media, _ = make_call()
        got = [await call.receive_digit(1.0)]
        media.press("7")
        await asyncio.sleep(0.1)  # the key arrives while nobody waits (e.g. during a prompt)
        got.append(await call.receive_digit(1.0))
        return got

    assert run_virtual(scenario()) == [None, "7"]
