from datetime import UTC, datetime, timedelta

import pytest

from services.notify.timers import (
    Deadline,
    TimerPayload,
    Verdict,
    breach_timer,
    judge_fired,
    retry_delay,
    retry_timer,
)
from shared.jetstream import at_header

T0 = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)


def deadline(version: int, *, state: str = "armed", due: datetime | None = T0) -> Deadline:
    return Deadline(conversation_id="c" * 32, tenant_id="acme", version=version, due_at=due, state=state)


def fired(version: int, attempt: int = 0) -> TimerPayload:
    return TimerPayload(
        tenant_id="acme", conversation_id="c" * 32, deadline_version=version, at=T0, attempt=attempt
    )


def test_armed_deadline_gets_a_breach_timer_at_its_due_time() -> None:
    timer = breach_timer(deadline(3))
    assert timer is not None and timer.at == T0 and timer.deadline_version == 3 and timer.attempt == 0
    assert breach_timer(deadline(3, state="cleared", due=None)) is None
    assert breach_timer(deadline(3, state="alerted")) is None


@pytest.mark.parametrize(
    ("current", "timer", "verdict"),
    [
        (deadline(2), fired(2), Verdict.send),
        (deadline(2, state="cleared", due=None), fired(1), Verdict.ignore),  # cancelled after arming
        (deadline(3), fired(2), Verdict.rearm),  # moved: the old timer fired first
        (deadline(2, state="alerted"), fired(2), Verdict.ignore),  # already sent
        (deadline(1), fired(2), Verdict.ignore),
        (None, fired(1), Verdict.ignore),
    ],
)
def test_a_fired_timer_counts_only_for_the_current_version(
    current: Deadline | None, timer: TimerPayload, verdict: Verdict
) -> None:
    assert judge_fired(current, timer)[0] is verdict


def test_retries_back_off_exponentially_within_bounds() -> None:
    initial, maximum = timedelta(seconds=5), timedelta(minutes=5)
    delays = [
        retry_delay(n, initial=initial, maximum=maximum, jitter=0).total_seconds() for n in range(1, 10)
    ]
    assert delays[:5] == [5, 10, 20, 40, 80]
    assert max(delays) == 300
    for _ in range(100):
        jittered = retry_delay(3, initial=initial, maximum=maximum).total_seconds()
        assert 16 <= jittered <= 24


def test_retry_timer_counts_attempts() -> None:
    timer = retry_timer(fired(2, attempt=1), now=T0, delay=timedelta(seconds=10))
    assert timer.attempt == 2 and timer.at == T0 + timedelta(seconds=10) and timer.deadline_version == 2


def test_schedule_header_is_absolute_utc() -> None:
    local = datetime(2026, 11, 26, 12, 0, 0, 250000, tzinfo=UTC).astimezone()
    assert at_header(local) == "@at 2026-11-26T12:00:00.250000Z"
