"""Ingest's ports as fakes, for in-process tests of its endpoints: the accounts and tokens it
knows, and a publisher that keeps what it would have stored (with the server's size limit)."""

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from fastapi import FastAPI

from services.ingest.accounts import AccountDirectory, AccountView, TokenDirectory, _Accounts
from services.ingest.connectors.model import Rejected
from services.ingest.main import create_app
from services.ingest.publisher import RawPayload
from services.ingest.settings import IngestSettings
from shared.events import INT64_MAX, InteractionReceived, InteractionRetracted, Platform
from shared.ids import token_sha256
from shared.jetstream import MessageTooLarge
from shared.secrets import SecretBox, new_key

Event = InteractionReceived | InteractionRetracted


class FixedAccounts(AccountDirectory):
    def __init__(
        self, accounts: Sequence[AccountView], box: SecretBox, platform_ids: dict[tuple[str, str], str]
    ) -> None:
        self._accounts = list(accounts)
        self._platform_ids = platform_ids
        self.loads = 0  # how often the table was read
        super().__init__(None, ttl_seconds=3600, box=box)  # type: ignore[arg-type]

    async def _load(self) -> Any:
        self.loads += 1
        by_id = {a.id: a for a in self._accounts}
        return _Accounts(by_id, {key: by_id[account] for key, account in self._platform_ids.items()})


class FixedTokens(TokenDirectory):
    def __init__(self, tokens: dict[str, str]) -> None:
        self._tokens = {token_sha256(token): tenant for token, tenant in tokens.items()}
        super().__init__(None, ttl_seconds=3600)  # type: ignore[arg-type]

    async def _load(self) -> dict[str, str]:
        return self._tokens


@dataclass
class KeepingPublisher:
    """What the real publisher would store, kept in lists; `max_payload` as a server's."""

    max_payload: int = 1024 * 1024
    events: list[Event] = field(default_factory=list)
    raw: list[RawPayload] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)

    def _size(self, event: Event) -> int:
        return len(event.model_dump_json()) + 200

    async def publish(self, event: InteractionReceived, *, raw: RawPayload | None = None) -> bool:
        if self._size(event) > self.max_payload:
            raise MessageTooLarge("too large")
        duplicate = any(e == event for e in self.events)
        self.events.append(event)
        if raw is not None:
            self.raw.append(raw)
        return duplicate

    async def publish_many(
        self,
        events: Sequence[Event],
        *,
        raw: RawPayload | None = None,
        rejected: Sequence[Rejected] = (),
        all_or_nothing: bool = False,
    ) -> list[Rejected]:
        kept = list(rejected)
        fits = []
        for index, event in enumerate(events):
            if self._size(event) <= self.max_payload:
                fits.append(event)
            elif all_or_nothing:
                raise MessageTooLarge(f"interactions[{index}]: too large")
            else:
                kept.append(Rejected(f"interaction[{index}]", "too large", b""))
        self.events += fits
        if raw is not None:
            self.raw.append(raw)
        self.rejected += kept
        return kept


META_SECRET = "shared-meta-app-secret"
X_SECRET = "shared-x-consumer-secret"
GENERIC_SECRET = "generic-secret-0123456789"
TOKEN = "importer-token-0123456789abcdef"


def ingest_app(publisher: KeepingPublisher, **settings: Any) -> FastAPI:
    """The real ingest app (routes, guard, error handlers) over fake ports."""
    box = SecretBox(new_key())
    app = create_app(
        IngestSettings(
            nats_url="nats://unused.invalid",
            database_url="sqlite+aiosqlite:///unused.db",
            secret_key=new_key(),
            meta_app_secret=META_SECRET,
            meta_verify_token="verify-token",
            x_consumer_secret=X_SECRET,
            **settings,
        )
    )
    accounts = [
        AccountView("acme-fb", "acme", Platform.facebook, box.seal(GENERIC_SECRET)),
        AccountView("acme-nosecret", "acme", Platform.facebook, None),
        AccountView("beta-fb", "beta", Platform.facebook, box.seal("beta-secret-0123456789")),
        AccountView("acme-page", "acme", Platform.facebook, None),
        AccountView("acme-ig", "acme", Platform.instagram, None),
        AccountView("acme-x", "acme", Platform.x, None),
    ]
    platform_ids = {  # the ids of the documented payloads in tests/fixtures/platforms
        ("facebook", "104857600000001"): "acme-page",
        ("instagram", "17841400000000001"): "acme-ig",
        ("x", "1500000000000000001"): "acme-x",
    }
    directory = FixedAccounts(accounts, box, platform_ids)
    app.state.accounts = directory
    app.state.tokens = FixedTokens({TOKEN: "acme"})
    app.state.publisher = publisher
    return app


class Client:
    """One event loop and one ASGI client for many requests (hypothesis runs examples synchronously)."""

    def __init__(self, app: FastAPI) -> None:
        self.loop = asyncio.new_event_loop()
        self.http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://ingest.test", timeout=30
        )

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return self.loop.run_until_complete(self.http.request(method, url, **kwargs))

    def close(self) -> None:
        self.loop.run_until_complete(self.http.aclose())
        self.loop.close()


def assert_storable(event: Event) -> None:
    """What every column behind an interaction holds (shared/db/models.py), and the clock."""
    assert len(event.external_id) <= 512 and len(event.thread_id) <= 512
    assert "\x00" not in event.external_id + event.thread_id
    if isinstance(event, InteractionRetracted):
        return
    assert 0 <= event.edit_version <= INT64_MAX
    assert len(event.author.id) <= 256 and len(event.author.name) <= 256 and len(event.author.handle) <= 256
    assert event.author.followers is None or 0 <= event.author.followers <= INT64_MAX
    assert "\x00" not in event.text
    event.text.encode("utf-8")  # no lone surrogates
    assert event.parent_id is None or len(event.parent_id) <= 512
    assert event.created_at <= datetime.now(UTC) + timedelta(hours=1, minutes=1)
    json.loads(event.model_dump_json())


def assert_clear_answer(response: httpx.Response) -> None:
    """Never a 5xx for what a sender got wrong; an error is JSON naming the problem."""
    assert response.status_code < 500, (response.status_code, response.text[:500])
    if response.status_code >= 400:
        body = response.json()
        assert isinstance(body, dict) and body.get("error"), body
