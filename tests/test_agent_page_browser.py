"""The agent page in a real Chromium (Debian's /usr/bin/chromium driven by Playwright), on loopback:
sign in, receive a screen pop, see the customer and their last chat, accept, save a note."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import pytest

from cti.queues import AgentSlot
from tests.agents_helpers import PASSWORD, desk_of, inbound_call, make_agent, running_app, seed_customer
from tests.cti.conftest import Target

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).parent / "artifacts"
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.mark.browser
@pytest.mark.timeout(90)
async def test_an_agent_signs_in_gets_a_screen_pop_and_saves_a_note(tmp_path: Path) -> None:
    from playwright.async_api import async_playwright, expect

    assert shutil.which(CHROMIUM), "chromium is missing: apt-get install chromium (see the Makefile)"
    target = Target("sqlite", f"sqlite+aiosqlite:///{tmp_path / 'voice.db'}", None)
    async with running_app(target) as client:
        desk = desk_of(client)
        await seed_customer(client)
        await make_agent(client, "ann", ["support"], state="available")
        base = str(client.make_url("/")).rstrip("/")
        answer = asyncio.Event()

        async def dial_agent(call: Any, agent: AgentSlot) -> bool:
            await answer.wait()  # the phone rings until the agent accepts on the page
            return True

        desk.dial_agent = dial_agent
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
            try:
                page = await browser.new_page(viewport={"width": 1280, "height": 900})
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                await page.goto(f"{base}/agent")
                assert page.url.endswith("/agent/login")  # no page without a sign-in
                await page.fill("#agent", "ann")
                await page.fill("#password", "wrong password")
                await page.click("#signin")
                await expect(page.locator("#failed")).to_be_visible()
                await page.fill("#agent", "ann")
                await page.fill("#password", PASSWORD)
                await page.click("#signin")
                await expect(page.locator("#agent-name")).to_have_text("Ann")
                await expect(page.locator("#link")).to_have_text("connected")
                await expect(page.locator("#state")).to_have_text("available")

                call, interaction_id = await inbound_call(client, "browser-call@test")
                routed = asyncio.ensure_future(desk.transfer_queue(call, "support"))
                await expect(page.locator("#caller-number")).to_have_text("+4930123456")
                await expect(page.locator("#customer .customer-name")).to_have_text("Anna Schmidt")
                await expect(page.locator("#recent")).to_contain_text("Asked about the router refund")
                await expect(page.locator("#ivr-path")).to_contain_text("support")
                await expect(page.locator("#ivr-inputs")).to_contain_text("***")
                await expect(page.locator("#transcript")).to_contain_text("I want my refund")
                await expect(page.locator("#state")).to_have_text("ringing")

                await page.click("#accept")
                answer.set()
                outcome = await asyncio.wait_for(routed, 10)
                assert outcome.ok and outcome.agent_id == "ann"
                await expect(page.locator("#state")).to_have_text("on call")

                await page.fill("#note", "Refund sent again, caller happy")
                await page.select_option("#disposition", "resolved")
                await page.click("#save-note")
                await expect(page.locator("#note-status")).to_have_text("Saved")

                await page.fill("#search", "schmidt")
                await page.press("#search", "Enter")
                await page.locator("#results li").first.click()
                await expect(page.locator("#timeline")).to_contain_text("Invoice question")
                ARTIFACTS.mkdir(exist_ok=True)
                await page.screenshot(path=str(ARTIFACTS / "agent_page.png"), full_page=True)
                assert errors == []
            finally:
                await browser.close()
        saved = await desk.store.get_interaction(interaction_id)
        assert saved is not None and saved["disposition"] == "resolved"
        assert saved["summary"] == "Refund sent again, caller happy" and saved["agent"] == "ann"


@pytest.mark.browser
@pytest.mark.timeout(90)
async def test_the_admin_page_draws_the_flows_and_lists_calls_and_agents(tmp_path: Path) -> None:
    from playwright.async_api import async_playwright, expect

    from tests.cti.conftest import API_KEY

    target = Target("sqlite", f"sqlite+aiosqlite:///{tmp_path / 'voice.db'}", None)
    async with running_app(target) as client:
        await make_agent(client, "ann", ["support"], state="available")
        await inbound_call(client, "admin-call@test")
        base = str(client.make_url("/")).rstrip("/")
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
            try:
                page = await browser.new_page(viewport={"width": 1280, "height": 900})
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                await page.goto(f"{base}/admin")
                assert page.url.endswith("/admin/login")
                await page.fill("#key", API_KEY)
                await page.press("#key", "Enter")
                await expect(page.locator("#calls")).to_contain_text("+4930123456")
                await expect(page.locator("#calls")).to_contain_text("support")  # the call's node
                await expect(page.locator("#agents")).to_contain_text("available")
                await expect(page.locator("#queues")).to_contain_text("support")
                main = page.locator('.flow[data-flow="main"]')
                await expect(main).to_contain_text("valid")
                await expect(main.locator("svg rect").first).to_be_visible()  # the diagram, drawn inline
                assert await main.locator("svg rect").count() > 3
                ARTIFACTS.mkdir(exist_ok=True)
                await page.screenshot(path=str(ARTIFACTS / "admin_page.png"), full_page=True)
                assert errors == []
            finally:
                await browser.close()
