"""X: a reply post, or a message in the DM conversation, with the brand's OAuth 2.0 user token.

`POST /2/tweets` `{"text", "reply": {"in_reply_to_tweet_id"}}` answers a post; `POST
/2/dm_conversations/{id}/messages` `{"text"}` answers a DM. X takes no key to dedupe on, so a
post whose answer was lost is looked for before it is ever sent again: in the brand's own
timeline (`GET /2/users/{brand}/tweets`), which shows a post as soon as it is made, where recent
search can lag and only finds a thread by its root post, which a reply deep in a thread does not
know; a DM in the conversation's events. X rotates refresh tokens: the new one is kept.
"""

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from services.outbound.platforms.base import (
    TIMEOUT,
    Credentials,
    CredentialsFailed,
    Lost,
    Outgoing,
    Posted,
    Refused,
    Target,
    Unreadable,
)
from services.outbound.platforms.wire import (
    CLOCK_SKEW,
    body_of,
    mapping,
    not_before,
    parse_time,
    read,
    same_text,
    seconds_until,
    send,
    words,
)
from shared.commands import ReplyMethod
from shared.events import Platform

API = "https://api.x.com"
TOKEN_URL = "https://api.x.com/2/oauth2/token"
PAGE = 100
PAGES = 5  # pages of the timeline or of a DM conversation read back, newest first


def dm_conversation(target: Target) -> str:
    """The DM conversation a reply goes to: the one ingest kept, else the thread's. A one-to-one
    conversation is named by its two user ids, the smaller first, which is how X names it."""
    if target.context is not None and target.context.dm_conversation_id:
        return target.context.dm_conversation_id
    thread = target.thread_id.removeprefix("dm:")
    brand = target.account_external_id
    if "-" not in thread and brand and thread.isdigit() and brand.isdigit():
        return "-".join(sorted((thread, brand), key=int))
    return thread


def _time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class XClient:
    platform = Platform.x
    idempotent = False

    def __init__(self, *, timeout: httpx.Timeout = TIMEOUT) -> None:
        self.timeout = timeout

    def _http(self, credentials: Credentials) -> httpx.AsyncClient:
        base = str(credentials.values.get("api_base_url") or API).rstrip("/")
        return httpx.AsyncClient(
            base_url=base,
            timeout=self.timeout,
            headers={"authorization": f"Bearer {credentials.get('access_token')}"},
        )

    async def post(self, outgoing: Outgoing, credentials: Credentials) -> Posted:
        target = outgoing.target
        if outgoing.method is ReplyMethod.dm:
            path = f"/2/dm_conversations/{dm_conversation(target)}/messages"
            body: dict[str, Any] = {"text": outgoing.text}
        elif outgoing.method is ReplyMethod.post:
            path = "/2/tweets"
            body = {"text": outgoing.text, "reply": {"in_reply_to_tweet_id": target.external_id}}
        else:
            raise Refused(f"X replies are posts or DMs, not {outgoing.method.value}")
        async with self._http(credentials) as http:
            response = await send(http, http.build_request("POST", path, json=body), platform="X")
        if response.is_success:
            data = mapping(mapping(body_of(response)).get("data"))
            if outgoing.method is ReplyMethod.dm:
                event = data.get("dm_event_id")
                if isinstance(event, str) and event:
                    return Posted(platform_id=event)
            else:
                tweet = data.get("id")
                if isinstance(tweet, str) and tweet:
                    handle = target.account_handle.lstrip("@") or "i"
                    return Posted(platform_id=tweet, url=f"https://x.com/{handle}/status/{tweet}")
            raise Lost(f"X answered {response.status_code} without the new post's id")
        raise _refusal(response)

    async def find(self, outgoing: Outgoing, credentials: Credentials, since: datetime) -> Posted | None:
        brand = outgoing.target.account_external_id
        if not brand:
            raise Unreadable("the X account's user id is not known: its posts cannot be read")
        if outgoing.method is ReplyMethod.dm:
            return await self._find_message(outgoing, credentials, since, brand)
        return await self._find_post(outgoing, credentials, since, brand)

    async def _pages(
        self, credentials: Credentials, path: str, params: dict[str, str | int], since: datetime
    ) -> list[dict[str, Any]]:
        """A listing, newest first, followed by `meta.next_token` back to `since` (give or take
        the clocks' skew): up to PAGES pages, and Unreadable if the reply could be further back."""
        found: list[dict[str, Any]] = []
        async with self._http(credentials) as http:
            token: str | None = None
            for _ in range(PAGES):
                query = {**params, **({"pagination_token": token} if token else {})}
                response = await read(http, http.build_request("GET", path, params=query), platform="X")
                if not response.is_success:
                    raise Unreadable(
                        f"X answered {response.status_code}: {words(response, 'detail', 'title')}"
                    )
                document = mapping(body_of(response))
                data = document.get("data")
                page = [item for item in data if isinstance(item, dict)] if isinstance(data, list) else []
                found += page
                next_token = mapping(document.get("meta")).get("next_token")
                if not isinstance(next_token, str) or not next_token:
                    return found
                oldest = parse_time(page[-1].get("created_at")) if page else None
                if oldest is not None and not not_before(oldest, since):
                    return found  # older pages are from before the reply was sent
                token = next_token
        raise Unreadable(f"X's listing goes back more than {PAGES * PAGE} items since the reply was sent")

    async def _find_post(
        self, outgoing: Outgoing, credentials: Credentials, since: datetime, brand: str
    ) -> Posted | None:
        params: dict[str, str | int] = {
            "start_time": _time(since - CLOCK_SKEW),
            "max_results": PAGE,
            "tweet.fields": "created_at,in_reply_to_user_id,referenced_tweets,conversation_id",
        }
        answered = outgoing.target.external_id
        for tweet in await self._pages(credentials, f"/2/users/{brand}/tweets", params, since):
            replied = any(
                isinstance(ref, dict) and ref.get("type") == "replied_to" and ref.get("id") == answered
                for ref in tweet.get("referenced_tweets") or []
            )
            created = parse_time(tweet.get("created_at"))
            if (
                replied
                and same_text(outgoing.text, str(tweet.get("text", "")))
                and not_before(created, since)
            ):
                handle = outgoing.target.account_handle.lstrip("@") or "i"
                tweet_id = str(tweet.get("id"))
                return Posted(
                    platform_id=tweet_id, url=f"https://x.com/{handle}/status/{tweet_id}", created_at=created
                )
        return None

    async def _find_message(
        self, outgoing: Outgoing, credentials: Credentials, since: datetime, brand: str
    ) -> Posted | None:
        path = f"/2/dm_conversations/{dm_conversation(outgoing.target)}/dm_events"
        params: dict[str, str | int] = {
            "dm_event.fields": "created_at,sender_id,text",
            "event_types": "MessageCreate",
            "max_results": PAGE,
        }
        for event in await self._pages(credentials, path, params, since):
            created = parse_time(event.get("created_at"))
            if (
                event.get("sender_id") == brand
                and same_text(outgoing.text, str(event.get("text", "")))
                and not_before(created, since)
            ):
                return Posted(platform_id=str(event.get("id")), created_at=created)
        return None

    async def refresh(self, credentials: Credentials) -> Credentials:
        """OAuth 2.0 refresh: a new access token and, as X rotates them, a new refresh token
        (the old one stops working: the new credentials must be kept)."""
        values = credentials.values
        client_id = credentials.get("client_id")
        form = {
            "grant_type": "refresh_token",
            "refresh_token": credentials.get("refresh_token"),
            "client_id": client_id,
        }
        secret = values.get("client_secret")
        auth = httpx.BasicAuth(client_id, secret) if isinstance(secret, str) and secret else None
        url = str(values.get("token_url") or TOKEN_URL)
        async with httpx.AsyncClient(timeout=self.timeout, auth=auth) as http:
            try:
                response = await send(http, http.build_request("POST", url, data=form), platform="X")
            except Lost as lost:
                # X may have rotated the refresh token and the new one is lost with the answer.
                raise Refused(f"X's token endpoint did not answer: {lost}", retry=True) from None
        if response.status_code in (400, 401, 403):
            raise CredentialsFailed(
                f"X refused the refresh token: {words(response, 'error_description', 'error')}"
            )
        if response.status_code == 429 or response.status_code >= 500:
            raise Refused(
                f"X's token endpoint answered {response.status_code}",
                retry=True,
                retry_after=seconds_until(response.headers.get("x-rate-limit-reset")),
                status=response.status_code,
            )
        document = mapping(body_of(response))
        access = document.get("access_token")
        if not response.is_success or not isinstance(access, str) or not access:
            raise CredentialsFailed(
                f"X's token endpoint answered {response.status_code} without an access token"
            )
        rotated = document.get("refresh_token")
        lifetime = document.get("expires_in")
        return Credentials(
            values={
                **values,
                "access_token": access,
                "refresh_token": rotated
                if isinstance(rotated, str) and rotated
                else values.get("refresh_token"),
            },
            expires_at=datetime.now(UTC) + timedelta(seconds=lifetime)
            if isinstance(lifetime, int | float) and not isinstance(lifetime, bool)
            else None,
        )


def _refusal(response: httpx.Response) -> Exception:
    """What an X error answer means for the reply: `Lost` for a 5xx, else a `Refused`."""
    status = response.status_code
    if status >= 500:
        return Lost(f"X answered {status}: the post may have gone out")
    document = mapping(body_of(response))
    errors = document.get("errors")
    detail = words(response, "detail", "title")
    if isinstance(errors, list) and errors and isinstance(errors[0], dict) and errors[0].get("message"):
        detail = str(errors[0]["message"])[:500]
    if status == 401:
        return Refused(detail, expired=True, status=status)
    if status == 429:
        reset = seconds_until(response.headers.get("x-rate-limit-reset"))
        return Refused(detail, retry=True, retry_after=reset, status=status)
    if status == 403 and ("not been mentioned" in detail or "otherwise engaged" in detail):
        return Refused(detail, window=True, status=status)
    return Refused(detail, status=status)
