"""YouTube: a reply in a comment thread, as the channel, through the Data API v3 with OAuth.

`POST {api_base_url}/comments?part=snippet` (https://www.googleapis.com/youtube/v3) with
`Authorization: Bearer <access token>` and `{"snippet":{"parentId": <the thread's top-level
comment>, "textOriginal": text}}` -> the comment resource. YouTube threads have one level of
replies: whatever comment in a thread is answered, the reply goes under its top-level comment.

Each insert costs REPLY_UNITS of the Google project's daily quota (10,000 by default, shared
with the poller's reads), each page read back READ_UNITS. Access tokens last an hour and are
refreshed with the refresh token at `token_url` (https://oauth2.googleapis.com/token). YouTube
does not dedupe comments, so a post whose answer was lost is read back (`find`) first.
"""

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from services.outbound.platforms import wire
from services.outbound.platforms.base import (
    TIMEOUT,
    Credentials,
    CredentialsFailed,
    Lost,
    Outgoing,
    Posted,
    Refused,
    Unreadable,
)
from services.outbound.platforms.wire import CLOCK_SKEW, mapping, parse_time
from shared.commands import ReplyMethod
from shared.events import Platform

API = "https://www.googleapis.com/youtube/v3"
TOKEN_URL = "https://oauth2.googleapis.com/token"
REPLY_UNITS = 50
READ_UNITS = 1
QUOTA_REASONS = frozenset({"quotaExceeded", "dailyLimitExceeded"})
RATE_REASONS = frozenset({"rateLimitExceeded", "userRateLimitExceeded"})
PAGES = 20
PAGE = 100
_TAG = re.compile(r"<[^>]*>")


def thread_of(thread_id: str) -> str:
    """The top-level comment's id from a thread id as ingest stores it (`thread:<id>`)."""
    return thread_id.removeprefix("thread:")


def refusal(response: httpx.Response) -> Refused:
    """What a Data API error answer (4xx) means for the reply: nothing went out, and why."""
    error = mapping(wire.json_of(response).get("error"))
    reasons = {str(item.get("reason")) for item in wire.listed(error.get("errors")) if isinstance(item, dict)}
    message = _message(error) or f"YouTube answered HTTP {response.status_code}"
    status = response.status_code
    if status == 401:
        return Refused(f"YouTube: {message}", expired=True, status=status)
    if reasons & QUOTA_REASONS:
        return Refused(
            f"YouTube: the project's daily quota is spent (a reply takes {REPLY_UNITS} units); "
            "it is renewed at midnight Pacific time",
            status=status,
        )
    if status == 429 or reasons & RATE_REASONS:
        return Refused(
            f"YouTube: {message}", retry=True, retry_after=wire.retry_after(response), status=status
        )
    return Refused(f"YouTube: {message}", status=status)


class YouTubeClient(wire.HttpHolder):
    """Replies under YouTube comments (see the module's docstring). `http` is a client the
    caller keeps open; without one the client opens its own, with `timeout`, on first use, and
    `aclose` closes it."""

    platform = Platform.youtube
    idempotent = False

    def __init__(self, *, http: httpx.AsyncClient | None = None, timeout: httpx.Timeout = TIMEOUT) -> None:
        super().__init__(http, timeout)

    async def post(self, outgoing: Outgoing, credentials: Credentials) -> Posted:
        token = credentials.get("access_token")
        if outgoing.method is not ReplyMethod.comment_reply:
            raise Refused(f"YouTube does not take a {outgoing.method.value} reply")
        body = {"snippet": {"parentId": thread_of(outgoing.target.thread_id), "textOriginal": outgoing.text}}
        http = self._client()
        request = http.build_request(
            "POST",
            wire.endpoint(credentials, API, "comments"),
            params={"part": "snippet"},
            json=body,
            headers=wire.bearer(token),
        )
        response = await wire.send(http, request, platform="YouTube")
        if response.status_code >= 500:
            raise Lost(f"YouTube answered HTTP {response.status_code}: the reply may have gone out")
        if response.status_code >= 300:
            raise _scrubbed(refusal(response), token)
        comment = wire.json_of(response)
        if not isinstance(comment.get("id"), str) or not comment["id"]:
            raise Lost(f"YouTube answered {response.status_code} without the reply's id")
        return _posted(comment)

    async def find(self, outgoing: Outgoing, credentials: Credentials, since: datetime) -> Posted | None:
        token = credentials.get("access_token")
        params = {
            "part": "snippet",
            "parentId": thread_of(outgoing.target.thread_id),
            "maxResults": str(PAGE),
            "textFormat": "plainText",
        }
        channel = outgoing.target.account_external_id
        found: list[dict[str, Any]] = []
        for _ in range(PAGES):
            page = await self._read(credentials, token, params)
            found += [
                comment
                for comment in map(mapping, wire.listed(page.get("items")))
                if _is_reply(comment, channel=channel, text=outgoing.text, since=since)
            ]
            following = page.get("nextPageToken")
            if not isinstance(following, str) or not following:
                break
            params = params | {"pageToken": following}
        else:
            raise Unreadable(f"YouTube: the thread is longer than {PAGES} pages; it was not read to the end")
        if not found:
            return None
        return _posted(min(found, key=lambda comment: parse_time(comment["snippet"]["publishedAt"]) or since))

    async def refresh(self, credentials: Credentials) -> Credentials:
        """A new access token from the refresh token (Google keeps the refresh token unless it
        sends a new one); CredentialsFailed when Google refuses it (revoked, expired, wrong client)."""
        form = {
            "grant_type": "refresh_token",
            "refresh_token": credentials.get("refresh_token"),
            "client_id": credentials.get("client_id"),
            "client_secret": credentials.get("client_secret"),
        }
        url = str(credentials.values.get("token_url") or TOKEN_URL)
        http = self._client()
        try:
            response = await wire.read(http, http.build_request("POST", url, data=form), platform="YouTube")
        except Unreadable as error:
            raise Refused(f"{error} (the token could not be refreshed)", retry=True) from None
        if response.status_code >= 500 or response.status_code == 429:
            raise Refused(
                f"YouTube: the token could not be refreshed (HTTP {response.status_code})",
                retry=True,
                retry_after=wire.retry_after(response),
            )
        answer = wire.json_of(response)
        token = answer.get("access_token")
        if response.status_code != 200 or not isinstance(token, str) or not token:
            code = str(answer.get("error") or f"HTTP {response.status_code}")
            said = str(answer.get("error_description") or "the token endpoint refused the refresh token")
            secrets = (form["refresh_token"], form["client_secret"])
            raise CredentialsFailed(_scrub(f"YouTube: {said[:300]} ({code[:64]})", *secrets))
        values = dict(credentials.values) | {"access_token": token}
        if isinstance(answer.get("refresh_token"), str) and answer["refresh_token"]:
            values["refresh_token"] = answer["refresh_token"]
        lifetime = answer.get("expires_in")
        expires = (
            datetime.now(UTC) + timedelta(seconds=float(lifetime))
            if isinstance(lifetime, int | float) and not isinstance(lifetime, bool)
            else None
        )
        return Credentials(values=values, expires_at=expires)

    async def _read(self, credentials: Credentials, token: str, params: dict[str, str]) -> dict[str, Any]:
        """One page of the thread's replies; Unreadable when it cannot be had."""
        http = self._client()
        request = http.build_request(
            "GET", wire.endpoint(credentials, API, "comments"), params=params, headers=wire.bearer(token)
        )
        response = await wire.read(http, request, platform="YouTube")
        if response.status_code != 200:
            said = _message(mapping(wire.json_of(response).get("error"))) or f"HTTP {response.status_code}"
            raise Unreadable(_scrub(f"YouTube: the thread could not be read: {said}", token))
        page = wire.json_of(response)
        if not isinstance(page.get("items"), list):
            raise Unreadable("YouTube: the thread could not be read: the answer has no items")
        return page


def _is_reply(comment: dict[str, Any], *, channel: str | None, text: str, since: datetime) -> bool:
    """The channel's comment with this text, published at or after `since` (give or take the clocks' skew)."""
    snippet = mapping(comment.get("snippet"))
    when = parse_time(snippet.get("publishedAt"))
    return (
        isinstance(comment.get("id"), str)
        and (not channel or mapping(snippet.get("authorChannelId")).get("value") == channel)
        and wire.same_text(text, str(snippet.get("textOriginal") or ""))
        and when is not None
        and when >= since - CLOCK_SKEW
    )


def _posted(comment: dict[str, Any]) -> Posted:
    snippet = mapping(comment.get("snippet"))
    video = snippet.get("videoId")
    url = (
        f"https://www.youtube.com/watch?v={video}&lc={comment['id']}"
        if isinstance(video, str) and video
        else None
    )
    return Posted(platform_id=comment["id"], url=url, created_at=parse_time(snippet.get("publishedAt")))


def _message(error: dict[str, Any]) -> str:
    """Google's message, without the HTML it sometimes carries (a link to the quota page)."""
    message = error.get("message")
    return " ".join(_TAG.sub("", message).split())[:500] if isinstance(message, str) else ""


def _scrub(text: str, *secrets: str) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[secret]")
    return text


def _scrubbed(refused: Refused, token: str) -> Refused:
    if token and token in refused.error:
        refused.error = _scrub(refused.error, token)
        refused.args = (refused.error,)
    return refused
