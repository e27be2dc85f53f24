"""Bluesky: mentions, replies and quotes from listNotifications; the brand's replies from its feed.

Both answers are newest first with a `cursor` to older items and no "since": a
poll pages back until it reaches the stored high-water mark (`indexedAt`).
"""

from datetime import datetime
from typing import Any

from services.ingest.connectors.model import Draft, MalformedPayload, Parsed
from shared.events import Author, Direction, Kind, Platform

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


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _post_url(uri: str, handle: str) -> str:
    rkey = uri.rsplit("/", 1)[-1]
    return f"https://bsky.app/profile/{handle}/post/{rkey}"


def _draft(uri: str, author: dict[str, Any], record: dict[str, Any], *, own_did: str, kind: Kind) -> Draft:
    reply = record.get("reply") or {}
    root = (reply.get("root") or {}).get("uri")
    parent = (reply.get("parent") or {}).get("uri")
    did = str(author.get("did", ""))
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
            name=str(author.get("displayName") or ""),
            handle=f"@{author.get('handle', '')}",
        ),
        text=str(record.get("text") or ""),
        created_at=_time(str(record.get("createdAt"))),
        url=_post_url(uri, str(author.get("handle", did))),
    )


def parse_notifications(page: Any, *, own_did: str, since: str | None) -> tuple[Parsed, bool]:
    """Drafts newer than `since`, and whether this page reached it (no need for older pages)."""
    if not isinstance(page, dict) or not isinstance(page.get("notifications"), list):
        raise MalformedPayload("expected an object with a 'notifications' list")
    parsed = Parsed()
    reached = False
    for item in page["notifications"]:
        if since is not None and str(item.get("indexedAt", "")) < since:
            reached = True
            break
        kind = _KINDS.get(str(item.get("reason")))
        if kind is None:
            parsed.ignored.append(f"notification {item.get('reason')!r}")
            continue
        parsed.drafts.append(
            _draft(
                str(item["uri"]),
                item.get("author") or {},
                item.get("record") or {},
                own_did=own_did,
                kind=kind,
            )
        )
    return parsed, reached


def parse_author_feed(page: Any, *, own_did: str, since: str | None) -> tuple[Parsed, bool]:
    """The brand's own posts; replies among them answer the conversation they join."""
    if not isinstance(page, dict) or not isinstance(page.get("feed"), list):
        raise MalformedPayload("expected an object with a 'feed' list")
    parsed = Parsed()
    reached = False
    for item in page["feed"]:
        post = item.get("post") or {}
        if since is not None and str(post.get("indexedAt", "")) < since:
            reached = True
            break
        record = post.get("record") or {}
        if not record.get("reply") or (post.get("author") or {}).get("did") != own_did:
            parsed.ignored.append("own post that answers nobody, or a repost")
            continue
        parsed.drafts.append(
            _draft(str(post["uri"]), post["author"], record, own_did=own_did, kind=Kind.reply)
        )
    return parsed, reached


def newest_indexed(page: dict[str, Any], key: str) -> str | None:
    items = page.get(key) or []
    times = [str((item.get("post") or item).get("indexedAt", "")) for item in items]
    return max(times) if times else None
