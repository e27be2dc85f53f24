"""When a conversation is due: pure arithmetic on SLA targets, in business time."""

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from shared.businesstime import ALWAYS_OPEN, BusinessCalendar
from shared.events import DeadlineKind


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
class Deadline:
    kind: DeadlineKind
    started_at: datetime
    warn_at: datetime | None
    due_at: datetime


def _warn_at(sla: Sla, start: datetime, target: timedelta) -> datetime | None:
    if not sla.warn_before or sla.warn_before >= target:
        return None
    return sla.calendar.add(start, target - sla.warn_before)


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
) -> Deadline | None:
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
    target = targets.response(kind) + paused  # business time spent paused does not count
    due_at = sla.calendar.add(started_at, target)
    deadline = Deadline(kind, started_at, _warn_at(sla, started_at, target), due_at)
    resolution = plan_resolution(opened_at=opened_at, sla=sla, priority=priority)
    if resolution is not None and resolution.due_at < due_at:
        return resolution
    return deadline


def plan_resolution(*, opened_at: datetime, sla: Sla | None, priority: str) -> Deadline | None:
    """The resolution deadline, counted from the opening; None without a resolution target."""
    if sla is None:
        return None
    target = sla.targets(priority).resolution
    if target is None:
        return None
    return Deadline(
        DeadlineKind.resolution,
        opened_at,
        _warn_at(sla, opened_at, target),
        sla.calendar.add(opened_at, target),
    )


def remaining(sla: Sla | None, *, now: datetime, due_at: datetime) -> timedelta:
    """Business time left on a clock that stops now (a pause); never negative."""
    if sla is None:
        return timedelta(0)
    return sla.calendar.elapsed(now, due_at)


def resume(sla: Sla, *, kind: DeadlineKind, now: datetime, left: timedelta) -> Deadline:
    """The clock of a paused conversation running again with the business time it had left."""
    due_at = sla.calendar.add(now, left)
    warn_at = (
        sla.calendar.add(now, left - sla.warn_before) if sla.warn_before and sla.warn_before < left else None
    )
    return Deadline(kind, now, warn_at, due_at)
