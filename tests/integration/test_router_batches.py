"""The router's hot path against a real nats-server and each database."""

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext
from sqlalchemy import delete, make_url
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.ingest.generic import GenericInteraction, normalise
from services.ingest.publisher import InteractionPublisher
from services.router.consumers import (
    COMMANDS_CONSUMER,
    CONSUMER,
    CommandConsumer,
    InteractionConsumer,
    OutboxRelay,
)
from services.router.service import Router
from services.router.sql import SqlRepository
from shared import subjects
from shared.commands import Resolve
from shared.db.core import OUTBOX, execute
from shared.db.models import ConversationRow, InteractionRow, OutboxBatchRow
from shared.db.session import create_engine, session_factory, transaction
from shared.events import InteractionReceived, Platform
from shared.jetstream import (
    DLQ_ERROR,
    StreamSettings,
    ensure_consumer,
    ensure_streams,
    publish_pipelined,
    stream_configs,
    work_consumer,
)
from shared.outbox import command_outgoing
from stayhuman.config import apply_config, parse_config
from tests.helpers import config_yaml, generic_body


@dataclass
class Setup:
    js: JetStreamContext
    sessions: async_sessionmaker[AsyncSession]


@pytest.fixture
async def setup(nc: Client, database_url: str) -> AsyncIterator[Setup]:
    js = nc.jetstream()
    await ensure_streams(js, stream_configs(StreamSettings()))
    await ensure_consumer(
        js,
        subjects.INTERACTIONS_STREAM,
        work_consumer(
            durable=CONSUMER,
            filter_subject=subjects.all_interactions(),
            ack_wait=timedelta(seconds=30),
            max_deliver=3,
        ),
    )
    engine = create_engine(database_url)
    sessions = session_factory(engine)
    document = parse_config(
        config_yaml(tenant="acme", account="acme-fb", secret="s" * 20, people=["maria", "li"]),
        source="t.yaml",
    )
    await apply_config(sessions, document, source="t.yaml")
    async with transaction(sessions) as session:  # what apply queued for the router: not these tests' subject
        await execute(session, delete(OUTBOX))
    yield Setup(js, sessions)
    await engine.dispose()


def event(external_id: str, *, account: str = "acme-fb", **kwargs: Any) -> InteractionReceived:
    payload = GenericInteraction.model_validate_json(generic_body(external_id, **kwargs))
    return normalise(
        payload,
        tenant_id="acme",
        account_id=account,
        platform=Platform.facebook,
        received_at=datetime.now(UTC),
        correlation_id=f"cid-{external_id}",
    )


async def publish(js: JetStreamContext, *events: InteractionReceived, raw: bytes | None = None) -> None:
    publisher = InteractionPublisher(js, timeout=5)  # exactly what ingest publishes
    for ev in events:
        await publisher.publish(ev)
    if raw is not None:
        await js.publish(subjects.interaction_received(tenant_id="acme", account_id="acme-fb"), raw)


async def fetch_all(js: JetStreamContext, count: int) -> list[Any]:
    sub = await js.pull_subscribe_bind(durable=CONSUMER, stream=subjects.INTERACTIONS_STREAM)
    msgs = await sub.fetch(count, timeout=5)
    await sub.unsubscribe()
    return msgs


async def stored_events(js: JetStreamContext) -> dict[str, int]:
    info = await js.stream_info(subjects.EVENTS_STREAM, subjects_filter=">")
    return dict(info.state.subjects or {})


def service(setup: Setup) -> Router:
    return Router(SqlRepository(setup.sessions), backfill_cutoff=timedelta(hours=24))


def router(setup: Setup, js: Any = None) -> InteractionConsumer:
    return InteractionConsumer(js=js or setup.js, router=service(setup), max_deliver=3)


async def test_batch_opens_assigns_and_responds(setup: Setup) -> None:
    t0 = datetime.now(UTC) - timedelta(minutes=1)
    await publish(
        setup.js,
        event("m1", thread_id="post-1", created_at=t0),
        event("m2", thread_id="post-2", created_at=t0),
        event("m3", thread_id="post-1", created_at=t0 + timedelta(seconds=5)),
        event("r1", thread_id="post-1", direction="outbound", created_at=t0 + timedelta(seconds=30)),
    )
    consumer = router(setup)
    await consumer.handle_batch(await fetch_all(setup.js, 4))
    async with setup.sessions() as session:
        conversations = {c.thread_id: c for c in (await session.exec(select(ConversationRow))).all()}
        interactions = (await session.exec(select(InteractionRow))).all()
        outbox = (await session.exec(select(OutboxBatchRow))).all()
    # published: its outbox row goes with the next unit of work, or when the router is idle
    assert len(interactions) == 4 and len(outbox) == 1
    await consumer.router.forget_published()
    async with setup.sessions() as session:
        assert (await session.exec(select(OutboxBatchRow))).all() == []
    assert conversations["post-1"].state == "responded"
    assert conversations["post-2"].state == "open"
    assert {conversations["post-1"].owner_id, conversations["post-2"].owner_id} == {"maria", "li"}
    assert conversations["post-2"].due_at == t0 + timedelta(minutes=30)
    events = await stored_events(setup.js)
    kinds = sorted(
        subject.split(".")[1] + "." + subject.split(".")[-1] if subject.startswith("sh.conv") else "deadline"
        for subject in events
    )
    assert kinds.count("conv.assigned") == 2 and kinds.count("conv.responded") == 1
    p1 = conversations["post-1"].id
    # set, then cleared in the same transaction: only the newest, cleared, contract is published
    subject = subjects.deadline(tenant_id="acme", conversation_id=p1)
    assert events[subject] == 1
    last = await setup.js.get_last_msg(subjects.EVENTS_STREAM, subject)
    assert json.loads(last.data)["due_at"] is None
    info = await setup.js.consumer_info(subjects.INTERACTIONS_STREAM, CONSUMER)
    assert info.num_ack_pending == 0


async def test_redelivered_batch_changes_nothing(setup: Setup) -> None:
    await publish(setup.js, event("m1"), event("m2", thread_id="other"))
    msgs = await fetch_all(setup.js, 2)
    await router(setup).handle_batch(msgs)
    before = await stored_events(setup.js)
    # A redelivery after a crash: the same messages arrive again, as new deliveries.
    await router(setup).handle_batch([dataclasses.replace(m, _ackd=False) for m in msgs])
    assert await stored_events(setup.js) == before
    async with setup.sessions() as session:
        assert len((await session.exec(select(ConversationRow))).all()) == 2
        assert len((await session.exec(select(InteractionRow))).all()) == 2


class FailingConnection:
    """A connection whose publishes fail: NATS went away right after the commit."""

    is_connected = False  # publishing goes through `publish`, which fails

    def __init__(self, real: Client) -> None:
        self._real = real

    async def publish(self, *args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("nats unavailable")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class FailingPublishes:
    """A JetStream that stores nothing: NATS went away right after the commit."""

    def __init__(self, real: JetStreamContext) -> None:
        self._real = real
        self._nc = FailingConnection(real._nc)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


async def test_events_committed_but_not_published_are_relayed_once(setup: Setup) -> None:
    await publish(setup.js, event("m1"))
    await router(setup, js=FailingPublishes(setup.js)).handle_batch(await fetch_all(setup.js, 1))
    assert await stored_events(setup.js) == {}
    async with setup.sessions() as session:
        assert len((await session.exec(select(OutboxBatchRow))).all()) == 1  # opened, assigned, deadline
    relay = OutboxRelay(setup.js, SqlRepository(setup.sessions))
    assert await relay.relay_once(everything=True) == 3
    assert await relay.relay_once(everything=True) == 0
    assert sum((await stored_events(setup.js)).values()) == 3


async def test_unknown_account_and_garbage_go_to_dead_letter(setup: Setup) -> None:
    await publish(setup.js, event("m1", account="ghost-account"), raw=b'{"type": "something else"}')
    await router(setup).handle_batch(await fetch_all(setup.js, 2))
    sub = await setup.js.pull_subscribe(
        subjects.dead_letter(stream=subjects.INTERACTIONS_STREAM, consumer=CONSUMER), durable="check"
    )
    letters = await sub.fetch(2, timeout=5)
    await sub.unsubscribe()
    errors = sorted(m.headers[DLQ_ERROR].split(":")[0] for m in letters)
    assert errors == ["invalid interaction", "unknown account 'ghost-account'"]
    async with setup.sessions() as session:
        assert (await session.exec(select(InteractionRow))).all() == []


async def test_a_reply_chain_stays_one_conversation_however_deep(setup: Setup) -> None:
    """X and Mastodon name only the message a reply answers: the router follows the chain to
    the conversation where it began, across batches and inside one batch."""
    t0 = datetime.now(UTC) - timedelta(minutes=5)
    at = [t0 + timedelta(seconds=n) for n in range(10)]
    await publish(
        setup.js,
        event("A", thread_id="tweet:A", created_at=at[0]),
        event("B", thread_id="tweet:A", parent_id="A", created_at=at[1]),
    )
    await router(setup).handle_batch(await fetch_all(setup.js, 2))
    await publish(
        setup.js,
        event("C", thread_id="tweet:B", parent_id="B", created_at=at[2]),  # two hops from A
        event("D", thread_id="tweet:C", parent_id="C", created_at=at[3]),  # its parent is in this batch
        event("R", thread_id="tweet:D", parent_id="D", direction="outbound", created_at=at[4]),
        event("X", thread_id="tweet:X", parent_id="not-seen", created_at=at[5]),  # a parent never seen
    )
    await router(setup).handle_batch(await fetch_all(setup.js, 4))
    async with setup.sessions() as session:
        conversations = (await session.exec(select(ConversationRow))).all()
        interactions = {i.external_id: i for i in (await session.exec(select(InteractionRow))).all()}
    assert sorted(c.thread_id for c in conversations) == ["tweet:A", "tweet:X"]
    chain = next(c for c in conversations if c.thread_id == "tweet:A")
    assert {interactions[x].conversation_id for x in "ABCDR"} == {chain.id}
    assert chain.state == "responded"  # the brand's reply four hops down answers it
    assert interactions["X"].conversation_id != chain.id


async def refuse_in_database(sessions: async_sessionmaker[AsyncSession], table: str, column: str) -> None:
    """Rows the database refuses (a trigger on `table` for a `column` value "poison..."): routing
    them fails on every delivery."""
    async with transaction(sessions) as session:
        connection = await session.connection()
        if connection.dialect.name == "postgresql":
            await connection.exec_driver_sql(
                "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                f"IF NEW.{column} LIKE 'poison%' THEN RAISE EXCEPTION 'poison row refused'; END IF; "
                "RETURN NEW; END $$"
            )
            await connection.exec_driver_sql(
                f"CREATE TRIGGER refuse_poison BEFORE INSERT ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION refuse_poison()"
            )
        else:
            await connection.exec_driver_sql(
                f"CREATE TRIGGER refuse_poison BEFORE INSERT ON {table} "
                f"WHEN NEW.{column} LIKE 'poison%' BEGIN SELECT RAISE(ABORT, 'poison row refused'); END"
            )


@pytest.mark.parametrize("kind", ["interaction", "command"])
async def test_a_poison_message_alone_in_its_batch_ends_on_the_dead_letter(setup: Setup, kind: str) -> None:
    """Every delivery of a message the router cannot apply fails; on the last one (max_deliver 3)
    it is kept on the dead letter with its error, even when it came in a batch of one."""
    if kind == "interaction":
        stream, consumer, handler = subjects.INTERACTIONS_STREAM, CONSUMER, router(setup)
        await refuse_in_database(setup.sessions, "interaction", "external_id")
        await publish(setup.js, event("poison"))
    else:
        stream, consumer = subjects.COMMANDS_STREAM, COMMANDS_CONSUMER
        handler = CommandConsumer(js=setup.js, router=service(setup), max_deliver=3)
        config = work_consumer(
            durable=consumer,
            filter_subject=subjects.all_commands(),
            ack_wait=timedelta(seconds=30),
            max_deliver=3,
        )
        await ensure_consumer(setup.js, stream, config)
        await refuse_in_database(setup.sessions, "processedcommand", "id")
        command = Resolve(command_id="poison-command", tenant_id="acme", conversation_id="0" * 32)
        await publish_pipelined(setup.js, [command_outgoing(command)])
    sub = await setup.js.pull_subscribe_bind(durable=consumer, stream=stream)
    for delivery in (1, 2, 3):
        [msg] = await sub.fetch(1, timeout=10)  # nak'ed with a delay: the next delivery follows
        assert msg.metadata.num_delivered == delivery
        await handler.handle_batch([msg])  # handled, not raised for the consumer to nak
    await sub.unsubscribe()
    letters = await setup.js.pull_subscribe(
        subjects.dead_letter(stream=stream, consumer=consumer), durable="check"
    )
    [letter] = await letters.fetch(1, timeout=5)
    await letters.unsubscribe()
    assert letter.subject == f"sh.dlq.{stream.lower()}.{consumer}"
    assert "poison row refused" in letter.headers[DLQ_ERROR]
    assert letter.headers["Sh-Deliveries"] == "3"
    assert b"poison" in letter.data
    info = await setup.js.consumer_info(stream, consumer)
    assert (info.num_pending, info.num_ack_pending) == (0, 0)


async def test_interactions_from_long_ago_are_routed_and_an_unrepresentable_instant_is_refused(
    setup: Setup,
) -> None:
    """Any past date down to year 1 is routed (assigned, no deadline: older than the backfill
    cutoff); an instant before year 1 in UTC cannot be read and goes to the dead letter at once."""
    old = event("old", thread_id="ancient", created_at=datetime(1, 1, 1, tzinfo=UTC))
    before = json.loads(event("before", thread_id="before").model_dump_json())
    before["created_at"] = "0001-01-01T00:30:00+05:00"  # 31 December of year 0 in UTC
    await publish(setup.js, old, raw=json.dumps(before).encode())
    await router(setup).handle_batch(await fetch_all(setup.js, 2))
    async with setup.sessions() as session:
        [conversation] = (await session.exec(select(ConversationRow))).all()
    assert (conversation.thread_id, conversation.state, conversation.due_at) == ("ancient", "open", None)
    assert conversation.owner_id in {"maria", "li"}
    sub = await setup.js.pull_subscribe(
        subjects.dead_letter(stream=subjects.INTERACTIONS_STREAM, consumer=CONSUMER), durable="check"
    )
    [letter] = await sub.fetch(1, timeout=5)
    await sub.unsubscribe()
    assert letter.headers[DLQ_ERROR].startswith("invalid interaction:")
    assert "timestamp is outside the years 1 to 9999 in UTC" in letter.headers[DLQ_ERROR]


async def test_a_reply_routed_before_the_message_it_answers_answers_it_when_it_comes(setup: Setup) -> None:
    """Platforms deliver out of order, and two routers may route a message and its reply at the
    same moment: the reply is kept, and the message opens its conversation already answered."""
    t0 = datetime.now(UTC) - timedelta(minutes=5)
    await publish(
        setup.js, event("r1", thread_id="post-1", direction="outbound", created_at=t0 + timedelta(seconds=1))
    )
    await router(setup).handle_batch(await fetch_all(setup.js, 1))
    async with setup.sessions() as session:
        assert (await session.exec(select(ConversationRow))).all() == []

    await publish(setup.js, event("m1", thread_id="post-1", created_at=t0))
    msgs = await fetch_all(setup.js, 1)
    await router(setup).handle_batch(msgs)
    await router(setup).handle_batch([dataclasses.replace(m, _ackd=False) for m in msgs])  # again

    async with setup.sessions() as session:
        [conversation] = (await session.exec(select(ConversationRow))).all()
        interactions = {i.external_id: i for i in (await session.exec(select(InteractionRow))).all()}
    assert conversation.state == "responded" and conversation.due_at is None
    assert {i.conversation_id for i in interactions.values()} == {conversation.id}
    events = await stored_events(setup.js)
    kinds = sorted(subject.rsplit(".", 1)[-1] for subject in events if subject.startswith("sh.conv."))
    assert kinds == ["assigned", "opened", "responded"]
    assert not any(subject.startswith("sh.deadline.") for subject in events)  # nothing to arm


async def test_a_reply_to_a_message_not_yet_seen_waits_for_it_across_threads(setup: Setup) -> None:
    """On X the brand's answer to a customer's second tweet is in a thread of its own; it waits
    for that tweet, which joins the conversation where the chain began, and answers it there."""
    t0 = datetime.now(UTC) - timedelta(minutes=5)
    at = [t0 + timedelta(seconds=n) for n in range(4)]
    await publish(
        setup.js,
        event("A", thread_id="tweet:A", created_at=at[0]),
        event("R1", thread_id="tweet:A", parent_id="A", direction="outbound", created_at=at[1]),
    )
    await router(setup).handle_batch(await fetch_all(setup.js, 2))
    await publish(
        setup.js, event("R2", thread_id="tweet:B", parent_id="B", direction="outbound", created_at=at[3])
    )
    await router(setup).handle_batch(await fetch_all(setup.js, 1))
    await publish(setup.js, event("B", thread_id="tweet:R1", parent_id="R1", created_at=at[2]))
    await router(setup).handle_batch(await fetch_all(setup.js, 1))

    async with setup.sessions() as session:
        [conversation] = (await session.exec(select(ConversationRow))).all()
        interactions = {i.external_id: i for i in (await session.exec(select(InteractionRow))).all()}
    assert conversation.thread_id == "tweet:A"
    assert conversation.state == "responded" and conversation.responded_at == at[3]
    assert {interactions[x].conversation_id for x in ("A", "R1", "B", "R2")} == {conversation.id}


async def test_a_router_routes_by_the_rules_an_apply_changed_since_its_last_batch(setup: Setup) -> None:
    """The router keeps each tenant's rules between batches; an apply that changes them (a new
    target, a team without maria) is followed from the next batch on, by the same router."""
    routing = service(setup)
    t0 = datetime.now(UTC) - timedelta(minutes=1)
    await routing.route([event("before", thread_id="before", created_at=t0)], datetime.now(UTC))
    document = parse_config(
        config_yaml(tenant="acme", account="acme-fb", secret="s" * 20, people=["li"], first_response="2h"),
        source="t.yaml",
    )
    await apply_config(setup.sessions, document, source="t.yaml")
    for i in range(4):
        await routing.route([event(f"after-{i}", thread_id=f"after-{i}", created_at=t0)], datetime.now(UTC))
    async with setup.sessions() as session:
        rows = {c.thread_id: c for c in (await session.exec(select(ConversationRow))).all()}
    assert rows["before"].due_at == t0 + timedelta(minutes=30)
    assert {rows[f"after-{i}"].owner_id for i in range(4)} == {"li"}
    assert {rows[f"after-{i}"].due_at for i in range(4)} == {t0 + timedelta(hours=2)}


@pytest.mark.postgres
@pytest.mark.parametrize("empty_database_url", ["postgres"], indirect=True)  # SQLite's take turns whole
async def test_a_unit_of_work_that_postgresql_gives_up_in_a_deadlock_is_done_again(
    setup: Setup, database_url: str
) -> None:
    """Another transaction holds maria's row and then asks for the account the router holds:
    PostgreSQL breaks the deadlock by giving up the router's unit of work (it waited first);
    the router does it again once the other has finished, and the message is routed."""
    import asyncpg

    from services.router.sql import _advisory_key

    other = await asyncpg.connect(make_url(database_url).set(drivername="postgresql").render_as_string(False))
    try:
        transaction_ = other.transaction()
        await transaction_.start()
        await other.execute("SET deadlock_timeout = '10s'")  # the router's check (1 s) finds it first
        await other.fetch("SELECT id FROM person WHERE id = 'maria' FOR UPDATE")
        routing = asyncio.create_task(
            service(setup).route([event("locked", thread_id="locked")], datetime.now(UTC))
        )
        await asyncio.sleep(0.5)  # the router holds the account and waits for maria
        await other.execute("SELECT pg_advisory_xact_lock($1)", _advisory_key("account", "acme-fb"))
        await transaction_.commit()
        outcome = await asyncio.wait_for(routing, timeout=30)
    finally:
        await other.close()
    assert outcome.counters.routed == 1
    async with setup.sessions() as session:
        row = (await session.exec(select(ConversationRow).where(ConversationRow.thread_id == "locked"))).one()
    assert row.owner_id in {"maria", "li"}


TWO_TEAMS = """
people:
  - {id: cara, name: Cara, email: cara@example.com, capacity: 100}
  - {id: bill, name: Bill, email: bill@example.com, capacity: 100}
tenants:
  - id: acme
    name: Acme
    sla_policies: [{name: standard, first_response: 30m}]
    teams:
      - {id: care, name: Care, sla_policy: standard, members: [cara]}
      - {id: billing, name: Billing, sla_policy: standard, members: [bill]}
    topics:
      - {name: invoices, match: {keywords: [invoice]}, team: billing}
      - {name: general, default: true, team: care}
    accounts:
      - {id: acme-fb, platform: facebook, handle: Acme, team: care, webhook_secret: ssssssssssssssssssss}
"""


@pytest.mark.postgres
@pytest.mark.parametrize("empty_database_url", ["postgres"], indirect=True)  # SQLite has no row locks
async def test_routing_locks_only_the_people_of_the_teams_it_may_assign(
    setup: Setup, database_url: str
) -> None:
    """While another transaction holds Cara's row (care), a message about an invoice (billing)
    is routed to Bill without waiting: a batch locks the people of the teams its messages go
    to and of the conversations it loads, not every person of the tenant. A message for care
    waits for Cara's row and is routed once it is free."""
    import asyncpg

    await apply_config(setup.sessions, parse_config(TWO_TEAMS, source="t.yaml"), source="t.yaml")
    other = await asyncpg.connect(make_url(database_url).set(drivername="postgresql").render_as_string(False))
    try:
        transaction_ = other.transaction()
        await transaction_.start()
        await other.fetch("SELECT id FROM person WHERE id = 'cara' FOR UPDATE")
        routing = service(setup)
        billed = await asyncio.wait_for(
            routing.route([event("bill-1", thread_id="inv", text="Where is my invoice?")], datetime.now(UTC)),
            timeout=10,
        )
        care = asyncio.create_task(
            routing.route([event("care-1", thread_id="hello", text="Hello there")], datetime.now(UTC))
        )
        await asyncio.sleep(0.5)
        assert not care.done()  # it waits for Cara's row
        await transaction_.commit()
        cared = await asyncio.wait_for(care, timeout=10)
    finally:
        await other.close()
    assert billed.counters.assigned == 1 and cared.counters.assigned == 1
    async with setup.sessions() as session:
        owners = {c.thread_id: c.owner_id for c in (await session.exec(select(ConversationRow))).all()}
    assert owners == {"inv": "bill", "hello": "cara"}


async def test_the_batches_of_lanes_waiting_for_a_unit_of_work_go_into_the_next_one_together(
    setup: Setup,
) -> None:
    """Three lanes' batches arrive while a unit of work runs: they are routed in one unit after
    it (one moment of routing for the three), and each lane acknowledges its own messages."""
    await publish(
        setup.js, event("m1", thread_id="a"), event("m2", thread_id="b"), event("m3", thread_id="c")
    )
    msgs = await fetch_all(setup.js, 3)
    consumer = router(setup)
    async with consumer.lock:  # a unit of work running
        lanes = [asyncio.create_task(consumer.handle_batch([msg])) for msg in msgs]
        await asyncio.sleep(0.2)
        assert not any(lane.done() for lane in lanes)
    await asyncio.gather(*lanes)
    async with setup.sessions() as session:
        conversations = (await session.exec(select(ConversationRow))).all()
    assert len(conversations) == 3
    assert len({c.assigned_at for c in conversations}) == 1  # the `now` of one unit of work
    info = await setup.js.consumer_info(subjects.INTERACTIONS_STREAM, CONSUMER)
    assert info.num_ack_pending == 0


async def test_a_poison_message_in_a_unit_of_lanes_together_holds_back_none_of_the_others(
    setup: Setup,
) -> None:
    """A unit of work of several lanes' batches fails for one poison message: each lane routes
    its messages one by one, the others are stored and acknowledged, the poison message comes
    again (and on its last delivery goes to the dead letter)."""
    await refuse_in_database(setup.sessions, "interaction", "external_id")
    await publish(
        setup.js, event("m1", thread_id="a"), event("poison", thread_id="b"), event("m3", thread_id="c")
    )
    msgs = await fetch_all(setup.js, 3)
    consumer = router(setup)
    async with consumer.lock:
        lanes = [asyncio.create_task(consumer.handle_batch([msg])) for msg in msgs]
        await asyncio.sleep(0.2)
    await asyncio.gather(*lanes)
    async with setup.sessions() as session:
        stored = {row.external_id for row in (await session.exec(select(InteractionRow))).all()}
    assert stored == {"m1", "m3"}
    info = await setup.js.consumer_info(subjects.INTERACTIONS_STREAM, CONSUMER)
    assert info.num_ack_pending == 1  # the poison message, nak'ed: delivered again


async def test_a_lane_whose_unit_failed_for_another_lanes_message_routes_its_batch_in_one_unit(
    setup: Setup,
) -> None:
    """A poison message fails the unit of two lanes' batches: the other lane's batch is routed
    again as one unit (not a unit for each message), the poison's lane one message at a time."""
    await refuse_in_database(setup.sessions, "interaction", "external_id")
    await publish(
        setup.js,
        event("a1", thread_id="a1"),
        event("a2", thread_id="a2"),
        event("poison", thread_id="p"),
        event("b2", thread_id="b2"),
    )
    msgs = await fetch_all(setup.js, 4)
    consumer = router(setup)
    async with consumer.lock:
        lanes = [asyncio.create_task(consumer.handle_batch(batch)) for batch in (msgs[:2], msgs[2:])]
        await asyncio.sleep(0.2)
    await asyncio.gather(*lanes)
    async with setup.sessions() as session:
        conversations = {c.thread_id: c for c in (await session.exec(select(ConversationRow))).all()}
    assert set(conversations) == {"a1", "a2", "b2"}
    assert conversations["a1"].assigned_at == conversations["a2"].assigned_at  # one unit of work
    info = await setup.js.consumer_info(subjects.INTERACTIONS_STREAM, CONSUMER)
    assert info.num_ack_pending == 1  # the poison message, nak'ed: delivered again
