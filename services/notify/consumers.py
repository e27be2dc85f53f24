"""notify's consumers: decode each message, hand it to the service, publish what the outcome
says, then ack or nak. Poison messages and the last delivery of a failing one go to the dead
letter; slow work keeps telling JetStream it is in progress."""

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, ClassVar, TypeVar

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from pydantic import ValidationError

from services.notify.acks import Acknowledged, NotifyStarting
from services.notify.decisions import AckOutcome
from services.notify.ports import Envelope, NotifyRepository
from services.notify.service import NotifyService, Outcome, Sending
from services.notify.timers import TimerPayload
from shared import subjects
from shared.commands import Acknowledge, notify_command_adapter
from shared.events import ConnectorProblem, ConversationAssigned, DeadlineChanged, utcnow
from shared.jetstream import ack_all, dead_letter, is_last_delivery, keep_dead_letter, publish_pipelined
from shared.messages import Outgoing
from shared.tracing import span

log = logging.getLogger(__name__)

DEADLINE_CONSUMER = "notify-deadlines"
TIMER_CONSUMER = "notify-timers"
ASSIGNED_CONSUMER = "notify-assignments"
OPERATOR_CONSUMER = "notify-operators"
COMMAND_CONSUMER = "notify-commands"

T = TypeVar("T")


async def with_heartbeat(msgs: list[Msg], work: Awaitable[T], every: float = 10.0) -> T:
    """Run `work`, telling JetStream its messages are in progress while it is slow."""
    task = asyncio.ensure_future(work)
    while True:
        done, _ = await asyncio.wait({task}, timeout=every)
        if done:
            return task.result()
        for msg in msgs:
            await msg.in_progress()


def _outgoing(envelopes: tuple[Envelope, ...]) -> list[Outgoing]:
    return [Outgoing(e.subject, e.payload, e.msg_id) for e in envelopes]


@dataclass
class Publisher:
    """Publishes what an outcome says. Events from the outbox are marked published after, in one
    transaction for many alerts (`flush_every`, and before each relay); one whose publish fails
    stays there for `relay`. Should notify die between publishing and clearing, the relay
    publishes them again under the same message ids, which JetStream drops as duplicates."""

    js: JetStreamContext
    repository: NotifyRepository
    flush_every: int = 100
    _published: list[str] = field(init=False, default_factory=list)

    async def publish(self, outcome: Outcome, *, stream: str, consumer: str) -> None:
        """Replies first (raising: the command is redone and rebuilds them the same), then the
        events (not raising: the relay takes what is left), then dead letters."""
        if outcome.replies:
            await publish_pipelined(self.js, _outgoing(outcome.replies))
        for batch in outcome.events:
            try:
                await publish_pipelined(self.js, _outgoing(batch.envelopes))
            except Exception:
                log.warning("alert events not published yet; the relay will", exc_info=True)
                continue
            self._published.append(batch.id)
        if len(self._published) >= self.flush_every:
            await self.flush()
        for letter in outcome.dead_letters:
            await keep_dead_letter(
                self.js, stream=stream, consumer=consumer, subject=letter.subject, data=letter.data,
                error=letter.error, key=letter.key,
            )  # fmt: skip

    async def flush(self) -> None:
        """Clear the published events from the outbox; kept for the next flush if that fails."""
        ids, self._published = self._published, []
        if not ids:
            return
        try:
            await self.repository.published(ids)
        except Exception:
            log.warning("published alert events not cleared from the outbox yet", exc_info=True)
            self._published = ids + self._published

    async def relay_pending(self) -> None:
        await self.relay()

    async def relay(self, *, grace: timedelta = timedelta(seconds=10), limit: int = 100) -> int:
        """Publish the outbox's events older than `grace` (their publish failed or notify died);
        what was published but not yet cleared is cleared first, not published again."""
        await self.flush()
        done = 0
        for batch in await self.repository.pending_events(older_than=utcnow() - grace, limit=limit):
            await publish_pipelined(self.js, _outgoing(batch.envelopes))
            await self.repository.published([batch.id])
            done += 1
        return done


@dataclass
class DeadlineConsumer:
    """Deadlines in: arm, move or cancel each conversation's timer."""

    js: JetStreamContext
    service: NotifyService

    async def handle_batch(self, msgs: list[Msg]) -> None:
        valid: list[Msg] = []
        events: list[DeadlineChanged] = []
        traces: dict[str, dict[str, str] | None] = {}
        for msg in msgs:
            try:
                event = DeadlineChanged.model_validate_json(msg.data)
                events.append(event)
                traces[event.conversation_id] = msg.headers
            except ValidationError as error:
                await dead_letter(
                    self.js, msg, stream=subjects.EVENTS_STREAM, consumer=DEADLINE_CONSUMER,
                    error=f"invalid deadline: {error}",
                )  # fmt: skip
                continue
            valid.append(msg)
        await self.service.deadlines_changed(events, traces=traces)
        for msg in valid:
            await msg.ack()


@dataclass
class TimerConsumer:
    """Fired timers: alerts, retries and the ends of burst windows. The alerts of a batch are
    started together (`NotifyService.timers_fired`: one read, one transaction); what each sends
    then goes in its own task, as do retries and window ends, so one slow SMTP send never holds
    back timers that fall due meanwhile."""

    js: JetStreamContext
    service: NotifyService
    publisher: Publisher
    max_deliver: int
    retry_delay: float
    drain_timeout: float = 20.0
    concurrency: int = 32
    _slots: asyncio.Semaphore = field(init=False)
    _tasks: set[asyncio.Task[None]] = field(init=False, default_factory=set)

    def __post_init__(self) -> None:
        self._slots = asyncio.Semaphore(self.concurrency)

    async def handle_batch(self, msgs: list[Msg]) -> None:
        alerts: list[tuple[Msg, TimerPayload]] = []
        for msg in msgs:
            if not msg.subject.startswith("sh.timer.fired.group."):
                try:
                    fired = TimerPayload.model_validate_json(msg.data)
                except ValidationError as error:
                    await self._dead_letter(msg, f"invalid timer: {error}")
                    continue
                if fired.step != "retry":
                    alerts.append((msg, fired))
                    continue
            await self._spawn(functools.partial(self._one, msg))
        if alerts:
            await self._alerts(alerts)

    async def drain(self) -> None:
        """Let the alerts in flight finish (on shutdown)."""
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=self.drain_timeout)

    async def _spawn(self, work: Callable[[], Awaitable[None]]) -> None:
        """`work` in a task of its own once one of `concurrency` slots is free."""
        await self._slots.acquire()
        task = asyncio.create_task(self._in_slot(work))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _in_slot(self, work: Callable[[], Awaitable[None]]) -> None:
        try:
            await work()
        finally:
            self._slots.release()

    async def _alerts(self, alerts: list[tuple[Msg, TimerPayload]]) -> None:
        """Alerts started together, acked (or nak'ed while another replica holds one), then
        each one's deliveries sent in its own task. Should the batch fail, each is tried alone."""
        try:
            outcomes = await with_heartbeat(
                [msg for msg, _ in alerts], self.service.timers_fired([fired for _, fired in alerts])
            )
        except Exception:
            log.warning("a batch of fired timers failed; each is tried on its own", exc_info=True)
            for msg, _fired in alerts:
                await self._spawn(functools.partial(self._one, msg))
            return
        done = list(zip(alerts, outcomes, strict=True))
        for (msg, _fired), outcome in done:
            if outcome.retry_in is not None:
                await msg.nak(delay=outcome.retry_in)
        await ack_all([msg for (msg, _fired), outcome in done if outcome.retry_in is None])
        for (_msg, fired), outcome in done:
            if outcome.then is not None:
                await self._spawn(functools.partial(self._send, fired, outcome.then))

    async def _send(self, fired: TimerPayload, sending: Sending) -> None:
        """What a started alert owes, sent once its timer is acknowledged: should this fail,
        the retry timer armed with it sends what is still owed."""
        try:
            with span(
                "handle timer",
                parent=fired.trace,
                attributes={"stayhuman.conversation_id": fired.conversation_id},
            ):
                await self._publish(await self.service.send(sending))
        except Exception:
            log.exception(
                "alert not sent; its retry timer will", extra={"conversation_id": fired.conversation_id}
            )

    async def _one(self, msg: Msg) -> None:
        """A timer on its own: a window's end, a retry, or an alert whose batch failed."""
        try:
            if msg.subject.startswith("sh.timer.fired.group."):
                _prefix, person_id, channel = msg.subject.rsplit(".", 2)
                outcome = await with_heartbeat([msg], self.service.window_ended(person_id, channel))
                await self._publish(outcome)
                await msg.ack()
                return
            fired = TimerPayload.model_validate_json(msg.data)
            with span(
                "handle timer",
                parent=fired.trace,
                attributes={"stayhuman.conversation_id": fired.conversation_id},
            ):
                outcome = await self.service.timer_fired(fired)
                if outcome.retry_in is not None:
                    await msg.nak(delay=outcome.retry_in)
                    return
                await msg.ack()
                if outcome.then is not None:
                    await self._publish(await self.service.send(outcome.then))
        except ValidationError as error:
            await self._dead_letter(msg, f"invalid timer: {error}")
        except Exception as error:
            log.exception("timer handling failed", extra={"subject": msg.subject})
            if is_last_delivery(msg, self.max_deliver):
                await self._dead_letter(msg, f"{type(error).__name__}: {error}")
            else:
                await msg.nak(delay=self.retry_delay)

    async def _publish(self, outcome: Outcome) -> None:
        await self.publisher.publish(outcome, stream=subjects.TIMERS_STREAM, consumer=TIMER_CONSUMER)

    async def _dead_letter(self, msg: Msg, error: str) -> None:
        await dead_letter(self.js, msg, stream=subjects.TIMERS_STREAM, consumer=TIMER_CONSUMER, error=error)


@dataclass
class Isolating:
    """Messages taken in batches, each handled on its own through the service. What the whole
    batch needs is read once (`prepare`); a message it leaves nothing to do for is acked at
    once. An invalid message is dead-lettered at once; a failure, of the batch's read or of one
    message, is tried again after `retry_delay`, and on its last delivery dead-lettered with
    its error (never nak'ed into a silent drop at max_deliver). One failing message never holds
    back the others of its batch."""

    js: JetStreamContext
    service: NotifyService
    publisher: Publisher
    max_deliver: int
    retry_delay: float = 5.0
    stream: ClassVar[str] = subjects.EVENTS_STREAM
    consumer: ClassVar[str]
    what: ClassVar[str]

    def decode(self, data: bytes) -> Any:
        raise NotImplementedError

    async def prepare(self, items: list[Any]) -> list[Any]:
        """What `call` needs for each item, read for the whole batch at once; None for an item
        with nothing to do. Each item as it is unless a consumer reads ahead."""
        return items

    async def call(self, work: Any, msg: Msg, *, last: bool) -> Outcome:
        raise NotImplementedError

    async def handle_batch(self, msgs: list[Msg]) -> None:
        decoded: list[tuple[Msg, Any]] = []
        for msg in msgs:
            try:
                decoded.append((msg, self.decode(msg.data)))
            except ValidationError as error:
                await self._dead_letter(msg, f"invalid {self.what}: {error}")
        if not decoded:
            return
        try:
            prepared = await self.prepare([item for _msg, item in decoded])
        except Exception as error:
            log.warning(
                f"reading for a batch of {self.what}s failed; each will be retried, or kept on the dead "
                "letter on its last delivery",
                exc_info=True,
            )
            for msg, _item in decoded:
                await self._failed(msg, error)
            return
        todo = [(msg, work) for (msg, _item), work in zip(decoded, prepared, strict=True) if work is not None]
        await ack_all([msg for (msg, _item), work in zip(decoded, prepared, strict=True) if work is None])
        for msg, work in todo:
            await self._one(msg, work)

    async def _one(self, msg: Msg, work: Any) -> None:
        last = is_last_delivery(msg, self.max_deliver)
        try:
            outcome = await with_heartbeat([msg], self.call(work, msg, last=last))
            await self.publisher.publish(outcome, stream=self.stream, consumer=self.consumer)
        except Exception as error:
            then = "kept on the dead letter" if last else "it will be retried"
            log.warning(f"{self.what} failed; {then}", exc_info=True)
            await self._failed(msg, error)
            return
        if outcome.retry_in is None:
            await msg.ack()
        else:
            await msg.nak(delay=outcome.retry_in)

    async def _failed(self, msg: Msg, error: Exception) -> None:
        """A message whose handling failed: dead-lettered with its error on its last delivery,
        else delivered again after `retry_delay`."""
        if is_last_delivery(msg, self.max_deliver):
            await self._dead_letter(msg, f"{type(error).__name__}: {error}")
        else:
            await msg.nak(delay=self.retry_delay)

    async def _dead_letter(self, msg: Msg, error: str) -> None:
        await dead_letter(self.js, msg, stream=self.stream, consumer=self.consumer, error=error)


@dataclass(frozen=True)
class Notice:
    """An assignment with the channels its owner asked to hear of it on."""

    event: ConversationAssigned
    channels: tuple[str, ...]


class AssignmentConsumer(Isolating):
    """Conversations assigned: a notice to the new owner, when they asked for one. The owners'
    preferences are read once per batch; most owners ask for none, and their assignments are
    acked without another read."""

    consumer = ASSIGNED_CONSUMER
    what = "assignment notice"

    def decode(self, data: bytes) -> ConversationAssigned:
        return ConversationAssigned.model_validate_json(data)

    async def prepare(self, items: list[ConversationAssigned]) -> list[Notice | None]:
        wanted = await self.service.assignment_channels(items)
        return [
            Notice(event, channels) if channels else None
            for event, channels in zip(items, wanted, strict=True)
        ]

    async def call(self, work: Notice, msg: Msg, *, last: bool) -> Outcome:
        return await self.service.conversation_assigned(work.event, last_try=last, channels=work.channels)


class OperatorConsumer(Isolating):
    """Connector problems reported by ingest, emailed to the operator (rare: nothing to read ahead)."""

    consumer = OPERATOR_CONSUMER
    what = "operator alert"

    def decode(self, data: bytes) -> ConnectorProblem:
        return ConnectorProblem.model_validate_json(data)

    async def call(self, work: ConnectorProblem, msg: Msg, *, last: bool) -> Outcome:
        return await self.service.connector_problem(work, attempt=msg.metadata.num_delivered, last_try=last)


class CommandConsumer(Isolating):
    """notify's commands (`sh.ncmd.>`): acknowledge. One outcome event per command, each applied
    in its own transaction (they come at the pace people click: nothing to read ahead)."""

    stream = subjects.COMMANDS_STREAM
    consumer = COMMAND_CONSUMER
    what = "command"

    def decode(self, data: bytes) -> Acknowledge:
        return notify_command_adapter.validate_json(data)

    async def call(self, work: Acknowledge, msg: Msg, *, last: bool) -> Outcome:
        return (await self.service.acknowledge(work))[1]


@dataclass
class CommandAcknowledger:
    """The acknowledge page's button: the same `Acknowledge` command the consumer applies,
    applied in process, with the same events published."""

    parts: Callable[[], tuple[NotifyService, Publisher] | None]

    async def acknowledge(self, *, conversation_id: str, version: int, person_id: str) -> Acknowledged:
        ready = self.parts()
        if ready is None:
            raise NotifyStarting("notify is starting")
        service, publisher = ready
        deadline = (await service.repository.deadlines([conversation_id])).get(conversation_id)
        if deadline is None or version < 1:
            return "outdated"
        command = Acknowledge(
            tenant_id=deadline.tenant_id, conversation_id=conversation_id, deadline_version=version,
            person_id=person_id, issued_by=person_id,
        )  # fmt: skip
        outcome, published = await service.acknowledge(command)
        await publisher.publish(published, stream=subjects.COMMANDS_STREAM, consumer=COMMAND_CONSUMER)
        if outcome is AckOutcome.acknowledged:
            return "acknowledged"
        if outcome is AckOutcome.already:
            return "already"
        return "outdated"
