"""notify's application service with fakes behind its ports: a clock that moves only when told,
counted ids, a scheduler and channels that record what they were given. Shared by the unit
tests (in-memory repository) and the repository contract test (SQL and in memory)."""

import base64
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from services.notify.memory import MemoryRepository
from services.notify.ports import (
    Delivered,
    DeliveryError,
    Message,
    NotifyRepository,
    OverdueContext,
    Recipient,
)
from services.notify.service import NotifyService, Outcome, Policy
from services.notify.timers import TimerPayload
from shared.events import AlertChannel, DeadlineChanged, DeadlineKind
from shared.secrets import LinkSigner

T0 = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
KEY = base64.urlsafe_b64encode(b"k" * 32).decode()
MARIA = Recipient("Maria Lopez", "maria@example.com", "maria")
LI = Recipient("Li Wei", "li@example.com", "li")


class Clock:
    def __init__(self) -> None:
        self.at = T0

    def now(self) -> datetime:
        return self.at


class Ids:
    def __init__(self) -> None:
        self.count = 0

    def new(self) -> str:
        self.count += 1
        return f"{self.count:032x}"


@dataclass
class Scheduler:
    armed: list[TimerPayload] = field(default_factory=list)
    groups: list[tuple[str, str, datetime]] = field(default_factory=list)
    cancelled: list[tuple[str, str]] = field(default_factory=list)

    async def arm(self, timers: Iterable[TimerPayload], *, again: bool = False) -> None:
        self.armed.extend(timers)

    async def arm_groups(
        self, pairs: Iterable[tuple[str, str]], *, at: datetime, again: bool = False
    ) -> None:
        self.groups.extend((p, c, at) for p, c in pairs)

    async def cancel(self, keys: Iterable[tuple[str, str]]) -> None:
        self.cancelled.extend(keys)

    async def armed_conversations(self) -> set[str]:
        return {t.conversation_id for t in self.armed}


@dataclass
class FakeChannel:
    """Records each message; `failing` makes each send fail (an SMTP outage); the people (ids,
    or addresses) in `unreachable` have nothing to be reached at (no push subscription, a
    rejected address): retrying cannot help."""

    name: AlertChannel
    sent: list[Message] = field(default_factory=list)
    failing: bool = False
    unreachable: set[str] = field(default_factory=set)

    async def send(self, message: Message) -> Delivered:
        for who in (r.id or r.email for r in message.to):
            if who in self.unreachable:
                raise DeliveryError(f"nowhere to reach {who} by {self.name}", permanent=True)
        if self.failing:
            raise DeliveryError("SMTPServerDisconnected: the server went away")
        self.sent.append(message)
        return Delivered(f"<{message.key}@example.com>")


def context(conversation_id: str, *, tenant_id: str = "acme") -> OverdueContext:
    return OverdueContext(
        conversation_id=conversation_id, deadline_version=1, tenant_name="Acme", account_id="acme-fb",
        account_handle="Acme", platform="facebook", author_name="Dana Reyes", text="Where is my order?",
        url="https://facebook.example/p/1", waiting_since=T0, due_at=T0, owner=MARIA, team=[MARIA, LI],
        tenant_id=tenant_id, people={"maria": MARIA, "li": LI},
    )  # fmt: skip


def deadline(conversation_id: str, version: int, due_at: datetime | None) -> DeadlineChanged:
    return DeadlineChanged(
        event_id=f"{conversation_id[:8]}{version:024x}", occurred_at=T0, tenant_id="acme",
        conversation_id=conversation_id, deadline_version=version, kind=DeadlineKind.first_response if due_at else None,
        account_id="acme-fb", owner_id="maria", started_at=T0, warn_at=None, due_at=due_at, reason="test",
    )  # fmt: skip


def fired(conversation_id: str, version: int, step: str = "breach", at: datetime = T0) -> TimerPayload:
    return TimerPayload(
        tenant_id="acme", conversation_id=conversation_id, deadline_version=version, step=step, at=at
    )


@dataclass
class World:
    repository: NotifyRepository
    clock: Clock = field(default_factory=Clock)
    ids: Ids = field(default_factory=Ids)
    scheduler: Scheduler = field(default_factory=Scheduler)
    email: FakeChannel = field(default_factory=lambda: FakeChannel(AlertChannel.email))
    push: FakeChannel = field(default_factory=lambda: FakeChannel(AlertChannel.push))
    max_attempts: int = 3
    group_window: timedelta = timedelta(0)
    group_after: int = 3
    operator: str | None = None  # the address connector problems go to
    service: NotifyService = field(init=False)

    def __post_init__(self) -> None:
        self.service = NotifyService(
            repository=self.repository, scheduler=self.scheduler,
            channels={"email": self.email, "push": self.push}, clock=self.clock, ids=self.ids,
            policy=Policy(
                public_url="https://notify.example", signer=LinkSigner(KEY), max_attempts=self.max_attempts,
                group_window=self.group_window, group_after=self.group_after, operator=self.operator,
            ),
        )  # fmt: skip

    async def fire(self, timer: TimerPayload) -> Outcome:
        """As the timer consumer does: handle the timer, then send what it claimed."""
        outcome = await self.service.timer_fired(timer)
        if outcome.then is None:
            return outcome
        return await self.service.send(outcome.then)


def memory_world(*conversations: str, **options: object) -> World:
    repository = MemoryRepository(conversations={c: context(c) for c in conversations})
    return World(repository, **options)  # type: ignore[arg-type]


def events_of(outcome: Outcome) -> list[dict[str, object]]:
    return [
        {"subject": e.subject, "msg_id": e.msg_id, **json.loads(e.payload)}
        for batch in outcome.events
        for e in batch.envelopes
    ] + [{"subject": e.subject, "msg_id": e.msg_id, **json.loads(e.payload)} for e in outcome.replies]
