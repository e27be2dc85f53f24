"""One request to a platform, and what the way it failed says about the reply.

A request that never reached the platform (no connection, no free connection, a URL that
cannot be sent) is `Refused`: nothing went out. One that failed after it was sent (a read
timeout, a dropped connection) is `Lost`: the platform may have taken it. Reading back
(`find`) turns both into `Unreadable`. The helpers below are shared by the X, Mastodon,
Bluesky and webhook clients.
"""

import html
import json
import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from services.outbound.platforms.base import Credentials, Lost, Refused, Unreadable

# The platform's clock and ours differ a little; a reply found this long before `since` is
# still the one sent (the same text, to the same message, by the brand).
CLOCK_SKEW = timedelta(minutes=2)
MAX_ERROR = 500  # characters of a platform's error kept

_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.ProxyError)
_CANNOT_SEND = (httpx.UnsupportedProtocol, httpx.LocalProtocolError)
_URL = re.compile(r"https?://\S+", re.IGNORECASE)
_LEADING_MENTIONS = re.compile(r"^(?:@[\w.@-]+(?:\s+|$))+")
_REMOTE_MENTION = re.compile(r"(?<![\w@])@([\w.-]+)@[\w-]+(?:\.[\w-]+)+")
_BREAK = re.compile(r"<br\s*/?>|</p>\s*<p[^<>]*>", re.IGNORECASE)
_TAG = re.compile(r"<[^<>]+>")


def _describe(error: Exception) -> str:
    return str(error) or type(error).__name__


async def send(http: httpx.AsyncClient, request: httpx.Request, *, platform: str) -> httpx.Response:
    """Send a write; what failed before it was sent is `Refused`, what failed after is `Lost`."""
    try:
        return await http.send(request)
    except _NOT_SENT as error:
        raise Refused(f"{platform} could not be reached: {_describe(error)}", retry=True) from None
    except _CANNOT_SEND as error:
        raise Refused(f"{platform}: the request could not be sent: {_describe(error)}") from None
    except httpx.HTTPError as error:
        raise Lost(f"{platform} did not answer: {_describe(error)}") from None


async def read(http: httpx.AsyncClient, request: httpx.Request, *, platform: str) -> httpx.Response:
    """Send a read for `find`: any failure to get an answer is `Unreadable`."""
    try:
        return await http.send(request)
    except httpx.HTTPError as error:
        raise Unreadable(f"{platform} could not be read: {_describe(error)}") from None


def body_of(response: httpx.Response) -> Any:
    """The answer's JSON, or None when it is not JSON."""
    try:
        return json.loads(response.content)
    except ValueError:
        return None


def endpoint(credentials: Credentials, default: str, path: str) -> str:
    """The address of `path` on the platform: the credentials' `api_base_url`, else the platform's own."""
    base = credentials.values.get("api_base_url") or default
    return f"{str(base).rstrip('/')}/{path}"


def bearer(token: str) -> dict[str, str]:
    """The token in the Authorization header (never in a URL, which logs would keep)."""
    return {"Authorization": f"Bearer {token}"}


def json_of(response: httpx.Response) -> dict[str, Any]:
    """The response's JSON object ({} when it is none)."""
    return mapping(body_of(response))


def listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def words(response: httpx.Response, *keys: str) -> str:
    """The platform's own words for an error: the first of `keys` its JSON answer has, else the
    start of the body, else the HTTP status."""
    document = mapping(body_of(response))
    for key in keys:
        value = document.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()[:MAX_ERROR]
    text = response.text.strip()
    return text[:MAX_ERROR] if text else f"HTTP {response.status_code}"


def seconds_until(epoch: str | None, *, now: float | None = None) -> float | None:
    """Seconds from now to a reset time given in epoch seconds (X, Bluesky), or None."""
    try:
        reset = float(epoch) if epoch is not None else None
    except ValueError:
        return None
    if reset is None:
        return None
    return max(0.0, reset - (time.time() if now is None else now))


def seconds_until_iso(moment: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds from now to a reset time given as ISO 8601 (Mastodon), or None."""
    when = parse_time(moment)
    if when is None:
        return None
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def retry_after(response: httpx.Response) -> float | None:
    """A `Retry-After` in seconds, when the answer has one."""
    value = response.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def parse_time(value: Any) -> datetime | None:
    """An ISO 8601 time the platform gave (`Z` or an offset), in UTC; None when it is not one."""
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def html_to_text(markup: str) -> str:
    """Plain text out of a Mastodon status's HTML."""
    return html.unescape(_TAG.sub("", _BREAK.sub("\n", markup))).strip()


def comparable(text: str) -> str:
    """A reply's text as a platform may show it back: the mentions a platform puts in front
    dropped, `@user@host` as `@user` (how Mastodon shows it), links (which X shortens) left
    out, white space collapsed."""
    text = _LEADING_MENTIONS.sub("", text.strip())
    text = _REMOTE_MENTION.sub(r"@\1", text)
    text = _URL.sub("", text)
    return " ".join(text.split())


def same_text(sent: str, found: str) -> bool:
    """The text found on the platform is the one sent, as shown there (X escapes `&<>` in a
    post's text, a DM's text is as written: either way matches)."""
    wanted = comparable(sent)
    return wanted == comparable(found) or wanted == comparable(html.unescape(found))


def not_before(moment: datetime | None, since: datetime) -> bool:
    """The platform's time of a post is at or after `since`, give or take the clocks' skew
    (a post without a time is taken as recent: the read itself asked for recent posts)."""
    return moment is None or moment >= since - CLOCK_SKEW


class HttpHolder:
    """An HTTP client given (tests, a shared pool) or opened on first use with `timeout`, and
    closed by `aclose` only when it was opened here."""

    def __init__(self, http: httpx.AsyncClient | None, timeout: httpx.Timeout) -> None:
        self._http = http
        self._timeout = timeout
        self._own: httpx.AsyncClient | None = None

    async def aclose(self) -> None:
        if self._own is not None:
            await self._own.aclose()
            self._own = None

    def _client(self) -> httpx.AsyncClient:
        if self._http is not None:
            return self._http
        if self._own is None:
            self._own = httpx.AsyncClient(timeout=self._timeout)
        return self._own
