"""The agent page in a real Chromium (Debian's /usr/bin/chromium driven by Playwright), on loopback:
sign in, receive a screen pop, see the customer and their last chat, accept, save a note."""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from tests.agents_helpers import PASSWORD, desk_of, inbound_call, make_agent, running_app, seed_customer
from tests.cti.conftest import Target
from tests.desk_fakes import FakeConnector

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
    answer = asyncio.Event()  # the phone rings until the agent accepts on the page
    connector = FakeConnector({"ann": 0.0}, gate=answer, talk=None)
    async with running_app(target, connector=connector) as client:
        desk = desk_of(client)
        _customer_id, chat_id = await seed_customer(client)
        await make_agent(client, "ann", ["support"], state="available")
        base = str(client.make_url("/")).rstrip("/")
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
                # the caller chose to continue yesterday's chat (the flow's transfer: {continues: ...})
                routed = asyncio.ensure_future(desk.transfer_queue(call, "support", continues=chat_id))
                await expect(page.locator("#caller-number")).to_have_text("+4930123456")
                await expect(page.locator("#continues")).to_contain_text(
                    f"Continues chat interaction {chat_id}: Asked about the router refund")
                await page.click("#continues")
                await expect(page.locator("#continues .detail")).to_contain_text("Where is my refund?")
                await expect(page.locator("#customer .customer-name")).to_have_text("Anna Schmidt")
                await expect(page.locator("#identified")).to_have_text("Identified by the calling number")
                await expect(page.locator("#recent")).to_contain_text("Asked about the router refund")
                await expect(page.locator("#ivr-path")).to_contain_text("support")
                await expect(page.locator("#ivr-inputs")).to_contain_text("***")
                await expect(page.locator("#transcript")).to_contain_text("I want my refund")
                await expect(page.locator("#state")).to_have_text("ringing")
                await page.reload()  # the pop survives a reload while the phone rings
                await expect(page.locator("#caller-number")).to_have_text("+4930123456")
                await expect(page.locator("#state")).to_have_text("ringing")

                await page.click("#accept")
                await expect(page.locator("#state")).to_have_text("on call")
                answer.set()
                await page.fill("#note", "Refund sent again, caller happy")
                await page.select_option("#disposition", "resolved")
                await page.click("#save-note")
                await expect(page.locator("#note-status")).to_have_text("Saved")
                while not connector.connections:
                    await asyncio.sleep(0.01)
                connector.connections[0].finish("agent", 30.0)
                outcome = await asyncio.wait_for(routed, 10)
                assert outcome.ok and outcome.agent_id == "ann" and outcome.hangup_by == "agent"
                await expect(page.locator("#state")).to_have_text("wrap up")
                await page.reload()  # wrap-up: the call the note is for is still on screen
                await expect(page.locator("#call-id")).to_have_text(call.key)
                await expect(page.locator("#accept")).to_have_text("Accepted")
                # the wrap-up bar: the codes from [agents] dispositions, Available when done
                await expect(page.locator("#wrapup")).to_be_visible()
                await expect(page.locator("#wrapup-left")).to_have_text("until you press Available")
                codes = await page.locator("#wrapup-disposition option").all_text_contents()
                assert codes[1:] == ["resolved", "callback", "escalated", "wrong_number"]
                await page.select_option("#wrapup-disposition", "callback")
                await page.click("#wrapup-done")
                await expect(page.locator("#state")).to_have_text("available")
                await expect(page.locator("#wrapup")).to_be_hidden()
                # away with a reason: kept with the state, shown on the page
                await page.select_option("#away-reason", "lunch")
                await page.click("#away")
                await expect(page.locator("#state")).to_have_text("away (lunch)")
                assert (await desk.agents.get_agent("ann") or {})["reason"] == "lunch"

                await page.fill("#search", "schmidt")
                await page.press("#search", "Enter")
                await page.locator("#results li").first.click()
                await expect(page.locator("#timeline")).to_contain_text("Invoice question")
                ARTIFACTS.mkdir(exist_ok=True)
                await page.screenshot(path=str(ARTIFACTS / "agent_page.png"), full_page=True)

                # a call ann's phone lets ring out: the page says why she is away now
                connector.answer_after["ann"] = None
                desk.engine.defaults = replace(desk.engine.defaults, ring_timeout=1.0, timeout=5.0)
                await page.click("button[data-state=available]")
                await expect(page.locator("#state")).to_have_text("available")
                second, _ = await inbound_call(client, "browser-missed@test", caller="+4930999")
                routed = asyncio.ensure_future(desk.transfer_queue(second, "support"))
                await expect(page.locator("#missed")).to_be_visible()
                await expect(page.locator("#missed-text")).to_contain_text("did not answer within 1 s")
                await expect(page.locator("#continues")).to_be_hidden()  # this call continues nothing
                await expect(page.locator("#missed-text")).to_contain_text("set to Away")
                await expect(page.locator("#state")).to_have_text("away")
                await expect(page.locator("#accept")).to_have_text("Missed")
                await page.reload()
                await expect(page.locator("#missed-text")).to_contain_text("+4930999")
                await page.click("#missed-available")
                await expect(page.locator("#missed")).to_be_hidden()
                second.hang_up()
                assert (await asyncio.wait_for(routed, 10)).reason == "abandoned"

                # [agents] wrap_up_seconds: the page counts down and the desk makes ann available
                desk.wrap_up.seconds = 2.0
                connector.answer_after["ann"] = 0.0
                await expect(page.locator("#state")).to_have_text("available")
                third, _ = await inbound_call(client, "browser-wrap@test", caller="+4930777")
                routed = asyncio.ensure_future(desk.transfer_queue(third, "support"))
                await expect(page.locator("#state")).to_have_text("on call")
                while len(connector.connections) < 2:
                    await asyncio.sleep(0.01)
                connector.connections[-1].finish("agent", 5.0)
                await asyncio.wait_for(routed, 10)
                await expect(page.locator("#wrapup-left")).to_contain_text("available in")
                await expect(page.locator("#state")).to_have_text("available", timeout=5000)
                await expect(page.locator("#wrapup")).to_be_hidden()
                assert errors == []
            finally:
                await browser.close()
        saved = await desk.store.get_interaction(interaction_id)
        assert saved is not None and saved["disposition"] == "callback"  # the wrap-up's code, the last
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
