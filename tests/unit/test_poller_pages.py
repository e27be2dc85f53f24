"""What the polled feeds share: reading a page, and the high-water mark of newest-first feeds."""

import json
from datetime import UTC, datetime, timedelta

import pytest

from services.ingest.connectors import bluesky, mastodon, youtube
from services.ingest.connectors.feeds import MAX_SEEN, Mark, Walk, load_page
from services.ingest.connectors.model import MalformedPayload

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
T = NOW - timedelta(minutes=5)


def test_a_mark_fits_its_column_and_reads_back() -> None:
    at = datetime(2026, 11, 26, 11, 55, 0, 123456, tzinfo=UTC)
    walk = Walk(None, now=NOW)
    for number in range(200):  # more items at one time than the column holds digests of
        walk.is_new(f"at://did:plc:fan{number}/app.bsky.feed.post/{'x' * 300}", at)
    mark = walk.next_mark()
    assert len(mark.seen) == MAX_SEEN and len(mark.dump()) <= 512
    assert Mark.load(mark.dump()) == mark
    assert Mark.load("2025-11-26T00:00:00.000Z") == Mark(datetime(2025, 11, 26, tzinfo=UTC))  # the older form
    assert Mark.load(None) is None and Mark.load(Mark().dump()) == Mark()


def test_items_at_the_marks_time_are_new_only_if_not_stored() -> None:
    first = Walk(None, now=NOW)
    assert all(first.is_new(key, T) for key in ("a", "b"))
    assert first.is_new("older", T - timedelta(seconds=1))
    mark = first.next_mark()
    assert mark.at == T and len(mark.seen) == 2
    again = Walk(mark, now=NOW)
    assert not again.is_new("a", T) and not again.is_new("b", T)
    assert again.is_new("c", T)  # came in the same millisecond, after the poll
    assert again.at_mark and not again.before_mark(T) and again.before_mark(T - timedelta(seconds=1))
    assert again.is_new("d", T + timedelta(milliseconds=1))
    assert Walk(again.next_mark(), now=NOW).next_mark().at == T + timedelta(milliseconds=1)


def test_a_time_far_ahead_does_not_hold_the_mark_above_every_real_item() -> None:
    walk = Walk(None, now=NOW)
    assert walk.is_new("from the future", NOW + timedelta(days=400))
    assert walk.is_new("real", T)
    mark = walk.next_mark()
    assert mark.at == T and len(mark.seen) == 2  # the far one is remembered, not used as a time
    assert not Walk(mark, now=NOW).is_new("from the future", NOW + timedelta(days=400))


def test_a_page_with_one_hostile_item_is_still_read() -> None:
    deep = "[" * 50_000 + "]" * 50_000
    body = f'[{{"id": "2", "status": {deep}}}, {{"id": "1", "followers_count": {"9" * 5000}}}]'
    first, second = load_page(body.encode())
    assert first["id"] == "2" and isinstance(first["status"], list)  # cut to null below the limit
    assert second["followers_count"] == float("inf")
    assert load_page(b'{"a": "[[[ not brackets"}') == {"a": "[[[ not brackets"}


@pytest.mark.parametrize(
    "body",
    [b"", b"<html>", b"\xff\xff", b"[" * 100_000, b"[" * 10_000 + b'"never closed', b'{"a": 1} x'],
)
def test_a_body_that_is_not_json_is_malformed(body: bytes) -> None:
    with pytest.raises(MalformedPayload):
        load_page(body)


def test_a_repost_sits_in_the_feed_at_the_time_it_was_reposted() -> None:
    own = "did:plc:brand"
    reply = {"post": {"uri": "at://brand/r1", "indexedAt": "2026-11-26T11:58:00.000Z",
                      "author": {"did": own, "handle": "brand"},
                      "record": {"text": "Yes!", "createdAt": "2026-11-26T11:58:00.000Z",
                                 "reply": {"root": {"uri": "at://fan/p"}, "parent": {"uri": "at://fan/p"}}}}}  # fmt: skip
    repost = {"post": {"uri": "at://brand/old", "indexedAt": "2025-01-01T00:00:00.000Z",
                       "author": {"did": own}, "record": {"text": "old"}},
              "reason": {"$type": "app.bsky.feed.defs#reasonRepost", "indexedAt": "2026-11-26T11:59:00.000Z"}}  # fmt: skip
    walk = Walk(Mark.load("2026-11-26T11:50:00.000Z"), now=NOW)
    parsed = bluesky.parse_author_feed({"feed": [repost, reply]}, own_did=own, walk=walk)
    assert [d.external_id for d in parsed.drafts] == ["at://brand/r1"] and not walk.reached


def test_a_bluesky_post_dated_after_it_was_indexed_counts_from_its_indexing() -> None:
    page = {"notifications": [{"uri": "at://fan/p", "reason": "mention", "indexedAt": "2026-11-26T11:00:00Z",
                               "author": {"did": "did:plc:fan", "handle": "fan"},
                               "record": {"text": "hi", "createdAt": "2027-01-01T00:00:00Z"}}]}  # fmt: skip
    (draft,) = bluesky.parse_notifications(page, own_did="did:plc:brand", walk=Walk(None, now=NOW)).drafts
    assert draft.created_at == datetime(2026, 11, 26, 11, tzinfo=UTC)


def test_each_bad_item_is_rejected_alone_with_where_and_why() -> None:
    good = json.loads(json.dumps({"id": "7", "type": "mention", "status": {
        "id": "70", "created_at": "2026-11-26T11:00:00Z", "content": "<p>hi</p>", "account": {"id": "1"}}}))  # fmt: skip
    page = [
        good,
        "not an object",
        {**good, "id": "8", "status": {**good["status"], "created_at": "2026-11-26"}},
    ]
    parsed = mastodon.parse_notifications(page, own_id="9", platform_account_id="9")
    assert [d.external_id for d in parsed.drafts] == ["70"]
    assert [(r.where, r.problem) for r in parsed.rejected] == [
        ("[1]", "ValueError: notification: expected an object, got str"),
        ("[2]", "ValueError: created_at: the timestamp has no offset"),
    ]
    threads = {"items": [{"id": "t", "snippet": {"topLevelComment": {"id": "t", "snippet": {
        "publishedAt": "2026-11-26T11:00:00Z", "textDisplay": 5}}}}]}  # fmt: skip
    (rejected,) = youtube.parse_threads(threads, channel_id="UC", walk=Walk(None, now=NOW)).rejected
    assert rejected.where == "items[0].snippet.topLevelComment" and "textDisplay" in rejected.problem


def test_html_that_opens_tags_it_never_closes_is_read_in_linear_time() -> None:
    status = {"id": "1", "in_reply_to_id": "0", "created_at": "2026-11-26T11:00:00Z",
              "content": "<" * 200_000 + "<p>hi</p>", "account": {"id": "9"}}  # fmt: skip
    (draft,) = mastodon.parse_own_statuses([status], own_id="9", platform_account_id="9").drafts
    assert draft.text.endswith("<hi")
