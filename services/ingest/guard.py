"""What stands between the open internet and ingest's endpoints: bodies read in full, within
a time and a size, before any work is admitted; a cap on the work done at once.

A client that sends its body a byte at a time holds only a socket and a few bytes
while it lasts, and is cut off after `read_timeout`: it never takes one of the
`max_concurrent` places where requests are verified, parsed and stored. So with
thousands of slow clients connected, a platform's signed delivery is still read,
admitted and answered at once; and when the places are all taken, the answer is an
immediate 503 with `Retry-After`, which every platform retries, not a queue.
"""

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

from prometheus_client import Counter
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

REJECTED = Counter("stayhuman_ingest_rejected_total", "Webhook requests refused", ["status"])


class _TooLarge(Exception):
    pass


class _Gone(Exception):
    pass


async def _answer(
    send: Send, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> None:
    REJECTED.labels(str(status)).inc()
    payload = json.dumps(body).encode()
    raw_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    raw_headers += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": payload})


async def _read(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Gone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


class RequestGuard:
    """ASGI middleware: the whole body within `read_timeout` and `body_limit(path)` bytes, then
    one of `max_concurrent` places, or a JSON 408, 413 or 503 at once."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        body_limit: Callable[[str], int],
        read_timeout: float,
        max_concurrent: int,
        unguarded: frozenset[str] = frozenset({"/healthz"}),
    ) -> None:
        self.app = app
        self.body_limit = body_limit
        self.read_timeout = read_timeout
        self.max_concurrent = max_concurrent
        self.unguarded = unguarded
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.admit(self.app, scope, receive, send)

    def around(self, app: ASGIApp) -> ASGIApp:
        """`app` behind this guard: its requests take the same `max_concurrent` places (an
        app that sends some paths elsewhere keeps one cap on all of its work)."""

        async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
            await self.admit(app, scope, receive, send)

        return guarded

    async def admit(self, app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
        """Read the body within the limits, take a place, and let `app` answer."""
        if scope["type"] != "http" or scope["path"] in self.unguarded:
            await app(scope, receive, send)
            return
        limit = self.body_limit(scope["path"])
        declared = _declared_length(scope)
        if declared is not None and declared > limit:
            await _answer(send, 413, {"error": f"body larger than {limit} bytes"})
            return
        try:
            async with asyncio.timeout(self.read_timeout):
                body = await _read(receive, limit)
        except TimeoutError:
            await _answer(
                send,
                408,
                {"error": f"the body did not arrive within {self.read_timeout:g} s"},
                {"Connection": "close"},
            )
            return
        except _TooLarge:
            await _answer(send, 413, {"error": f"body larger than {limit} bytes"}, {"Connection": "close"})
            return
        except _Gone:
            return
        if self.in_flight >= self.max_concurrent:
            await _answer(
                send, 503, {"error": "too many requests at once, retry later"}, {"Retry-After": "1"}
            )
            return
        self.in_flight += 1
        try:
            await app(scope, _replay(body, receive), send)
        finally:
            self.in_flight -= 1


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that gives the body already read, then whatever the client does next."""
    given = False

    async def again() -> Message:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return again
