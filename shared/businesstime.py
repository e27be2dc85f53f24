"""Business-hours arithmetic: when an SLA clock runs, and when people work (pure, no I/O).

A calendar names the open hours of each weekday in one IANA timezone, minus public
holidays and custom closed dates. All arithmetic is done on UTC instants: each local
date is turned into the UTC intervals it is open, so days of 23 or 25 hours (DST
changes) count exactly the time that really passes.
"""

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import cached_property, lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import holidays

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

MINUTES_PER_DAY = 24 * 60

# A calendar with no open time for this long is treated as never open, so `add` cannot loop forever.
_MAX_IDLE_DAYS = 3 * 366
# How far `next_change` looks ahead before deciding the state never flips.
_CHANGE_SEARCH_DAYS = 400
# Bounds the per-calendar cache of computed days; dates in use cluster around "now".
_MAX_CACHED_DAYS = 4096

_ONE_DAY = timedelta(days=1)
_ZERO = timedelta(0)
_EARLIEST = datetime.min.replace(tzinfo=UTC)
_LATEST = datetime.max.replace(tzinfo=UTC)
# DST moves a local day by at most two hours (double summer time): a bound on the open time of a week.
_WEEK_SLACK = timedelta(hours=2 * 7)
_TIME = re.compile(r"(\d{1,2}):(\d{2})")

_Interval = tuple[datetime, datetime]
_WeekHours = tuple[tuple[tuple[int, int], ...], ...]


class CalendarError(ValueError):
    """A business calendar is invalid, or cannot answer (it is never open)."""


@dataclass(frozen=True)
class BusinessCalendar:
    """Weekly open hours in one timezone, closed on public holidays and custom dates.

    `hours` has one entry per weekday (Mon..Sun, as in WEEKDAYS): sorted, disjoint
    (start_minute, end_minute) intervals of the local day, 0 <= start < end <= 1440.
    A holiday or custom closed date closes the whole local date.
    """

    timezone: str
    hours: _WeekHours
    holidays_country: str | None = None
    holidays_subdivision: str | None = None
    closed_days: frozenset[date] = frozenset()

    def __post_init__(self) -> None:
        _check_timezone(self.timezone)
        if len(self.hours) != len(WEEKDAYS):
            raise CalendarError(f"hours: expected {len(WEEKDAYS)} weekdays (Mon..Sun), got {len(self.hours)}")
        for name, intervals in zip(WEEKDAYS, self.hours, strict=True):
            _check_day(name, intervals, range(len(intervals)))
        _check_holidays(self.holidays_country, self.holidays_subdivision)

    @classmethod
    def parse(
        cls,
        *,
        timezone: str,
        hours: Mapping[str, Sequence[Sequence[str]]] | None,
        holidays_country: str | None = None,
        holidays_subdivision: str | None = None,
        closed_days: Iterable[str | date] = (),
    ) -> "BusinessCalendar":
        """A calendar from configuration values; raises CalendarError naming the bad part.

        `hours` maps weekday names to [start, end] pairs of "HH:MM" local times, e.g.
        {"mon": [["09:00", "12:00"], ["13:00", "18:00"]]}; "24:00" may end an interval.
        A weekday not named is closed; `hours=None` means open around the clock.
        `closed_days` are ISO dates ("2026-12-24") or dates.
        """
        if hours is None:
            week: _WeekHours = tuple(((0, MINUTES_PER_DAY),) for _ in WEEKDAYS)
        else:
            week = _parse_week(hours)
        return cls(
            timezone=timezone,
            hours=week,
            holidays_country=holidays_country,
            holidays_subdivision=holidays_subdivision,
            closed_days=frozenset(_parse_closed_day(index, value) for index, value in enumerate(closed_days)),
        )

    def is_open(self, at: datetime) -> bool:
        """Whether business time runs at the aware instant `at` (open at an opening, closed at a closing)."""
        at = _as_utc(at)
        day = self._local_date(at)
        return any(begin <= at < end for begin, end in self._intervals(_day_before(day), day))

    def add(self, start: datetime, duration: timedelta) -> datetime:
        """The UTC instant at which `duration` of business time has run since `start`.

        Outside business hours the clock starts at the next opening, so a zero duration
        gives `start` when open and the next opening otherwise. Raises CalendarError
        when the calendar is never open, or when the time would fall after the year 9999.
        """
        due = self._add(start, duration, None)
        assert due is not None  # without a limit, _add returns or raises
        return due

    def add_before(self, start: datetime, duration: timedelta, limit: datetime) -> datetime | None:
        """`add`, or None when `duration` of business time has not run by `limit`; the work is
        bounded by the limit (a long target on a calendar with few open hours stays cheap)."""
        return self._add(start, duration, _as_utc(limit))

    def _add(self, start: datetime, duration: timedelta, limit: datetime | None) -> datetime | None:
        if duration < _ZERO:
            raise ValueError(f"duration must not be negative, got {duration}")
        start = _as_utc(start)
        if self._always_open:  # exact at once: no bound needed
            due = _plus(start, duration)
            if due is None and limit is None:
                raise CalendarError(f"{duration} after {start.isoformat()} is after the year 9999")
            return due if due is None or limit is None or due <= limit else None
        if limit is not None and (start > limit or duration > self._most_open_between(start, limit)):
            return None
        remaining = duration
        for begin, end in self._intervals(_day_before(self._local_date(start))):
            if limit is not None and begin > limit:
                return None
            if end <= start:
                continue
            begin = max(begin, start)
            if remaining <= end - begin:
                due = begin + remaining
                return due if limit is None or due <= limit else None
            remaining -= end - begin
        if limit is not None:
            return None
        raise CalendarError(f"{duration} of business time after {start.isoformat()} is after the year 9999")

    def _most_open_between(self, start: datetime, limit: datetime) -> timedelta:
        """An upper bound of the business time in [start, limit]: whole weeks of open hours."""
        weeks = (limit - start) // timedelta(weeks=1) + 2
        return (self._open_per_week + _WEEK_SLACK) * weeks

    def elapsed(self, start: datetime, end: datetime) -> timedelta:
        """The business time within [start, end); zero when end <= start."""
        start, end = _as_utc(start), _as_utc(end)
        total = _ZERO
        if end <= start:
            return total
        for begin, stop in self._intervals(_day_before(self._local_date(start)), self._local_date(end)):
            overlap = min(stop, end) - max(begin, start)
            if overlap > _ZERO:
                total += overlap
        return total

    def next_change(self, after: datetime) -> datetime | None:
        """The first UTC instant strictly after `after` at which `is_open` flips.

        Open periods that touch (Mon 22:00-24:00 then Tue 00:00-06:00) are one period.
        None when nothing flips within about 400 days: open around the clock without
        closed days, or never open.
        """
        if self._always_open:
            return None
        after = _as_utc(after)
        horizon = _plus(after, timedelta(days=_CHANGE_SEARCH_DAYS)) or _LATEST
        period_end: datetime | None = None
        for begin, end in self._intervals(_day_before(self._local_date(after)), self._local_date(horizon)):
            if end <= after:
                continue
            if period_end is None:
                if begin > after:
                    return begin
                period_end = end
            elif begin > period_end:
                return period_end
            else:
                period_end = max(period_end, end)
        return period_end if period_end is not None and period_end <= horizon else None

    @cached_property
    def _zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @cached_property
    def _always_open(self) -> bool:
        full_day = ((0, MINUTES_PER_DAY),)
        return (
            all(day == full_day for day in self.hours)
            and self.holidays_country is None
            and not self.closed_days
        )

    @cached_property
    def _open_per_week(self) -> timedelta:
        return timedelta(minutes=sum(end - begin for day in self.hours for begin, end in day))

    @cached_property
    def _day_cache(self) -> dict[date, tuple[_Interval, ...]]:
        return {}

    def _local_date(self, at: datetime) -> date:
        try:
            return at.astimezone(self._zone).date()
        except OverflowError:  # within a day of the first or last representable instant
            return date.min if at.year == 1 else date.max

    def _intervals(self, first_day: date, last_day: date | None = None) -> Iterator[_Interval]:
        """The open UTC intervals of local dates first_day..last_day, in time order.

        Without last_day it runs on, and raises CalendarError after about three years
        of closed days in a row; either way it ends with the last representable date.
        """
        if last_day is None and not any(self.hours):
            raise CalendarError(f"calendar ({self.timezone}) is never open: it has no business hours")
        day, idle_days = first_day, 0
        while last_day is None or day <= last_day:
            intervals = self._day_intervals(day)
            if intervals:
                idle_days = 0
                yield from intervals
            elif last_day is None:
                idle_days += 1
                if idle_days > _MAX_IDLE_DAYS:
                    raise CalendarError(
                        f"calendar ({self.timezone}) is not open on any day from {first_day} to {day}"
                    )
            if day == date.max:
                return
            day += _ONE_DAY

    def _day_intervals(self, day: date) -> tuple[_Interval, ...]:
        """The open UTC intervals of one local date (cached per calendar)."""
        cache = self._day_cache
        intervals = cache.get(day)
        if intervals is None:
            if len(cache) >= _MAX_CACHED_DAYS:
                cache.clear()
            intervals = cache[day] = self._compute_day_intervals(day)
        return intervals

    def _compute_day_intervals(self, day: date) -> tuple[_Interval, ...]:
        local_hours = self.hours[day.weekday()]
        if not local_hours or self._is_closed_date(day):
            return ()
        instants = sorted((self._instant(day, start), self._instant(day, end)) for start, end in local_hours)
        # A DST gap can shrink an interval to nothing or make neighbours overlap: drop and merge.
        merged: list[_Interval] = []
        for begin, end in instants:
            if end <= begin:
                continue
            if merged and begin <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], end))
            else:
                merged.append((begin, end))
        return tuple(merged)

    def _instant(self, day: date, minute: int) -> datetime:
        """The UTC instant of a local wall time on `day` (minute 1440 is the next midnight)."""
        if minute == MINUTES_PER_DAY:
            if day == date.max:
                return _LATEST
            day, minute = day + _ONE_DAY, 0
        # fold=0: a time in a DST gap moves forward by the gap (02:30 on a spring-forward
        # night in Berlin is 03:30 CEST); a repeated time means its first occurrence.
        local = datetime(day.year, day.month, day.day, minute // 60, minute % 60, tzinfo=self._zone)
        try:
            return local.astimezone(UTC)
        except OverflowError:  # the first or last local day of the calendar: clipped to what exists
            return _EARLIEST if day.year == 1 else _LATEST

    def _is_closed_date(self, day: date) -> bool:
        if day in self.closed_days:
            return True
        if self.holidays_country is None:
            return False
        return day in _holiday_dates(self.holidays_country, self.holidays_subdivision, day.year)


@lru_cache(maxsize=512)
def _holiday_dates(country: str, subdivision: str | None, year: int) -> frozenset[date]:
    """The public holidays of one country (and subdivision) in one year."""
    return frozenset(holidays.country_holidays(country, subdiv=subdivision, years=year).keys())


def _day_before(day: date) -> date:
    return day - _ONE_DAY if day > date.min else day


def _plus(at: datetime, duration: timedelta) -> datetime | None:
    """`at + duration`, or None after the last representable instant."""
    try:
        return at + duration
    except OverflowError:
        return None


def _as_utc(at: datetime) -> datetime:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"expected a timezone-aware datetime, got naive {at.isoformat()}")
    try:
        return at.astimezone(UTC)
    except OverflowError:  # a local time whose UTC instant is not representable: the nearest one
        return _EARLIEST if at.year == 1 else _LATEST


def _check_timezone(name: str) -> None:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError, OSError):
        raise CalendarError(f"timezone: {name!r} is not an IANA timezone such as 'Europe/Berlin'") from None


def _check_holidays(country: str | None, subdivision: str | None) -> None:
    if country is None:
        if subdivision is not None:
            raise CalendarError(
                f"holidays_subdivision: {subdivision!r} needs a holidays_country such as 'DE'"
            )
        return
    try:
        holidays.country_holidays(country)
    except NotImplementedError:
        raise CalendarError(
            f"holidays_country: {country!r} is not a known country code such as 'DE'"
        ) from None
    try:
        holidays.country_holidays(country, subdiv=subdivision)
    except NotImplementedError:
        raise CalendarError(
            f"holidays_subdivision: {subdivision!r} is not a subdivision of {country!r}"
        ) from None


def _check_day(name: str, intervals: Sequence[tuple[int, int]], indices: Iterable[int]) -> None:
    """Raise CalendarError unless one weekday's intervals are within the day, sorted and disjoint."""
    previous: tuple[int, tuple[int, int]] | None = None
    for index, (start, end) in zip(indices, intervals, strict=True):
        path = f"hours.{name}[{index}]"
        if not 0 <= start < end <= MINUTES_PER_DAY:
            raise CalendarError(f"{path}: ({start}, {end}) is not 0 <= start < end <= 1440 minutes")
        if previous is not None and start < previous[1][1]:
            raise CalendarError(
                f"{path}: {_hhmm(start)}-{_hhmm(end)} overlaps hours.{name}[{previous[0]}]"
                f" {_hhmm(previous[1][0])}-{_hhmm(previous[1][1])}"
            )
        previous = (index, (start, end))


def _parse_week(hours: Mapping[str, Sequence[Sequence[str]]]) -> _WeekHours:
    unknown = [key for key in hours if key not in WEEKDAYS]
    if unknown:
        raise CalendarError(f"hours.{unknown[0]}: unknown weekday; expected one of {', '.join(WEEKDAYS)}")
    return tuple(_parse_day(name, hours.get(name, ())) for name in WEEKDAYS)


def _parse_day(name: str, pairs: Sequence[Sequence[str]]) -> tuple[tuple[int, int], ...]:
    """One weekday's intervals, sorted by start; errors name the interval as written."""
    if isinstance(pairs, str) or not isinstance(pairs, Sequence):
        raise CalendarError(f"hours.{name}: expected a list of [start, end] pairs, got {pairs!r}")
    parsed: list[tuple[int, tuple[int, int]]] = []
    for index, pair in enumerate(pairs):
        path = f"hours.{name}[{index}]"
        if isinstance(pair, str) or not isinstance(pair, Sequence) or len(pair) != 2:
            raise CalendarError(f"{path}: expected [start, end] such as ['09:00', '18:00'], got {pair!r}")
        start, end = _parse_time(path, pair[0], is_end=False), _parse_time(path, pair[1], is_end=True)
        if start >= end:
            raise CalendarError(f"{path}: start {pair[0]!r} is not before end {pair[1]!r}")
        parsed.append((index, (start, end)))
    parsed.sort(key=lambda item: item[1])
    intervals = tuple(interval for _, interval in parsed)
    _check_day(name, intervals, [index for index, _ in parsed])
    return intervals


def _parse_time(path: str, value: Any, *, is_end: bool) -> int:
    """Minutes since local midnight of an "HH:MM" time; "24:00" only as an end."""
    if isinstance(value, int):
        # YAML 1.1 reads an unquoted 18:00 as the number 1080.
        raise CalendarError(f"{path}: {value!r} is not a time HH:MM (quote times in YAML: '18:00')")
    match = _TIME.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise CalendarError(f"{path}: {value!r} is not a time HH:MM")
    hour, minute = int(match[1]), int(match[2])
    if (hour, minute) == (24, 0):
        if not is_end:
            raise CalendarError(f"{path}: '24:00' may only end an interval")
        return MINUTES_PER_DAY
    if hour > 23 or minute > 59:
        raise CalendarError(f"{path}: {value!r} is not a time HH:MM")
    return hour * 60 + minute


def _parse_closed_day(index: int, value: str | date) -> date:
    path = f"closed_days[{index}]"
    if isinstance(value, datetime):
        raise CalendarError(f"{path}: expected a date, got the datetime {value.isoformat()}")
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(value)
    except (TypeError, ValueError):
        raise CalendarError(f"{path}: {value!r} is not an ISO date YYYY-MM-DD") from None


def _hhmm(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


ALWAYS_OPEN = BusinessCalendar.parse(timezone="UTC", hours=None)
