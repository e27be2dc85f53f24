"""Migrations as the Kubernetes Job runs them: `stayhuman migrate`, on each database."""

import asyncio
import os
import subprocess
import sys

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import column, insert, select, table, text

from shared.db.core import TENANTS
from shared.db.migrate import alembic_config, current_revision, head_revision, upgrade
from shared.db.session import create_engine, session_factory, transaction
from shared.db.types import UtcDateTime
from shared.events import utcnow


def migrate_job(database_url: str) -> subprocess.CompletedProcess[str]:
    """The migration Job's container command, with its environment."""
    return subprocess.run(
        [sys.executable, "-m", "stayhuman", "migrate"],
        env={**os.environ, "STAYHUMAN_DATABASE_URL": database_url},
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip


async def test_the_job_migrates_an_empty_database(empty_database_url: str) -> None:
    result = await asyncio.to_thread(migrate_job, empty_database_url)
    assert f"database schema at revision {head_revision()}" in result.stdout
    assert await current_revision(empty_database_url) == head_revision()
    again = await asyncio.to_thread(migrate_job, empty_database_url)  # every deploy runs it
    assert again.returncode == 0


async def test_the_job_upgrades_from_the_previous_revision_keeping_data(empty_database_url: str) -> None:
    head = ScriptDirectory.from_config(alembic_config(empty_database_url)).get_revision(head_revision())
    assert head is not None and isinstance(head.down_revision, str)
    await asyncio.to_thread(upgrade, empty_database_url, head.down_revision)
    engine = create_engine(empty_database_url)
    async with transaction(session_factory(engine)) as session:
        connection = await session.connection()
        await connection.execute(
            # the previous revision's columns only (the model's newer ones are not there yet)
            insert(
                table(
                    "tenant",
                    column("id"),
                    column("name"),
                    column("created_at", UtcDateTime()),
                    column("updated_at", UtcDateTime()),
                )
            ).values(id="acme", name="Acme", created_at=utcnow(), updated_at=utcnow())
        )
    await asyncio.to_thread(migrate_job, empty_database_url)
    assert await current_revision(empty_database_url) == head_revision()
    async with engine.connect() as connection:
        assert (await connection.execute(select(TENANTS.c.name))).scalars().all() == ["Acme"]
        # the schema is the current one: the newest tables and columns are there and usable
        assert (await connection.execute(text("SELECT count(*) FROM deadline"))).scalar() == 0
        assert (await connection.execute(text("SELECT count(external_id) FROM account"))).scalar() == 0
    await engine.dispose()


@pytest.mark.parametrize("empty_database_url", ["postgres"], indirect=True)  # SQLite does not compress
async def test_on_postgresql_the_outbox_is_compressed_with_lz4_and_a_downgrade_undoes_it(
    empty_database_url: str,
) -> None:
    """A unit of work writes its messages to the outbox as one value of about a megabyte:
    PostgreSQL's default compression (pglz) took as long as the unit's other writes."""
    await asyncio.to_thread(migrate_job, empty_database_url)
    query = text(
        "SELECT attcompression::text, attstorage::text FROM pg_attribute "
        "WHERE attrelid = 'outboxbatch'::regclass AND attname = 'messages'"
    )
    engine = create_engine(empty_database_url)
    try:
        async with engine.connect() as connection:
            assert tuple((await connection.execute(query)).one()) == ("l", "x")
        await asyncio.to_thread(command.downgrade, alembic_config(empty_database_url), "0021")
        async with engine.connect() as connection:
            assert tuple((await connection.execute(query)).one()) == ("", "x")
    finally:
        await engine.dispose()
