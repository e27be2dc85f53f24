"""The outbound service's composition root: no public listener, only health and metrics.

It takes reply commands from NATS (only the inbox sends them, for a signed-in person), holds the
write credentials (sealed by `apply`, opened with the service secret key) and posts each reply
through its platform's API."""

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from services.outbound.clients import Clients
from services.outbound.consumers import CONSUMER, ReplyConsumer
from services.outbound.service import Outbound, Policy
from services.outbound.settings import OutboundSettings
from services.outbound.store import SqlStore
from shared import subjects
from shared.jetstream import BatchConsumer, work_consumer
from shared.metrics import every, metrics_router, observe_consumers
from shared.runtime import Runtime, health_router, install_error_handlers

log = logging.getLogger(__name__)


def youtube_reply_units(settings: OutboundSettings) -> int:
    """The part of the daily YouTube quota replies may take (the pollers keep the rest: see
    `services.ingest.main.polling_units`)."""
    return min(settings.youtube_reply_units, settings.youtube_daily_quota)


def create_app(settings: OutboundSettings) -> FastAPI:
    box = settings.service_secret_box()  # before anything starts: a missing key stops it, naming it
    runtime = Runtime(
        "outbound", settings, required_streams=(subjects.COMMANDS_STREAM, subjects.INTERACTIONS_STREAM)
    )
    state: dict[str, object] = {}

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        clients = Clients(allow_private_webhooks=settings.outbound_private_webhooks)
        service = Outbound(
            store=SqlStore(runtime.sessions),
            box=box,
            clients=clients.for_platform,
            policy=Policy(
                retry_delay=settings.outbound_retry_delay.total_seconds(),
                settle=settings.outbound_settle.total_seconds(),
                youtube_reply_units=youtube_reply_units(settings),
            ),
        )
        replies = ReplyConsumer(
            runtime.js,
            service,
            max_deliver=settings.outbound_max_deliver,
            concurrency=settings.outbound_concurrency,
            # A reply still being posted is never delivered to a second handler meanwhile.
            heartbeat=min(10.0, settings.outbound_ack_wait.total_seconds() / 3),
        )
        consumer = BatchConsumer(
            js=runtime.js,
            stream=subjects.COMMANDS_STREAM,
            config=work_consumer(
                durable=CONSUMER,
                filter_subject=subjects.all_outbound_commands(),
                ack_wait=settings.outbound_ack_wait,
                max_deliver=settings.outbound_max_deliver,
            ),
            handler=replies.handle_batch,
            batch_size=settings.outbound_concurrency,
        )
        await consumer.start()
        state["consumer"] = consumer
        gauges = asyncio.create_task(
            every(5, lambda: observe_consumers(runtime.js, [(subjects.COMMANDS_STREAM, CONSUMER)]))
        )
        try:
            yield
        finally:
            gauges.cancel()
            await consumer.stop()
            await replies.drain()
            await clients.close()
            await runtime.stop()

    async def consuming() -> dict[str, str]:
        consumer = state.get("consumer")
        running = isinstance(consumer, BatchConsumer) and consumer.running
        return {"consumer": "ok" if running else "stopped"}

    app = FastAPI(
        title="StayHuman outbound", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None
    )
    install_error_handlers(app)
    app.include_router(health_router(runtime, extra=consuming))
    app.include_router(metrics_router())
    return app
