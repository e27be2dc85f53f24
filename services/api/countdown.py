"""The time a conversation has left, in business time, as the inbox shows it. Pure, no I/O.

A deadline is due at a wall-clock instant the router computed by adding the SLA's business
time to when the clock started (`shared.businesstime`). What a person needs to see is how
much of that business time is left: a countdown that runs while the calendar is open,
stands still outside working hours (and says until when), stands still while someone has
paused the conversation, and once the due time has passed says by how much it is overdue.

`countdown` answers that from the same calendar the deadline was computed with, so the
figure on the page is the router's arithmetic, not an estimate. The page's script only
ticks a running countdown down between two renders; when the calendar opens or closes
(`changes_at`) or the time runs out, the page asks the server again.
"""

import enum
import functools
import json
from dataclasses import dataclass
from datetime import datetime

from shared.businesstime import ALWAYS_OPEN, BusinessCalendar


class Clock(enum.StrEnum):
    running = "running"  # business time runs now: the countdown ticks
    closed = "closed"  # outside business hours: it stands still until the calendar opens
    paused = "paused"  # someone paused the conversation: it stands still until resumed
    overdue = "overdue"  # past its due time and still awaiting an answer
    stopped = "stopped"  # nothing is awaited (answered, resolved) or no deadline applies


@dataclass(frozen=True)
class Countdown:
    clock: Clock
    seconds: float  # business seconds left (running, closed, paused), or overdue by (overdue)
    changes_at: datetime | None  # when the calendar next opens or closes (None: never)
    due_at: datetime | None
    open_now: bool = False  # business time runs now (an overdue clock counts up only then)

    @property
    def label(self) -> str:
        """What the row says, for people and screen readers."""
        left = duration_text(self.seconds)
        if self.clock is Clock.running:
            return f"{left} left"
        if self.clock is Clock.closed:
            until = f" until {self.changes_at:%a %d %b %H:%M} UTC" if self.changes_at else ""
            return f"{left} left, paused outside business hours{until}"
        if self.clock is Clock.paused:
            return f"{left} left, paused"
        if self.clock is Clock.overdue:
            return f"overdue by {left}"
        return "no deadline running"


def countdown(
    *,
    state: str,
    awaiting: bool,
    due_at: datetime | None,
    paused_remaining_seconds: float | None,
    calendar: BusinessCalendar,
    now: datetime,
) -> Countdown:
    """The countdown of one conversation at `now`.

    `state` is the conversation's (open, paused, responded, resolved); `awaiting` whether the
    customer waits for an answer; `calendar` the business hours of its SLA (ALWAYS_OPEN when
    its SLA names none)."""
    if state == "paused" and paused_remaining_seconds is not None:
        return Countdown(Clock.paused, max(0.0, paused_remaining_seconds), None, due_at)
    if state != "open" or not awaiting or due_at is None:
        return Countdown(Clock.stopped, 0.0, None, due_at)
    if now >= due_at:
        over = calendar.elapsed(due_at, now).total_seconds()
        return Countdown(Clock.overdue, over, calendar.next_change(now), due_at, calendar.is_open(now))
    left = calendar.elapsed(now, due_at).total_seconds()
    open_now = calendar.is_open(now)
    clock = Clock.running if open_now else Clock.closed
    return Countdown(clock, left, calendar.next_change(now), due_at, open_now)


def duration_text(seconds: float) -> str:
    """A duration as people say it: 45s, 12m 05s, 3h 20m, 2d 4h."""
    total = int(max(0.0, seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


@functools.lru_cache(maxsize=1024)
def calendar_of(
    timezone: str | None,
    hours: str | None,
    holidays_country: str | None = None,
    holidays_subdivision: str | None = None,
    closed_days: str | None = None,
) -> BusinessCalendar:
    """A calendar row's calendar, parsed once (cached). No row, or one `apply` would have refused:
    always open, so a page or a report still answers."""
    if timezone is None:
        return ALWAYS_OPEN
    try:
        return BusinessCalendar.parse(
            timezone=timezone,
            hours=json.loads(hours) if hours else None,
            holidays_country=holidays_country,
            holidays_subdivision=holidays_subdivision,
            closed_days=json.loads(closed_days) if closed_days else [],
        )
    except (ValueError, TypeError, AttributeError):  # CalendarError is a ValueError
        return ALWAYS_OPEN
