"""The supervisor's wallboard, the reports page and live nodes on /admin, in a real Chromium on
loopback, after calls written the way the service writes them. Screenshots are kept in
tests/artifacts/ (wallboard.png, reports.png, admin-live.png)."""

from __future__ import annotations

import shutil
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from cti.http import STORE_KEY, build_api
from cti.store import NewInteraction
from cti.web import DESK_KEY
from tests.agents_helpers import make_agent
from tests.cti.conftest import API_KEY, make_config
from voice.config import IvrConfig

CHROMIUM = "/usr/bin/chromium"
REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(__file__).parent / "artifacts"
ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


async def finished_call(
    client: TestClient[Any, Any], n: int, nodes: list[str], ended: str, **ivr: Any
) -> None:
    store = client.server.app[STORE_KEY]  # type: ignore[union-attr]
    at = datetime.now(UTC).replace(hour=0, minute=5) + timedelta(minutes=n)
    meta: dict[str, Any] = ivr.pop("meta", {})
    result = await store.ingest(
        NewInteraction(
            channel="voice",
            direction="inbound",
            started_at=at,
            identities=[("phone", f"+49301111{n:03d}")],
            status="in_progress",
            metadata={"caller": f"+49301111{n:03d}", "dialled": "100", **meta},
            call_id=f"wb-{n}",
            idempotency_key=f"call:wb-{n}",
        )
    )
    path = [{"flow": "main", "node": node, "t": i} for i, node in enumerate(nodes)]
    await store.finish_interaction(
        result.interaction_id,
        ended_at=at + timedelta(seconds=60),
        status="completed",
        disposition=ended,
        ivr={"flow": "main", "path": path, "ended": ended, **ivr},
        recording=None,
        transcript=[],
    )


@pytest.mark.browser
@pytest.mark.timeout(120)
async def test_wallboard_reports_and_live_nodes_in_chromium(tmp_path: Path) -> None:
    from playwright.async_api import async_playwright, expect

    assert shutil.which(CHROMIUM), "chromium is missing: apt-get install chromium (see the Makefile)"
    ARTIFACTS.mkdir(exist_ok=True)
    config = replace(
        make_config(f"sqlite+aiosqlite:///{tmp_path / 'voice.db'}"),
        ivr=IvrConfig(flows=REPO / "ivr_flows", prompts=tmp_path, recordings=tmp_path),
    )
    from voice.ivr.catalog import config_catalog

    client = TestClient(TestServer(build_api(config, flows=config_catalog(config)), host="127.0.0.1", port=0))
    await client.start_server()
    try:
        base = str(client.make_url("")).rstrip("/")
        menu = ["welcome", "identify", "main_menu"]
        await finished_call(
            client, 1, [*menu, "billing", "ask_account", "check_account", "read_balance", "goodbye"], "hangup"
        )
        await finished_call(
            client,
            2,
            [*menu, "support", "to_support"],
            "transfer",
            transfer_target="queue:support",
            meta={"agent_id": "ann", "wait_seconds": 8.0, "talk_seconds": 45.0},
        )
        await finished_call(
            client, 3, [*menu, "agent", "to_agent"], "caller_hangup", transfers_failed=["queue:agents"]
        )
        await make_agent(client, "ann", ["support"], state="available")
        desk = client.server.app[DESK_KEY]  # type: ignore[union-attr]
        desk.live.add("live-1", caller="+4930999", dialled="100", flow="main")
        desk.live.ivr_hook("live-1")("node", {"flow": "main", "node": "main_menu"})

        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
            try:
                page = await browser.new_page(viewport={"width": 1400, "height": 1000})
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                await page.goto(f"{base}/wallboard")
                assert page.url.endswith("/admin/login")  # supervisors sign in first
                await page.fill("input[name=key]", API_KEY)
                await page.click("button[type=submit]")
                await page.goto(f"{base}/wallboard")
                await expect(page.locator("#calls-today")).to_have_text("3")
                await expect(page.locator("#in-ivr")).to_have_text("1")
                await expect(page.locator("#abandoned")).to_have_text("1")
                await expect(page.locator("#sl")).to_have_text("50%")  # 1 of 2 queued answered within 20 s
                await expect(page.locator("#containment")).to_have_text("33%")
                await expect(page.locator("#agents")).to_contain_text("available: 1")
                await page.screenshot(path=str(ARTIFACTS / "wallboard.png"), full_page=True)

                await page.goto(f"{base}/admin/reports")
                await expect(page.locator("#per-day tr")).to_have_count(1)
                await expect(page.locator("#per-flow")).to_contain_text("main")
                await expect(page.locator("#chart svg")).to_be_visible()
                diagram = page.locator('#flows [data-flow="main"] svg')
                await expect(diagram.locator('g[data-node="welcome"] .reach')).to_have_text(
                    "reached 3 · left 0"
                )
                await expect(diagram.locator('g[data-node="goodbye"] .reach')).to_have_text(
                    "reached 1 · left 1"
                )
                await page.screenshot(path=str(ARTIFACTS / "reports.png"), full_page=True)

                await page.goto(f"{base}/admin")
                live = page.locator('[data-flow="main"] g.node.live')
                await expect(live).to_have_count(1)
                assert await live.get_attribute("data-node") == "main_menu"
                await page.screenshot(path=str(ARTIFACTS / "admin-live.png"), full_page=True)
                assert errors == []
            finally:
                await browser.close()
    finally:
        await client.close()
