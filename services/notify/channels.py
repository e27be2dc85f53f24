"""Who gets an alert on which channel, and the channels themselves.

Planning is pure: each person's preferences say which channels an alert kind
goes to (email when they say nothing), and a person in their quiet hours is not
woken: the alert goes to the next person of the escalation chain who is not in
theirs. Sending is I/O: email over SMTP, Web Push (VAPID, encrypted payload) to
each of the person's subscriptions, and Apprise URLs (ntfy, Slack, Teams,
Telegram, Pushover and the rest).
"""

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from shared.businesstime import BusinessCalendar

log = logging.getLogger(__name__)

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
class Planned:
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
) -> list[Planned]:
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
        else:
            log.info("alert not sent: in quiet hours, nobody next in the chain", extra={"person": person})
    return [
        Planned(person, channel, instead_of)
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


class DeliveryError(Exception):
    """A channel could not deliver. `permanent`: retrying cannot help (no subscription, a
    rejected address)."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent
