"""Every service's statements on PostgreSQL are planned at each call, on the tables as they are
(`create_engine`): a generic plan kept from when a table was small (asyncpg prepares each
statement once per connection) made notify's escalation chains' lookup scan all of
`conversation` for every batch of deadlines, 1 to 2 s of PostgreSQL's CPU per 500 at 65,000
conversations."""

import uuid

import pytest
from sqlalchemy import text

from services.notify.sql import get_chains
from shared.db.session import create_engine, session_factory, transaction


@pytest.mark.parametrize("empty_database_url", ["postgres"], indirect=True)  # SQLite plans each anyway
async def test_the_chains_lookup_is_planned_at_each_call_on_postgresql(database_url: str) -> None:
    engine = create_engine(database_url)
    sessions = session_factory(engine)
    try:
        async with transaction(sessions) as session:
            for _ in range(8):  # past the five custom plans after which PostgreSQL may keep a generic one
                await get_chains(session=session, ids=[uuid.uuid4().hex for _ in range(50)])
            connection = await session.connection()
            mode = (await connection.execute(text("SHOW plan_cache_mode"))).scalar_one()
            plans = (
                await connection.execute(
                    text(
                        "SELECT generic_plans, custom_plans FROM pg_prepared_statements "
                        "WHERE statement LIKE 'SELECT conversation.id, tenant.escalation%'"
                    )
                )
            ).one()
        assert mode == "force_custom_plan"
        assert (plans.generic_plans, plans.custom_plans) == (0, 8)
    finally:
        await engine.dispose()


@pytest.mark.parametrize("empty_database_url", ["sqlite"], indirect=True)
async def test_sqlite_engines_take_no_such_setting(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        async with transaction(session_factory(engine)) as session:
            assert await get_chains(session=session, ids=["0" * 32]) == {}
    finally:
        await engine.dispose()
