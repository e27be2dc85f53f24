"""Silence: an account that falls far below its usual rate is as broken as a failing one.

Nobody sees what is not ingested; an expired webhook subscription fails silently.
The decision is pure; the watch compares each account's last day with its week.
"""

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from services.ingest.publisher import InteractionPublisher
from shared.db.core import ACCOUNTS, INTERACTIONS, fetch_rows
from shared.events import ConnectorProblem, Platform, utcnow

log = logging.getLogger(__name__)


def is_silent(*, last_day: int, previous_week: int, floor_per_day: int = 24, ratio: float = 0.1) -> bool:
    """Far below the usual rate: under a tenth of the week's daily average, for accounts that
    usually hear at least once an hour (quiet accounts are quiet, not broken)."""
    usual = previous_week / 7
    return usual >= floor_per_day and last_day < usual * ratio


@dataclass
class SilenceWatch:
    sessions: async_sessionmaker[AsyncSession]
    publisher: InteractionPublisher
    every: float = 600.0
    _reported: set[str] = field(default_factory=set)  # one alert per episode

    async def check(self, now: datetime | None = None) -> list[str]:
        now = now or utcnow()
        day, week = now - timedelta(days=1), now - timedelta(days=8)
        async with self.sessions() as session:
            rows = await fetch_rows(
                session,
                select(
                    ACCOUNTS.c.id,
                    ACCOUNTS.c.tenant_id,
                    ACCOUNTS.c.platform,
                    func.count().filter(INTERACTIONS.c.received_at >= day),
                    func.count().filter(INTERACTIONS.c.received_at < day),
                )
                .join(INTERACTIONS, INTERACTIONS.c.account_id == ACCOUNTS.c.id)
                .where(INTERACTIONS.c.received_at >= week)
                .group_by(ACCOUNTS.c.id, ACCOUNTS.c.tenant_id, ACCOUNTS.c.platform),
            )
        silent = []
        for account_id, tenant_id, platform, last_day, previous_week in rows:
            if not is_silent(last_day=last_day, previous_week=previous_week):
                self._reported.discard(account_id)
                continue
            silent.append(account_id)
            if account_id in self._reported:
                continue
            await self.publisher.report(
                ConnectorProblem(
                    tenant_id=tenant_id, account_id=account_id, platform=Platform(platform), problem="silent",
                    detail=f"{last_day} interactions in the last day against about {previous_week // 7} a day the week before",
                    since=now,
                )
            )  # fmt: skip
            self._reported.add(account_id)
        return silent

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            try:
                await self.check()
            except Exception:
                log.warning("silence check failed", exc_info=True)
