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


ACCOUNTS = _table(models.Account)
ALERTS = _table(models.Alert)
API_TOKENS = _table(models.ApiToken)
CALENDARS = _table(models.Calendar)
CONTINUITY = _table(models.Continuity)
CONVERSATIONS = _table(models.Conversation)
DELIVERIES = _table(models.Delivery)
DEADLINES = _table(models.Deadline)
INTERACTIONS = _table(models.Interaction)
MEMBERS = _table(models.TeamMember)
OUTBOX = _table(models.OutboxBatch)
PEOPLE = _table(models.Person)
PROCESSED_COMMANDS = _table(models.ProcessedCommand)
PUSH_LINKS = _table(models.PushLink)
PUSH_SUBSCRIPTIONS = _table(models.PushSubscription)
POLICIES = _table(models.SlaPolicy)
POLL_STATES = _table(models.PollState)
TEAMS = _table(models.Team)
TENANTS = _table(models.Tenant)
TOPICS = _table(models.Topic)


async def fetch_rows(session: AsyncSession, statement: Any) -> Sequence[Any]:
    connection = await session.connection()
    return (await connection.execute(statement)).all()


async def execute(session: AsyncSession, statement: Any, params: list[dict[str, Any]] | None = None) -> Any:
    """Run one statement; with `params`, as executemany (a no-op for an empty list)."""
    if params is not None and not params:
        return None
    connection = await session.connection()
    return await connection.execute(statement, params) if params else await connection.execute(statement)
