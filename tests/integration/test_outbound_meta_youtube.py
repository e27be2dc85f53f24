"""The Meta (Facebook, Messenger, Instagram) and YouTube reply clients against fakes of their
APIs over real HTTP: the exact requests each method sends, what each documented error means
for the reply, a post whose answer is lost found exactly once by reading the thread back, and
YouTube's token refresh."""

import logging
import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.outbound.platforms.base import (
    Credentials,
    CredentialsFailed,
    Lost,
    Outgoing,
    PlatformClient,
    Posted,
    Refused,
    Target,
    Unreadable,
)
from services.outbound.platforms.meta import WINDOW_SUBCODES, MetaClient, refusal
from services.outbound.platforms.youtube import READ_UNITS, REPLY_UNITS, YouTubeClient
from shared.commands import ReplyMethod
from shared.events import Kind, Platform
from stayhuman.natsserver import free_port
from tests.write_fakes.meta import FakeMeta, graph_error
from tests.write_fakes.youtube import FakeYouTube

SHORT = httpx.Timeout(1.0, connect=1.0)  # a held post is Lost after a second, not fifteen
PSID = "24000000000000001"
IGSID = "17840000000000002"
FB_COMMENT = "1220000000000001_3300000000000001"
IG_COMMENT = "17900000000000003"
THREAD = "UgzThreadAbCdEf0001"


@pytest.fixture
def meta() -> Iterator[FakeMeta]:
    fake = FakeMeta().start()
    fake.add_comment(FB_COMMENT, platform="facebook", author="6100000000001")
    fake.add_comment(IG_COMMENT, platform="instagram", author=IGSID)
    yield fake
    fake.stop()


@pytest.fixture
def youtube() -> Iterator[FakeYouTube]:
    fake = FakeYouTube().start()
    fake.add_thread(THREAD, video="vidBluebird1")
    yield fake
    fake.stop()


def target(
    platform: Platform, kind: Kind, *, account: str | None, external_id: str, author: str, thread: str
) -> Target:
    return Target(
        platform=platform,
        kind=kind,
        account_external_id=account,
        account_handle="bluebird.coffee",
        thread_id=thread,
        external_id=external_id,
        parent_id=None,
        author_id=author,
        author_handle="fan",
        created_at=datetime.now(UTC) - timedelta(hours=1),
    )


def outgoing(
    t: Target, method: ReplyMethod, text: str = "Yes, oat milk all day!", tag: str | None = None
) -> Outgoing:
    return Outgoing(reply_id="r1", key="k1", text=text, method=method, tag=tag, target=t, person_id="p1")


def facebook_comment(fake: FakeMeta, method: ReplyMethod = ReplyMethod.comment_reply, **kw: Any) -> Outgoing:
    t = target(Platform.facebook, Kind.comment, account=fake.page_id, external_id=FB_COMMENT,
               author="6100000000001", thread=f"comment:{FB_COMMENT}")  # fmt: skip
    return outgoing(t, method, **kw)


def messenger(fake: FakeMeta, method: ReplyMethod = ReplyMethod.send_api, **kw: Any) -> Outgoing:
    t = target(Platform.facebook, Kind.dm, account=fake.page_id, external_id="m_incoming1", author=PSID,
               thread=f"dm:{PSID}")  # fmt: skip
    return outgoing(t, method, **kw)


def instagram_comment(fake: FakeMeta, method: ReplyMethod = ReplyMethod.comment_reply, **kw: Any) -> Outgoing:
    t = target(Platform.instagram, Kind.comment, account=fake.ig_user_id, external_id=IG_COMMENT, author=IGSID,
               thread=f"comment:{IG_COMMENT}")  # fmt: skip
    return outgoing(t, method, **kw)


def instagram_dm(fake: FakeMeta, method: ReplyMethod = ReplyMethod.send_api, **kw: Any) -> Outgoing:
    t = target(Platform.instagram, Kind.dm, account=fake.ig_user_id, external_id="aWdfZAm1", author=IGSID,
               thread=f"dm:{IGSID}")  # fmt: skip
    return outgoing(t, method, **kw)


def youtube_reply(fake: FakeYouTube, text: str = "A Comandante C40!") -> Outgoing:
    t = target(Platform.youtube, Kind.comment, account=fake.channel, external_id=THREAD, author="UCfan000001",
               thread=f"thread:{THREAD}")  # fmt: skip
    return outgoing(t, ReplyMethod.comment_reply, text=text)


def meta_credentials(fake: FakeMeta) -> Credentials:
    return Credentials(values=fake.credentials())


def only_write(fake: FakeMeta | FakeYouTube) -> Any:
    writes = fake.requests("POST")
    assert len(writes) == 1, writes
    return writes[0]


def assert_token_in_header_only(received: Any, token: str) -> None:
    assert received.headers["authorization"] == f"Bearer {token}"
    assert token not in str(received.query)
    assert token.encode() not in received.body


# --- what each method sends ------------------------------------------------------------------


async def test_facebook_comment_reply_posts_the_message_under_the_comment(meta: FakeMeta) -> None:
    client = MetaClient(Platform.facebook)
    posted = await client.post(facebook_comment(meta), meta_credentials(meta))

    sent = only_write(meta)
    assert (sent.method, sent.path, sent.query) == ("POST", f"/v21.0/{FB_COMMENT}/comments", {})
    assert sent.headers["content-type"] == "application/x-www-form-urlencoded"
    assert sent.form() == {"message": "Yes, oat milk all day!"}
    assert_token_in_header_only(sent, meta.token)
    assert posted == Posted(platform_id=meta.replies[FB_COMMENT][0]["id"])
    assert posted.platform_id.startswith("1220000000000001_")
    await client.aclose()


async def test_messenger_answers_within_the_window_as_a_response(meta: FakeMeta) -> None:
    client = MetaClient(Platform.facebook)
    posted = await client.post(messenger(meta), meta_credentials(meta))

    sent = only_write(meta)
    assert (sent.path, sent.query) == (f"/v21.0/{meta.page_id}/messages", {})
    assert sent.headers["content-type"] == "application/json"
    assert sent.json() == {
        "recipient": {"id": PSID},
        "messaging_type": "RESPONSE",
        "message": {"text": "Yes, oat milk all day!"},
    }
    assert_token_in_header_only(sent, meta.token)
    message = meta.conversations[(meta.page_id, PSID)][0]
    assert posted == Posted(platform_id=message["id"])  # Messenger's message_id
    assert posted.platform_id.startswith("m_")
    await client.aclose()


async def test_messenger_after_24_hours_sends_with_the_human_agent_tag(meta: FakeMeta) -> None:
    meta.close_window(PSID)  # the standard window is closed; the 7-day one is open
    client = MetaClient(Platform.facebook)
    posted = await client.post(
        messenger(meta, ReplyMethod.human_agent, tag="HUMAN_AGENT"), meta_credentials(meta)
    )

    assert only_write(meta).json() == {
        "recipient": {"id": PSID},
        "messaging_type": "MESSAGE_TAG",
        "tag": "HUMAN_AGENT",
        "message": {"text": "Yes, oat milk all day!"},
    }
    assert posted.platform_id == meta.conversations[(meta.page_id, PSID)][0]["id"]
    await client.aclose()


async def test_instagram_comment_reply_goes_to_the_replies_edge(meta: FakeMeta) -> None:
    client = MetaClient(Platform.instagram)
    posted = await client.post(instagram_comment(meta), meta_credentials(meta))

    sent = only_write(meta)
    assert (sent.path, sent.query, sent.form()) == (
        f"/v21.0/{IG_COMMENT}/replies",
        {},
        {"message": "Yes, oat milk all day!"},
    )
    assert_token_in_header_only(sent, meta.token)
    assert posted.platform_id == meta.replies[IG_COMMENT][0]["id"]
    await client.aclose()


@pytest.mark.parametrize(
    ("method", "tagged"), [(ReplyMethod.send_api, {}), (ReplyMethod.human_agent, {"messaging_type": "MESSAGE_TAG", "tag": "HUMAN_AGENT"})]
)  # fmt: skip
async def test_instagram_dm_goes_to_the_accounts_messages(
    meta: FakeMeta, method: ReplyMethod, tagged: dict[str, str]
) -> None:
    client = MetaClient(Platform.instagram)
    posted = await client.post(instagram_dm(meta, method), meta_credentials(meta))

    sent = only_write(meta)
    assert sent.path == f"/v21.0/{meta.ig_user_id}/messages"
    assert sent.json() == {
        "recipient": {"id": IGSID},
        **tagged,
        "message": {"text": "Yes, oat milk all day!"},
    }
    assert_token_in_header_only(sent, meta.token)
    assert posted.platform_id == meta.conversations[(meta.ig_user_id, IGSID)][0]["id"]
    await client.aclose()


async def test_instagram_private_reply_answers_the_comment_in_a_dm(meta: FakeMeta) -> None:
    client = MetaClient(Platform.instagram)
    posted = await client.post(instagram_comment(meta, ReplyMethod.private_reply), meta_credentials(meta))

    sent = only_write(meta)
    assert sent.path == f"/v21.0/{meta.ig_user_id}/messages"
    assert sent.json() == {
        "recipient": {"comment_id": IG_COMMENT},
        "message": {"text": "Yes, oat milk all day!"},
    }
    # Meta puts it in the conversation with the person who commented
    assert posted.platform_id == meta.conversations[(meta.ig_user_id, IGSID)][0]["id"]
    await client.aclose()


async def test_a_method_meta_does_not_offer_is_refused_before_anything_is_sent(meta: FakeMeta) -> None:
    client = MetaClient(Platform.facebook)
    for method in (ReplyMethod.post, ReplyMethod.status, ReplyMethod.private_reply):
        with pytest.raises(Refused) as refused:
            await client.post(facebook_comment(meta, method), meta_credentials(meta))
        assert not refused.value.retry
    with pytest.raises(Refused, match="no Page id"):
        await client.post(
            outgoing(
                target(
                    Platform.facebook, Kind.dm, account=None, external_id="m_1", author=PSID, thread="dm:x"
                ),
                ReplyMethod.send_api,
            ),
            meta_credentials(meta),
        )
    with pytest.raises(CredentialsFailed, match="page_access_token"):
        await client.post(facebook_comment(meta), Credentials(values={"api_base_url": meta.api_base_url}))
    assert meta.received == []
    await client.aclose()


# --- Meta's errors ---------------------------------------------------------------------------


async def test_an_expired_page_token_is_refused_as_expired_and_does_not_refresh(
    meta: FakeMeta, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    meta.expire_token()
    client = MetaClient(Platform.facebook)
    with pytest.raises(Refused) as refused:
        await client.post(facebook_comment(meta), meta_credentials(meta))
    assert refused.value.expired and not refused.value.retry
    assert refused.value.error.startswith("Error validating access token: Session has expired")

    with pytest.raises(CredentialsFailed) as failed:
        await client.refresh(meta_credentials(meta))
    assert "Session has expired" in str(failed.value) and "set a new one" in str(failed.value)
    assert meta.received[-1].path == "/v21.0/me"
    assert meta.stored() == []
    assert meta.token not in str(refused.value) + str(failed.value) + caplog.text
    await client.aclose()


async def test_refresh_keeps_a_page_token_that_still_works(meta: FakeMeta) -> None:
    client = MetaClient(Platform.instagram)
    credentials = meta_credentials(meta)
    assert await client.refresh(credentials) is credentials
    meta.rate_limit(1, code=4)  # a limit says nothing of the token
    with pytest.raises(Refused) as refused:
        await client.refresh(credentials)
    assert refused.value.retry and not refused.value.expired
    await client.aclose()


async def test_outside_the_messenger_window_is_refused_as_a_closed_window(meta: FakeMeta) -> None:
    meta.close_window(PSID)
    client = MetaClient(Platform.facebook)
    with pytest.raises(Refused) as refused:
        await client.post(messenger(meta), meta_credentials(meta))
    assert refused.value.window and not refused.value.retry and not refused.value.expired
    assert "outside of allowed window" in refused.value.error

    meta.close_window(PSID, tag_too=True)  # 7 days have passed: the tag no longer helps
    with pytest.raises(Refused) as tagged:
        await client.post(messenger(meta, ReplyMethod.human_agent), meta_credentials(meta))
    assert tagged.value.window
    assert meta.stored() == []
    await client.aclose()


async def test_outside_the_instagram_window_is_refused_as_a_closed_window(meta: FakeMeta) -> None:
    meta.close_window(IGSID)
    client = MetaClient(Platform.instagram)
    with pytest.raises(Refused) as refused:
        await client.post(instagram_dm(meta), meta_credentials(meta))
    assert refused.value.window
    assert meta.stored() == []
    await client.aclose()


@pytest.mark.parametrize("code", [4, 32, 613])
async def test_a_rate_limit_is_refused_to_retry_when_meta_says(meta: FakeMeta, code: int) -> None:
    meta.rate_limit(1, code=code, regain_minutes=3)
    client = MetaClient(Platform.facebook)
    with pytest.raises(Refused) as refused:
        await client.post(messenger(meta), meta_credentials(meta))
    assert refused.value.retry and refused.value.retry_after == 180.0
    assert refused.value.error.startswith(f"(#{code})")
    assert meta.stored() == []

    posted = await client.post(messenger(meta), meta_credentials(meta))  # the limit has passed
    assert [m["id"] for m in meta.stored()] == [posted.platform_id]
    await client.aclose()


@pytest.mark.parametrize(
    ("status", "body", "words"),
    [
        (400, graph_error("(#10) The user hasn't given the app permission to reply", 10), "(#10)"),
        (403, graph_error("(#200) Requires pages_messaging permission to manage the object", 200), "(#200)"),
        (400, graph_error("(#368) The action attempted has been deemed abusive or is otherwise disallowed", 368), "(#368)"),
        (404, {"unexpected": True}, "Messenger answered HTTP 404"),
    ],
)  # fmt: skip
async def test_other_meta_refusals_carry_metas_words(
    meta: FakeMeta, status: int, body: dict[str, Any], words: str
) -> None:
    meta.fail(status, body)
    client = MetaClient(Platform.facebook)
    with pytest.raises(Refused) as refused:
        await client.post(messenger(meta), meta_credentials(meta))
    assert refused.value.error.startswith(words)
    assert refused.value.status == status
    assert not (refused.value.retry or refused.value.expired or refused.value.window)
    await client.aclose()


async def test_a_comment_that_is_not_there_is_refused_with_metas_message(meta: FakeMeta) -> None:
    client = MetaClient(Platform.facebook)
    gone = outgoing(
        target(Platform.facebook, Kind.comment, account=meta.page_id, external_id="1_404", author="6100", thread="comment:1_404"),
        ReplyMethod.comment_reply,
    )  # fmt: skip
    with pytest.raises(Refused, match=r"Unsupported post request\. Object with ID '1_404' does not exist"):
        await client.post(gone, meta_credentials(meta))
    await client.aclose()


async def test_the_same_text_twice_is_refused_as_a_duplicate(meta: FakeMeta) -> None:
    meta.refuse_duplicates = True
    client = MetaClient(Platform.facebook)
    first = await client.post(facebook_comment(meta), meta_credentials(meta))
    with pytest.raises(Refused) as refused:
        await client.post(facebook_comment(meta), meta_credentials(meta))
    assert refused.value.error == "(#506) Duplicate status message (the same text is already there)"
    assert not refused.value.retry
    assert [r["id"] for r in meta.stored()] == [first.platform_id]
    await client.aclose()


async def test_a_server_error_is_lost_and_reading_back_says_whether_it_went_out(meta: FakeMeta) -> None:
    client = MetaClient(Platform.facebook)
    since = datetime.now(UTC)
    meta.fail(500)  # refused before storing
    with pytest.raises(Lost):
        await client.post(messenger(meta), meta_credentials(meta))
    assert await client.find(messenger(meta), meta_credentials(meta), since) is None

    meta.fail(503, after_store=True)  # the message went out, the answer says it did not
    with pytest.raises(Lost):
        await client.post(messenger(meta), meta_credentials(meta))
    found = await client.find(messenger(meta), meta_credentials(meta), since)
    assert found is not None and [m["id"] for m in meta.stored()] == [found.platform_id]
    await client.aclose()


async def test_a_connection_dropped_after_sending_is_lost(meta: FakeMeta) -> None:
    meta.drop()
    client = MetaClient(Platform.instagram)
    with pytest.raises(Lost, match="Instagram did not answer: peer closed connection"):
        await client.post(instagram_comment(meta), meta_credentials(meta))
    assert len(meta.stored()) == 1
    await client.aclose()


async def test_nothing_listening_is_refused_to_retry() -> None:
    client = MetaClient(Platform.facebook)
    credentials = Credentials(
        values={"page_access_token": "t", "api_base_url": f"http://127.0.0.1:{free_port()}/v21.0"}
    )
    t = target(
        Platform.facebook, Kind.comment, account="1", external_id="1_2", author="3", thread="comment:1_2"
    )
    with pytest.raises(Refused) as refused:
        await client.post(outgoing(t, ReplyMethod.comment_reply), credentials)
    assert refused.value.retry
    with pytest.raises(Unreadable):
        await client.find(outgoing(t, ReplyMethod.comment_reply), credentials, datetime.now(UTC))
    await client.aclose()


# --- a lost post, found by reading back --------------------------------------------------------


@pytest.mark.parametrize(
    ("platform", "build"),
    [
        (Platform.facebook, facebook_comment),
        (Platform.facebook, messenger),
        (Platform.instagram, instagram_comment),
        (Platform.instagram, instagram_dm),
        (Platform.instagram, lambda fake: instagram_comment(fake, ReplyMethod.private_reply)),
    ],
)
async def test_a_held_post_is_lost_then_found_exactly_once(
    meta: FakeMeta, platform: Platform, build: Any
) -> None:
    reply = build(meta)
    since = datetime.now(UTC)
    # Older replies of the brand with the same text, and the customer's words, are not it.
    meta.seed_message(meta.page_id, PSID, reply.text, since - timedelta(minutes=10))
    meta.seed_message(meta.ig_user_id, IGSID, reply.text, since - timedelta(minutes=10))
    meta.seed_message(meta.page_id, PSID, reply.text, since, from_brand=False)
    meta.seed_message(meta.ig_user_id, IGSID, reply.text, since, from_brand=False)
    meta.seed_reply(FB_COMMENT, reply.text, since - timedelta(minutes=10))
    meta.seed_reply(IG_COMMENT, reply.text, since - timedelta(minutes=10))
    meta.seed_reply(FB_COMMENT, reply.text, since, by_brand=False)
    before = {item["id"] for item in meta.stored()}
    meta.hold = math.inf

    client = MetaClient(platform, timeout=SHORT)
    with pytest.raises(Lost):
        await client.post(reply, meta_credentials(meta))
    assert meta.waiting == 1  # the platform has it; its answer never came
    new = [item["id"] for item in meta.stored() if item["id"] not in before]
    assert len(new) == 1

    found = await client.find(reply, meta_credentials(meta), since)
    assert found is not None and found.platform_id == new[0]
    assert found.created_at is not None and found.created_at >= since - timedelta(seconds=1)
    assert await client.find(reply, meta_credentials(meta), since) == found
    assert len(meta.stored()) == len(before) + 1  # reading back posted nothing
    await client.aclose()


async def test_a_late_answer_still_counts_when_it_comes_in_time(meta: FakeMeta) -> None:
    meta.hold = 0.3
    client = MetaClient(Platform.facebook, timeout=httpx.Timeout(5.0))
    posted = await client.post(messenger(meta), meta_credentials(meta))
    assert [m["id"] for m in meta.stored()] == [posted.platform_id]
    await client.aclose()


async def test_find_reads_every_page_of_a_long_thread(meta: FakeMeta) -> None:
    meta.page_size = 2
    since = datetime.now(UTC)
    client = MetaClient(Platform.facebook)
    posted = await client.post(facebook_comment(meta, text="The answer"), meta_credentials(meta))
    for number in range(5):  # later replies: comments come oldest first, it stays on the first page
        meta.seed_reply(
            FB_COMMENT, f"reply {number}", datetime.now(UTC) + timedelta(seconds=number), by_brand=False
        )
    assert await client.find(
        facebook_comment(meta, text="The answer"), meta_credentials(meta), since
    ) == Posted(platform_id=posted.platform_id, created_at=posted_time(meta, posted.platform_id))
    assert [r.query.get("after") for r in meta.received if r.method == "GET"] == [None, "2", "4"]

    dm = await client.post(messenger(meta, text="In the DM"), meta_credentials(meta))
    for number in range(5):  # newer messages push it to the conversation's later pages
        meta.seed_message(
            meta.page_id,
            PSID,
            f"later {number}",
            datetime.now(UTC) + timedelta(seconds=number + 1),
            from_brand=False,
        )
    found = await client.find(messenger(meta, text="In the DM"), meta_credentials(meta), since)
    assert found is not None and found.platform_id == dm.platform_id
    reads = [r for r in meta.received if r.method == "GET"][3:]
    assert reads[0].path == f"/v21.0/{meta.page_id}/conversations"
    assert reads[0].query == {
        "platform": "messenger",
        "user_id": PSID,
        "fields": "messages{id,message,from,created_time}",
    }
    assert [r.query.get("after") for r in reads[1:]] == ["2", "4"]
    assert all(
        r.headers["authorization"] == f"Bearer {meta.token}" and "access_token" not in r.query for r in reads
    )
    await client.aclose()


def posted_time(fake: FakeMeta, platform_id: str) -> datetime:
    item = next(i for i in fake.stored() if i["id"] == platform_id)
    return datetime.fromisoformat(item["created_time"])


async def test_find_reads_the_documented_edges(meta: FakeMeta) -> None:
    since = datetime.now(UTC)
    for client, reply in (
        (MetaClient(Platform.facebook), facebook_comment(meta)),
        (MetaClient(Platform.instagram), instagram_comment(meta)),
        (MetaClient(Platform.instagram), instagram_dm(meta)),
    ):
        assert await client.find(reply, meta_credentials(meta), since) is None
        await client.aclose()
    reads = [(r.path, r.query) for r in meta.received]
    assert reads == [
        (f"/v21.0/{FB_COMMENT}/comments", {"fields": "id,message,from,created_time", "limit": "100"}),
        (f"/v21.0/{IG_COMMENT}/replies", {"fields": "id,text,username,from,timestamp", "limit": "100"}),
        (f"/v21.0/{meta.ig_user_id}/conversations",
         {"platform": "instagram", "user_id": IGSID, "fields": "messages{id,message,from,created_time}"}),
    ]  # fmt: skip


async def test_find_is_unreadable_when_the_thread_cannot_be_read(meta: FakeMeta) -> None:
    client = MetaClient(Platform.facebook)
    since = datetime.now(UTC)
    meta.fail(500)
    with pytest.raises(Unreadable):
        await client.find(facebook_comment(meta), meta_credentials(meta), since)
    meta.fail(400, graph_error("(#100) Invalid platform", 100))
    with pytest.raises(Unreadable, match=r"\(#100\) Invalid platform"):
        await client.find(messenger(meta), meta_credentials(meta), since)
    meta.expire_token()
    with pytest.raises(Unreadable, match="Session has expired") as unreadable:
        await client.find(messenger(meta), meta_credentials(meta), since)
    assert meta.token not in str(unreadable.value)
    await client.aclose()


# --- YouTube -----------------------------------------------------------------------------------


def youtube_credentials(fake: FakeYouTube) -> Credentials:
    return Credentials(values=fake.credentials())


async def test_youtube_reply_goes_under_the_threads_top_level_comment(youtube: FakeYouTube) -> None:
    client = YouTubeClient()
    posted = await client.post(youtube_reply(youtube), youtube_credentials(youtube))

    sent = only_write(youtube)
    assert (sent.method, sent.path, sent.query) == ("POST", "/youtube/v3/comments", {"part": "snippet"})
    assert sent.json() == {"snippet": {"parentId": THREAD, "textOriginal": "A Comandante C40!"}}
    assert_token_in_header_only(sent, youtube.access_token)
    stored = youtube.stored()
    assert len(stored) == 1
    assert posted == Posted(
        platform_id=stored[0]["id"],
        url=f"https://www.youtube.com/watch?v=vidBluebird1&lc={stored[0]['id']}",
        created_at=datetime.fromisoformat(stored[0]["snippet"]["publishedAt"]),
    )
    assert youtube.units_used == REPLY_UNITS
    await client.aclose()


async def test_youtube_expired_token_is_refreshed_and_the_reply_then_goes(youtube: FakeYouTube) -> None:
    youtube.expire_token()
    client = YouTubeClient()
    credentials = youtube_credentials(youtube)
    with pytest.raises(Refused) as refused:
        await client.post(youtube_reply(youtube), credentials)
    assert refused.value.expired and refused.value.status == 401
    assert youtube.stored() == []

    started = datetime.now(UTC)
    fresh = await client.refresh(credentials)
    sent = youtube.received[-1]
    assert (sent.method, sent.path) == ("POST", "/token")
    assert sent.form() == {
        "grant_type": "refresh_token",
        "refresh_token": youtube.refresh_token,
        "client_id": youtube.client_id,
        "client_secret": youtube.client_secret,
    }
    assert fresh.values == credentials.values | {"access_token": "ya29.fake-access-1"}  # refresh token kept
    assert fresh.expires_at is not None
    assert (
        started + timedelta(seconds=3590) <= fresh.expires_at <= datetime.now(UTC) + timedelta(seconds=3600)
    )

    posted = await client.post(youtube_reply(youtube), fresh)
    assert [c["id"] for c in youtube.stored()] == [posted.platform_id]
    await client.aclose()


async def test_youtube_keeps_a_new_refresh_token_when_google_sends_one(youtube: FakeYouTube) -> None:
    youtube.rotate_refresh_tokens = True
    client = YouTubeClient()
    fresh = await client.refresh(youtube_credentials(youtube))
    assert fresh.values["refresh_token"] == "1//fake-refresh-token-1" == youtube.refresh_token
    again = await client.refresh(fresh)
    assert again.values["refresh_token"] == "1//fake-refresh-token-2"
    await client.aclose()


async def test_youtube_revoked_refresh_token_fails_the_credentials(
    youtube: FakeYouTube, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    youtube.revoke()
    client = YouTubeClient()
    with pytest.raises(CredentialsFailed) as failed:
        await client.refresh(youtube_credentials(youtube))
    assert str(failed.value) == "YouTube: Token has been expired or revoked. (invalid_grant)"
    wrong = Credentials(values=youtube.credentials() | {"client_secret": "not-it"})
    with pytest.raises(CredentialsFailed, match="invalid_client"):
        await client.refresh(wrong)
    for secret in (youtube.refresh_token, youtube.client_secret, youtube.access_token):
        assert secret not in str(failed.value) + caplog.text
    with pytest.raises(CredentialsFailed, match="refresh_token"):
        await client.refresh(
            Credentials(values={"access_token": "a", "client_id": "c", "client_secret": "s"})
        )
    away = Credentials(values=youtube.credentials() | {"token_url": f"http://127.0.0.1:{free_port()}/token"})
    with pytest.raises(Refused) as unreachable:  # Google could not be asked: nothing is known to be wrong
        await client.refresh(away)
    assert unreachable.value.retry
    await client.aclose()


async def test_youtube_spent_quota_is_refused_without_retry(youtube: FakeYouTube) -> None:
    youtube.daily_quota = REPLY_UNITS + 10
    client = YouTubeClient()
    await client.post(youtube_reply(youtube, "first"), youtube_credentials(youtube))
    assert youtube.units_left == 10
    with pytest.raises(Refused) as refused:
        await client.post(youtube_reply(youtube, "second"), youtube_credentials(youtube))
    assert not refused.value.retry and refused.value.status == 403
    assert "daily quota is spent" in refused.value.error
    assert [c["snippet"]["textOriginal"] for c in youtube.stored()] == ["first"]
    await client.aclose()


async def test_youtube_other_refusals(youtube: FakeYouTube) -> None:
    client = YouTubeClient()
    youtube.rate_limited = 1
    with pytest.raises(Refused) as limited:
        await client.post(youtube_reply(youtube), youtube_credentials(youtube))
    assert limited.value.retry and limited.value.retry_after == 30.0

    youtube.disable_comments(THREAD)
    with pytest.raises(Refused) as disabled:
        await client.post(youtube_reply(youtube), youtube_credentials(youtube))
    assert (
        disabled.value.error
        == "YouTube: The video identified by the videoId parameter has disabled comments."
    )
    assert not (disabled.value.retry or disabled.value.expired)

    elsewhere = outgoing(
        target(Platform.youtube, Kind.comment, account=youtube.channel, external_id="Ugz404", author="UCx", thread="thread:Ugz404"),
        ReplyMethod.comment_reply,
    )  # fmt: skip
    with pytest.raises(Refused, match="parent comment could not be found") as missing:
        await client.post(elsewhere, youtube_credentials(youtube))
    assert missing.value.status == 404
    with pytest.raises(Refused, match="does not take a dm reply"):
        await client.post(outgoing(elsewhere.target, ReplyMethod.dm), youtube_credentials(youtube))
    assert youtube.stored() == []
    await client.aclose()


async def test_youtube_held_post_is_lost_then_found_exactly_once(youtube: FakeYouTube) -> None:
    since = datetime.now(UTC)
    youtube.seed_reply(THREAD, "A Comandante C40!", since - timedelta(minutes=10))  # an older one
    youtube.seed_reply(THREAD, "A Comandante C40!", since, by_channel=False)  # not the channel's
    youtube.hold = math.inf
    client = YouTubeClient(timeout=SHORT)
    with pytest.raises(Lost):
        await client.post(youtube_reply(youtube), youtube_credentials(youtube))
    assert youtube.waiting == 1
    new = youtube.stored()[-1]

    found = await client.find(youtube_reply(youtube), youtube_credentials(youtube), since)
    assert found is not None and found.platform_id == new["id"]
    assert len(youtube.stored()) == 2
    read = youtube.received[-1]
    assert (read.method, read.path) == ("GET", "/youtube/v3/comments")
    assert read.query == {
        "part": "snippet",
        "parentId": THREAD,
        "maxResults": "100",
        "textFormat": "plainText",
    }
    assert youtube.units_used == REPLY_UNITS + READ_UNITS
    await client.aclose()


async def test_youtube_server_error_is_lost_and_found_absent(youtube: FakeYouTube) -> None:
    since = datetime.now(UTC)
    youtube.fail(503)
    client = YouTubeClient()
    with pytest.raises(Lost):
        await client.post(youtube_reply(youtube), youtube_credentials(youtube))
    assert await client.find(youtube_reply(youtube), youtube_credentials(youtube), since) is None
    youtube.drop()
    with pytest.raises(Lost):
        await client.post(youtube_reply(youtube), youtube_credentials(youtube))
    assert await client.find(youtube_reply(youtube), youtube_credentials(youtube), since) is not None
    await client.aclose()


async def test_youtube_find_pages_through_the_thread(youtube: FakeYouTube) -> None:
    youtube.page_size = 2
    since = datetime.now(UTC)
    client = YouTubeClient()
    for number in range(3):
        youtube.seed_reply(THREAD, f"fan {number}", since, by_channel=False)
    posted = await client.post(youtube_reply(youtube), youtube_credentials(youtube))
    found = await client.find(youtube_reply(youtube), youtube_credentials(youtube), since)
    assert found is not None and found.platform_id == posted.platform_id
    assert [r.query.get("pageToken") for r in youtube.received if r.method == "GET"] == [None, "2"]
    await client.aclose()


async def test_youtube_find_is_unreadable_when_the_read_fails(youtube: FakeYouTube) -> None:
    client = YouTubeClient()
    since = datetime.now(UTC)
    youtube.fail(500)
    with pytest.raises(Unreadable):
        await client.find(youtube_reply(youtube), youtube_credentials(youtube), since)
    youtube.expire_token()
    with pytest.raises(Unreadable, match="invalid authentication credentials"):
        await client.find(youtube_reply(youtube), youtube_credentials(youtube), since)
    youtube.stop()
    with pytest.raises(Unreadable):
        await YouTubeClient().find(youtube_reply(youtube), youtube_credentials(youtube), since)
    await client.aclose()


def test_the_clients_are_platform_clients() -> None:
    clients: list[PlatformClient] = [
        MetaClient(Platform.facebook),
        MetaClient(Platform.instagram),
        YouTubeClient(),
    ]
    assert [(c.platform, c.idempotent) for c in clients] == [
        (Platform.facebook, False),
        (Platform.instagram, False),
        (Platform.youtube, False),
    ]
    with pytest.raises(ValueError):
        MetaClient(Platform.x)


# --- any answer Meta could give ----------------------------------------------------------------

_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=10,
)


@given(
    status=st.integers(400, 499),
    code=st.one_of(
        st.none(), st.sampled_from([4, 10, 17, 32, 100, 190, 200, 368, 506, 613, 80006]), st.integers()
    ),
    subcode=st.one_of(st.none(), st.sampled_from(sorted(WINDOW_SUBCODES)), st.integers()),
    message=st.text(max_size=800),
    extra=_json,
)
def test_any_meta_error_is_one_refusal(
    status: int, code: int | None, subcode: int | None, message: str, extra: Any
) -> None:
    error: dict[str, Any] = {"message": message, "code": code, "error_subcode": subcode, "extra": extra}
    refused = refusal(Platform.facebook, Kind.dm, httpx.Response(status, json={"error": error}))
    assert refused.status == status
    assert 0 < len(refused.error) <= 600
    assert refused.expired == (code == 190 or (status == 401 and code is None))
    assert sum((refused.expired, refused.window, refused.retry_after is not None)) <= 1
    if refused.window:
        assert subcode in WINDOW_SUBCODES or "outside of allowed window" in message
    if code in (4, 17, 32, 613) and not refused.expired:
        assert refused.retry


@given(body=_json, status=st.integers(400, 499))
def test_any_body_meta_answers_is_a_refusal(body: Any, status: int) -> None:
    refused = refusal(Platform.instagram, Kind.comment, httpx.Response(status, json=body))
    assert isinstance(refused, Refused) and refused.error


def test_meta_answers_without_a_json_body_are_refusals() -> None:
    refused = refusal(Platform.facebook, Kind.comment, httpx.Response(400, content=b"<html>bad</html>"))
    assert refused.error == "Facebook answered HTTP 400"
    assert math.isclose(
        refusal(
            Platform.facebook, Kind.dm, httpx.Response(400, json=graph_error("(#4) limit", 4), headers={"Retry-After": "7"})
        ).retry_after or 0,
        7.0,
    )  # fmt: skip
