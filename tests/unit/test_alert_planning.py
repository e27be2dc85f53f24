from datetime import UTC, datetime, time, timedelta

from services.notify.decisions import (
    Pending,
    PlannedDelivery,
    Preferences,
    QuietHours,
    held_for_burst,
    plan_deliveries,
    window_end,
)
from shared.businesstime import BusinessCalendar

NIGHT = datetime(2026, 11, 26, 23, 30, tzinfo=UTC)  # a Thursday
ASLEEP = QuietHours(time(22, 0), time(7, 0))  # across midnight
OFFICE = BusinessCalendar.parse(timezone="UTC", hours={"thu": [["09:00", "18:00"]]})


def test_everyone_gets_email_unless_they_say_otherwise() -> None:
    prefs = {"maria": Preferences({"breach": ("push", "apprise")})}
    planned = plan_deliveries("breach", ["maria", "li"], prefs, now=NIGHT)
    assert planned == [
        PlannedDelivery("maria", "push"),
        PlannedDelivery("maria", "apprise"),
        PlannedDelivery("li", "email"),
    ]
    assert plan_deliveries("assigned", ["li"], prefs, now=NIGHT) == []  # assignments: only on request


def test_quiet_hours_pass_the_alert_to_the_next_person_on_shift_in_the_chain() -> None:
    prefs = {
        "lena": Preferences(quiet=ASLEEP),
        "off": Preferences(working_hours=OFFICE),  # not in working hours at 23:30
        "gone": Preferences(present=False),  # offline
        "tired": Preferences(quiet=ASLEEP),
        "bo": Preferences({"escalation": ("push",)}),
    }
    planned = plan_deliveries(
        "escalation", ["lena"], prefs, standby=["off", "gone", "tired", "bo"], now=NIGHT
    )
    assert planned == [PlannedDelivery("bo", "push", instead_of="lena")]
    # by day nobody is resting: lena herself
    day = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
    assert plan_deliveries("escalation", ["lena"], prefs, standby=["bo"], now=day) == [
        PlannedDelivery("lena", "email")
    ]


def test_nobody_awake_in_the_chain_means_nobody_is_woken() -> None:
    prefs = {"lena": Preferences(quiet=ASLEEP), "bo": Preferences(quiet=ASLEEP)}
    assert plan_deliveries("escalation", ["lena"], prefs, standby=["bo"], now=NIGHT) == []


def test_one_standby_takes_one_resting_person_s_alert_only_once() -> None:
    prefs = {"a": Preferences(quiet=ASLEEP), "b": Preferences(quiet=ASLEEP)}
    planned = plan_deliveries("breach", ["a", "b"], prefs, standby=["c", "d"], now=NIGHT)
    assert planned == [
        PlannedDelivery("c", "email", instead_of="a"),
        PlannedDelivery("d", "email", instead_of="b"),
    ]


def test_quiet_hours_in_the_person_s_timezone() -> None:
    tokyo = QuietHours(time(22, 0), time(7, 0), "Asia/Tokyo")
    assert tokyo.covers(datetime(2026, 11, 26, 14, 0, tzinfo=UTC))  # 23:00 in Tokyo
    assert not tokyo.covers(datetime(2026, 11, 26, 3, 0, tzinfo=UTC))  # 12:00 in Tokyo


def test_a_burst_holds_what_comes_after_the_first_few_and_digests_warnings() -> None:
    pending = [
        Pending("1", "maria", "email", "breach"),
        Pending("2", "maria", "push", "breach"),
        Pending("3", "li", "email", "breach"),
        Pending("4", "li", "email", "warning"),
    ]
    recent = {("maria", "email"): 3, ("maria", "push"): 2}
    held = held_for_burst(pending, recent, group_after=3, warning_digest=False)
    assert [p.id for p in held] == ["1"]  # maria's email: three already went this window
    digested = held_for_burst(pending, recent, group_after=3, warning_digest=True)
    assert [p.id for p in digested] == ["1", "4"]


def test_burst_windows_are_aligned() -> None:
    window = timedelta(seconds=60)
    assert window_end(datetime(2026, 11, 26, 10, 0, 5, tzinfo=UTC), window) == datetime(
        2026, 11, 26, 10, 1, tzinfo=UTC
    )
    assert window_end(datetime(2026, 11, 26, 10, 0, 59, 900000, tzinfo=UTC), window) == datetime(
        2026, 11, 26, 10, 1, tzinfo=UTC
    )
