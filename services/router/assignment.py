"""Who owns a conversation: pure choice among a team's people.

The steps, in order, each recorded in the reason so an operator can answer
"why did this go to her?":
1. continuity: the person who last answered this author on this account (or,
   while they are out of office, their substitute) if available with capacity;
2. match: among available members with capacity who have the skills and speak
   the language, the least loaded, then the one waiting longest since their last
   assignment;
3. queue: nobody can take it now; it waits in the team queue, ordered by deadline.
"""

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from shared.businesstime import BusinessCalendar

_NEVER = datetime.min.replace(tzinfo=UTC)


@dataclass
class Person:
    """An owner as the router weighs them; `load` changes as the router assigns."""

    id: str
    name: str = ""
    skills: frozenset[str] = frozenset()
    languages: frozenset[str] = frozenset()
    capacity: int = 20
    weights: dict[str, int] = field(default_factory=dict)
    load: int = 0
    status: str = "available"
    active: bool = True
    working_hours: BusinessCalendar | None = None  # None: always on shift
    out_of_office: tuple[datetime, datetime] | None = None
    substitute_id: str | None = None
    last_assigned_at: datetime | None = None

    def weight(self, priority: str) -> int:
        return max(1, self.weights.get(priority, 1))

    def out_of_office_at(self, now: datetime) -> bool:
        return self.out_of_office is not None and self.out_of_office[0] <= now < self.out_of_office[1]

    def on_shift(self, now: datetime) -> bool:
        return self.working_hours is None or self.working_hours.is_open(now)

    def available(self, now: datetime) -> bool:
        """Takes new work now: active, says available, on shift and not out of office."""
        return (
            self.active
            and self.status == "available"
            and self.on_shift(now)
            and not self.out_of_office_at(now)
        )

    def present(self, now: datetime) -> bool:
        """Still answers what they own (away counts: they only take nothing new)."""
        return (
            self.active and self.status != "offline" and self.on_shift(now) and not self.out_of_office_at(now)
        )

    def has_room(self, weight: int) -> bool:
        return self.load + weight <= self.capacity

    def speaks(self, language: str | None) -> bool:
        if not self.languages or not language:
            return True
        return _primary(language) in {_primary(known) for known in self.languages}

    def can_do(self, skills: frozenset[str]) -> bool:
        return skills <= self.skills

    def back_at(self, now: datetime) -> datetime | None:
        """When someone absent now will be back (None: not known, e.g. offline or inactive)."""
        if not self.active or self.status == "offline":
            return None
        candidates = []
        if self.out_of_office_at(now) and self.out_of_office is not None:
            candidates.append(self.out_of_office[1])
        if not self.on_shift(now) and self.working_hours is not None:
            opening = self.working_hours.next_change(now)
            if opening is None:
                return None
            candidates.append(opening)
        return max(candidates) if candidates else now

    def next_change(self, now: datetime) -> datetime | None:
        """The next moment their availability may change by itself (a shift, an absence)."""
        moments = []
        if self.working_hours is not None:
            change = self.working_hours.next_change(now)
            if change is not None:
                moments.append(change)
        if self.out_of_office is not None:
            moments.extend(moment for moment in self.out_of_office if moment > now)
        return min(moments) if moments else None


def _primary(language: str) -> str:
    return language.split("-", 1)[0].split("_", 1)[0].lower()


@dataclass(frozen=True)
class Need:
    """What a conversation asks of its owner."""

    skills: frozenset[str] = frozenset()
    language: str | None = None
    priority: str = "normal"


@dataclass(frozen=True)
class Choice:
    person_id: str | None
    reason: str
    step: str  # continuity, match, any member, queue, named


def unavailable_because(person: Person, need: Need, now: datetime) -> str | None:
    """Why someone cannot take a new conversation now, as said after their name; None: they can."""
    if not person.active:
        return "is deactivated"
    if person.out_of_office_at(now):
        return "is out of office"
    if person.status != "available":
        return f"is {person.status}"
    if not person.on_shift(now):
        return "is off shift"
    weight = person.weight(need.priority)
    if not person.has_room(weight):
        if person.load >= person.capacity:
            return f"is at capacity ({person.load}/{person.capacity})"
        return f"has no room for it ({person.load}/{person.capacity}, it weighs {weight})"
    return None


def choose_owner(
    members: Iterable[Person],
    need: Need,
    *,
    team: str,
    now: datetime,
    preferred: Person | None = None,
    preferred_why: str = "answered this author last",
    excluded: frozenset[str] = frozenset(),
    passed_over: str = "",
) -> Choice:
    """The owner for a conversation of `team`, or None to queue it. Pure: nothing is changed.

    When continuity passes over `preferred`, the reason names them and says why; `passed_over`
    is such a note decided by the caller (someone no longer in the team)."""
    pool = [person for person in members if person.id not in excluded]
    if preferred is not None:
        why_not = unavailable_because(preferred, need, now)
        if preferred.id not in excluded and why_not is None:
            return Choice(
                preferred.id, f"team {team}: continuity: {preferred.id} {preferred_why}", "continuity"
            )
        substitute = next((p for p in pool if p.id == preferred.substitute_id), None)
        substitute_why = unavailable_because(substitute, need, now) if substitute is not None else None
        if preferred.out_of_office_at(now) and substitute is not None and substitute_why is None:
            return Choice(
                substitute.id,
                f"team {team}: continuity: {preferred.id} {preferred_why} and is out of office; "
                f"{substitute.id} substitutes",
                "continuity",
            )
        if preferred.id not in excluded and why_not is not None:
            if preferred.out_of_office_at(now):
                if preferred.substitute_id is None:
                    why_not += " and has no substitute"
                elif substitute is None:
                    why_not += f" and their substitute {preferred.substitute_id} is not in team {team}"
                else:
                    why_not += f" and their substitute {substitute.id} {substitute_why}"
            passed_over = f"{preferred.id} ({preferred_why}) {why_not}"
    note = f"continuity: {passed_over}; " if passed_over else ""
    qualified = [p for p in pool if p.active and p.can_do(need.skills) and p.speaks(need.language)]
    relaxed = ""
    if not qualified:
        # Nobody in the team could ever match: anyone may answer rather than nobody.
        qualified = [p for p in pool if p.active]
        relaxed = " (no member has the skills and language asked; any member)"
    ready = [p for p in qualified if p.available(now) and p.has_room(p.weight(need.priority))]
    if not ready:
        waiting = f"{len(qualified)} matching member{'s' if len(qualified) != 1 else ''} busy or away"
        return Choice(None, f"team {team}: {note}{waiting}{relaxed}; waiting in the team queue", "queue")
    pick = min(
        ready,
        key=lambda p: (p.load / p.capacity, p.load, p.last_assigned_at or _NEVER, p.id),
    )
    wanted = []
    if need.skills:
        wanted.append("skills " + ", ".join(sorted(need.skills)))
    if need.language and pick.languages:
        wanted.append(f"language {need.language}")
    matched = f"has {' and '.join(wanted)}, " if wanted and not relaxed else ""
    named = f"matched {pick.id}: " if note else ""
    return Choice(
        pick.id,
        f"team {team}: {note}{named}{matched}least loaded ({pick.load}/{pick.capacity}), "
        f"longest since last assignment{relaxed}",
        "any member" if relaxed else "match",
    )


def fit_reason(reason: str, limit: int = 300) -> str:
    """A reason cut between words to at most `limit` characters (the column's size), marked "…"."""
    if len(reason) <= limit:
        return reason
    cut = reason[: limit - 1]
    if " " in cut:
        cut = cut[: cut.rindex(" ")]
    return cut.rstrip(" ;:,(") + "…"
