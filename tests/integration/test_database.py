"""Schema, time zones, uniqueness and `apply`, on SQLite and on PostgreSQL."""

import asyncio
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from shared.db.migrate import current_revision, head_revision, upgrade
from shared.db.models import (
    AccountRow,
    InteractionRow,
    PersonRow,
    SlaPolicyRow,
    TeamMemberRow,
    TeamRow,
    TenantRow,
)
from shared.db.session import create_engine, session_factory, transaction
from stayhuman.config import ConfigError, apply_config, parse_config
from tests.helpers import config_yaml, unique


async def test_migrate_from_empty_reaches_head_and_is_repeatable(empty_database_url: str) -> None:
    await asyncio.to_thread(upgrade, empty_database_url)
    await asyncio.to_thread(upgrade, empty_database_url)
    assert await current_revision(empty_database_url) == head_revision()


async def test_timestamps_come_back_aware_in_utc(database_url: str) -> None:
    engine = create_engine(database_url)
    sessions = session_factory(engine)
    local = datetime(2026, 11, 26, 12, 30, tzinfo=timezone(timedelta(hours=2)))
    async with transaction(sessions) as session:
        session.add(PersonRow(id="maria", name="Maria", email="m@example.com", last_assigned_at=local))
    async with sessions() as session:
        person = (await session.exec(select(PersonRow))).one()
    await engine.dispose()
    assert person.last_assigned_at == local
    assert person.last_assigned_at is not None and person.last_assigned_at.tzinfo == UTC
    assert person.created_at.tzinfo == UTC


async def test_an_interaction_is_stored_once(database_url: str) -> None:
    engine = create_engine(database_url)
    sessions = session_factory(engine)
    document = parse_config(
        config_yaml(tenant="acme", account="acme-fb", secret="s" * 20, people=["maria"]), source="t.yaml"
    )
    await apply_config(sessions, document, source="t.yaml")

    def row(row_id: str) -> InteractionRow:
        now = datetime.now(UTC)
        return InteractionRow(
            id=row_id,
            tenant_id="acme",
            account_id="acme-fb",
            external_id="m1",
            edit_version=0,
            kind="comment",
            direction="inbound",
            thread_id="p1",
            author_id="u1",
            text="hi",
            created_at=now,
            received_at=now,
        )

    async with transaction(sessions) as session:
        session.add(row("a" * 32))
    with pytest.raises(IntegrityError):
        async with transaction(sessions) as session:
            session.add(row("b" * 32))  # same tenant, account, platform id and edit
    await engine.dispose()


async def _counts(sessions) -> dict[str, int]:  # type: ignore[no-untyped-def]
    async with sessions() as session:
        return {
            model.__name__: len((await session.exec(select(model))).all())
            for model in (TenantRow, PersonRow, TeamRow, TeamMemberRow, SlaPolicyRow, AccountRow)
        }


async def test_apply_is_idempotent_and_updates(database_url: str) -> None:
    engine = create_engine(database_url)
    sessions = session_factory(engine)
    tenant = unique("t")
    text = config_yaml(tenant=tenant, account=f"{tenant}-fb", secret="s" * 20, people=["maria", "li"])
    first = await apply_config(sessions, parse_config(text, source="a.yaml"), source="a.yaml")
    assert first.created == {
        "SLA policies": 1,
        "accounts": 1,
        "people": 2,
        "team memberships": 2,
        "teams": 1,
        "tenants": 1,
    }
    counts = await _counts(sessions)
    again = await apply_config(sessions, parse_config(text, source="a.yaml"), source="a.yaml")
    assert again.created == {} and again.updated == {}
    assert await _counts(sessions) == counts
    changed = text.replace("first_response: 30m", "first_response: 45s").replace(
        "members: [maria, li]", "members: [li]"
    )
    summary = await apply_config(sessions, parse_config(changed, source="a.yaml"), source="a.yaml")
    assert str(summary).startswith(
        "created nothing; updated 1 SLA policy; removed 1 team membership; queued 1 command for the router"
    )
    async with sessions() as session:
        policy = (await session.exec(select(SlaPolicyRow).where(SlaPolicyRow.tenant_id == tenant))).one()
        members = (await session.exec(select(TeamMemberRow.person_id))).all()
    await engine.dispose()
    assert policy.first_response_seconds == 45
    assert members == ["li"]


async def test_an_invalid_file_changes_nothing(database_url: str) -> None:
    engine = create_engine(database_url)
    sessions = session_factory(engine)
    good = config_yaml(tenant="acme", account="acme-fb", secret="s" * 20, people=["maria"])
    await apply_config(sessions, parse_config(good, source="a.yaml"), source="a.yaml")
    before = await _counts(sessions)
    bad = good.replace("name: Person maria", "name: Maria Changed").replace(
        "members: [maria]", "members: [ghost]"
    )
    with pytest.raises(ConfigError, match="no person 'ghost'"):
        await apply_config(sessions, parse_config(bad, source="b.yaml"), source="b.yaml")
    async with sessions() as session:
        maria = (await session.exec(select(PersonRow).where(PersonRow.id == "maria"))).one()
    assert await _counts(sessions) == before
    assert maria.name == "Person maria"
    await engine.dispose()


async def test_account_ids_are_unique_across_tenants(database_url: str) -> None:
    engine = create_engine(database_url)
    sessions = session_factory(engine)
    one = config_yaml(tenant="one", account="shared-id", secret="s" * 20, people=["maria"])
    two = config_yaml(tenant="two", account="shared-id", secret="s" * 20, people=["maria"])
    await apply_config(sessions, parse_config(one, source="one.yaml"), source="one.yaml")
    with pytest.raises(ConfigError, match="belongs to tenant 'one'"):
        await apply_config(sessions, parse_config(two, source="two.yaml"), source="two.yaml")
    async with sessions() as session:
        assert (await session.exec(select(TenantRow.id))).all() == ["one"]
    await engine.dispose()


async def test_webhook_secrets_are_stored_sealed(database_url: str, tmp_path: Path) -> None:
    from shared.secrets import SecretBox, new_key

    engine = create_engine(database_url)
    sessions = session_factory(engine)
    box = SecretBox(new_key())
    text = config_yaml(tenant="acme", account="acme-fb", secret="plain-webhook-secret-xyz", people=["maria"])
    await apply_config(sessions, parse_config(text, source="a.yaml"), source="a.yaml", box=box)
    async with sessions() as session:
        stored = (await session.exec(select(AccountRow.webhook_secret))).one()
    again = await apply_config(sessions, parse_config(text, source="a.yaml"), source="a.yaml", box=box)
    await engine.dispose()
    assert "plain-webhook-secret-xyz" not in stored and box.open(stored) == "plain-webhook-secret-xyz"
    assert again.updated == {}  # the same secret is not sealed again


async def test_an_account_without_a_webhook_secret_is_stored_with_an_empty_one(database_url: str) -> None:
    """An empty stored secret means: no generic webhook for this account (ingest answers as for an
    unknown one)."""
    from shared.secrets import SecretBox, new_key

    engine = create_engine(database_url)
    sessions = session_factory(engine)
    box = SecretBox(new_key())
    with_secret = config_yaml(
        tenant="acme", account="acme-fb", secret="plain-webhook-secret-xyz", people=["maria"]
    )
    without = with_secret.replace("        webhook_secret: plain-webhook-secret-xyz\n", "")
    await apply_config(sessions, parse_config(with_secret, source="a.yaml"), source="a.yaml", box=box)
    dropped = await apply_config(sessions, parse_config(without, source="a.yaml"), source="a.yaml", box=box)
    again = await apply_config(sessions, parse_config(without, source="a.yaml"), source="a.yaml", box=box)
    async with sessions() as session:
        stored = (await session.exec(select(AccountRow.webhook_secret))).one()
    await engine.dispose()
    assert dropped.updated == {"accounts": 1} and again.updated == {}
    assert stored == ""


async def test_sqlite_checkpoints_rarely_and_the_router_keeps_its_pages_in_memory(tmp_path: Path) -> None:
    """A checkpoint per 10,000 pages of log, and a 32 MB page cache for the router's connections
    (a writer: `exclusive_writes`), where SQLite's defaults are 1,000 pages and 2 MB; the other
    services' connections keep the default cache."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'pragmas.db'}"
    found = {}
    for writer in (True, False):
        engine = create_engine(url, exclusive_writes=writer)
        try:
            async with engine.connect() as connection:
                found[writer] = [
                    (await connection.exec_driver_sql(f"PRAGMA {name}")).scalar()
                    for name in ("wal_autocheckpoint", "cache_size")
                ]
        finally:
            await engine.dispose()
    assert found == {True: [10_000, -32_768], False: [10_000, -2000]}
