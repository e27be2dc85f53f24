"""What every answer of the API carries to keep a browser safe, and two helpers for what people
wrote elsewhere: links from platforms, and cells of a CSV export.

The headers are set on every response unless the route set its own: the JSON API answers with
a policy that lets a browser load nothing from it (`default-src 'none'`), and a page of HTML
widens that for itself by setting `Content-Security-Policy` on its response. Answers under
/api/ are never stored by a browser or a proxy (`Cache-Control: no-store`): they name
people and what customers wrote.
"""

from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Nothing loads from a JSON answer, nothing frames it, and a form on it posts only here.
API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"

HEADERS: tuple[tuple[str, str], ...] = (
    ("content-security-policy", API_CSP),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("x-frame-options", "DENY"),
)
API_PREFIX = "/api/"


class SecurityHeaders:
    """ASGI middleware: adds each header of `HEADERS` that the response does not already have,
    and `Cache-Control: no-store` to answers under /api/ that say nothing of caching."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        api = str(scope.get("path", "")).startswith(API_PREFIX)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                wanted = [*HEADERS, *((("cache-control", "no-store"),) if api else ())]
                for name, value in wanted:
                    if name.encode() not in present:
                        headers.append((name.encode(), value.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def install_security_headers(app: Starlette) -> None:
    """Every response of `app` (a FastAPI app) gets the security headers."""
    app.add_middleware(SecurityHeaders)


MAX_URL = 2048


def safe_url(url: object) -> str | None:
    """The URL if a person may safely follow it: http or https, with a host, no spaces or control
    characters; anything else (javascript:, data:, a relative path, garbage) is None.

    Platform links come from what platforms (and webhook senders) send, so they are shown
    only after this check."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL:
        return None
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F or ch == "\\" for ch in url):
        return None
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 -- a port that is not a number raises here
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not host:
        return None
    return url


# A spreadsheet takes a cell starting with one of these as a formula (the fullwidth forms too).
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\uff1d", "\uff0b", "\uff0d", "\uff20")


def csv_cell(value: str) -> str:
    """A cell of a CSV export that a spreadsheet shows as text: one that would start a formula
    (= + - @, a tab or carriage return) gets a single quote in front."""
    return f"'{value}" if value.startswith(_FORMULA_STARTS) else value
