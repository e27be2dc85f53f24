"""The X, Mastodon, Bluesky and webhook reply clients against fakes over real HTTP: the exact
requests sent, every documented error and what it means for the reply, refreshing credentials,
a post whose answer is lost (found once, never made twice) and the webhook's guard against
private addresses."""

import dataclasses
import hashlib
import hmac
import ipaddress
import math
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.outbound.platforms.base import (
    Credentials,
    CredentialsFailed,
    Lost,
    Outgoing,
    Posted,
    Refused,
    Target,
    Unreadable,
)
from services.outbound.platforms.bluesky import BlueskyClient, tid_for
from services.outbound.platforms.mastodon import MastodonClient, mentions, status_text
from services.outbound.platforms.webhook import WebhookClient, public
from services.outbound.platforms.wire import same_text
from services.outbound.platforms.x import XClient
from shared.commands import ReplyMethod
from shared.events import Kind, Platform, ReplyContext
from stayhuman.natsserver import free_port
from tests.write_fakes.bluesky import FakeBlueskyWrites
from tests.write_fakes.mastodon import FakeMastodonWrites
from tests.write_fakes.webhook import FakeReceiver
from tests.write_fakes.x import DUPLICATE, NOT_MENTIONED, FakeX

QUICK = httpx.Timeout(1.0, connect=2.0)  # a held answer is given up on after a second
TID = re.compile(r"^[234567abcdefghij][234567abcdefghijklmnopqrstuvwxyz]{12}$")
_counter = iter(range(1, 1_000_000))


def _target(platform: Platform, kind: Kind, **given: object) -> Target:
    fields: dict[str, object] = {
        "platform": platform,
        "kind": kind,
        "account_external_id": None,
        "account_handle": "",
        "thread_id": "t",
        "external_id": "e",
        "parent_id": None,
        "author_id": "a",
        "author_handle": "",
        "created_at": datetime.now(UTC) - timedelta(minutes=5),
    }
    return Target(**{**fields, **given})  # type: ignore[arg-type]


def _outgoing(target: Target, method: ReplyMethod, text: str, *, key: str | None = None) -> Outgoing:
    number = next(_counter)
    reply_id = f"reply-{number}"
    return Outgoing(
        reply_id=reply_id,
        key=key or f"key-{number}",
        text=text,
        method=method,
        tag=None,
        target=target,
        person_id="person-7",
        person_name="Ana",
    )


async def _refused(attempt: object) -> Refused:
    with pytest.raises(Refused) as caught:
        await attempt  # type: ignore[misc]
    return caught.value


# ---------------------------------------------------------------- X


@pytest.fixture
def x() -> Iterator[FakeX]:
    fake = FakeX().start()
    yield fake
    fake.stop()


def _x_credentials(x: FakeX, **extra: str) -> Credentials:
    values = {
        "access_token": "x-access-0",
        "refresh_token": "x-refresh-0",
        "client_id": x.client_id,
        "api_base_url": x.url,
        "token_url": f"{x.url}/2/oauth2/token",
    }
    return Credentials(values={**values, **extra})


def _x_reply(x: FakeX, text: str = "Yes, until 8 tonight!") -> Outgoing:
    tweet = x.tweet("2001", "fan2001")
    target = _target(
        Platform.x, Kind.mention, account_external_id=x.own_id, account_handle="@bluebirdcoffee",
        thread_id=f"tweet:{tweet}", external_id=tweet, author_id="2001", author_handle="@fan2001",
        context=ReplyContext(mentions=[x.own_id]),
    )  # fmt: skip
    return _outgoing(target, ReplyMethod.post, text)


async def test_an_x_reply_is_one_post_in_reply_to_the_post_answered(x: FakeX) -> None:
    outgoing = _x_reply(x)

    posted = await XClient().post(outgoing, _x_credentials(x))

    [request] = x.received
    assert (request.method, request.path, request.query) == ("POST", "/2/tweets", {})
    assert request.headers["authorization"] == "Bearer x-access-0"
    assert request.headers["content-type"] == "application/json"
    assert request.json() == {
        "text": "Yes, until 8 tonight!",
        "reply": {"in_reply_to_tweet_id": outgoing.target.external_id},
    }
    [made] = x.own_posts()
    assert posted == Posted(platform_id=made["id"], url=f"https://x.com/bluebirdcoffee/status/{made['id']}")


async def test_an_x_dm_goes_to_the_conversation_ingest_kept_or_the_pair_of_ids(x: FakeX) -> None:
    kept = _target(
        Platform.x, Kind.dm, account_external_id=x.own_id, thread_id="dm:2001", external_id="dm1",
        author_id="2001", context=ReplyContext(dm_conversation_id="2001-1500000000000000001"),
    )  # fmt: skip
    posted = await XClient().post(_outgoing(kept, ReplyMethod.dm, "We sent a new one."), _x_credentials(x))
    derived = _target(
        Platform.x,
        Kind.dm,
        account_external_id=x.own_id,
        thread_id="dm:99",
        external_id="dm2",
        author_id="99",
    )
    await XClient().post(_outgoing(derived, ReplyMethod.dm, "Thanks!"), _x_credentials(x))

    first, second = x.received
    assert first.path == "/2/dm_conversations/2001-1500000000000000001/messages"
    assert first.json() == {"text": "We sent a new one."}
    assert first.headers["authorization"] == "Bearer x-access-0"
    # A one-to-one conversation is named by its two ids, the smaller first (numerically).
    assert second.path == "/2/dm_conversations/99-1500000000000000001/messages"
    assert posted == Posted(platform_id=x.dm_events[0]["id"])


async def test_x_refusing_a_reply_where_the_brand_was_not_mentioned_is_a_closed_window_in_xs_words(
    x: FakeX,
) -> None:
    outgoing = _x_reply(x)
    x.not_mentioned.add(outgoing.target.external_id)

    refused = await _refused(XClient().post(outgoing, _x_credentials(x)))

    assert (refused.window, refused.retry, refused.expired, refused.status) == (True, False, False, 403)
    assert refused.error == NOT_MENTIONED
    assert x.own_posts() == []


async def test_x_refusing_duplicate_content_is_refused_for_good(x: FakeX) -> None:
    await XClient().post(_x_reply(x, "Same words"), _x_credentials(x))

    refused = await _refused(XClient().post(_x_reply(x, "Same words"), _x_credentials(x)))

    assert (refused.window, refused.retry, refused.status) == (False, False, 403)
    assert refused.error == DUPLICATE
    assert len(x.own_posts()) == 1


async def test_an_x_rate_limit_is_retried_after_the_reset_x_gives(x: FakeX) -> None:
    x.rate_limited = 1

    refused = await _refused(XClient().post(_x_reply(x), _x_credentials(x)))

    assert refused.retry and refused.status == 429
    assert refused.retry_after is not None and 25 <= refused.retry_after <= 31
    assert x.own_posts() == []


async def test_an_x_server_error_after_sending_is_lost_and_no_connection_is_refused_to_retry(
    x: FakeX,
) -> None:
    x.errors = [503]
    with pytest.raises(Lost):
        await XClient().post(_x_reply(x), _x_credentials(x))

    nowhere = _x_credentials(x, api_base_url=f"http://127.0.0.1:{free_port()}")
    refused = await _refused(XClient().post(_x_reply(x), nowhere))
    assert refused.retry and not refused.window and refused.status is None


async def test_an_expired_x_token_is_refreshed_and_x_rotates_the_refresh_token(x: FakeX) -> None:
    client = XClient()
    credentials = _x_credentials(x)
    x.expire()

    refused = await _refused(client.post(_x_reply(x), credentials))
    assert refused.expired and refused.status == 401

    fresh = await client.refresh(credentials)
    token_request = x.requests("POST", "/2/oauth2/token")[0]
    assert token_request.form() == {
        "grant_type": "refresh_token",
        "refresh_token": "x-refresh-0",
        "client_id": x.client_id,
    }
    assert token_request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert "authorization" not in token_request.headers  # a public client: no secret, no Basic auth
    assert fresh.values["access_token"] == "x-access-1"
    assert fresh.values["refresh_token"] == "x-refresh-1"  # the rotated one: the old one no longer works
    assert fresh.values["client_id"] == x.client_id and fresh.values["api_base_url"] == x.url
    assert fresh.expires_at is not None
    assert abs((fresh.expires_at - datetime.now(UTC)).total_seconds() - 7200) < 60

    posted = await client.post(_x_reply(x), fresh)
    assert posted.platform_id == x.own_posts()[0]["id"]
    with pytest.raises(CredentialsFailed, match="Value passed for the token was invalid"):
        await client.refresh(credentials)  # the refresh token before rotation


async def test_an_x_confidential_client_refreshes_with_basic_auth(x: FakeX) -> None:
    x.client_secret = "s3cret"

    fresh = await XClient().refresh(_x_credentials(x, client_secret="s3cret"))

    [request] = x.received
    assert request.headers["authorization"] == "Basic c3RheWh1bWFuLXgtY2xpZW50OnMzY3JldA=="
    assert request.form()["client_id"] == x.client_id
    assert fresh.values["refresh_token"] == "x-refresh-1"
    with pytest.raises(CredentialsFailed):
        await XClient().refresh(_x_credentials(x, client_secret="wrong", refresh_token="x-refresh-1"))


async def test_a_held_x_post_is_lost_then_found_once_in_the_brands_timeline(x: FakeX) -> None:
    outgoing = _x_reply(x, "Oat milk, yes.")
    since = datetime.now(UTC)
    assert await XClient().find(outgoing, _x_credentials(x), since) is None
    x.hold = math.inf

    with pytest.raises(Lost):
        await XClient(timeout=QUICK).post(outgoing, _x_credentials(x))
    x.hold = None
    found = await XClient().find(outgoing, _x_credentials(x), since)

    [made] = x.own_posts()
    assert made["text"] == "@fan2001 Oat milk, yes."  # X shows the handle answered in front
    assert found is not None and found.platform_id == made["id"]
    assert found.url == f"https://x.com/bluebirdcoffee/status/{made['id']}"
    read = x.requests("GET")[-1]
    assert read.path == f"/2/users/{x.own_id}/tweets"
    assert set(read.query["tweet.fields"].split(",")) >= {
        "created_at",
        "referenced_tweets",
        "in_reply_to_user_id",
    }
    assert read.query["start_time"].endswith("Z")
    other = _outgoing(outgoing.target, ReplyMethod.post, "Some other words")
    assert await XClient().find(other, _x_credentials(x), since) is None


async def test_a_lost_x_dm_is_found_in_the_conversations_events(x: FakeX) -> None:
    target = _target(
        Platform.x,
        Kind.dm,
        account_external_id=x.own_id,
        thread_id="dm:2001",
        external_id="dm1",
        author_id="2001",
    )
    outgoing = _outgoing(target, ReplyMethod.dm, "On its way.")
    since = datetime.now(UTC)
    x.errors = [502]

    with pytest.raises(Lost):
        await XClient().post(outgoing, _x_credentials(x))
    assert await XClient().find(outgoing, _x_credentials(x), since) is None  # the 502 took nothing
    posted = await XClient().post(outgoing, _x_credentials(x))
    found = await XClient().find(outgoing, _x_credentials(x), since)

    assert found is not None and found.platform_id == posted.platform_id
    read = x.requests("GET")[-1]
    assert read.path == "/2/dm_conversations/2001-1500000000000000001/dm_events"
    assert set(read.query["dm_event.fields"].split(",")) == {"created_at", "sender_id", "text"}


async def test_x_reads_a_dm_conversation_page_by_page_back_to_when_the_reply_was_sent(x: FakeX) -> None:
    conversation = "2001-1500000000000000001"
    older = datetime.now(UTC) - timedelta(days=1)
    x.dm_events += [{"id": f"old{n}", "event_type": "MessageCreate", "text": f"old {n}", "sender_id": "2001",
                     "dm_conversation_id": conversation, "created_at": older} for n in range(250)]  # fmt: skip
    target = _target(
        Platform.x,
        Kind.dm,
        account_external_id=x.own_id,
        thread_id="dm:2001",
        external_id="dm1",
        author_id="2001",
    )
    outgoing = _outgoing(target, ReplyMethod.dm, "Found it?")
    since = datetime.now(UTC)

    assert await XClient().find(outgoing, _x_credentials(x), since) is None
    assert len(x.requests("GET")) == 1  # the first page reached messages from before: no need to read on
    x.hold = math.inf
    with pytest.raises(Lost):
        await XClient(timeout=QUICK).post(outgoing, _x_credentials(x))
    x.hold = None
    x.dm_events += [{"id": f"new{n}", "event_type": "MessageCreate", "text": f"and {n}", "sender_id": "2001",
                     "dm_conversation_id": conversation, "created_at": datetime.now(UTC)} for n in range(150)]  # fmt: skip
    found = await XClient().find(outgoing, _x_credentials(x), since)

    mine = [event for event in x.dm_events if event["sender_id"] == x.own_id]
    assert found is not None and [found.platform_id] == [event["id"] for event in mine]
    assert [r.query.get("pagination_token") for r in x.requests("GET")[1:]] == [None, "100"]


async def test_x_find_without_the_brands_id_cannot_tell(x: FakeX) -> None:
    outgoing = _x_reply(x)
    anonymous = _outgoing(
        _target(Platform.x, Kind.mention, external_id=outgoing.target.external_id), ReplyMethod.post, "Hi"
    )
    with pytest.raises(Unreadable):
        await XClient().find(anonymous, _x_credentials(x), datetime.now(UTC))
    x.expire()
    with pytest.raises(Unreadable):
        await XClient().find(outgoing, _x_credentials(x), datetime.now(UTC))


# ---------------------------------------------------------------- Mastodon


@pytest.fixture
def mastodon() -> Iterator[FakeMastodonWrites]:
    fake = FakeMastodonWrites().start()
    yield fake
    fake.stop()


def _mastodon_credentials(fake: FakeMastodonWrites) -> Credentials:
    return Credentials(values={"access_token": fake.token, "api_base_url": fake.url})


def _mastodon_reply(
    fake: FakeMastodonWrites,
    text: str = "Yes, till 6!",
    *,
    visibility: str | None = "unlisted",
    key: str | None = None,
) -> Outgoing:
    status = fake.status("fan1@fosstodon.example")
    target = _target(
        Platform.mastodon, Kind.mention, account_external_id=fake.own_id, account_handle="@bluebird",
        thread_id=f"status:{status}", external_id=status, author_id="7001", author_handle="@fan1@fosstodon.example",
        context=ReplyContext(visibility=visibility) if visibility else None,
    )  # fmt: skip
    return _outgoing(target, ReplyMethod.status, text, key=key)


async def test_a_mastodon_reply_mentions_the_author_keeps_the_visibility_and_sends_its_key(
    mastodon: FakeMastodonWrites,
) -> None:
    outgoing = _mastodon_reply(mastodon)

    posted = await MastodonClient().post(outgoing, _mastodon_credentials(mastodon))

    [request] = mastodon.received
    assert (request.method, request.path) == ("POST", "/api/v1/statuses")
    assert request.headers["authorization"] == f"Bearer {mastodon.token}"
    assert request.headers["idempotency-key"] == outgoing.key
    assert request.json() == {
        "status": "@fan1@fosstodon.example Yes, till 6!",
        "in_reply_to_id": outgoing.target.external_id,
        "visibility": "unlisted",
    }
    [made] = mastodon.own_statuses()
    assert posted.platform_id == made["id"] and posted.url == made["url"]
    assert posted.created_at is not None and abs((posted.created_at - datetime.now(UTC)).total_seconds()) < 30


async def test_a_mastodon_reply_that_mentions_the_author_already_is_sent_as_written(
    mastodon: FakeMastodonWrites,
) -> None:
    outgoing = _mastodon_reply(mastodon, "Thanks @FAN1@fosstodon.example, see you!", visibility=None)

    await MastodonClient().post(outgoing, _mastodon_credentials(mastodon))

    assert mastodon.received[0].json()["status"] == "Thanks @FAN1@fosstodon.example, see you!"
    assert mastodon.received[0].json()["visibility"] == "public"  # no visibility known: public


async def test_mastodon_errors_mean_what_mastodon_says(mastodon: FakeMastodonWrites) -> None:
    client = MastodonClient()
    credentials = _mastodon_credentials(mastodon)

    too_long = await _refused(client.post(_mastodon_reply(mastodon, "x" * 600), credentials))
    assert too_long.error == "Validation failed: Text character limit of 500 exceeded"
    assert (too_long.status, too_long.retry, too_long.expired) == (422, False, False)

    mastodon.rate_limited = 1
    limited = await _refused(client.post(_mastodon_reply(mastodon), credentials))
    assert limited.retry and limited.status == 429
    assert limited.retry_after is not None and 30 <= limited.retry_after <= 41

    mastodon.errors = [500]
    with pytest.raises(Lost):
        await client.post(_mastodon_reply(mastodon), credentials)

    mastodon.expire()
    expired = await _refused(client.post(_mastodon_reply(mastodon), credentials))
    assert expired.expired and expired.error == "The access token is invalid"
    with pytest.raises(CredentialsFailed, match="cannot be refreshed"):
        await client.refresh(credentials)
    assert mastodon.own_statuses() == []


async def test_mastodon_retries_with_the_same_key_make_one_status_and_find_finds_it_once(
    mastodon: FakeMastodonWrites,
) -> None:
    outgoing = _mastodon_reply(mastodon, "We open at 8.")
    credentials = _mastodon_credentials(mastodon)
    since = datetime.now(UTC)
    assert await MastodonClient().find(outgoing, credentials, since) is None
    mastodon.hold = math.inf

    with pytest.raises(Lost):
        await MastodonClient(timeout=QUICK).post(outgoing, credentials)
    mastodon.hold = None
    found = await MastodonClient().find(outgoing, credentials, since)
    again = await MastodonClient().post(outgoing, credentials)

    [made] = mastodon.own_statuses()
    assert found is not None and found.platform_id == made["id"] == again.platform_id
    assert [r.headers["idempotency-key"] for r in mastodon.requests("POST")] == [outgoing.key, outgoing.key]
    context = mastodon.requests("GET")[-1]
    assert context.path == f"/api/v1/statuses/{outgoing.target.external_id}/context"
    assert context.headers["authorization"] == f"Bearer {mastodon.token}"
    other = _outgoing(outgoing.target, ReplyMethod.status, "Different words")
    assert await MastodonClient().find(other, credentials, since) is None


# ---------------------------------------------------------------- Bluesky


@pytest.fixture
def bluesky() -> Iterator[FakeBlueskyWrites]:
    fake = FakeBlueskyWrites().start()
    yield fake
    fake.stop()


def _bluesky_credentials(fake: FakeBlueskyWrites) -> Credentials:
    return Credentials(
        values={"identifier": fake.handle, "app_password": fake.app_password, "api_base_url": fake.url}
    )


def _bluesky_reply(
    fake: FakeBlueskyWrites, text: str = "Till 6 today!", *, context: ReplyContext | None = None
) -> Outgoing:
    target = _target(
        Platform.bluesky, Kind.mention, account_external_id=fake.did, account_handle="@bluebird.coffee",
        thread_id="post:at://did:plc:fan1/app.bsky.feed.post/3kparent", external_id="at://did:plc:fan1/app.bsky.feed.post/3kparent",
        author_id="did:plc:fan1", author_handle="@fan1.bsky.social",
        context=context or ReplyContext(cid="bafyreiparent"),
    )  # fmt: skip
    reply_id = f"reply-{next(_counter)}"
    return _outgoing(target, ReplyMethod.post, text, key=tid_for(reply_id, datetime.now(UTC)))


@given(
    st.text(max_size=40),
    st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)),
)
def test_tid_for_is_a_valid_tid_the_same_for_the_same_reply(reply_id: str, at: datetime) -> None:
    tid = tid_for(reply_id, at)
    assert TID.match(tid)
    assert tid == tid_for(reply_id, at)
    later = at + timedelta(microseconds=1)
    assert tid_for(reply_id, later) > tid  # later keys sort later, like the ones Bluesky makes


def test_tid_for_refuses_a_naive_time() -> None:
    with pytest.raises(ValueError):
        tid_for("r", datetime(2026, 1, 1))


async def test_a_bluesky_reply_starts_a_session_then_creates_its_record_under_its_key(
    bluesky: FakeBlueskyWrites,
) -> None:
    client = BlueskyClient()
    outgoing = _bluesky_reply(bluesky)
    credentials = _bluesky_credentials(bluesky)

    none_yet = await _refused(client.post(outgoing, credentials))
    assert none_yet.expired and bluesky.received == []  # nothing sent without a session
    session = await client.refresh(credentials)
    posted = await client.post(outgoing, session)

    login, create = bluesky.received
    assert (login.method, login.path) == ("POST", "/xrpc/com.atproto.server.createSession")
    assert login.json() == {"identifier": bluesky.handle, "password": bluesky.app_password}
    assert session.values["did"] == bluesky.did and session.values["identifier"] == bluesky.handle
    assert session.expires_at is not None
    assert abs((session.expires_at - datetime.now(UTC)).total_seconds() - 7200) < 60
    assert (create.method, create.path) == ("POST", "/xrpc/com.atproto.repo.createRecord")
    assert create.headers["authorization"] == f"Bearer {session.values['accessJwt']}"
    body = create.json()
    created_at = body["record"].pop("createdAt")
    assert (
        abs((datetime.fromisoformat(created_at.replace("Z", "+00:00")) - datetime.now(UTC)).total_seconds())
        < 30
    )
    parent = {"uri": outgoing.target.external_id, "cid": "bafyreiparent"}
    assert body == {
        "repo": bluesky.did,
        "collection": "app.bsky.feed.post",
        "rkey": outgoing.key,
        "record": {
            "$type": "app.bsky.feed.post",
            "text": "Till 6 today!",
            "reply": {"root": parent, "parent": parent},
        },
    }
    assert posted.platform_id == f"at://{bluesky.did}/app.bsky.feed.post/{outgoing.key}"
    assert posted.url == f"https://bsky.app/profile/{bluesky.did}/post/{outgoing.key}"


async def test_a_bluesky_reply_deep_in_a_thread_references_the_threads_root(
    bluesky: FakeBlueskyWrites,
) -> None:
    client = BlueskyClient()
    context = ReplyContext(
        cid="bafyreiparent", root_uri="at://did:plc:fan9/app.bsky.feed.post/3kroot", root_cid="bafyreiroot"
    )
    session = await client.refresh(_bluesky_credentials(bluesky))

    await client.post(_bluesky_reply(bluesky, context=context), session)

    reply = bluesky.requests(path="/xrpc/com.atproto.repo.createRecord")[0].json()["record"]["reply"]
    assert reply["root"] == {"uri": "at://did:plc:fan9/app.bsky.feed.post/3kroot", "cid": "bafyreiroot"}
    assert reply["parent"]["cid"] == "bafyreiparent"
    no_cid = _bluesky_reply(bluesky, context=ReplyContext())
    refused = await _refused(client.post(no_cid, session))
    assert not refused.retry and "CID" in refused.error


async def test_an_expired_bluesky_session_is_refreshed_or_made_again(bluesky: FakeBlueskyWrites) -> None:
    client = BlueskyClient()
    first = await client.refresh(_bluesky_credentials(bluesky))
    bluesky.expire_access()

    expired = await _refused(client.post(_bluesky_reply(bluesky), first))
    assert expired.expired and expired.error == "Token has expired"
    renewed = await client.refresh(first)
    last = bluesky.received[-1]
    assert last.path == "/xrpc/com.atproto.server.refreshSession"
    assert last.headers["authorization"] == f"Bearer {first.values['refreshJwt']}"
    assert renewed.values["refreshJwt"] != first.values["refreshJwt"]
    await client.post(_bluesky_reply(bluesky), renewed)

    bluesky.expire_access()
    bluesky.expire_refresh()
    again = await client.refresh(renewed)
    assert [r.path.rsplit(".", 1)[-1] for r in bluesky.received[-2:]] == ["refreshSession", "createSession"]
    await client.post(_bluesky_reply(bluesky), again)
    assert len(bluesky.records) == 2

    wrong = Credentials(values={**_bluesky_credentials(bluesky).values, "app_password": "nope"})
    with pytest.raises(CredentialsFailed, match="Invalid identifier or password"):
        await client.refresh(wrong)


async def test_a_bluesky_key_posted_twice_is_one_record_read_back_as_posted(
    bluesky: FakeBlueskyWrites,
) -> None:
    client = BlueskyClient()
    session = await client.refresh(_bluesky_credentials(bluesky))
    outgoing = _bluesky_reply(bluesky)

    first = await client.post(outgoing, session)
    second = await client.post(outgoing, session)

    assert second.platform_id == first.platform_id
    assert len(bluesky.records) == 1
    paths = [(r.method, r.path) for r in bluesky.received[1:]]
    assert paths == [
        ("POST", "/xrpc/com.atproto.repo.createRecord"),
        ("POST", "/xrpc/com.atproto.repo.createRecord"),
        ("GET", "/xrpc/com.atproto.repo.getRecord"),
    ]
    assert bluesky.received[-1].query == {
        "repo": bluesky.did,
        "collection": "app.bsky.feed.post",
        "rkey": outgoing.key,
    }


async def test_a_held_bluesky_post_is_lost_then_found_once_and_posting_again_is_safe(
    bluesky: FakeBlueskyWrites,
) -> None:
    client = BlueskyClient()
    session = await client.refresh(_bluesky_credentials(bluesky))
    outgoing = _bluesky_reply(bluesky)
    since = datetime.now(UTC)
    assert await client.find(outgoing, session, since) is None
    bluesky.hold = math.inf

    with pytest.raises(Lost):
        await BlueskyClient(timeout=QUICK).post(outgoing, session)
    bluesky.hold = None
    found = await client.find(outgoing, session, since)
    again = await client.post(outgoing, session)

    assert (
        found is not None and found.platform_id == again.platform_id == bluesky.records[outgoing.key]["uri"]
    )
    assert len(bluesky.records) == 1


async def test_bluesky_rate_limits_retry_and_server_errors_are_lost(bluesky: FakeBlueskyWrites) -> None:
    client = BlueskyClient()
    session = await client.refresh(_bluesky_credentials(bluesky))
    bluesky.rate_limited = 1
    limited = await _refused(client.post(_bluesky_reply(bluesky), session))
    assert limited.retry and limited.status == 429
    assert limited.retry_after is not None and 15 <= limited.retry_after <= 21

    bluesky.errors = [502]
    with pytest.raises(Lost):
        await client.post(_bluesky_reply(bluesky), session)
    assert bluesky.records == {}


@given(st.text(max_size=80))
def test_a_status_mentions_its_author_once_in_front_unless_the_text_does(text: str) -> None:
    sent = status_text(text, "@fan1@fosstodon.example")
    assert mentions(sent, "fan1@fosstodon.example")
    assert sent == text or sent == f"@fan1@fosstodon.example {text}"
    assert status_text(sent, "@fan1@fosstodon.example") == sent


@given(st.text(max_size=80) | st.sampled_from(["fish &amp; chips", "a < b & c", "@fan2001 hi"]))
def test_a_reply_shown_back_with_mentions_in_front_or_escaped_is_the_same_text(text: str) -> None:
    escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    assert same_text(text, "@fan2001 @other " + escaped)
    assert same_text(text, text)
    assert not same_text(text + " and more", text)


# ---------------------------------------------------------------- the outbound webhook


@pytest.fixture
def receiver() -> Iterator[FakeReceiver]:
    fake = FakeReceiver().start()
    yield fake
    fake.stop()


def _webhook_credentials(url: str, secret: str = "webhook-secret") -> Credentials:
    return Credentials(values={"url": url, "secret": secret})


def _webhook_reply(text: str = "Your refund is on its way.") -> Outgoing:
    target = _target(
        Platform.other, Kind.comment, thread_id="ticket-42", external_id="msg-9", author_id="cust-1"
    )
    return dataclasses.replace(
        _outgoing(target, ReplyMethod.webhook, text), conversation_id="c" * 32, account_id="acme-tickets"
    )


async def test_a_webhook_reply_is_one_signed_post_the_receiver_verifies(receiver: FakeReceiver) -> None:
    outgoing = _webhook_reply()

    posted = await WebhookClient(allow_private=True).post(outgoing, _webhook_credentials(receiver.endpoint))

    [request] = receiver.received
    assert (request.method, request.path) == ("POST", receiver.path)
    assert request.headers["content-type"] == "application/json"
    assert request.headers["x-stayhuman-delivery"] == outgoing.key
    timestamp = request.headers["x-stayhuman-timestamp"]
    assert abs(int(timestamp) - time.time()) < 30
    expected = hmac.new(
        b"webhook-secret", timestamp.encode() + b"." + request.body, hashlib.sha256
    ).hexdigest()
    assert request.headers["x-stayhuman-signature"] == f"sha256={expected}"
    assert receiver.bad_signatures == 0
    body = request.json()
    sent_at = body.pop("sent_at")
    assert (
        abs((datetime.fromisoformat(sent_at.replace("Z", "+00:00")) - datetime.now(UTC)).total_seconds()) < 30
    )
    assert body == {
        "reply_id": outgoing.reply_id,
        "conversation_id": "c" * 32,
        "account_id": "acme-tickets",
        "thread_id": "ticket-42",
        "in_reply_to": "msg-9",
        "text": "Your refund is on its way.",
        "person": {"id": "person-7", "name": "Ana"},
    }
    assert posted == Posted(platform_id="ticket-1")


async def test_a_webhook_without_an_id_is_named_by_its_delivery(receiver: FakeReceiver) -> None:
    receiver.give_ids = False
    outgoing = _webhook_reply()

    posted = await WebhookClient(allow_private=True).post(outgoing, _webhook_credentials(receiver.endpoint))

    assert posted.platform_id == f"webhook:{outgoing.key}"


async def test_a_webhook_signed_with_another_secret_is_refused_by_the_receiver(
    receiver: FakeReceiver,
) -> None:
    refused = await _refused(
        WebhookClient(allow_private=True).post(
            _webhook_reply(), _webhook_credentials(receiver.endpoint, "wrong")
        )
    )
    assert refused.status == 401 and not refused.retry and not refused.expired
    assert receiver.bad_signatures == 1 and receiver.deliveries == {}


async def test_webhook_answers_mean_refused_retry_or_lost(receiver: FakeReceiver) -> None:
    client = WebhookClient(allow_private=True)
    credentials = _webhook_credentials(receiver.endpoint)

    receiver.refuse = 422
    refused = await _refused(client.post(_webhook_reply(), credentials))
    assert refused.status == 422 and not refused.retry and "closed here" in refused.error
    receiver.refuse = None

    receiver.rate_limited = 1
    limited = await _refused(client.post(_webhook_reply(), credentials))
    assert limited.retry and limited.retry_after == 7

    receiver.errors = [503]
    with pytest.raises(Lost):
        await client.post(_webhook_reply(), credentials)
    assert receiver.deliveries == {}


async def test_a_held_webhook_is_lost_and_posting_it_again_delivers_it_once(receiver: FakeReceiver) -> None:
    outgoing = _webhook_reply()
    credentials = _webhook_credentials(receiver.endpoint)
    receiver.hold = math.inf

    with pytest.raises(Lost):
        await WebhookClient(allow_private=True, timeout=QUICK).post(outgoing, credentials)
    with pytest.raises(Unreadable):
        await WebhookClient(allow_private=True).find(outgoing, credentials, datetime.now(UTC))
    receiver.hold = None
    again = await WebhookClient(allow_private=True).post(outgoing, credentials)

    assert again.platform_id == "ticket-1"
    assert list(receiver.deliveries) == [outgoing.key]
    assert [r.headers["x-stayhuman-delivery"] for r in receiver.received] == [outgoing.key, outgoing.key]


async def test_a_webhook_goes_to_the_address_checked_with_the_name_kept(receiver: FakeReceiver) -> None:
    named = f"http://localhost:{receiver.port}{receiver.path}"

    await WebhookClient(allow_private=True).post(_webhook_reply(), _webhook_credentials(named))

    assert receiver.received[0].headers["host"] == f"localhost:{receiver.port}"
    assert receiver.bad_signatures == 0


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1:{port}/stayhuman/replies",
        "https://localhost:{port}/stayhuman/replies",
        "https://[::1]:{port}/stayhuman/replies",
        "https://[::ffff:127.0.0.1]:{port}/stayhuman/replies",
        "https://0.0.0.0:{port}/stayhuman/replies",
        "https://10.20.30.40/hook",
        "https://192.168.1.1/hook",
        "https://169.254.169.254/latest/meta-data/",
        "https://[fe80::1]/hook",
        "https://100.64.0.1/hook",
        "http://example.com/hook",  # plain http only within the operator's own network
        "ftp://example.com/hook",
        "file:///etc/passwd",
    ],
)
async def test_a_webhook_never_reaches_a_private_address_unless_the_operator_allows_it(
    receiver: FakeReceiver, url: str
) -> None:
    refused = await _refused(
        WebhookClient().post(_webhook_reply(), _webhook_credentials(url.format(port=receiver.port)))
    )

    assert not refused.retry
    assert receiver.received == []


@pytest.mark.parametrize(
    ("address", "reachable"),
    [
        ("93.184.216.34", True),
        ("2606:4700:4700::1111", True),
        ("127.0.0.53", False),
        ("172.16.5.4", False),
        ("224.0.0.1", False),  # multicast
        ("2002:7f00:1::", False),  # 6to4 of 127.0.0.1
        ("2002:5db8:d822::", True),  # 6to4 of a public address
        ("64:ff9b::a00:1", False),  # NAT64 of 10.0.0.1
        ("fc00::1", False),
        ("::", False),
    ],
)
def test_public_addresses(address: str, reachable: bool) -> None:
    assert public(ipaddress.ip_address(address)) is reachable
