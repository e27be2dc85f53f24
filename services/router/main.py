"""The router service's composition root."""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from prometheus_client import Gauge

from services.router import store
from services.router.handler import CONSUMER, InteractionRouter, OutboxRelay
from services.router.settings import RouterSettings
from shared import subjects
from shared.db.session import sqlite_path
from shared.jetstream import BatchConsumer, work_consumer
from shared.locks import LockFile
from shared.metrics import every, metrics_router, observe_consumers
from shared.runtime import Runtime, health_router, install_error_handlers

log = logging.getLogger(__name__)

OPEN_CONVERSATIONS = Gauge(
    "stayhuman_team_open_conversations",
    "Conversations waiting for the brand's answer, per team (assigned: with an owner; else in the team queue)",
    ["tenant", "team", "assigned"],
)


async def observe_queues(runtime: Runtime) -> None:
    async with runtime.sessions() as session:
        rows = await store.count_open_by_team(session=session)
    OPEN_CONVERSATIONS.clear()
    for tenant, team, owned, count in rows:
        OPEN_CONVERSATIONS.labels(tenant, team, "yes" if owned else "no").set(count)


def sqlite_lock(settings: RouterSettings) -> LockFile | None:
    path = sqlite_path(settings.sqlalchemy_url)
    return LockFile(Path(f"{path}.router.lock")) if path else None


async def relay_forever(relay: OutboxRelay, interval: float) -> None:
    with contextlib.suppress(Exception):
        await relay.relay_once(everything=True)
    while True:
        await asyncio.sleep(interval)
        try:
            await relay.relay_once()
        except Exception:
            log.warning("outbox relay failed; will retry", exc_info=True)


def create_app(settings: RouterSettings) -> FastAPI:
    runtime = Runtime(
        "router",
        settings,
        required_streams=(subjects.INTERACTIONS_STREAM, subjects.EVENTS_STREAM),
    )
    lock = sqlite_lock(settings)
    if lock is not None:
        lock.acquire("a router")  # before anything else: a second one must not start at all
    state: dict[str, BatchConsumer] = {}

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        router = InteractionRouter(
            js=runtime.js,
            sessions=runtime.sessions,
            backfill_cutoff=settings.backfill_cutoff,
            max_deliver=settings.router_max_deliver,
        )
        consumer = BatchConsumer(
            js=runtime.js,
            stream=subjects.INTERACTIONS_STREAM,
            config=work_consumer(
                durable=CONSUMER,
                filter_subject=subjects.all_interactions(),
                ack_wait=settings.router_ack_wait,
                max_deliver=settings.router_max_deliver,
            ),
            handler=router.handle_batch,
            batch_size=settings.router_batch_size,
        )
        await consumer.start()
        state["consumer"] = consumer
        gauges = asyncio.create_task(
            every(
                5,
                lambda: observe_queues(runtime),
                lambda: observe_consumers(runtime.js, [(subjects.INTERACTIONS_STREAM, CONSUMER)]),
            )
        )
        relay = asyncio.create_task(
            relay_forever(
                OutboxRelay(runtime.js, runtime.sessions),
                settings.outbox_relay_interval.total_seconds(),
            )
        )
        try:
            yield
        finally:
            relay.cancel()
            gauges.cancel()
            await consumer.stop()
            await runtime.stop()
            if lock is not None:
                lock.release()

    async def consuming() -> dict[str, str]:
        consumer = state.get("consumer")
        return {"consumer": "ok" if consumer is not None and consumer.running else "stopped"}

    app = FastAPI(title="StayHuman router", lifespan=lifespan)
    install_error_handlers(app)
    app.include_router(health_router(runtime, extra=consuming))
    app.include_router(metrics_router())
    return app
