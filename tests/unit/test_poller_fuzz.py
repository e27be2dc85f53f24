"""The pollers' page parsers give a clear outcome for anything a platform (or a broken proxy)
sends: fuzzed from the documented pages (tests/fixtures/platforms), mutated field by field,
and from hostile corpora.

For every page: the parser returns, or raises MalformedPayload, and nothing else, without
hanging; every item ends as a draft, an ignored line or a rejected entry; the drafts
become events (or rejected entries) without an error, and those events can be published;
and the same page read again past the mark it left publishes nothing.
"""

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.ingest.connectors import bluesky, mastodon, youtube
from services.ingest.connectors.feeds import Walk, load_page
from services.ingest.connectors.model import MalformedPayload, Parsed, to_events
from tests.fuzz import FUZZ, HOSTILE_VALUES, mutated_document, sweep

FIXTURES = Path(__file__).parents[1] / "fixtures" / "platforms"
NOW = datetime(2026, 11, 26, 12, tzinfo=UTC)
OWN_DID = "did:plc:bluebirdcoffee000000000"
CHANNEL = "UCbluebirdcoffee0000001"
MASTODON_ID = "9001"


def _fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


# The documented pages. The brand's own statuses and author feed have no fixture of their
# own: they are built from the fixtures' statuses and posts, in the documented shapes.
MASTODON_NOTIFICATIONS = _fixture("mastodon_notifications_page.json")
MASTODON_NOTIFICATIONS = [
    *MASTODON_NOTIFICATIONS,
    {**MASTODON_NOTIFICATIONS[0], "id": "34975862", "type": "favourite"},
    {**MASTODON_NOTIFICATIONS[0], "id": "34975863",
     "status": {**MASTODON_NOTIFICATIONS[0]["status"], "visibility": "direct", "in_reply_to_id": "113400000000000001"}},
]  # fmt: skip
_STATUS = MASTODON_NOTIFICATIONS[0]["status"]
MASTODON_STATUSES = [
    {**_STATUS, "id": "113500000000000009", "in_reply_to_id": _STATUS["id"],
     "account": {"id": MASTODON_ID, "acct": "bluebird", "display_name": "Bluebird"}, "content": "<p>Yes!<br>Oat.</p>"},
    {**_STATUS, "id": "113500000000000010", "in_reply_to_id": None, "account": {"id": MASTODON_ID, "acct": "bluebird"}},
]  # fmt: skip
BLUESKY_NOTIFICATIONS = _fixture("bluesky_list_notifications.json")
BLUESKY_NOTIFICATIONS["notifications"].append({**BLUESKY_NOTIFICATIONS["notifications"][0], "reason": "like"})
_POST = BLUESKY_NOTIFICATIONS["notifications"][1]
BLUESKY_FEED = {
    "cursor": "2025-11-26T00:00:00.000Z",
    "feed": [
        {"post": {"uri": f"at://{OWN_DID}/app.bsky.feed.post/3kreply", "cid": "bafy", "indexedAt": _POST["indexedAt"],
                  "author": {"did": OWN_DID, "handle": "bluebird.coffee", "displayName": "Bluebird"},
                  "record": {**_POST["record"], "text": "Open till 6!"}},
         "reply": {"root": {"uri": _POST["uri"]}, "parent": {"uri": _POST["uri"]}}},
        {"post": {"uri": _POST["uri"], "indexedAt": _POST["indexedAt"], "author": _POST["author"], "record": _POST["record"]},
         "reason": {"$type": "app.bsky.feed.defs#reasonRepost", "by": {"did": OWN_DID}, "indexedAt": "2025-11-26T00:00:01.000Z"}},
    ],
}  # fmt: skip
YOUTUBE_THREADS = _fixture("youtube_comment_threads_page.json")
_TOP = YOUTUBE_THREADS["items"][0]["snippet"]["topLevelComment"]
YOUTUBE_THREADS["items"][0]["replies"] = {
    "comments": [
        {**_TOP, "id": f"{_TOP['id']}.r1",
         "snippet": {**_TOP["snippet"], "authorChannelId": {"value": CHANNEL}, "parentId": _TOP["id"],
                     "updatedAt": "2025-11-26T00:00:01.000Z"}},
    ]
}  # fmt: skip


# What the parsers know: their kinds, ids and the brand's own ids, beside the hostile values.
DOMAIN = [
    "mention",
    "reply",
    "quote",
    "direct",
    "at://did:plc:x/app.bsky.feed.post/\x00",
    OWN_DID,
    CHANNEL,
    MASTODON_ID,
]


HANG = 10.0  # seconds of CPU for one page (a documented page takes milliseconds)


def mutated(document: Any) -> st.SearchStrategy[Any]:
    return mutated_document(document, *DOMAIN)


def _read(parse: Callable[[Any], Parsed], page: Any) -> Parsed | None:
    """The parser's outcome: a Parsed, or None for MalformedPayload (anything else fails)."""
    started = time.process_time()
    try:
        return parse(page)
    except MalformedPayload:
        return None
    finally:
        # A hang detector, not a speed target: CPU time, so a busy host does not count.
        assert time.process_time() - started < HANG, "a page kept the parser busy: a hang"


def _stored(parsed: Parsed) -> None:
    """The drafts become events or rejected entries, never an error, and every event can be published."""
    events, rejected, unknown = to_events(
        parsed.drafts, lambda _draft: ("bluebird", "acct"), received_at=NOW, correlation_id=""
    )
    assert len(events) + len(rejected) == len(parsed.drafts) and not unknown
    for event in events:
        event.model_dump_json()
    for entry in [*parsed.rejected, *rejected]:
        assert entry.problem and isinstance(entry.raw, bytes)


def _outcomes(parsed: Parsed) -> int:
    return len(parsed.drafts) + len(parsed.ignored) + len(parsed.rejected)


def _check_list_page(parse: Callable[[Any], Parsed], page: Any) -> None:
    parsed = _read(parse, page)
    if parsed is not None:
        assert _outcomes(parsed) == len(page)  # every item: a draft, an ignored line or a rejected entry
        _stored(parsed)


def _check_newest_first(parse: Callable[[Any, Walk], Parsed], page: Any, key: str) -> None:
    walk = Walk(None, now=NOW)
    parsed = _read(lambda p: parse(p, walk), page)
    if parsed is None:
        return
    items = page[key]
    if key == "items":  # a thread gives one outcome or more (its comments)
        drafted = {draft.thread_id for draft in parsed.drafts}
        touched = {int(r.where[6:].split("]")[0]) for r in parsed.rejected}
        touched |= {
            index
            for index, thread in enumerate(items)
            if isinstance(thread, dict)
            and isinstance(thread.get("id"), str)
            and f"thread:{thread['id']}" in drafted
        }
        assert touched == set(range(len(items)))
    else:
        assert _outcomes(parsed) == len(items)
    _stored(parsed)
    again = Walk(walk.next_mark(), now=NOW)  # the next poll, past the mark this one left
    repeat = _read(lambda p: parse(p, again), page)
    assert repeat is not None and repeat.drafts == [] and repeat.rejected == []


def mastodon_notifications(page: Any) -> Parsed:
    return mastodon.parse_notifications(page, own_id=MASTODON_ID, platform_account_id=MASTODON_ID)


def mastodon_statuses(page: Any) -> Parsed:
    return mastodon.parse_own_statuses(page, own_id=MASTODON_ID, platform_account_id=MASTODON_ID)


def bluesky_notifications(page: Any, walk: Walk) -> Parsed:
    return bluesky.parse_notifications(page, own_did=OWN_DID, walk=walk)


def bluesky_feed(page: Any, walk: Walk) -> Parsed:
    return bluesky.parse_author_feed(page, own_did=OWN_DID, walk=walk)


def youtube_threads(page: Any, walk: Walk) -> Parsed:
    return youtube.parse_threads(page, channel_id=CHANNEL, walk=walk)


@FUZZ
@given(mutated(MASTODON_NOTIFICATIONS))
def test_mastodon_notifications_pages(page: Any) -> None:
    _check_list_page(mastodon_notifications, page)


@FUZZ
@given(mutated(MASTODON_STATUSES))
def test_mastodon_own_statuses_pages(page: Any) -> None:
    _check_list_page(mastodon_statuses, page)


@FUZZ
@given(mutated(BLUESKY_NOTIFICATIONS))
def test_bluesky_notifications_pages(page: Any) -> None:
    _check_newest_first(bluesky_notifications, page, "notifications")


@FUZZ
@given(mutated(BLUESKY_FEED))
def test_bluesky_author_feed_pages(page: Any) -> None:
    _check_newest_first(bluesky_feed, page, "feed")


@FUZZ
@given(mutated(YOUTUBE_THREADS))
def test_youtube_comment_threads_pages(page: Any) -> None:
    _check_newest_first(youtube_threads, page, "items")


CHECKS: dict[str, tuple[Any, Callable[[Any], None]]] = {
    "mastodon notifications": (
        MASTODON_NOTIFICATIONS,
        lambda page: _check_list_page(mastodon_notifications, page),
    ),
    "mastodon statuses": (MASTODON_STATUSES, lambda page: _check_list_page(mastodon_statuses, page)),
    "bluesky notifications": (
        BLUESKY_NOTIFICATIONS,
        lambda page: _check_newest_first(bluesky_notifications, page, "notifications"),
    ),
    "bluesky feed": (BLUESKY_FEED, lambda page: _check_newest_first(bluesky_feed, page, "feed")),
    "youtube threads": (YOUTUBE_THREADS, lambda page: _check_newest_first(youtube_threads, page, "items")),
}


@pytest.mark.parametrize("name", list(CHECKS))
def test_every_field_of_the_documented_page_changed_alone(name: str) -> None:
    """Systematic where the fuzzing is random: each place of the page with each hostile value."""
    document, check = CHECKS[name]
    for page in sweep(document):
        check(page)


def test_the_documented_pages_give_drafts() -> None:
    """The fuzzed pages start from pages every parser reads fully (so mutations reach the items)."""
    assert len(mastodon_notifications(MASTODON_NOTIFICATIONS).drafts) == 2
    assert len(mastodon_statuses(MASTODON_STATUSES).drafts) == 1
    assert len(bluesky_notifications(BLUESKY_NOTIFICATIONS, Walk(None, now=NOW)).drafts) == 2
    assert len(bluesky_feed(BLUESKY_FEED, Walk(None, now=NOW)).drafts) == 1
    assert len(youtube_threads(YOUTUBE_THREADS, Walk(None, now=NOW)).drafts) == 2


# Hostile corpora: whole bodies as a platform or a proxy might send them, read as the pollers
# read them (load_page, then the parser).

_ITEM = json.dumps(BLUESKY_NOTIFICATIONS["notifications"][0])
CORPUS: list[bytes] = [
    b"", b" ", b"null", b"0", b"-1", b"1e999", b'"text"', b"true", b"[]", b"{}", b"NaN", b"[NaN, Infinity]",
    b"<html><body>502 Bad Gateway</body></html>", b"\xef\xbb\xbf[]", b"\xff\xfe[\x00]\x00", b"\x00" * 100,
    b"\xc3\x28", b"[" * 100_000, b"{" * 50_000, b"[" * 10_000 + b"]" * 10_000, b'{"a":' * 20_000,
    b'[{"id": ' + b"9" * 5_000 + b"}]", b'{"notifications": [' + b"1" * 4_301 + b"]}",
    b'{"notifications": [' + b",".join([b"{}"] * 5_000) + b"]}",
    b'{"items": [' + b",".join([b'{"id": "t", "snippet": null}'] * 200) + b"]}",
    b'{"feed": [{"post": ' + b"[" * 30_000 + b"]" * 30_000 + b"}]}",
    b'{"notifications": [' + _ITEM.encode() + b", " + b"[" * 30_000 + b"]" * 30_000 + b"]}",
    b'{"notifications": [' + _ITEM.replace('"text": "', '"text": "\\u0000\\ud800').encode() + b"]}",
    b'{"notifications": [' + _ITEM.replace("3kmention111a", "x" * 65_536).encode() + b"]}",
    b'[{"id": "1", "type": "mention", "status": {"id": "2", "content": "' + b"<" * 200_000 + b'"}}]',
    b'{"items": "not a list", "nextPageToken": {}}', b'{"notifications": [], "cursor": 7}',
    b'{"notifications": [{"uri": "a", "indexedAt": "2025-11-26T00:00:00Z"}]' + b" " * 10 + b"garbage",
]  # fmt: skip
PARSERS: list[tuple[str, Callable[[Any], Parsed]]] = [
    ("mastodon notifications", mastodon_notifications),
    ("mastodon statuses", mastodon_statuses),
    ("bluesky notifications", lambda page: bluesky_notifications(page, Walk(None, now=NOW))),
    ("bluesky feed", lambda page: bluesky_feed(page, Walk(None, now=NOW))),
    ("youtube threads", lambda page: youtube_threads(page, Walk(None, now=NOW))),
]


@pytest.mark.parametrize("body", CORPUS, ids=range(len(CORPUS)))
def test_hostile_bodies_are_read_or_refused_clearly(body: bytes) -> None:
    try:
        page = load_page(body)
    except MalformedPayload:
        return
    for _name, parse in PARSERS:
        parsed = _read(parse, page)
        if parsed is not None:
            _stored(parsed)


@pytest.mark.parametrize("name", [name for name, _ in PARSERS])
def test_a_page_of_only_hostile_items_is_read_or_refused_clearly(name: str) -> None:
    parse = dict(PARSERS)[name]
    items = list(HOSTILE_VALUES)
    for page in (items, {"notifications": items, "feed": items, "items": items}, items[:50]):
        parsed = _read(parse, page)
        if parsed is not None:
            _stored(parsed)
