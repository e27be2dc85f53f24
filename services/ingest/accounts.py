"""Which accounts and API tokens exist and how they sign: the whole table, in memory.

Ingest answers requests from anyone on the internet, so a lookup must never cost a
database query that an outsider can choose: every account (and every token digest)
is held in memory and read again at most every `ttl_seconds`, once, whoever asks.
An id that does not exist is answered from memory like one that does.
"""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.db.core import ACCOUNTS, API_TOKENS, fetch_rows
from shared.events import Platform
from shared.ids import token_sha256
from shared.secrets import SecretBox

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class AccountView:
    id: str
    tenant_id: str
    platform: Platform
    sealed_secret: str | None  # None: the account takes no generic webhook


class Snapshot(Generic[T]):
    """A value loaded by `load`, loaded again at most every `ttl` seconds by one caller while the
    others keep the previous one; if loading fails, the previous one serves a little longer."""

    def __init__(self, load: Callable[[], Awaitable[T]], *, ttl: float, what: str) -> None:
        self._load = load
        self._ttl = ttl
        self._what = what
        self._value: T | None = None
        self._loaded_at = -float("inf")
        self._lock = asyncio.Lock()

    async def get(self) -> T:
        if self._value is not None and time.monotonic() - self._loaded_at < self._ttl:
            return self._value
        async with self._lock:
            if self._value is not None and time.monotonic() - self._loaded_at < self._ttl:
                return self._value
            try:
                self._value = await self._load()
            except Exception:
                if self._value is None:
                    raise
                log.warning("could not reload %s; using the last one", self._what, exc_info=True)
                self._loaded_at = time.monotonic() - self._ttl + min(1.0, self._ttl)
                return self._value
            self._loaded_at = time.monotonic()
            return self._value


@dataclass(frozen=True)
class _Accounts:
    by_id: dict[str, AccountView]
    by_platform_id: dict[tuple[str, str], AccountView]


class AccountDirectory:
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], *, ttl_seconds: float, box: SecretBox
    ) -> None:
        self._sessions = sessions
        self._box = box
        self._snapshot = Snapshot(self._load, ttl=ttl_seconds, what="accounts")
        self._opened: dict[str, str] = {}

    async def _load(self) -> _Accounts:
        columns = (ACCOUNTS.c.id, ACCOUNTS.c.tenant_id, ACCOUNTS.c.platform, ACCOUNTS.c.external_id)
        async with self._sessions() as session:
            rows = await fetch_rows(session, select(*columns, ACCOUNTS.c.webhook_secret))
        by_id: dict[str, AccountView] = {}
        by_platform_id: dict[tuple[str, str], AccountView] = {}
        for row in rows:
            view = AccountView(row.id, row.tenant_id, Platform(row.platform), row.webhook_secret or None)
            by_id[row.id] = view
            if row.external_id:
                by_platform_id[(row.platform, row.external_id)] = view
        sealed = {view.sealed_secret for view in by_id.values()}
        self._opened = {k: v for k, v in self._opened.items() if k in sealed}
        return _Accounts(by_id, by_platform_id)

    async def get(self, account_id: str) -> AccountView | None:
        """The account a StayHuman webhook URL names."""
        return (await self._snapshot.get()).by_id.get(account_id)

    async def by_platform_id(self, platform: Platform, external_id: str) -> AccountView | None:
        """The account a platform names by its own id (a page, an Instagram account, an X user)."""
        return (await self._snapshot.get()).by_platform_id.get((platform.value, external_id))

    def webhook_secret(self, account: AccountView) -> str | None:
        """The account's webhook secret, opened once and kept (opening costs more than a request)."""
        if account.sealed_secret is None:
            return None
        opened = self._opened.get(account.sealed_secret)
        if opened is None:
            opened = self._opened[account.sealed_secret] = self._box.open(account.sealed_secret)
        return opened


class TokenDirectory:
    """Which tenant a bearer token belongs to (only digests are stored, and held here)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], *, ttl_seconds: float) -> None:
        self._sessions = sessions
        self._snapshot = Snapshot(self._load, ttl=ttl_seconds, what="API tokens")

    async def _load(self) -> dict[str, str]:
        async with self._sessions() as session:
            # A revoked token, or one that may only read reports, submits nothing.
            rows = await fetch_rows(
                session,
                select(API_TOKENS.c.token_sha256, API_TOKENS.c.tenant_id).where(
                    API_TOKENS.c.revoked_at.is_(None), API_TOKENS.c.role == "tenant_admin"
                ),
            )
        return {row.token_sha256: row.tenant_id for row in rows}

    async def tenant_of(self, token: str) -> str | None:
        return (await self._snapshot.get()).get(token_sha256(token))
