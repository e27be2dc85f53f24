"""YouTube: comment threads related to the channel, newest first, paged until a known comment.

Each `commentThreads.list` call costs one unit of the project's daily quota
(10,000 by default), which sets how often a channel can be polled.
"""

from datetime import datetime
from typing import Any

from services.ingest.connectors.model import Draft, MalformedPayload, Parsed
from shared.events import Author, Direction, Kind, Platform

PAGE = 100


def threads_path(*, channel_id: str, page_token: str | None) -> tuple[str, dict[str, str | int]]:
    params: dict[str, str | int] = {
        "part": "snippet,replies",
        "allThreadsRelatedToChannelId": channel_id,
        "order": "time",
        "maxResults": PAGE,
        "textFormat": "plainText",
    }
    if page_token:
        params["pageToken"] = page_token
    return "/youtube/v3/commentThreads", params


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _comment(
    comment: dict[str, Any], *, thread: dict[str, Any], channel_id: str, parent: str | None
) -> Draft:
    snippet = comment.get("snippet") or {}
    author = str((snippet.get("authorChannelId") or {}).get("value", ""))
    video = str(snippet.get("videoId") or (thread.get("snippet") or {}).get("videoId") or "")
    return Draft(
        platform=Platform.youtube,
        platform_account_id=channel_id,
        external_id=str(comment["id"]),
        edit_version=0,
        kind=Kind.reply if parent else Kind.comment,
        direction=Direction.outbound if author == channel_id else Direction.inbound,
        thread_id=f"thread:{thread['id']}",
        parent_id=parent or video or None,
        author=Author(id=author or "unknown", name=str(snippet.get("authorDisplayName") or "")),
        text=str(snippet.get("textOriginal") or snippet.get("textDisplay") or ""),
        created_at=_time(str(snippet.get("publishedAt"))),
        url=f"https://www.youtube.com/watch?v={video}&lc={comment['id']}" if video else None,
    )


def parse_threads(page: Any, *, channel_id: str, since: str | None) -> tuple[Parsed, bool]:
    """Drafts of comments (and replies) newer than `since`; whether the page reached it."""
    if not isinstance(page, dict) or not isinstance(page.get("items"), list):
        raise MalformedPayload("expected an object with an 'items' list")
    parsed = Parsed()
    reached = False
    for thread in page["items"]:
        top = (thread.get("snippet") or {}).get("topLevelComment") or {}
        updated = str((top.get("snippet") or {}).get("updatedAt") or "")
        replies = (thread.get("replies") or {}).get("comments") or []
        newest_reply = max((str((r.get("snippet") or {}).get("updatedAt", "")) for r in replies), default="")
        if since is not None and max(updated, newest_reply) < since:
            reached = True
            break
        if top and (since is None or updated >= since):
            parsed.drafts.append(_comment(top, thread=thread, channel_id=channel_id, parent=None))
        for reply in replies:
            if since is None or str((reply.get("snippet") or {}).get("updatedAt", "")) >= since:
                parsed.drafts.append(
                    _comment(reply, thread=thread, channel_id=channel_id, parent=str(top.get("id")))
                )
    return parsed, reached


def newest_update(page: dict[str, Any]) -> str | None:
    times = []
    for thread in page.get("items") or []:
        top = (thread.get("snippet") or {}).get("topLevelComment") or {}
        times.append(str((top.get("snippet") or {}).get("updatedAt", "")))
        times += [
            str((r.get("snippet") or {}).get("updatedAt", ""))
            for r in (thread.get("replies") or {}).get("comments") or []
        ]
    return max(times) if times else None
