"""The SQL repository and the in-memory one give the router's service the same answers.

The same scenario (interactions opening, joining, replying, reopening, retracting; commands
claiming, reassigning, pausing, resuming, resolving and setting a status, with capacities and
queues; a rejected command; a redelivered one) runs against each database and against the
in-memory repository seeded with the same configuration; the outcomes, serialized, are equal.
"""

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.router.conversations import random_id
from services.router.memory import MemoryRepository
from services.router.ports import CountingIds, Repository
from services.router.service import Router
from services.router.sql import SqlRepository
from shared import ids
from shared.commands import AnyCommand, Claim, Pause, Reassign, Resolve, Resume, SetStatus
from shared.db.models import ContinuityRow, InteractionRow
from shared.db.session import create_engine, session_factory
from shared.events import (
    Author,
    Direction,
    InteractionReceived,
    InteractionRetracted,
    Kind,
    Platform,
    Rejection,
    ReplyContext,
)
from stayhuman.config import apply_config, parse_config
from tests.unit.routing_world import serialized

CONFIG = """
people:
  - {id: maria, name: Maria, email: maria@example.com, capacity: 2}
  - {id: li, name: Li, email: li@example.com, capacity: 1}
  - {id: sam, name: Sam, email: sam@example.com, capacity: 5}
tenants:
  - id: acme
    name: Acme
    sla_policies: [{name: standard, first_response: 30m, next_response: 1h}]
    teams:
      - {id: care, name: Care, sla_policy: standard, members: [maria, li]}
      - {id: billing, name: Billing, sla_policy: standard, members: [sam]}
    accounts:
      - {id: acme-fb, platform: facebook, handle: Acme, team: care, webhook_secret: secret-0123456789abcdef}
  - id: kettle
    name: Kettle
    sla_policies: [{name: standard, first_response: 2h}]
    teams: [{id: care, name: Care, sla_policy: standard, members: [li]}]
    accounts:
      - {id: kettle-fb, platform: facebook, handle: Kettle, team: care, webhook_secret: secret-0123456789abcdef}
"""
# a fixed moment in the recent past: clocks start (newer than the backfill cutoff) and nothing
# depends on when the test runs
T0 = (datetime.now(UTC) - timedelta(hours=2)).replace(minute=0, second=0, microsecond=0)
MINUTE = timedelta(minutes=1)


def ix(
    external_id: str,
    thread: str,
    *,
    at: int,
    author: str = "ann",
    account: str = "acme-fb",
    outbound: bool = False,
    sent_by: str | None = None,
    reply: ReplyContext | None = None,
) -> InteractionReceived:
    tenant = account.split("-")[0]
    return InteractionReceived(
        event_id=f"{external_id:0>32}"[-32:],
        tenant_id=tenant,
        interaction_id=ids.interaction_id(
            tenant_id=tenant, account_id=account, external_id=external_id, edit_version=0
        ),
        account_id=account,
        platform=Platform.facebook,
        external_id=external_id,
        kind=Kind.reply if outbound else Kind.comment,
        direction=Direction.outbound if outbound else Direction.inbound,
        thread_id=thread,
        author=Author(id="brand" if outbound else author, name=author),
        text="a refund, please" if not outbound else "on its way",
        created_at=T0 + at * MINUTE,
        received_at=T0 + at * MINUTE,
        correlation_id=f"cid-{external_id}",
        sent_by=sent_by,
        reply=reply,
    )


def cid(thread: str, account: str = "acme-fb") -> str:
    return ids.conversation_id(account_id=account, thread_id=thread)


def retraction(external_id: str, thread: str, *, at: int) -> InteractionRetracted:
    return InteractionRetracted(
        event_id=f"retract-{external_id}".encode().hex()[:32].ljust(32, "0"),
        tenant_id="acme",
        account_id="acme-fb",
        platform=Platform.facebook,
        external_id=external_id,
        thread_id=thread,
        retracted_at=T0 + at * MINUTE,
    )


def command(kind: type, n: int, **fields: object) -> AnyCommand:
    return kind(command_id=f"command-{n:04d}", issued_at=T0, issued_by="lead", **fields)


Step = Callable[[Router], Awaitable[bytes]]


def scenario() -> list[tuple[str, Step]]:
    """What happens, in order, and a name for each step (to say which one differs)."""

    def route(*batch: InteractionReceived | InteractionRetracted, at: int) -> Step:
        async def step(router: Router) -> bytes:
            return serialized(await router.route(list(batch), T0 + at * MINUTE))

        return step

    def apply(*commands: AnyCommand, at: int) -> Step:
        async def step(router: Router) -> bytes:
            return serialized(await router.apply(list(commands), T0 + at * MINUTE))

        return step

    a, b, c, d, k = cid("a"), cid("b"), cid("c"), cid("d"), cid("k", "kettle-fb")
    claim_b = command(Claim, 3, tenant_id="acme", conversation_id=b, person_id="li")
    return [
        ("a reply before its message", route(ix("r-c", "c", at=2, outbound=True), at=2)),
        (
            "opening, joining, answered already",
            route(
                ix("m-a", "a", at=0),
                ix("m-b", "b", at=1, author="bo"),
                ix("m-a2", "a", at=3),
                ix("m-c", "c", at=1, author="cy"),
                ix("m-k", "k", at=1, account="kettle-fb"),
                at=4,
            ),
        ),
        ("a queue", route(ix("m-d", "d", at=5, author="di"), ix("m-e", "e", at=5, author="ed"), at=5)),
        ("a reply", route(ix("r-a", "a", at=6, outbound=True), at=6)),
        ("reopening", route(ix("m-a3", "a", at=7), at=7)),
        ("retracting", route(retraction("m-b", "b", at=8), at=8)),
        ("a duplicate", route(ix("m-a3", "a", at=7), at=9)),
        (
            "commands",
            apply(
                command(Pause, 1, tenant_id="acme", conversation_id=a),
                command(Reassign, 2, tenant_id="acme", conversation_id=d, team="billing"),
                claim_b,
                command(Claim, 4, tenant_id="acme", conversation_id="f" * 32, person_id="maria"),
                command(Claim, 5, tenant_id="kettle", conversation_id=k, person_id="sam"),
                at=10,
            ),
        ),
        ("resume", apply(command(Resume, 6, tenant_id="acme", conversation_id=a), at=11)),
        ("a redelivery", apply(claim_b, at=12)),
        (
            "statuses",
            apply(
                command(SetStatus, 7, person_id="maria", status="offline"),
                command(SetStatus, 8, person_id="li", status="available"),
                at=13,
            ),
        ),
        ("back", apply(command(SetStatus, 9, person_id="maria", status="available"), at=14)),
        ("resolve", apply(command(Resolve, 10, tenant_id="acme", conversation_id=c), at=15)),
        (
            "what answering needs",
            route(ix("m-g", "g", at=16, author="gus", reply=ReplyContext(visibility="direct")), at=16),
        ),
        ("an answer from the inbox", route(ix("r-g", "g", at=17, outbound=True, sent_by="li"), at=17)),
        ("its echo", route(ix("r-g", "g", at=17, outbound=True), at=18)),
        ("a message", route(ix("m-h", "h", at=19, author="hal"), at=19)),
        ("an echo before its answer", route(ix("r-h", "h", at=20, outbound=True), at=20)),
        ("the answer after its echo", route(ix("r-h", "h", at=20, outbound=True, sent_by="maria"), at=21)),
        ("its redelivery", route(ix("r-h", "h", at=20, outbound=True, sent_by="maria"), at=22)),
    ]


async def run(repository: Repository) -> list[tuple[str, bytes]]:
    router = Router(repository, backfill_cutoff=timedelta(hours=24), ids=CountingIds())
    return [(name, await step(router)) for name, step in scenario()]


def interaction(external_id: str) -> str:
    return ids.interaction_id(tenant_id="acme", account_id="acme-fb", external_id=external_id, edit_version=0)


STORED = ["m-g", "r-g", "m-h", "r-h"]


async def stored_in_sql(sessions: async_sessionmaker[AsyncSession]) -> tuple[object, ...]:
    """What the scenario left of replies in the database: context and writers, continuity."""
    async with sessions() as session:
        rows = {
            row.external_id: (row.reply_context, row.sent_by)
            for row in (
                await session.exec(
                    select(InteractionRow).where(col(InteractionRow.id).in_([interaction(e) for e in STORED]))
                )
            ).all()
        }
        continuity = {
            (row.account_id, row.author_id): row.person_id
            for row in (await session.exec(select(ContinuityRow))).all()
        }
    return [rows[e] for e in STORED], continuity


def stored_in_memory(repository: MemoryRepository) -> tuple[object, ...]:
    kept = repository.state.interactions
    rows = [(kept[interaction(e)].reply_context, kept[interaction(e)].sent_by) for e in STORED]
    return rows, dict(repository.state.continuity)


async def test_the_sql_and_the_memory_repository_give_the_same_outcomes(database_url: str) -> None:
    engine = create_engine(database_url)
    sessions = session_factory(engine)
    try:
        await apply_config(sessions, parse_config(CONFIG, source="t.yaml"), source="t.yaml")
        sql = SqlRepository(sessions)
        async with sql.unit_of_work() as uow:  # the configuration, as the memory repository holds it
            world = await uow.load_world(
                now=T0,
                backfill_cutoff=timedelta(hours=24),
                new_id=random_id,
                account_ids={"acme-fb", "kettle-fb"},
                person_ids={"maria", "li", "sam"},
            )
        in_sql = await run(sql)
        kept_in_sql = await stored_in_sql(sessions)
    finally:
        await engine.dispose()
    memory = MemoryRepository.of(world)
    in_memory = await run(memory)

    for (name, from_sql), (_, from_memory) in zip(in_sql, in_memory, strict=True):
        assert from_sql == from_memory, name
    assert kept_in_sql == stored_in_memory(memory)
    rows, continuity = kept_in_sql
    assert rows == [('{"visibility":"direct"}', None), (None, "li"), (None, None), (None, "maria")]
    assert continuity[("acme-fb", "gus")] == "li" and continuity[("acme-fb", "hal")] == "maria"
    assert b'"outgoing": []' in dict(in_sql)["its echo"]
    assert b'"outgoing": []' in dict(in_sql)["the answer after its echo"]
    assert b"conversation.responded" in dict(in_sql)["an echo before its answer"]
    everything = b"".join(out for _, out in in_sql)
    for code in (Rejection.closed, Rejection.unknown_conversation, Rejection.not_a_member):
        assert f'\\"code\\":\\"{code}\\"'.encode() in everything, code
    assert b'"outgoing": []' in dict(in_sql)["a redelivery"]
