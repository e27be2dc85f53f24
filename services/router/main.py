"""The router service's composition root."""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from prometheus_client import Gauge

from services.router.consumers import (
    COMMANDS_CONSUMER,
    CONSUMER,
    TIMERS_CONSUMER,
    CommandConsumer,
    InteractionConsumer,
    OutboxRelay,
)
from services.router.service import Router
from services.router.settings import RouterSettings
from services.router.sql import SqlRepository
from shared import subjects
from shared.commands import CheckAvailability
from shared.db.session import is_sqlite
from shared.events import utcnow
from shared.jetstream import BatchConsumer, publish_pipelined, work_consumer
from shared.messages import command_outgoing
from shared.metrics import every, metrics_router, observe_consumers
from shared.runtime import Runtime, health_router, install_error_handlers

log = logging.getLogger(__name__)

OPEN_CONVERSATIONS = Gauge(
    "stayhuman_team_open_conversations",
    "Conversations waiting for the brand's answer, per team (assigned: with an owner; else in the team queue)",
    ["tenant", "team", "assigned"],
)


async def observe_queues(repository: SqlRepository) -> None:
    rows = await repository.count_open_by_team()
    OPEN_CONVERSATIONS.clear()
    for tenant, team, owned, count in rows:
        OPEN_CONVERSATIONS.labels(tenant, team, "yes" if owned else "no").set(count)


def interaction_lanes(handler: Any, batch_size: int) -> list[tuple[str, str, str, Any, int]]:
    """One durable consumer per lane of the interactions stream, so that a tenant with a
    backlog (in its lane) does not hold up the others; the routing transactions of all
    lanes take turns on the process's lock. `router-interactions` keeps the interactions
    stored before lanes existed (`sh.ix.<tenant>.<account>`) flowing after an upgrade."""
    lanes = [
        (
            subjects.INTERACTIONS_STREAM,
            f"{CONSUMER}-{lane}",
            subjects.interaction_lane(lane),
            handler,
            batch_size,
        )
        for lane in range(subjects.LANES)
    ]
    return [(subjects.INTERACTIONS_STREAM, CONSUMER, subjects.LANE_SOURCE, handler, batch_size), *lanes]


async def check_everyone(runtime: Runtime, repository: SqlRepository) -> None:
    """At start, have every person's availability checked once: their shift timers are armed
    (again) and anything a lost timer should have done is done now. Several replicas starting
    in the same minute send it once (the same message ids)."""
    now = utcnow()
    people = await repository.people_with_schedules()
    minute = now.strftime("%Y%m%d%H%M")
    await publish_pipelined(
        runtime.js,
        [
            command_outgoing(
                CheckAvailability(command_id=f"start-{person}-{minute}", person_id=person, issued_by="router")
            )
            for person in people
        ],
    )


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
        exclusive_writes=True,  # SQLite: routers take turns, a whole unit of work each
        required_streams=(
            subjects.INTERACTIONS_STREAM,
            subjects.EVENTS_STREAM,
            subjects.COMMANDS_STREAM,
            subjects.TIMERS_STREAM,
        ),
    )
    state: dict[str, list[BatchConsumer]] = {}

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        repository = SqlRepository(runtime.sessions)
        service = Router(repository, backfill_cutoff=settings.backfill_cutoff)
        units = 1 if is_sqlite(settings.sqlalchemy_url) else settings.router_concurrency
        router = InteractionConsumer(
            js=runtime.js,
            router=service,
            max_deliver=settings.router_max_deliver,
            lock=asyncio.Semaphore(units),
        )
        commands = CommandConsumer(
            js=runtime.js,
            router=service,
            max_deliver=settings.router_max_deliver,
            lock=router.lock,  # the process's units of work, whoever starts them
        )
        timers = CommandConsumer(
            js=runtime.js,
            router=service,
            max_deliver=settings.router_max_deliver,
            lock=router.lock,
            consumer=TIMERS_CONSUMER,
        )
        consumers = [
            BatchConsumer(
                js=runtime.js,
                stream=stream,
                config=work_consumer(
                    durable=durable,
                    filter_subject=filter_subject,
                    ack_wait=settings.router_ack_wait,
                    max_deliver=settings.router_max_deliver,
                ),
                handler=handler,
                batch_size=batch_size,
            )
            for stream, durable, filter_subject, handler, batch_size in (
                *interaction_lanes(router.handle_batch, settings.router_batch_size),
                (
                    subjects.COMMANDS_STREAM,
                    COMMANDS_CONSUMER,
                    subjects.all_commands(),
                    commands.handle_batch,
                    50,
                ),
                (
                    subjects.TIMERS_STREAM,
                    TIMERS_CONSUMER,
                    subjects.all_router_timers_fired(),
                    timers.handle_batch,
                    50,
                ),
            )
        ]
        for consumer in consumers:
            await consumer.start()
        state["consumers"] = consumers
        await check_everyone(runtime, repository)
        gauges = asyncio.create_task(
            every(
                5,
                lambda: observe_queues(repository),
                lambda: observe_consumers(
                    runtime.js,
                    [
                        *((subjects.INTERACTIONS_STREAM, lane[1]) for lane in interaction_lanes(None, 0)),
                        (subjects.COMMANDS_STREAM, COMMANDS_CONSUMER),
                        (subjects.TIMERS_STREAM, TIMERS_CONSUMER),
                    ],
                ),
            )
        )
        relay = asyncio.create_task(
            relay_forever(
                OutboxRelay(runtime.js, repository, router=service),
                settings.outbox_relay_interval.total_seconds(),
            )
        )
        try:
            yield
        finally:
            relay.cancel()
            gauges.cancel()
            for consumer in consumers:
                await consumer.stop()
            await runtime.stop()

    async def consuming() -> dict[str, str]:
        consumers = state.get("consumers") or []
        running = bool(consumers) and all(consumer.running for consumer in consumers)
        return {"consumer": "ok" if running else "stopped"}

    app = FastAPI(title="StayHuman router", lifespan=lifespan)
    install_error_handlers(app)
    app.include_router(health_router(runtime, extra=consuming))
    app.include_router(metrics_router())
    return app
