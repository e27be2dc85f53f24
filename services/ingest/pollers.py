"""Pollers: one task per connected account of a polled platform, inside ingest.

Each feed is walked from its stored cursor; a page's interactions are stored in
JetStream before the cursor moves past them, so a restart continues with no gap,
and a page fetched twice is deduplicated by message id. An item that cannot be
stored goes to the dead letter alone and the cursor moves past it. Errors back
off with jitter; a 429 waits what `Retry-After` says. Across ingest replicas, a
lease per account (services/ingest/leases.py) lets one replica poll it.
"""

import asyncio
import contextlib
import logging
import random
import time
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
from services.ingest.connectors.feeds import Mark, Walk, load_page
from services.ingest.connectors.model import MalformedPayload, Parsed, to_events
from services.ingest.leases import Leases
from services.ingest.publisher import InteractionPublisher, RawPayload
from shared.db.core import ACCOUNTS, POLL_STATES, execute, fetch_rows
from shared.db.session import dialect_insert, transaction
from shared.events import ConnectorProblem, InteractionReceived, InteractionRetracted, Platform, utcnow
from shared.secrets import SecretBox

log = logging.getLogger(__name__)

POLLS = Counter("stayhuman_poller_requests_total", "Platform API requests by pollers", ["platform", "result"])
REJECTED = Counter(
    "stayhuman_poller_rejected_total",
    "Polled items that cannot be stored (kept on the dead letter)",
    ["platform"],
)
CONNECTOR_FAILING = Gauge(
    "stayhuman_connector_failing",
    "1 while an account's connector keeps failing",
    ["account", "platform"],
    multiprocess_mode="livemostrecent",  # set by the worker that holds the account's lease
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


class LeaseLost(Exception):
    """Another replica polls this account now: this poller must not publish or move a cursor."""


def _always() -> bool:
    return True


@dataclass(frozen=True)
class NewestFirst:
    """A feed that answers newest first with a token to older pages and no "since"."""

    name: str  # the poll_state feed
    fetch: Callable[[str | None], Awaitable[httpx.Response]]
    parse: Callable[[Any, Walk], Parsed]
    items: str  # the page's list of items
    next_page: str  # the page's token to the next (older) page
    page_size: int


@dataclass
class Poller:
    """What every poller shares: authenticated GETs, error mapping, storing a page."""

    account: PolledAccount
    http: httpx.AsyncClient
    publisher: InteractionPublisher
    store: PollStore
    holds: Callable[[], bool] = _always  # whether this replica still polls the account
    max_pages: int = 20

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

    def check_lease(self) -> None:
        if not self.holds():
            raise LeaseLost(f"account {self.account.id} is polled by another replica now")

    async def store_page(
        self, parsed: Parsed, raw: bytes
    ) -> list[InteractionReceived | InteractionRetracted]:
        """Store a page's interactions, with the page in the archive and the items that cannot
        be stored on the dead letter; the interactions stored."""
        tenant, account = self.account.tenant_id, self.account.id
        events, refused, _ = to_events(
            parsed.drafts, lambda _draft: (tenant, account), received_at=utcnow(), correlation_id=""
        )
        rejected = [*parsed.rejected, *refused]
        if events or rejected:
            self.check_lease()
            await self.publisher.publish_many(
                events, raw=RawPayload(self.account.platform.value, raw, account), rejected=rejected
            )
        if rejected:
            REJECTED.labels(self.account.platform.value).inc(len(rejected))
            log.warning(
                "items not stored",
                extra={"account_id": account, "count": len(rejected), "first": rejected[0].problem[:300]},
            )
        return events

    async def record(self, feed: str, **values: Any) -> None:
        self.check_lease()
        await self.store.record(self.account.id, feed, **values)

    async def walk_back(self, feed: NewestFirst) -> int:
        """Page back to the high-water mark, store everything newer, then move the mark (so a
        crash reads again, never skips). A first poll takes only the newest page."""
        cursor = await self.store.cursor(self.account.id, feed.name)
        walk = Walk(Mark.load(cursor), now=utcnow())
        token: str | None = None
        stored = 0
        for _ in range(self.max_pages):
            response = await feed.fetch(token)
            page = load_page(response.content)
            stored += len(await self.store_page(feed.parse(page, walk), response.content))
            items = len(page[feed.items])
            # A page shorter than asked for that reaches the mark's time is the last one,
            # whatever token it carries (YouTube gives one on its last page).
            if walk.reached or walk.first or not items or (items < feed.page_size and walk.at_mark):
                break
            token = page.get(feed.next_page)
            if token is None:
                break
            if not isinstance(token, str) or not 0 < len(token) <= 2048:
                raise MalformedPayload(f"{feed.next_page}: expected a page token")
        else:
            log.warning(
                "paged back as far as a poll goes without reaching the mark: older items are skipped",
                extra={"account_id": self.account.id, "feed": feed.name, "pages": self.max_pages},
            )
        mark = walk.next_mark().dump()
        if mark != cursor:
            progress: dict[str, Any] = {"cursor": mark}
            if stored:
                progress["last_event_at"] = utcnow()
            await self.record(feed.name, **progress)
        return stored


@dataclass
class MastodonPoller(Poller):
    max_pages: int = 50

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
            if not mastodon.is_cursor(cursor):
                cursor = None
            for _ in range(self.max_pages):  # the next poll goes on from the cursor
                response = await self.get(*path_of(cursor))
                page = load_page(response.content)
                parsed: Parsed = parse(page, own_id=own, platform_account_id=own)
                newest = mastodon.newest_id(page)
                if page and newest is None:
                    raise MalformedPayload("no item of the page has an id")
                if newest is None or (cursor is not None and int(newest) <= int(cursor)):
                    break  # nothing after the cursor (a server that ignores min_id sends older pages)
                events = await self.store_page(parsed, response.content)
                stored += len(events)
                progress: dict[str, Any] = {"cursor": newest}
                latest = max(
                    (e.created_at for e in events if isinstance(e, InteractionReceived)), default=None
                )
                if latest is not None:
                    progress["last_event_at"] = latest
                await self.record(feed, **progress)  # only after JetStream's ack
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
        session = load_page(response.content)
        token = session.get("accessJwt") if isinstance(session, dict) else None
        if not isinstance(token, str) or not token:
            raise MalformedPayload("createSession: expected an object with an 'accessJwt'")
        self._session = token

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
        notifications = NewestFirst(
            "notifications",
            lambda cursor: self.get(*bluesky.notifications_path(cursor=cursor)),
            lambda page, walk: bluesky.parse_notifications(page, own_did=did, walk=walk),
            "notifications",
            "cursor",
            bluesky.PAGE,
        )
        own_posts = NewestFirst(
            "own-posts",
            lambda cursor: self.get(*bluesky.author_feed_path(did=did, cursor=cursor)),
            lambda page, walk: bluesky.parse_author_feed(page, own_did=did, walk=walk),
            "feed",
            "cursor",
            bluesky.PAGE,
        )
        return await self.walk_back(notifications) + await self.walk_back(own_posts)


@dataclass
class YouTubePoller(Poller):
    """The configured token is an API key; each call costs one unit of the daily quota."""

    def auth(self) -> tuple[dict[str, str], dict[str, str]]:
        return {}, {"key": self.account.token}

    async def poll_once(self) -> int:
        channel = self.account.external_id
        threads = NewestFirst(
            "threads",
            lambda token: self.get(*youtube.threads_path(channel_id=channel, page_token=token)),
            lambda page, walk: youtube.parse_threads(page, channel_id=channel, walk=walk),
            "items",
            "nextPageToken",
            youtube.PAGE,
        )
        return await self.walk_back(threads)


POLLERS: dict[Platform, type[Poller]] = {
    Platform.mastodon: MastodonPoller,
    Platform.bluesky: BlueskyPoller,
    Platform.youtube: YouTubePoller,
}


@dataclass
class PollerSupervisor:
    """Keeps one polling task per connected account, in step with the configuration; with
    `leases`, only for the accounts this replica holds the lease of (one poller per account
    across replicas)."""

    sessions: async_sessionmaker[AsyncSession]
    publisher: InteractionPublisher
    box: SecretBox
    interval: float
    youtube_daily_quota: int = 10_000
    mastodon_streaming: bool = False
    max_backoff: float = 300.0
    refresh_every: float = 30.0
    leases: Leases | None = None
    http: httpx.AsyncClient | None = None

    def __post_init__(self) -> None:
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._polled: dict[str, PolledAccount] = {}  # what each task was started with
        self._http = self.http or httpx.AsyncClient(timeout=20)
        self._store = PollStore(self.sessions)
        self._runner: asyncio.Task[None] | None = None
        self._youtube_accounts = 0

    def interval_for(self, account: PolledAccount) -> float:
        """YouTube's daily quota (a unit a call) is shared by its channels: poll no faster than it allows."""
        if account.platform is Platform.youtube and self._youtube_accounts:
            return max(self.interval, 86_400 * self._youtube_accounts / self.youtube_daily_quota)
        return self.interval

    @property
    def polling(self) -> set[str]:
        """The accounts this replica polls now."""
        return {account for account, task in self._tasks.items() if not task.done()}

    def start(self) -> None:
        self._runner = asyncio.create_task(self._keep_in_step(), name="pollers")

    async def stop(self) -> None:
        """Stop polling, then give the leases up so another replica goes on at once."""
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)
        await self._stop_tasks(list(self._tasks))
        if self.leases is not None and self.leases.held():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.leases.release(self.leases.held()), timeout=5)
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

    async def _declare_leases(self, leases: Leases) -> None:
        delay = 1.0
        while True:
            try:
                await leases.declare()
                return
            except Exception:
                log.exception("could not declare the poll lease bucket; retrying", extra={"retry_in": delay})
            await asyncio.sleep(delay)
            delay = min(30.0, delay * 2)

    async def _keep_in_step(self) -> None:
        if self.leases is not None:
            await self._declare_leases(self.leases)
        accounts: dict[str, PolledAccount] = {}
        next_load = 0.0
        while True:
            if time.monotonic() >= next_load:
                next_load = time.monotonic() + self.refresh_every
                try:
                    accounts = {account.id: account for account in await self._accounts()}
                    self._youtube_accounts = sum(
                        1 for a in accounts.values() if a.platform is Platform.youtube
                    )
                except Exception:
                    log.exception("could not load the polled accounts")
            try:
                await self._step(accounts)
            except Exception:
                log.exception("could not keep the pollers in step")
            await asyncio.sleep(self.leases.every if self.leases is not None else self.refresh_every)

    async def _step(self, accounts: dict[str, PolledAccount]) -> None:
        """Poll exactly the configured accounts whose lease this replica holds."""
        held = set(accounts) if self.leases is None else await self.leases.keep(accounts) & set(accounts)
        for account_id, task in list(self._tasks.items()):
            if task.done() and not task.cancelled() and task.exception() is not None:
                log.error("poller stopped", exc_info=task.exception(), extra={"account_id": account_id})
        await self._stop_tasks(
            [
                account_id
                for account_id, task in self._tasks.items()
                if task.done()
                or account_id not in held
                or accounts.get(account_id) != self._polled[account_id]
            ]
        )
        if self.leases is not None:  # accounts no longer configured
            await self.leases.release(self.leases.held() - set(accounts))
        for account_id in sorted(held - set(self._tasks)):
            log.info("polling the account", extra={"account_id": account_id})
            account = accounts[account_id]
            self._polled[account_id] = account
            self._tasks[account_id] = asyncio.create_task(
                self._run_account(account), name=f"poll-{account_id}"
            )

    async def _stop_tasks(self, account_ids: list[str]) -> None:
        """Cancel these pollers and wait until they have stopped (before a lease is let go)."""
        tasks = [self._tasks.pop(account_id) for account_id in account_ids]
        for account_id in account_ids:
            self._polled.pop(account_id, None)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _holds(self, account: PolledAccount) -> Callable[[], bool]:
        leases = self.leases
        return _always if leases is None else lambda: leases.holds(account.id)

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
        poller = POLLERS[account.platform](
            account, self._http, self.publisher, self._store, self._holds(account)
        )
        await asyncio.sleep(random.uniform(0, min(self.interval, 5.0)))
        errors = 0
        reported = False  # one operator alert per failure episode
        while True:
            wake.clear()  # what arrives while polling wakes the next poll
            if not poller.holds():
                return  # the lease ran out: the supervisor stops this task, or starts it again
            try:
                stored = await poller.poll_once()
            except asyncio.CancelledError:
                raise
            except LeaseLost:
                log.info("another replica polls this account now", extra={"account_id": account.id})
                return
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
