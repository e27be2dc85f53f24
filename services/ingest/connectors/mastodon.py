"""Mastodon: mentions from the notifications API, the brand's own statuses as its replies.

Both feeds are walked forward with `min_id` (never `since_id`, which can leave
gaps): each answer is the page right after the cursor, newest first.
"""

from datetime import datetime
from typing import Any

from services.ingest.connectors.model import Draft, MalformedPayload, Parsed
from services.ingest.connectors.text import html_to_text
from shared.events import Author, Direction, Kind, Platform

PAGE = 40


def notifications_path(*, cursor: str | None) -> tuple[str, dict[str, str | int]]:
    params: dict[str, str | int] = {"types[]": "mention", "limit": PAGE}
    if cursor:
        params["min_id"] = cursor
    return "/api/v1/notifications", params


def statuses_path(*, own_id: str, cursor: str | None) -> tuple[str, dict[str, str | int]]:
    params: dict[str, str | int] = {"limit": PAGE}
    if cursor:
        params["min_id"] = cursor
    return f"/api/v1/accounts/{own_id}/statuses", params


def newest_id(page: list[dict[str, Any]]) -> str | None:
    """Mastodon ids are numeric strings that sort by time."""
    ids = [str(item["id"]) for item in page if "id" in item]
    return max(ids, key=lambda value: (len(value), value)) if ids else None


def _status(status: dict[str, Any], *, own_id: str, platform_account_id: str) -> Draft:
    account = status.get("account") or {}
    author_id = str(account.get("id", ""))
    outbound = author_id == own_id
    direct = status.get("visibility") == "direct"
    parent = status.get("in_reply_to_id")
    if direct:
        others = [str(m["id"]) for m in status.get("mentions", []) if str(m.get("id")) != own_id]
        person = others[0] if outbound and others else author_id
        thread = f"dm:{person}"
    else:
        # A reply joins the thread of the status it answers; the router follows longer chains.
        thread = f"status:{parent or status['id']}"
    return Draft(
        platform=Platform.mastodon,
        platform_account_id=platform_account_id,
        external_id=str(status["id"]),
        kind=Kind.dm if direct else (Kind.reply if parent else Kind.mention),
        direction=Direction.outbound if outbound else Direction.inbound,
        thread_id=thread,
        parent_id=str(parent) if parent else None,
        author=Author(
            id=author_id or "unknown",
            name=str(account.get("display_name") or ""),
            handle=f"@{account['acct']}" if account.get("acct") else "",
            followers=account.get("followers_count"),
        ),
        text=html_to_text(str(status.get("content") or "")),
        url=status.get("url") or status.get("uri"),
        created_at=datetime.fromisoformat(str(status["created_at"]).replace("Z", "+00:00")),
    )


def parse_notifications(page: Any, *, own_id: str, platform_account_id: str) -> Parsed:
    if not isinstance(page, list):
        raise MalformedPayload("expected a list of notifications")
    parsed = Parsed()
    for notification in page:
        status = notification.get("status") if isinstance(notification, dict) else None
        if notification.get("type") != "mention" or not isinstance(status, dict):
            parsed.ignored.append(f"notification {notification.get('type')!r}")
            continue
        # The notification's account is the status's author, with the follower count.
        status = {
            **status,
            "account": {**(status.get("account") or {}), **(notification.get("account") or {})},
        }
        parsed.drafts.append(_status(status, own_id=own_id, platform_account_id=platform_account_id))
    return parsed


def parse_own_statuses(page: Any, *, own_id: str, platform_account_id: str) -> Parsed:
    """The brand's statuses: the replies among them stop the clock of what they answer."""
    if not isinstance(page, list):
        raise MalformedPayload("expected a list of statuses")
    parsed = Parsed()
    for status in page:
        if not status.get("in_reply_to_id") and status.get("visibility") != "direct":
            parsed.ignored.append("own status that answers nobody")
            continue
        parsed.drafts.append(_status(status, own_id=own_id, platform_account_id=platform_account_id))
    return parsed
