"""The web pages end to end in a real browser: Debian's headless Chromium driven by
Playwright, against a demo-mode gateway (real Redis, the in-process sandbox, a small RCS
plugin from :mod:`tests.web.demo`).

- A message typed in the simulator is answered; the reply appears in place with its
  delivered receipt, segments and encoding; "open in inspector" shows the conversation's
  timeline with the inbound message, the reply and its receipts.
- An RCS card (with its image), an MMS image and RCS choices render; clicking a choice sends
  the tap and the bot's answer appears; the inspector shows the new state and data.
- Outside the demo the inspector asks for the management token and then shows the queues.

Screenshots go to ``test-artifacts/browser/`` for people to look at.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from playwright.async_api import Browser, ConsoleMessage, Page, async_playwright, expect
from redis.asyncio import Redis

from bot.storage.redis_server import RedisServer
from tests.web.demo import AUTH, HANDSET, KEY, PLUGIN, TOKEN, demo_gateway, production

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "browser"
WAIT = 10_000
"""Milliseconds a page has to show something (a guard against hangs, not a measure)."""

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="Debian's chromium is not installed at /usr/bin/chromium (apt-get install chromium)",
)


@pytest.fixture(autouse=True)
def _no_ambient_config(no_ambient_config: None) -> None:
    """Every test here runs without ambient settings (see tests/conftest.py)."""


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"]
        )
        try:
            yield chromium
        finally:
            await chromium.close()


class Problems:
    """JavaScript errors and console errors of a page: a page that works has none."""

    def __init__(self, page: Page) -> None:
        self.found: list[str] = []
        page.on("pageerror", lambda error: self.found.append(f"page error: {error}"))
        page.on("console", self._console)

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.found.append(f"console: {message.text}")


async def new_page(browser: Browser) -> tuple[Page, Problems]:
    page = await browser.new_page(viewport={"width": 1200, "height": 860})
    return page, Problems(page)


async def shot(page: Page, name: str, **options: Any) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), **options)


async def type_message(page: Page, text: str) -> None:
    await page.fill("#text", text)
    await page.press("#text", "Enter")


async def image_loaded(page: Page, selector: str) -> bool:
    return bool(
        await page.locator(selector).first.evaluate("img => img.complete && img.naturalWidth > 0")
    )


async def test_a_simulator_message_is_answered_and_its_conversation_opens_in_the_inspector(
    browser: Browser, redis: Redis, redis_server: RedisServer, tmp_path: Path
) -> None:
    async with demo_gateway(redis_server.url, tmp_path / "data") as demo:
        page, problems = await new_page(browser)
        await page.goto(f"{demo.url}/simulator?number={quote(HANDSET)}")
        await page.fill("#text", "hello bot")
        await page.click("#send")

        sent = page.locator(".msg.sent", has_text="hello bot")
        await expect(sent).to_be_visible(timeout=WAIT)
        await expect(sent.locator(".segments")).to_have_text("1 segment · GSM-7")
        reply = page.locator(".msg.received", has_text="Thanks, we got your message: hello bot")
        await expect(reply.locator('.status[data-status="delivered"]')).to_be_visible(timeout=WAIT)
        await expect(reply.locator(".status")).to_contain_text("delivered 220")
        await expect(reply.locator(".segments")).to_have_text("1 segment · GSM-7")
        await shot(page, "simulator-reply-delivered")

        await page.click("#open-inspector")
        await expect(page.locator("#conversation-key")).to_have_text(KEY, timeout=WAIT)
        timeline = page.locator("#timeline")
        await expect(timeline.locator("tr[data-kind=inbound]")).to_contain_text("hello bot")
        await expect(timeline.locator("tr[data-kind=outbound]")).to_contain_text(
            "Thanks, we got your message: hello bot"
        )
        await expect(timeline.locator("tr[data-kind=sent]")).to_have_count(1)
        delivered = timeline.locator('tr[data-kind=receipt] [data-status="delivered"]')
        await expect(delivered).to_have_count(1, timeout=WAIT)
        await expect(timeline.locator("tr[data-kind=receipt]").last).to_contain_text("220")
        await expect(page.locator("#optout")).to_have_text("subscribed")
        await expect(page.locator('#messages [data-status="delivered"]')).to_have_count(1)
        await expect(page.locator(f'.conv-list li[data-key="{KEY}"]')).to_have_class("selected")
        await expect(page.locator('.stat[data-stat="conversations"] .n')).to_have_text("1")
        await shot(page, "inspector-timeline", full_page=True)

        await page.fill("#search", "999")
        await expect(page.locator(".conv-list")).to_contain_text("No conversation matches.")
        await page.fill("#search", "570156")
        await expect(page.locator(f'.conv-list li[data-key="{KEY}"]')).to_be_visible()
        assert problems.found == []


async def test_rcs_cards_mms_images_and_choices_render_and_a_tapped_choice_is_answered(
    browser: Browser, redis: Redis, redis_server: RedisServer, tmp_path: Path
) -> None:
    async with demo_gateway(redis_server.url, tmp_path / "data") as demo:
        page, problems = await new_page(browser)
        await page.goto(f"{demo.url}/simulator?number={quote(HANDSET)}")
        await expect(page.locator("#rcs")).to_be_checked()

        for text in ("card", "pic", "colour"):
            await type_message(page, text)
        await expect(page.locator(".msg.sent .bubble")).to_have_text(["card", "pic", "colour"])

        card = page.locator(".msg.received .card")
        await expect(card.locator(".title")).to_have_text("Our shop", timeout=WAIT)
        await expect(card.locator(".description")).to_have_text("Open 9 to 5")
        await expect(card.locator('.choice[data-postback="book"]')).to_have_text("Book")
        mms = page.locator('.msg.received[data-format="MMS"]')
        await expect(mms).to_contain_text("Here is a picture", timeout=WAIT)
        await expect(mms.locator(".status")).to_have_attribute(
            "data-status", "delivered", timeout=WAIT
        )
        question = page.locator(".msg.received", has_text="Pick one")
        choices = question.locator(".choice")
        await expect(choices).to_have_text(["Red", "Blue"], timeout=WAIT)
        await expect(question.locator('.status[data-status="delivered"]')).to_be_visible(
            timeout=WAIT
        )
        assert await image_loaded(page, ".msg.received .card img")
        assert await image_loaded(page, '.msg.received[data-format="MMS"] img')
        await shot(page, "simulator-rcs-choices")

        await question.locator('.choice[data-postback="Red"]').click()
        tap = page.locator(".msg.sent", has_text="Red")
        await expect(tap).to_contain_text("tapped", timeout=WAIT)
        answer = page.locator(".msg.received", has_text="You picked Red")
        await expect(answer.locator('.status[data-status="delivered"]')).to_be_visible(timeout=WAIT)
        await shot(page, "simulator-rcs-answer")

        await page.goto(f"{demo.url}/inspector#conv={quote(KEY, safe='')}")
        await expect(page.locator("#state")).to_have_text(
            f"{PLUGIN}: webtest.picking:chosen", timeout=WAIT
        )
        await expect(page.locator("#data")).to_contain_text('"colour": "Red"')
        await expect(page.locator("#timeline tr[data-kind=state]")).to_have_count(2)
        assert problems.found == []


async def test_the_simulator_links_only_to_http_pages_and_tel_numbers(
    browser: Browser, redis: Redis, redis_server: RedisServer, tmp_path: Path
) -> None:
    async with demo_gateway(redis_server.url, tmp_path / "data") as demo:
        choices = [
            {"text": "Site", "url": "https://example.com/book"},
            {"text": "Call us", "url": "tel:+61491570157"},
        ]
        async with aiohttp.ClientSession() as http:
            response = await http.post(
                f"{demo.url}/api/messages",
                json={
                    "to": HANDSET,
                    "channel": "rcs",
                    "rcs": {"text": "Book?", "choices": choices},
                },
            )
            assert response.status == 202, await response.text()
        page, problems = await new_page(browser)
        await page.goto(f"{demo.url}/simulator?number={quote(HANDSET)}")
        question = page.locator(".msg.received", has_text="Book?")
        await expect(question.locator("a.action")).to_have_count(2, timeout=WAIT)
        link = question.locator('a[data-action="url"]')
        await expect(link).to_have_attribute("href", "https://example.com/book")
        await expect(link).to_have_attribute("target", "_blank")
        await expect(question.locator('a[data-action="call"]')).to_have_attribute(
            "href", "tel:+61491570157"
        )
        # Whatever the data holds, the page makes no other link.
        unsafe = [
            "javascript:alert(1)",
            " JavaScript:alert(1)",
            "data:text/html,<b>x</b>",
            "//evil.example/x",
            "/relative",
            "vbscript:x",
            None,
        ]
        for value in unsafe:
            assert await page.evaluate("v => Web.safeUrl(v)", value) is None, value
        assert await page.evaluate("v => Web.safeUrl(v, ['tel:'])", "tel:+61491570157")
        assert problems.found == []


async def test_outside_the_demo_the_inspector_asks_for_the_token_first(
    browser: Browser, redis: Redis, redis_server: RedisServer
) -> None:
    async with production(redis_server, token=TOKEN) as (_, url, sandbox):
        await sandbox.handset(HANDSET).send("hello", to="+61491570157")
        page = await browser.new_page(viewport={"width": 1200, "height": 700})
        problems = Problems(page)
        await page.goto(f"{url}/inspector")
        await expect(page.locator("#auth")).to_be_visible(timeout=WAIT)
        await expect(page.locator("#app")).to_be_hidden()
        await page.fill("#token", "wrong")
        await page.press("#token", "Enter")
        await expect(page.locator("#error")).to_have_text("That token was refused.", timeout=WAIT)
        await page.fill("#token", AUTH["Authorization"].removeprefix("Bearer "))
        await page.press("#token", "Enter")
        await expect(page.locator("#app")).to_be_visible(timeout=WAIT)
        # Workers do not run here: the webhook's entry waits in the inbox.
        await expect(page.locator('.stat[data-stat="inbox"] .n')).to_have_text("1", timeout=WAIT)
        await expect(page.locator("#simulator-link")).to_be_hidden()
        await shot(page, "inspector-token")
        # The token lives in the page's memory only: nothing in storage, a reload asks again.
        stored = await page.evaluate(
            "() => JSON.stringify([{...sessionStorage}, {...localStorage}, document.cookie])"
        )
        assert TOKEN not in stored
        await page.reload()
        await expect(page.locator("#auth")).to_be_visible(timeout=WAIT)
        await expect(page.locator("#app")).to_be_hidden()
        # the refused token is reported: a 403 (and its 401s) are the only console errors
        assert all("status of 40" in p for p in problems.found), problems.found
