"""Prometheus exposition for every service (`GET /metrics`), and the gauges they share."""

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from fastapi import APIRouter, Response
from nats.js import JetStreamContext
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

# With several worker processes (multiprocess mode), a gauge shows the value its last writer set.
CONSUMER_PENDING = Gauge(
    "stayhuman_consumer_pending",
    "Messages not yet delivered to a consumer (its lag)",
    ["stream", "consumer"],
    multiprocess_mode="livemostrecent",
)
CONSUMER_ACK_PENDING = Gauge(
    "stayhuman_consumer_ack_pending",
    "Messages delivered but not yet acknowledged",
    ["stream", "consumer"],
    multiprocess_mode="livemostrecent",
)


def metrics_router(multiprocess_dir: Path | None = None) -> APIRouter:
    """`GET /metrics`: this process's metrics; or, given the folder where several worker processes
    write theirs (Prometheus multiprocess mode), every worker's added up, whichever one answers."""
    router = APIRouter(tags=["operations"])

    @router.get("/metrics")
    async def metrics() -> Response:
        if multiprocess_dir is None:
            return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(multiprocess_dir))
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return router


async def observe_consumers(js: JetStreamContext, consumers: Sequence[tuple[str, str]]) -> None:
    for stream, consumer in consumers:
        info = await js.consumer_info(stream, consumer)
        CONSUMER_PENDING.labels(stream, consumer).set(info.num_pending or 0)
        CONSUMER_ACK_PENDING.labels(stream, consumer).set(info.num_ack_pending or 0)


async def every(seconds: float, *probes: Callable[[], Awaitable[None]]) -> None:
    """Refresh gauges in the background; a failing probe only skips its turn."""
    while True:
        for probe in probes:
            with contextlib.suppress(Exception):
                await probe()
        await asyncio.sleep(seconds)
