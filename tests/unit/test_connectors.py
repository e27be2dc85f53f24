"""The connectors against the platforms' documented payloads (tests/fixtures)."""

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.ingest.connectors import meta, x
from services.ingest.connectors.model import MalformedPayload
from shared.events import Direction, InteractionReceived, Kind, Platform, ReplyContext
from tests.helpers import generic_body

FIXTURES = Path(__file__).parents[1] / "fixtures" / "platforms"


@pytest.fixture(scope="module")
def signed() -> dict[str, Any]:
    return json.loads((FIXTURES / "signed_requests.json").read_text())


def body_of(request: dict[str, Any]) -> bytes:
    return request["body"].encode()


@pytest.mark.parametrize(
    "name",
    [
        "meta_messenger_message",
        "meta_messenger_echo",
        "meta_page_comment",
        "meta_page_own_reply",
        "instagram_comment",
    ],
)
def test_meta_signatures_of_the_documented_requests_verify(signed: dict[str, Any], name: str) -> None:
    request = signed[name]
    body = body_of(request)
    header = request["headers"]["X-Hub-Signature-256"]
    assert meta.signature_valid(secret=request["secret"], body=body, header=header)
    assert not meta.signature_valid(secret="another-secret", body=body, header=header)
    assert not meta.signature_valid(secret=request["secret"], body=body + b" ", header=header)


def test_meta_subscription_check(signed: dict[str, Any]) -> None:
    query = signed["meta_subscribe"]["query"]
    assert meta.challenge(query, verify_token="shared-verify-token") == "1158201444"
    assert meta.challenge(query, verify_token="other") is None
    assert meta.challenge({**query, "hub.mode": "unsubscribe"}, verify_token="shared-verify-token") is None


def test_messenger_message_and_its_echo_share_a_thread(signed: dict[str, Any]) -> None:
    (message,) = meta.parse(body_of(signed["meta_messenger_message"])).drafts
    (echo,) = meta.parse(body_of(signed["meta_messenger_echo"])).drafts
    assert message.platform is Platform.facebook and message.platform_account_id == "104857600000001"
    assert message.direction is Direction.inbound and echo.direction is Direction.outbound
    assert message.kind is Kind.dm and message.thread_id == echo.thread_id == "dm:7200000000000001"
    assert message.external_id == "m_AbCdEfGh1234567890"
    assert message.created_at == datetime(2025, 11, 26, tzinfo=UTC)  # Messenger time is in milliseconds


def test_page_comment_and_the_pages_reply_share_a_thread(signed: dict[str, Any]) -> None:
    (comment,) = meta.parse(body_of(signed["meta_page_comment"])).drafts
    (reply,) = meta.parse(body_of(signed["meta_page_own_reply"])).drafts
    assert comment.direction is Direction.inbound and comment.author.name == "Dana Reyes"
    assert reply.direction is Direction.outbound  # from.id is the page itself
    assert comment.thread_id == reply.thread_id == "comment:900000000000001_800000000000001"
    assert comment.created_at == datetime(2025, 11, 26, tzinfo=UTC)  # feed time is in seconds
    assert comment.kind is Kind.comment and reply.kind is Kind.reply


def test_instagram_comment(signed: dict[str, Any]) -> None:
    (comment,) = meta.parse(body_of(signed["instagram_comment"])).drafts
    assert comment.platform is Platform.instagram and comment.platform_account_id == "17841400000000001"
    assert comment.author.handle == "sam.draws" and comment.direction is Direction.inbound
    assert comment.text == "love this! do you ship to Canada?"


def test_meta_batches_edits_removals_and_other_events() -> None:
    def change(verb: str, comment: str, text: str) -> dict[str, Any]:
        return {
            "field": "feed",
            "value": {
                "item": "comment", "verb": verb, "comment_id": comment, "post_id": "P_1", "parent_id": "P_1",
                "from": {"id": "u1", "name": "Ünal Çelik"}, "message": text, "created_time": 1764115200,
            },
        }  # fmt: skip

    document = {
        "object": "page",
        "entry": [
            {
                "id": "P",
                "time": 1,
                "changes": [change("add", "C_1", "Grüße! ☕"), change("edited", "C_1", "Grüße!!")],
            },
            {
                "id": "P",
                "time": 1,
                "changes": [change("remove", "C_2", ""), {"field": "ratings", "value": {}}],
            },
            {
                "id": "P",
                "time": 1,
                "messaging": [{"sender": {"id": "u"}, "recipient": {"id": "P"}, "read": {}}],
            },
        ],
    }
    # Meta escapes non-ASCII (\\u00fc); the parser reads the escaped bytes it was sent
    parsed = meta.parse(json.dumps(document).encode())
    added, edited, removed = parsed.drafts
    assert added.text == "Grüße! ☕" and added.edit_version == 0
    assert edited.external_id == added.external_id and edited.edit_version not in (0, added.edit_version)
    assert removed.retracted and removed.external_id == "C_2" and not added.retracted
    assert len(parsed.ignored) == 2  # a rating, a read receipt


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[]",
        b'{"object": "page"}',
        b'{"object": "page", "entry": {}}',
        b"[" * 100_000 + b"]" * 100_000,  # deeper than any parser goes
        b'{"object": "page", "entry": [' + b"1" * 5000 + b"]}",  # more digits than Python converts
        b"\xff\xfe",
    ],
)
def test_meta_malformed_bodies_say_what_is_wrong(body: bytes) -> None:
    with pytest.raises(MalformedPayload):
        meta.parse(body)


def test_one_bad_meta_entry_is_rejected_alone_and_the_rest_is_read() -> None:
    good = {
        "field": "feed",
        "value": {
            "item": "comment",
            "verb": "add",
            "comment_id": "P_1",
            "post_id": "P_0",
            "from": {"id": "u1", "name": "Dana"},
            "message": "hi",
            "created_time": 1,
        },
    }
    document = {
        "object": "page",
        "entry": [
            {},  # no id
            {
                "id": "P",
                "time": 1,
                "changes": [good, {"field": "feed", "value": {"item": "comment", "verb": "add"}}],
            },
            {"id": "P", "messaging": "not a list"},
            {"id": "P", "messaging": [{"message": {"mid": {"nested": 1}}, "sender": {"id": "u"}}]},
        ],
    }
    parsed = meta.parse(json.dumps(document).encode())
    assert [d.external_id for d in parsed.drafts] == ["P_1"]
    problems = {r.where: r.problem for r in parsed.rejected}
    assert problems == {
        "entry[0]": "ValueError: expected an object with an 'id'",
        "entry[1].changes[1]": "KeyError: 'comment_id'",
        "entry[2]": "ValueError: messaging: expected a list, got str",
        "entry[3].messaging[0]": "ValueError: message.mid: expected an id, got dict",
    }
    assert json.loads(parsed.rejected[1].raw) == {
        "field": "feed",
        "value": {"item": "comment", "verb": "add"},
    }


def test_one_bad_x_event_is_rejected_alone() -> None:
    document = {
        "for_user_id": "42",
        "tweet_create_events": [
            {
                "id_str": "1",
                "user": {"id_str": "7", "screen_name": "dana"},
                "text": "hi @brand",
                "timestamp_ms": "1700000000000",
            },
            {"id_str": "2", "user": "not an object"},
            {"id_str": "3", "user": {"id_str": "8"}, "created_at": "not a date"},
        ],
        "direct_message_events": {"not": "a list"},
    }
    parsed = x.parse(json.dumps(document).encode())
    assert [d.external_id for d in parsed.drafts] == ["1"]
    assert [r.where for r in parsed.rejected] == [
        "tweet_create_events[1]",
        "tweet_create_events[2]",
        "direct_message_events",
    ]


@pytest.mark.parametrize("token", ['{"for_user_id":"1"}', "a" * 7, "a" * 300, "abc def ghi", "tok\u00e9n123"])
def test_x_crc_signs_only_tokens_of_the_documented_form(token: str) -> None:
    """The CRC answer is the signature a POST with the token as its body would need."""
    with pytest.raises(x.BadCrcToken):
        x.crc_response(secret="consumer-secret", token=token)


def test_signature_headers_with_any_bytes_are_refused_not_crashed() -> None:
    assert not meta.signature_valid(secret="s", body=b"{}", header="sha256=\u00e9\u00e9")
    assert not x.signature_valid(secret="s", body=b"{}", header="sha256=\u00ff")


def test_x_crc_matches_the_documented_answer(signed: dict[str, Any]) -> None:
    request = signed["x_crc"]
    answer = x.crc_response(secret=request["secret"], token=request["query"]["crc_token"])
    assert answer == {"response_token": request["expected_response_token"]}


@pytest.mark.parametrize("name", ["x_dm", "x_dm_own_reply", "x_mention"])
def test_x_signatures_verify(signed: dict[str, Any], name: str) -> None:
    request = signed[name]
    header = request["headers"]["x-twitter-webhooks-signature"]
    assert x.signature_valid(secret=request["secret"], body=body_of(request), header=header)
    assert not x.signature_valid(secret="nope", body=body_of(request), header=header)


def test_x_mention_uses_string_ids(signed: dict[str, Any]) -> None:
    (mention,) = x.parse(body_of(signed["x_mention"])).drafts
    assert mention.external_id == "1860000000000000555" and mention.kind is Kind.mention
    assert mention.author.id == "1500000000000000777" and mention.author.followers == 1520
    assert mention.author.handle == "@priyanotes" and mention.direction is Direction.inbound
    assert mention.created_at == datetime(2025, 11, 26, tzinfo=UTC)


def test_x_dm_and_the_brands_answer_share_a_thread(signed: dict[str, Any]) -> None:
    (dm,) = x.parse(body_of(signed["x_dm"])).drafts
    (answer,) = x.parse(body_of(signed["x_dm_own_reply"])).drafts
    assert dm.direction is Direction.inbound and answer.direction is Direction.outbound
    assert dm.thread_id == answer.thread_id == "dm:1500000000000000777"
    assert dm.author.name == "Priya N"


def test_x_reply_by_the_brand_joins_the_mention() -> None:
    reply = {
        "for_user_id": "B",
        "tweet_create_events": [
            {"id_str": "2", "in_reply_to_status_id_str": "1", "text": "On it!", "created_at": "Wed Nov 26 00:01:00 +0000 2025",
             "user": {"id_str": "B", "screen_name": "brand"}}
        ],
    }  # fmt: skip
    (draft,) = x.parse(json.dumps(reply).encode()).drafts
    assert draft.direction is Direction.outbound and draft.thread_id == "tweet:1"


def test_mastodon_mention_from_the_documented_page() -> None:
    from services.ingest.connectors import mastodon

    page = json.loads((FIXTURES / "mastodon_notifications_page.json").read_text())
    (mention,) = mastodon.parse_notifications(page, own_id="9001", platform_account_id="9001").drafts
    assert mention.platform is Platform.mastodon and mention.external_id == "113500000000000001"
    assert mention.text == "@bluebird any vegan pastries today?"  # HTML became plain text
    assert mention.author.handle == "@zoe@fosstodon.example" and mention.author.followers == 311
    assert mention.kind is Kind.mention and mention.thread_id == "status:113500000000000001"
    assert mastodon.newest_id(page) == "34975861"


def test_mastodon_own_reply_and_direct_messages() -> None:
    from services.ingest.connectors import mastodon

    reply = {"id": "2", "in_reply_to_id": "1", "visibility": "public", "content": "<p>Yes!<br>Today.</p>",
             "created_at": "2025-11-26T00:01:00.000Z", "account": {"id": "9001", "acct": "bluebird"}}  # fmt: skip
    direct = {"id": "3", "visibility": "direct", "content": "<p>psst &amp; hi</p>", "mentions": [{"id": "9001"}],
              "created_at": "2025-11-26T00:02:00.000Z", "account": {"id": "77", "acct": "zoe"}}  # fmt: skip
    own = mastodon.parse_own_statuses(
        [reply, {**reply, "id": "4", "in_reply_to_id": None}], own_id="9001", platform_account_id="9001"
    )
    (answer,) = own.drafts
    assert (
        answer.direction is Direction.outbound
        and answer.thread_id == "status:1"
        and answer.text == "Yes!\nToday."
    )
    assert own.ignored == ["own status that answers nobody"]
    (dm,) = mastodon.parse_notifications(
        [{"type": "mention", "id": "5", "status": direct}], own_id="9001", platform_account_id="9001"
    ).drafts
    assert dm.kind is Kind.dm and dm.thread_id == "dm:77" and dm.text == "psst & hi"
    assert mastodon.newest_id([{"id": "99"}, {"id": "100"}]) == "100"  # numeric order, not text order


def test_retry_after_reads_seconds_and_dates() -> None:
    from services.ingest.pollers import retry_after_seconds

    now = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
    assert retry_after_seconds("7", now=now) == 7
    assert retry_after_seconds("Thu, 26 Nov 2026 10:00:30 GMT", now=now) == 30
    assert retry_after_seconds(None, now=now) is None and retry_after_seconds("soon", now=now) is None


def test_bluesky_mentions_and_replies_from_the_documented_page() -> None:
    from services.ingest.connectors import bluesky
    from services.ingest.connectors.feeds import Mark, Walk

    page = json.loads((FIXTURES / "bluesky_list_notifications.json").read_text())
    walk = Walk(None, now=datetime.now(UTC))
    parsed = bluesky.parse_notifications(page, own_did="did:plc:bluebirdcoffee000000000", walk=walk)
    mention, reply = parsed.drafts
    assert not walk.reached and mention.kind is Kind.mention and reply.kind is Kind.reply
    assert mention.external_id == "at://did:plc:abcdefghijklmnopqrstuvwx/app.bsky.feed.post/3kmention111a"
    assert reply.thread_id == "post:at://did:plc:bluebirdcoffee000000000/app.bsky.feed.post/3kbrandpost22a"
    assert mention.author.handle == "@kai.bsky.social" and mention.direction is Direction.inbound
    later = Walk(Mark.load("2025-11-26T00:00:00.001Z"), now=datetime.now(UTC))
    assert bluesky.parse_notifications(page, own_did="x", walk=later).drafts == []
    assert later.reached  # the high-water mark stops the walk back


def test_youtube_thread_from_the_documented_page() -> None:
    from services.ingest.connectors import youtube
    from services.ingest.connectors.feeds import Walk

    page = json.loads((FIXTURES / "youtube_comment_threads_page.json").read_text())
    walk = Walk(None, now=datetime.now(UTC))
    (comment,) = youtube.parse_threads(page, channel_id="UCbluebirdcoffee0000001", walk=walk).drafts
    assert comment.kind is Kind.comment and comment.author.name == "Lee Park"
    assert comment.thread_id == "thread:UgzTESTthread0001AaABAg" and comment.direction is Direction.inbound
    assert comment.url == "https://www.youtube.com/watch?v=dQw4TESTvid&lc=UgzTESTthread0001AaABAg"
    assert walk.next_mark().at == datetime(2025, 11, 26, tzinfo=UTC)


def test_youtube_quota_sets_the_poll_interval() -> None:
    from services.ingest.pollers import PolledAccount, PollerSupervisor
    from shared.secrets import SecretBox, new_key

    supervisor = PollerSupervisor(None, None, SecretBox(new_key()), interval=30, youtube_daily_quota=10_000)  # type: ignore[arg-type]
    supervisor._youtube_accounts = 5
    channel = PolledAccount("yt", "t", Platform.youtube, "UC1", "https://example", "key")
    assert supervisor.interval_for(channel) == 43.2  # 5 channels x 86,400 s / 10,000 units
    assert (
        supervisor.interval_for(PolledAccount("m", "t", Platform.mastodon, "1", "https://example", "t")) == 30
    )


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("Is the oat latte back on the menu this week?", "en"),
        ("¿Vuelve el café con leche de avena esta semana?", "es"),
        ("Gibt es heute wieder vegane Croissants bei euch?", "de"),
        ("@bluebird 👍", None),  # too little text to tell
    ],
)
def test_language_is_detected_when_the_platform_does_not_say(text: str, language: str | None) -> None:
    from services.ingest.connectors.language import detect_language

    assert detect_language(text) == language


def test_a_language_the_platform_gives_is_kept() -> None:
    from services.ingest.connectors.model import to_event
    from services.ingest.generic import GenericInteraction

    body = GenericInteraction.model_validate_json(
        generic_body("m1", text="Bonjour, où est ma commande ?", language="it")
    )
    from services.ingest.generic import normalise

    kept = normalise(
        body,
        tenant_id="t",
        account_id="a",
        platform=Platform.other,
        received_at=datetime.now(UTC),
        correlation_id="",
    )
    assert kept.language == "it"
    assert to_event is not None


# -- what answering needs (ReplyContext) -----------------------------------------------------

BRAND_DID = "did:plc:bluebirdcoffee000000000"


def _bluesky_page() -> dict[str, Any]:
    return json.loads((FIXTURES / "bluesky_list_notifications.json").read_text())


def _bluesky(page: dict[str, Any]) -> list[Any]:
    from services.ingest.connectors import bluesky
    from services.ingest.connectors.feeds import Walk

    parsed = bluesky.parse_notifications(page, own_did=BRAND_DID, walk=Walk(None, now=datetime.now(UTC)))
    assert parsed.rejected == []
    return parsed.drafts


def test_a_bluesky_post_carries_its_cid_and_its_threads_root() -> None:
    mention, reply = _bluesky(_bluesky_page())
    own = "at://did:plc:abcdefghijklmnopqrstuvwx/app.bsky.feed.post/3kmention111a"
    assert mention.reply == ReplyContext(  # a post that answers nothing is its own thread's root
        cid="bafyreiaqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq",
        root_uri=own,
        root_cid="bafyreiaqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq",
    )
    assert reply.reply == ReplyContext(
        cid="bafyreibrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrr",
        root_uri="at://did:plc:bluebirdcoffee000000000/app.bsky.feed.post/3kbrandpost22a",
        root_cid="bafyreicssssssssssssssssssssssssssssssssssssssssssssssssssss",
    )


def test_a_bluesky_post_with_a_malformed_cid_or_root_is_kept_without_what_it_lacks() -> None:
    page = _bluesky_page()
    mention, reply = page["notifications"]
    mention["cid"] = {"$link": "not a string"}
    del reply["record"]["reply"]["root"]["cid"]
    bare, answering = _bluesky(page)
    assert bare.reply == ReplyContext(root_uri=mention["uri"])  # no CID: answered on Bluesky
    # a reply whose root cannot be read gets nothing: an answer would split its thread
    assert answering.reply is None and answering.kind is Kind.reply and answering.text


def test_the_brands_own_bluesky_reply_carries_its_context_too() -> None:
    from services.ingest.connectors import bluesky
    from services.ingest.connectors.feeds import Walk

    answered = _bluesky_page()["notifications"][1]
    post = {
        "uri": f"at://{BRAND_DID}/app.bsky.feed.post/3kbrandreply3c",
        "cid": "bafyreidtttttttttttttttttttttttttttttttttttttttttttttttttttt",
        "author": {"did": BRAND_DID, "handle": "bluebird.coffee"},
        "indexedAt": "2025-11-26T00:05:00.000Z",
        "record": {
            "$type": "app.bsky.feed.post",
            "text": "Sorry! Answering now.",
            "createdAt": "2025-11-26T00:05:00.000Z",
            "reply": {
                "root": answered["record"]["reply"]["root"],
                "parent": {"uri": answered["uri"], "cid": answered["cid"]},
            },
        },
    }
    walk = Walk(None, now=datetime.now(UTC))
    (own,) = bluesky.parse_author_feed({"feed": [{"post": post}]}, own_did=BRAND_DID, walk=walk).drafts
    assert own.direction is Direction.outbound and own.reply is not None
    assert (own.reply.cid, own.reply.root_cid) == (post["cid"], answered["record"]["reply"]["root"]["cid"])


def test_a_mastodon_status_carries_its_visibility() -> None:
    from services.ingest.connectors import mastodon

    page = json.loads((FIXTURES / "mastodon_notifications_page.json").read_text())
    (public,) = mastodon.parse_notifications(page, own_id="9001", platform_account_id="9001").drafts
    assert public.reply == ReplyContext(visibility="public")
    status = page[0]["status"]
    variants = [
        {**page[0], "id": str(n), "status": {**status, "id": str(n), "visibility": visibility}}
        for n, visibility in enumerate(["direct", "unlisted", "private", "everyone", 7, None], start=2)
    ]
    parsed = mastodon.parse_notifications(variants, own_id="9001", platform_account_id="9001")
    assert parsed.rejected == []
    assert [d.reply.visibility if d.reply else None for d in parsed.drafts] == [
        "direct", "unlisted", "private", None, None, None,
    ]  # fmt: skip
    assert parsed.drafts[0].kind is Kind.dm


def test_an_x_mention_carries_whom_it_mentions_and_answers(signed: dict[str, Any]) -> None:
    (mention,) = x.parse(body_of(signed["x_mention"])).drafts
    assert mention.reply == ReplyContext(
        mentions=["1500000000000000001"], in_reply_to_user="1500000000000000001"
    )


def _tweet(**fields: Any) -> dict[str, Any]:
    return {
        "id_str": "1860000000000000900",
        "text": "@a @b hello",
        "created_at": "Wed Nov 26 00:00:00 +0000 2025",
        "user": {"id_str": "1500000000000000777", "screen_name": "priyanotes"},
        **fields,
    }


def _one_tweet(tweet: dict[str, Any]) -> Any:
    parsed = x.parse(
        json.dumps({"for_user_id": "1500000000000000001", "tweet_create_events": [tweet]}).encode()
    )
    assert parsed.rejected == []
    (draft,) = parsed.drafts
    return draft


def test_x_mentions_of_a_long_tweet_and_of_api_v2_are_read() -> None:
    long = _tweet(
        entities={"user_mentions": [{"id_str": "11", "screen_name": "a"}]},
        extended_tweet={
            "full_text": "@a @b hello, a long text",
            "entities": {"user_mentions": [{"id_str": "11"}, {"id_str": "22"}]},
        },
    )
    assert _one_tweet(long).reply == ReplyContext(mentions=["11", "22"])
    v2 = _tweet(
        entities={"mentions": [{"start": 0, "end": 2, "username": "a", "id": "33"}]}, in_reply_to_user_id="44"
    )
    assert _one_tweet(v2).reply == ReplyContext(mentions=["33"], in_reply_to_user="44")


@pytest.mark.parametrize(
    "fields",
    [
        {"entities": "not an object"},
        {"entities": {"user_mentions": "not a list"}},
        {
            "entities": {
                "user_mentions": [7, None, {"id_str": 12}, {"id": 13}, {"id_str": ""}, {"id_str": "a\x00"}]
            }
        },
        {"extended_tweet": {"full_text": "hi", "entities": []}},
        {"in_reply_to_user_id_str": 1500000000000000001, "in_reply_to_user_id": 1500000000000000001},
        {"in_reply_to_user_id_str": None},
    ],
)
def test_malformed_x_mentions_are_left_out_and_the_tweet_is_kept(fields: dict[str, Any]) -> None:
    draft = _one_tweet(_tweet(**fields))
    assert draft.reply is None and draft.external_id == "1860000000000000900"


def test_a_malformed_x_mention_among_good_ones_is_dropped_alone() -> None:
    draft = _one_tweet(
        _tweet(entities={"user_mentions": [{"id_str": "1\n2"}, {"id_str": "1500000000000000001"}]})
    )
    assert draft.reply == ReplyContext(mentions=["1500000000000000001"])


def test_an_x_dm_and_the_brands_answer_name_the_same_conversation(signed: dict[str, Any]) -> None:
    (dm,) = x.parse(body_of(signed["x_dm"])).drafts
    (answer,) = x.parse(body_of(signed["x_dm_own_reply"])).drafts
    expected = ReplyContext(dm_conversation_id="1500000000000000001-1500000000000000777")
    assert dm.reply == answer.reply == expected


def test_an_x_dm_conversation_puts_the_lower_id_first_as_numbers() -> None:
    def dm(sender: str, recipient: str, **extra: Any) -> Any:
        event = {
            "type": "message_create",
            "id": "5",
            "created_timestamp": "1764115200000",
            "message_create": {
                "sender_id": sender,
                "target": {"recipient_id": recipient},
                "message_data": {"text": "hi"},
            },
            **extra,
        }
        (draft,) = x.parse(
            json.dumps({"for_user_id": "100", "direct_message_events": [event]}).encode()
        ).drafts
        return draft.reply

    assert dm("99", "100") == dm("100", "99") == ReplyContext(dm_conversation_id="99-100")  # not "100-99"
    assert dm("99", "100", dm_conversation_id="99-100-group") == ReplyContext(
        dm_conversation_id="99-100-group"
    )
    assert dm("user-a", "100") is None  # not X's ids: nothing to name it by


def test_the_context_goes_with_the_interaction_event(signed: dict[str, Any]) -> None:
    from services.ingest.connectors.model import to_received

    (mention,) = x.parse(body_of(signed["x_mention"])).drafts
    event = to_received(
        mention,
        tenant_id="t",
        account_id="a",
        received_at=datetime(2025, 11, 26, 1, tzinfo=UTC),
        correlation_id="",
    )
    assert event.reply == mention.reply
    assert InteractionReceived.model_validate_json(event.model_dump_json()).reply == mention.reply
    (message,) = meta.parse(body_of(signed["meta_messenger_message"])).drafts
    assert message.reply is None  # Messenger needs nothing beyond the thread's PSID


# Anything a platform could put where a context field is read: scalars, lists, objects.
ANY_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=600),
    lambda inner: st.lists(inner, max_size=120) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=150,
)


@given(st.dictionaries(st.sampled_from(list(ReplyContext.model_fields)), ANY_JSON))
def test_reply_context_keeps_what_fits_and_never_raises(given_fields: dict[str, Any]) -> None:
    from services.ingest.connectors.model import reply_context

    context = reply_context(**given_fields)
    if context is None:
        return
    for name in context.model_fields_set:
        value = given_fields[name]
        kept = getattr(context, name)
        assert kept == value or (isinstance(value, list) and all(item in value for item in kept))
