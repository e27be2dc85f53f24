from datetime import UTC, datetime, timedelta

import pytest

from services.notify.chain import Chain
from services.notify.decisions import Ignored, Verdict, judge_fired, retry_delay
from services.notify.service import retry_timer
from services.notify.timers import (
    LATEST_SCHEDULE,
    TimerPayload,
    WatchedDeadline,
    breach_timer,
    next_timer,
    plan_timer,
    schedulable,
    unschedulable,
)
from shared.jetstream import at_header

T0 = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)


def deadline(version: int, *, state: str = "armed", due: datetime | None = T0) -> WatchedDeadline:
    return WatchedDeadline(
        conversation_id="c" * 32, tenant_id="acme", version=version, due_at=due, state=state
    )


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
    current: WatchedDeadline | None, timer: TimerPayload, verdict: Verdict
) -> None:
    assert judge_fired(current, timer).verdict is verdict


def test_retries_back_off_exponentially_within_bounds() -> None:
    initial, maximum = timedelta(seconds=5), timedelta(minutes=5)
    delays = [
        retry_delay(n, initial=initial, maximum=maximum, jitter=0).total_seconds() for n in range(1, 10)
    ]
    assert delays[:5] == [5, 10, 20, 40, 80]
    assert max(delays) == 300
    spread = {
        retry_delay(3, initial=initial, maximum=maximum, key=str(n)).total_seconds() for n in range(100)
    }
    assert all(16 <= jittered <= 24 for jittered in spread) and len(spread) > 50  # apart, within 20%
    # the same alert always waits the same: a redo decides as the first try did
    assert retry_delay(3, initial=initial, maximum=maximum, key="c:1") == retry_delay(
        3, initial=initial, maximum=maximum, key="c:1"
    )


def test_an_acknowledged_deadline_silences_only_its_escalation() -> None:
    acknowledged = WatchedDeadline(
        conversation_id="c" * 32, tenant_id="acme", version=2, due_at=T0, state="armed", acknowledged_at=T0
    )
    escalation = fired(2).model_copy(update={"step": "escalation-1"})
    judged = judge_fired(acknowledged, escalation)
    assert judged.verdict is Verdict.ignore and judged.ignored is Ignored.acknowledged and judged.silenced
    assert judge_fired(acknowledged, fired(2)).verdict is Verdict.send  # the breach still comes


def test_retry_timer_counts_attempts() -> None:
    timer = retry_timer(fired(2, attempt=1), attempt=2, at=T0 + timedelta(seconds=10))
    assert (
        timer.attempt == 2
        and timer.step == "retry"
        and timer.at == T0 + timedelta(seconds=10)
        and timer.deadline_version == 2
    )


def test_schedule_header_is_absolute_utc() -> None:
    local = datetime(2026, 11, 26, 12, 0, 0, 250000, tzinfo=UTC).astimezone()
    assert at_header(local) == "@at 2026-11-26T12:00:00.250000Z"


# NATS keeps a schedule's time in Go nanoseconds since 1970 (they end in April 2262): a later
# time overflows and fires at once. Such a timeline must never be armed, entry by entry.
CHAIN = Chain.parse(
    [
        {"after": "10m", "notify": "lead"},
        {"after": "30m", "notify": "manager", "repeat": {"every": "30m", "times": 2}},
    ]
)


@pytest.mark.parametrize(
    "due",
    [
        datetime(2262, 4, 12, tzinfo=UTC),  # just after Go's nanoseconds run out
        LATEST_SCHEDULE + timedelta(minutes=5),  # its warning falls at the limit: not armed either
        datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC),  # the calendar's end: the chain would overflow too
    ],
)
def test_a_deadline_after_what_nats_can_schedule_is_never_armed(due: datetime) -> None:
    far = WatchedDeadline(
        conversation_id="c" * 32,
        tenant_id="acme",
        version=1,
        due_at=due,
        state="armed",
        warn_at=due - timedelta(minutes=5),
    )
    for now in (None, T0, due + timedelta(days=1) if due.year < 9999 else due):
        assert next_timer(far, CHAIN, after_step=None, now=now) is None
        too_late = unschedulable(far, CHAIN, after_step=None, now=now)
        assert too_late is not None and not schedulable(too_late.at)
    # nor any later entry of its timeline: never the breach and the whole chain at once
    for step in ("warning", "breach", "escalation-1", "escalation-2", "escalation-2.1"):
        assert next_timer(far, CHAIN, after_step=step) is None


def test_only_the_entries_nats_can_schedule_are_armed() -> None:
    # the breach is due in time; the escalation, 300 years of wall clock later, is not
    late_chain = Chain.parse([{"after": f"{300 * 365}d", "notify": "lead"}])
    due = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
    close = WatchedDeadline(conversation_id="c" * 32, tenant_id="acme", version=1, due_at=due, state="armed")
    breach = next_timer(close, late_chain, after_step=None)
    assert breach is not None and breach.step == "breach" and breach.at == due
    assert unschedulable(close, late_chain, after_step=None) is None
    assert next_timer(close, late_chain, after_step="breach") is None
    left = unschedulable(close, late_chain, after_step="breach")
    assert left is not None and left.step == "escalation-1"
    assert schedulable(datetime(2261, 12, 31, 23, 59, tzinfo=UTC))


def test_one_look_at_a_timeline_gives_the_timer_to_arm_or_the_entry_nats_cannot_schedule() -> None:
    late_chain = Chain.parse([{"after": f"{300 * 365}d", "notify": "lead"}])
    close = WatchedDeadline(conversation_id="c" * 32, tenant_id="acme", version=1, due_at=T0, state="armed")
    timer, too_late = plan_timer(close, late_chain, after_step=None)
    assert timer is not None and (timer.step, timer.at, too_late) == ("breach", T0, None)
    timer, too_late = plan_timer(close, late_chain, after_step="breach")
    assert timer is None and too_late is not None and too_late.step == "escalation-1"
    assert plan_timer(close, late_chain, after_step="escalation-1") == (None, None)  # nothing left
    assert plan_timer(deadline(1, state="cleared"), late_chain, after_step=None) == (None, None)
