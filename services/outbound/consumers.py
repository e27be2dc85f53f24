"""The outbound consumer: each reply command in its own task (a slow platform holds back no
other reply), what the service says published before the ack, a retry as a delayed nak.

A message that is no reply command goes to the dead letter at once. A delivery that fails
(the database or NATS is away) is delivered again; on its last delivery the reply is settled
first (failed when no attempt was made, in doubt when one may have reached the platform), its
outcome published, and the command kept on the dead letter with its error: never dropped."""

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from prometheus_client import Counter
from pydantic import ValidationError

from services.outbound.service import Outbound
from shared import subjects
from shared.commands import SendReply, outbound_command_adapter
from shared.events import utcnow
from shared.jetstream import dead_letter, is_last_delivery, publish_pipelined

log = logging.getLogger(__name__)

CONSUMER = "outbound-replies"

HANDLED = Counter("stayhuman_outbound_replies_total", "Reply commands outbound handled", ["result"])


async def _heartbeat(msg: Msg, work: "asyncio.Task[Any]", every: float = 10.0) -> None:
    while not work.done():
        done, _ = await asyncio.wait({work}, timeout=every)
        if not done:
            await msg.in_progress()


@dataclass
class ReplyConsumer:
    js: JetStreamContext
    service: Outbound
    max_deliver: int
    concurrency: int = 16
    heartbeat: float = 10.0  # seconds between "still working" to JetStream: well inside the ack wait
    _slots: asyncio.Semaphore = field(init=False)
    _tasks: set["asyncio.Task[None]"] = field(init=False, default_factory=set)

    def __post_init__(self) -> None:
        self._slots = asyncio.Semaphore(self.concurrency)

    async def handle_batch(self, msgs: list[Msg]) -> None:
        for msg in msgs:
            await self._slots.acquire()
            task = asyncio.create_task(self._one(msg))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def drain(self, timeout: float = 30.0) -> None:
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)

    async def _one(self, msg: Msg) -> None:
        try:
            try:
                command = outbound_command_adapter.validate_json(msg.data)
            except ValidationError as error:
                HANDLED.labels("invalid").inc()
                await dead_letter(self.js, msg, stream=subjects.COMMANDS_STREAM, consumer=CONSUMER,
                                  error=f"invalid reply command: {error}")  # fmt: skip
                return
            last = is_last_delivery(msg, self.max_deliver)
            try:
                work = asyncio.create_task(self.service.handle(command, now=utcnow(), last_delivery=last))
                await _heartbeat(msg, work, self.heartbeat)
                handled = work.result()
                if handled.messages:
                    await publish_pipelined(self.js, handled.messages)
            except Exception as error:
                log.exception("reply %s could not be handled (delivery %s)", command.command_id,
                              msg.metadata.num_delivered)  # fmt: skip
                if last:
                    await self._give_up(msg, command, error)
                else:
                    HANDLED.labels("retried").inc()
                    await msg.nak(delay=min(30.0, 2.0 * msg.metadata.num_delivered))
                return
            if handled.retry_in is not None:
                HANDLED.labels("later").inc()
                await msg.nak(delay=handled.retry_in)
                return
            HANDLED.labels("done").inc()
            await msg.ack()
        finally:
            self._slots.release()

    async def _give_up(self, msg: Msg, command: SendReply, error: Exception) -> None:
        """The last delivery failed: settle the reply so the person sees it, keep the command."""
        HANDLED.labels("dead_letter").inc()
        try:
            messages = await self.service.give_up(
                command, f"could not be sent: {type(error).__name__}", utcnow()
            )
            await publish_pipelined(self.js, messages)
        except Exception:
            log.exception("reply %s could not be settled; it stays on the dead letter", command.command_id)
        await dead_letter(self.js, msg, stream=subjects.COMMANDS_STREAM, consumer=CONSUMER,
                          error=f"{type(error).__name__}: {error}")  # fmt: skip
