"""Mastodon: a status in reply, mentioning the author, with the visibility of the status answered.

`POST {instance}/api/v1/statuses` `{"status", "in_reply_to_id", "visibility"}` with
`Idempotency-Key: <key>`: Mastodon answers the same status for the same key (within an hour),
so posting again after a lost answer cannot make a second one. The mention is what addresses
the reply (a direct status reaches only whom it mentions), so it is put in front unless the text
already has it. Access tokens do not expire and cannot be refreshed: one the instance refuses
needs a new one from the operator.
"""

import re
from datetime import datetime

import httpx

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
from services.outbound.platforms.wire import (
    body_of,
    html_to_text,
    mapping,
    not_before,
    parse_time,
    read,
    same_text,
    seconds_until_iso,
    send,
    words,
)
from shared.commands import ReplyMethod
from shared.events import Platform

_MENTION = re.compile(r"(?<![\w@/])@[\w.-]+(?:@[\w-]+(?:\.[\w-]+)+)?", re.UNICODE)


def mentions(text: str, acct: str) -> bool:
    """The text already mentions the account `acct` (`user` or `user@host`)."""
    wanted = "@" + acct.casefold()
    return any(found.rstrip(".-").casefold() == wanted for found in _MENTION.findall(text))


def status_text(text: str, author_handle: str) -> str:
    """The status as sent: `@acct ` in front unless the text mentions the author already."""
    acct = author_handle.strip().lstrip("@")
    if not acct or mentions(text, acct):
        return text
    return f"@{acct} {text}"


class MastodonClient:
    platform = Platform.mastodon
    idempotent = True

    def __init__(self, *, timeout: httpx.Timeout = TIMEOUT) -> None:
        self.timeout = timeout

    def _http(self, credentials: Credentials) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=credentials.get("api_base_url").rstrip("/"),
            timeout=self.timeout,
            headers={"authorization": f"Bearer {credentials.get('access_token')}"},
        )

    async def post(self, outgoing: Outgoing, credentials: Credentials) -> Posted:
        if outgoing.method is not ReplyMethod.status:
            raise Refused(f"Mastodon replies are statuses, not {outgoing.method.value}")
        target = outgoing.target
        context = target.context
        visibility = (context.visibility if context is not None else None) or "public"
        if visibility == "direct" and not target.author_handle.strip().lstrip("@"):
            raise Refused(
                "a direct reply reaches only whom it mentions, and the author's account is not known"
            )
        body = {
            "status": status_text(outgoing.text, target.author_handle),
            "in_reply_to_id": target.external_id,
            "visibility": visibility,
        }
        async with self._http(credentials) as http:
            request = http.build_request(
                "POST", "/api/v1/statuses", json=body, headers={"idempotency-key": outgoing.key}
            )
            response = await send(http, request, platform="Mastodon")
        if response.is_success:
            status = mapping(body_of(response))
            status_id = status.get("id")
            if isinstance(status_id, str) and status_id:
                url = status.get("url")
                return Posted(
                    platform_id=status_id,
                    url=url if isinstance(url, str) and url else None,
                    created_at=parse_time(status.get("created_at")),
                )
            raise Lost(f"Mastodon answered {response.status_code} without the status's id")
        status_code = response.status_code
        if status_code >= 500:
            raise Lost(f"Mastodon answered {status_code}: the status may have gone out")
        error = words(response, "error", "error_description")
        if status_code == 401:
            raise Refused(error, expired=True, status=status_code)
        if status_code == 429:
            reset = seconds_until_iso(response.headers.get("x-ratelimit-reset"))
            raise Refused(error, retry=True, retry_after=reset, status=status_code)
        raise Refused(error, status=status_code)

    async def find(self, outgoing: Outgoing, credentials: Credentials, since: datetime) -> Posted | None:
        """The brand's status in reply to the one answered, with this text, among its descendants."""
        target = outgoing.target
        brand = target.account_external_id
        if not brand:
            raise Unreadable("the Mastodon account's id is not known: its statuses cannot be told apart")
        async with self._http(credentials) as http:
            request = http.build_request("GET", f"/api/v1/statuses/{target.external_id}/context")
            response = await read(http, request, platform="Mastodon")
        if not response.is_success:
            raise Unreadable(f"Mastodon answered {response.status_code}: {words(response, 'error')}")
        descendants = mapping(body_of(response)).get("descendants")
        if not isinstance(descendants, list):
            raise Unreadable("Mastodon's thread had no list of descendants")
        for status in descendants:
            status = mapping(status)
            created = parse_time(status.get("created_at"))
            if (
                mapping(status.get("account")).get("id") == brand
                and status.get("in_reply_to_id") == target.external_id
                and same_text(outgoing.text, html_to_text(str(status.get("content", ""))))
                and not_before(created, since)
            ):
                url = status.get("url")
                return Posted(
                    platform_id=str(status.get("id")),
                    url=url if isinstance(url, str) and url else None,
                    created_at=created,
                )
        return None

    async def refresh(self, credentials: Credentials) -> Credentials:
        raise CredentialsFailed(
            "the Mastodon instance refused the access token, and Mastodon tokens cannot be refreshed: "
            "give the account a new one (scope write:statuses)"
        )
