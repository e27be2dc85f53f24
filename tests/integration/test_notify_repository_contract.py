"""The SQL repository (SQLite; PostgreSQL when STAYHUMAN_TEST_POSTGRES_URL is set) and the
in-memory one behave the same: one scenario through notify's service against each, the
outcomes compared (messages sent, events, timers armed)."""

from dataclasses import replace
from datetime import timedelta
from typing import Any

from sqlalchemy import insert, update

from services.notify.chain import Chain
from services.notify.memory import MemoryRepository
from services.notify.ports import ContextWanted, NotifyRepository
from services.notify.sql import SqlRepository
from shared import ids
from shared.commands import Acknowledge
from shared.db.models import ConversationRow
from shared.db.session import create_engine, session_factory, transaction
from stayhuman.config import apply_config, parse_config
from tests.helpers import config_yaml
from tests.notify_world import T0, World, context, deadline, events_of, fired

C1, C2, C3, C4, C5, C6 = "1" * 32, "2" * 32, "3" * 32, "4" * 32, "5" * 32, "6" * 32
VERSIONS = {C1: 3, C2: 1, C3: 1, C4: 1, C6: 1}  # each conversation's deadline version at the router


def ack(version: int, command_id: str, tenant: str = "acme") -> Acknowledge:
    return Acknowledge(
        tenant_id=tenant, conversation_id=C1, deadline_version=version, person_id="maria",
        command_id=command_id, issued_by="maria", issued_at=T0,
    )  # fmt: skip


async def scenario(repository: NotifyRepository) -> list[Any]:
    said: list[Any] = []
    world = World(repository, max_attempts=2, group_window=timedelta(seconds=60), group_after=1)
    service = world.service
    # arm, move to a newer version, ignore an older one
    await service.deadlines_changed([deadline(C1, 1, T0 + timedelta(minutes=30))])
    await service.deadlines_changed([deadline(C1, 3, T0)])
    await service.deadlines_changed([deadline(C1, 2, T0 + timedelta(minutes=5))])
    said.append((await repository.deadlines([C1]))[C1])
    # storing gives back what is current, with the chain: a redelivery or an older version leaves
    # the stored one; a conversation the router has not written yet has the default chain
    stored = await repository.store_deadlines(
        [deadline(C1, 3, T0 + timedelta(hours=1)), deadline(C1, 2, T0), deadline(C5, 1, T0)], now=T0
    )
    said.append(sorted((cid, c.deadline, c.chain) for cid, c in stored.items()))
    said.append(sorted((await repository.current([C1, C5, "7" * 32])).items()))
    # fire and claim once (a stale timer of version 1 sends nothing)
    said.append(events_of(await world.fire(fired(C1, 1))))
    said.append(events_of(await world.fire(fired(C1, 3))))
    said.append(events_of(await world.fire(fired(C1, 3))))
    # retry then give up (out of the burst window of the alert above)
    world.clock.at = T0 + timedelta(minutes=2)
    world.email.failing = True
    await service.deadlines_changed([deadline(C2, 1, T0)])
    said.append(events_of(await world.fire(fired(C2, 1))))
    world.clock.at = T0 + timedelta(minutes=5)
    retried = await world.fire(world.scheduler.armed[-1])
    said.append((events_of(retried), [(d.subject, d.error) for d in retried.dead_letters]))
    world.email.failing = False
    # a burst: after the first alert in the window, the rest wait for one digest
    world.clock.at = T0 + timedelta(minutes=10)
    await service.deadlines_changed([deadline(C3, 1, T0), deadline(C4, 1, T0)])
    said.append(events_of(await world.fire(fired(C3, 1))))
    said.append(events_of(await world.fire(fired(C4, 1))))
    world.clock.at = T0 + timedelta(minutes=11)
    said.append(events_of(await service.window_ended("maria", "email")))
    # acknowledge: another tenant naming the conversation (unknown, nothing written), the current
    # version, an outdated one, twice, and the same command again
    commands = (ack(3, "cmd00009", "globex"), ack(3, "cmd00001"), ack(2, "cmd00002"), ack(3, "cmd00003"))
    for command in (*commands, ack(3, "cmd00001")):
        outcome, published = await service.acknowledge(command)
        said.append((outcome, events_of(published)))
    # a batch, as the timer consumer hands it over: a stale timer, one already sent, a new one
    # twice (sent once), one with no conversation (skipped)
    world.clock.at = T0 + timedelta(minutes=20)
    await service.deadlines_changed([deadline(C6, 1, T0)])
    batch = await service.timers_fired([fired(C1, 1), fired(C6, 1), fired(C1, 3), fired(C6, 1), fired(C5, 1)])
    said.append([(o.retry_in, o.then is not None) for o in batch])
    for o in batch:
        if o.then is not None:
            said.append(events_of(await service.send(o.then)))
    said.append([(m.subject, m.key, [r.email for r in m.to]) for m in world.email.sent])
    said.append(
        [(t.conversation_id, t.deadline_version, t.step, t.attempt, t.at) for t in world.scheduler.armed]
    )
    said.append(world.scheduler.groups)
    return said


def memory() -> MemoryRepository:
    people = {p: replace(r, name=f"Person {p}") for p, r in context(C1).people.items()}
    contexts = {
        c: replace(
            context(c),
            tenant_name="Tenant acme",
            account_handle="Brand",
            owner=people["maria"],
            team=[people["li"], people["maria"]],
            people=people,
        )
        for c in VERSIONS
    }
    return MemoryRepository(conversations=contexts, waiting=dict(VERSIONS))


async def sql(database_url: str) -> SqlRepository:
    sessions = session_factory(create_engine(database_url))
    text = config_yaml(tenant="acme", account="acme-fb", secret="s" * 20, people=["li", "maria"])
    await apply_config(sessions, parse_config(text, source="t.yaml"), source="t.yaml")
    async with transaction(sessions) as session:
        connection = await session.connection()
        for cid, version in VERSIONS.items():
            await connection.execute(
                insert(ConversationRow.__table__).values(  # type: ignore[attr-defined]
                    id=cid, tenant_id="acme", account_id="acme-fb", platform="facebook", thread_id=cid,
                    state="open", team_id="care", owner_id="maria", assignment_reason="test", author_id="u1",
                    author_name="Dana Reyes", last_inbound_text="Where is my order?",
                    last_inbound_url="https://facebook.example/p/1", opened_at=T0, assigned_at=T0,
                    awaiting_since=T0, last_inbound_at=T0, deadline_version=version, due_at=T0, updated_at=T0,
                )
            )  # fmt: skip
    return SqlRepository(sessions)


async def test_the_sql_and_the_memory_repository_give_the_same_outcomes(database_url: str) -> None:
    expected = await scenario(memory())
    got = await scenario(await sql(database_url))
    for index, (one, other) in enumerate(zip(got, expected, strict=True)):
        assert one == other, index


async def test_contexts_read_for_a_batch_are_each_conversations_own(database_url: str) -> None:
    repository = await sql(database_url)
    try:
        async with transaction(repository.sessions) as session:
            connection = await session.connection()
            table = ConversationRow.__table__  # type: ignore[attr-defined]
            care = ids.team_id(tenant_id="acme", slug="care")
            await connection.execute(update(table).where(table.c.id == C1).values(team_id=care))
            await connection.execute(
                update(table).where(table.c.id == C2).values(owner_id="li", team_id=None)
            )
        wanted = [ContextWanted(c, v, T0, Chain()) for c, v in VERSIONS.items()]
        wanted += [ContextWanted(C5, 1, T0, Chain()), ContextWanted(C1, 2, T0, Chain())]

        together = await repository.overdue_contexts(wanted)
        alone = [(await repository.overdue_contexts([w]))[0] for w in wanted]
    finally:
        await repository.sessions.kw["bind"].dispose()

    assert together == alone
    first, second = together[0], together[1]
    assert first is not None and second is not None
    assert (
        first.owner is not None
        and first.owner.id == "maria"
        and {p.id for p in first.team} == {"li", "maria"}
    )
    assert second.owner is not None and second.owner.id == "li" and second.team == []
    assert "maria" not in second.people  # nobody of the other conversation's team
    assert together[-2] is None  # no such conversation
    assert together[-1] is not None and not together[-1].still_waiting  # an older version
