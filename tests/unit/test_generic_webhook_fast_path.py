"""The generic webhook is answered ahead of FastAPI when tracing is off, and by its FastAPI
route when tracing is on: both give the same answer, byte for byte, to every kind of request."""

import asyncio
import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from nats.errors import TimeoutError as NatsTimeoutError

from services.ingest.publisher import RawPayload
from shared.events import InteractionReceived
from tests.helpers import eventually, generic_body, sign
from tests.ingest_fakes import GENERIC_SECRET, TOKEN, Client, KeepingPublisher, ingest_app

TRACED = {"otel_endpoint": "http://collector.invalid:4318/v1/traces"}


class Unavailable(KeepingPublisher):
    """A JetStream that does not acknowledge."""

    async def publish(self, event: InteractionReceived, *, raw: RawPayload | None = None) -> bool:
        raise NatsTimeoutError


@pytest.fixture(scope="module", params=["fast path", "FastAPI route"])
def client(request: pytest.FixtureRequest) -> Iterator[Client]:
    app = ingest_app(
        KeepingPublisher(), max_body_bytes=4096, **(TRACED if request.param != "fast path" else {})
    )
    running = Client(app)
    yield running
    running.close()


def _signed(body: bytes, **headers: str) -> dict[str, str]:
    return {"Content-Type": "application/json", "X-Signature-256": sign(GENERIC_SECRET, body), **headers}


def _post(client: Client, body: bytes, headers: dict[str, str], account: str = "acme-fb") -> httpx.Response:
    return client.request("POST", f"/webhooks/generic/{account}", content=body, headers=headers)


def _answer(response: httpx.Response) -> tuple[int, Any, list[tuple[str, str]]]:
    """Status, body and headers; a time of receipt in a problem is masked (each app has its own)."""
    content = re.sub(rb"received \([^)]*\)", b"received (...)", response.content)
    return response.status_code, content, sorted(response.headers.multi_items())


BODY = generic_body("fast-1")
INVALID = generic_body("fast-2", kind="tweet")
AHEAD = json.dumps({**json.loads(BODY), "created_at": "2999-01-01T00:00:00Z"}).encode()
CASES: dict[str, tuple[bytes, dict[str, str], str]] = {
    "accepted": (BODY, _signed(BODY, **{"X-Correlation-Id": "corr-1"}), "acme-fb"),
    "no signature": (BODY, {"X-Correlation-Id": "corr-2"}, "acme-fb"),
    "bad signature": (BODY, {"X-Signature-256": "sha256=" + "0" * 64}, "acme-fb"),
    "unknown account": (BODY, _signed(BODY), "nobody"),
    "account without a secret": (BODY, _signed(BODY), "acme-nosecret"),
    "not JSON": (b"{nope", _signed(b"{nope"), "acme-fb"),
    "invalid field": (INVALID, _signed(INVALID), "acme-fb"),
    "too far ahead": (AHEAD, _signed(AHEAD), "acme-fb"),
    "too large": (b"x" * 5000, _signed(b"x" * 5000), "acme-fb"),
}


def test_both_paths_give_the_same_answers() -> None:
    fast = Client(ingest_app(KeepingPublisher(), max_body_bytes=4096))
    routed = Client(ingest_app(KeepingPublisher(), max_body_bytes=4096, **TRACED))
    try:
        for name, (body, headers, account) in CASES.items():
            got = _answer(_post(fast, body, headers, account))
            want = _answer(_post(routed, body, headers, account))
            assert got == want, name
            assert got[0] < 500 and json.loads(got[1]), name
        assert _post(fast, *CASES["accepted"]).status_code == 202
        assert fast.request("GET", "/webhooks/generic/acme-fb").status_code == 405
        assert _answer(fast.request("GET", "/webhooks/generic/acme-fb")) == _answer(
            routed.request("GET", "/webhooks/generic/acme-fb")
        )
    finally:
        fast.close()
        routed.close()


def test_answers_name_what_happened(client: Client) -> None:
    body, headers, account = CASES["accepted"]
    accepted = _post(client, body, headers, account)
    assert accepted.status_code == 202
    assert accepted.headers["X-Correlation-Id"] == "corr-1"
    assert accepted.json() == {
        "status": "accepted",
        "interaction_id": accepted.json()["interaction_id"],
        "duplicate": False,
    }
    generated = _post(client, body, _signed(body), account)
    assert len(generated.headers["X-Correlation-Id"]) == 32
    for name in ("no signature", "bad signature", "unknown account", "account without a secret"):
        refused = _post(client, *CASES[name][:2], CASES[name][2])
        assert refused.status_code == 401, name
        assert "X-Correlation-Id" not in refused.headers
    unknown = _post(client, *CASES["unknown account"][:2], "nobody")
    assert _answer(unknown) == _answer(_post(client, *CASES["bad signature"][:2], "acme-fb"))
    assert _post(client, *CASES["not JSON"][:2]).status_code == 400
    invalid = _post(client, *CASES["invalid field"][:2]).json()
    assert invalid["error"] == "invalid interaction"
    assert "kind" in {problem["field"] for problem in invalid["problems"]}
    assert _post(client, *CASES["too large"][:2]).status_code == 413


@pytest.mark.parametrize("traced", [False, True])
def test_not_stored_is_503_with_retry_after(traced: bool) -> None:
    running = Client(ingest_app(Unavailable(), **(TRACED if traced else {})))
    try:
        response = _post(running, BODY, _signed(BODY))
    finally:
        running.close()
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert response.json() == {"error": "interaction not stored, retry later", "reason": "TimeoutError"}


def test_the_fast_path_skips_fastapi() -> None:
    app = ingest_app(KeepingPublisher())
    running = Client(app)
    try:
        assert _post(running, BODY, _signed(BODY)).status_code == 202
        assert app.middleware_stack is None  # FastAPI built nothing: it saw no request
        assert running.request("GET", "/healthz").status_code in (200, 503)
        assert app.middleware_stack is not None
    finally:
        running.close()


class Held(KeepingPublisher):
    """A JetStream that acknowledges only when released."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.waiting = 0

    async def publish(self, event: InteractionReceived, *, raw: RawPayload | None = None) -> bool:
        self.waiting += 1
        await self.release.wait()
        return await super().publish(event, raw=raw)


async def test_the_fast_path_and_the_other_routes_share_one_cap_on_work_at_once() -> None:
    publisher = Held()
    app = ingest_app(publisher, max_concurrent_requests=1)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ingest.test") as client:
        held = asyncio.create_task(
            client.post("/webhooks/generic/acme-fb", content=BODY, headers=_signed(BODY))
        )
        await eventually(lambda: _true(publisher.waiting == 1), timeout=5, interval=0.01, what="held")
        other = generic_body("fast-4")
        refused = await client.post("/webhooks/generic/acme-fb", content=other, headers=_signed(other))
        batch = await client.post(
            "/v1/interactions",
            content=b'{"interactions": []}',
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        )
        publisher.release.set()
        assert (await held).status_code == 202
        after = await client.post("/webhooks/generic/acme-fb", content=other, headers=_signed(other))
    for response in (refused, batch):
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "1"
        assert response.json() == {"error": "too many requests at once, retry later"}
    assert after.status_code == 202


async def _true(value: bool) -> bool:
    return value
