"""Polled platforms against local fakes of their APIs: paging, 429 and 5xx, restarts."""

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func
from sqlmodel import select

from services.notify.mailbox import read_mailbox
from shared.db.models import ConversationRow, InteractionRow, PollStateRow
from shared.db.session import create_engine, session_factory
from tests.e2e.stack import Stack
from tests.fake_platforms import FakeBluesky, FakeMastodon, FakeYouTube
from tests.helpers import config_yaml, eventually

pytestmark = pytest.mark.e2e


@pytest.fixture
def fake() -> Iterator[FakeMastodon]:
    server = FakeMastodon().start()
    yield server
    server.stop()


def mastodon_config(fake: FakeMastodon) -> str:
    text = config_yaml(
        tenant="bluebird", account="bluebird-fb", secret="generic-secret-0123456789", people=["maria"]
    )
    return (
        text
        + "\n".join(
            [
                "      - id: bluebird-social",
                "        platform: mastodon",
                "        handle: '@bluebird@social.example'",
                "        team: care",
                "        webhook_secret: unused-secret-0123456789",
                f"        external_id: '{fake.own_id}'",
                f"        api_base_url: {fake.url}",
                "        access_token: ${MASTODON_TOKEN}",
            ]
        )
        + "\n"
    )


async def count(stack: Stack, model: type, **where: str) -> int:
    engine = create_engine(stack.database_url)
    try:
        async with session_factory(engine)() as session:
            query = select(func.count()).select_from(model)
            for column, value in where.items():
                query = query.where(getattr(model, column) == value)
            return int((await session.exec(query)).one())
    finally:
        await engine.dispose()


async def test_mastodon_is_polled_forward_without_gaps_or_duplicates(
    tmp_path: Path, fake: FakeMastodon
) -> None:
    for number in range(45):  # more than one page of 40
        fake.mention(number)
    fake.failures = [(429, {"Retry-After": "1"}), (503, {})]
    stack = Stack.configured(
        tmp_path / "stack",
        mastodon_config(fake),
        **{
            "STAYHUMAN_POLL_INTERVAL": "1s",
            "MASTODON_TOKEN": fake.token,
            "STAYHUMAN_OPERATOR_EMAIL": "ops@agency.example",
        },
    )
    try:
        stack.start()

        async def stored(expected: int) -> bool:
            return await count(stack, InteractionRow, account_id="bluebird-social") == expected

        # the first run takes the newest page (40): the start of the account's history
        await eventually(lambda: stored(40), timeout=30, interval=0.3, what="the first page")
        for number in range(45, 130):  # three pages arrive between two polls
            fake.mention(number)
        await eventually(lambda: stored(125), timeout=30, interval=0.3, what="the walk forward")
        # ingest dies in the middle of polling; `up` restarts it; it continues from its cursor
        fake.delay = 0.3
        for number in range(130, 200):
            fake.mention(number)
        await eventually(lambda: _polled_since(fake, 130), timeout=20, what="a poll of the new pages")
        os.kill(stack.service_pid("ingest"), signal.SIGKILL)
        fake.delay = 0.0
        await eventually(lambda: stored(195), timeout=60, interval=0.3, what="the rest after the restart")
        # the brand's own reply on Mastodon answers that conversation
        first = fake.notifications[5]["status"]["id"]
        fake.own_reply(1, to_status=first)

        async def answered() -> bool:
            return await count(stack, ConversationRow, thread_id=f"status:{first}", state="responded") == 1

        await eventually(answered, timeout=20, what="the responded conversation")
        assert await count(stack, ConversationRow, account_id="bluebird-social") == 195
        assert await count(stack, PollStateRow, account_id="bluebird-social", feed="health", state="ok") == 1
        assert any("429" in line or "rate limited" in line for line in stack.logs().splitlines())
        healthy = {row["id"]: row for row in json.loads(stack.cli("accounts", "--json").stdout)}
        assert healthy["bluebird-social"]["state"] == "ok" and healthy["bluebird-social"]["last_event_at"]
        assert healthy["bluebird-fb"]["mode"] == "webhook"
        # the token is revoked: the connector is reported failing, with the platform's answer
        fake.token = "revoked"

        async def failing() -> dict[str, str]:
            rows = {row["id"]: row for row in json.loads(stack.cli("accounts", "--json").stdout)}
            return rows["bluebird-social"] if rows["bluebird-social"]["state"] == "failing" else {}

        broken = await eventually(failing, timeout=20, interval=0.5, what="the failing connector")
        assert "HTTP 401" in broken["last_error"]
        assert "stayhuman_connector_failing{" in httpx.get(stack.url("ingest-ops", "/metrics")).text

        # ...and the operator is told, once, through notify (here: the dev mailbox of `up`)
        async def operator_mail() -> list[dict[str, str]]:
            return [m for m in read_mailbox(stack.state_dir / "mailbox") if m["to"] == "ops@agency.example"]

        (mail,) = await eventually(operator_mail, timeout=20, what="the operator alert")
        assert mail["subject"].endswith("the Mastodon connector of @bluebird@social.example keeps failing")
        assert "HTTP 401" in mail["body"]
    finally:
        stack.stop()


async def _polled_since(fake: FakeMastodon, number: int) -> bool:
    return any(f"min_id={1_000_000 + number - 1}" in url for url in fake.requests)


async def test_bluesky_and_youtube_are_paged_back_to_their_marks(tmp_path: Path) -> None:
    sky, tube = FakeBluesky().start(), FakeYouTube().start()
    for number in range(30):
        sky.mention(number)
        tube.comment(number)
    sky.like(30)
    text = config_yaml(
        tenant="bluebird", account="bluebird-fb", secret="generic-secret-0123456789", people=["maria"]
    )
    text += "\n".join(
        [
            "      - id: bluebird-sky", "        platform: bluesky", "        handle: bluebird.coffee",
            "        team: care", "        webhook_secret: unused-secret-0123456789",
            f"        external_id: '{sky.did}'", f"        api_base_url: {sky.url}", "        access_token: ${SKY_PASSWORD}",
            "      - id: bluebird-yt", "        platform: youtube", "        handle: Bluebird Coffee",
            "        team: care", "        webhook_secret: unused-secret-0123456789",
            f"        external_id: '{tube.channel}'", f"        api_base_url: {tube.url}", "        access_token: ${YT_KEY}",
        ]
    ) + "\n"  # fmt: skip
    stack = Stack.configured(
        tmp_path / "stack",
        text,
        **{"STAYHUMAN_POLL_INTERVAL": "1s", "SKY_PASSWORD": sky.app_password, "YT_KEY": tube.key},
    )
    try:
        stack.start()

        async def stored(account: str, expected: int) -> bool:
            return await count(stack, InteractionRow, account_id=account) == expected

        await eventually(
            lambda: stored("bluebird-sky", 30), timeout=30, interval=0.3, what="bluesky's first page"
        )
        await eventually(
            lambda: stored("bluebird-yt", 30), timeout=30, interval=0.3, what="youtube's first page"
        )
        sky.expire_sessions()  # the poller logs in again
        for number in range(31, 151):  # several pages between two polls
            sky.mention(number)
        threads = [tube.comment(number) for number in range(31, 181)]
        await eventually(
            lambda: stored("bluebird-sky", 150), timeout=40, interval=0.3, what="bluesky paged back"
        )
        await eventually(
            lambda: stored("bluebird-yt", 180), timeout=40, interval=0.3, what="youtube paged back"
        )
        root = sky.notifications[-1]["uri"]
        sky.own_reply(200, root)
        tube.channel_reply(300, threads[0])

        async def answered(thread: str) -> bool:
            return await count(stack, ConversationRow, thread_id=thread, state="responded") == 1

        await eventually(lambda: answered(f"post:{root}"), timeout=20, what="the bluesky reply")
        await eventually(lambda: answered(f"thread:{threads[0]}"), timeout=20, what="the youtube reply")
        assert await count(stack, InteractionRow, account_id="bluebird-sky") == 151  # the like was not routed
        assert await count(stack, InteractionRow, account_id="bluebird-yt") == 181
    finally:
        stack.stop()
        sky.stop()
        tube.stop()


FIXTURES = Path(__file__).parents[1] / "fixtures" / "platforms"


async def test_the_documented_pages_of_each_polled_platform_end_assigned(tmp_path: Path) -> None:
    """The fixtures, served as they are by the fakes, become assigned conversations."""
    masto, sky, tube = FakeMastodon().start(), FakeBluesky().start(), FakeYouTube().start()
    masto.notifications = json.loads((FIXTURES / "mastodon_notifications_page.json").read_text())
    sky.notifications = json.loads((FIXTURES / "bluesky_list_notifications.json").read_text())[
        "notifications"
    ]
    page = json.loads((FIXTURES / "youtube_comment_threads_page.json").read_text())
    tube.threads = {thread["id"]: thread for thread in page["items"]}
    tube.channel = page["items"][0]["snippet"]["channelId"]
    accounts = [
        ("fx-masto", "mastodon", masto.own_id, masto.url, "${MASTO}"),
        ("fx-sky", "bluesky", sky.did, sky.url, "${SKY}"),
        ("fx-tube", "youtube", tube.channel, tube.url, "${TUBE}"),
    ]
    text = config_yaml(
        tenant="bluebird", account="bluebird-fb", secret="generic-secret-0123456789", people=["maria"]
    )
    for account_id, platform, external_id, url, token in accounts:
        text += "\n".join(
            [f"      - id: {account_id}", f"        platform: {platform}", "        handle: Bluebird",
             "        team: care", "        webhook_secret: unused-secret-0123456789",
             f"        external_id: '{external_id}'", f"        api_base_url: {url}", f"        access_token: {token}"]
        ) + "\n"  # fmt: skip
    stack = Stack.configured(
        tmp_path / "stack",
        text,
        **{
            "STAYHUMAN_POLL_INTERVAL": "1s",
            "MASTO": masto.token,
            "SKY": sky.app_password,
            "TUBE": tube.key,
        },
    )
    try:
        stack.start()
        for account_id, expected in (("fx-masto", 1), ("fx-sky", 2), ("fx-tube", 1)):

            async def assigned(account: str = account_id, n: int = expected) -> bool:
                return await count(stack, ConversationRow, account_id=account, owner_id="maria") == n

            await eventually(assigned, timeout=30, interval=0.3, what=f"{account_id}'s conversations")
    finally:
        stack.stop()
        for fake in (masto, sky, tube):
            fake.stop()


async def test_mastodon_streaming_brings_news_at_once_and_backfills_after_a_drop(
    tmp_path: Path, fake: FakeMastodon
) -> None:
    fake.mention(0)
    stack = Stack.configured(
        tmp_path / "stack",
        mastodon_config(fake),
        **{
            "STAYHUMAN_POLL_INTERVAL": "1h",
            "STAYHUMAN_MASTODON_STREAMING": "true",
            "MASTODON_TOKEN": fake.token,
        },
    )
    try:
        stack.start()

        async def stored(expected: int) -> bool:
            return await count(stack, InteractionRow, account_id="bluebird-social") == expected

        await eventually(lambda: stored(1), timeout=20, what="the first poll")
        fake.mention(1)  # the poll interval is an hour: only the stream can bring this one
        await eventually(lambda: stored(2), timeout=10, what="the streamed notification")
        fake.stream_generation += 1  # the stream drops...
        fake.mention(2)  # ...and this one comes while it is down
        await eventually(lambda: stored(3), timeout=20, what="the backfill after reconnecting")
        assert fake.streams >= 2
    finally:
        stack.stop()
