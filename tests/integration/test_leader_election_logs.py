"""A stream leader election is expected on a cluster: it is logged as a warning per episode,
without tracebacks, while the consumers and publishers wait it out."""

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import StorageType, StreamConfig

from shared.jetstream import BatchConsumer, Outgoing, publish_pipelined, work_consumer
from shared.logs import Episodes
from tests.cluster import NatsCluster
from tests.helpers import eventually

CONSUMERS = 4


async def holds(condition: bool) -> bool:
    return condition


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[NatsCluster]:
    running = NatsCluster(tmp_path / "nats").start()
    yield running
    running.stop()


async def test_a_consumer_leader_lost_is_one_warning_without_traceback(
    cluster: NatsCluster, caplog: pytest.LogCaptureFixture
) -> None:
    async def quiet(_error: Exception) -> None:
        """As the services do: connection errors go to their own callback, not nats-py's log."""

    nc: Client = await nats.connect(
        cluster.urls.split(","), max_reconnect_attempts=-1, reconnect_time_wait=0.5, error_cb=quiet
    )
    js = nc.jetstream()
    for name in ("IN", "OUT"):
        subjects = [f"{name.lower()}.>"]
        await js.add_stream(
            StreamConfig(name=name, subjects=subjects, num_replicas=3, storage=StorageType.FILE)
        )
    handled: set[int] = set()

    async def forward(batch: list[Msg]) -> None:
        """The router's shape: publish what the batch leads to, then acknowledge it."""
        await publish_pipelined(
            js, [Outgoing(f"out.{m.metadata.sequence.stream}", b"x", f"out-{m.subject}") for m in batch]
        )
        for msg in batch:
            await msg.ack()
            handled.add(int(msg.subject.rpartition(".")[2]))

    consumers = [
        BatchConsumer(
            js,
            "IN",
            work_consumer(
                durable=f"lane-{i}", filter_subject=f"in.{i}.>", ack_wait=timedelta(seconds=5), max_deliver=50
            ),
            forward,
            idle_timeout=1.0,
            retry_delay=0.2,
        )
        for i in range(CONSUMERS)
    ]
    for consumer in consumers:
        await consumer.start()
    sent = 0
    stop = asyncio.Event()

    async def produce() -> None:
        nonlocal sent
        while not stop.is_set():
            await publish_pipelined(js, [Outgoing(f"in.{sent % CONSUMERS}.{sent}", b"x", f"in-{sent}")])
            sent += 1
            await asyncio.sleep(0.01)

    caplog.set_level(logging.DEBUG, logger="shared")
    producer = asyncio.create_task(produce())
    try:
        await eventually(lambda: holds(len(handled) > 50), timeout=20, what="traffic")
        leader = (await js.consumer_info("IN", "lane-0")).cluster
        assert leader is not None and leader.leader
        cluster.node_named(leader.leader).kill()  # the stream's and its consumers' leader, often
        await eventually(
            lambda: holds(any("retrying" in r.getMessage() for r in caplog.records)),
            timeout=30,
            what="the election to be felt",
        )
        await asyncio.sleep(8)  # a leader election and its retries: seconds
        stop.set()
        await producer
        await eventually(lambda: holds(handled >= set(range(sent))), timeout=60, what="every message")
    finally:
        stop.set()
        for consumer in consumers:
            await consumer.stop()
        await nc.close()

    ours = [r for r in caplog.records if r.name.startswith("shared")]
    assert [r for r in ours if r.levelno >= logging.ERROR or r.exc_info] == []
    warnings: dict[str, int] = {}
    for record in ours:
        if record.levelno == logging.WARNING:
            key = f"{record.getMessage()} {getattr(record, 'consumer', '')}"
            warnings[key] = warnings.get(key, 0) + 1
    assert warnings and all(count == 1 for count in warnings.values()), warnings


def test_an_episode_is_one_warning_and_the_next_counts_the_rest(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("shared.test")
    caplog.set_level(logging.DEBUG, logger="shared.test")
    episodes = Episodes(every=0.2)
    for _ in range(5):
        episodes.warn(log, "fetch A", "fetch failed; retrying", error="ServiceUnavailableError()")
    episodes.warn(log, "fetch B", "fetch failed; retrying", error="ServiceUnavailableError()")
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "fetch failed; retrying"),
        *[("DEBUG", "fetch failed; retrying")] * 4,
        ("WARNING", "fetch failed; retrying"),  # another kind has its own episode
    ]
    caplog.clear()
    time.sleep(0.25)
    episodes.warn(log, "fetch A", "fetch failed; retrying")
    (record,) = caplog.records
    assert record.levelname == "WARNING" and getattr(record, "repeated", None) == 4
