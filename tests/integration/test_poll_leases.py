"""One poller per account across ingest replicas: two supervisors, one fake platform over real
HTTP, a real nats-server holding the leases, one database."""

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import httpx
import nats
import pytest
from nats.aio.client import Client

from services.ingest.connectors import mastodon
from services.ingest.leases import BUCKET, Leases, bucket_config
from services.ingest.pollers import PollerSupervisor
from shared import subjects
from shared.db.session import create_engine, session_factory
from shared.jetstream import StreamSettings, ensure_streams, stream_configs
from shared.secrets import SecretBox, new_key
from stayhuman.natsserver import EmbeddedNats
from tests.fake_platforms import FakeMastodon
from tests.helpers import eventually
from tests.poller_world import CountingPublisher, configure_polled_accounts

TTL = 3.0


@pytest.fixture
def masto() -> Iterator[FakeMastodon]:
    fake = FakeMastodon().start()
    yield fake
    fake.stop()


@dataclass
class Replica:
    """One ingest replica's pollers, with the requests it made to the platform."""

    nc: Client
    supervisor: PollerSupervisor
    publisher: CountingPublisher
    requests: list[float] = field(default_factory=list)  # when


@dataclass
class Installation:
    nats_server: EmbeddedNats
    database_url: str
    box: SecretBox
    replicas: list[Replica] = field(default_factory=list)

    async def replica(self) -> Replica:
        nc = await nats.connect(self.nats_server.url)
        requests: list[float] = []

        async def note(_request: httpx.Request) -> None:
            requests.append(time.monotonic())

        publisher = CountingPublisher(nc)
        supervisor = PollerSupervisor(
            session_factory(create_engine(self.database_url)), publisher, self.box, interval=0.2,
            leases=Leases(nc.jetstream(), ttl=TTL),
            http=httpx.AsyncClient(timeout=10, event_hooks={"request": [note]}),
        )  # fmt: skip
        supervisor.start()
        self.replicas.append(Replica(nc, supervisor, publisher, requests))
        return self.replicas[-1]


@pytest.fixture
async def installation(
    nats_server: EmbeddedNats, nc: Client, database_url: str, masto: FakeMastodon
) -> AsyncIterator[Installation]:
    await ensure_streams(nc.jetstream(), stream_configs(StreamSettings()))
    engine = create_engine(database_url)
    box = SecretBox(new_key())
    accounts = [("masto", "mastodon", masto.own_id, masto.url, masto.token)]
    await configure_polled_accounts(session_factory(engine), box, accounts)
    await engine.dispose()
    world = Installation(nats_server, database_url, box)
    yield world
    for replica in world.replicas:
        with contextlib.suppress(Exception):
            await replica.supervisor.stop()
        await replica.nc.close()


async def feed(masto: FakeMastodon, numbers: range, every: float = 0.05) -> None:
    for number in numbers:
        masto.mention(number)
        await asyncio.sleep(every)


async def test_one_replica_polls_an_account_and_another_goes_on_when_it_stops(
    installation: Installation, masto: FakeMastodon, nc: Client
) -> None:
    first, second = await installation.replica(), await installation.replica()

    async def polled_a_while() -> bool:
        return len(first.requests) + len(second.requests) >= 10

    await eventually(polled_a_while, timeout=20, what="ten polls")
    holder, other = (first, second) if first.requests else (second, first)
    assert (
        other.requests == [] and other.supervisor.polling == set() and holder.supervisor.polling == {"masto"}
    )

    # a poll slower than the lease: the holder keeps renewing it, the other keeps out
    masto.delay = TTL * 1.5
    slow = len(holder.requests)
    await eventually(lambda: _more(holder, slow + 2), timeout=30, what="two slow polls")
    masto.delay = 0.0
    assert other.requests == []

    feeding = asyncio.create_task(feed(masto, range(0, 60)))
    await eventually(lambda: _published(holder, 5), timeout=20, what="the first mentions")
    stopped = time.monotonic()
    await holder.supervisor.stop()  # a clean stop gives the lease up
    await eventually(lambda: _more(other, 1), timeout=TTL, what="the other replica taking over")
    assert other.requests[0] - stopped < TTL
    await feeding

    async def all_stored() -> bool:
        return len(set(holder.publisher.published + other.publisher.published)) >= 60

    await eventually(all_stored, timeout=20, what="every mention")
    published = holder.publisher.published + other.publisher.published
    expected = {str(5_000_000 + number) for number in range(60)}
    assert set(published) == expected  # no gap
    # A stop can land between a page's ack and its cursor: the next holder reads that page
    # again, and JetStream keeps each message once (its Nats-Msg-Id). Stored once, all of them:
    assert len(published) - len(expected) <= mastodon.PAGE  # at most a page again
    stream = await nc.jetstream().stream_info(subjects.INTERACTIONS_STREAM)
    assert stream.state.messages == 60


async def test_a_replica_cut_off_from_nats_stops_and_another_takes_over_within_the_lease(
    installation: Installation, masto: FakeMastodon
) -> None:
    first = await installation.replica()
    await eventually(lambda: _more(first, 1), timeout=20, what="the first poll")
    second = await installation.replica()
    await first.nc.close()  # no more renewals: as a killed replica, but still able to reach the platform
    cut = time.monotonic()
    await eventually(lambda: _more(second, 1), timeout=TTL * 3, what="the other replica taking over")
    taken = second.requests[0] - cut
    assert taken < TTL + TTL / 3 + 1, taken
    assert first.supervisor.polling == set() and not [t for t in first.requests if t > second.requests[0]]
    masto.mention(1)
    await eventually(lambda: _published(second, 1), timeout=10, what="the new holder's first mention")
    assert second.publisher.published == ["5000001"] and first.publisher.published == []


async def test_the_lease_bucket_is_declared_like_a_stream(nc: Client) -> None:
    js = nc.jetstream()
    await asyncio.gather(*(Leases(js, ttl=TTL).declare() for _ in range(3)))  # replicas starting at once
    longer, other = Leases(js, ttl=TTL * 2), Leases(js, ttl=TTL * 2)
    await longer.declare()  # a changed lease time updates the bucket
    await other.declare()
    info = await js.stream_info(f"KV_{BUCKET}")
    assert info.config.max_age == TTL * 2 and info.config.max_msgs_per_subject == 1
    assert info.config.subjects == bucket_config(ttl=TTL * 2, replicas=1).subjects
    assert await longer.keep(["acct-1", "acct-2"]) == {"acct-1", "acct-2"}
    assert await other.keep(["acct-1", "acct-2", "acct-3"]) == {"acct-3"}
    await longer.release(["acct-2"])
    assert await other.keep(["acct-1", "acct-2", "acct-3"]) == {"acct-2", "acct-3"}


async def _more(replica: Replica, count: int) -> bool:
    return len(replica.requests) >= count


async def _published(replica: Replica, count: int) -> bool:
    return len(replica.publisher.published) >= count
