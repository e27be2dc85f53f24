"""Timers: what to arm for a deadline, and what a fired timer means. Pure.

Each conversation has one schedule subject holding only its next timer. A timer
carries the deadline version it was armed for; at fire time it counts only if
that version is still the current one, so an out-of-order re-arm or cancel can
never produce a wrong alert.
"""

import enum
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field

from services.notify.chain import Chain, PlannedAlert, next_alert, timeline
from shared.events import AwareDatetime

# NATS holds a schedule's time as Go nanoseconds since 1970, which run out in April 2262: a
# later time overflows and would fire at once (the breach and the whole chain together).
# Nothing is armed for a moment past this; such a deadline is logged, never fired.
LATEST_SCHEDULE = datetime(2262, 1, 1, tzinfo=UTC)


def schedulable(moment: datetime) -> bool:
    return moment < LATEST_SCHEDULE


class DeadlineState(enum.StrEnum):
    armed = "armed"  # a due time is set and no alert has gone out yet
    cleared = "cleared"  # responded, resolved, or nothing to watch
    alerted = "alerted"  # every alert of its timeline was handled
    failed = "failed"  # the alert could not be delivered after every retry


@dataclass(frozen=True)
class WatchedDeadline:
    """The router's deadline as notify keeps it: the newest version, and how far its timeline got."""

    conversation_id: str
    tenant_id: str
    version: int
    due_at: datetime | None
    state: str
    warn_at: datetime | None = None
    last_step: str | None = None  # the last alert of its timeline that was handled
    acknowledged_at: datetime | None = None


class TimerPayload(BaseModel):
    """What a schedule message carries, and so what the fired message says."""

    model_config = ConfigDict(frozen=True)

    tenant_id: str
    conversation_id: str
    deadline_version: int
    step: str = "breach"  # warning, breach, escalation-<n>[.<repeat>]
    attempt: int = 0
    at: AwareDatetime
    # The W3C trace context that armed it (the fired copy has no headers). A factory, not `{}`:
    # pydantic deep-copies a mutable default for every timer built.
    trace: dict[str, str] = Field(default_factory=dict)


def plan_timer(
    deadline: WatchedDeadline, chain: Chain, *, after_step: str | None, now: datetime | None = None
) -> tuple[TimerPayload | None, PlannedAlert | None]:
    """The timer a deadline needs next (None when nothing is left to arm) and, when its next
    entry falls after what NATS can schedule, that entry (not armed), from one look at its
    timeline.

    `after_step`: the alert just handled (None: from the start of the timeline). `now`:
    skip what is already past (arming a new deadline, reconciling), except the breach."""
    entry = _next_entry(deadline, chain, after_step=after_step, now=now)
    if entry is None:
        return None, None
    if not schedulable(entry.at):
        return None, entry
    timer = TimerPayload(
        tenant_id=deadline.tenant_id,
        conversation_id=deadline.conversation_id,
        deadline_version=deadline.version,
        step=entry.step,
        at=entry.at,
    )
    return timer, None


def next_timer(
    deadline: WatchedDeadline, chain: Chain, *, after_step: str | None, now: datetime | None = None
) -> TimerPayload | None:
    """The timer a deadline needs next, or None when nothing is left to arm (or what is left
    falls after what NATS can schedule: see `unschedulable`)."""
    return plan_timer(deadline, chain, after_step=after_step, now=now)[0]


def _next_entry(
    deadline: WatchedDeadline, chain: Chain, *, after_step: str | None, now: datetime | None
) -> PlannedAlert | None:
    if deadline.state != DeadlineState.armed or deadline.due_at is None:
        return None
    entries = timeline(warn_at=deadline.warn_at, due_at=deadline.due_at, chain=chain)
    return next_alert(
        entries,
        after_step=after_step,
        acknowledged=deadline.acknowledged_at is not None,
        not_before=now,
    )


def unschedulable(
    deadline: WatchedDeadline, chain: Chain, *, after_step: str | None, now: datetime | None = None
) -> PlannedAlert | None:
    """The next entry of a deadline's timeline when it falls after what NATS can schedule
    (and so is not armed), else None."""
    return plan_timer(deadline, chain, after_step=after_step, now=now)[1]


def breach_timer(deadline: WatchedDeadline) -> TimerPayload | None:
    """The first timer of a deadline with no escalation chain (kept for callers that have none)."""
    return next_timer(deadline, Chain(), after_step=None)
