"""Time at its limits: messages from any past date down to year 1, and targets that would fall
due after what a NATS schedule can hold (Go times end in April 2262). Nothing overflows, old
messages are assigned but never alert, and no due, warn or timer time leaves the schedulable range.

What a conversation lives through goes through the router's application service over the
in-memory repository (`routing_world.Desk`), looking at each step's outcome and at what the
repository holds. The calendar (`BusinessCalendar`), the deadline arithmetic
(`deadlines.plan_deadline`) and the schedulable range stay pure: they are functions of their
arguments with no World around them, and the extremes they are given here (a target of
`timedelta.max`, a pause of days added to it, the first and last instants of `datetime`)
cannot be reached through a message or a command.
"""

import asyncio
import dataclasses
import time
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.router import deadlines
from services.router.assignment import Person
from services.router.deadlines import SCHEDULABLE, Sla, Targets
from services.router.service import Outcome
from shared.businesstime import WEEKDAYS, BusinessCalendar, CalendarError
from shared.commands import CheckAvailability, Recompute
from shared.events import DeadlineChanged, DeadlineKind
from tests.fuzz import properties
from tests.unit.routing_world import STANDARD, T0, TENANT, Desk, build_world, events

PROPERTY = properties(120)
HOUR = timedelta(hours=1)
FIRST = datetime.min.replace(tzinfo=UTC)
LAST = datetime.max.replace(tzinfo=UTC)
OFFICE = BusinessCalendar.parse(
    timezone="America/New_York",
    hours={day: [["09:00", "17:00"]] for day in WEEKDAYS[:5]},
    holidays_country="US",
)
ONE_HOUR_A_WEEK = BusinessCalendar.parse(
    timezone="Europe/Berlin", hours={"mon": [["09:00", "10:00"]]}, holidays_country="DE"
)


def with_resolution(sla: Sla, resolution: timedelta | None = timedelta(days=2)) -> Sla:
    return dataclasses.replace(sla, default=dataclasses.replace(sla.default, resolution=resolution))


def schedulable_times(outcomes: Iterable[Outcome]) -> list[datetime]:
    """Every time the outcomes' events and timers ask notify or NATS to schedule."""
    outcomes = list(outcomes)
    moments = [t.at for outcome in outcomes for t in outcome.timers]
    for deadline in events(outcomes, DeadlineChanged):
        moments += [at for at in (deadline.warn_at, deadline.due_at) if at is not None]
    return moments


# -- the calendar at the ends of time ---------------------------------------------------------


@pytest.mark.parametrize("zone", ["UTC", "America/New_York", "Asia/Kolkata", "Pacific/Kiritimati"])
def test_the_calendar_answers_at_the_first_and_last_instants(zone: str) -> None:
    calendar = BusinessCalendar.parse(
        timezone=zone, hours={day: [["00:00", "09:00"], ["17:00", "24:00"]] for day in WEEKDAYS}
    )
    for at in (FIRST + timedelta(hours=3), LAST - timedelta(hours=3)):
        calendar.is_open(at)
        calendar.next_change(at)
        assert timedelta(0) <= calendar.elapsed(at - timedelta(hours=3), at) <= timedelta(hours=3)
        assert timedelta(0) <= calendar.elapsed(at, at + timedelta(hours=3)) <= timedelta(hours=3)
    assert calendar.add(FIRST, timedelta(hours=1)) > FIRST
    local_first = datetime(1, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=5)))  # before FIRST in UTC
    assert calendar.add(local_first, timedelta(0)) >= FIRST
    with pytest.raises(CalendarError, match="after the year 9999"):
        calendar.add(LAST - timedelta(hours=1), timedelta(days=2))
    assert calendar.add_before(LAST - timedelta(hours=1), timedelta(days=2), LAST) is None


def test_add_before_gives_up_at_its_limit_quickly() -> None:
    start = datetime(2026, 5, 20, tzinfo=UTC)
    limit = SCHEDULABLE[1]
    started = time.process_time()
    assert ONE_HOUR_A_WEEK.add_before(start, timedelta(days=600), limit) is None  # 14,400 Mondays
    due = ONE_HOUR_A_WEEK.add_before(start, timedelta(days=300), limit)  # 7,200 Mondays, in 2168
    assert due is not None and ONE_HOUR_A_WEEK.elapsed(start, due) == timedelta(days=300)
    assert ONE_HOUR_A_WEEK.add_before(start, timedelta(days=100_000_000), limit) is None
    assert ONE_HOUR_A_WEEK.add_before(start, timedelta(hours=2), limit) == datetime(
        2026, 6, 8, 8, tzinfo=UTC
    )  # the hours of 1 and 8 June (Whit Monday, 25 May, is closed)
    assert time.process_time() - started < 10  # CPU seconds: a hang detector, not a speed target


# -- old messages -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "created_at",
    [
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(1, 1, 2, tzinfo=ZoneInfo("America/New_York")),
        datetime(1677, 9, 21, tzinfo=UTC),
        datetime(1970, 1, 1, tzinfo=UTC),
        T0 - timedelta(days=2),
    ],
    ids=str,
)
@pytest.mark.parametrize("calendar", [None, OFFICE], ids=["around the clock", "office hours"])
async def test_a_message_from_long_ago_is_assigned_and_answered_but_never_alerts(
    created_at: datetime, calendar: BusinessCalendar | None
) -> None:
    sla = with_resolution(STANDARD if calendar is None else dataclasses.replace(STANDARD, calendar=calendar))
    desk = Desk(build_world([Person("alice")], sla=sla, auto_resolve=timedelta(days=3)))

    conversation = await desk.write(at=created_at)

    assert conversation.owner_id == "alice"
    assert (conversation.due_at, conversation.warn_at, events(desk.last, DeadlineChanged)) == (None, None, [])

    answered = await desk.answer(conversation, at=created_at + timedelta(minutes=5))

    assert desk.conversation(conversation).state == "responded"
    assert events(answered, DeadlineChanged) == []  # no resolution deadline long past either
    [timer] = answered.timers
    # quiet since long ago: auto-resolve at once (a timer in year 1 could not be scheduled)
    assert timer.at == max(created_at + timedelta(minutes=5, days=3), desk.now)
    recomputed = await desk.apply(Recompute(tenant_id=TENANT, issued_at=desk.now))
    assert events(recomputed, DeadlineChanged) == []
    assert recomputed.rejections == []


async def test_a_conversation_whose_clock_ran_keeps_its_resolution_deadline_after_the_cutoff() -> None:
    desk = Desk(build_world([Person("alice")], sla=with_resolution(STANDARD)))
    desk.router.backfill_cutoff = timedelta(hours=48)
    conversation = await desk.write(at=T0 - timedelta(hours=30))  # recent enough when it came: it ran
    assert conversation.due_at is not None
    desk.router.backfill_cutoff = timedelta(hours=24)

    answered = await desk.answer(conversation)

    assert events(answered, DeadlineChanged)[-1].due_at == T0 + timedelta(hours=18)


# -- targets past what can be scheduled --------------------------------------------------------


async def test_a_target_that_cannot_fall_due_before_2262_sets_no_deadline() -> None:
    sla = Sla(default=Targets(first_response=timedelta(days=9000)), calendar=ONE_HOUR_A_WEEK)
    desk = Desk(build_world([Person("alice")], sla=sla))

    conversation = await desk.write()

    assert conversation.owner_id == "alice"
    assert conversation.due_at is None and events(desk.last, DeadlineChanged) == []


async def test_a_calendar_closed_for_years_sets_no_deadline_rather_than_failing_the_message() -> None:
    mondays = [date(2026, 5, 25) + timedelta(weeks=week) for week in range(52 * 4)]
    closed = BusinessCalendar.parse(
        timezone="Europe/Berlin", hours={"mon": [["09:00", "10:00"]]}, closed_days=mondays
    )
    desk = Desk(
        build_world([Person("alice")], sla=Sla(default=Targets(first_response=HOUR), calendar=closed))
    )

    conversation = await desk.write()

    assert conversation.owner_id == "alice" and conversation.due_at is None


async def test_the_resolution_target_applies_when_the_response_target_is_out_of_reach() -> None:
    sla = Sla(
        default=Targets(first_response=timedelta(days=9000), resolution=timedelta(hours=3)),
        calendar=ONE_HOUR_A_WEEK,
    )
    desk = Desk(build_world([Person("alice")], sla=sla))

    conversation = await desk.write()  # Wednesday 20 May 2026: three Monday hours, Whit Monday closed

    assert conversation.deadline_kind == DeadlineKind.resolution
    assert conversation.due_at == datetime(2026, 6, 15, 8, tzinfo=UTC)


def test_a_huge_target_and_pause_do_not_overflow() -> None:
    sla = Sla(default=Targets(first_response=timedelta.max - timedelta(days=1)))
    deadline = deadlines.plan_deadline(
        kind=DeadlineKind.first_response,
        started_at=T0,
        opened_at=T0,
        sla=sla,
        priority="normal",
        now=T0,
        backfill_cutoff=timedelta(hours=24),
        paused=timedelta(days=2),
    )
    assert deadline is None


async def test_an_absence_ending_after_2262_arms_no_timer() -> None:
    alice = Person("alice", out_of_office=(T0 - timedelta(hours=1), datetime(9999, 12, 31, tzinfo=UTC)))
    desk = Desk(build_world([alice, Person("bob")]))

    outcome = await desk.apply(CheckAvailability(person_id="alice", issued_at=desk.now))

    assert outcome.timers == []
    assert outcome.rejections == []


async def test_a_recompute_with_a_far_target_clears_the_deadline() -> None:
    desk = Desk(build_world([Person("alice")]))
    conversation = await desk.write()
    assert conversation.due_at is not None
    far = Sla(default=Targets(first_response=timedelta(days=9000)), calendar=ONE_HOUR_A_WEEK)
    rules = desk.state.tenants[TENANT]
    rules.policies = {p: far for p in rules.policies}

    outcome = await desk.apply(Recompute(tenant_id=TENANT, issued_by="ops", issued_at=desk.now))

    assert desk.conversation(conversation).due_at is None
    assert events(outcome, DeadlineChanged)[-1].due_at is None


# -- properties -------------------------------------------------------------------------------

ZONES = ("UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Pacific/Kiritimati")
HOLIDAYS = ((None, None), ("DE", None), ("US", None))


@st.composite
def calendars(draw: st.DrawFn) -> BusinessCalendar:
    """Any week of open hours, down to a single minute a week (or around the clock)."""
    if draw(st.booleans()):
        return BusinessCalendar.parse(timezone=draw(st.sampled_from(ZONES)), hours=None)
    week = []
    for _ in WEEKDAYS:
        bounds = sorted(draw(st.lists(st.integers(0, 1440), unique=True, max_size=4)))
        week.append(tuple(zip(bounds[0::2], bounds[1::2], strict=False)))
    if not any(week):
        week[draw(st.integers(0, 6))] = ((600, 601),)
    country, subdivision = draw(st.sampled_from(HOLIDAYS))
    return BusinessCalendar(
        timezone=draw(st.sampled_from(ZONES)),
        hours=tuple(week),
        holidays_country=country,
        holidays_subdivision=subdivision,
    )


created = st.one_of(
    st.datetimes(datetime(1, 1, 1), datetime(2026, 5, 20, 11, 0), timezones=st.sampled_from([UTC])),
    st.datetimes(
        datetime(1, 1, 2),
        datetime(2026, 5, 20, 10, 0),
        timezones=st.sampled_from([ZoneInfo(z) for z in ZONES]),
    ),
    st.builds(lambda d: T0 - d, st.timedeltas(timedelta(0), timedelta(days=3))),
)
targets = st.one_of(
    st.timedeltas(timedelta(seconds=1), timedelta(days=3)),
    st.timedeltas(timedelta(days=3), timedelta(days=200_000)),
)


@PROPERTY
@given(
    at=created,
    calendar=calendars(),
    first=targets,
    resolution=st.none() | targets,
    warn=st.none() | targets,
    reply_after=st.timedeltas(timedelta(0), timedelta(days=30)),
)
def test_whenever_a_message_was_written_routing_never_overflows_nor_leaves_the_schedulable_range(
    at: datetime,
    calendar: BusinessCalendar,
    first: timedelta,
    resolution: timedelta | None,
    warn: timedelta | None,
    reply_after: timedelta,
) -> None:
    sla = Sla(
        default=Targets(first_response=first, next_response=first, resolution=resolution),
        warn_before=warn,
        calendar=calendar,
    )
    desk = Desk(build_world([Person("alice")], sla=sla, auto_resolve=timedelta(days=7)))

    async def live() -> None:
        conversation = await desk.write(at=at)
        old = T0 - at > desk.router.backfill_cutoff
        assert conversation.owner_id == "alice"
        if old:
            assert conversation.due_at is None
        await desk.answer(conversation, at=min(at + reply_after, T0))
        await desk.write(thread=conversation.thread_id, at=min(at + reply_after + timedelta(minutes=1), T0))
        conversation = desk.conversation(conversation)
        for due in (conversation.due_at, conversation.warn_at):
            assert due is None or SCHEDULABLE[0] <= due <= SCHEDULABLE[1]

    asyncio.run(live())  # hypothesis drives a plain function: each example in a loop of its own

    for moment in schedulable_times(desk.outcomes):
        assert SCHEDULABLE[0] <= moment <= SCHEDULABLE[1]
    for timer in desk.last.timers:
        assert timer.at >= desk.now


@PROPERTY
@given(calendar=calendars(), target=targets, start=created, cutoff=st.sampled_from([1, 24, 24 * 365 * 500]))
def test_a_planned_deadline_is_none_or_schedulable(
    calendar: BusinessCalendar, target: timedelta, start: datetime, cutoff: int
) -> None:
    sla = Sla(default=Targets(first_response=target, resolution=target * 2), calendar=calendar)
    deadline = deadlines.plan_deadline(
        kind=DeadlineKind.first_response,
        started_at=start,
        opened_at=start,
        sla=sla,
        priority="normal",
        now=T0,
        backfill_cutoff=timedelta(hours=cutoff),  # up to clocks that run from 500 years ago
    )
    if deadline is None:
        return
    assert deadlines.schedulable(deadline.due_at) and deadline.due_at >= start
    assert deadline.warn_at is None or deadlines.schedulable(deadline.warn_at)


def test_the_schedulable_range_ends_before_go_times_do() -> None:
    go_last = datetime(2262, 4, 11, 23, 47, 16, tzinfo=UTC)  # 2**63 nanoseconds after 1970
    go_first = datetime(1677, 9, 21, 0, 12, 44, tzinfo=UTC)
    assert go_first < SCHEDULABLE[0] and SCHEDULABLE[1] < go_last
    assert SCHEDULABLE[1].date() == date(2262, 1, 1)
