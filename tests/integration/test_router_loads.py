"""People's loads change in one statement, each only within its bounds, or not at all."""

from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import select

from services.router.conversations import random_id
from services.router.ports import LoadConflict
from services.router.sql import SqlRepository
from shared.db.models import PersonRow
from shared.db.session import create_engine, session_factory
from stayhuman.config import apply_config, parse_config

CONFIG = """
people:
  - {id: maria, name: Maria, email: maria@example.com, capacity: 2}
  - {id: li, name: Li, email: li@example.com, capacity: 1}
  - {id: sam, name: Sam, email: sam@example.com, capacity: 5}
tenants:
  - id: acme
    name: Acme
    sla_policies: [{name: standard, first_response: 30m}]
    teams: [{id: care, name: Care, sla_policy: standard, members: [maria, li, sam]}]
    accounts:
      - {id: acme-fb, platform: facebook, handle: Acme, team: care, webhook_secret: secret-0123456789abcdef}
"""
NOW = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


async def test_loads_move_together_within_bounds_or_not_at_all(database_url: str) -> None:
    engine = create_engine(database_url)
    sessions = session_factory(engine)
    repository = SqlRepository(sessions)

    async def save(deltas: dict[str, int]) -> None:
        async with repository.unit_of_work() as uow:
            world = await uow.load_world(
                now=NOW,
                backfill_cutoff=timedelta(hours=24),
                new_id=random_id,
                account_ids={"acme-fb"},
                person_ids={"maria", "li", "sam"},
            )
            world.load_deltas.update(deltas)
            await uow.save_world(world)

    async def loads() -> dict[str, int]:
        async with sessions() as session:
            return {row.id: row.load for row in (await session.exec(select(PersonRow))).all()}

    try:
        await apply_config(sessions, parse_config(CONFIG, source="t.yaml"), source="t.yaml")
        await save({"maria": 2, "li": 1, "sam": 0})
        assert await loads() == {"maria": 2, "li": 1, "sam": 0}
        await save({"maria": -1, "sam": 3})
        assert await loads() == {"maria": 1, "li": 1, "sam": 3}
        # Li is at capacity: the whole change is refused, Maria's and Sam's parts too
        with pytest.raises(LoadConflict, match="li by 1"):
            await save({"maria": 1, "li": 1, "sam": -1})
        assert await loads() == {"maria": 1, "li": 1, "sam": 3}
        # nobody goes below zero either
        with pytest.raises(LoadConflict):
            await save({"maria": -2, "sam": 1})
        assert await loads() == {"maria": 1, "li": 1, "sam": 3}
    finally:
        await engine.dispose()
