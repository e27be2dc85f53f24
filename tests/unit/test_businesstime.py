from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import holidays
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from shared.businesstime import ALWAYS_OPEN, WEEKDAYS, BusinessCalendar, CalendarError
from tests.fuzz import properties

BERLIN = ZoneInfo("Europe/Berlin")
OFFICE_HOURS = {day: [["09:00", "18:00"]] for day in ("mon", "tue", "wed", "thu", "fri")}
ALL_DAY = {day: [["00:00", "24:00"]] for day in WEEKDAYS}


def berlin(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=BERLIN)


def office(**kwargs: object) -> BusinessCalendar:
    """Mon-Fri 09:00-18:00 in Berlin."""
    return BusinessCalendar.parse(timezone="Europe/Berlin", hours=OFFICE_HOURS, **kwargs)  # type: ignore[arg-type]


def night_shift() -> BusinessCalendar:
    """Mon 22:00-24:00 then Tue 00:00-06:00: one period across midnight."""
    return BusinessCalendar.parse(
        timezone="Europe/Berlin", hours={"mon": [["22:00", "24:00"]], "tue": [["00:00", "06:00"]]}
    )


# --- the named cases -----------------------------------------------------------------


def test_whit_monday_public_holiday_pushes_the_deadline_to_tuesday() -> None:
    due = office(holidays_country="DE").add(berlin(2026, 5, 22, 17, 55), timedelta(minutes=30))
    assert due == berlin(2026, 5, 26, 9, 25)
    assert due.tzinfo is UTC


def test_custom_closed_day_pushes_the_deadline_like_a_holiday() -> None:
    calendar = office(closed_days=["2026-05-25"])
    assert calendar.add(berlin(2026, 5, 22, 17, 55), timedelta(minutes=30)) == berlin(2026, 5, 26, 9, 25)


def test_without_the_holiday_the_deadline_is_monday() -> None:
    assert office().add(berlin(2026, 5, 22, 17, 55), timedelta(minutes=30)) == berlin(2026, 5, 25, 9, 25)


def test_subdivision_holidays_close_only_that_subdivision() -> None:
    epiphany = berlin(2026, 1, 6, 10)  # a Tuesday; a public holiday in Bavaria, not nationwide
    assert office(holidays_country="DE").is_open(epiphany)
    assert not office(holidays_country="DE", holidays_subdivision="BY").is_open(epiphany)


# --- DST -----------------------------------------------------------------------------


def test_around_the_clock_in_berlin_adds_real_time_over_spring_forward() -> None:
    calendar = BusinessCalendar.parse(timezone="Europe/Berlin", hours=ALL_DAY)
    assert calendar.add(berlin(2026, 3, 29, 1, 30), timedelta(hours=2)) == berlin(2026, 3, 29, 4, 30)


def test_around_the_clock_in_berlin_adds_real_time_over_fall_back() -> None:
    calendar = BusinessCalendar.parse(timezone="Europe/Berlin", hours=ALL_DAY)
    # 01:30 CEST + 2h is the second 02:30 of the night (CET).
    due = calendar.add(berlin(2026, 10, 25, 1, 30), timedelta(hours=2))
    assert due == datetime(2026, 10, 25, 1, 30, tzinfo=UTC)
    assert due.astimezone(BERLIN).strftime("%H:%M %Z") == "02:30 CET"


def test_weekend_is_skipped_across_spring_forward() -> None:
    assert office().add(berlin(2026, 3, 28, 17), timedelta(hours=2)) == berlin(2026, 3, 30, 11)


def test_weekend_is_skipped_across_fall_back() -> None:
    assert office().add(berlin(2026, 10, 23, 17, 30), timedelta(hours=1)) == berlin(2026, 10, 26, 9, 30)


@pytest.mark.parametrize(
    ("day", "expected"),
    [(date(2026, 3, 29), timedelta(hours=23)), (date(2026, 10, 25), timedelta(hours=25))],
)
def test_an_all_day_calendar_counts_the_real_length_of_a_dst_day(day: date, expected: timedelta) -> None:
    calendar = BusinessCalendar.parse(timezone="Europe/Berlin", hours=ALL_DAY)
    start = datetime.combine(day, time(), BERLIN)
    end = datetime.combine(day + timedelta(days=1), time(), BERLIN)
    assert calendar.elapsed(start, end) == expected
    assert calendar.add(start, expected) == end


def test_an_opening_inside_the_dst_gap_moves_forward_by_the_gap() -> None:
    calendar = BusinessCalendar.parse(timezone="Europe/Berlin", hours={"sun": [["02:30", "05:00"]]})
    # 02:30 does not exist on 2026-03-29; like zoneinfo with fold=0 it means 03:30 CEST.
    assert not calendar.is_open(berlin(2026, 3, 29, 3, 15))
    assert calendar.is_open(berlin(2026, 3, 29, 3, 30))
    assert calendar.next_change(berlin(2026, 3, 29, 1)) == berlin(2026, 3, 29, 3, 30)
    assert calendar.elapsed(berlin(2026, 3, 29), berlin(2026, 3, 30)) == timedelta(hours=1, minutes=30)


def test_hours_inside_the_dst_gap_shrink_to_what_really_exists() -> None:
    calendar = BusinessCalendar.parse(
        timezone="Europe/Berlin", hours={"sun": [["01:00", "02:00"], ["02:30", "03:00"], ["04:00", "05:00"]]}
    )
    # On 2026-03-29 02:00-03:00 does not exist: 02:30-03:00 is no time at all.
    assert calendar.elapsed(berlin(2026, 3, 29), berlin(2026, 3, 30)) == timedelta(hours=2)
    assert calendar.add(berlin(2026, 3, 29), timedelta(minutes=90)) == berlin(2026, 3, 29, 4, 30)


# --- add and elapsed -----------------------------------------------------------------


def test_a_clock_started_before_opening_starts_at_opening() -> None:
    assert office().add(berlin(2026, 5, 20, 7), timedelta(hours=1)) == berlin(2026, 5, 20, 10)


def test_a_clock_started_exactly_at_opening_runs_at_once() -> None:
    assert office().add(berlin(2026, 5, 20, 9), timedelta(minutes=1)) == berlin(2026, 5, 20, 9, 1)


def test_a_clock_started_exactly_at_closing_waits_for_the_next_opening() -> None:
    assert office().add(berlin(2026, 5, 20, 18), timedelta(minutes=30)) == berlin(2026, 5, 21, 9, 30)


def test_a_target_that_ends_at_closing_is_due_at_closing() -> None:
    assert office().add(berlin(2026, 5, 20, 17), timedelta(hours=1)) == berlin(2026, 5, 20, 18)


def test_a_lunch_break_does_not_count() -> None:
    calendar = BusinessCalendar.parse(
        timezone="Europe/Berlin", hours={"wed": [["13:00", "18:00"], ["09:00", "12:00"]]}
    )
    assert calendar.add(berlin(2026, 5, 20, 11, 30), timedelta(hours=1)) == berlin(2026, 5, 20, 13, 30)
    assert calendar.elapsed(berlin(2026, 5, 20, 11), berlin(2026, 5, 20, 14)) == timedelta(hours=2)
    assert not calendar.is_open(berlin(2026, 5, 20, 12, 30))


def test_intervals_touching_at_midnight_run_as_one_period() -> None:
    calendar = night_shift()
    monday = berlin(2026, 5, 18)
    assert calendar.add(monday.replace(hour=23), timedelta(hours=2)) == berlin(2026, 5, 19, 1)
    assert calendar.add(monday.replace(hour=22), timedelta(hours=2)) == berlin(2026, 5, 19, 0)
    assert calendar.is_open(berlin(2026, 5, 19, 0))
    assert calendar.elapsed(monday.replace(hour=21), berlin(2026, 5, 19, 7)) == timedelta(hours=8)


def test_zero_duration_is_the_start_when_open_and_the_next_opening_when_closed() -> None:
    calendar = office()
    assert calendar.add(berlin(2026, 5, 20, 10), timedelta(0)) == berlin(2026, 5, 20, 10)
    assert calendar.add(berlin(2026, 5, 20, 18), timedelta(0)) == berlin(2026, 5, 21, 9)
    assert calendar.add(berlin(2026, 5, 23, 12), timedelta(0)) == berlin(2026, 5, 25, 9)


def test_elapsed_is_zero_for_an_empty_or_reversed_range() -> None:
    calendar = office()
    assert calendar.elapsed(berlin(2026, 5, 20, 10), berlin(2026, 5, 20, 10)) == timedelta(0)
    assert calendar.elapsed(berlin(2026, 5, 20, 12), berlin(2026, 5, 20, 10)) == timedelta(0)


def test_elapsed_over_a_week_counts_the_working_days() -> None:
    calendar = office(holidays_country="DE")
    assert calendar.elapsed(berlin(2026, 5, 22), berlin(2026, 5, 29)) == timedelta(hours=4 * 9)


def test_always_open_adds_wall_time() -> None:
    start = datetime(2026, 6, 1, 12, 34, tzinfo=UTC)
    assert ALWAYS_OPEN.add(start, timedelta(days=3, microseconds=5)) == start + timedelta(
        days=3, microseconds=5
    )


def test_a_never_open_calendar_cannot_add() -> None:
    for hours in ({}, {"mon": []}):
        calendar = BusinessCalendar.parse(timezone="Europe/Berlin", hours=hours)
        with pytest.raises(CalendarError, match="never open"):
            calendar.add(berlin(2026, 5, 20), timedelta(minutes=1))
        assert calendar.elapsed(berlin(2026, 5, 20), berlin(2026, 6, 20)) == timedelta(0)


def test_a_calendar_closed_for_years_gives_up() -> None:
    mondays = [date(2026, 5, 18) + timedelta(weeks=week) for week in range(52 * 4)]
    calendar = BusinessCalendar.parse(
        timezone="Europe/Berlin", hours={"mon": [["09:00", "18:00"]]}, closed_days=mondays
    )
    with pytest.raises(CalendarError, match="not open on any day"):
        calendar.add(berlin(2026, 5, 18), timedelta(minutes=1))


def test_add_rejects_a_naive_start_and_a_negative_duration() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        office().add(datetime(2026, 5, 20, 10), timedelta(hours=1))
    with pytest.raises(ValueError, match="negative"):
        office().add(berlin(2026, 5, 20, 10), timedelta(minutes=-1))


def test_a_start_in_any_timezone_means_the_same_instant() -> None:
    new_york = datetime(2026, 5, 22, 11, 55, tzinfo=ZoneInfo("America/New_York"))  # 17:55 in Berlin
    assert office().add(new_york, timedelta(minutes=30)) == berlin(2026, 5, 25, 9, 25)


# --- is_open and next_change ---------------------------------------------------------


def test_is_open_at_opening_but_not_at_closing() -> None:
    calendar = office()
    assert calendar.is_open(berlin(2026, 5, 20, 9))
    assert not calendar.is_open(berlin(2026, 5, 20, 18))
    assert not calendar.is_open(berlin(2026, 5, 23, 12))


def test_is_closed_all_day_on_a_public_holiday() -> None:
    calendar = office(holidays_country="DE")
    assert not calendar.is_open(berlin(2026, 5, 25, 12))
    assert calendar.is_open(berlin(2026, 5, 26, 12))


def test_next_change_finds_closing_and_opening() -> None:
    calendar = office()
    assert calendar.next_change(berlin(2026, 5, 20, 10)) == berlin(2026, 5, 20, 18)
    assert calendar.next_change(berlin(2026, 5, 20, 9)) == berlin(2026, 5, 20, 18)
    assert calendar.next_change(berlin(2026, 5, 20, 18)) == berlin(2026, 5, 21, 9)
    assert calendar.next_change(berlin(2026, 5, 20, 7)) == berlin(2026, 5, 20, 9)
    assert calendar.next_change(berlin(2026, 5, 20, 7)).tzinfo is UTC  # type: ignore[union-attr]


def test_next_change_skips_a_holiday() -> None:
    assert office(holidays_country="DE").next_change(berlin(2026, 5, 22, 18)) == berlin(2026, 5, 26, 9)


def test_next_change_sees_holidays_in_an_around_the_clock_calendar() -> None:
    calendar = BusinessCalendar.parse(timezone="Europe/Berlin", hours=None, holidays_country="DE")
    assert calendar.next_change(berlin(2026, 12, 20)) == berlin(2026, 12, 25)
    assert calendar.next_change(berlin(2026, 12, 25)) == berlin(2026, 12, 27)


def test_next_change_does_not_flip_at_a_midnight_inside_an_open_period() -> None:
    calendar = night_shift()
    assert calendar.next_change(berlin(2026, 5, 18, 21)) == berlin(2026, 5, 18, 22)
    assert calendar.next_change(berlin(2026, 5, 18, 23)) == berlin(2026, 5, 19, 6)
    assert calendar.next_change(berlin(2026, 5, 19, 6)) == berlin(2026, 5, 25, 22)


def test_next_change_is_none_when_nothing_ever_flips() -> None:
    assert ALWAYS_OPEN.next_change(datetime(2026, 5, 20, tzinfo=UTC)) is None
    assert (
        BusinessCalendar.parse(timezone="Asia/Kolkata", hours=ALL_DAY).next_change(berlin(2026, 5, 20))
        is None
    )
    assert BusinessCalendar.parse(timezone="Europe/Berlin", hours={}).next_change(berlin(2026, 5, 20)) is None


def test_next_change_looks_about_400_days_ahead() -> None:
    calendar = BusinessCalendar.parse(timezone="Europe/Berlin", hours=ALL_DAY, closed_days=["2028-06-01"])
    assert calendar.next_change(berlin(2026, 5, 20)) is None
    assert calendar.next_change(berlin(2028, 1, 1)) == berlin(2028, 6, 1)


# --- parse ---------------------------------------------------------------------------


def test_parse_reads_hours_sorted_with_24_00_and_unnamed_days_closed() -> None:
    calendar = BusinessCalendar.parse(
        timezone="Europe/Berlin",
        hours={"tue": [["13:00", "24:00"], ["9:00", "12:00"]]},
        closed_days=["2026-12-24", date(2026, 12, 31)],
    )
    assert calendar.hours == ((), ((540, 720), (780, 1440)), (), (), (), (), ())
    assert calendar.closed_days == frozenset({date(2026, 12, 24), date(2026, 12, 31)})


def test_parse_without_hours_is_open_around_the_clock() -> None:
    assert BusinessCalendar.parse(timezone="UTC", hours=None) == ALWAYS_OPEN
    assert ALWAYS_OPEN.hours == ((((0, 1440),),) * 7)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"timezone": "Mars/Olympus"}, "timezone: 'Mars/Olympus' is not an IANA timezone"),
        ({"timezone": ""}, "timezone: '' is not an IANA timezone"),
        ({"hours": {"monday": [["09:00", "18:00"]]}}, "hours.monday: unknown weekday"),
        ({"hours": {"mon": [["25:00", "26:00"]]}}, "hours.mon[0]: '25:00' is not a time HH:MM"),
        ({"hours": {"mon": [["09:00", "18:60"]]}}, "hours.mon[0]: '18:60' is not a time HH:MM"),
        (
            {"hours": {"fri": [["09:00", "12:00"], ["1pm", "18:00"]]}},
            "hours.fri[1]: '1pm' is not a time HH:MM",
        ),
        ({"hours": {"mon": [[540, 1080]]}}, "hours.mon[0]: 540 is not a time HH:MM (quote times in YAML"),
        ({"hours": {"mon": [["24:00", "24:00"]]}}, "hours.mon[0]: '24:00' may only end an interval"),
        ({"hours": {"mon": [["18:00", "09:00"]]}}, "hours.mon[0]: start '18:00' is not before end '09:00'"),
        ({"hours": {"mon": [["09:00", "09:00"]]}}, "hours.mon[0]: start '09:00' is not before end '09:00'"),
        (
            {"hours": {"tue": [["09:00", "12:00"], ["11:00", "13:00"]]}},
            "hours.tue[1]: 11:00-13:00 overlaps hours.tue[0] 09:00-12:00",
        ),
        ({"hours": {"wed": [["09:00"]]}}, "hours.wed[0]: expected [start, end]"),
        ({"hours": {"wed": ["09:00-18:00"]}}, "hours.wed[0]: expected [start, end]"),
        ({"hours": {"wed": "09:00-18:00"}}, "hours.wed: expected a list of [start, end] pairs"),
        ({"holidays_country": "XX"}, "holidays_country: 'XX' is not a known country code"),
        (
            {"holidays_country": "DE", "holidays_subdivision": "XX"},
            "holidays_subdivision: 'XX' is not a subdivision",
        ),
        ({"holidays_subdivision": "BY"}, "holidays_subdivision: 'BY' needs a holidays_country"),
        ({"closed_days": ["2026-12-24", "2026-13-01"]}, "closed_days[1]: '2026-13-01' is not an ISO date"),
        ({"closed_days": [datetime(2026, 12, 24, 9)]}, "closed_days[0]: expected a date, got the datetime"),
    ],
)
def test_parse_names_the_bad_part(kwargs: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {"timezone": "Europe/Berlin", "hours": OFFICE_HOURS} | kwargs
    with pytest.raises(CalendarError) as raised:
        BusinessCalendar.parse(**arguments)  # type: ignore[arg-type]
    assert message in str(raised.value)


@pytest.mark.parametrize(
    ("hours", "message"),
    [
        (((),) * 6, "hours: expected 7 weekdays"),
        ((((600, 700), (500, 550)),) + ((),) * 6, "hours.mon[1]: 08:20-09:10 overlaps hours.mon[0]"),
        (((),) * 6 + (((0, 1441),),), "hours.sun[0]: (0, 1441) is not 0 <= start < end <= 1440"),
    ],
)
def test_construction_checks_the_hours_too(
    hours: tuple[tuple[tuple[int, int], ...], ...], message: str
) -> None:
    with pytest.raises(CalendarError) as raised:
        BusinessCalendar(timezone="UTC", hours=hours)
    assert message in str(raised.value)


# --- properties ----------------------------------------------------------------------

TIMEZONES = ("Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata")
HOLIDAYS = ((None, None), ("DE", None), ("DE", "BY"), ("US", None))
# Days around DST changes in the zones above, where the arithmetic is most likely to slip.
DST_DAYS = (
    date(2026, 3, 8),
    date(2026, 3, 29),
    date(2026, 4, 5),
    date(2026, 10, 4),
    date(2026, 10, 25),
    date(2026, 11, 1),
    date(2027, 3, 28),
    date(2027, 10, 31),
)
# Midnight, DST-night hours and half hours show up far more often than at random.
BOUNDARIES = st.one_of(st.sampled_from([0, 60, 120, 150, 180, 1410, 1440]), st.integers(0, 1440))
PROPERTY = properties(200)


@st.composite
def calendars(draw: st.DrawFn) -> BusinessCalendar:
    week = []
    for _ in WEEKDAYS:
        bounds = sorted(draw(st.lists(BOUNDARIES, unique=True, max_size=6)))
        week.append(tuple(zip(bounds[0::2], bounds[1::2], strict=False)))
    assume(any(week))
    country, subdivision = draw(st.sampled_from(HOLIDAYS))
    return BusinessCalendar(
        timezone=draw(st.sampled_from(TIMEZONES)),
        hours=tuple(week),
        holidays_country=country,
        holidays_subdivision=subdivision,
        closed_days=draw(
            st.frozensets(
                st.sampled_from(DST_DAYS) | st.dates(date(2026, 1, 1), date(2027, 12, 31)), max_size=4
            )
        ),
    )


instants = st.one_of(
    st.datetimes(
        datetime(2026, 1, 1),
        datetime(2027, 12, 31),
        timezones=st.sampled_from([UTC, *(ZoneInfo(name) for name in TIMEZONES)]),
    ),
    st.builds(
        lambda day, offset: datetime.combine(day, time(), UTC) + offset,
        st.sampled_from(DST_DAYS),
        st.timedeltas(timedelta(days=-3), timedelta(days=3)),
    ),
)
durations = st.timedeltas(timedelta(0), timedelta(days=3))


def ordered(a: datetime, b: datetime) -> tuple[datetime, datetime]:
    return (a, b) if a <= b else (b, a)


@PROPERTY
@given(calendars(), instants, durations, durations)
def test_add_is_monotonic_in_the_duration(
    calendar: BusinessCalendar, start: datetime, d1: timedelta, d2: timedelta
) -> None:
    d1, d2 = min(d1, d2), max(d1, d2)
    assert calendar.add(start, d1) <= calendar.add(start, d2)


@PROPERTY
@given(calendars(), instants, instants, durations)
def test_add_is_monotonic_in_the_start(
    calendar: BusinessCalendar, s1: datetime, s2: datetime, duration: timedelta
) -> None:
    s1, s2 = ordered(s1, s2)
    assert calendar.add(s1, duration) <= calendar.add(s2, duration)


@PROPERTY
@given(calendars(), instants, durations)
def test_add_ends_in_open_time_and_elapsed_gives_the_duration_back(
    calendar: BusinessCalendar, start: datetime, duration: timedelta
) -> None:
    due = calendar.add(start, duration)
    assert due >= start
    assert calendar.elapsed(start, due) == duration
    if duration > timedelta(0):
        just_before = due - timedelta(microseconds=1)
        assert calendar.is_open(just_before)
        local_day = just_before.astimezone(ZoneInfo(calendar.timezone)).date()
        assert local_day not in calendar.closed_days
        if calendar.holidays_country is not None:
            public_holidays = holidays.country_holidays(
                calendar.holidays_country, subdiv=calendar.holidays_subdivision, years=local_day.year
            )
            assert local_day not in public_holidays


@PROPERTY
@given(calendars(), instants, durations.filter(lambda d: d > timedelta(0)), durations)
def test_add_splits_into_consecutive_adds(
    calendar: BusinessCalendar, start: datetime, d1: timedelta, d2: timedelta
) -> None:
    assert calendar.add(start, d1 + d2) == calendar.add(calendar.add(start, d1), d2)


@PROPERTY
@given(calendars(), instants, instants, instants)
def test_elapsed_is_bounded_by_wall_time_and_additive(
    calendar: BusinessCalendar, a: datetime, b: datetime, c: datetime
) -> None:
    a, b, c = sorted((a, b, c))
    assert timedelta(0) <= calendar.elapsed(a, c) <= c - a
    assert calendar.elapsed(a, c) == calendar.elapsed(a, b) + calendar.elapsed(b, c)
    assert calendar.elapsed(c, a) == timedelta(0)


@PROPERTY
@given(calendars(), instants)
def test_next_change_is_the_first_flip(calendar: BusinessCalendar, after: datetime) -> None:
    change = calendar.next_change(after)
    was_open = calendar.is_open(after)
    if change is None:
        assert calendar.elapsed(after, after + timedelta(days=400)) == timedelta(days=400)
        return
    assert change > after
    assert calendar.is_open(change) is not was_open
    assert calendar.elapsed(after, change) == (change - after if was_open else timedelta(0))
    if was_open:
        assert calendar.add(after, change - after) == change
    else:
        assert calendar.add(after, timedelta(0)) == change
