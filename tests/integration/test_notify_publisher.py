"""notify's publisher and timer consumer against a real nats-server: alert events go on the bus
at once and are cleared from the outbox in one transaction for many alerts, never published twice
by the relay; a batch of fired timers that fails is tried one timer at a time."""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from nats.aio.client import Client

from services.notify.consumers import Publisher, TimerConsumer
from services.notify.memory import MemoryRepository
from services.notify.ports import AlertStart, AlertStarted, Envelope, EventBatch
from services.notify.service import Outcome
from shared import subjects
from shared.jetstream import StreamSettings, ensure_streams, stream_configs
from tests.notify_world import T0, World, context, deadline, fired


@dataclass
class Outbox(MemoryRepository):
    """notify's in-memory repository, counting the transactions that clear its outbox."""

    deletes: int = 0
    broken: bool = False

    async def published(self, ids: list[str]) -> None:
        if self.broken:
            raise ConnectionError("database is restarting")
        self.deletes += 1
        await super().published(ids)


def committed(outbox: Outbox, n: int) -> Outcome:
    """An alert's outcome: one event, committed in the outbox long ago (its relay grace is past)."""
    envelope = Envelope(
        subjects.alert_event(tenant_id="acme", outcome="sent"), f"alert-{n}", b'{"n": %d}' % n
    )
    batch = EventBatch(id=f"batch-{n}", envelopes=(envelope,))
    outbox.outbox[batch.id] = (batch, T0)
    return Outcome(events=(batch,))


async def on_the_bus(nc: Client) -> int:
    info = await nc.jetstream().stream_info(subjects.EVENTS_STREAM, subjects_filter="sh.alert.>")
    return info.state.messages


async def test_the_outbox_is_cleared_once_for_many_alerts_and_the_relay_never_doubles_them(
    nc: Client,
) -> None:
    js = nc.jetstream()
    await ensure_streams(js, stream_configs(StreamSettings()))
    outbox = Outbox()
    publisher = Publisher(js, outbox, flush_every=3)

    for n in (1, 2):
        await publisher.publish(committed(outbox, n), stream=subjects.EVENTS_STREAM, consumer="test")
    assert await on_the_bus(nc) == 2
    assert outbox.deletes == 0 and len(outbox.outbox) == 2

    await publisher.publish(committed(outbox, 3), stream=subjects.EVENTS_STREAM, consumer="test")
    assert outbox.deletes == 1 and outbox.outbox == {}

    await publisher.publish(committed(outbox, 4), stream=subjects.EVENTS_STREAM, consumer="test")
    assert len(outbox.outbox) == 1
    assert await publisher.relay() == 0  # cleared first, not published again
    assert outbox.outbox == {}
    assert await on_the_bus(nc) == 4


async def test_a_failed_clear_keeps_the_ids_for_the_next(nc: Client) -> None:
    js = nc.jetstream()
    await ensure_streams(js, stream_configs(StreamSettings()))
    outbox = Outbox(broken=True)
    publisher = Publisher(js, outbox, flush_every=1)

    await publisher.publish(committed(outbox, 1), stream=subjects.EVENTS_STREAM, consumer="test")
    assert set(outbox.outbox) == {"batch-1"}

    outbox.broken = False
    await publisher.flush()
    assert outbox.outbox == {} and outbox.deletes == 1
    assert await on_the_bus(nc) == 1


@dataclass
class Poisoned(MemoryRepository):
    """notify's in-memory repository, whose transaction fails for any batch holding `poison`."""

    poison: str = ""
    batches: int = 0

    async def start_alerts(
        self, starts: Sequence[AlertStart], *, lease_until: datetime, now: datetime
    ) -> list[AlertStarted]:
        self.batches += 1
        if any(start.fired.conversation_id == self.poison for start in starts):
            raise ValueError("a row the database refuses")
        return await super().start_alerts(starts, lease_until=lease_until, now=now)


async def test_a_batch_of_timers_that_fails_is_tried_one_by_one_so_the_others_still_alert(nc: Client) -> None:
    js = nc.jetstream()
    await ensure_streams(js, stream_configs(StreamSettings()))
    good, bad = "a" * 32, "b" * 32
    repository = Poisoned(conversations={c: context(c) for c in (good, bad)}, poison=bad)
    world = World(repository)
    await world.service.deadlines_changed([deadline(good, 1, T0), deadline(bad, 1, T0)])
    for cid in (bad, good):
        await js.publish(
            subjects.timer_fired(tenant_id="acme", conversation_id=cid),
            fired(cid, 1).model_dump_json().encode(),
        )
    pull = await js.pull_subscribe(subjects.all_timers_fired(), "test-timers", stream=subjects.TIMERS_STREAM)
    msgs = await pull.fetch(2, timeout=5)
    consumer = TimerConsumer(js, world.service, Publisher(js, repository), max_deliver=5, retry_delay=30)

    await consumer.handle_batch(msgs)
    await consumer.drain()

    assert repository.batches == 3  # the batch of two, then each alone
    assert [m.key for m in world.email.sent] == [f"overdue.{good}.v1"]
    info = await js.consumer_info(subjects.TIMERS_STREAM, "test-timers")
    assert info.num_ack_pending == 1  # the poisoned one, nak'ed: it comes again after its delay
