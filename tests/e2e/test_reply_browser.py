"""Replying from the inbox in a real browser (Debian's chromium, driven by Playwright) over the
whole stack (`stayhuman up`: NATS, ingest, router, notify, api and outbound as separate processes).

Acme answers on Messenger (its messages come by the signed generic webhook, kind dm; its replies
go to a fake of Meta's Graph API) and on Mastodon (a mention polled from a fake instance; replies
go to a fake of Mastodon's write API). kai, Acme's agent, answers a Messenger DM and a Mastodon
mention from their pages: each fake receives exactly what the platform documents, the reply
shows in the thread under kai's name, and the countdown is gone. A DM whose last message is
eight days old shows, before anyone types, that the window closed and where to answer instead,
and offers no Send. The conversation page with its reply box passes axe-core's WCAG 2.1 A and AA
rules; no page breaks its Content-Security-Policy or throws.

The screenshot of the reply box is saved in $STAYHUMAN_SCREENSHOTS as reply.png (else the
test's temporary folder); the README shows it.
"""

import json
import os
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, Page, expect
from sqlalchemy import select

from shared import ids
from shared.db.core import CONVERSATIONS, INTERACTIONS
from shared.db.models import ReplyRow
from stayhuman.invite import set_password
from tests.browser import accessibility_problems, playwright_browser
from tests.e2e.stack import Stack, post_webhook
from tests.fake_platforms import FakeMastodon
from tests.helpers import eventually, generic_body, unique
from tests.write_fakes.mastodon import FakeMastodonWrites
from tests.write_fakes.meta import FakeMeta

pytestmark = pytest.mark.e2e

SECRET = "reply-browser-acme-secret-0123456789"
PASSWORD = "a long enough browser password"
REPLIES = ReplyRow.__table__


def config(meta: FakeMeta, polled: FakeMastodon, writes: FakeMastodonWrites) -> str:
    return f"""
people:
  - {{id: kai, name: Kai Tanaka, email: kai@example.com}}
tenants:
  - id: acme
    name: Acme Outdoor
    sla_policies: [{{name: standard, first_response: 30m}}]
    teams: [{{id: care, name: Care, sla_policy: standard, members: [kai]}}]
    accounts:
      - id: acme-messenger
        platform: facebook
        handle: Acme
        team: care
        webhook_secret: {SECRET}
        external_id: "{meta.page_id}"
        reply:
          page_access_token: {meta.token}
          api_base_url: {meta.api_base_url}
      - id: acme-social
        platform: mastodon
        handle: "@acme@social.example"
        team: care
        external_id: "{polled.own_id}"
        api_base_url: {polled.url}
        access_token: {polled.token}
        reply:
          access_token: {writes.token}
          api_base_url: {writes.url}
"""


@pytest.fixture
def fakes() -> Iterator[tuple[FakeMeta, FakeMastodon, FakeMastodonWrites]]:
    meta, polled, writes = (
        FakeMeta(page_name="Acme").start(),
        FakeMastodon().start(),
        FakeMastodonWrites().start(),
    )
    yield meta, polled, writes
    for fake in (meta, polled, writes):
        fake.stop()


@pytest.fixture
def stack(tmp_path: Path, fakes: tuple[FakeMeta, FakeMastodon, FakeMastodonWrites]) -> Iterator[Stack]:
    stack = Stack.configured(
        tmp_path / "stack", config(*fakes), STAYHUMAN_POLL_INTERVAL="1s"
    ).start()  # SQLite in the state folder, NATS embedded: as `up` runs them by default
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


async def messenger_dm(stack: Stack, psid: str, name: str, text: str, *, written: datetime) -> str:
    """A Messenger message by the generic webhook (kind dm, its thread the person's, as Meta's
    webhook has it); the id its conversation will have."""
    thread = f"dm:{psid}"
    body = generic_body(
        unique("mid"),
        thread_id=thread,
        kind="dm",
        author={"id": psid, "name": name},
        text=text,
        created_at=written,
        url=f"https://business.facebook.com/latest/inbox/all?selected_item_id={psid}",
    )
    async with httpx.AsyncClient(timeout=10) as hooks:
        answer = await post_webhook(hooks, stack, "acme-messenger", SECRET, body)
    assert answer.status_code == 202, answer.text
    return ids.conversation_id(account_id="acme-messenger", thread_id=thread)


async def conversation(stack: Stack, conversation_id: str, **wanted: Any) -> Any:
    async def check() -> Any:
        found = await stack.query(select(CONVERSATIONS).where(CONVERSATIONS.c.id == conversation_id))
        row = found[0] if found else None
        return row if row is not None and all(getattr(row, k) == v for k, v in wanted.items()) else None

    return await eventually(check, what=f"{conversation_id} with {wanted}", timeout=30, interval=0.2)


async def reply_of(stack: Stack, conversation_id: str) -> Any:
    rows = await stack.query(select(REPLIES).where(REPLIES.c.conversation_id == conversation_id))
    assert len(rows) == 1, rows
    return rows[0]


async def brand_messages(stack: Stack, conversation_id: str) -> list[Any]:
    query = select(INTERACTIONS).where(
        INTERACTIONS.c.conversation_id == conversation_id, INTERACTIONS.c.direction == "outbound"
    )
    return await stack.query(query)


async def sign_in(page: Page, stack: Stack, then: str) -> None:
    await page.goto(stack.url("api", then))
    await page.get_by_label("Email").fill("kai@example.com")
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page).to_have_url(stack.url("api", then))


async def answer(page: Page, stack: Stack, conversation_id: str, platform: str, text: str) -> None:
    """Open the conversation, write the reply and send it; it shows in the thread, sent, by kai."""
    await page.goto(stack.url("api", f"/inbox/c/{conversation_id}"))
    await page.locator("body[data-live='open']").wait_for(state="attached", timeout=10_000)
    countdown = page.locator("[data-countdown]")
    await expect(countdown).to_have_attribute("data-clock", "running")
    await page.get_by_label(f"Your reply on {platform}").fill(text)
    await expect(page.locator("[data-reply-count]")).to_contain_text(f"{len(text)} of")
    await page.get_by_role("button", name="Send", exact=True).click()
    sent = page.locator("ol.messages li.message", has_text=text)
    await expect(sent).to_have_count(1, timeout=20_000)
    await expect(sent.locator("[data-reply-state]")).to_have_attribute(
        "data-reply-state", "sent", timeout=20_000
    )
    await expect(sent.locator(".by strong")).to_have_text("Kai Tanaka")
    await expect(countdown).to_have_attribute("data-clock", "stopped", timeout=20_000)
    await expect(page.locator("[data-state]")).to_have_text("responded", timeout=20_000)


async def test_a_person_answers_on_messenger_and_mastodon_from_the_inbox(
    stack: Stack, fakes: tuple[FakeMeta, FakeMastodon, FakeMastodonWrites], browser: Browser, shots: Path
) -> None:
    meta, polled, writes = fakes
    await set_password(stack.database_url, "kai", PASSWORD)
    now = datetime.now(UTC)
    dm = await messenger_dm(stack, "6100000000001", "Sam Carter", "My order never arrived", written=now)
    late = await messenger_dm(
        stack, "6100000000002", "Old Friend", "Any news on the tent?", written=now - timedelta(days=8)
    )
    # A mention on Mastodon, polled; the write fake knows the status it answers (it is the same instance).
    mention = polled.mention(1)
    status = mention["status"]
    writes.statuses[status["id"]] = {
        **status,
        "text": "",
        "account": {"id": "70001", "acct": "fan1@fosstodon.example"},
    }
    toot = ids.conversation_id(account_id="acme-social", thread_id=f"status:{status['id']}")
    for waiting in (dm, late, toot):
        await conversation(stack, waiting, owner_id="kai")

    context = await browser.new_context(viewport={"width": 1280, "height": 1000})
    page = await context.new_page()
    problems: list[str] = []  # what the pages' Content-Security-Policy blocked, and script errors
    page.on("console", lambda m: problems.append(f"{m.text} ({page.url})") if m.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(f"uncaught: {error}"))
    await sign_in(page, stack, f"/inbox/c/{dm}")

    # Before typing: the rule, the box, the count against Messenger's 2,000 characters.
    await expect(page.locator("[data-verdict]")).to_contain_text("Messenger")
    await expect(page.locator("[data-reply-count]")).to_have_text("0 of 2,000 characters")
    await page.get_by_label("Your reply on Messenger").fill("Sorry Sam! A new one is on its way today.")
    await page.screenshot(path=shots / "reply.png", full_page=True)

    # Messenger: the Send API, as a response within the 24 hours, to the person's PSID.
    text = "Sorry Sam! A new one is on its way today."
    await answer(page, stack, dm, "Messenger", text)
    posts = meta.requests("POST", f"/v21.0/{meta.page_id}/messages")
    assert len(posts) == 1, meta.received
    assert posts[0].headers["authorization"] == f"Bearer {meta.token}"
    assert posts[0].json() == {
        "recipient": {"id": "6100000000001"},
        "messaging_type": "RESPONSE",
        "message": {"text": text},
    }
    sent = await reply_of(stack, dm)
    assert sent.state == "sent" and sent.person_id == "kai" and sent.method == "send_api"
    assert sent.platform_id == meta.stored()[0]["id"]
    # Meta's echo of the same message (its webhook, the same mid) is the same message: counted once.
    echo = generic_body(
        sent.platform_id, thread_id="dm:6100000000001", kind="dm", direction="outbound",
        author={"id": meta.page_id, "name": "Acme"}, text=text,
    )  # fmt: skip
    async with httpx.AsyncClient(timeout=10) as hooks:
        echoed = await post_webhook(hooks, stack, "acme-messenger", SECRET, echo)
    assert echoed.status_code == 202, echoed.text
    assert json.loads(echoed.text)["interaction_id"] == ids.interaction_id(
        tenant_id="acme", account_id="acme-messenger", external_id=sent.platform_id, edit_version=0
    )
    # A message after it on the same account is routed after it: then the echo has been too.
    after = await messenger_dm(stack, "6100000000003", "Nia Okafor", "Do you repair zips?", written=now)
    await conversation(stack, after, owner_id="kai")
    assert len(await brand_messages(stack, dm)) == 1
    await page.reload()
    await expect(page.locator("ol.messages li.message", has_text=text)).to_have_count(1)
    await expect(page.locator("[data-countdown]")).to_have_attribute("data-clock", "stopped")

    # Mastodon: a status in reply, mentioning the author, public as the mention was, with the key.
    words = "We open at 8 on Sundays."
    await answer(page, stack, toot, "Mastodon", words)
    statuses = writes.requests("POST", "/api/v1/statuses")
    assert len(statuses) == 1, writes.received
    sent = await reply_of(stack, toot)
    request = statuses[0]
    assert request.headers["authorization"] == f"Bearer {writes.token}"
    assert request.headers["idempotency-key"] == sent.key
    body = request.json() if "json" in request.headers.get("content-type", "") else request.form()
    assert body["status"] == f"@fan1@fosstodon.example {words}"
    assert body["in_reply_to_id"] == status["id"] and body["visibility"] == "public"
    assert sent.state == "sent" and sent.platform_id == writes.own_statuses()[0]["id"]
    assert len(await brand_messages(stack, toot)) == 1

    # Eight days after the person's last message Messenger takes no reply: the page says so
    # before anyone types, links to the Page inbox, and offers no Send.
    await page.goto(stack.url("api", f"/inbox/c/{late}"))
    verdict = page.locator("[data-verdict]")
    await expect(verdict).to_contain_text("Messenger: the 7-day window closed on")
    await expect(verdict).to_contain_text("answer in the Page inbox")
    await expect(verdict.get_by_role("link", name="Answer on Messenger")).to_have_attribute(
        "href", "https://business.facebook.com/latest/inbox/all?selected_item_id=6100000000002"
    )
    await expect(page.get_by_role("button", name="Send", exact=True)).to_have_count(0)
    await expect(page.locator("textarea")).to_have_count(0)
    assert len(meta.requests("POST")) == 1  # nothing more was posted

    blocked = [line for line in problems if "Content Security Policy" in line or line.startswith("uncaught")]
    assert not blocked, blocked
    await context.close()

    # The conversation page with its reply box passes axe-core's WCAG 2.1 A and AA rules.
    checking = await browser.new_context(viewport={"width": 1280, "height": 1000}, bypass_csp=True)
    checker = await checking.new_page()
    fresh = after  # still waiting for an answer: its page has the reply box
    await sign_in(checker, stack, f"/inbox/c/{fresh}")
    await expect(checker.get_by_label("Your reply on Messenger")).to_be_visible()
    found = {f"/inbox/c/{fresh}": await accessibility_problems(checker)}
    for path in (f"/inbox/c/{dm}", f"/inbox/c/{late}"):
        await checker.goto(stack.url("api", path))
        found[path] = await accessibility_problems(checker)
    assert not any(found.values()), found
    await checking.close()
