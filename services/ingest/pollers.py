"""Pollers: one task per connected account of a polled platform, inside ingest.

Each feed is walked forward from its stored cursor; a page's interactions are
stored in JetStream before the cursor moves past them, so a restart continues
with no gap, and a page fetched twice is deduplicated by message id. Errors back
off with jitter; a 429 waits what `Retry-After` says.
"""

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
from prometheus_client import Counter, Gauge
from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from services.ingest.connectors import bluesky, mastodon, youtube
from services.ingest.connectors.model import Parsed, to_event
from services.ingest.publisher import InteractionPublisher, RawPayload
from shared.db.core import ACCOUNTS, POLL_STATES, execute, fetch_rows
from shared.db.session import dialect_insert, transaction
from shared.events import ConnectorProblem, Platform, utcnow
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


@dataclass
class Poller:
    """What every poller shares: authenticated GETs, error mapping, storing a page's drafts."""

    account: PolledAccount
    http: httpx.AsyncClient
    publisher: InteractionPublisher
    store: PollStore

    async def poll_once(self) -> int:
        raise NotImplementedError

    def auth(self) -> tuple[dict[str, str], dict[str, str]]:
        """Headers and query parameters that authenticate a request."""
        return {"Authorization": f"Bearer {self.account.token}"}, {}

    async def get(self, path: str, params: dict[str, str | int]) -> httpx.Response:
        headers, extra = self.auth()
        response = await self.http.get(
            f"{self.account.api_base_url}{path}", params={**params, **extra}, headers=headers
        )
        platform = self.account.platform.value
        if response.status_code == 429:
            POLLS.labels(platform, "rate_limited").inc()
            raise RateLimited(retry_after_seconds(response.headers.get("retry-after"), now=utcnow()))
        if response.status_code >= 400:
            POLLS.labels(platform, "error").inc()
            raise PlatformError(response.status_code, response.text)
        POLLS.labels(platform, "ok").inc()
        return response

    async def store_drafts(self, parsed: Parsed, raw: bytes) -> int:
        received_at = utcnow()
        events = [
            to_event(
                draft,
                tenant_id=self.account.tenant_id,
                account_id=self.account.id,
                received_at=received_at,
                correlation_id="",
            )
            for draft in parsed.drafts
        ]
        if events:
            source = self.account.platform.value
            await self.publisher.publish_many(events, raw=RawPayload(source, raw, self.account.id))
        return len(events)

    async def walk_back(
        self,
        feed: str,
        fetch: Callable[[str | None], Awaitable[httpx.Response]],
        parse: Callable[[Any, str | None], tuple[Parsed, bool]],
        newest: Callable[[Any], str | None],
        next_cursor: Callable[[Any], str | None],
        max_pages: int = 20,
    ) -> int:
        """For APIs that answer newest first with no "since": page back to the high-water mark,
        store everything newer, then move the mark (so a crash re-reads, never skips)."""
        mark = await self.store.cursor(self.account.id, feed)
        cursor: str | None = None
        stored, top = 0, None
        for _ in range(max_pages):
            response = await fetch(cursor)
            page = response.json()
            parsed, reached = parse(page, mark)
            stored += await self.store_drafts(parsed, response.content)
            top = top or newest(page)
            cursor = next_cursor(page)
            if reached or not cursor or mark is None:  # a first poll takes only the newest page
                break
        if top is not None and (mark is None or top > mark):
            await self.store.record(self.account.id, feed, cursor=top, last_event_at=utcnow())
        return stored


@dataclass
class MastodonPoller(Poller):
    async def poll_once(self) -> int:
        """Walk both feeds forward with `min_id` up to now."""
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
                response = await self.get(*path_of(cursor))
                page = response.json()
                parsed: Parsed = parse(page, own_id=own, platform_account_id=own)
                stored += await self.store_drafts(parsed, response.content)
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


@dataclass
class BlueskyPoller(Poller):
    """The configured token is an app password; sessions come from createSession."""

    _session: str | None = None

    def auth(self) -> tuple[dict[str, str], dict[str, str]]:
        return {"Authorization": f"Bearer {self._session}"}, {}

    async def _login(self) -> None:
        response = await self.http.post(
            f"{self.account.api_base_url}/xrpc/com.atproto.server.createSession",
            json={"identifier": self.account.external_id, "password": self.account.token},
        )
        if response.status_code >= 400:
            raise PlatformError(response.status_code, response.text)
        self._session = str(response.json()["accessJwt"])

    async def poll_once(self) -> int:
        if self._session is None:
            await self._login()
        try:
            return await self._poll()
        except PlatformError as error:
            if not error.lasting:
                raise
            await self._login()  # the session expired: one new one, then the error stands
            return await self._poll()

    async def _poll(self) -> int:
        did = self.account.external_id
        stored = await self.walk_back(
            "notifications",
            lambda cursor: self.get(*bluesky.notifications_path(cursor=cursor)),
            lambda page, since: bluesky.parse_notifications(page, own_did=did, since=since),
            lambda page: bluesky.newest_indexed(page, "notifications"),
            lambda page: page.get("cursor"),
        )
        return stored + await self.walk_back(
            "own-posts",
            lambda cursor: self.get(*bluesky.author_feed_path(did=did, cursor=cursor)),
            lambda page, since: bluesky.parse_author_feed(page, own_did=did, since=since),
            lambda page: bluesky.newest_indexed(page, "feed"),
            lambda page: page.get("cursor"),
        )


@dataclass
class YouTubePoller(Poller):
    """The configured token is an API key; each call costs one unit of the daily quota."""

    def auth(self) -> tuple[dict[str, str], dict[str, str]]:
        return {}, {"key": self.account.token}

    async def poll_once(self) -> int:
        channel = self.account.external_id
        return await self.walk_back(
            "threads",
            lambda token: self.get(*youtube.threads_path(channel_id=channel, page_token=token)),
            lambda page, since: youtube.parse_threads(page, channel_id=channel, since=since),
            youtube.newest_update,
            lambda page: page.get("nextPageToken"),
        )


POLLERS: dict[Platform, type[Poller]] = {
    Platform.mastodon: MastodonPoller,
    Platform.bluesky: BlueskyPoller,
    Platform.youtube: YouTubePoller,
}


@dataclass
class PollerSupervisor:
    """Keeps one polling task per connected account, in step with the configuration."""

    sessions: async_sessionmaker[AsyncSession]
    publisher: InteractionPublisher
    box: SecretBox
    interval: float
    youtube_daily_quota: int = 10_000
    mastodon_streaming: bool = False
    max_backoff: float = 300.0
    refresh_every: float = 30.0

    def __post_init__(self) -> None:
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._http = httpx.AsyncClient(timeout=20)
        self._store = PollStore(self.sessions)
        self._runner: asyncio.Task[None] | None = None
        self._youtube_accounts = 0

    def interval_for(self, account: PolledAccount) -> float:
        """YouTube's daily quota (a unit a call) is shared by its channels: poll no faster than it allows."""
        if account.platform is Platform.youtube and self._youtube_accounts:
            return max(self.interval, 86_400 * self._youtube_accounts / self.youtube_daily_quota)
        return self.interval

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
                        self._tasks[account_id] = asyncio.create_task(self._run_account(account))
                known = accounts
                self._youtube_accounts = sum(1 for a in accounts.values() if a.platform is Platform.youtube)
            except Exception:
                log.exception("could not load the polled accounts")
            await asyncio.sleep(self.refresh_every)

    async def _report(self, account: PolledAccount, error: str) -> bool:
        """Tell the operator (through notify) that this connector keeps failing."""
        now = utcnow()
        problem = ConnectorProblem(
            tenant_id=account.tenant_id, account_id=account.id, platform=account.platform,
            problem="failing", detail=error[:2000], since=now,
        )  # fmt: skip
        try:
            await self.publisher.report(problem)
        except Exception:
            log.warning("could not report the failing connector", exc_info=True)
            return False
        return True

    async def _run_account(self, account: PolledAccount) -> None:
        """The account's poll loop, and its stream when the platform and settings have one."""
        wake = asyncio.Event()
        if account.platform is Platform.mastodon and self.mastodon_streaming:
            listener = asyncio.create_task(self._listen_mastodon(account, wake))
            try:
                await self._poll_forever(account, wake)
            finally:
                listener.cancel()
        else:
            await self._poll_forever(account, wake)

    async def _listen_mastodon(self, account: PolledAccount, wake: asyncio.Event) -> None:
        """Mastodon's streaming API (server-sent events): each notification, and each (re)connection,
        wakes the poller, which then reads the pages; so a gap while disconnected is backfilled."""
        errors = 0
        while True:
            try:
                async with self._http.stream(
                    "GET",
                    f"{account.api_base_url}/api/v1/streaming/user/notification",
                    headers={"Authorization": f"Bearer {account.token}"},
                    timeout=httpx.Timeout(10, read=None),
                ) as response:
                    if response.status_code >= 400:
                        raise PlatformError(response.status_code, "streaming refused")
                    errors = 0
                    wake.set()  # connected (again): read what may have come meanwhile
                    async for line in response.aiter_lines():
                        if line.startswith("event:") and line.partition(":")[2].strip() == "notification":
                            wake.set()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                errors += 1
                log.info(
                    "stream interrupted; reconnecting",
                    extra={"account_id": account.id, "error": str(error)[:200]},
                )
            await asyncio.sleep(backoff(errors, base=1.0, maximum=self.max_backoff))

    async def _poll_forever(self, account: PolledAccount, wake: asyncio.Event) -> None:
        poller = POLLERS[account.platform](account, self._http, self.publisher, self._store)
        await asyncio.sleep(random.uniform(0, min(self.interval, 5.0)))
        errors = 0
        reported = False  # one operator alert per failure episode
        while True:
            wake.clear()  # what arrives while polling wakes the next poll
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
                if failing and not reported:
                    reported = await self._report(account, str(error))
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
            reported = False
            CONNECTOR_FAILING.labels(account.id, account.platform.value).set(0)
            await self._store.record(
                account.id, "health", state="ok", consecutive_errors=0, last_success_at=utcnow()
            )
            if stored:
                log.info("polled", extra={"account_id": account.id, "stored": stored})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout=self.interval_for(account))
