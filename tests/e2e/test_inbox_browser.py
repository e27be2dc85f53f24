"""The inbox in a real browser (Debian's chromium, driven by Playwright) over the whole stack
(`stayhuman up`: NATS, ingest, router, notify and the api as separate processes).

kai is acme's one agent, with room for one conversation; lena leads acme's care team; vic is
acme's client viewer; gus works for globex. kai signs in, sees a new message reach his team's
queue within two seconds of its webhook, is refused its claim while he is full (and reads
why), answers his first conversation, claims the waiting one, marks it answered and watches
its countdown stop. He cannot open globex's conversation by its address. When the api
process dies under his open page, the page hears, once each, every update it missed. vic
sees reports and no word a customer wrote.

Each page's screenshot is saved in $STAYHUMAN_SCREENSHOTS (else the test's temporary
folder); the README shows them.
"""

import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, Page, expect
from sqlalchemy import select

from shared import ids
from shared.db.core import CONVERSATIONS
from stayhuman.invite import set_password
from stayhuman.natsserver import EmbeddedNats
from tests.browser import accessibility_problems, playwright_browser
from tests.e2e.stack import Stack, post_webhook
from tests.helpers import eventually, generic_body, unique

pytestmark = pytest.mark.e2e

APPEARS_WITHIN = 2.0  # seconds from the webhook's 202 to the row on the page: the promise
ACME_SECRET = "inbox-browser-acme-secret-0123456789"
GLOBEX_SECRET = "inbox-browser-globex-secret-0123456789"
CONFIG = f"""
people:
  - {{id: lena, name: Lena Lead, email: lena@example.com}}
  - {{id: kai, name: Kai Tanaka, email: kai@example.com, capacity: 1}}
  - {{id: vic, name: Vic Viewer, email: vic@example.com}}
  - {{id: gus, name: Gus Globex, email: gus@example.com}}
tenants:
  - id: acme
    name: Acme Outdoor
    viewers: [vic]
    sla_policies: [{{name: standard, first_response: 30m}}]
    teams: [{{id: care, name: Care, sla_policy: standard, lead: lena, members: [kai]}}]
    accounts: [{{id: acme-fb, platform: facebook, handle: Acme, team: care, webhook_secret: {ACME_SECRET}}}]
  - id: globex
    name: Globex
    sla_policies: [{{name: standard, first_response: 1h}}]
    teams: [{{id: help, name: Help, sla_policy: standard, members: [gus]}}]
    accounts: [{{id: globex-fb, platform: facebook, handle: Globex, team: help, webhook_secret: {GLOBEX_SECRET}}}]
"""
PASSWORD = "a long enough browser password"


@pytest.fixture
def stack(tmp_path: Path, nats_server: EmbeddedNats, empty_database_url: str) -> Any:
    stack = Stack.configured(
        tmp_path / "stack", CONFIG, nats=nats_server, STAYHUMAN_DATABASE_URL=empty_database_url
    ).start()
    yield stack
    stack.stop()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("STAYHUMAN_SCREENSHOTS") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with playwright_browser() as browser:
        yield browser


async def message(stack: Stack, account: str, thread: str, text: str) -> str:
    """A customer's message by webhook, answered 202; the id its conversation will have."""
    secret = ACME_SECRET if account == "acme-fb" else GLOBEX_SECRET
    async with httpx.AsyncClient(timeout=10) as hooks:
        answer = await post_webhook(
            hooks, stack, account, secret, generic_body(unique("m"), thread_id=thread, text=text)
        )
    assert answer.status_code == 202, answer.text
    return ids.conversation_id(account_id=account, thread_id=thread)


async def routed(stack: Stack, conversation_id: str, **wanted: Any) -> Any:
    async def check() -> Any:
        found = await stack.query(select(CONVERSATIONS).where(CONVERSATIONS.c.id == conversation_id))
        row = found[0] if found else None
        return row if row is not None and all(getattr(row, k) == v for k, v in wanted.items()) else None

    return await eventually(check, what=f"{conversation_id} with {wanted}", timeout=20)


async def sign_in(page: Page, stack: Stack, email: str, then: str = "/inbox") -> None:
    await page.goto(stack.url("api", then))
    await expect(page).to_have_url(stack.url("api", "/login?next=") + then.replace("/", "%2F"))
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()


async def live(page: Page) -> None:
    await page.locator("body[data-live='open']").wait_for(state="attached", timeout=10_000)


def row(conversation_id: str, within: str = "") -> str:
    return f'{within} [data-row][data-id="{conversation_id}"]'.strip()


async def test_a_person_works_the_inbox_in_a_real_browser(
    stack: Stack, browser: Browser, shots: Path
) -> None:
    for person in ("lena", "kai", "vic", "gus"):
        await set_password(stack.database_url, person, PASSWORD)
    first = await message(stack, "acme-fb", unique("t-first"), "My tent pole snapped on day one")
    await routed(stack, first, owner_id="kai")

    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    refused: list[str] = []  # what the pages' Content-Security-Policy blocked, and script errors
    page.on(
        "console",
        lambda message: refused.append(f"{message.text} ({page.url})") if message.type == "error" else None,
    )
    page.on("pageerror", lambda error: refused.append(f"uncaught: {error}"))
    await sign_in(page, stack, "kai@example.com")
    await expect(page).to_have_url(stack.url("api", "/inbox"))
    await expect(page.locator(row(first, '[data-list="mine"]'))).to_be_visible()
    await live(page)

    # A new message reaches kai's team's queue (kai is full) and his page, without a reload.
    sent = time.monotonic()
    waiting = await message(stack, "acme-fb", unique("t-wait"), "Do you ship stoves to Norway?")
    await page.locator(row(waiting, '[data-list="queue"]')).wait_for(timeout=10_000)
    appeared = time.monotonic() - sent
    print(f"\nthe new conversation was on the open page {appeared:.2f} s after its webhook's 202")
    assert appeared < APPEARS_WITHIN, f"the new conversation took {appeared:.2f} s to appear"
    await page.screenshot(path=shots / "my-work.png", full_page=True)

    # A claim the router refuses shows its reason.
    await page.locator(row(waiting) + " a.open").click()
    await expect(page).to_have_url(stack.url("api", f"/inbox/c/{waiting}"))
    await page.get_by_role("button", name="Claim").click()
    outcome = page.locator("[data-outcome]")
    await expect(outcome).to_have_text("Refused: kai is at capacity (1/1)", timeout=10_000)
    await expect(outcome).to_have_attribute("data-kind", "rejected")

    # kai steps away (so the router hands him nothing), answers his first conversation, then
    # claims the waiting one himself and answers it too.
    await page.get_by_label("Status").select_option("away")
    await expect(page.locator("select[data-status]")).to_have_attribute(
        "data-applied", "away", timeout=10_000
    )
    await page.goto(stack.url("api", f"/inbox/c/{first}"))
    await live(page)
    await page.get_by_role("button", name="Mark responded").click()
    await expect(outcome).to_have_text("Marked responded", timeout=10_000)
    await expect(page.locator("[data-countdown]")).to_have_attribute("data-clock", "stopped", timeout=10_000)

    await page.goto(stack.url("api", f"/inbox/c/{waiting}"))
    await live(page)
    await page.get_by_role("button", name="Claim").click()
    await expect(outcome).to_have_text("Claimed", timeout=10_000)
    await expect(page.locator("[data-owner]")).to_have_text("Kai Tanaka", timeout=10_000)
    countdown = page.locator("[data-countdown]")
    await expect(countdown).to_have_attribute("data-clock", "running")
    await expect(page.locator("[data-timeline]")).to_contain_text("Assigned to kai", timeout=10_000)
    await page.screenshot(path=shots / "conversation.png", full_page=True)
    await page.get_by_role("button", name="Mark responded").click()
    await expect(countdown).to_have_attribute("data-clock", "stopped", timeout=10_000)
    await expect(countdown).to_contain_text("no deadline running")
    await page.get_by_label("Status").select_option("available")
    await expect(page.locator("select[data-status]")).to_have_attribute(
        "data-applied", "available", timeout=10_000
    )

    # Another tenant's conversation is not found by its address.
    elsewhere = await message(stack, "globex-fb", unique("t-globex"), "Globex secret words")
    await routed(stack, elsewhere, owner_id="gus")
    answer = await page.goto(stack.url("api", f"/inbox/c/{elsewhere}"))
    assert answer is not None and answer.status == 404
    await expect(page.get_by_role("heading", name="Not found")).to_be_visible()
    assert "Globex secret words" not in await page.content()

    # The api dies under an open page; the page resumes where it was and misses nothing.
    await page.goto(stack.url("api", "/inbox"))
    await live(page)
    before = stack.service_pid("api")
    os.kill(before, signal.SIGKILL)
    during = await message(stack, "acme-fb", unique("t-during"), "Sent while the inbox was down")
    await routed(stack, during, owner_id="kai")
    await page.locator(row(during, '[data-list="mine"]')).wait_for(timeout=30_000)
    assert stack.service_pid("api") != before
    heard = await page.evaluate("window.inboxEvents")
    detail = await page.request.get(stack.url("api", f"/api/conversations/{during}"))
    expected = [entry["seq"] for entry in (await detail.json())["timeline"]]
    got = [event["seq"] for event in heard if event["type"] == "timeline"]
    assert expected and set(expected) <= set(got), (expected, heard)
    assert len(got) == len(set(got)), f"an update came twice: {heard}"
    # (a refresh that failed while the api was down is no error of the page's)
    blocked = [text for text in refused if "Content Security Policy" in text or text.startswith("uncaught")]
    assert not blocked, blocked

    # The keyboard: j and k move between conversations, r marks the one in focus responded.
    await page.keyboard.press("j")
    await expect(page.locator("[data-row] a.open").first).to_be_focused()
    await page.locator(row(during) + " a.open").focus()
    await page.keyboard.press("r")
    await expect(page.locator("[data-outcome]")).to_have_text("Marked responded", timeout=10_000)
    await expect(page.locator(row(during) + " [data-countdown]")).to_have_attribute(
        "data-clock", "stopped", timeout=10_000
    )
    await expect(page.locator(row(during) + " a.open")).to_be_focused()  # kept across the refresh
    await context.close()

    # The team lead's board.
    lead = await (await browser.new_context(viewport={"width": 1280, "height": 900})).new_page()
    await sign_in(lead, stack, "lena@example.com", "/inbox/board")
    await expect(lead.get_by_role("heading", name="Acme Outdoor")).to_be_visible()
    await lead.screenshot(path=shots / "board.png", full_page=True)

    await lead.goto(stack.url("api", f"/inbox/c/{during}"))
    await lead.get_by_role("button", name="Back to Care's queue").click()  # a form's action
    await expect(lead.locator("[data-outcome]")).to_have_text("Reassigned", timeout=10_000)
    await expect(lead.get_by_label("Give it to")).to_be_visible()
    await lead.goto(stack.url("api", "/inbox/configuration"))
    await expect(lead.get_by_role("heading", name="Configuration of Acme Outdoor")).to_be_visible()
    await expect(lead.locator("pre.yaml")).to_contain_text("webhook_secret: <redacted>")
    assert ACME_SECRET not in await lead.content()
    await lead.screenshot(path=shots / "configuration.png", full_page=True)

    # The client viewer lands on the reports: figures and charts, and no word a customer wrote.
    viewer = await (await browser.new_context(viewport={"width": 1280, "height": 900})).new_page()
    await sign_in(viewer, stack, "vic@example.com")
    await expect(viewer).to_have_url(stack.url("api", "/inbox/reports"))
    await expect(viewer.get_by_role("heading", name="Reports")).to_be_visible()
    await expect(viewer.locator("svg[role=img]")).to_have_count(2)
    content = await viewer.content()
    for words in ("tent pole", "stoves to Norway", "while the inbox was down", "Globex secret words"):
        assert words not in content
    assert await viewer.locator("[data-figure=median]").inner_text() != "—"  # kai's replies were counted
    await viewer.screenshot(path=shots / "reports.png", full_page=True)
    refused = await viewer.goto(stack.url("api", f"/inbox/c/{first}"))
    assert refused is not None and refused.status in (403, 404)
    assert "tent pole" not in await viewer.content()

    # Every page passes axe-core's WCAG 2.1 A and AA rules (labels, contrast, names, structure).
    checking = await browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=True)
    checker = await checking.new_page()
    await checker.goto(stack.url("api", "/login"))
    problems = {"/login": await accessibility_problems(checker)}
    for person, paths in (
        ("kai@example.com", ["/inbox", f"/inbox/c/{during}"]),
        ("lena@example.com", ["/inbox/board", "/inbox/configuration"]),
        ("vic@example.com", ["/inbox/reports"]),
    ):
        await checking.clear_cookies()
        await sign_in(checker, stack, person, paths[0])
        await expect(checker).to_have_url(stack.url("api", paths[0]))
        for path in paths:
            await checker.goto(stack.url("api", path))
            problems[path] = await accessibility_problems(checker)
    assert not any(problems.values()), problems
    await checking.close()

    # My work on a phone.
    phone = await (
        await browser.new_context(
            viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True
        )
    ).new_page()
    await sign_in(phone, stack, "kai@example.com")
    await expect(phone.locator(row(during))).to_be_visible()
    await phone.screenshot(path=shots / "my-work-phone.png", full_page=True)
