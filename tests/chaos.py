"""What the chaos tests share: signed webhooks at a steady rate from a background task, a log
of what was done and when, and counts read back from JetStream."""

import asyncio
import json
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from nats.aio.client import Client

from shared import subjects
from tests.helpers import sign

RETRY_FOR = 90.0  # seconds a platform goes on retrying a delivery that was not accepted


@dataclass
class Delivery:
    account: str
    thread: str
    body: bytes
    sent_at: float  # time.monotonic() of the first attempt
    interaction_id: str | None = None  # set once answered 202
    accepted_at: float = 0.0  # time.monotonic() of the 202
    attempts: int = 0


@dataclass
class Timeline:
    """What a test did, and when, from its start; printed as it goes."""

    started: float = field(default_factory=time.monotonic)
    entries: list[str] = field(default_factory=list)

    def note(self, what: str) -> None:
        line = f"[{time.monotonic() - self.started:6.1f} s] {what}"
        self.entries.append(line)
        print(line, flush=True)


@dataclass
class WebhookSender:
    """Posts signed generic webhooks the way a platform does: a delivery that is not answered
    202 (an error status, a connection refused or reset) is sent again, the same body, until
    it is accepted."""

    url: Callable[[str], str]  # account -> the webhook's address
    secrets: dict[str, str]  # account -> webhook secret
    concurrency: int = 64
    deliveries: list[Delivery] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    _client: httpx.AsyncClient | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _slots: asyncio.Semaphore | None = None

    async def __aenter__(self) -> "WebhookSender":
        self._slots = asyncio.Semaphore(self.concurrency)
        self._client = httpx.AsyncClient(
            timeout=30, limits=httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=32)
        )
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.drain()
        assert self._client is not None
        await self._client.aclose()

    def send(self, account: str, thread: str, body: bytes) -> Delivery:
        """Start delivering `body` in the background; the delivery says when it was accepted."""
        delivery = Delivery(account, thread, body, time.monotonic())
        self.deliveries.append(delivery)
        task = asyncio.create_task(self._deliver(delivery))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return delivery

    async def drain(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks))

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    def busy(self) -> bool:
        """More deliveries waiting than twice what is sent at once: the server is behind."""
        return self.in_flight > 2 * self.concurrency

    async def _deliver(self, delivery: Delivery) -> None:
        assert self._client is not None and self._slots is not None
        headers = {
            "Content-Type": "application/json",
            "X-Signature-256": sign(self.secrets[delivery.account], delivery.body),
        }
        give_up = 0.0
        while not give_up or time.monotonic() < give_up:
            try:
                async with self._slots:
                    give_up = give_up or time.monotonic() + RETRY_FOR
                    delivery.attempts += 1
                    response = await self._client.post(
                        self.url(delivery.account), content=delivery.body, headers=headers
                    )
            except httpx.HTTPError as error:
                self.statuses[type(error).__name__] += 1
            else:
                self.statuses[str(response.status_code)] += 1
                if response.status_code == 202:
                    delivery.interaction_id = str(response.json()["interaction_id"])
                    delivery.accepted_at = time.monotonic()
                    return
            await asyncio.sleep(0.5)

    def accepted(self) -> list[Delivery]:
        return [d for d in self.deliveries if d.interaction_id is not None]


async def paced(
    rate: float, stop: asyncio.Event, each: Callable[[int], None], busy: Callable[[], bool] = lambda: False
) -> int:
    """Call `each(n)` `rate` times a second, evenly, until `stop` is set; how many calls. While
    `busy()` (the server is not keeping up) calls wait, so the rate achieved may be lower."""
    last, owed, sent = time.monotonic(), 1.0, 0
    while not stop.is_set():
        now = time.monotonic()
        owed, last = owed + (now - last) * rate, now
        while owed >= 1 and not busy():
            each(sent)
            sent, owed = sent + 1, owed - 1
        if busy():
            owed = min(owed, 1.0)  # what could not be sent is not sent later in a burst
        await asyncio.sleep(0.02)
    return sent


async def consumers_idle(nc: Client, *streams: str) -> bool:
    """True when every consumer of `streams` has taken and settled everything stored."""
    js = nc.jetstream()
    for stream in streams:
        for consumer in await js.consumers_info(stream):
            if consumer.num_pending or consumer.num_ack_pending:
                return False
    return True


async def assigned_per_conversation(nc: Client) -> Counter[str]:
    """ConversationAssigned events on SH_EVENTS, counted per conversation id."""
    info = await nc.jetstream().stream_info(
        subjects.EVENTS_STREAM, subjects_filter=subjects.all_conversation_events("assigned")
    )
    counts: Counter[str] = Counter()
    for subject, count in (info.state.subjects or {}).items():
        counts[subject.split(".")[3]] += count
    return counts


async def read_all(nc: Client, subject: str) -> list[Any]:
    """Every message a stream holds on `subject`, read without consuming."""
    from nats.errors import TimeoutError as NatsTimeout

    found = []
    sub = await nc.jetstream().subscribe(subject, ordered_consumer=True)
    try:
        while True:
            found.append(await sub.next_msg(timeout=2))
    except NatsTimeout:
        pass
    finally:
        await sub.unsubscribe()
    return found


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


def generic(external_id: str, thread: str, *, outbound: bool = False, **extra: Any) -> bytes:
    """A generic webhook body: a customer's comment, or the brand's reply in the thread."""
    return json.dumps(
        {
            "external_id": external_id,
            "kind": "reply" if outbound else "comment",
            "direction": "outbound" if outbound else "inbound",
            "thread_id": thread,
            "author": {"id": "brand" if outbound else f"author-{thread}", "name": "Someone"},
            "text": "We are on it." if outbound else "Where is my order?",
            "created_at": _now(),
            **extra,
        }
    ).encode()


def _now() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).isoformat()
