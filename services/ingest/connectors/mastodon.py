"""Mastodon: mentions from the notifications API, the brand's own statuses as its replies.

Both feeds are walked forward with `min_id` (never `since_id`, which can leave
gaps): each answer is the page right after the cursor, newest first.

Endpoints (on the account's `api_base_url`, the instance):
`GET /api/v1/notifications?types[]=mention&limit=40[&min_id=]`,
`GET /api/v1/accounts/<own id>/statuses?limit=40[&min_id=]`, and with streaming on
`GET /api/v1/streaming/user/notification` (server-sent events).
"""

import re
from typing import Any

from services.ingest.connectors.feeds import (
    ITEM_ERRORS,
    count_of,
    id_of,
    optional_id,
    reject,
    text_of,
    time_of,
    url_of,
)
from services.ingest.connectors.model import (
    Draft,
    MalformedPayload,
    Parsed,
    items,
    mapping,
    reply_context,
)
from services.ingest.connectors.text import html_to_text
from shared.events import Author, Direction, Kind, Platform

PAGE = 40
# Mastodon ids are numeric strings that sort by time (snowflakes of up to 19 digits).
_ID = re.compile(r"[0-9]{1,30}")
# A '<' that no '>' closes before the next '<' opens no tag: written as text, it keeps
# the tag pattern of html_to_text from scanning to the end of the content for each one.
_STRAY_OPEN = re.compile(r"<(?![^<>]*>)")


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


def is_cursor(value: object) -> bool:
    """An id the cursor can move to: a numeric string of a sane length."""
    return isinstance(value, str) and _ID.fullmatch(value) is not None


def newest_id(page: Any) -> str | None:
    """The newest id of a page (numeric order), ignoring items without a usable id."""
    listed = page if isinstance(page, list) else []
    ids = [item["id"] for item in listed if isinstance(item, dict) and is_cursor(item.get("id"))]
    return max(ids, key=int) if ids else None


def _text(content: object) -> str:
    markup = text_of(content, "content")
    return html_to_text(_STRAY_OPEN.sub("&lt;", markup) if "<" in markup else markup)


def _status(status: dict[str, Any], *, own_id: str, platform_account_id: str) -> Draft:
    account = mapping(status.get("account"), "account")
    author_id = text_of(account.get("id"), "account.id")
    outbound = author_id == own_id
    direct = status.get("visibility") == "direct"
    status_id = id_of(status.get("id"), "status.id")
    parent = optional_id(status.get("in_reply_to_id"), "in_reply_to_id")
    if direct:
        mentioned = [mapping(m, "mention") for m in items(status.get("mentions"), "mentions")]
        others = [m["id"] for m in mentioned if isinstance(m.get("id"), str) and m["id"] != own_id]
        person = others[0] if outbound and others else author_id
        thread = f"dm:{person}"
    else:
        # A reply joins the thread of the status it answers; the router follows longer chains.
        thread = f"status:{parent or status_id}"
    acct = text_of(account.get("acct"), "account.acct")
    return Draft(
        platform=Platform.mastodon,
        platform_account_id=platform_account_id,
        external_id=status_id,
        kind=Kind.dm if direct else (Kind.reply if parent else Kind.mention),
        direction=Direction.outbound if outbound else Direction.inbound,
        thread_id=thread,
        parent_id=parent,
        author=Author(
            id=author_id or "unknown",
            name=text_of(account.get("display_name"), "account.display_name"),
            handle=f"@{acct}" if acct else "",
            followers=count_of(account.get("followers_count")),
        ),
        text=_text(status.get("content")),
        url=url_of(status.get("url")) or url_of(status.get("uri")),
        created_at=time_of(status.get("created_at"), "created_at"),
        # an answer keeps the status's visibility: direct stays direct
        reply=reply_context(visibility=status.get("visibility")),
    )


def parse_notifications(page: Any, *, own_id: str, platform_account_id: str) -> Parsed:
    """Mentions (and direct messages) as drafts; other notifications ignored; an item that
    cannot be read rejected alone."""
    if not isinstance(page, list):
        raise MalformedPayload("expected a list of notifications")
    parsed = Parsed()
    for index, notification in enumerate(page):
        try:
            notification = mapping(notification, "notification")
            kind = notification.get("type")
            if kind != "mention":
                parsed.ignored.append(
                    f"notification {kind[:40]!r}" if isinstance(kind, str) else "notification"
                )
                continue
            status = mapping(notification.get("status"), "status")
            # The notification's account is the status's author, with the follower count.
            status = {
                **status,
                "account": {
                    **mapping(status.get("account"), "status.account"),
                    **mapping(notification.get("account"), "account"),
                },
            }
            parsed.drafts.append(_status(status, own_id=own_id, platform_account_id=platform_account_id))
        except ITEM_ERRORS as error:
            reject(parsed, f"[{index}]", error, notification)
    return parsed


def parse_own_statuses(page: Any, *, own_id: str, platform_account_id: str) -> Parsed:
    """The brand's statuses: the replies among them stop the clock of what they answer."""
    if not isinstance(page, list):
        raise MalformedPayload("expected a list of statuses")
    parsed = Parsed()
    for index, status in enumerate(page):
        try:
            status = mapping(status, "status")
            if not status.get("in_reply_to_id") and status.get("visibility") != "direct":
                parsed.ignored.append("own status that answers nobody")
                continue
            parsed.drafts.append(_status(status, own_id=own_id, platform_account_id=platform_account_id))
        except ITEM_ERRORS as error:
            reject(parsed, f"[{index}]", error, status)
    return parsed
