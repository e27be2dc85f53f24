"""SQLAlchemy Core access to the tables, for the hot paths that write thousands of rows a second.

Building ORM objects costs more than the database does at that rate; services
use these tables and helpers with plain dictionaries instead.
"""

import functools
import operator
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from sqlalchemy import Table, insert
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.db import models
from shared.db.types import UtcDateTime


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


# (table, dialect class, columns) -> (SQL, the columns in the order of its parameters, the
# positions whose values a column type converts first); None where SQLAlchemy must do it all
_INSERTS: dict[
    tuple[str, type, tuple[str, ...]], tuple[str, tuple[str, ...], tuple[tuple[int, Any], ...]] | None
] = {}


def _insert_plan(
    table: Table, dialect: Any, columns: tuple[str, ...]
) -> tuple[str, tuple[str, ...], tuple[tuple[int, Any], ...]] | None:
    key = (table.name, type(dialect), columns)
    if key not in _INSERTS:
        compiled: Any = insert(table).compile(dialect=dialect, column_keys=list(columns))
        order = compiled.positiontup
        if compiled.insert_prefetch or not order or set(order) != set(columns):
            _INSERTS[key] = None  # a default computed in Python, or named parameters
        else:
            convert = dict(compiled._bind_processors)
            if dialect.name == "sqlite":
                for name in order:
                    if isinstance(table.c[name].type, UtcDateTime):
                        convert[name] = UtcDateTime.sqlite_text
            steps = tuple((i, convert[name]) for i, name in enumerate(order) if name in convert)
            _INSERTS[key] = (compiled.string, tuple(order), steps)
    return _INSERTS[key]


async def insert_many(session: AsyncSession, table: Table, rows: list[dict[str, Any]]) -> None:
    """Insert rows (each with the same columns) in one executemany, each value converted by its
    column's type once and the rows handed to the driver as tuples. SQLAlchemy's executemany
    builds and processes a dictionary of parameters for every row, which cost more than the
    insert itself for the router's hundreds of rows a batch."""
    if not rows:
        return
    connection = await session.connection()
    plan = _insert_plan(table, connection.dialect, tuple(rows[0]))
    if plan is None:
        await connection.execute(insert(table), rows)
        return
    sql, order, steps = plan
    await connection.exec_driver_sql(sql, _converted(([row[name] for name in order] for row in rows), steps))


async def insert_objects(
    session: AsyncSession, table: Table, objects: Sequence[Any], columns: Sequence[str]
) -> None:
    """`insert_many` for objects with an attribute for each of `columns` (dataclasses): their
    values are read in one step each, without a dictionary per row."""
    if not objects:
        return
    connection = await session.connection()
    plan = _insert_plan(table, connection.dialect, tuple(columns))
    if plan is None:
        await connection.execute(
            insert(table), [{name: getattr(o, name) for name in columns} for o in objects]
        )
        return
    sql, order, steps = plan
    read = _reader(order)
    await connection.exec_driver_sql(sql, _converted((list(read(o)) for o in objects), steps))


@functools.lru_cache(maxsize=64)
def _reader(order: tuple[str, ...]) -> Callable[[Any], tuple[Any, ...]]:
    return operator.attrgetter(*order) if len(order) > 1 else lambda o: (getattr(o, order[0]),)


def _converted(rows: Iterable[list[Any]], steps: tuple[tuple[int, Any], ...]) -> list[tuple[Any, ...]]:
    params = []
    for values in rows:
        for index, convert in steps:
            values[index] = convert(values[index])
        params.append(tuple(values))
    return params


async def fetch_rows(session: AsyncSession, statement: Any) -> Sequence[Any]:
    connection = await session.connection()
    return (await connection.execute(statement)).all()


async def execute(session: AsyncSession, statement: Any, params: list[dict[str, Any]] | None = None) -> Any:
    """Run one statement; with `params`, as executemany (a no-op for an empty list)."""
    if params is not None and not params:
        return None
    connection = await session.connection()
    return await connection.execute(statement, params) if params else await connection.execute(statement)
