import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.notify.chain import (
    MAX_REPEATS,
    MAX_STEPS,
    Chain,
    ChainError,
    PlannedAlert,
    Step,
    Target,
    next_alert,
    timeline,
)
from tests.fuzz import properties

T0 = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
BLUEBIRD = [
    {"after": "10m", "notify": "lead"},
    {"after": "30m", "notify": "manager", "repeat": {"every": "30m", "times": 2}},
    {"after": "2h", "notify": "person", "person": "sam"},
]


def bluebird() -> list[PlannedAlert]:
    return timeline(warn_at=T0 - 15 * MINUTE, due_at=T0, chain=Chain.parse(BLUEBIRD))


def test_parse_reads_every_kind_of_step() -> None:
    chain = Chain.parse(BLUEBIRD)
    assert chain.steps == (
        Step(after=10 * MINUTE, notify=Target.lead),
        Step(after=30 * MINUTE, notify=Target.manager, repeat_every=30 * MINUTE, repeat_times=2),
        Step(after=timedelta(hours=2), notify=Target.person, person_id="sam"),
    )


@pytest.mark.parametrize("raw", [None, []])
def test_no_chain_has_no_steps(raw: list[Any] | None) -> None:
    assert Chain.parse(raw) == Chain() and Chain().to_json() == []


def test_bare_numbers_are_seconds_and_equal_waits_are_in_order() -> None:
    chain = Chain.parse([{"after": 90, "notify": "team"}, {"after": "1m30s", "notify": "owner"}])
    assert [step.after for step in chain.steps] == [timedelta(seconds=90)] * 2


def test_to_json_round_trips() -> None:
    chain = Chain.parse(BLUEBIRD)
    assert chain.to_json() == [
        {"after": "600s", "notify": "lead"},
        {"after": "1800s", "notify": "manager", "repeat": {"every": "1800s", "times": 2}},
        {"after": "7200s", "notify": "person", "person": "sam"},
    ]
    stored = json.dumps(chain.to_json(), sort_keys=True, separators=(",", ":"))
    assert Chain.parse(json.loads(stored)) == chain


def step(**changes: Any) -> dict[str, Any]:
    """A valid step with `changes`; a value of None removes the key."""
    raw: dict[str, Any] = {"after": "10m", "notify": "lead", **changes}
    return {key: value for key, value in raw.items() if value is not None}


W = "tenants[0].escalation"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"after": "10m", "notify": "lead"}, f"{W}: expected a list of steps"),
        ("10m lead", f"{W}: expected a list of steps"),
        ([step()] * (MAX_STEPS + 1), f"{W}: at most {MAX_STEPS} steps"),
        ([step(after="30m"), step(after="10m")], f"{W}[1].after: steps must come in order of their wait"),
        ([step(), "lead"], f"{W}[1]: expected a mapping with after and notify"),
        ([step(colour="blue")], f"{W}[0]: unknown key 'colour'"),
        ([{1: "x", "after": "1m", "notify": "lead"}], f"{W}[0]: unknown key 1"),
        ([{1: "x", "colour": "blue"}], f"{W}[0]: unknown key 1"),  # keys of mixed types
        ([step(after=None)], f"{W}[0]: needs after and notify"),
        ([step(notify=None)], f"{W}[0]: needs after and notify"),
        ([step(after=["10m"])], f"{W}[0].after: expected a duration such as 10m"),
        ([step(after=True)], f"{W}[0].after: expected a duration such as 10m"),
        ([step(after="soon")], f"{W}[0].after: 'soon' is not a duration such as 45s, 30m, 2h or 1h30m"),
        ([step(after=-5)], f"{W}[0].after: '-5s' is not a duration"),
        ([step(after=0)], f"{W}[0].after: '0s' must be longer than zero"),
        ([step(notify="boss")], f"{W}[0].notify: 'boss' is not one of owner, team, lead, manager, person"),
        ([step(notify=["lead"])], f"{W}[0].notify: ['lead'] is not one of"),
        ([step(notify="person")], f"{W}[0].person: notify: person needs the person's id"),
        ([step(notify="person", person="")], f"{W}[0].person: notify: person needs the person's id"),
        ([step(person="sam")], f"{W}[0].person: only with notify: person"),
        ([step(repeat="every 10m")], f"{W}[0].repeat: expected {{every: DURATION, times: N}}"),
        ([step(repeat={"every": "10m"})], f"{W}[0].repeat: expected {{every: DURATION, times: N}}"),
        (
            [step(repeat={"every": "10m", "times": 2, "until": "1h"})],
            f"{W}[0].repeat: expected {{every: DURATION, times: N}}",
        ),
        ([step(repeat={"every": "often", "times": 2})], f"{W}[0].repeat.every: 'often' is not a duration"),
        ([step(repeat={"every": "0s", "times": 2})], f"{W}[0].repeat.every: '0s' must be longer than zero"),
        ([step(repeat={"every": "5m", "times": 0})], f"{W}[0].repeat.times: a whole number from 1 to 20"),
        (
            [step(repeat={"every": "5m", "times": MAX_REPEATS + 1})],
            f"{W}[0].repeat.times: a whole number from 1 to {MAX_REPEATS}",
        ),
        ([step(repeat={"every": "5m", "times": "2"})], f"{W}[0].repeat.times: a whole number"),
        ([step(repeat={"every": "5m", "times": 2.0})], f"{W}[0].repeat.times: a whole number"),
        ([step(repeat={"every": "5m", "times": True})], f"{W}[0].repeat.times: a whole number"),
        ([step(), step(after="1h", notify="teem")], f"{W}[1].notify: 'teem' is not one of"),
    ],
)
def test_parse_errors_name_the_bad_path(raw: Any, expected: str) -> None:
    with pytest.raises(ChainError) as error:
        Chain.parse(raw, where=W)
    assert str(error.value).startswith(expected), str(error.value)
    assert isinstance(error.value, ValueError)


def test_the_path_defaults_to_escalation() -> None:
    with pytest.raises(ChainError, match=r"^escalation\[0\]\.notify: "):
        Chain.parse([step(notify="boss")])


def test_the_limits_are_allowed() -> None:
    raw = [step(repeat={"every": "1s", "times": MAX_REPEATS})] * MAX_STEPS
    assert len(Chain.parse(raw).steps) == MAX_STEPS


def brief(entries: list[PlannedAlert]) -> list[tuple[str, timedelta, str, str | None]]:
    """Each entry as (step, time after the breach, target, person)."""
    return [(e.step, e.at - T0, e.notify.value, e.person_id) for e in entries]


def test_timeline_is_warning_breach_then_the_steps_with_their_repeats() -> None:
    entries = bluebird()
    assert brief(entries) == [
        ("warning", -15 * MINUTE, "owner", None),
        ("breach", timedelta(0), "owner", None),
        ("escalation-1", 10 * MINUTE, "lead", None),
        ("escalation-2", 30 * MINUTE, "manager", None),
        ("escalation-2.1", 60 * MINUTE, "manager", None),
        ("escalation-2.2", 90 * MINUTE, "manager", None),
        ("escalation-3", 120 * MINUTE, "person", "sam"),
    ]
    assert [e.escalation for e in entries] == [False, False, True, True, True, True, True]


def test_repeats_interleave_with_later_steps_and_equal_times_keep_declaration_order() -> None:
    chain = Chain.parse(
        [
            {"after": "10m", "notify": "team", "repeat": {"every": "10m", "times": 3}},
            {"after": "20m", "notify": "manager"},
            {"after": "20m", "notify": "person", "person": "sam"},
        ]
    )
    assert [(step, at) for step, at, _, _ in brief(timeline(warn_at=None, due_at=T0, chain=chain))] == [
        ("breach", timedelta(0)),
        ("escalation-1", 10 * MINUTE),
        ("escalation-1.1", 20 * MINUTE),  # declared before escalation-2: first at the same time
        ("escalation-2", 20 * MINUTE),
        ("escalation-3", 20 * MINUTE),
        ("escalation-1.2", 30 * MINUTE),
        ("escalation-1.3", 40 * MINUTE),
    ]


@pytest.mark.parametrize("warn_at", [None, T0, T0 + MINUTE])
def test_no_warning_without_a_warning_time_before_the_breach(warn_at: datetime | None) -> None:
    entries = timeline(warn_at=warn_at, due_at=T0, chain=Chain.parse(BLUEBIRD))
    assert [e.step for e in entries][:2] == ["breach", "escalation-1"]


def test_without_a_chain_only_warning_and_breach() -> None:
    entries = timeline(warn_at=T0 - MINUTE, due_at=T0, chain=Chain())
    assert brief(entries) == [("warning", -MINUTE, "owner", None), ("breach", timedelta(0), "owner", None)]


def test_next_alert_from_the_start_is_the_warning() -> None:
    first = next_alert(bluebird(), after_step=None, acknowledged=False)
    assert first is not None and first.step == "warning" and first.at == T0 - 15 * MINUTE


@pytest.mark.parametrize(
    ("after_step", "expected"),
    [
        ("warning", "breach"),
        ("breach", "escalation-1"),
        ("escalation-1", "escalation-2"),
        ("escalation-2", "escalation-2.1"),
        ("escalation-2.1", "escalation-2.2"),
        ("escalation-2.2", "escalation-3"),
        ("escalation-3", None),  # the end of the chain
        ("escalation-4", None),  # not in this timeline (the chain changed): nothing to arm
        ("escalation-2.3", None),
    ],
)
def test_next_alert_after_each_step(after_step: str, expected: str | None) -> None:
    entry = next_alert(bluebird(), after_step=after_step, acknowledged=False)
    assert (entry.step if entry else None) == expected


@pytest.mark.parametrize(
    ("after_step", "expected"),
    [
        (None, "warning"),
        ("warning", "breach"),
        ("breach", None),
        ("escalation-1", None),  # acknowledged after the first escalation: the rest stay silent
        ("escalation-2.1", None),
    ],
)
def test_an_acknowledgement_silences_escalations_only(after_step: str | None, expected: str | None) -> None:
    entry = next_alert(bluebird(), after_step=after_step, acknowledged=True)
    assert (entry.step if entry else None) == expected


@pytest.mark.parametrize(
    ("after_step", "not_before", "expected"),
    [
        (None, T0 - 15 * MINUTE, "warning"),  # exactly at its time: not past
        (None, T0 - 5 * MINUTE, "breach"),  # the warning's time has passed
        (None, T0 + 5 * MINUTE, "breach"),  # the breach is never skipped: it is told at once
        (None, T0 + 5 * 60 * MINUTE, "breach"),
        ("warning", T0 + 5 * 60 * MINUTE, "breach"),
        ("breach", T0 + 10 * MINUTE, "escalation-1"),
        ("breach", T0 + 45 * MINUTE, "escalation-2.1"),  # escalation-1 and -2 are past
        ("breach", T0 + 2 * 60 * MINUTE + 1 * MINUTE, None),  # every escalation is past
        ("escalation-1", T0 - 60 * MINUTE, "escalation-2"),
    ],
)
def test_not_before_skips_what_is_past_but_never_the_breach(
    after_step: str | None, not_before: datetime, expected: str | None
) -> None:
    entry = next_alert(bluebird(), after_step=after_step, acknowledged=False, not_before=not_before)
    assert (entry.step if entry else None) == expected


def test_acknowledged_and_late_arms_only_the_breach() -> None:
    entries = bluebird()
    late = T0 + 45 * MINUTE
    breach = next_alert(entries, after_step=None, acknowledged=True, not_before=late)
    assert breach is not None and breach.step == "breach"
    assert next_alert(entries, after_step="breach", acknowledged=True, not_before=late) is None


@st.composite
def raw_chains(draw: st.DrawFn) -> list[dict[str, Any]]:
    waits = sorted(draw(st.lists(st.integers(1, 4 * 3600), max_size=MAX_STEPS)))
    chain = []
    for wait in waits:
        item: dict[str, Any] = {"after": f"{wait}s", "notify": draw(st.sampled_from(list(Target)))}
        if item["notify"] == "person":
            item["person"] = draw(st.sampled_from(["sam", "li"]))
        if draw(st.booleans()):
            item["repeat"] = {"every": draw(st.integers(1, 3600)), "times": draw(st.integers(1, 4))}
        chain.append(item)
    return chain


@properties(150)
@given(
    raw=raw_chains(),
    warn_before=st.none() | st.integers(-600, 3600),
    acknowledged=st.booleans(),
    not_before=st.none() | st.integers(-3600, 6 * 3600),
)
def test_walking_the_chain_visits_each_entry_once_in_order(
    raw: list[dict[str, Any]], warn_before: int | None, acknowledged: bool, not_before: int | None
) -> None:
    warn_at = None if warn_before is None else T0 - timedelta(seconds=warn_before)
    since = None if not_before is None else T0 + timedelta(seconds=not_before)
    entries = timeline(warn_at=warn_at, due_at=T0, chain=Chain.parse(raw))
    assert [e.at for e in entries] == sorted(e.at for e in entries)
    repeats = sum(item.get("repeat", {}).get("times", 0) for item in raw)
    assert len(entries) == (warn_at is not None and warn_at < T0) + 1 + len(raw) + repeats

    visited: list[PlannedAlert] = []
    after: str | None = None
    while (
        entry := next_alert(entries, after_step=after, acknowledged=acknowledged, not_before=since)
    ) is not None:
        visited.append(entry)
        after = entry.step
        assert len(visited) <= len(entries)

    assert visited == [
        e
        for e in entries
        if not (acknowledged and e.escalation) and (since is None or e.at >= since or e.step == "breach")
    ]
    assert len({e.step for e in visited}) == len(visited)
    assert "breach" in [e.step for e in visited]
    if acknowledged:
        assert not any(e.escalation for e in visited)
