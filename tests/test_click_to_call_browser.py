"""Click-to-call on the agent page in a real Chromium (Playwright, loopback), call control faked as
cti.ports says: the agent finds a customer, presses Call next to the phone number, is refused
while away, then their phone rings first, the customer is called, the page follows each step."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.agents_helpers import PASSWORD, make_agent, running_app, seed_customer
from tests.cti.conftest import Target
from tests.test_agent_page_browser import ARGS, CHROMIUM
from tests.test_click_to_call import RECORD, Dialer


@pytest.mark.browser
@pytest.mark.timeout(90)
async def test_the_call_button_on_a_customer_record_calls_the_agent_then_the_customer(tmp_path: Path) -> None:
    from playwright.async_api import async_playwright, expect

    assert shutil.which(CHROMIUM), "chromium is missing: apt-get install chromium (see the Makefile)"
    target = Target("sqlite", f"sqlite+aiosqlite:///{tmp_path / 'voice.db'}", None)
    dialer = Dialer()
    async with running_app(target, dialer=dialer) as client:
        await seed_customer(client)
        await make_agent(client, "ann", ["support"])  # away
        base = str(client.make_url("/")).rstrip("/")
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
            try:
                page = await browser.new_page(viewport={"width": 1280, "height": 900})
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                await page.goto(f"{base}/agent/login")
                await page.fill("#agent", "ann")
                await page.fill("#password", PASSWORD)
                await page.click("#signin")
                await expect(page.locator("#link")).to_have_text("connected")
                await page.fill("#search", "schmidt")
                await page.press("#search", "Enter")
                await page.locator("#results li").first.click()
                call = page.locator("#timeline .phones button", has_text="Call")
                await expect(page.locator("#timeline .phones")).to_contain_text("+4930123456")
                await call.click()
                await expect(page.locator("#outbound-text")).to_contain_text(
                    "Not called: you are away: only an available agent can place a call")
                assert dialer.log == []

                await page.click("button[data-state=available]")
                await expect(page.locator("#state")).to_have_text("available")
                await call.click()
                await expect(page.locator("#outbound-text")).to_have_text(
                    "Your phone rings: answer it to call Anna Schmidt")
                await expect(page.locator("#caller-name")).to_have_text("Calling Anna Schmidt (+4930123456)")
                await expect(page.locator("#state")).to_have_text("ringing")
                dialer.answer.set()
                await expect(page.locator("#outbound-text")).to_have_text("Talking to Anna Schmidt")
                await expect(page.locator("#state")).to_have_text("on call")
                assert dialer.log == [("agent", "sip:ann@127.0.0.1:5099"), ("customer", "+4930123456")]
                assert await page.evaluate("current.interaction_id") == RECORD  # notes go to the call
                dialer.calls[0].hangup()
                await expect(page.locator("#outbound-text")).to_contain_text("caller hung up after 12 s")
                await expect(page.locator("#state")).to_have_text("wrap up")
                assert errors == []
            finally:
                await browser.close()
