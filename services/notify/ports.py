"""What notify's application service works through: its store, its timers, the channels that
carry every message, a clock and ids. Adapters: `sql.py` and `memory.py` (the repository),
`scheduler.py` (JetStream schedules), `senders.py` (email, Web Push, Apprise)."""

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from services.notify.chain import Chain
from services.notify.decisions import AckOutcome, Preferences
from services.notify.timers import TimerPayload, WatchedDeadline
from shared.events import AlertChannel, AlertKind, DeadlineChanged


@dataclass(frozen=True)
class Recipient:
    name: str
    email: str
    id: str = ""


@dataclass(frozen=True)
class OverdueContext:
    """Everything the email says, read from the database at fire time."""

    conversation_id: str
    deadline_version: int
    tenant_name: str
    account_id: str
    account_handle: str
    platform: str
    author_name: str
    text: str
    url: str | None
    waiting_since: datetime
    due_at: datetime
    owner: Recipient | None
    team: list[Recipient]
    still_waiting: bool = True  # the conversation is open and this deadline version is current
    tenant_id: str = ""
    lead: Recipient | None = None
    manager: Recipient | None = None
    people: dict[str, Recipient] = field(default_factory=dict)  # anyone a chain may name, by id
    # read with `people`, so that planning and sending an alert read nothing more
    preferences: dict[str, Preferences] = field(default_factory=dict)
    link_generations: dict[str, int] = field(default_factory=dict)  # of their push links


@dataclass(frozen=True)
class Message:
    """One message on any channel: email renders all of it; push and Apprise the title, the
    short `summary` and the links."""

    kind: AlertKind
    to: tuple[Recipient, ...]  # people, or an operator's address (a Recipient without id)
    subject: str
    text: str
    sent_at: datetime
    html: str = ""
    summary: str = ""
    key: str = ""  # deterministic: an email's Message-ID is <key@sender domain>
    step: str = ""
    conversation_id: str = ""
    url: str = ""
    ack_url: str = ""


@dataclass(frozen=True)
class Delivered:
    detail: str = ""  # what was sent: the email's Message-ID, how many devices took it


class DeliveryError(Exception):
    """A channel could not deliver. `permanent`: retrying cannot help (no subscription, a
    rejected address)."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class Channel(Protocol):
    """Every kind of message goes out through one of these, raising DeliveryError."""

    name: AlertChannel

    async def send(self, message: Message) -> Delivered: ...


class Clock(Protocol):
    def now(self) -> datetime: ...


class Ids(Protocol):
    def new(self) -> str: ...


class TimerScheduler(Protocol):
    """One timer per conversation (its next alert), retry timers and burst windows."""

    async def arm(self, timers: Iterable[TimerPayload], *, again: bool = False) -> None: ...

    async def arm_groups(
        self, pairs: Iterable[tuple[str, str]], *, at: datetime, again: bool = False
    ) -> None: ...

    async def cancel(self, keys: Iterable[tuple[str, str]]) -> None: ...

    async def armed_conversations(self) -> set[str]: ...


class ClaimOutcome(enum.StrEnum):
    claimed = "claimed"
    done = "done"  # sent, failed or skipped before
    busy = "busy"  # another replica holds its lease


@dataclass(frozen=True)
class AlertClaim:
    outcome: ClaimOutcome
    attempts: int = 0
    retry_in: float = 0.0


@dataclass(frozen=True)
class Delivery:
    """One alert to one person on one channel, as the delivery log holds it."""

    id: str
    conversation_id: str
    deadline_version: int
    step: str
    tenant_id: str
    channel: str
    person_id: str
    status: str
    attempts: int


@dataclass(frozen=True)
class AlertStart:
    """A fired alert as the service planned it, for `start_alerts`: the deliveries it wants
    (channel, person), or why nobody is told (`skipped`); `finished`: it is the last alert of its
    deadline's timeline."""

    fired: TimerPayload
    wanted: tuple[tuple[str, str], ...]
    finished: bool
    skipped: str | None = None

    @property
    def status(self) -> str:
        """The alert's status once claimed: handled (its deliveries opened), or skipped."""
        return "sent" if self.skipped is None else "skipped"

    @property
    def recipients(self) -> str:
        return ", ".join(f"{person}:{channel}" for channel, person in self.wanted)

    def attempts(self, claimed: AlertClaim) -> int:
        """The alert's attempts once claimed: one more when its deliveries are opened."""
        return claimed.attempts + (1 if self.skipped is None else 0)


@dataclass(frozen=True)
class AlertStarted:
    """What `start_alerts` did with one alert: its claim, and the deliveries it took to send."""

    claim: AlertClaim
    deliveries: tuple[Delivery, ...] = ()


@dataclass(frozen=True)
class ContextWanted:
    """An overdue context to read: the conversation, its deadline version and due time, its chain."""

    conversation_id: str
    version: int
    due_at: datetime
    chain: Chain


@dataclass(frozen=True)
class DeliveryUpdate:
    id: str
    status: str  # sent, retrying, failed, dropped, grouped, skipped
    attempts: int
    error: str = ""
    detail: str = ""


@dataclass(frozen=True)
class Envelope:
    """An event as it goes on the bus: its subject, its deterministic message id, its JSON."""

    subject: str
    msg_id: str
    payload: bytes


@dataclass(frozen=True)
class EventBatch:
    id: str
    envelopes: tuple[Envelope, ...]


@dataclass(frozen=True)
class AckResult:
    outcome: AckOutcome
    tenant_id: str = ""
    acknowledged_at: datetime | None = None


@dataclass(frozen=True)
class CurrentDeadline:
    """A conversation's current deadline and its escalation chain, read together (once per batch
    of deadlines, once per fired timer) and passed along rather than read again."""

    deadline: WatchedDeadline
    chain: Chain = field(default_factory=Chain)


@dataclass(frozen=True)
class AssignmentContext:
    tenant_name: str
    platform: str
    author_name: str
    text: str
    url: str | None
    person: Recipient


class NotifyRepository(Protocol):
    """notify's state. Each call is one transaction."""

    async def store_deadlines(
        self, events: Iterable[DeadlineChanged], *, now: datetime
    ) -> dict[str, CurrentDeadline]:
        """Keep each conversation's newest deadline (an older version never overwrites a newer
        one), and give back the current deadline and chain of each, in the same transaction."""

    async def deadlines(self, ids: Iterable[str]) -> dict[str, WatchedDeadline]: ...

    async def current(self, ids: Iterable[str]) -> dict[str, CurrentDeadline]:
        """Each conversation's stored deadline with its escalation chain, in one read."""

    async def armed_deadlines(self, *, after: str, limit: int) -> list[WatchedDeadline]: ...

    async def chains(self, ids: Iterable[str]) -> dict[str, Chain]: ...

    async def claim_alert(
        self,
        *,
        tenant_id: str,
        conversation_id: str,
        version: int,
        step: str,
        lease_until: datetime,
        now: datetime,
    ) -> AlertClaim:
        """The right to send this alert: once per (conversation, version, step), across replicas."""

    async def finish_alert(
        self,
        *,
        conversation_id: str,
        version: int,
        step: str,
        status: str,
        attempts: int,
        recipients: str = "",
        error: str = "",
        now: datetime,
    ) -> None: ...

    async def start_alerts(
        self, starts: Sequence[AlertStart], *, lease_until: datetime, now: datetime
    ) -> list[AlertStarted]:
        """Many fired alerts in one transaction, each claimed once across replicas (as
        `claim_alert`). A claimed one is marked skipped, or has its deliveries logged and those
        not done yet taken, and is marked handled; unless another replica holds it, it is noted
        on its deadline's timeline as `advance` does. In the order given."""

    async def claim_owed(
        self,
        *,
        conversation_id: str,
        version: int,
        include_failed: bool,
        lease_until: datetime,
        now: datetime,
    ) -> list[Delivery]:
        """Every delivery of this deadline version still owed whose lease has run out."""

    async def finish_deliveries(
        self, updates: list[DeliveryUpdate], *, events: EventBatch | None, now: datetime
    ) -> None:
        """Record outcomes, and the events that tell of them, together."""

    async def advance(
        self, *, conversation_id: str, version: int, step: str, finished: bool, now: datetime
    ) -> None:
        """Note the alert of the timeline just handled; `finished`: it was the last one."""

    async def acknowledge(
        self,
        *,
        tenant_id: str,
        conversation_id: str,
        version: int,
        person_id: str,
        command_id: str,
        now: datetime,
    ) -> AckResult:
        """Stop the escalation of this deadline version. A command seen before gets its first answer;
        a conversation of another tenant is unknown (nothing is written)."""

    async def overdue_contexts(self, wanted: Sequence[ContextWanted]) -> list[OverdueContext | None]:
        """What each alert says and whom it may reach (with their preferences and push link
        generations), in one read for them all; in the order given, None for a conversation
        that is not known."""

    async def assignment_context(
        self, *, conversation_id: str, person_id: str
    ) -> AssignmentContext | None: ...

    async def account_names(self, account_id: str) -> tuple[str, str]:
        """(tenant name, account handle)."""

    async def preferences(self, people: Iterable[str]) -> dict[str, Preferences]: ...

    async def link_generations(self, people: Iterable[str]) -> dict[str, int]: ...

    async def recently_sent(
        self, *, pairs: set[tuple[str, str]], since: datetime, exclude: set[str]
    ) -> dict[tuple[str, str], int]: ...

    async def claim_grouped(
        self, *, person_id: str, channel: str, lease_until: datetime, now: datetime
    ) -> list[Delivery]: ...

    async def count_grouped(self, *, person_id: str, channel: str) -> int: ...

    async def add_events(self, events: EventBatch, *, now: datetime) -> None:
        """Events of an outcome with no state of its own (an operator alert)."""

    async def pending_events(self, *, older_than: datetime | None, limit: int) -> list[EventBatch]: ...

    async def published(self, ids: list[str]) -> None: ...
