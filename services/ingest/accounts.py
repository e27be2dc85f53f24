"""Which accounts exist and how they sign: read from the database, cached briefly."""

import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.db.models import Account
from shared.events import Platform
from shared.secrets import SecretBox


@dataclass(frozen=True)
class AccountView:
    id: str
    tenant_id: str
    platform: Platform
    webhook_secret: str


class AccountDirectory:
    """A read-through cache, so a webhook costs no database round trip in the steady state."""

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], *, ttl_seconds: float, box: SecretBox
    ) -> None:
        self._sessions = sessions
        self._box = box
        self._ttl = ttl_seconds
        self._cache: dict[tuple[str, ...], tuple[float, AccountView | None]] = {}

    async def get(self, account_id: str) -> AccountView | None:
        """The account a StayHuman webhook URL names."""
        return await self._lookup((account_id,), lambda: Account.id == account_id)

    async def by_platform_id(self, platform: Platform, external_id: str) -> AccountView | None:
        """The account a platform names by its own id (a page, an Instagram account, an X user)."""
        return await self._lookup(
            (platform.value, external_id),
            lambda: (Account.platform == platform.value) & (Account.external_id == external_id),
        )

    async def _lookup(self, key: tuple[str, ...], condition: Callable[[], object]) -> AccountView | None:
        # The condition is built only on a cache miss: building it costs more than the hit.
        now = time.monotonic()
        cached = self._cache.get(key)
        if cached is not None and now - cached[0] < self._ttl:
            return cached[1]
        async with self._sessions() as session:
            row = (await session.exec(select(Account).where(condition()))).first()  # type: ignore[arg-type]
        view = (
            AccountView(
                id=row.id,
                tenant_id=row.tenant_id,
                platform=Platform(row.platform),
                webhook_secret=self._box.open(row.webhook_secret),
            )
            if row is not None
            else None
        )
        if len(self._cache) >= 10_000:  # unknown ids in URLs must not grow memory
            self._cache.clear()
        self._cache[key] = (now, view)
        return view
