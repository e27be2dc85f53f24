"""The router's consumers: messages from JetStream in, the application service's outcome out.

Decode each message (one that cannot be read goes to the dead letter at once), hand
the batch to `service.Router`, which commits one unit of work with its messages in
the outbox, then publish those messages with their acks in flight together, delete
the outbox row, and acknowledge the input. A batch that fails is routed again one
message at a time, so a poison message cannot hold the others back and reaches the
dead letter on its last delivery. A crash anywhere leaves either nothing
(redelivery redoes it) or committed state whose messages the outbox relay
publishes under the same ids.

The lanes' batches that wait for a unit of work go into the next one together: one
transaction for all of them instead of one each in turn, so a quiet tenant's message
waits for at most the unit running and its own, however many lanes a burst keeps busy.
"""

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from prometheus_client import Counter, Histogram
from pydantic import ValidationError

from services.router.ports import Clock, Repository, SystemClock
from services.router.service import Outcome, Router, key_of
from shared import subjects
from shared.commands import command_adapter
from shared.events import interaction_adapter
from shared.jetstream import ack_all, dead_letter, deliveries, is_last_delivery, publish_pipelined

log = logging.getLogger(__name__)

CONSUMER = "router-interactions"
COMMANDS_CONSUMER = "router-commands"
TIMERS_CONSUMER = "router-timers"

ROUTED = Counter("stayhuman_router_interactions_total", "Interactions handled", ["result"])
REDELIVERED = Counter("stayhuman_router_redeliveries_total", "Messages delivered more than once")
ASSIGNED = Counter("stayhuman_router_assignments_total", "Conversations assigned to a person")
COMMANDS = Counter("stayhuman_router_commands_total", "Commands applied by the router", ["type"])
BATCH_SECONDS = Histogram(
    "stayhuman_router_batch_seconds",
    "Time to route one batch, commit included",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
ROUTING_LATENCY = Histogram(
    "stayhuman_router_latency_seconds",
    "From ingest receiving an interaction to the router committing it",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


@dataclass
class _Waiting:
    """A lane's batch waiting for a unit of work, and that unit's outcome once committed."""

    items: list[tuple[Msg, Any]]
    outcome: "asyncio.Future[Outcome]"


@dataclass
class InteractionConsumer:
    """Interactions (new and withdrawn) from the lanes of SH_INTERACTIONS."""

    js: JetStreamContext
    router: Router
    max_deliver: int
    # How many units of work of this process run at once, shared by every consumer of the
    # process: one on SQLite (one writer), a few on PostgreSQL, where the accounts' locks and
    # the people's row locks (taken in one order) keep two that meet one after the other.
    lock: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(1))
    consumer: str = CONSUMER
    clock: Clock = field(default_factory=SystemClock)
    # Most messages of the batches waiting that one unit of work takes together.
    max_together: int = 1000
    _waiting: list["_Waiting"] = field(default_factory=list)

    what = "interaction"
    together = True  # batches of several lanes in one unit of work

    def _decode(self, data: bytes) -> Any:
        return interaction_adapter.validate_json(data)

    async def _decide(self, items: list[tuple[Msg, Any]]) -> Outcome:
        """One unit of work for `items` (the caller holds the lock)."""
        traces = {key_of(item): msg.headers for msg, item in items}
        outcome = await self.router.route([item for _msg, item in items], self.clock.now(), traces=traces)
        # counted once committed: a batch rolled back and routed again counts once
        counters = outcome.counters
        ROUTED.labels("duplicate").inc(counters.duplicates)
        ROUTED.labels("routed").inc(counters.routed)
        ROUTED.labels("retracted").inc(counters.retracted)
        ASSIGNED.inc(counters.assigned)
        for seconds in counters.latencies:
            ROUTING_LATENCY.observe(seconds)
        return outcome

    async def handle_batch(self, msgs: list[Msg]) -> None:
        items: list[tuple[Msg, Any]] = []
        for msg in msgs:
            if deliveries(msg) > 1:
                REDELIVERED.inc()
            try:
                items.append((msg, self._decode(msg.data)))
            except ValidationError as error:
                ROUTED.labels("dead_letter").inc()
                await self._dead_letter(msg, f"invalid {self.what}: {error}")
            except (ValueError, OverflowError) as error:  # e.g. an instant before year 1 in UTC
                ROUTED.labels("dead_letter").inc()
                await self._dead_letter(msg, f"invalid {self.what}: {type(error).__name__}: {error}")
        if not items:
            return
        if len(items) == 1 and not self.together:
            await self._route_alone(items[0])
            return
        try:
            await self._route(items)
            return
        except Exception as error:
            failure = error
        if self.together and len(items) > 1:
            # Another lane's message may have failed the unit: this batch alone first, rather
            # than a unit of work for each of its messages.
            try:
                await self._route(items, together=False)
                return
            except Exception as error:
                failure = error
        # Isolate the message that fails so one poison message cannot hold back
        # the batch, and so it reaches the dead letter on its last delivery.
        log.warning("batch failed; routing its messages one by one", exc_info=failure)
        for item in items:
            await self._route_alone(item)

    async def _route_alone(self, item: tuple[Msg, Any]) -> None:
        """Route one message; if that fails, it comes again, or on its last delivery it is kept
        on the dead letter with its error (never nak'ed into a silent drop at max_deliver)."""
        msg, _item = item
        try:
            await self._route([item], together=False)
        except Exception as error:
            last = is_last_delivery(msg, self.max_deliver)
            log.warning(
                "routing failed",
                exc_info=True,
                extra={
                    "consumer": self.consumer,
                    "deliveries": deliveries(msg),
                    "dead_letter": last,
                },
            )
            if last:
                ROUTED.labels("dead_letter").inc()
                await self._dead_letter(msg, f"{type(error).__name__}: {error}")
            else:
                await msg.nak(delay=1.0)

    async def _dead_letter(self, msg: Msg, error: str) -> None:
        stream = msg.metadata.stream if msg.metadata else subjects.INTERACTIONS_STREAM
        await dead_letter(self.js, msg, stream=stream, consumer=self.consumer, error=error)

    async def _publish(self, outcome: Outcome) -> None:
        try:
            await publish_pipelined(self.js, outcome.outgoing)
        except Exception:
            # Committed: the relay publishes these under the same ids. The input is
            # acked anyway, since routing it again would find it already done.
            log.warning("events not yet published; the outbox relay will retry", exc_info=True)
        else:
            if outcome.outbox_id is not None:
                self.router.published(outcome.outbox_id)  # deleted by the next unit of work

    async def _with_others(self, items: list[tuple[Msg, Any]]) -> Outcome:
        """Route `items` in the next unit of work, with the other lanes' batches waiting then.

        Whichever waiting lane gets the lock routes the batches waiting, oldest first (as many
        as `max_together` messages allow, at least one), and publishes their messages once the
        lock is free for the next unit; each lane then acknowledges its own messages. A unit
        that fails fails for each of its batches, and each routes its messages one by one."""
        mine = _Waiting(items, asyncio.get_running_loop().create_future())
        self._waiting.append(mine)
        try:
            while not mine.outcome.done():
                async with self.lock:
                    if mine.outcome.done():
                        break
                    group = self._take_waiting()
                    if not group:
                        break  # ours was taken by the unit that is publishing: its outcome comes
                    try:
                        with BATCH_SECONDS.time():
                            outcome = await self._decide(
                                [item for waiting in group for item in waiting.items]
                            )
                    except Exception as error:
                        for waiting in group:
                            waiting.outcome.set_exception(error)
                        continue
                    except BaseException:
                        for waiting in group:
                            waiting.outcome.set_exception(RuntimeError("unit of work interrupted"))
                        raise
                try:
                    await self._publish(outcome)
                finally:
                    for waiting in group:  # committed: each lane acknowledges its own messages
                        waiting.outcome.set_result(outcome)
        except BaseException:
            if mine in self._waiting:
                self._waiting.remove(mine)  # stopped before any unit took it
            raise
        return await mine.outcome

    def _take_waiting(self) -> list["_Waiting"]:
        taken: list[_Waiting] = []
        count = 0
        while self._waiting and (not taken or count + len(self._waiting[0].items) <= self.max_together):
            waiting = self._waiting.pop(0)
            taken.append(waiting)
            count += len(waiting.items)
        return taken

    async def _route(self, items: list[tuple[Msg, Any]], *, together: bool = True) -> None:
        if together and self.together:
            outcome = await self._with_others(items)
        else:
            async with self.lock:
                with BATCH_SECONDS.time():
                    outcome = await self._decide(items)
            await self._publish(outcome)
        done = []
        for msg, item in items:
            if key_of(item) in outcome.unknown:
                ROUTED.labels("dead_letter").inc()
                await self._dead_letter(msg, f"unknown account {item.account_id!r}")
            else:
                done.append(msg)
        await ack_all(done)


@dataclass
class CommandConsumer(InteractionConsumer):
    """Commands from people and operators (SH_COMMANDS), and the router's own timers (SH_TIMERS):
    each applied or rejected, its outcome published like any event."""

    consumer: str = COMMANDS_CONSUMER
    what = "command"
    together = False

    def _decode(self, data: bytes) -> Any:
        return command_adapter.validate_json(data)

    async def _decide(self, items: list[tuple[Msg, Any]]) -> Outcome:
        outcome = await self.router.apply([item for _msg, item in items], self.clock.now())
        for kind, count in outcome.counters.commands.items():
            COMMANDS.labels(kind).inc(count)
        return outcome


@dataclass
class OutboxRelay:
    """Publishes messages that were committed but not published (a crash, a NATS outage).

    Given the router, it first deletes the rows its consumers published and no unit of
    work has deleted yet (the router was idle since), so it never publishes them again."""

    js: JetStreamContext
    repository: Repository
    grace: timedelta = timedelta(seconds=10)
    clock: Clock = field(default_factory=SystemClock)
    router: Router | None = None

    async def relay_once(self, *, everything: bool = False) -> int:
        if self.router is not None:
            await self.router.forget_published()
        older_than = None if everything else self.clock.now() - self.grace
        pending = await self.repository.pending_outbox(older_than=older_than, limit=20)
        if not pending:
            return 0
        messages = [message for batch in pending.values() for message in batch]
        await publish_pipelined(self.js, messages)
        await self.repository.delete_outbox(list(pending))
        log.info("outbox relayed", extra={"count": len(messages)})
        return len(messages)
