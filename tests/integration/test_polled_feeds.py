"""Polled feeds against the fake platforms over real HTTP, a real nats-server and each database:
what a poll publishes, what it costs, and what becomes of what it cannot read."""

import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from nats.aio.client import Client

from services.ingest.connectors.model import MalformedPayload
from services.ingest.pollers import (
    BlueskyPoller,
    MastodonPoller,
    PolledAccount,
    Poller,
    PollStore,
    YouTubePoller,
)
from shared import subjects
from shared.db.session import create_engine, session_factory
from shared.events import Platform
from shared.jetstream import StreamSettings, ensure_streams, stream_configs
from shared.secrets import SecretBox, new_key
from tests.fake_platforms import FakeBluesky, FakeMastodon, FakeYouTube
from tests.poller_world import CountingPublisher, configure_polled_accounts


@dataclass
class World:
    nc: Client
    publisher: CountingPublisher
    store: PollStore
    http: httpx.AsyncClient

    def poller(
        self, kind: type[Poller], account_id: str, platform: Platform, external_id: str, url: str, token: str
    ) -> Poller:
        account = PolledAccount(account_id, "bluebird", platform, external_id, url, token)
        return kind(account, self.http, self.publisher, self.store)

    async def dead_letters(self, platform: Platform) -> int:
        info = await self.nc.jetstream().stream_info(
            subjects.DEAD_LETTER_STREAM,
            subjects_filter=subjects.dead_letter(stream="ingest", consumer=platform.value),
        )
        return info.state.messages


@pytest.fixture
def sky() -> Iterator[FakeBluesky]:
    fake = FakeBluesky().start()
    yield fake
    fake.stop()


@pytest.fixture
def tube() -> Iterator[FakeYouTube]:
    fake = FakeYouTube(token_on_last_page=True).start()  # as the documented page does
    yield fake
    fake.stop()


@pytest.fixture
def masto() -> Iterator[FakeMastodon]:
    fake = FakeMastodon().start()
    yield fake
    fake.stop()


@pytest.fixture
async def world(
    nc: Client, database_url: str, sky: FakeBluesky, tube: FakeYouTube, masto: FakeMastodon
) -> AsyncIterator[World]:
    await ensure_streams(nc.jetstream(), stream_configs(StreamSettings()))
    engine = create_engine(database_url)
    sessions = session_factory(engine)
    accounts = [
        ("sky", "bluesky", sky.did, sky.url, "unused-here"),
        ("tube", "youtube", tube.channel, tube.url, "unused-here"),
        ("masto", "mastodon", masto.own_id, masto.url, "unused-here"),
    ]
    await configure_polled_accounts(sessions, SecretBox(new_key()), accounts)
    async with httpx.AsyncClient(timeout=10) as http:
        yield World(nc, CountingPublisher(nc), PollStore(sessions), http)
    await engine.dispose()


def stamp(minutes_ago: float) -> str:
    moment = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=minutes_ago)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def bluesky_poller(world: World, sky: FakeBluesky) -> Poller:
    return world.poller(BlueskyPoller, "sky", Platform.bluesky, sky.did, sky.url, sky.app_password)


def youtube_poller(world: World, tube: FakeYouTube) -> Poller:
    return world.poller(YouTubePoller, "tube", Platform.youtube, tube.channel, tube.url, tube.key)


def mastodon_poller(world: World, masto: FakeMastodon) -> Poller:
    return world.poller(MastodonPoller, "masto", Platform.mastodon, masto.own_id, masto.url, masto.token)


# 1. What is stored is never published again; what shares its time is never skipped.


async def test_a_quiet_bluesky_account_publishes_nothing_again(world: World, sky: FakeBluesky) -> None:
    mark = stamp(5)
    sky.mention(1, indexed_at=stamp(8))
    uris = [sky.mention(number, indexed_at=mark) for number in (2, 3, 4)]  # three share the newest time
    sky.own_reply(5, root=uris[0])
    poller = bluesky_poller(world, sky)
    assert await poller.poll_once() == 5
    for _ in range(25):  # a day of polls of a quiet account, duplicate window or not
        assert await poller.poll_once() == 0
    assert sorted(world.publisher.published) == sorted(
        [*uris, sky.notifications[0]["uri"], sky.feed[0]["post"]["uri"]]
    )
    late = sky.mention(6, indexed_at=mark)  # indexed in the same millisecond as the mark, after the poll
    assert await poller.poll_once() == 1
    for _ in range(5):
        assert await poller.poll_once() == 0
    assert world.publisher.published[-1] == late and len(world.publisher.published) == 6


async def test_a_quiet_youtube_channel_publishes_nothing_again(world: World, tube: FakeYouTube) -> None:
    mark = stamp(5).replace(".000", "")  # YouTube's times are to the second
    tube.comment(1, at=stamp(8))
    threads = [tube.comment(number, at=mark) for number in (2, 3, 4)]
    poller = youtube_poller(world, tube)
    assert await poller.poll_once() == 4
    for _ in range(25):
        assert await poller.poll_once() == 0
    late = tube.comment(5, at=mark)
    assert await poller.poll_once() == 1
    assert await poller.poll_once() == 0
    assert world.publisher.published[-1] == late and len(set(world.publisher.published)) == 5
    assert set(threads) < set(world.publisher.published)


# 2. A poll stops paging at what it stored: every call costs a unit of YouTube's quota.


async def test_a_youtube_poll_of_one_page_costs_one_call(world: World, tube: FakeYouTube) -> None:
    """The page holds everything (and, as documented, a token); nothing on it is older than
    the mark, so only the mark itself can tell the poll that it is done."""
    tube.comment(1)
    poller = youtube_poller(world, tube)
    await poller.poll_once()
    assert tube.calls == 1
    for polls in range(1, 6):
        stored = await poller.poll_once()
        assert tube.calls == 1 + polls
        assert stored == 0
    tube.comment(2)
    assert await poller.poll_once() == 1
    assert tube.calls == 7 and len(world.publisher.published) == 2


async def test_a_youtube_poll_pages_back_exactly_to_what_it_stored(world: World, tube: FakeYouTube) -> None:
    for number in range(250):
        tube.comment(number)
    poller = youtube_poller(world, tube)
    assert await poller.poll_once() == 100  # a first poll takes the newest page only
    new = [tube.comment(number) for number in range(250, 400)]
    calls = tube.calls
    assert await poller.poll_once() == 150
    assert tube.calls == calls + 2  # 100 new, then 50 new and the mark
    assert set(new) <= set(world.publisher.published) and len(world.publisher.published) == 250
    await poller.poll_once()
    assert tube.calls == calls + 3


# 4. A page that is not the platform's fails the poll; one bad item is dead-lettered alone.


async def test_one_bad_bluesky_item_is_dead_lettered_alone_and_the_feed_moves_on(
    world: World, sky: FakeBluesky
) -> None:
    good = [sky.mention(number) for number in range(3)]
    poller = bluesky_poller(world, sky)
    await poller.poll_once()
    broken = sky.mention(3)
    sky.notifications[-1]["record"]["text"] = {"not": "text"}
    ahead = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
    sky.notifications.append({**sky.notifications[0], "uri": "at://did:plc:x/app.bsky.feed.post/ahead",
                              "record": {"text": "from the future", "createdAt": ahead}, "indexedAt": ahead})  # fmt: skip
    sky.notifications.append({**sky.notifications[0], "uri": "at://" + "x" * 70_000, "indexedAt": stamp(1)})
    after = sky.mention(4, indexed_at=stamp(0.5))
    assert await poller.poll_once() == 1
    assert sorted(world.publisher.published) == sorted([*good, after])
    problems = sorted(r.problem for r in world.publisher.rejected)
    assert len(problems) == 3, problems
    assert any("record.text: expected a string" in p for p in problems)
    assert any("more than an hour" in p for p in problems)
    assert any("at most 512 characters" in p for p in problems)
    assert await world.dead_letters(Platform.bluesky) == 3
    for _ in range(5):  # neither published nor dead-lettered again
        assert await poller.poll_once() == 0
    assert len(world.publisher.rejected) == 3 and broken not in world.publisher.published
    last = sky.mention(5, indexed_at=stamp(0.2))
    assert await poller.poll_once() == 1 and world.publisher.published[-1] == last


@pytest.mark.parametrize(
    "body",
    [b"<html>Bad gateway</html>", b'{"notifications": 3}', b"[]", b"\xff\xfe\x00", b"[" * 100_000],
)
async def test_a_bluesky_page_not_in_the_documented_shape_fails_the_poll(
    world: World, sky: FakeBluesky, body: bytes
) -> None:
    sky.mention(1)
    poller = bluesky_poller(world, sky)
    sky.answers = [body]
    with pytest.raises(MalformedPayload):
        await poller.poll_once()
    assert world.publisher.published == []
    assert await poller.poll_once() == 1  # the retry reads the page


async def test_one_bad_youtube_reply_is_dead_lettered_and_its_thread_kept(
    world: World, tube: FakeYouTube
) -> None:
    thread = tube.comment(1)
    tube.channel_reply(2, thread)
    tube.threads[thread]["replies"]["comments"].append(
        {"id": "Ug.bad", "snippet": {"updatedAt": stamp(0), "publishedAt": "yesterday"}}
    )
    other = tube.comment(3)
    tube.threads["broken"] = {"id": 7, "snippet": []}
    poller = youtube_poller(world, tube)
    assert await poller.poll_once() == 3
    assert sorted(world.publisher.published) == sorted([thread, f"{thread}.r2", other])
    assert sorted(r.where for r in world.publisher.rejected) == ["items[0].replies.comments[1]", "items[2]"]
    await poller.poll_once()
    assert len(world.publisher.rejected) == 2


async def test_one_bad_mastodon_notification_is_dead_lettered_and_the_cursor_moves_past_it(
    world: World, masto: FakeMastodon
) -> None:
    for number in range(3):
        masto.mention(number)
    masto.notifications[1]["status"]["content"] = ["not", "html"]
    masto.notifications[2]["status"]["account"]["followers_count"] = 10**30  # shown to people only: left out
    poller = mastodon_poller(world, masto)
    assert await poller.poll_once() == 2
    (rejected,) = world.publisher.rejected
    assert rejected.where == "[1]" and "content: expected a string" in rejected.problem
    masto.mention(3)
    assert await poller.poll_once() == 1
    assert "min_id=1000002" in masto.requests[-2]  # past the bad one, which is not read again
    assert len(world.publisher.rejected) == 1 and await world.dead_letters(Platform.mastodon) == 1


async def test_a_mastodon_page_with_a_hostile_body_fails_the_poll_or_keeps_the_rest(
    world: World, masto: FakeMastodon
) -> None:
    masto.mention(1)
    notification: dict[str, Any] = masto.notifications[0]
    poller = mastodon_poller(world, masto)
    masto.answers = [b'{"error": "not a list"}']
    with pytest.raises(MalformedPayload):
        await poller.poll_once()
    # one item nesting deeper than any parser goes, one number longer than Python converts
    deep = b'{"id": "1000007", "type": "mention", "status": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    huge = b'{"id": "1000008", "type": "mention", "status": {"id": ' + b"9" * 5_000 + b"}}"
    good = json.dumps(notification).encode()
    masto.answers = [b"[" + huge + b"," + deep + b"," + good + b"]"]
    assert await poller.poll_once() == 1
    assert sorted(r.where for r in world.publisher.rejected) == ["[0]", "[1]"]
    assert world.publisher.published == [notification["status"]["id"]]


async def test_a_repost_of_an_old_post_does_not_hide_the_brands_newer_replies(
    world: World, sky: FakeBluesky
) -> None:
    root = sky.mention(1, indexed_at=stamp(9))
    sky.own_reply(2, root)
    poller = bluesky_poller(world, sky)
    await poller.poll_once()
    sky.own_reply(3, root)  # a reply, then a repost of a post from long ago
    sky.feed[-1]["post"]["indexedAt"] = stamp(2)
    sky.feed.append(
        {"post": {"uri": f"at://{sky.did}/app.bsky.feed.post/old", "indexedAt": "2024-01-01T00:00:00.000Z",
                  "author": {"did": sky.did, "handle": "bluebird.coffee"}, "record": {"text": "Our first post!"}},
         "reason": {"$type": "app.bsky.feed.defs#reasonRepost", "indexedAt": stamp(1)}}
    )  # fmt: skip
    assert await poller.poll_once() == 1
    assert world.publisher.published[-1] == f"at://{sky.did}/app.bsky.feed.post/r3"
