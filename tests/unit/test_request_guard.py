"""The request guard: whole bodies within a time and a size before any work, a cap on work at once."""

import asyncio
import json
from collections.abc import MutableMapping
from typing import Any

import httpx

from services.ingest.guard import RequestGuard
from tests.helpers import eventually


class SlowApp:
    """An app whose requests wait until released, counting what reached it."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.bodies: list[bytes] = []

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        message = await receive()
        self.bodies.append(message["body"])
        await self.release.wait()
        await send({"type": "http.response.start", "status": 202, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})


def guarded(app: SlowApp, **options: Any) -> RequestGuard:
    settings = {"body_limit": lambda path: 100, "read_timeout": 0.5, "max_concurrent": 2, **options}
    return RequestGuard(app, **settings)


async def test_work_beyond_the_cap_is_refused_at_once_not_queued() -> None:
    app = SlowApp()
    transport = httpx.ASGITransport(app=guarded(app))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        held = [asyncio.create_task(client.post("/webhooks/x", content=b"{}")) for _ in range(2)]
        await eventually(lambda: _at_least(app.bodies, 2), timeout=5, interval=0.01, what="two requests held")
        refused = await asyncio.wait_for(client.post("/webhooks/x", content=b"{}"), timeout=1)
        app.release.set()
        answers = await asyncio.gather(*held)
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert refused.json() == {"error": "too many requests at once, retry later"}
    assert [a.status_code for a in answers] == [202, 202]


async def test_a_body_larger_than_the_limit_is_refused_declared_or_not() -> None:
    app = SlowApp()
    app.release.set()
    transport = httpx.ASGITransport(app=guarded(app))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        declared = await client.post("/webhooks/x", content=b"x" * 101)

        async def stream() -> Any:
            for _ in range(30):
                yield b"x" * 10

        chunked = await client.post("/webhooks/x", content=stream())
    assert declared.status_code == chunked.status_code == 413
    assert json.loads(declared.text) == {"error": "body larger than 100 bytes"}
    assert app.bodies == []


async def test_a_body_that_trickles_in_is_cut_off_without_taking_a_place() -> None:
    app = SlowApp()
    app.release.set()
    guard = guarded(app, read_timeout=0.3)
    sent: list[MutableMapping[str, Any]] = []

    async def trickle() -> dict[str, Any]:
        await asyncio.sleep(10)  # a client sending nothing more
        return {"type": "http.request", "body": b"x", "more_body": True}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "path": "/webhooks/x", "headers": [], "method": "POST"}
    await asyncio.wait_for(guard(scope, trickle, send), timeout=2)
    assert sent[0]["status"] == 408 and guard.in_flight == 0 and app.bodies == []
    assert json.loads(sent[1]["body"]) == {"error": "the body did not arrive within 0.3 s"}


async def _at_least(items: list[bytes], count: int) -> bool:
    return len(items) >= count
