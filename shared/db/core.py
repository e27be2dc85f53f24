"""SQLAlchemy Core access to the tables, for the hot paths that write thousands of rows a second.

Building ORM objects costs more than the database does at that rate; services
use these tables and helpers with plain dictionaries instead.
"""

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Table
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.db import models


def _table(model: type) -> Table:
    return model.__table__  # type: ignore[attr-defined]


ACCOUNTS = _table(models.AccountRow)
ALERTS = _table(models.AlertRow)
API_TOKENS = _table(models.ApiTokenRow)
CALENDARS = _table(models.CalendarRow)
CONTINUITY = _table(models.ContinuityRow)
CONVERSATIONS = _table(models.ConversationRow)
DELIVERIES = _table(models.DeliveryRow)
DEADLINES = _table(models.DeadlineRow)
INTERACTIONS = _table(models.InteractionRow)
MEMBERS = _table(models.TeamMemberRow)
OUTBOX = _table(models.OutboxBatchRow)
PEOPLE = _table(models.PersonRow)
PROCESSED_COMMANDS = _table(models.ProcessedCommandRow)
PUSH_LINKS = _table(models.PushLinkRow)
PUSH_SUBSCRIPTIONS = _table(models.PushSubscriptionRow)
POLICIES = _table(models.SlaPolicyRow)
POLL_STATES = _table(models.PollStateRow)
TEAMS = _table(models.TeamRow)
TENANTS = _table(models.TenantRow)
TOPICS = _table(models.TopicRow)


async def fetch_rows(session: AsyncSession, statement: Any) -> Sequence[Any]:
    connection = await session.connection()
    return (await connection.execute(statement)).all()


async def execute(session: AsyncSession, statement: Any, params: list[dict[str, Any]] | None = None) -> Any:
    """Run one statement; with `params`, as executemany (a no-op for an empty list)."""
    if params is not None and not params:
        return None
    connection = await session.connection()
    return await connection.execute(statement, params) if params else await connection.execute(statement)
