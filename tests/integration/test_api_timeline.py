"""The api's timeline consumer against a real nats-server and each database: real events on their
real subjects in SH_EVENTS become a conversation's timeline and the outcome of each command."""

import asyncio
import dataclasses
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext
from sqlalchemy import text
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.api.timeline import TIMELINE_CONSUMER, TimelineConsumer
from services.router.service import subject_for
from shared import subjects
from shared.db.models import CommandOutcomeRow, TimelineRow
from shared.db.session import create_engine, session_factory
from shared.events import (
    AlertAcknowledged,
    AlertChannel,
    AlertKind,
    AlertSent,
    Author,
    CommandApplied,
    CommandRejected,
    ConnectorProblem,
    ConversationAssigned,
    ConversationOpened,
    ConversationPaused,
    ConversationResolved,
    DeadlineChanged,
    DeadlineKind,
    Event,
    Platform,
    Rejection,
)
from shared.jetstream import (
    DLQ_ERROR,
    DLQ_SUBJECT,
    BatchConsumer,
    StreamSettings,
    ensure_consumer,
    ensure_streams,
    publish_pipelined,
    stream_configs,
    work_consumer,
)
from shared.messages import Outgoing
from stayhuman.natsserver import EmbeddedNats
from tests.helpers import eventually, stored_on

CONV = "c0ffee" + "0" * 26
OTHER = "beef" + "0" * 28
T = datetime(2026, 12, 1, 13, 40, tzinfo=UTC)
AROUND = {"tenant_id": "acme", "conversation_id": CONV, "account_id": "acme-fb", "occurred_at": T}
DEAD_LETTERS = subjects.dead_letter(stream=subjects.EVENTS_STREAM, consumer=TIMELINE_CONSUMER)


@dataclass
class World:
    js: JetStreamContext
    sessions: async_sessionmaker[AsyncSession]
    nats_url: str


@pytest.fixture
async def world(nc: Client, nats_server: EmbeddedNats, database_url: str) -> AsyncIterator[World]:
    js = nc.jetstream()
    # a short duplicate window, so a test can store the same message id twice, as after two minutes
    await ensure_streams(js, stream_configs(StreamSettings(duplicate_window=timedelta(seconds=1))))
    engine = create_engine(database_url)
    yield World(js, session_factory(engine), nats_server.url)
    await engine.dispose()


def consumer_config(max_deliver: int = 5) -> Any:
    return work_consumer(
        durable=TIMELINE_CONSUMER,
        filter_subject="sh.>",
        ack_wait=timedelta(seconds=30),
        max_deliver=max_deliver,
    )


@asynccontextmanager
async def consuming(world: World, *, max_deliver: int = 5) -> AsyncIterator[None]:
    """The timeline consumer as the api runs it (services/api/main.py): a BatchConsumer on SH_EVENTS."""
    batches = BatchConsumer(
        js=world.js,
        stream=subjects.EVENTS_STREAM,
        config=consumer_config(max_deliver),
        handler=TimelineConsumer(
            world.js, world.sessions, max_deliver=max_deliver, retry_delay=0.2
        ).handle_batch,
        batch_size=500,
        idle_timeout=0.5,
        retry_delay=0.2,
    )
    await batches.start()
    try:
        yield
    finally:
        await batches.stop()


async def all_taken(world: World, within: float = 5.0) -> bool:
    """Every message of SH_EVENTS delivered to the timeline and acknowledged (or dead-lettered).
    An ack reaches the server a moment after it is sent: looked at for up to `within` seconds."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        info = await world.js.consumer_info(subjects.EVENTS_STREAM, TIMELINE_CONSUMER)
        if info.num_pending == 0 and info.num_ack_pending == 0:
            return True
        if asyncio.get_running_loop().time() >= deadline:
            return False
        await asyncio.sleep(0.05)


def subject_of(event: Event) -> str:
    """Where the router (`subject_for`) or notify publishes the event."""
    match event:
        case AlertSent():
            return subjects.alert_event(tenant_id=event.tenant_id, outcome="sent")
        case AlertAcknowledged():
            return subjects.alert_event(tenant_id=event.tenant_id, outcome="acknowledged")
        case ConnectorProblem():
            return subjects.connector_problem(tenant_id=event.tenant_id, account_id=event.account_id)
    return subject_for(event)


async def publish(world: World, *events: tuple[str, Event]) -> None:
    """Events on their real subjects with their message ids, as the router and notify publish them."""
    await publish_pipelined(
        world.js,
        [Outgoing(subject_of(event), event.model_dump_json().encode(), msg_id) for msg_id, event in events],
    )


async def timeline(world: World, conversation_id: str = CONV) -> list[TimelineRow]:
    async with world.sessions() as session:
        query = (
            select(TimelineRow)
            .where(TimelineRow.conversation_id == conversation_id)
            .order_by(col(TimelineRow.seq))
        )
        return list((await session.exec(query)).all())


async def outcome(world: World, command_id: str) -> CommandOutcomeRow | None:
    async with world.sessions() as session:
        return await session.get(CommandOutcomeRow, command_id)


def opened() -> ConversationOpened:
    return ConversationOpened(
        **AROUND, platform=Platform.facebook, thread_id="post-1", interaction_id="i1", opened_at=T,
        author=Author(id="991", name="Jane Doe", handle="jane"),
    )  # fmt: skip


def assigned(
    owner: str = "maria", reason: str = "team support: continuity: maria answered this author last"
) -> ConversationAssigned:
    return ConversationAssigned(
        **AROUND, team_id="t", owner_id=owner, reason=reason, assigned_at=T + timedelta(seconds=1), step="continuity",
    )  # fmt: skip


def paused() -> ConversationPaused:
    return ConversationPaused(**AROUND, reason="waiting on the customer", paused_at=T + timedelta(minutes=5))


def pause_applied(command_id: str) -> CommandApplied:
    return CommandApplied(
        **{**AROUND, "occurred_at": T + timedelta(minutes=5)}, command_id=command_id,
        command_type="conversation.pause", issued_by="kai", issued_at=T + timedelta(minutes=5),
        summary="c0ffee00… waits on the customer",
    )  # fmt: skip


async def test_a_conversations_events_become_its_timeline_in_order_with_their_sentences(world: World) -> None:
    pause = "0a1b2c3d4e5f60718293a4b5c6d7e8f9"
    claim = "99887766554433221100ffeeddccbbaa"
    deadline = DeadlineChanged(
        **AROUND, deadline_version=1, kind=DeadlineKind.first_response, owner_id="maria", started_at=T,
        warn_at=T.replace(hour=13, minute=55), due_at=T.replace(hour=14, minute=5), reason="first_response",
    )  # fmt: skip
    rejected = CommandRejected(
        **{**AROUND, "occurred_at": T + timedelta(minutes=2)}, command_id=claim, command_type="conversation.claim",
        issued_by="kai", issued_at=T + timedelta(minutes=2), person_id="maria", code=Rejection.at_capacity,
        reason="maria is at capacity (2/2)",
    )  # fmt: skip
    breach = AlertSent(
        tenant_id="acme", occurred_at=T + timedelta(minutes=3), alert_id="a1", alert_kind=AlertKind.breach,
        step="breach", channel=AlertChannel.email, person_id="rosa", conversation_id=CONV, deadline_version=1,
    )  # fmt: skip
    acknowledged = AlertAcknowledged(
        tenant_id="acme", occurred_at=T + timedelta(minutes=4), conversation_id=CONV, deadline_version=1,
        person_id="kai", acknowledged_at=T + timedelta(minutes=4), command_id="ack-0001",
    )  # fmt: skip
    trouble = ConnectorProblem(
        tenant_id="acme", account_id="acme-fb", platform=Platform.facebook, problem="failing", detail="token revoked",
        since=T,
    )  # fmt: skip
    await publish(
        world,
        (f"opened:{CONV}", opened()),
        (f"assigned:{CONV}:ix-1:continuity:maria", assigned()),
        (f"deadline:{CONV}:1", deadline),
        ("ops:acme-fb:failing", trouble),
        (f"outcome:{claim}", rejected),
        ("alert:a1:1:sent", breach),
        ("ack:ack-0001", acknowledged),
        (f"paused:{CONV}:cmd-{pause}", paused()),
        (f"outcome:{pause}", pause_applied(pause)),
    )
    async with consuming(world):
        await eventually(lambda: all_taken(world), what="every event taken")
    rows = await timeline(world)
    assert [(row.kind, row.actor, row.summary) for row in rows] == [
        ("conversation.opened", "router", "Opened on facebook by Jane Doe (@jane)"),
        ("conversation.assigned", "router", "Assigned to maria (team support: continuity: maria answered this author last)"),
        ("deadline.changed", "router", "Deadline: first response due 14:05 UTC (warning 13:55)"),
        ("command.rejected", "kai", "claim by kai rejected: maria is at capacity (2/2)"),
        ("alert.sent", "notify", "Breach alert sent to rosa by email"),
        ("alert.acknowledged", "kai", "kai acknowledged the alert: escalation stopped"),
        ("conversation.paused", "kai", "Paused by kai: waiting on the customer"),
        ("command.applied", "kai", "pause by kai applied: c0ffee00… waits on the customer"),
    ]  # fmt: skip
    assert [row.id for row in rows][:3] == [
        f"opened:{CONV}",
        f"assigned:{CONV}:ix-1:continuity:maria",
        f"deadline:{CONV}:1",
    ]
    assert [row.at for row in rows][:2] == [T, T + timedelta(seconds=1)]
    assert rows[1].person_id == "maria" and rows[4].person_id == "rosa" and rows[0].person_id is None
    assert json.loads(rows[2].detail)["due_at"] == "2026-12-01T14:05:00Z"
    assert all(row.tenant_id == "acme" for row in rows)
    async with world.sessions() as session:  # the connector's trouble is the operator's, not a timeline's
        assert (
            await session.exec(select(TimelineRow).where(TimelineRow.kind == "connector.problem"))
        ).all() == []
    refused = await outcome(world, claim)
    assert refused is not None
    assert (refused.outcome, refused.code, refused.reason, refused.issued_by, refused.command_type) == (
        "rejected", "at_capacity", "maria is at capacity (2/2)", "kai", "conversation.claim",
    )  # fmt: skip
    assert (refused.tenant_id, refused.conversation_id, refused.person_id, refused.at) == (
        "acme", CONV, "maria", T + timedelta(minutes=2),
    )  # fmt: skip
    done = await outcome(world, pause)
    assert done is not None and (done.outcome, done.code, done.reason) == (
        "applied",
        "",
        "c0ffee00… waits on the customer",
    )
    assert await stored_on(world.nats_url, DEAD_LETTERS) == []


async def test_a_message_stored_twice_in_the_stream_or_delivered_twice_is_kept_once(world: World) -> None:
    await publish(world, (f"opened:{CONV}", opened()), (f"assigned:{CONV}:ix-1:continuity:maria", assigned()))
    await asyncio.sleep(1.2)  # past the duplicate window: the stream keeps the same ids again
    await publish(world, (f"assigned:{CONV}:ix-1:continuity:maria", assigned("li", "a second telling")))
    info = await world.js.stream_info(subjects.EVENTS_STREAM)
    assert info.state.messages == 3
    await ensure_consumer(world.js, subjects.EVENTS_STREAM, consumer_config())
    sub = await world.js.pull_subscribe_bind(durable=TIMELINE_CONSUMER, stream=subjects.EVENTS_STREAM)
    msgs = await sub.fetch(3, timeout=5)
    consumer = TimelineConsumer(world.js, world.sessions, max_deliver=5)
    await consumer.handle_batch(msgs)
    # and all of it delivered again, as after a crash before the acks
    await consumer.handle_batch([dataclasses.replace(m, _ackd=False) for m in msgs])
    await sub.unsubscribe()
    rows = await timeline(world)
    assert [(row.id, row.summary) for row in rows] == [
        (f"opened:{CONV}", "Opened on facebook by Jane Doe (@jane)"),
        (f"assigned:{CONV}:ix-1:continuity:maria", "Assigned to maria (team support: continuity: maria answered this author last)"),
    ]  # fmt: skip
    assert [row.seq for row in rows] == [1, 2]
    assert await all_taken(world)


async def test_an_event_without_a_message_id_is_kept_by_its_place_in_the_stream(world: World) -> None:
    await world.js.publish(subject_of(paused()), paused().model_dump_json().encode())
    async with consuming(world):
        await eventually(lambda: all_taken(world), what="the event taken")
    rows = await timeline(world)
    assert [(row.id, row.summary, row.actor) for row in rows] == [
        ("seq:1", "Paused: waiting on the customer", "router")
    ]


async def test_garbage_goes_to_the_dead_letter_and_the_rest_of_the_batch_is_stored(world: World) -> None:
    await publish(world, (f"opened:{CONV}", opened()))
    await world.js.publish(subjects.alert_event(tenant_id="acme", outcome="sent"), b"\xff not json at all")
    newer = json.loads(paused().model_dump_json()) | {"version": 2}
    await world.js.publish(subject_of(paused()), json.dumps(newer).encode(), headers={"Nats-Msg-Id": "v2"})
    too_long = assigned().model_copy(update={"conversation_id": "f" * 40})
    await world.js.publish(
        subject_of(assigned()), too_long.model_dump_json().encode(), headers={"Nats-Msg-Id": "wide"}
    )
    await publish(world, (f"assigned:{CONV}:ix-1:continuity:maria", assigned()))
    async with consuming(world):
        await eventually(lambda: all_taken(world), what="every message taken")
    assert [row.kind for row in await timeline(world)] == ["conversation.opened", "conversation.assigned"]
    letters = await stored_on(world.nats_url, DEAD_LETTERS)
    assert [(m.headers[DLQ_SUBJECT], m.headers[DLQ_ERROR].split(":")[0]) for m in letters] == [
        ("sh.alert.acme.sent", "invalid event"),
        (subject_of(paused()), "invalid event"),
        (subject_of(assigned()), "unstorable event"),
    ]
    assert letters[0].data == b"\xff not json at all"
    assert (
        "conversation_id of 40 characters is longer than the 32 the timeline keeps"
        in letters[2].headers[DLQ_ERROR]
    )


async def test_a_pause_stored_before_its_outcome_names_who_asked_once_the_outcome_comes(world: World) -> None:
    command = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a"
    async with consuming(world):
        await publish(world, (f"paused:{CONV}:cmd-{command}", paused()))
        await eventually(lambda: all_taken(world), what="the pause taken")
        [row] = await timeline(world)
        assert (row.actor, row.summary) == ("router", "Paused: waiting on the customer")
        await publish(world, (f"outcome:{command}", pause_applied(command)))
        await eventually(lambda: all_taken(world), what="the outcome taken")
    rows = await timeline(world)
    assert [(row.kind, row.actor, row.summary) for row in rows] == [
        ("conversation.paused", "kai", "Paused by kai: waiting on the customer"),
        ("command.applied", "kai", "pause by kai applied: c0ffee00… waits on the customer"),
    ]
    # a resolve the router did by itself (auto-resolve) names nobody
    auto = "6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b"
    quiet = ConversationResolved(**AROUND, reason="no new message for 2 days after the reply", resolved_at=T)
    by_router = CommandApplied(
        **AROUND, command_id=auto, command_type="conversation.auto_resolve", issued_by="router", issued_at=T,
        summary="c0ffee00… resolved itself",
    )  # fmt: skip
    await publish(world, (f"resolved:{CONV}:cmd-{auto}", quiet), (f"outcome:{auto}", by_router))
    async with consuming(world):
        await eventually(lambda: all_taken(world), what="the resolve taken")
    rows = await timeline(world)
    assert [(row.actor, row.summary) for row in rows[2:]] == [
        ("router", "Resolved: no new message for 2 days after the reply"),
        ("router", "auto resolve by router applied: c0ffee00… resolved itself"),
    ]


async def test_what_cannot_be_written_is_retried_alone_and_dead_lettered_on_its_last_delivery(
    world: World,
) -> None:
    """The outcomes' table is gone: the batch fails, its messages are written one by one, the
    timeline entries all land, and the message whose outcome cannot be written is dead-lettered
    on its last delivery, never dropped."""
    async with world.sessions() as session, session.begin():
        await session.exec(text("DROP TABLE commandoutcome"))  # type: ignore[call-overload]
    claim = "77777777777777777777777777777777"
    rejected = CommandRejected(
        **AROUND, command_id=claim, command_type="conversation.claim", issued_by="kai", issued_at=T,
        code=Rejection.closed, reason="the conversation is resolved",
    )  # fmt: skip
    await publish(
        world,
        (f"opened:{CONV}", opened()),
        (f"outcome:{claim}", rejected),
        (f"assigned:{CONV}:x", assigned()),
    )
    async with consuming(world, max_deliver=2):
        await eventually(lambda: all_taken(world), what="every message taken", timeout=20)
    assert [row.kind for row in await timeline(world)] == ["conversation.opened", "conversation.assigned"]
    [letter] = await stored_on(world.nats_url, DEAD_LETTERS)
    assert letter.headers[DLQ_SUBJECT] == "sh.result.tenant.acme.rejected"
    assert json.loads(letter.data)["command_id"] == claim
    assert letter.headers["Sh-Deliveries"] == "2"


async def test_a_thousand_events_are_kept_once_each_in_a_few_transactions(world: World) -> None:
    conversations = [f"{n:032x}" for n in range(1, 101)]
    events: list[tuple[str, Event]] = []
    for conversation in conversations:
        around = {**AROUND, "conversation_id": conversation}
        events += [
            (f"opened:{conversation}", opened().model_copy(update=around)),
            *(
                (f"assigned:{conversation}:ix-{n}:match:maria", assigned().model_copy(update=around))
                for n in range(9)
            ),
        ]
    await publish(world, *events)
    started = time.monotonic()
    async with consuming(world):
        await eventually(lambda: all_taken(world), what="every event taken", timeout=30)
    took = time.monotonic() - started
    async with world.sessions() as session:
        rows = (await session.exec(select(TimelineRow))).all()
    assert len(rows) == 1000 and len({row.id for row in rows}) == 1000
    assert len(await timeline(world, OTHER)) == 0 and len(await timeline(world, conversations[7])) == 10
    assert took < 20, took
