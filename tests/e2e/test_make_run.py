"""`make run` as a newcomer meets it: the demo's overdue email shows up in the dev mailbox, and
with the inbox address and a demo login it printed, they sign in in a browser and answer one of
the demo's conversations from its page: the demo platform it printed receives the reply, the
clock stops, and the platform's echo of the reply is the same message, counted once."""

import asyncio
import html
import os
import re
import signal
import sqlite3
import subprocess
import time
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright
from sqlmodel import select

from shared.db.models import InteractionRow
from shared.db.session import create_engine, session_factory
from stayhuman.demo.feed import ACCOUNT, FEED, post
from stayhuman.natsserver import free_ports
from tests.browser import FLAGS, chromium, dump_dom, screenshot

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).parents[2]


async def interactions_of(database: Path, conversation_id: str) -> list[InteractionRow]:
    engine = create_engine(f"sqlite+aiosqlite:///{database}")
    try:
        async with session_factory(engine)() as session:
            query = select(InteractionRow).where(InteractionRow.conversation_id == conversation_id)
            return list((await session.exec(query)).all())
    finally:
        await engine.dispose()


def test_make_run_shows_an_overdue_email_in_the_dev_mailbox(tmp_path: Path) -> None:
    names = ("INGEST", "INGEST_OPS", "ROUTER", "NOTIFY", "NOTIFY_OPS", "API", "API_OPS", "OUTBOUND")
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    env = {
        **os.environ,
        "STAYHUMAN_STATE_DIR": str(tmp_path / "state"),
        **{f"STAYHUMAN_{name}_PORT": str(port) for name, port in ports.items()},
    }
    for name in ("STAYHUMAN_NATS_URL", "STAYHUMAN_DATABASE_URL", "STAYHUMAN_SMTP_HOST"):
        env.pop(name, None)
    log = (tmp_path / "make-run.log").open("wb")
    started = time.monotonic()
    make = subprocess.Popen(
        ["make", "run"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        mailbox_url = f"http://127.0.0.1:{ports['NOTIFY']}/mailbox"
        page = ""
        while time.monotonic() - started < 180:
            assert make.poll() is None, (tmp_path / "make-run.log").read_text()[-3000:]
            if "mailbox" in (tmp_path / "make-run.log").read_text(errors="replace"):
                page = dump_dom(mailbox_url)
                if "Overdue on Facebook" in page:
                    break
            time.sleep(2)
        print(f"first overdue email on the mailbox page {time.monotonic() - started:.0f} s after `make run`")
        assert "Overdue on Facebook" in page, (tmp_path / "make-run.log").read_text()[-3000:]
        screenshot(mailbox_url, tmp_path / "mailbox.png")
        text = html.unescape(page)
        unanswered = [m for m in FEED if m.answered_after is None]
        answered = [m for m in FEED if m.answered_after is not None]
        assert any(f"{m.author} has waited" in text for m in unanswered)
        assert not any(f"{m.author} has waited" in text for m in answered)
        conversation_id = re.search(rf"Conversation ([0-9a-f]{{32}}) on account {re.escape(ACCOUNT)}", text)
        assert conversation_id is not None
        rows = asyncio.run(interactions_of(tmp_path / "state" / "stayhuman.db", conversation_id.group(1)))
        # it came in through ingest's signed webhook: stored once, with the correlation id ingest gave it
        assert len(rows) == 1 and rows[0].correlation_id and rows[0].direction == "inbound"
        assert any(rows[0].text == m.text for m in unanswered)
        work_the_inbox(tmp_path, (tmp_path / "make-run.log").read_text(errors="replace"), ports["INGEST"])
    finally:
        os.killpg(make.pid, signal.SIGTERM)
        try:
            make.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(make.pid, signal.SIGKILL)


def work_the_inbox(tmp_path: Path, printed: str, ingest_port: int) -> None:
    """Sign in where `make run` said, as the demo agent it printed, and answer a conversation from
    its page; then look at the demo platform it printed."""
    inbox = re.search(r"^  inbox     (http://\S+/inbox)$", printed, re.MULTILINE)
    login = re.search(r"^    agent +(\S+@\S+) +(\S+)$", printed, re.MULTILINE)
    platform = re.search(
        r"^  platform  (http://\S+/)  \(demo: the replies it received\)$", printed, re.MULTILINE
    )
    assert inbox is not None and login is not None and platform is not None, printed[-3000:]
    words = "Thanks for writing, and sorry for the wait! Kai here: I'm on it."
    with sync_playwright() as driver:
        browser = driver.chromium.launch(
            executable_path=chromium(), args=[flag for flag in FLAGS if flag != "--headless"]
        )
        try:
            page = browser.new_page()
            page.goto(inbox.group(1))
            page.get_by_label("Email").fill(login.group(1))
            page.get_by_label("Password").fill(login.group(2))
            page.get_by_role("button", name="Sign in").click()
            rows = page.locator('[data-list="mine"] [data-row][data-respond] a.open')
            rows.first.wait_for(timeout=60_000)
            rows.first.click()
            expect(page.locator("[data-countdown]")).to_have_attribute("data-clock", "running")
            page.get_by_label(re.compile(r"^Your reply on ")).fill(words)
            page.get_by_role("button", name="Send", exact=True).click()
            sent = page.locator("ol.messages li.message", has_text=words)
            expect(sent).to_have_count(1, timeout=30_000)
            expect(sent.locator("[data-reply-state]")).to_have_attribute(
                "data-reply-state", "sent", timeout=30_000
            )
            expect(sent.locator(".by strong")).to_have_text("Kai Tanaka")
            expect(page.locator("[data-countdown]")).to_have_attribute(
                "data-clock", "stopped", timeout=15_000
            )
            expect(page.locator("[data-state]")).to_have_text("responded", timeout=15_000)
            page.screenshot(path=tmp_path / "inbox.png", full_page=True)
            conversation = page.url

            # The demo platform took it (once), and sent it back to StayHuman as its echo.
            page.goto(platform.group(1))
            expect(page.get_by_role("heading", level=1)).to_have_text(
                "Kettle Coffee on the demo platform: the replies it received"
            )
            listed = page.locator("tbody tr", has_text=words)
            expect(listed).to_have_count(1)
            expect(listed).to_contain_text("echoed to StayHuman", timeout=20_000)  # the page reloads itself
            page.screenshot(path=tmp_path / "platform.png", full_page=True)

            # A message ingest takes after the echo is routed after it: then the echo was too, and
            # the thread still shows the reply once.
            post(f"http://127.0.0.1:{ingest_port}", after_the_echo())
            database = tmp_path / "state" / "stayhuman.db"
            deadline = time.monotonic() + 30
            while not read(database, "SELECT id FROM conversation WHERE thread_id = ?", "after-the-echo"):
                assert time.monotonic() < deadline, "the message after the echo was not routed"
                time.sleep(0.3)
            page.goto(conversation)
            expect(page.locator("ol.messages li.message", has_text=words)).to_have_count(1)
            brand = "SELECT direction, sent_by FROM interaction WHERE conversation_id = ? AND text = ?"
            assert read(database, brand, conversation.rsplit("/", 1)[1], words) == [("outbound", "kai")]
        finally:
            browser.close()


def after_the_echo() -> dict[str, object]:
    return {
        "external_id": "after-the-echo",
        "kind": "comment",
        "direction": "inbound",
        "thread_id": "after-the-echo",
        "author": {"id": "demo-test", "name": "Test Reader"},
        "text": "Lovely, thanks!",
        "created_at": datetime.now(UTC).isoformat(),
    }


def read(database: Path, query: str, *parameters: str) -> list[tuple[object, ...]]:
    """Rows of the demo's SQLite database (plainly: Playwright's loop runs in this thread)."""
    with closing(sqlite3.connect(database)) as connection:
        return list(connection.execute(query, parameters))
