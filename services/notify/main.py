"""The notify service's composition root."""

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parseaddr

from fastapi import FastAPI
from nats.js import JetStreamContext
from prometheus_client import Gauge
from py_vapid import Vapid
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from services.notify.acks import acks_router
from services.notify.consumers import (
    ASSIGNED_CONSUMER,
    COMMAND_CONSUMER,
    DEADLINE_CONSUMER,
    OPERATOR_CONSUMER,
    TIMER_CONSUMER,
    AssignmentConsumer,
    CommandAcknowledger,
    CommandConsumer,
    DeadlineConsumer,
    OperatorConsumer,
    Publisher,
    TimerConsumer,
)
from services.notify.mailbox import mailbox_router
from services.notify.mailer import SmtpMailer
from services.notify.ports import Channel
from services.notify.push import PushSender, SqlPushStore, load_vapid, push_router
from services.notify.scheduler import TimerScheduler
from services.notify.senders import AppriseChannel, EmailChannel, Mailer, PushChannel
from services.notify.service import NotifyService, Policy
from services.notify.settings import NotifySettings
from services.notify.sql import SqlRepository
from services.notify.templates import Templates
from shared import subjects
from shared.events import utcnow
from shared.jetstream import BatchConsumer, BatchHandler, work_consumer
from shared.metrics import every, observe_consumers
from shared.runtime import Runtime, install_error_handlers, liveness_router, ops_app
from shared.secrets import LinkSigner, SecretBox
from shared.settings import SettingsError

log = logging.getLogger(__name__)

TIMER_MESSAGES = Gauge(
    "stayhuman_notify_timer_stream_messages", "Messages in the timer stream (armed timers)"
)
TIMER_BYTES = Gauge("stayhuman_notify_timer_stream_bytes", "Bytes stored by the timer stream")


async def observe_storage(scheduler: TimerScheduler) -> None:
    messages, size = await scheduler.storage()
    TIMER_MESSAGES.set(messages)
    TIMER_BYTES.set(size)


class SystemClock:
    def now(self) -> datetime:
        return utcnow()


class RandomIds:
    def new(self) -> str:
        return uuid.uuid4().hex


@dataclass
class NotifyWorkers:
    """Notify's moving parts: the service, its timer scheduler, and the consumers that feed it."""

    scheduler: TimerScheduler
    consumers: list[BatchConsumer]
    sessions: async_sessionmaker[AsyncSession]
    service: NotifyService
    publisher: Publisher
    timers: TimerConsumer
    reconciling: "asyncio.Task[int] | None" = None

    async def start(self) -> None:
        """Consume at once; re-arm what the timers stream lacks meanwhile. With a million
        deadlines armed the reconciler reads them all (minutes), and notify is ready and sending
        before it ends, not after."""
        for consumer in self.consumers:
            await consumer.start()
        self.reconciling = asyncio.create_task(self._reconcile(), name="reconcile-timers")

    async def _reconcile(self) -> int:
        try:
            return await self.service.reconcile()
        except Exception:
            log.exception("timers not reconciled; the next start tries again")
            return 0

    async def stop(self) -> None:
        if self.reconciling is not None and not self.reconciling.done():
            self.reconciling.cancel()
            await asyncio.gather(self.reconciling, return_exceptions=True)
        for consumer in self.consumers:
            await consumer.stop()
        await self.timers.drain()
        await self.publisher.flush()

    @property
    def running(self) -> bool:
        return all(consumer.running for consumer in self.consumers)


def public_url(settings: NotifySettings) -> str:
    return settings.public_url or f"http://127.0.0.1:{settings.notify_port}"


@dataclass(frozen=True)
class Keys:
    """notify's keys, from its settings only: a service never makes one, so that every
    replica seals, signs and pushes with the same keys."""

    box: SecretBox
    signer: LinkSigner
    vapid: Vapid


def keys_of(settings: NotifySettings) -> Keys:
    """The keys, or SettingsError naming the variable that is missing or invalid."""
    box = settings.service_secret_box()
    if not settings.vapid_private_key:
        raise SettingsError(
            "STAYHUMAN_VAPID_PRIVATE_KEY is not set: notify signs Web Push with it, the same key on "
            "every replica (`stayhuman up` passes its development key)"
        )
    return Keys(box, settings.link_signer(box), load_vapid(settings.vapid_private_key.get_secret_value()))


def build_workers(
    js: JetStreamContext,
    sessions: async_sessionmaker[AsyncSession],
    settings: NotifySettings,
    mailer: Mailer,
    keys: Keys | None = None,
) -> NotifyWorkers:
    keys = keys or keys_of(settings)
    scheduler = TimerScheduler(js)
    repository = SqlRepository(sessions)
    push = PushSender(
        vapid=keys.vapid,
        contact=settings.vapid_contact or f"mailto:{parseaddr(settings.smtp_from)[1]}",
        sessions=sessions,
        trusted=settings.trusted_push_hosts,
    )
    channels: list[Channel] = [
        EmailChannel(mailer, settings.smtp_from, settings.smtp_timeout),
        PushChannel(push, lambda: sessions),
        AppriseChannel(keys.box, lambda: sessions),
    ]
    service = NotifyService(
        repository=repository,
        scheduler=scheduler,
        channels={channel.name.value: channel for channel in channels},
        clock=SystemClock(),
        ids=RandomIds(),
        policy=Policy(
            public_url=public_url(settings),
            signer=keys.signer,
            retry_initial=settings.alert_retry_initial,
            retry_max=settings.alert_retry_max,
            max_attempts=settings.alert_max_attempts,
            send_timeout=settings.smtp_timeout,
            group_window=settings.alert_group_window if settings.alert_grouping else timedelta(0),
            group_after=settings.alert_group_after,
            warning_digest=settings.warning_digest,
            operator=settings.operator_email,
            templates=Templates(settings.templates_dir),
        ),
    )
    publisher = Publisher(js, repository)
    retries = settings.notify_max_deliver
    retry_delay = settings.alert_retry_initial.total_seconds()
    timers = TimerConsumer(
        js, service, publisher, max_deliver=retries, retry_delay=retry_delay,
        drain_timeout=settings.smtp_timeout.total_seconds() + 5,
    )  # fmt: skip
    deadlines = DeadlineConsumer(js, service)
    assignments = AssignmentConsumer(js, service, publisher, max_deliver=retries, retry_delay=retry_delay)
    # An SMTP outage must not lose an operator alert: it is retried far longer.
    operators = OperatorConsumer(js, service, publisher, max_deliver=1000)
    commands = CommandConsumer(js, service, publisher, max_deliver=retries, retry_delay=retry_delay)

    def durable(
        stream: str,
        name: str,
        subjects_filter: str,
        handler: BatchHandler,
        *,
        batch_size: int,
        max_deliver: int,
    ) -> BatchConsumer:
        config = work_consumer(
            durable=name,
            filter_subject=subjects_filter,
            ack_wait=settings.notify_ack_wait,
            max_deliver=max_deliver,
        )
        return BatchConsumer(js=js, stream=stream, config=config, handler=handler, batch_size=batch_size)

    consumers = [
        durable(
            subjects.EVENTS_STREAM, DEADLINE_CONSUMER, subjects.all_deadlines(), deadlines.handle_batch,
            batch_size=500, max_deliver=retries,
        ),
        durable(
            subjects.TIMERS_STREAM, TIMER_CONSUMER, subjects.all_timers_fired(), timers.handle_batch,
            batch_size=64, max_deliver=retries,
        ),
        durable(
            subjects.EVENTS_STREAM, ASSIGNED_CONSUMER, subjects.all_conversation_events("assigned"),
            assignments.handle_batch, batch_size=64, max_deliver=retries,
        ),
        durable(
            subjects.EVENTS_STREAM, OPERATOR_CONSUMER, subjects.all_connector_problems(), operators.handle_batch,
            batch_size=16, max_deliver=1000,
        ),
        durable(
            subjects.COMMANDS_STREAM, COMMAND_CONSUMER, subjects.all_notify_commands(), commands.handle_batch,
            batch_size=64, max_deliver=retries,
        ),
    ]  # fmt: skip
    return NotifyWorkers(scheduler, consumers, sessions, service, publisher, timers)


def create_app(settings: NotifySettings) -> FastAPI:
    keys = keys_of(settings)  # before anything starts: a missing key stops notify, naming it
    runtime = Runtime(
        "notify",
        settings,
        required_streams=(subjects.EVENTS_STREAM, subjects.TIMERS_STREAM, subjects.COMMANDS_STREAM),
    )
    mailer = SmtpMailer(settings)
    state: dict[str, NotifyWorkers] = {}

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        workers = build_workers(runtime.js, runtime.sessions, settings, mailer, keys)
        await workers.start()
        state["workers"] = workers
        storage = asyncio.create_task(
            every(
                5,
                lambda: observe_storage(workers.scheduler),
                lambda: observe_consumers(
                    runtime.js,
                    [
                        (subjects.EVENTS_STREAM, DEADLINE_CONSUMER),
                        (subjects.TIMERS_STREAM, TIMER_CONSUMER),
                        (subjects.COMMANDS_STREAM, COMMAND_CONSUMER),
                    ],
                ),
                workers.publisher.relay_pending,
            )
        )
        try:
            yield
        finally:
            storage.cancel()
            await workers.stop()
            await runtime.stop()

    async def consuming() -> dict[str, str]:
        workers = state.get("workers")
        return {"consumers": "ok" if workers is not None and workers.running else "stopped"}

    # The public listener serves the pages people open from alerts (acknowledge, push
    # registration, the dev mailbox) and liveness; readiness, metrics and docs are on the
    # operations listener (STAYHUMAN_NOTIFY_OPS_PORT).
    app = FastAPI(
        title="StayHuman notify", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None
    )
    install_error_handlers(app)
    app.include_router(liveness_router(runtime))
    app.state.ops_app = ops_app(runtime, app, extra=consuming)

    def parts() -> tuple[NotifyService, Publisher] | None:
        workers = state.get("workers")
        return (workers.service, workers.publisher) if workers is not None else None

    app.include_router(acks_router(signer=keys.signer, acknowledger=CommandAcknowledger(parts)))
    app.include_router(
        push_router(
            signer=keys.signer,
            vapid=keys.vapid,
            store=SqlPushStore(lambda: state["workers"].sessions if "workers" in state else None),
            trusted=settings.trusted_push_hosts,
        )
    )
    if settings.dev_mailbox_dir is not None:
        app.include_router(mailbox_router(settings.dev_mailbox_dir))
    return app
