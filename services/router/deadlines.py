"""When a conversation is due: pure arithmetic on SLA targets (wall-clock time)."""

from dataclasses import dataclass
from datetime import datetime, timedelta

from shared.events import DeadlineKind


@dataclass(frozen=True)
class SlaTargets:
    first_response: timedelta
    next_response: timedelta | None = None
    warn_before: timedelta | None = None


@dataclass(frozen=True)
class Deadline:
    kind: DeadlineKind
    started_at: datetime
    warn_at: datetime | None
    due_at: datetime


def plan_deadline(
    *,
    kind: DeadlineKind,
    started_at: datetime,
    sla: SlaTargets | None,
    now: datetime,
    backfill_cutoff: timedelta,
) -> Deadline | None:
    """The deadline of a clock started at `started_at`, or None when no alert may come of it.

    The clock starts when the person wrote (the platform's created_at), not when we
    heard of it. A message older than the backfill cutoff never alerts: connecting
    an account or catching up after an outage must not cause a storm.
    """
    if sla is None or now - started_at > backfill_cutoff:
        return None
    target = sla.first_response
    if kind is DeadlineKind.next_response and sla.next_response is not None:
        target = sla.next_response
    due_at = started_at + target
    warn_at = due_at - sla.warn_before if sla.warn_before and sla.warn_before < target else None
    return Deadline(kind=kind, started_at=started_at, warn_at=warn_at, due_at=due_at)
