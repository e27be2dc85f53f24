"""JetStream plumbing shared by the services: streams, pipelined publishes, batch consumers.

Streams and durable consumers are declared idempotently at start by every service
that uses them, so any start order works and a redeploy converges the settings.
"""

import asyncio
import contextlib
import functools
import json
import logging
import re
import time
import weakref
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import BadHeaderError, ConnectionClosedError, NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    PubAck,
    RetentionPolicy,
    StatusCode,
    StorageType,
    StreamConfig,
    SubjectTransform,
)
from nats.js.errors import (
    APIError,
    BadRequestError,
    NoStreamResponseError,
    NotFoundError,
    ServiceUnavailableError,
)

from shared import subjects
from shared.logs import transient_trouble
from shared.messages import MSG_ID, Outgoing, at_header  # noqa: F401 (here since before)

log = logging.getLogger(__name__)

MIN_SERVER_VERSION = (2, 12, 0)
DLQ_ERROR = "Sh-Error"
DLQ_SUBJECT = "Sh-Original-Subject"
DLQ_SEQUENCE = "Sh-Original-Sequence"
DLQ_DELIVERIES = "Sh-Deliveries"


class ServerTooOld(RuntimeError):
    pass


def check_server_version(version: str, *, where: str) -> None:
    """Message schedules need nats-server 2.12 or newer: say what to upgrade."""
    parts = [int(p) for p in version.split("-")[0].split(".")[:3] if p.isdigit()]
    if tuple(parts) < MIN_SERVER_VERSION:
        raise ServerTooOld(
            f"nats-server {version} at {where} is too old: StayHuman needs 2.12 or newer "
            "(JetStream message schedules); upgrade the server, or unset STAYHUMAN_NATS_URL "
            "so that `stayhuman up` starts the pinned one"
        )


@dataclass(frozen=True)
class StreamSettings:
    replicas: int = 1
    interactions_max_age: timedelta = timedelta(days=7)
    events_max_age: timedelta = timedelta(days=7)
    dead_letter_max_age: timedelta = timedelta(days=30)
    archive_max_age: timedelta = timedelta(days=30)
    commands_max_age: timedelta = timedelta(days=7)
    duplicate_window: timedelta = timedelta(minutes=2)


def stream_configs(settings: StreamSettings) -> list[StreamConfig]:
    """Every stream StayHuman uses, with the limits that keep each one honest."""
    configs = [
        StreamConfig(
            name=subjects.INTERACTIONS_STREAM,
            subjects=[subjects.all_interactions()],
            subject_transform=SubjectTransform(src=subjects.LANE_SOURCE, dest=subjects.LANE_DESTINATION),
            retention=RetentionPolicy.LIMITS,
            max_age=settings.interactions_max_age.total_seconds(),
            description="Normalised interactions from every platform",
        ),
        StreamConfig(
            name=subjects.EVENTS_STREAM,
            subjects=[
                subjects.all_conversation_events(),
                subjects.all_deadlines(),
                subjects.all_connector_problems(),
                subjects.all_command_outcomes(),
                subjects.all_alert_events(),
                subjects.all_reply_events(),
            ],
            retention=RetentionPolicy.LIMITS,
            max_age=settings.events_max_age.total_seconds(),
            description="Conversation lifecycle events, deadline contracts, command outcomes and alerts",
        ),
        StreamConfig(
            name=subjects.TIMERS_STREAM,
            subjects=["sh.timer.>"],
            retention=RetentionPolicy.LIMITS,
            # No age, count or size limit, so an armed timer is never dropped to
            # make room (the server refuses discard-new on schedule streams). One
            # message per subject: a re-arm replaces the timer, a newer firing the
            # older one.
            max_msgs_per_subject=1,
            allow_msg_schedules=True,
            allow_msg_ttl=True,  # fired messages expire (Nats-Schedule-TTL)
            description="One armed schedule per conversation, and the messages they fire",
        ),
        StreamConfig(
            name=subjects.DEAD_LETTER_STREAM,
            subjects=["sh.dlq.>"],
            retention=RetentionPolicy.LIMITS,
            max_age=settings.dead_letter_max_age.total_seconds(),
            description="Messages that could not be processed, kept with their error",
        ),
        StreamConfig(
            name=subjects.ARCHIVE_STREAM,
            subjects=["sh.archive.>"],
            retention=RetentionPolicy.LIMITS,
            max_age=settings.archive_max_age.total_seconds(),
            description="Raw platform payloads as received, for audit and replay",
        ),
        StreamConfig(
            name=subjects.COMMANDS_STREAM,
            subjects=[
                subjects.all_commands(),
                subjects.all_notify_commands(),
                subjects.all_outbound_commands(),
            ],
            retention=RetentionPolicy.LIMITS,
            max_age=settings.commands_max_age.total_seconds(),
            description="What people and operators ask: of the router (status, claim, reassign, pause, resolve), of notify (acknowledge), of outbound (reply)",
        ),
    ]
    for config in configs:
        config.storage = StorageType.FILE
        config.num_replicas = settings.replicas
        config.duplicate_window = settings.duplicate_window.total_seconds()
    return configs


async def ensure_streams(js: JetStreamContext, configs: Sequence[StreamConfig]) -> None:
    """Create each stream, or update it to the configuration given."""
    for config in configs:
        assert config.name is not None
        try:
            await js.stream_info(config.name)
        except NotFoundError:
            try:
                await js.add_stream(config)
                log.info("stream created", extra={"stream": config.name})
            except BadRequestError as error:
                if error.err_code != 10058:  # created concurrently by another process
                    raise
            continue
        await js.update_stream(config)


async def ensure_consumer(js: JetStreamContext, stream: str, config: ConsumerConfig) -> None:
    """Create a durable consumer, or bring its mutable settings up to date."""
    assert config.durable_name is not None
    try:
        await js.consumer_info(stream, config.durable_name)
    except NotFoundError:
        await js.add_consumer(stream, config)
        return
    await js.add_consumer(stream, config)  # same name: an update of the editable fields


async def streams_present(js: JetStreamContext, names: Sequence[str]) -> list[str]:
    """The names among `names` that do not exist (for readiness checks)."""
    missing = []
    for name in names:
        try:
            await js.stream_info(name)
        except NotFoundError:
            missing.append(name)
    return missing


class MessageTooLarge(ValueError):
    """A message that the server would refuse as larger than its max_payload. The server
    answers such a publish by closing the connection, so it is refused before it is sent."""


def header_bytes(headers: dict[str, str] | None) -> int:
    """What the headers of a message take on the wire (`NATS/1.0` line, `name: value` lines)."""
    if not headers:
        return 0
    return 12 + sum(len(k.encode()) + len(str(v).encode()) + 4 for k, v in headers.items())


def max_payload_of(js: JetStreamContext) -> int:
    """The largest message (headers and body) the connected server takes."""
    return int(js._nc.max_payload)


def check_size(js: JetStreamContext, subject: str, payload: bytes, headers: dict[str, str] | None) -> None:
    limit = max_payload_of(js)
    size = len(payload) + header_bytes(headers)
    if size > limit:
        raise MessageTooLarge(
            f"a message to {subject} of {size} bytes (headers included) is larger than the "
            f"{limit} bytes the NATS server takes (max_payload)"
        )


# Errors that a stream leader election or a brief disconnect produce: the same
# publish, with the same Nats-Msg-Id, succeeds once a leader is back.
TRANSIENT = (
    NoRespondersError,
    NoStreamResponseError,
    NatsTimeoutError,
    ServiceUnavailableError,
    ConnectionClosedError,
    TimeoutError,
)


async def publish_retrying(
    js: JetStreamContext, subject: str, payload: bytes, *, headers: dict[str, str], timeout: float
) -> PubAck:
    """Publish one message and wait for its ack, retrying transient failures until `timeout`."""
    check_size(js, subject, payload, headers)
    deadline = time.monotonic() + timeout
    delay = 0.1
    while True:
        remaining = deadline - time.monotonic()
        try:
            return await js.publish(subject, payload, timeout=max(0.05, remaining), headers=headers)
        except TRANSIENT:
            if time.monotonic() + delay >= deadline:
                raise
        await asyncio.sleep(delay)
        delay = min(1.0, delay * 2)


async def publish_pipelined(
    js: JetStreamContext, messages: Sequence[Outgoing], *, timeout: float = 10.0, retry_for: float = 30.0
) -> dict[str, PubAck]:
    """Publish many messages with their acks in flight together; raise if any is not stored.

    Messages that fail transiently (a leader election blocks publishes for a few
    seconds) are published again with the same `Nats-Msg-Id` until `retry_for`
    has passed, so nothing is stored twice. Returns each message's ack by its id.
    """
    for message in messages:  # all or nothing: none is sent if one could not be
        check_size(js, message.subject, message.payload, message.all_headers())
    pending = list(messages)
    acks: dict[str, PubAck] = {}
    deadline = time.monotonic() + retry_for
    delay = 0.25
    while pending:
        failed, error = await _publish_round(js, pending, acks, timeout=timeout)
        if not failed:
            return acks
        if time.monotonic() + delay >= deadline:
            raise error or NatsTimeoutError()
        transient_trouble.warn(
            log, "publish", "publishes not acknowledged; retrying", count=len(failed), error=repr(error)
        )
        await asyncio.sleep(delay)
        delay = min(2.0, delay * 2)
        pending = failed
    return acks


class _Round:
    """The acks one round of pipelined publishes waits for: each message's result by its
    position, and one future, done when the last is in. A future per message with
    `asyncio.wait` over all of them cost more than writing the messages."""

    __slots__ = ("done", "remaining", "results")

    def __init__(self, size: int) -> None:
        self.results: list[PubAck | BaseException | None] = [None] * size
        self.remaining = size
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def settle(self, index: int, result: PubAck | BaseException) -> None:
        if self.results[index] is not None:
            return
        self.results[index] = result
        self.remaining -= 1
        if self.remaining == 0 and not self.done.done():
            self.done.set_result(None)


class _AckInbox:
    """The replies to a connection's pipelined publishes: one wildcard subscription, each
    publish's reply subject a counter under it. What nats-py's `publish_async` does, without its
    per-message semaphore wait, random token and walk over the ack's dataclass fields, which
    cost more than the rest of a publish."""

    def __init__(self, nc: Client) -> None:
        self.nc = nc
        self.prefix = ""
        self.waiting: dict[str, tuple[_Round, int]] = {}  # by reply token: whose ack, where
        self.count = 0
        self.started = False
        self._starting = asyncio.Lock()

    async def start(self) -> None:
        async with self._starting:
            if not self.started:
                self.prefix = f"{self.nc.new_inbox()}."
                await self.nc.subscribe(f"{self.prefix}*", cb=self._on_ack)
                self.started = True

    async def publish(self, message: Outgoing, round_: _Round, index: int) -> str:
        """Write one message, its ack to settle `round_` at `index`; returns its reply token."""
        self.count += 1
        token = str(self.count)
        self.waiting[token] = (round_, index)
        nc = self.nc
        try:
            if nc.is_connected and not nc.is_draining_pubs:
                # The HPUB written as it goes on the wire: nats-py's publish checks each header
                # name with a regular expression and re-encodes each value, every message (the
                # size was checked before: `check_size`).
                await _write(nc, _hpub(message, self.prefix + token), len(message.payload))
            else:  # the client's own checks, errors and buffering while it reconnects
                await nc.publish(
                    message.subject, message.payload, reply=self.prefix + token, headers=message.all_headers()
                )
        except BaseException:
            del self.waiting[token]
            raise
        return token

    async def _on_ack(self, msg: Msg) -> None:
        entry = self.waiting.pop(msg.subject[len(self.prefix) :], None)
        if entry is None:
            return
        round_, index = entry
        round_.settle(index, _ack_of(msg))


def _ack_of(msg: Msg) -> PubAck | BaseException:
    """A publish's reply: its ack, or what went wrong."""
    if msg.headers and msg.headers.get("Status") == "503":
        return NoStreamResponseError()
    try:
        response = json.loads(msg.data)
        error = response.get("error")
        if error is not None:
            return APIError.from_error(error)
        return PubAck(
            stream=response["stream"],
            seq=response["seq"],
            domain=response.get("domain"),
            duplicate=response.get("duplicate"),
        )
    except (ValueError, KeyError, TypeError, AttributeError) as problem:
        return APIError(description=f"unreadable publish ack: {problem}")


_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_NEWLINES = str.maketrans({"\r": " ", "\n": " "})


@functools.lru_cache(maxsize=1024)
def _header_name(name: str) -> bytes:
    """A header name as it goes on the wire (names are few: each is checked once)."""
    if not _HEADER_NAME.fullmatch(name):
        raise BadHeaderError(name)
    return name.encode()


def _hpub(message: Outgoing, reply: str) -> bytes:
    lines = [b"NATS/1.0\r\n"]
    for name, value in message.all_headers().items():
        value = str(value).strip()
        if "\r" in value or "\n" in value:
            value = value.translate(_NEWLINES)
        lines += (_header_name(name), b": ", value.encode(), b"\r\n")
    lines.append(b"\r\n")
    head = b"".join(lines)
    size = len(head) + len(message.payload)
    return b"".join(
        (f"HPUB {message.subject} {reply} {len(head)} {size}\r\n".encode(), head, message.payload, b"\r\n")
    )


async def _write(nc: Client, command: bytes, payload_size: int) -> None:
    """What nats-py's publish does once the command is built: buffer it, and kick the flusher
    unless a flush is already due."""
    nc.stats["out_msgs"] += 1
    nc.stats["out_bytes"] += payload_size
    await nc._send_command(command)
    if nc._flush_queue is not None and nc._flush_queue.empty():
        await nc._flush_pending()


async def ack_all(msgs: Sequence[Msg]) -> None:
    """Acknowledge `msgs` (each delivered by JetStream), written together and flushed once:
    what `Msg.ack` does for each, without a publish call per message."""
    if not msgs:
        return
    nc = msgs[0]._client
    if not nc.is_connected or nc.is_draining_pubs:
        for msg in msgs:
            await msg.ack()
        return
    for msg in msgs:
        msg._check_reply()  # a JetStream message, not acknowledged yet
        await nc._send_command(b"PUB " + msg.reply.encode() + b" 0\r\n\r\n")
        msg._ackd = True
    if nc._flush_queue is not None and nc._flush_queue.empty():
        await nc._flush_pending()


_ACK_INBOXES: "weakref.WeakKeyDictionary[Client, _AckInbox]" = weakref.WeakKeyDictionary()


async def _ack_inbox(js: JetStreamContext) -> _AckInbox:
    nc = js._nc
    inbox = _ACK_INBOXES.get(nc)
    if inbox is None:
        inbox = _ACK_INBOXES[nc] = _AckInbox(nc)
    if not inbox.started:
        await inbox.start()
    return inbox


async def _publish_round(
    js: JetStreamContext, messages: list[Outgoing], acks: dict[str, PubAck], *, timeout: float
) -> tuple[list[Outgoing], BaseException | None]:
    # Every publish is written to the connection's buffer first and flushed together: one
    # socket write per batch, the acks in flight at once.
    inbox = await _ack_inbox(js)
    round_ = _Round(len(messages))
    tokens: list[str] = []
    try:
        for index, message in enumerate(messages):
            tokens.append(await inbox.publish(message, round_, index))
        if round_.remaining:
            await asyncio.wait([round_.done], timeout=timeout)
    finally:
        for token in tokens:  # acks not in by now are not waited for
            inbox.waiting.pop(token, None)
    failed: list[Outgoing] = []
    error: BaseException | None = NatsTimeoutError() if round_.remaining else None
    fatal: BaseException | None = None
    for message, result in zip(messages, round_.results, strict=True):
        if result is None:
            failed.append(message)
        elif isinstance(result, BaseException):
            failed.append(message)
            error = result
            if not isinstance(result, TRANSIENT):
                fatal = result
        else:
            acks[message.msg_id] = result
    if fatal is not None:
        raise fatal
    return failed, error


async def _take_pending(
    subscription: JetStreamContext.PullSubscription, wanted: int, *, timeout: float
) -> list[Msg]:
    """Up to `wanted` messages that the consumer has now (a `no_wait` pull request), under one
    timer for them all. nats-py's `fetch` waits for each message with a timeout of its own (a
    task and a timer a message: more than the rest of taking it); this reads the subscription's
    queue as that `fetch` does, and falls back to it where that queue is not there."""
    sub: Any = getattr(subscription, "_sub", None)
    queue = getattr(sub, "_pending_queue", None)
    request, inbox = getattr(subscription, "_nms", None), getattr(subscription, "_deliver", None)
    if not isinstance(queue, asyncio.Queue) or not request or not inbox:
        return await subscription.fetch(wanted, timeout=timeout)
    taken: list[Msg] = []

    def take(msg: Msg) -> bool:
        """Keep a message; False once the request has ended (no more messages, or it expired)."""
        sub._pending_size -= len(msg.data)
        status = JetStreamContext.is_status_msg(msg)
        if status is None:
            taken.append(msg)
            return True
        if JetStreamContext._is_heartbeat(status) or status == StatusCode.CONFLICT:
            return True
        if status not in (StatusCode.NO_MESSAGES, StatusCode.REQUEST_TIMEOUT):
            # the request ended otherwise: what was taken is handed on all the same (raising
            # would leave it unacknowledged until its ack wait)
            log.warning("pull request ended", extra={"status": status, "error": repr(APIError.from_msg(msg))})
        return False

    while not queue.empty() and len(taken) < wanted:  # delivered for an earlier request
        take(queue.get_nowait())
    if len(taken) >= wanted:
        return taken
    body = json.dumps({"batch": wanted - len(taken), "no_wait": True}).encode()
    await subscription._nc.publish(request, body, inbox)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            while len(taken) < wanted and take(await queue.get()):
                pass
    return taken


BatchHandler = Callable[[list[Msg]], Awaitable[None]]


@dataclass
class BatchConsumer:
    """Pulls batches from a durable consumer and hands them to one handler.

    It waits for the first message with a long poll and then takes what is
    already pending, so a lone message is handled at once (no waiting for a batch
    to fill) and a backlog is handled in batches of up to `batch_size`.

    The handler owns acknowledgement: it acks, naks or dead-letters each message.
    If the handler raises, every message of the batch still unacknowledged is
    nak'ed with a delay and so delivered again, up to the consumer's max_deliver.
    """

    js: JetStreamContext
    stream: str
    config: ConsumerConfig
    handler: BatchHandler
    batch_size: int = 500
    idle_timeout: float = 5.0
    retry_delay: float = 1.0
    _task: asyncio.Task[None] | None = None
    _subscription: JetStreamContext.PullSubscription | None = None
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)
    _waiting: bool = False

    async def start(self) -> None:
        await ensure_consumer(self.js, self.stream, self.config)
        self._subscription = await self.js.pull_subscribe_bind(
            durable=self.config.durable_name or "", stream=self.stream
        )
        self._task = asyncio.create_task(self._run(self._subscription), name=f"consume-{self.stream}")

    async def stop(self) -> None:
        """Finish the batch in hand (up to 30 s), then stop fetching."""
        self._stopping.set()
        if self._task is not None:
            if self._waiting:
                self._task.cancel()
            await asyncio.wait([self._task], timeout=30)
            if not self._task.done():
                self._task.cancel()
        if self._subscription is not None:
            # A pull subscription left subscribed stalls the connection's drain
            # for its whole timeout (30 s).
            with contextlib.suppress(ConnectionClosedError):
                await self._subscription.unsubscribe()
            self._subscription = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def _next_batch(self, subscription: JetStreamContext.PullSubscription) -> list[Msg]:
        self._waiting = True
        try:
            batch = await subscription.fetch(1, timeout=self.idle_timeout)
        finally:
            self._waiting = False
        pending = batch[-1].metadata.num_pending if batch else 0
        if pending and self.batch_size > 1:
            with contextlib.suppress(NatsTimeoutError):
                batch += await _take_pending(subscription, min(pending, self.batch_size - 1), timeout=1.0)
        return batch

    async def _run(self, subscription: JetStreamContext.PullSubscription) -> None:
        while not self._stopping.is_set():
            try:
                batch = await self._next_batch(subscription)
            except NatsTimeoutError:
                continue
            except asyncio.CancelledError:
                return
            except TRANSIENT as error:  # a leader election or a reconnection: it passes
                consumer = self.config.durable_name
                transient_trouble.warn(
                    log,
                    f"fetch {self.stream} {consumer}",
                    "fetch failed; retrying",
                    stream=self.stream,
                    consumer=consumer,
                    error=repr(error),
                )
                await asyncio.sleep(self.retry_delay)
                continue
            except Exception:
                log.exception("fetch failed", extra={"stream": self.stream})
                await asyncio.sleep(self.retry_delay)
                continue
            try:
                await self.handler(batch)
            except Exception as error:
                await self._settle_failed(batch, error)

    async def _settle_failed(self, batch: list[Msg], error: Exception) -> None:
        """What the handler left unacknowledged after failing: delivered again, or, on its last
        delivery, kept on the dead letter with the error (never dropped silently)."""
        unsettled = [m for m in batch if not m._ackd]
        last = [m for m in unsettled if is_last_delivery(m, self.config.max_deliver or 0)]
        again = [m for m in unsettled if m not in last]
        log.warning(
            "batch failed",
            exc_info=None if isinstance(error, TRANSIENT) else error,
            extra={"stream": self.stream, "size": len(batch), "again": len(again), "dead_letter": len(last)},
        )
        for msg in last:
            try:
                await dead_letter(
                    self.js,
                    msg,
                    stream=self.stream,
                    consumer=self.config.durable_name or "?",
                    error=f"{type(error).__name__}: {error}",
                )
            except Exception:  # not even the dead letter: it comes again after ack_wait
                log.exception("could not dead-letter a message", extra={"stream": self.stream})
        await asyncio.gather(*(m.nak(delay=self.retry_delay) for m in again), return_exceptions=True)


def work_consumer(
    *, durable: str, filter_subject: str, ack_wait: timedelta, max_deliver: int
) -> ConsumerConfig:
    """A durable pull consumer shared by all replicas of one service."""
    return ConsumerConfig(
        durable_name=durable,
        filter_subject=filter_subject,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=ack_wait.total_seconds(),
        max_deliver=max_deliver,
        max_ack_pending=20_000,
    )


def deliveries(msg: Msg) -> int:
    """How many times JetStream has delivered `msg`, read off its reply subject
    (`$JS.ACK.<stream>.<consumer>.<delivered>.…`) without `msg.metadata`, which parses every
    field, a timestamp included, for each message: a fifth of the cost."""
    if msg._metadata is None and msg.reply and msg.reply.count(".") == 8:
        return int(msg.reply.split(".", 5)[4])
    return msg.metadata.num_delivered  # with a domain, or parsed already


def is_last_delivery(msg: Msg, max_deliver: int) -> bool:
    """True when the server will not deliver `msg` again (max_deliver <= 0: unlimited)."""
    return max_deliver > 0 and deliveries(msg) >= max_deliver


TRUNCATED = "Sh-Truncated"


def _fit(js: JetStreamContext, data: bytes, headers: dict[str, str]) -> bytes:
    """Cut what a dead letter keeps to what the server takes, saying so in a header (a message
    at the limit with the dead letter's headers added would be refused)."""
    room = max_payload_of(js) - header_bytes(headers) - 64
    if len(data) <= room:
        return data
    headers[TRUNCATED] = str(len(data))
    return data[: max(0, room)]


async def dead_letter(
    js: JetStreamContext, msg: Msg, *, stream: str, consumer: str, error: str, data: bytes | None = None
) -> None:
    """Keep a poison message with its error on the dead-letter stream, then stop its delivery.

    `data`: what to keep instead of the message's body (what a replay should publish)."""
    metadata = msg.metadata
    # Server directives of the original publish (expected stream, msg id, schedule)
    # would misdirect this one: keep only the application's headers.
    headers = {k: v for k, v in (msg.headers or {}).items() if not k.lower().startswith("nats-")}
    headers[DLQ_ERROR] = error[:2000].replace("\r", " ").replace("\n", " ")
    headers[DLQ_SUBJECT] = msg.subject
    headers[DLQ_SEQUENCE] = str(metadata.sequence.stream)
    headers[DLQ_DELIVERIES] = str(metadata.num_delivered)
    headers[MSG_ID] = f"dlq:{stream}:{consumer}:{metadata.sequence.stream}"
    kept = _fit(js, msg.data if data is None else data, headers)
    await js.publish(subjects.dead_letter(stream=stream, consumer=consumer), kept, headers=headers)
    await msg.term()
    log.warning(
        "message dead-lettered",
        extra={"stream": stream, "seq": metadata.sequence.stream, "error": error[:500]},
    )


async def keep_dead_letter(
    js: JetStreamContext, *, stream: str, consumer: str, subject: str, data: bytes, error: str, key: str
) -> None:
    """Keep something that could not be done on the dead-letter stream, as if `data` had been
    delivered on `subject` and failed: replaying it publishes `data` there again."""
    headers = {
        DLQ_ERROR: error[:2000].replace("\r", " ").replace("\n", " "),
        DLQ_SUBJECT: subject,
        MSG_ID: f"dlq:{stream}:{consumer}:{key}",
    }
    kept = _fit(js, data, headers)
    await js.publish(subjects.dead_letter(stream=stream, consumer=consumer), kept, headers=headers)
    log.warning("kept on the dead letter", extra={"stream": stream, "subject": subject, "error": error[:500]})
