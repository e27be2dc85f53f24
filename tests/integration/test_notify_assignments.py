"""notify's assignment notices through its consumer, against a real nats-server: a batch reads its
owners' preferences once, each notice goes out once, and a message that fails is retried alone and
kept on the dead letter, with its error, on its last delivery."""

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from services.notify.consumers import ASSIGNED_CONSUMER, AssignmentConsumer, Publisher
from services.notify.decisions import Preferences
from services.notify.memory import MemoryRepository
from services.notify.ports import AlertClaim
from shared import subjects
from shared.events import ConversationAssigned
from shared.jetstream import (
    DLQ_ERROR,
    DLQ_SUBJECT,
    MSG_ID,
    StreamSettings,
    ensure_consumer,
    ensure_streams,
    stream_configs,
    work_consumer,
)
from tests.helpers import eventually
from tests.notify_world import T0, World, context

MAX_DELIVER = 2


@dataclass
class Repository(MemoryRepository):
    """The in-memory repository, counting the reads of people's preferences, whose claims fail for
    the conversations in `broken` and whose preference reads fail `failing_reads` times (a
    database that refuses)."""

    broken: set[str] = field(default_factory=set)
    failing_reads: int = 0
    reads: int = 0

    async def preferences(self, people: Iterable[str]) -> dict[str, Preferences]:
        self.reads += 1
        if self.failing_reads:
            self.failing_reads -= 1
            raise ConnectionError("the database went away")
        return await super().preferences(people)

    async def claim_alert(
        self,
        *,
        tenant_id: str,
        conversation_id: str,
        version: int,
        step: str,
        lease_until: datetime,
        now: datetime,
    ) -> AlertClaim:
        if conversation_id in self.broken:
            raise RuntimeError("disk full")
        return await super().claim_alert(
            tenant_id=tenant_id, conversation_id=conversation_id, version=version, step=step,
            lease_until=lease_until, now=now,
        )  # fmt: skip


@dataclass
class Setup:
    js: JetStreamContext
    world: World
    repository: Repository
    consumer: AssignmentConsumer
    conversations: list[str]

    async def assign(self, *owners: str | None, copy: str = "") -> None:
        """One assignment of each conversation in turn to the owner given for it (the same
        events again, under new message ids, when `copy` is given: a redelivery)."""
        for cid, owner in zip(self.conversations, owners, strict=False):
            event = ConversationAssigned.model_validate(
                {
                    "event_id": cid, "occurred_at": T0, "tenant_id": "acme", "conversation_id": cid,
                    "account_id": "acme-fb", "team_id": "support", "owner_id": owner, "reason": "rule vip",
                    "assigned_at": T0, "step": "match",
                }
            )  # fmt: skip
            subject = subjects.conversation_event(tenant_id="acme", conversation_id=cid, event="assigned")
            await self.js.publish(
                subject, event.model_dump_json().encode(), headers={MSG_ID: f"assigned:{cid}{copy}"}
            )

    async def deliver(self, count: int) -> list[Msg]:
        """The next `count` messages of the consumer, handed to it as one batch."""
        sub = await self.js.pull_subscribe_bind(durable=ASSIGNED_CONSUMER, stream=subjects.EVENTS_STREAM)
        try:
            msgs = await sub.fetch(count, timeout=5)
            assert len(msgs) == count
            await self.consumer.handle_batch(msgs)
            return msgs
        finally:
            await sub.unsubscribe()

    def told(self) -> list[str]:
        """The conversations whose new owner was emailed, in order."""
        return [cid for message in self.world.email.sent for cid in self.conversations if cid in message.key]

    async def dead_letters(self, count: int) -> list[Msg]:
        sub = await self.js.pull_subscribe(
            subjects.dead_letter(stream=subjects.EVENTS_STREAM, consumer=ASSIGNED_CONSUMER),
            durable=f"dlq{uuid.uuid4().hex[:6]}",
        )
        try:
            return await sub.fetch(count, timeout=5)
        finally:
            await sub.unsubscribe()

    async def settled(self) -> bool:
        """Every message acknowledged or kept on the dead letter: none comes again (term() is a
        fire-and-forget acknowledgement, so this may take a moment)."""

        async def done() -> bool:
            info = await self.js.consumer_info(subjects.EVENTS_STREAM, ASSIGNED_CONSUMER)
            return info.num_ack_pending == 0 and info.num_pending == 0

        return bool(await eventually(done, timeout=5, what="every assignment settled"))


async def setup(nc: Client, repository: Repository, count: int) -> Setup:
    js = nc.jetstream()
    await ensure_streams(js, stream_configs(StreamSettings()))
    config = work_consumer(
        durable=ASSIGNED_CONSUMER,
        filter_subject=subjects.all_conversation_events("assigned"),
        ack_wait=timedelta(seconds=30),
        max_deliver=MAX_DELIVER,
    )
    await ensure_consumer(js, subjects.EVENTS_STREAM, config)
    conversations = [uuid.uuid4().hex for _ in range(count)]
    repository.conversations = {c: context(c) for c in conversations}
    # maria asked to hear of assignments by email; li asked for nothing
    repository.preferences_of = {"maria": Preferences({"assigned": ("email",)})}
    world = World(repository)
    consumer = AssignmentConsumer(
        js, world.service, Publisher(js, repository), max_deliver=MAX_DELIVER, retry_delay=0.1
    )
    return Setup(js, world, repository, consumer, conversations)


async def test_a_batch_reads_its_owners_preferences_once_and_tells_each_owner_who_asked_once(
    nc: Client,
) -> None:
    s = await setup(nc, Repository(), 6)
    await s.assign("maria", "li", "maria", "li", "maria", None)
    await s.deliver(6)
    assert s.repository.reads == 1
    assert s.told() == [s.conversations[0], s.conversations[2], s.conversations[4]]
    assert [m.to[0].email for m in s.world.email.sent] == ["maria@example.com"] * 3
    assert await s.settled()  # every message acknowledged, none to come again

    await s.assign("maria", "li", "maria", "li", "maria", None, copy=":again")
    await s.deliver(6)
    assert s.repository.reads == 2
    assert len(s.world.email.sent) == 3  # the same assignments: nobody is told twice
    assert await s.settled()


async def test_a_failing_notice_is_retried_alone_and_kept_on_the_dead_letter_on_its_last_delivery(
    nc: Client,
) -> None:
    repository = Repository()
    s = await setup(nc, repository, 3)
    repository.broken = {s.conversations[1]}
    await s.assign("maria", "maria", "maria")
    await s.deliver(3)
    assert s.told() == [s.conversations[0], s.conversations[2]]  # the others went on

    [again] = await s.deliver(1)  # the failing one alone, on its last delivery
    assert again.metadata.num_delivered == MAX_DELIVER
    [kept] = await s.dead_letters(1)
    assert kept.headers is not None
    assert kept.headers[DLQ_ERROR] == "RuntimeError: disk full"
    assert kept.headers[DLQ_SUBJECT].endswith(f".{s.conversations[1]}.assigned")
    assert s.told() == [s.conversations[0], s.conversations[2]]
    assert await s.settled()


async def test_when_reading_the_batch_s_preferences_fails_each_message_comes_again_then_goes_to_the_dead_letter(
    nc: Client,
) -> None:
    s = await setup(nc, Repository(failing_reads=2), 2)
    await s.assign("maria", "li")
    await s.deliver(2)
    assert s.told() == []
    await s.deliver(2)  # the last delivery of both
    kept = await s.dead_letters(2)
    assert [m.headers[DLQ_ERROR] for m in kept if m.headers] == [
        "ConnectionError: the database went away"
    ] * 2
    assert {m.headers[DLQ_SUBJECT].split(".")[3] for m in kept if m.headers} == set(s.conversations)
    assert s.told() == []
    assert await s.settled()
