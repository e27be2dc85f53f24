"""Escalation chains: who is alerted when, for one deadline. Pure.

A deadline's timeline is a warning (at the router's `warn_at`), the breach (at
`due_at`), then each step of the chain, a wall-clock wait after the breach
("after 10 minutes notify the team lead"), optionally repeated. The router
computes `warn_at` and `due_at` in business time; notify does no calendar
arithmetic. Notify keeps one timer per conversation: the next entry of this
timeline. An acknowledgement ("I'm on it") stops the escalation steps of that
deadline; the owner's own warning and breach still come, since the clock runs on.
"""

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.durations import parse_duration

MAX_STEPS = 10
MAX_REPEATS = 20


class Target(enum.StrEnum):
    owner = "owner"  # the conversation's owner; nobody owns it: its team
    team = "team"  # everyone in the conversation's team
    lead = "lead"  # the team's lead; no lead: the team
    manager = "manager"  # the tenant's manager
    person = "person"  # a named person


class ChainError(ValueError):
    """An invalid chain; the message names the path of the bad part."""


@dataclass(frozen=True)
class Step:
    after: timedelta  # after the breach, wall-clock
    notify: Target
    person_id: str | None = None  # with Target.person
    repeat_every: timedelta | None = None
    repeat_times: int = 0  # repeats after the first alert of the step


@dataclass(frozen=True)
class Chain:
    steps: tuple[Step, ...] = ()

    @classmethod
    def parse(cls, raw: Sequence[Any] | None, *, where: str = "escalation") -> "Chain":
        """From the configuration's list: `[{after: 10m, notify: lead}, {after: 30m, notify:
        person, person: sam, repeat: {every: 15m, times: 2}}]`."""
        if raw is None:
            return cls()
        if not isinstance(raw, list | tuple):
            raise ChainError(f"{where}: expected a list of steps")
        if len(raw) > MAX_STEPS:
            raise ChainError(f"{where}: at most {MAX_STEPS} steps")
        steps = [_step(item, f"{where}[{index}]") for index, item in enumerate(raw)]
        for index in range(1, len(steps)):
            if steps[index].after < steps[index - 1].after:
                raise ChainError(f"{where}[{index}].after: steps must come in order of their wait")
        return cls(tuple(steps))

    def to_json(self) -> list[dict[str, Any]]:
        result = []
        for step in self.steps:
            item: dict[str, Any] = {"after": _text(step.after), "notify": step.notify.value}
            if step.person_id:
                item["person"] = step.person_id
            if step.repeat_every is not None:
                item["repeat"] = {"every": _text(step.repeat_every), "times": step.repeat_times}
            result.append(item)
        return result


def _text(delta: timedelta) -> str:
    return f"{int(delta.total_seconds())}s"


def _duration(value: Any, where: str) -> timedelta:
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = f"{value}s"
    if not isinstance(value, str):
        raise ChainError(f"{where}: expected a duration such as 10m")
    try:
        return parse_duration(value)
    except ValueError as error:
        raise ChainError(f"{where}: {error}") from None


def _step(raw: Any, where: str) -> Step:
    if not isinstance(raw, dict):
        raise ChainError(f"{where}: expected a mapping with after and notify")
    unknown = set(raw) - {"after", "notify", "person", "repeat"}
    if unknown:
        raise ChainError(f"{where}: unknown key {sorted(unknown, key=str)[0]!r}")
    if "after" not in raw or "notify" not in raw:
        raise ChainError(f"{where}: needs after and notify")
    after = _duration(raw["after"], f"{where}.after")
    if after < timedelta(0):
        raise ChainError(f"{where}.after: must not be negative")
    try:
        notify = Target(raw["notify"])
    except ValueError:
        names = ", ".join(t.value for t in Target)
        raise ChainError(f"{where}.notify: {raw['notify']!r} is not one of {names}") from None
    person = raw.get("person")
    if notify is Target.person and not person:
        raise ChainError(f"{where}.person: notify: person needs the person's id")
    if notify is not Target.person and person:
        raise ChainError(f"{where}.person: only with notify: person")
    every, times = None, 0
    if "repeat" in raw:
        repeat = raw["repeat"]
        if not isinstance(repeat, dict) or set(repeat) != {"every", "times"}:
            raise ChainError(f"{where}.repeat: expected {{every: DURATION, times: N}}")
        every = _duration(repeat["every"], f"{where}.repeat.every")
        if every < timedelta(seconds=1):
            raise ChainError(f"{where}.repeat.every: at least 1s")
        times = repeat["times"]
        if not isinstance(times, int) or isinstance(times, bool) or not 1 <= times <= MAX_REPEATS:
            raise ChainError(f"{where}.repeat.times: a whole number from 1 to {MAX_REPEATS}")
    return Step(after, notify, str(person) if person else None, every, times)


@dataclass(frozen=True)
class PlannedAlert:
    """One alert of a deadline's timeline."""

    step: str  # warning, breach, escalation-<n> or escalation-<n>.<repeat>
    at: datetime
    notify: Target
    person_id: str | None = None

    @property
    def escalation(self) -> bool:
        return self.step.startswith("escalation")


_NEVER = datetime.max.replace(tzinfo=UTC)


def _later(moment: datetime, delta: timedelta, times: int = 1) -> datetime:
    """`moment + times * delta`, or the end of time past the calendar's end (never armed)."""
    try:
        return moment + times * delta
    except OverflowError:
        return _NEVER


def timeline(*, warn_at: datetime | None, due_at: datetime, chain: Chain) -> list[PlannedAlert]:
    """Every alert of one deadline, in the order they fall due."""
    planned = []
    if warn_at is not None and warn_at < due_at:
        planned.append(PlannedAlert("warning", warn_at, Target.owner))
    planned.append(PlannedAlert("breach", due_at, Target.owner))
    for index, step in enumerate(chain.steps, start=1):
        at = _later(due_at, step.after)
        planned.append(PlannedAlert(f"escalation-{index}", at, step.notify, step.person_id))
        for repeat in range(1, step.repeat_times + 1):
            assert step.repeat_every is not None
            planned.append(
                PlannedAlert(
                    f"escalation-{index}.{repeat}",
                    _later(at, step.repeat_every, repeat),
                    step.notify,
                    step.person_id,
                )
            )
    order = {entry.step: index for index, entry in enumerate(planned)}
    return sorted(planned, key=lambda entry: (entry.at, order[entry.step]))


def next_alert(
    entries: Sequence[PlannedAlert],
    *,
    after_step: str | None,
    acknowledged: bool,
    not_before: datetime | None = None,
) -> PlannedAlert | None:
    """The alert to arm next: the first entry after `after_step` (None: from the start) that an
    acknowledgement does not silence and whose time is not already past `not_before`. The
    breach is never skipped: a deadline moved into the past or given to a new owner after it
    passed still tells its owner, at once."""
    start = 0
    if after_step is not None:
        steps = [entry.step for entry in entries]
        if after_step not in steps:
            return None
        start = steps.index(after_step) + 1
    for entry in entries[start:]:
        if acknowledged and entry.escalation:
            continue
        if not_before is not None and entry.at < not_before and entry.step != "breach":
            continue
        return entry
    return None
