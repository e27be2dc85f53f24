"""Pollers: one task per connected account of a polled platform, inside ingest.

Each feed is walked forward from its stored cursor; a page's interactions are
stored in JetStream before the cursor moves past them, so a restart continues
with no gap, and a page fetched twice is deduplicated by message id. Errors back
off with jitter; a 429 waits what `Retry-After` says.
"""

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
from prometheus_client import Counter, Gauge
from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from services.ingest.connectors import mastodon
from services.ingest.connectors.model import Parsed, to_event
from services.ingest.publisher import InteractionPublisher, RawPayload
from shared.db.core import ACCOUNTS, POLL_STATES, execute, fetch_rows
from shared.db.session import dialect_insert, transaction
from shared.events import Platform, utcnow
from shared.secrets import SecretBox

log = logging.getLogger(__name__)

POLLS = Counter("stayhuman_poller_requests_total", "Platform API requests by pollers", ["platform", "result"])
CONNECTOR_FAILING = Gauge(
    "stayhuman_connector_failing", "1 while an account's connector keeps failing", ["account", "platform"]
)


class RateLimited(Exception):
    def __init__(self, retry_after: float | None) -> None:
        super().__init__(f"rate limited; retry after {retry_after}s")
        self.retry_after = retry_after


class PlatformError(Exception):
    """The platform answered with an error; `lasting` errors (401, 403) need a person."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"HTTP {status}: {text[:200]}")
        self.lasting = status in (401, 403)


def retry_after_seconds(value: str | None, *, now: datetime) -> float | None:
    """`Retry-After` is seconds or an HTTP date."""
    if not value:
        return None
    if value.strip().isdigit():
        return float(value)
    try:
        return max(0.0, (parsedate_to_datetime(value) - now).total_seconds())
    except (TypeError, ValueError):
        return None


def backoff(errors: int, *, base: float, maximum: float) -> float:
    """Exponential with full jitter, so failing accounts do not retry in step."""
    return random.uniform(base, min(maximum, base * 2**errors))


@dataclass(frozen=True)
class PolledAccount:
    id: str
    tenant_id: str
    platform: Platform
    external_id: str
    api_base_url: str
    token: str


@dataclass
class PollStore:
    sessions: async_sessionmaker[AsyncSession]

    async def cursor(self, account_id: str, feed: str) -> str | None:
        async with self.sessions() as session:
            rows = await fetch_rows(
                session,
                select(POLL_STATES.c.cursor).where(
                    POLL_STATES.c.account_id == account_id, POLL_STATES.c.feed == feed
                ),
            )
        return rows[0][0] if rows else None

    async def record(self, account_id: str, feed: str, **values: Any) -> None:
        values["updated_at"] = utcnow()
        async with transaction(self.sessions) as session:
            statement = dialect_insert(session, POLL_STATES).values(
                account_id=account_id, feed=feed, **values
            )
            await execute(
                session,
                statement.on_conflict_do_update(index_elements=["account_id", "feed"], set_=values),
            )


Fetch = Callable[[str, dict[str, str | int]], Any]


@dataclass
class MastodonPoller:
    account: PolledAccount
    http: httpx.AsyncClient
    publisher: InteractionPublisher
    store: PollStore

    async def poll_once(self) -> int:
        """Walk both feeds up to now; returns how many interactions were stored."""
        own = self.account.external_id
        feeds = (
            (
                "notifications",
                lambda cursor: mastodon.notifications_path(cursor=cursor),
                mastodon.parse_notifications,
            ),
            (
                "statuses",
                lambda cursor: mastodon.statuses_path(own_id=own, cursor=cursor),
                mastodon.parse_own_statuses,
            ),
        )
        stored = 0
        for feed, path_of, parse in feeds:
            cursor = await self.store.cursor(self.account.id, feed)
            while True:
                path, params = path_of(cursor)
                response = await self._get(path, params)
                page = response.json()
                parsed: Parsed = parse(page, own_id=own, platform_account_id=own)
                await self._store(parsed, response.content)
                stored += len(parsed.drafts)
                newest = mastodon.newest_id(page)
                if newest is None:
                    break
                latest = max((d.created_at for d in parsed.drafts), default=None)
                progress: dict[str, Any] = {"cursor": newest}
                if latest is not None:
                    progress["last_event_at"] = latest
                await self.store.record(self.account.id, feed, **progress)  # only after JetStream's ack
                cursor = newest
                if len(page) < mastodon.PAGE:
                    break
        return stored

    async def _get(self, path: str, params: dict[str, str | int]) -> httpx.Response:
        response = await self.http.get(
            f"{self.account.api_base_url}{path}",
            params=params,
            headers={"Authorization": f"Bearer {self.account.token}"},
        )
        if response.status_code == 429:
            POLLS.labels("mastodon", "rate_limited").inc()
            raise RateLimited(retry_after_seconds(response.headers.get("retry-after"), now=utcnow()))
        if response.status_code >= 400:
            POLLS.labels("mastodon", "error").inc()
            raise PlatformError(response.status_code, response.text)
        POLLS.labels("mastodon", "ok").inc()
        return response

    async def _store(self, parsed: Parsed, raw: bytes) -> None:
        received_at = utcnow()
        events = [
            to_event(draft, tenant_id=self.account.tenant_id, account_id=self.account.id,
                     received_at=received_at, correlation_id="")
            for draft in parsed.drafts
        ]  # fmt: skip
        if events:
            await self.publisher.publish_many(events, raw=RawPayload("mastodon", raw, self.account.id))


POLLERS = {Platform.mastodon: MastodonPoller}


@dataclass
class PollerSupervisor:
    """Keeps one polling task per connected account, in step with the configuration."""

    sessions: async_sessionmaker[AsyncSession]
    publisher: InteractionPublisher
    box: SecretBox
    interval: float
    max_backoff: float = 300.0
    refresh_every: float = 30.0

    def __post_init__(self) -> None:
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._http = httpx.AsyncClient(timeout=20)
        self._store = PollStore(self.sessions)
        self._runner: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._runner = asyncio.create_task(self._keep_in_step(), name="pollers")

    async def stop(self) -> None:
        tasks = [t for t in (self._runner, *self._tasks.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._http.aclose()

    async def _accounts(self) -> list[PolledAccount]:
        async with self.sessions() as session:
            rows = await fetch_rows(
                session,
                select(ACCOUNTS).where(
                    ACCOUNTS.c.platform.in_([p.value for p in POLLERS]), ACCOUNTS.c.credentials.is_not(None)
                ),
            )
        return [
            PolledAccount(
                id=row.id, tenant_id=row.tenant_id, platform=Platform(row.platform), external_id=row.external_id,
                api_base_url=row.api_base_url, token=self.box.open(row.credentials),
            )
            for row in rows
        ]  # fmt: skip

    async def _keep_in_step(self) -> None:
        known: dict[str, PolledAccount] = {}
        while True:
            try:
                accounts = {account.id: account for account in await self._accounts()}
                for account_id, task in list(self._tasks.items()):
                    if accounts.get(account_id) != known.get(account_id):
                        task.cancel()
                        del self._tasks[account_id]
                for account_id, account in accounts.items():
                    if account_id not in self._tasks:
                        self._tasks[account_id] = asyncio.create_task(self._poll_forever(account))
                known = accounts
            except Exception:
                log.exception("could not load the polled accounts")
            await asyncio.sleep(self.refresh_every)

    async def _poll_forever(self, account: PolledAccount) -> None:
        poller = POLLERS[account.platform](account, self._http, self.publisher, self._store)
        await asyncio.sleep(random.uniform(0, min(self.interval, 5.0)))
        errors = 0
        while True:
            try:
                stored = await poller.poll_once()
            except asyncio.CancelledError:
                raise
            except RateLimited as limited:
                wait = (
                    limited.retry_after
                    if limited.retry_after is not None
                    else backoff(errors + 1, base=self.interval, maximum=self.max_backoff)
                )
                log.warning("rate limited", extra={"account_id": account.id, "retry_in": wait})
                await asyncio.sleep(wait)
                continue
            except Exception as error:
                errors += 1
                lasting = isinstance(error, PlatformError) and error.lasting
                failing = lasting or errors >= 3
                CONNECTOR_FAILING.labels(account.id, account.platform.value).set(1 if failing else 0)
                await self._store.record(
                    account.id, "health", state="failing" if failing else "retrying",
                    consecutive_errors=errors, last_error=str(error)[:2000], last_error_at=utcnow(),
                )  # fmt: skip
                wait = (
                    self.max_backoff
                    if lasting
                    else backoff(errors, base=self.interval, maximum=self.max_backoff)
                )
                log.warning(
                    "poll failed",
                    extra={"account_id": account.id, "error": str(error)[:300], "retry_in": round(wait, 1)},
                )
                await asyncio.sleep(wait)
                continue
            errors = 0
            CONNECTOR_FAILING.labels(account.id, account.platform.value).set(0)
            await self._store.record(
                account.id, "health", state="ok", consecutive_errors=0, last_success_at=utcnow()
            )
            if stored:
                log.info("polled", extra={"account_id": account.id, "stored": stored})
            await asyncio.sleep(self.interval)
