"""The inbox's countdowns: business time left by the same calendar the deadline was computed
with, standing still outside working hours and while paused, counting up once overdue."""

import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.api.countdown import Clock, Countdown, calendar_of, countdown, duration_text
from shared.businesstime import ALWAYS_OPEN
from tests.fuzz import properties

HOURS = json.dumps({day: [["09:00", "17:00"]] for day in ("mon", "tue", "wed", "thu", "fri")})
BERLIN = calendar_of("Europe/Berlin", HOURS)
FRIDAY_4PM = datetime(2026, 11, 27, 15, 0, tzinfo=UTC)  # 16:00 in Berlin


def left(now: datetime, due: datetime | None, **given: object) -> Countdown:
    options: dict[str, object] = {
        "state": "open",
        "awaiting": True,
        "due_at": due,
        "paused_remaining_seconds": None,
        "calendar": BERLIN,
        "now": now,
        **given,
    }
    return countdown(**options)  # type: ignore[arg-type]


def test_a_deadline_over_the_weekend_counts_only_working_hours() -> None:
    due = BERLIN.add(FRIDAY_4PM, timedelta(hours=2))  # Monday 10:00 Berlin
    assert due == datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
    friday = left(FRIDAY_4PM, due)
    assert friday.clock is Clock.running and friday.seconds == 7200
    assert friday.changes_at == datetime(2026, 11, 27, 16, 0, tzinfo=UTC)

    saturday = left(datetime(2026, 11, 28, 12, 0, tzinfo=UTC), due)
    assert saturday.clock is Clock.closed and saturday.seconds == 3600
    assert saturday.changes_at == datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
    assert saturday.label == "1h 00m left, paused outside business hours until Mon 30 Nov 08:00 UTC"


def test_overdue_counts_business_time_past_due() -> None:
    due = datetime(2026, 11, 27, 15, 30, tzinfo=UTC)
    monday = left(datetime(2026, 11, 30, 8, 15, tzinfo=UTC), due)  # Fri 16:30-17:00 + Mon 09:00-09:15
    assert monday.clock is Clock.overdue and monday.seconds == 45 * 60
    assert monday.open_now and monday.label == "overdue by 45m 00s"


def test_a_paused_or_answered_conversation_has_no_running_clock() -> None:
    paused = left(FRIDAY_4PM, FRIDAY_4PM + timedelta(hours=1), state="paused", paused_remaining_seconds=600.0)
    assert paused.clock is Clock.paused and paused.label == "10m 00s left, paused"
    answered = left(FRIDAY_4PM, FRIDAY_4PM + timedelta(hours=1), awaiting=False, state="responded")
    assert answered.clock is Clock.stopped and answered.label == "no deadline running"
    no_deadline = left(FRIDAY_4PM, None)
    assert no_deadline.clock is Clock.stopped


def test_around_the_clock_never_changes() -> None:
    always = left(FRIDAY_4PM, FRIDAY_4PM + timedelta(minutes=5), calendar=ALWAYS_OPEN)
    assert always.clock is Clock.running and always.changes_at is None and always.seconds == 300
    assert calendar_of(None, None) is ALWAYS_OPEN


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (59.9, "59s"), (61, "1m 01s"), (3600, "1h 00m"), (90061, "1d 1h"), (-5, "0s")],
)
def test_durations_read_as_people_say_them(seconds: float, text: str) -> None:
    assert duration_text(seconds) == text


@properties(300)
@given(
    start=st.datetimes(
        min_value=datetime(2026, 1, 1), max_value=datetime(2027, 12, 31), timezones=st.just(UTC)
    ),
    hours=st.integers(min_value=0, max_value=200),
    later=st.integers(min_value=0, max_value=400),
)
def test_the_countdown_is_the_router_s_arithmetic(start: datetime, hours: int, later: int) -> None:
    """Business time left, plus business time that passed, is the SLA's whole target."""
    due = BERLIN.add(start, timedelta(hours=hours))
    now = start + timedelta(hours=later)
    shown = left(now, due)
    passed = BERLIN.elapsed(start, now).total_seconds()
    if shown.clock is Clock.overdue:
        assert passed - shown.seconds == pytest.approx(hours * 3600)
    else:
        assert passed + shown.seconds == pytest.approx(hours * 3600)
