"""notify's decisions, pure: who is alerted on which channel, whether a fired timer counts,
retry or give up, burst or alone. Each answers with a typed reason, never a sentence to parse.

Each person's preferences say which channels an alert kind goes to (email when they say
nothing), and a person in their quiet hours is not woken: the alert goes to the next person
of the escalation chain who is on shift.
"""

import enum
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from services.notify.timers import DeadlineState, TimerPayload, WatchedDeadline
from shared.businesstime import BusinessCalendar
from shared.events import AlertKind, ConversationAssigned

CHANNELS = ("email", "push", "apprise")
KINDS = ("assigned", "warning", "breach", "escalation")


@dataclass(frozen=True)
class QuietHours:
    start: time
    end: time
    timezone: str = "UTC"

    def covers(self, now: datetime) -> bool:
        local = now.astimezone(ZoneInfo(self.timezone)).time()
        if self.start <= self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end  # across midnight

    @classmethod
    def parse(cls, text: str | None, timezone: str) -> "QuietHours | None":
        if not text:
            return None
        raw = json.loads(text)
        return cls(time.fromisoformat(raw["from"]), time.fromisoformat(raw["until"]), timezone)


@dataclass(frozen=True)
class Preferences:
    """A person's channels per alert kind, their quiet hours, and whether they are at work."""

    channels: dict[str, tuple[str, ...]] = field(default_factory=dict)
    quiet: QuietHours | None = None
    working_hours: BusinessCalendar | None = None  # None: always on shift
    present: bool = True  # active and not offline

    def for_kind(self, kind: str) -> tuple[str, ...]:
        return self.channels.get(kind, ("email",) if kind != "assigned" else ())

    def resting(self, now: datetime) -> bool:
        return self.quiet is not None and self.quiet.covers(now)

    def on_shift(self, now: datetime) -> bool:
        """Someone who can take an alert meant for another: present, on shift, not resting."""
        working = self.working_hours is None or self.working_hours.is_open(now)
        return self.present and working and not self.resting(now)

    @classmethod
    def parse(
        cls,
        notify: str | None,
        quiet_hours: str | None,
        timezone: str,
        *,
        working_hours: str | None = None,
        present: bool = True,
    ) -> "Preferences":
        raw = json.loads(notify) if notify else {}
        return cls(
            {kind: tuple(channels) for kind, channels in raw.items()},
            QuietHours.parse(quiet_hours, timezone),
            BusinessCalendar.parse(timezone=timezone, hours=json.loads(working_hours))
            if working_hours
            else None,
            present,
        )


@dataclass(frozen=True)
class PlannedDelivery:
    """One person on one channel for one alert."""

    person_id: str
    channel: str
    instead_of: str | None = None  # who was in their quiet hours


def plan_deliveries(
    kind: str,
    people: Sequence[str],
    preferences: dict[str, Preferences],
    *,
    standby: Sequence[str] = (),
    now: datetime,
) -> list[PlannedDelivery]:
    """The deliveries of one alert: (person, channel) pairs, in order. `standby`: the people of
    the chain's later steps; the first of them on shift (present, in their working hours, not
    in quiet hours) takes the alert of someone in their quiet hours."""
    chosen: list[tuple[str, str | None]] = []
    taken = set(people)
    for person in people:
        if not preferences.get(person, Preferences()).resting(now):
            chosen.append((person, None))
            continue
        substitute = next(
            (
                other
                for other in standby
                if other not in taken and preferences.get(other, Preferences()).on_shift(now)
            ),
            None,
        )
        if substitute is not None:
            taken.add(substitute)
            chosen.append((substitute, person))
        # else: in quiet hours with nobody on shift after them: nobody is woken
    return [
        PlannedDelivery(person, channel, instead_of)
        for person, instead_of in chosen
        for channel in preferences.get(person, Preferences()).for_kind(kind)
        if channel in CHANNELS
    ]


@dataclass(frozen=True)
class Pending:
    """A delivery about to be sent for the first time."""

    id: str
    person_id: str
    channel: str
    step: str


def held_for_burst(
    pending: Sequence[Pending],
    recent: dict[tuple[str, str], int],
    *,
    group_after: int,
    warning_digest: bool,
) -> list[Pending]:
    """Which deliveries wait for the end of the burst window: those to a person who already got
    `group_after` alerts on that channel within it (`recent`), and warnings when they are
    digested."""
    return [
        p
        for p in pending
        if recent.get((p.person_id, p.channel), 0) >= group_after or (warning_digest and p.step == "warning")
    ]


def window_end(now: datetime, window: timedelta) -> datetime:
    """The end of the burst window `now` falls in: windows are aligned, so every alert held in
    one window waits for the same moment."""
    seconds = window.total_seconds()
    return datetime.fromtimestamp((int(now.timestamp() // seconds) + 1) * seconds, tz=UTC)


def kind_of(step: str) -> AlertKind:
    """The kind of alert a timeline step is: warning, breach or escalation."""
    if step.startswith("escalation"):
        return AlertKind.escalation
    return AlertKind.warning if step == "warning" else AlertKind.breach


# -- fired timers -----------------------------------------------------------------------------


class Verdict(enum.StrEnum):
    send = "send"
    ignore = "ignore"
    rearm = "rearm"  # a stale timer fired while a newer version is armed: arm that one


class Ignored(enum.StrEnum):
    """Why a fired timer sends nothing."""

    unknown = "unknown"  # no deadline known for this conversation
    stale = "stale"  # armed for an older version
    ahead = "ahead"  # armed for a version newer than the stored one (its deadline has not landed)
    not_armed = "not_armed"  # the deadline is cleared, alerted or failed
    acknowledged = "acknowledged"  # an escalation step of an acknowledged deadline


@dataclass(frozen=True)
class Judgement:
    verdict: Verdict
    ignored: Ignored | None = None

    @property
    def silenced(self) -> bool:
        """Ignored because someone is on it: the timeline goes on past it."""
        return self.ignored is Ignored.acknowledged


def judge_fired(current: WatchedDeadline | None, fired: TimerPayload) -> Judgement:
    """What a fired timer means against the current deadline: it counts only if its version is
    still the current one, so a late cancel or an out-of-order re-arm never alerts wrongly."""
    if current is None:
        return Judgement(Verdict.ignore, Ignored.unknown)
    if current.version > fired.deadline_version:
        if current.state == DeadlineState.armed and current.due_at is not None:
            return Judgement(Verdict.rearm, Ignored.stale)
        return Judgement(Verdict.ignore, Ignored.stale)
    if current.version < fired.deadline_version:
        return Judgement(Verdict.ignore, Ignored.ahead)
    if current.state != DeadlineState.armed:
        return Judgement(Verdict.ignore, Ignored.not_armed)
    if fired.step.startswith("escalation") and current.acknowledged_at is not None:
        return Judgement(Verdict.ignore, Ignored.acknowledged)
    return Judgement(Verdict.send)


class Skipped(enum.StrEnum):
    """Why a claimed alert or delivery is not sent."""

    no_longer_waiting = "no_longer_waiting"  # answered, or the deadline moved on
    nobody_to_tell = "nobody_to_tell"
    not_a_person = "not_a_person"  # no longer an active person


# -- assignment notices -------------------------------------------------------------------------

STALE_ASSIGNMENT = timedelta(minutes=10)  # older assignments are not news (a backlog)


def assignment_news_to(event: ConversationAssigned, *, now: datetime) -> str | None:
    """The person an assignment is news to: its new owner, unless there is none, the owner did
    not change, or the assignment is older than `STALE_ASSIGNMENT` (a backlog read late)."""
    owner = event.owner_id
    if owner is None or owner == event.previous_owner_id or now - event.assigned_at > STALE_ASSIGNMENT:
        return None
    return owner


def assignment_channels(owner: str | None, preferences: Mapping[str, Preferences]) -> tuple[str, ...]:
    """The channels `owner` asked to hear of assignments on: none unless they asked, and none
    for someone who is not a known person."""
    if owner is None or owner not in preferences:
        return ()
    return preferences[owner].for_kind("assigned")


# -- retry or give up ---------------------------------------------------------------------------


class Fate(enum.StrEnum):
    sent = "sent"
    retry = "retry"  # failed; tried again on the retry timer
    give_up = "give_up"  # failed the last allowed attempt: to the dead letter
    dropped = "dropped"  # failed for good: retrying cannot help (no subscription)


def fate_of(*, ok: bool, permanent: bool, attempts: int, max_attempts: int) -> Fate:
    """What becomes of a delivery after its `attempts`-th attempt."""
    if ok:
        return Fate.sent
    if permanent:
        return Fate.dropped
    return Fate.retry if attempts < max_attempts else Fate.give_up


def retry_delay(
    attempt: int, *, initial: timedelta, maximum: timedelta, key: str = "", jitter: float = 0.2
) -> timedelta:
    """Exponential backoff: initial, 2x, 4x ... capped at maximum, spread by up to `jitter`.
    The spread is drawn from `key` (what is retried), so many alerts failing together retry
    apart, and the same input always gives the same delay."""
    base = min(maximum.total_seconds(), initial.total_seconds() * 2 ** max(0, attempt - 1))
    draw = int.from_bytes(hashlib.sha256(f"{key}:{attempt}".encode()).digest()[:8], "big") / 2**64
    spread = base * jitter * (2 * draw - 1)
    return timedelta(seconds=max(0.5, min(maximum.total_seconds(), base + spread)))


# -- acknowledgements -------------------------------------------------------------------------


class AckOutcome(enum.StrEnum):
    acknowledged = "acknowledged"
    already = "already"  # acknowledged before
    outdated = "outdated"  # the deadline moved on: answered or changed
    unknown = "unknown"  # no deadline known for this conversation
