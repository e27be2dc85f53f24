import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import nats
import pytest
from nats.aio.client import Client
from sqlalchemy.engine import make_url

from shared.db.migrate import upgrade
from stayhuman.natsserver import EmbeddedNats

POSTGRES_URL = os.environ.get("STAYHUMAN_TEST_POSTGRES_URL")


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[EmbeddedNats]:
    """A real nats-server (the pinned binary) with JetStream on a free port and a fresh store."""
    server = EmbeddedNats(tmp_path / "nats").start()
    yield server
    server.stop()


@pytest.fixture
async def nc(nats_server: EmbeddedNats) -> AsyncIterator[Client]:
    client = await nats.connect(nats_server.url)
    yield client
    await client.drain()


async def _create_postgres_database() -> str:
    assert POSTGRES_URL is not None
    base = make_url(POSTGRES_URL)
    name = f"sh_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(
        host=base.host,
        port=base.port or 5432,
        user=base.username,
        password=base.password,
        database=base.database or "postgres",
    )
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return base.set(drivername="postgresql+asyncpg", database=name).render_as_string(hide_password=False)


async def _drop_postgres_database(url: str) -> None:
    target = make_url(url)
    admin = await asyncpg.connect(
        host=target.host,
        port=target.port or 5432,
        user=target.username,
        password=target.password,
        database=make_url(POSTGRES_URL or "").database or "postgres",
    )
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{target.database}" WITH (FORCE)')
    finally:
        await admin.close()


def _postgres_required() -> None:
    if POSTGRES_URL:
        return
    if os.environ.get("CI"):
        pytest.fail("STAYHUMAN_TEST_POSTGRES_URL must be set in CI: the PostgreSQL tests may not be skipped")
    pytest.skip(
        "STAYHUMAN_TEST_POSTGRES_URL is not set: the PostgreSQL variants are not run (.ci/run sets it)"
    )


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh, empty database of each kind StayHuman supports."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'stayhuman.db'}"
        return
    _postgres_required()
    url = await _create_postgres_database()
    yield url
    await _drop_postgres_database(url)


@pytest.fixture
async def database_url(empty_database_url: str) -> str:
    """A fresh database, migrated to the current schema."""
    await asyncio.to_thread(upgrade, empty_database_url)
    return empty_database_url


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    """A fresh, empty PostgreSQL database (for tests that are about PostgreSQL)."""
    _postgres_required()
    url = await _create_postgres_database()
    yield url
    await _drop_postgres_database(url)
