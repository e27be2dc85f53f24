"""Bluesky: mentions, replies and quotes from listNotifications; the brand's replies from its feed.

Both answers are newest first with a `cursor` to older items and no "since": a poll
pages back until it reaches the stored high-water mark (`feeds.Mark`: the newest
`indexedAt` stored and the items stored at it).

Endpoints (on the account's `api_base_url`, e.g. https://bsky.social):
`POST /xrpc/com.atproto.server.createSession` (the app password gives a session),
`GET /xrpc/app.bsky.notification.listNotifications?limit=50[&cursor=]`,
`GET /xrpc/app.bsky.feed.getAuthorFeed?actor=<did>&filter=posts_with_replies&limit=50[&cursor=]`.
"""

from datetime import datetime
from typing import Any

from services.ingest.connectors.feeds import (
    ITEM_ERRORS,
    Walk,
    id_of,
    key_of,
    optional_id,
    reject,
    text_of,
    time_of,
    time_or_none,
    url_of,
)
from services.ingest.connectors.model import Draft, MalformedPayload, Parsed, mapping, reply_context
from shared.events import Author, Direction, Kind, Platform, ReplyContext

PAGE = 50
_KINDS = {"mention": Kind.mention, "reply": Kind.reply, "quote": Kind.quote}


def notifications_path(*, cursor: str | None) -> tuple[str, dict[str, str | int]]:
    params: dict[str, str | int] = {"limit": PAGE}
    if cursor:
        params["cursor"] = cursor
    return "/xrpc/app.bsky.notification.listNotifications", params


def author_feed_path(*, did: str, cursor: str | None) -> tuple[str, dict[str, str | int]]:
    params: dict[str, str | int] = {"actor": did, "filter": "posts_with_replies", "limit": PAGE}
    if cursor:
        params["cursor"] = cursor
    return "/xrpc/app.bsky.feed.getAuthorFeed", params


def _post_url(uri: str, handle: str) -> str | None:
    rkey = uri.rsplit("/", 1)[-1]
    return url_of(f"https://bsky.app/profile/{handle}/post/{rkey}")


def _context(uri: str, cid: object, record: dict[str, Any], root: dict[str, Any]) -> ReplyContext | None:
    """The post's CID and its thread's root, which an answer names (a top-level post is its own
    root). A reply whose root cannot be read gets none: answered as if it began the thread, the
    answer would split the thread, so it is answered on Bluesky instead."""
    if record.get("reply") is None:
        return reply_context(cid=cid, root_uri=uri, root_cid=cid)
    context = reply_context(cid=cid, root_uri=root.get("uri"), root_cid=root.get("cid"))
    if context is None or context.root_uri is None or context.root_cid is None:
        return None
    return context


def _draft(
    uri: str,
    cid: object,
    author: dict[str, Any],
    record: dict[str, Any],
    *,
    indexed: datetime,
    own_did: str,
    kind: Kind,
) -> Draft:
    reply = mapping(record.get("reply"), "record.reply")
    root_ref = mapping(reply.get("root"), "record.reply.root")
    root = optional_id(root_ref.get("uri"), "reply.root.uri")
    parent = optional_id(mapping(reply.get("parent"), "record.reply.parent").get("uri"), "reply.parent.uri")
    did = text_of(author.get("did"), "author.did")
    handle = text_of(author.get("handle"), "author.handle")
    written = time_or_none(record.get("createdAt"))
    return Draft(
        platform=Platform.bluesky,
        platform_account_id=own_did,
        external_id=uri,
        kind=kind,
        direction=Direction.outbound if did == own_did else Direction.inbound,
        thread_id=f"post:{root or uri}",
        parent_id=parent,
        author=Author(
            id=did or "unknown",
            name=text_of(author.get("displayName"), "author.displayName"),
            handle=f"@{handle}" if handle else "",
        ),
        text=text_of(record.get("text"), "record.text"),
        # createdAt is what the author's client says; like Bluesky's own sort time, never
        # later than when the network indexed the post.
        created_at=min(written, indexed) if written is not None else indexed,
        url=_post_url(uri, handle or did),
        reply=_context(uri, cid, record, root_ref),
    )


def _notification(item: object) -> tuple[str, datetime | None]:
    """Where an item sits in the feed: its key and time (None when it has no usable time)."""
    if isinstance(item, dict) and isinstance(item.get("uri"), str):
        return item["uri"], time_or_none(item.get("indexedAt"))
    return key_of(item), None


def parse_notifications(page: Any, *, own_did: str, walk: Walk) -> Parsed:
    """The page's notifications not stored yet, as drafts (or ignored, or rejected alone);
    `walk.reached` once the page reaches the mark."""
    if not isinstance(page, dict) or not isinstance(page.get("notifications"), list):
        raise MalformedPayload("expected an object with a 'notifications' list")
    parsed = Parsed()
    for index, item in enumerate(page["notifications"]):
        key, when = _notification(item)
        if walk.before_mark(when):
            walk.reach()
            break
        if not walk.is_new(key, when):
            continue
        try:
            item = mapping(item, "notification")
            reason = item.get("reason")
            kind = _KINDS.get(reason) if isinstance(reason, str) else None
            if kind is None:
                parsed.ignored.append(
                    f"notification {reason[:40]!r}" if isinstance(reason, str) else "notification"
                )
                continue
            parsed.drafts.append(
                _draft(
                    id_of(item.get("uri"), "uri"),
                    item.get("cid"),
                    mapping(item.get("author"), "author"),
                    mapping(item.get("record"), "record"),
                    indexed=time_of(item.get("indexedAt"), "indexedAt"),
                    own_did=own_did,
                    kind=kind,
                )
            )
        except ITEM_ERRORS as error:
            reject(parsed, f"notifications[{index}]", error, item)
    return parsed


def _feed_item(item: object) -> tuple[str, datetime | None]:
    """A feed item's key and sort time: a repost sits at the time it was reposted."""
    if not isinstance(item, dict) or not isinstance(item.get("post"), dict):
        return key_of(item), None
    post = item["post"]
    uri = post.get("uri") if isinstance(post.get("uri"), str) else key_of(post)
    reason = item.get("reason")
    if reason is not None:
        when = time_or_none(reason.get("indexedAt")) if isinstance(reason, dict) else None
        return f"{uri} (reposted)", when
    return uri, time_or_none(post.get("indexedAt"))


def parse_author_feed(page: Any, *, own_did: str, walk: Walk) -> Parsed:
    """The brand's own posts not stored yet; its replies among them answer the conversation
    they join (its other posts and reposts are ignored)."""
    if not isinstance(page, dict) or not isinstance(page.get("feed"), list):
        raise MalformedPayload("expected an object with a 'feed' list")
    parsed = Parsed()
    for index, item in enumerate(page["feed"]):
        key, when = _feed_item(item)
        if walk.before_mark(when):
            walk.reach()
            break
        if not walk.is_new(key, when):
            continue
        try:
            post = mapping(mapping(item, "feed item").get("post"), "post")
            author = mapping(post.get("author"), "post.author")
            record = mapping(post.get("record"), "post.record")
            if item.get("reason") is not None or not record.get("reply") or author.get("did") != own_did:
                parsed.ignored.append("own post that answers nobody, or a repost")
                continue
            parsed.drafts.append(
                _draft(
                    id_of(post.get("uri"), "post.uri"),
                    post.get("cid"),
                    author,
                    record,
                    indexed=time_of(post.get("indexedAt"), "post.indexedAt"),
                    own_did=own_did,
                    kind=Kind.reply,
                )
            )
        except ITEM_ERRORS as error:
            reject(parsed, f"feed[{index}]", error, item)
    return parsed
