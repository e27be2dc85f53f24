"""Meta's Graph API: replies under Facebook and Instagram comments, Messenger and Instagram DMs.

One client per platform (`MetaClient(Platform.facebook)` or `Platform.instagram`), with the
account's Page access token. What it sends, on `api_base_url` (https://graph.facebook.com/v21.0):

- a Facebook comment reply: `POST /{comment}/comments` form `message` -> `{"id"}`;
- an Instagram comment reply: `POST /{ig comment}/replies` form `message` -> `{"id"}`;
- Messenger: `POST /{page}/messages` JSON `{"recipient":{"id":PSID},"messaging_type":"RESPONSE",
  "message":{"text"}}`, or `"messaging_type":"MESSAGE_TAG","tag":"HUMAN_AGENT"` after 24 hours,
  -> `{"recipient_id","message_id"}`;
- an Instagram DM: `POST /{ig user}/messages` JSON `{"recipient":{"id":IGSID},"message":{"text"}}`
  (with the HUMAN_AGENT tag after 24 hours); a private reply to a comment puts
  `{"comment_id"}` as the recipient.

The token goes in the `Authorization` header, never in the address: addresses are what HTTP
libraries log and what their errors quote. Meta does not dedupe on a key of ours, so a post
whose answer was lost is read back (`find`) before it may go again. Page tokens do not refresh:
an expired or revoked one needs a new token in the account's `reply:` block.
"""

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from itertools import pairwise
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
from shared.events import Kind, Platform

GRAPH = "https://graph.facebook.com/v21.0"
TOKEN_FIELD = "page_access_token"

EXPIRED = 190  # expired, revoked or invalid token
DUPLICATE = 506  # the same text was just posted there
RATE_LIMITS = frozenset({4, 17, 32, 613})  # app, user, page and API-specific call limits
BUSINESS_RATE_LIMITS = range(80000, 80015)  # the business use case limits (Messenger, Instagram...)
WINDOW_SUBCODES = frozenset({2018278, 2534022})  # Messenger's and Instagram's: outside the window
PAGES = 20  # read at most this many pages of a thread before giving up (Unreadable)
PAGE = 100
_MESSAGE_FIELDS = "id,message,from,created_time"


@dataclass(frozen=True)
class GraphWrite:
    """One Graph API write: the path under the base URL and its form or JSON body."""

    path: str
    form: dict[str, str] | None = None
    json: dict[str, Any] | None = None


def write_for(platform: Platform, outgoing: Outgoing) -> GraphWrite:
    """What posting `outgoing` sends; Refused (nothing sent) for a method Meta does not offer
    for this platform or a target without the ids it needs."""
    target = outgoing.target
    method = outgoing.method
    if method is ReplyMethod.comment_reply:
        edge = "replies" if platform is Platform.instagram else "comments"
        return GraphWrite(path=f"{_node(target.external_id)}/{edge}", form={"message": outgoing.text})
    owner = target.account_external_id
    if not owner:
        what = "Instagram account id" if platform is Platform.instagram else "Page id"
        raise Refused(f"{_name(platform, target.kind)}: the account has no {what} to send from")
    if method in (ReplyMethod.send_api, ReplyMethod.human_agent):
        body: dict[str, Any] = {"recipient": {"id": target.author_id}}
        if method is ReplyMethod.human_agent:
            body |= {"messaging_type": "MESSAGE_TAG", "tag": outgoing.tag or "HUMAN_AGENT"}
        elif platform is Platform.facebook:
            body["messaging_type"] = "RESPONSE"
        body["message"] = {"text": outgoing.text}
        return GraphWrite(path=f"{_node(owner)}/messages", json=body)
    if method is ReplyMethod.private_reply and platform is Platform.instagram:
        return GraphWrite(
            path=f"{_node(owner)}/messages",
            json={"recipient": {"comment_id": target.external_id}, "message": {"text": outgoing.text}},
        )
    raise Refused(f"{_name(platform, target.kind)} does not take a {method.value} reply")


def refusal(platform: Platform, kind: Kind, response: httpx.Response) -> Refused:
    """What a Graph API error answer (4xx) means for the reply: nothing went out, and why."""
    error = _error(response)
    code, subcode = _int(error.get("code")), _int(error.get("error_subcode"))
    message = _message(error) or f"{_name(platform, kind)} answered HTTP {response.status_code}"
    status = response.status_code
    if code == EXPIRED or (status == 401 and code is None):
        return Refused(message, expired=True, status=status)
    if code in RATE_LIMITS or (code is not None and code in BUSINESS_RATE_LIMITS) or status == 429:
        return Refused(message, retry=True, retry_after=_retry_after(response), status=status)
    if subcode in WINDOW_SUBCODES or "outside of allowed window" in message:
        return Refused(message, window=True, status=status)
    if code == DUPLICATE:
        return Refused(f"{message} (the same text is already there)", status=status)
    return Refused(message, retry=error.get("is_transient") is True, status=status)


class MetaClient(wire.HttpHolder):
    """Facebook or Instagram replies through the Graph API (see the module's docstring).

    `http` is a client the caller keeps open (its timeout is the caller's); without one the
    client opens its own, with `timeout`, on first use, and `aclose` closes it."""

    idempotent = False

    def __init__(
        self,
        platform: Platform,
        *,
        http: httpx.AsyncClient | None = None,
        timeout: httpx.Timeout = TIMEOUT,
    ) -> None:
        if platform not in (Platform.facebook, Platform.instagram):
            raise ValueError(f"MetaClient answers on facebook or instagram, not {platform}")
        self.platform: Platform = platform
        super().__init__(http, timeout)

    async def post(self, outgoing: Outgoing, credentials: Credentials) -> Posted:
        token = credentials.get(TOKEN_FIELD)
        write = write_for(self.platform, outgoing)
        name = _name(self.platform, outgoing.target.kind)
        http = self._client()
        request = http.build_request(
            "POST",
            wire.endpoint(credentials, GRAPH, write.path),
            data=write.form,
            json=write.json,
            headers=wire.bearer(token),
        )
        response = await wire.send(http, request, platform=name)
        if response.status_code >= 500:
            raise Lost(f"{name} answered HTTP {response.status_code}: the reply may have gone out")
        if response.status_code >= 300:
            raise _scrubbed(refusal(self.platform, outgoing.target.kind, response), token)
        answer = wire.json_of(response)
        posted = answer.get("message_id") or answer.get("id")
        if not isinstance(posted, str) or not posted:
            raise Lost(f"{name} answered {response.status_code} without the reply's id")
        return Posted(platform_id=posted)

    async def find(self, outgoing: Outgoing, credentials: Credentials, since: datetime) -> Posted | None:
        token = credentials.get(TOKEN_FIELD)
        target = outgoing.target
        brand = _brand(target.account_external_id, target.account_handle)
        try:
            read = _Reader(self._client(), credentials, token, _name(self.platform, target.kind))
            if outgoing.method is ReplyMethod.comment_reply:
                seen = await read.comment_replies(self.platform, target.external_id, since)
            elif outgoing.method in (
                ReplyMethod.send_api,
                ReplyMethod.human_agent,
                ReplyMethod.private_reply,
            ):
                if not target.account_external_id:
                    raise Unreadable(f"{read.name}: the account has no id to read its messages with")
                seen = await read.conversation(
                    self.platform, target.account_external_id, target.author_id, since
                )
            else:
                return None  # never posted: post refuses the method before sending
        except Refused as error:  # an id that is not one: nothing was posted under it either
            raise Unreadable(error.error) from error
        return _match(seen, brand, outgoing.text, since)

    async def refresh(self, credentials: Credentials) -> Credentials:
        """A Page token cannot be refreshed: Meta is asked whether it still works; if it does,
        it is kept; if Meta says it expired or was revoked, CredentialsFailed carries Meta's
        words (a new token must be set); other answers are Refused as a post's would be."""
        token = credentials.get(TOKEN_FIELD)
        name = _name(self.platform, Kind.comment)
        http = self._client()
        request = http.build_request(
            "GET",
            wire.endpoint(credentials, GRAPH, "me"),
            params={"fields": "id"},
            headers=wire.bearer(token),
        )
        try:
            response = await wire.read(http, request, platform=name)
        except Unreadable as error:
            raise Refused(f"{error} (the token could not be checked)", retry=True) from None
        if response.status_code == 200:
            return credentials
        if response.status_code >= 500:
            raise Refused(f"{name}: the token could not be checked (HTTP {response.status_code})", retry=True)
        refused = _scrubbed(refusal(self.platform, Kind.comment, response), token)
        if not refused.expired:
            raise refused  # a rate limit, say: the token may well work
        raise CredentialsFailed(
            f"{name}: {refused.error} (a Page access token does not refresh: set a new one)"
        )


@dataclass(frozen=True)
class _Seen:
    id: str
    text: str
    author_id: str
    author_name: str
    created_at: datetime | None


class _Reader:
    """Reads a thread back, page by page (cursors, never Meta's `next` address: it holds the token)."""

    def __init__(self, http: httpx.AsyncClient, credentials: Credentials, token: str, name: str) -> None:
        self.http = http
        self.credentials = credentials
        self.token = token
        self.name = name

    async def get(self, path: str, params: dict[str, str]) -> dict[str, Any]:
        request = self.http.build_request(
            "GET",
            wire.endpoint(self.credentials, GRAPH, path),
            params=params,
            headers=wire.bearer(self.token),
        )
        response = await wire.read(self.http, request, platform=self.name)
        if response.status_code != 200:
            said = _message(_error(response)) or f"HTTP {response.status_code}"
            raise Unreadable(_scrub(f"{self.name}: the thread could not be read: {said}", self.token))
        answer = wire.body_of(response)
        if not isinstance(answer, dict):
            raise Unreadable(f"{self.name}: the thread could not be read: the answer is not a JSON object")
        return answer

    async def pages(
        self,
        path: str,
        params: dict[str, str],
        first: dict[str, Any] | None,
        since: datetime,
        read: Callable[[Any], _Seen | None],
        *,
        newest_first: bool,
    ) -> list[_Seen]:
        """Every item of an edge, page by page, to the end or, on an edge read newest first,
        to a page that reaches before `since`; Unreadable past PAGES pages."""
        seen: list[_Seen] = []
        page = first if first is not None else await self.get(path, params)
        for _ in range(PAGES):
            items = [item for item in map(read, wire.listed(page.get("data"))) if item is not None]
            seen += items
            after = _after(page)
            if after is None or (newest_first and _reached(items, since - CLOCK_SKEW)):
                return seen
            page = await self.get(path, params | {"after": after})
        raise Unreadable(f"{self.name}: the thread is longer than {PAGES} pages; it was not read to the end")

    async def comment_replies(self, platform: Platform, comment: str, since: datetime) -> list[_Seen]:
        if platform is Platform.instagram:
            fields, read = "id,text,username,from,timestamp", _instagram_comment
            path = f"{_node(comment)}/replies"
        else:
            fields, read = "id,message,from,created_time", _message_item
            path = f"{_node(comment)}/comments"
        # Comments come oldest first (Meta's chronological order): read to the end.
        return await self.pages(
            path, {"fields": fields, "limit": str(PAGE)}, None, since, read, newest_first=False
        )

    async def conversation(self, platform: Platform, owner: str, user: str, since: datetime) -> list[_Seen]:
        answer = await self.get(
            f"{_node(owner)}/conversations",
            {
                "platform": "instagram" if platform is Platform.instagram else "messenger",
                "user_id": user,
                "fields": f"messages{{{_MESSAGE_FIELDS}}}",
            },
        )
        seen: list[_Seen] = []
        for conversation in wire.listed(answer.get("data")):
            if not isinstance(conversation, dict) or not isinstance(conversation.get("id"), str):
                continue
            messages = conversation.get("messages")
            first = messages if isinstance(messages, dict) else {"data": []}
            seen += await self.pages(
                f"{_node(conversation['id'])}/messages",
                {"fields": _MESSAGE_FIELDS, "limit": str(PAGE)},
                first,
                since,
                _message_item,
                newest_first=True,
            )
        return seen


def _match(seen: list[_Seen], brand: Callable[[_Seen], bool], text: str, since: datetime) -> Posted | None:
    """The brand's reply with this text, written at or after `since` (give or take the clocks'
    skew): the earliest, if there are several."""
    found = [
        item
        for item in seen
        if brand(item)
        and wire.same_text(text, item.text)
        and item.created_at is not None
        and item.created_at >= since - CLOCK_SKEW
    ]
    if not found:
        return None
    first = min(found, key=lambda item: item.created_at or since)
    return Posted(platform_id=first.id, created_at=first.created_at)


def _brand(account_id: str | None, handle: str) -> Callable[[_Seen], bool]:
    handle = handle.strip().lstrip("@").casefold()

    def mine(item: _Seen) -> bool:
        if account_id and item.author_id == account_id:
            return True
        return bool(handle) and item.author_name.casefold() == handle

    return mine


def _message_item(item: Any) -> _Seen | None:
    """A Facebook comment or a Messenger/Instagram message: id, message, from, created_time."""
    if not isinstance(item, dict) or not isinstance(item.get("id"), str):
        return None
    author = mapping(item.get("from"))
    return _Seen(
        id=item["id"],
        text=str(item.get("message") or ""),
        author_id=str(author.get("id") or ""),
        author_name=str(author.get("username") or ""),
        created_at=parse_time(item.get("created_time")),
    )


def _instagram_comment(item: Any) -> _Seen | None:
    """An Instagram comment: id, text, username, from, timestamp."""
    if not isinstance(item, dict) or not isinstance(item.get("id"), str):
        return None
    author = mapping(item.get("from"))
    return _Seen(
        id=item["id"],
        text=str(item.get("text") or ""),
        author_id=str(author.get("id") or ""),
        author_name=str(item.get("username") or author.get("username") or ""),
        created_at=parse_time(item.get("timestamp")),
    )


def _reached(items: list[_Seen], since: datetime) -> bool:
    """Whether a page of a newest-first edge reaches before `since` (the next pages are older
    still); a page whose times do not plainly fall is not taken as the end."""
    times = [item.created_at for item in items if item.created_at is not None]
    falling = len(times) >= 2 and all(a >= b for a, b in pairwise(times)) and times[0] > times[-1]
    return falling and times[-1] < since


def _after(page: dict[str, Any]) -> str | None:
    """The cursor of the next page, when Meta says there is one (`paging.next`)."""
    paging = page.get("paging")
    if not isinstance(paging, dict) or not paging.get("next"):
        return None
    cursors = paging.get("cursors")
    after = cursors.get("after") if isinstance(cursors, dict) else None
    return after if isinstance(after, str) and after else None


def _name(platform: Platform, kind: Kind) -> str:
    if kind is Kind.dm:
        return "Instagram" if platform is Platform.instagram else "Messenger"
    return "Instagram" if platform is Platform.instagram else "Facebook"


def _node(value: str) -> str:
    """A Graph node id as a path segment: ids are digits, underscores and letters; anything
    else would address another node."""
    if not re.fullmatch(r"[A-Za-z0-9_.:-]{1,256}", value or ""):
        raise Refused(f"not a Meta id: {value[:64]!r}")
    return value


def _error(response: httpx.Response) -> dict[str, Any]:
    error = wire.json_of(response).get("error")
    return error if isinstance(error, dict) else {}


def _message(error: dict[str, Any]) -> str:
    message = error.get("message")
    return message.strip()[:500] if isinstance(message, str) else ""


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds until calls may go again: `Retry-After`, else the longest
    `estimated_time_to_regain_access` (minutes) of Meta's usage headers."""
    after = wire.retry_after(response)
    if after is not None:
        return after
    headers = response.headers
    minutes = [
        value
        for name in ("x-business-use-case-usage", "x-page-usage", "x-app-usage")
        for value in _regain(headers.get(name))
    ]
    return max(minutes) * 60.0 if minutes and max(minutes) > 0 else None


def _regain(header: str | None) -> list[float]:
    try:
        usage = json.loads(header or "null")
    except ValueError:
        return []
    found: list[float] = []
    stack = [usage]
    while stack:  # the business header nests a list per business id; the others are flat
        value = stack.pop()
        if isinstance(value, dict):
            minutes = value.get("estimated_time_to_regain_access")
            if isinstance(minutes, int | float) and not isinstance(minutes, bool):
                found.append(float(minutes))
            stack += list(value.values())
        elif isinstance(value, list):
            stack += value
    return found


def _scrub(text: str, token: str) -> str:
    return text.replace(token, "[token]") if token else text


def _scrubbed(refused: Refused, token: str) -> Refused:
    if token and token in refused.error:
        refused.error = _scrub(refused.error, token)
        refused.args = (refused.error,)
    return refused
