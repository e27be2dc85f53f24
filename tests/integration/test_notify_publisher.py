"""notify's publisher against a real nats-server: alert events go on the bus at once, and are
cleared from the outbox in one transaction for many alerts, never published twice by the relay."""

from dataclasses import dataclass

from nats.aio.client import Client

from services.notify.consumers import Publisher
from services.notify.memory import MemoryRepository
from services.notify.ports import Envelope, EventBatch
from services.notify.service import Outcome
from shared import subjects
from shared.jetstream import StreamSettings, ensure_streams, stream_configs
from tests.notify_world import T0


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
