"""YouTube: comment threads related to the channel, newest first, paged back to the mark.

Endpoint (on the account's `api_base_url`, https://www.googleapis.com):
`GET /youtube/v3/commentThreads?part=snippet,replies&allThreadsRelatedToChannelId=<channel>
&order=time&maxResults=100&textFormat=plainText&key=<API key>[&pageToken=]`. Each call costs
one unit of the project's daily quota (10,000 by default), which sets how often a channel
can be polled, so a poll stops paging as soon as it reaches what is stored.
"""

from datetime import datetime
from typing import Any

from services.ingest.connectors.feeds import (
    ITEM_ERRORS,
    Walk,
    id_of,
    key_of,
    reject,
    text_of,
    time_of,
    time_or_none,
    url_of,
)
from services.ingest.connectors.model import Draft, MalformedPayload, Parsed, items, mapping
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


def _comment(comment: object, *, thread_id: str, video: str, channel_id: str, parent: str | None) -> Draft:
    comment = mapping(comment, "comment")
    comment_id = id_of(comment.get("id"), "comment.id")
    snippet = mapping(comment.get("snippet"), "comment.snippet")
    author = text_of(mapping(snippet.get("authorChannelId"), "authorChannelId").get("value"), "author")
    video = text_of(snippet.get("videoId"), "videoId") or video
    text = text_of(snippet.get("textOriginal"), "textOriginal") or text_of(
        snippet.get("textDisplay"), "textDisplay"
    )
    return Draft(
        platform=Platform.youtube,
        platform_account_id=channel_id,
        external_id=comment_id,
        edit_version=0,
        kind=Kind.reply if parent else Kind.comment,
        direction=Direction.outbound if author == channel_id else Direction.inbound,
        thread_id=f"thread:{thread_id}",
        parent_id=parent or video or None,
        author=Author(
            id=author or "unknown",
            name=text_of(snippet.get("authorDisplayName"), "authorDisplayName"),
        ),
        text=text,
        created_at=time_of(snippet.get("publishedAt"), "publishedAt"),
        url=url_of(f"https://www.youtube.com/watch?v={video}&lc={comment_id}") if video else None,
    )


def _place(comment: object, thread_id: str) -> tuple[str, datetime | None]:
    """A comment's key and time in the feed (its last update: an edit moves it up)."""
    if not isinstance(comment, dict) or not isinstance(comment.get("id"), str):
        return f"{thread_id}/{key_of(comment)}", None
    snippet = comment.get("snippet")
    if not isinstance(snippet, dict):
        return comment["id"], None
    return comment["id"], time_or_none(snippet.get("updatedAt") or snippet.get("publishedAt"))


def parse_threads(page: Any, *, channel_id: str, walk: Walk) -> Parsed:
    """The comments (top-level and replies) not stored yet, as drafts (or rejected alone);
    `walk.reached` once a thread lies wholly before the mark."""
    if not isinstance(page, dict) or not isinstance(page.get("items"), list):
        raise MalformedPayload("expected an object with an 'items' list")
    parsed = Parsed()
    for index, thread in enumerate(page["items"]):
        where = f"items[{index}]"
        try:
            thread = mapping(thread, "thread")
            thread_id = id_of(thread.get("id"), "thread.id")
            snippet = mapping(thread.get("snippet"), "thread.snippet")
            video = text_of(snippet.get("videoId"), "thread.videoId")
        except ITEM_ERRORS as error:
            if walk.is_new(key_of(thread), None):
                reject(parsed, where, error, thread)
            continue
        top = snippet.get("topLevelComment")
        comments: list[tuple[str, object, str | None]] = [(f"{where}.snippet.topLevelComment", top, None)]
        parent = top["id"] if isinstance(top, dict) and isinstance(top.get("id"), str) else thread_id
        try:
            replies = items(mapping(thread.get("replies"), "replies").get("comments"), "replies.comments")
        except ValueError as error:
            if walk.is_new(f"{thread_id}/replies", None):
                reject(parsed, f"{where}.replies", error, thread.get("replies"))
            replies = []
        comments += [(f"{where}.replies.comments[{n}]", reply, parent) for n, reply in enumerate(replies)]
        places = [_place(comment, thread_id) for _, comment, _ in comments]
        if all(walk.before_mark(when) for _, when in places):
            walk.reach()  # ordered by their latest activity: every later thread is older still
            break
        for (at, comment, answered), (key, when) in zip(comments, places, strict=True):
            if walk.before_mark(when) or not walk.is_new(key, when):
                continue
            try:
                parsed.drafts.append(
                    _comment(
                        comment, thread_id=thread_id, video=video, channel_id=channel_id, parent=answered
                    )
                )
            except ITEM_ERRORS as error:
                reject(parsed, at, error, comment)
    return parsed
