"""When a conversation is due: pure arithmetic on SLA targets, in business time.

Every due or warn time falls in SCHEDULABLE: notify arms each as a NATS message
schedule, which the server reads as a Go time (nanoseconds since 1970 in 64 bits:
1677 to April 2262), and a breach's escalation steps come after it. A target that
cannot fall due within it (a very long one, or a calendar with almost no open hours,
or closed for years) sets no deadline, and a message older than the backfill cutoff
sets none either.
"""

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from shared.businesstime import ALWAYS_OPEN, BusinessCalendar, CalendarError
from shared.events import DeadlineKind

SCHEDULABLE = (datetime(1678, 1, 1, tzinfo=UTC), datetime(2262, 1, 1, tzinfo=UTC))


@dataclass(frozen=True)
class Targets:
    first_response: timedelta
    next_response: timedelta | None = None
    resolution: timedelta | None = None

    def response(self, kind: DeadlineKind) -> timedelta:
        if kind is DeadlineKind.next_response and self.next_response is not None:
            return self.next_response
        return self.first_response


@dataclass(frozen=True)
class Sla:
    """One SLA policy: targets per priority, counted on a business-hours calendar."""

    default: Targets
    by_priority: dict[str, Targets] = field(default_factory=dict)
    warn_before: timedelta | None = None
    calendar: BusinessCalendar = ALWAYS_OPEN
    vip_bump: int = 1
    high_reach_followers: int | None = None
    high_reach_bump: int = 1
    name: str = ""

    def targets(self, priority: str) -> Targets:
        return self.by_priority.get(priority, self.default)


@dataclass(frozen=True)
class DueTimes:
    """When a conversation's clock started, and when it warns and falls due (the router's plan;
    `DeadlineChanged` publishes it, `DeadlineRow` stores notify's copy)."""

    kind: DeadlineKind
    started_at: datetime
    warn_at: datetime | None
    due_at: datetime


def schedulable(at: datetime | None) -> bool:
    return at is not None and SCHEDULABLE[0] <= at <= SCHEDULABLE[1]


def _after(sla: Sla, start: datetime, target: timedelta) -> datetime | None:
    """`target` of business time after `start`, or None when that is not schedulable (a clock
    that started before the range, say with a backfill cutoff of centuries, sets none either)."""
    if start < SCHEDULABLE[0]:
        return None
    try:
        at = sla.calendar.add_before(start, target, SCHEDULABLE[1])
    except CalendarError:  # closed for years on end: nothing can fall due
        return None
    return at if schedulable(at) else None


def _deadline(kind: DeadlineKind, sla: Sla, start: datetime, target: timedelta) -> DueTimes | None:
    due_at = _after(sla, start, target)
    if due_at is None:
        return None
    warn_at = None
    if sla.warn_before and sla.warn_before < target:
        warn_at = _after(sla, start, target - sla.warn_before)
    return DueTimes(kind, start, warn_at, due_at)


def plan_deadline(
    *,
    kind: DeadlineKind,
    started_at: datetime,
    opened_at: datetime,
    sla: Sla | None,
    priority: str,
    now: datetime,
    backfill_cutoff: timedelta,
    paused: timedelta = timedelta(0),
) -> DueTimes | None:
    """The deadline of a clock started at `started_at`, or None when no alert may come of it.

    The clock starts when the person wrote (the platform's created_at), not when we
    heard of it, and runs only in the policy's business hours. A message older than
    the backfill cutoff never alerts: connecting an account or catching up after an
    outage must not cause a storm. While an answer is awaited, the resolution target
    (counted from the opening) applies when it falls first. `paused`: business time the
    clock spent paused, given back.
    """
    if sla is None or now - started_at > backfill_cutoff:
        return None
    targets = sla.targets(priority)
    try:
        target = targets.response(kind) + paused  # business time spent paused does not count
    except OverflowError:
        target = timedelta.max
    deadline = _deadline(kind, sla, started_at, target)
    resolution = plan_resolution(opened_at=opened_at, sla=sla, priority=priority)
    if resolution is not None and (deadline is None or resolution.due_at < deadline.due_at):
        return resolution
    return deadline


def plan_resolution(
    *,
    opened_at: datetime,
    sla: Sla | None,
    priority: str,
    now: datetime | None = None,
    backfill_cutoff: timedelta = timedelta.max,
) -> DueTimes | None:
    """The resolution deadline, counted from the opening; None without a resolution target, or
    (given `now`) for a conversation opened before the backfill cutoff."""
    if sla is None or (now is not None and now - opened_at > backfill_cutoff):
        return None
    target = sla.targets(priority).resolution
    if target is None:
        return None
    return _deadline(DeadlineKind.resolution, sla, opened_at, target)


def remaining(sla: Sla | None, *, now: datetime, due_at: datetime) -> timedelta:
    """Business time left on a clock that stops now (a pause); never negative."""
    if sla is None:
        return timedelta(0)
    return sla.calendar.elapsed(now, due_at)


def resume(sla: Sla, *, kind: DeadlineKind, now: datetime, left: timedelta) -> DueTimes | None:
    """The clock of a paused conversation running again with the business time it had left."""
    return _deadline(kind, sla, now, left)
