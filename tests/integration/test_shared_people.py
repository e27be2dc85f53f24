"""People who serve several tenants: their capacity is one, across all of them. When a reply
in one tenant frees them, the queue of another tenant they serve gets them too, although the
transaction that freed them knew only the first tenant: it asks the router to check them."""

import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from services.router.consumers import COMMANDS_CONSUMER, CONSUMER, CommandConsumer, InteractionConsumer
from services.router.service import Router
from services.router.sql import SqlRepository
from shared import subjects
from shared.commands import Reassign, msg_id_of, subject_of
from shared.db.core import CONVERSATIONS, OUTBOX, PEOPLE, execute, fetch_rows
from shared.db.session import create_engine, session_factory, transaction
from shared.events import Author, Direction, InteractionReceived, Kind, Platform
from shared.ids import interaction_id
from shared.jetstream import StreamSettings, ensure_consumer, ensure_streams, stream_configs, work_consumer
from stayhuman.config import apply_config, parse_config

CONFIG = """
people: [{id: sam, name: Sam, email: sam@example.com, capacity: 1}]
tenants:
  - id: acme
    name: Acme
    sla_policies: [{name: standard, first_response: 1h}]
    teams: [{id: care, name: Care, sla_policy: standard, members: [sam]}]
    accounts: [{id: acme-fb, platform: facebook, handle: Acme, team: care, webhook_secret: acme-secret-0123456789}]
  - id: beta
    name: Beta
    sla_policies: [{name: standard, first_response: 1h}]
    teams: [{id: care, name: Care, sla_policy: standard, members: [sam]}]
    accounts: [{id: beta-fb, platform: facebook, handle: Beta, team: care, webhook_secret: beta-secret-0123456789}]
"""


def message(tenant: str, external_id: str, thread: str, *, outbound: bool = False) -> InteractionReceived:
    account = f"{tenant}-fb"
    now = datetime.now(UTC) - timedelta(seconds=30)
    return InteractionReceived(
        tenant_id=tenant,
        interaction_id=interaction_id(
            tenant_id=tenant, account_id=account, external_id=external_id, edit_version=0
        ),
        account_id=account,
        platform=Platform.facebook,
        external_id=external_id,
        kind=Kind.comment,
        direction=Direction.outbound if outbound else Direction.inbound,
        thread_id=thread,
        author=Author(id=account if outbound else f"fan-{thread}", name="Someone"),
        text="Hello?",
        created_at=now + timedelta(seconds=5 if outbound else 0),
        received_at=now,
    )


@dataclass
class Routers:
    """A two-tenant installation, and the router's two consumers driven by hand."""

    js: JetStreamContext
    sessions: async_sessionmaker[AsyncSession]
    interactions: InteractionConsumer
    commands: CommandConsumer
    inbox: JetStreamContext.PullSubscription
    orders: JetStreamContext.PullSubscription


@pytest.fixture
async def routers(nc: Client, database_url: str) -> AsyncIterator[Routers]:
    js = nc.jetstream()
    await ensure_streams(js, stream_configs(StreamSettings()))
    for stream, durable, filter_subject in (
        (subjects.INTERACTIONS_STREAM, CONSUMER, subjects.all_interactions()),
        (subjects.COMMANDS_STREAM, COMMANDS_CONSUMER, subjects.all_commands()),
    ):
        config = work_consumer(
            durable=durable, filter_subject=filter_subject, ack_wait=timedelta(seconds=30), max_deliver=3
        )
        await ensure_consumer(js, stream, config)
    engine = create_engine(database_url)
    sessions = session_factory(engine)
    await apply_config(sessions, parse_config(CONFIG, source="t.yaml"), source="t.yaml")
    async with transaction(sessions) as session:
        await execute(session, delete(OUTBOX))
    router = Router(SqlRepository(sessions), backfill_cutoff=timedelta(hours=24))
    interactions = InteractionConsumer(js=js, router=router, max_deliver=3)
    commands = CommandConsumer(js=js, router=router, max_deliver=3)
    inbox = await js.pull_subscribe_bind(durable=CONSUMER, stream=subjects.INTERACTIONS_STREAM)
    orders = await js.pull_subscribe_bind(durable=COMMANDS_CONSUMER, stream=subjects.COMMANDS_STREAM)
    yield Routers(js, sessions, interactions, commands, inbox, orders)
    await engine.dispose()


async def test_a_reply_in_one_tenant_frees_a_person_for_another_tenant_s_queue(
    routers: Routers,
) -> None:
    js, sessions, interactions, commands, inbox, orders = (
        routers.js,
        routers.sessions,
        routers.interactions,
        routers.commands,
        routers.inbox,
        routers.orders,
    )

    async def route(*events: InteractionReceived) -> None:
        for event in events:
            await js.publish(
                subjects.interaction_received(tenant_id=event.tenant_id, account_id=event.account_id),
                event.model_dump_json().encode(),
            )
        await interactions.handle_batch(await inbox.fetch(len(events), timeout=5))

    async def conversation(thread: str) -> object:
        async with sessions() as session:
            return (
                await fetch_rows(session, select(CONVERSATIONS).where(CONVERSATIONS.c.thread_id == thread))
            )[0]

    await route(message("acme", "a1", "t-acme"))
    await route(message("beta", "b1", "t-beta"))
    assert (await conversation("t-acme")).owner_id == "sam"  # type: ignore[attr-defined]
    queued = await conversation("t-beta")
    assert queued.owner_id is None and "queue" in queued.assignment_reason  # type: ignore[attr-defined]

    # Acme's brand answers: sam is free; the routing of that reply knew only acme
    await route(message("acme", "r1", "t-acme", outbound=True))
    assert (await conversation("t-beta")).owner_id is None
    checks = await orders.fetch(10, timeout=5)
    assert [m.subject for m in checks] == [
        subjects.person_command(person_id="sam", verb="check_availability")
    ]
    await commands.handle_batch(checks)

    taken = await conversation("t-beta")
    assert taken.owner_id == "sam" and "from the queue" in taken.assignment_reason  # type: ignore[attr-defined]
    async with sessions() as session:
        load = (await fetch_rows(session, select(PEOPLE.c.load).where(PEOPLE.c.id == "sam")))[0].load
    assert load == 1  # one conversation awaiting sam's answer, across both tenants


async def test_a_command_delivered_again_is_applied_once(routers: Routers) -> None:
    js, sessions, interactions, commands, inbox, orders = (
        routers.js,
        routers.sessions,
        routers.interactions,
        routers.commands,
        routers.inbox,
        routers.orders,
    )
    event = message("acme", "a1", "t-acme")
    await js.publish(
        subjects.interaction_received(tenant_id="acme", account_id="acme-fb"),
        event.model_dump_json().encode(),
    )
    await interactions.handle_batch(await inbox.fetch(1, timeout=5))
    async with sessions() as session:
        row = (await fetch_rows(session, select(CONVERSATIONS).where(CONVERSATIONS.c.thread_id == "t-acme")))[
            0
        ]
    # an operator sends the conversation back to its team (from a machine whose clock runs an
    # hour ahead: nothing about time tells a redelivery from a new command)
    command = Reassign(
        tenant_id="acme",
        conversation_id=row.id,
        team="care",
        issued_at=datetime.now(UTC) + timedelta(hours=1),
    )
    await js.publish(
        subject_of(command), command.model_dump_json().encode(), headers={"Nats-Msg-Id": msg_id_of(command)}
    )
    delivered = await orders.fetch(1, timeout=5)
    await commands.handle_batch(delivered)
    events_before = (await js.stream_info(subjects.EVENTS_STREAM)).state.messages
    async with sessions() as session:
        first = (await fetch_rows(session, select(CONVERSATIONS).where(CONVERSATIONS.c.id == row.id)))[0]
    # the same message delivered again, as after a lost ack
    await commands.handle_batch([dataclasses.replace(m, _ackd=False) for m in delivered])
    async with sessions() as session:
        again = (await fetch_rows(session, select(CONVERSATIONS).where(CONVERSATIONS.c.id == row.id)))[0]
    assert (await js.stream_info(subjects.EVENTS_STREAM)).state.messages == events_before
    assert (again.assigned_at, again.deadline_version, again.assignment_reason) == (
        first.assigned_at,
        first.deadline_version,
        first.assignment_reason,
    )
