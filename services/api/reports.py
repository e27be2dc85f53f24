"""The inbox's reports: how fast and how well conversations were answered over a period, per
bucket of time (day or week), per person and per team. Pure, no I/O.

The facts are conversation histories: each conversation's timeline (the events the api's
timeline consumer keeps, in stream order) with the business calendar of its SLA policy. A
history is replayed event by event, so at every moment it is known whether the conversation
is open, whether the customer awaits a reply, who owns it and which team holds it; every
figure is attributed to that owner and team at the moment it happened.

What each figure means:

- **Responses**: the brand's replies (`conversation.responded`, a reply in the thread or one
  marked by hand) made in the period, first and next ones.
- **First response time**: for each conversation, its first reply after it opened, counted in
  the period of that reply. It is measured in the business time of the conversation's SLA
  calendar (`slapolicy` -> `calendar`; none: around the clock) from the `started_at` of the
  conversation's first `first_response` deadline (when the customer's message was written),
  or from its opening when it had none, to the reply; business time while the conversation
  was paused (the brand waiting on the customer) does not count, as the SLA clock does not
  run then. The **median** and **p90** are nearest-rank percentiles: the p-th percentile of n
  times is the ceil(p * n / 100)-th smallest (so the median of 4 times is the 2nd), always a
  time some customer really waited.
- **Attainment**: of the responses made while a deadline was armed (the newest
  `deadline.changed` before the reply has a `due_at`: its first response, next response, or
  the resolution target where that fell first), the share made at or before that due time.
  Responses with no deadline (no SLA, older than the backfill cutoff, paused) are not counted.
- **Breaches**: deadlines that passed unanswered: notify sent (or tried to send) the `breach`
  step of a deadline's alerts (`alert.sent` or `alert.failed`, step `breach`). Each deadline
  (conversation and deadline version) counts once, however many channels carried it.
- **Escalations**: the escalation steps notify took (step `escalation-1`, `escalation-2`, ...),
  each step of each deadline once.
- **Acknowledgements**: "I'm on it" (`alert.acknowledged`), each deadline once.
- **Open** and **awaiting** (the open load): conversations not resolved, and of those the ones
  whose customer awaits a reply (open, neither responded nor paused), at the end of each
  bucket (just before it ends) and at the end of the period.
- **Continuity**: among the conversations first answered in the period whose author (the same
  author id on the same platform, in the same tenant) had been answered before in another
  conversation, the share answered by the person who answered that author last before this
  conversation opened. "Who answered" is the conversation's owner at the reply; a reply while
  nobody owned it answers nobody in particular and counts on neither side. The earlier
  conversation counts even when the report's reader may not see it: it only says who answered.

Person means who owned the conversation when it happened (none: it waited in its team's
queue); team means the team that held it then. A report counts what its `Lens` covers: the
reader's reach (whole tenants, teams, or their own work) narrowed to a tenant, team or person.
Reports hold figures, ids and names only, never anything a customer wrote.

The period runs from `start` up to `end` or now, whichever comes first: nothing after now is
known. Buckets are days or weeks (from Monday) in the report's timezone, the first and last
cut to the period.
"""

import csv
import enum
import io
import json
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from services.api.security import csv_cell
from shared.businesstime import ALWAYS_OPEN, BusinessCalendar

Bucket = Literal["day", "week"]
BUCKETS: tuple[Bucket, ...] = ("day", "week")
TABLES = ("days", "people", "teams")
_ZERO = timedelta(0)


class Kind(enum.StrEnum):
    """The timeline's kinds a report reads (`TimelineRow.kind`)."""

    opened = "conversation.opened"
    assigned = "conversation.assigned"
    responded = "conversation.responded"
    reopened = "conversation.reopened"
    paused = "conversation.paused"
    resumed = "conversation.resumed"
    resolved = "conversation.resolved"
    deadline = "deadline.changed"
    alert_sent = "alert.sent"
    alert_failed = "alert.failed"
    acknowledged = "alert.acknowledged"


KINDS = frozenset(kind.value for kind in Kind)
_LIFECYCLE = frozenset({Kind.opened, Kind.responded, Kind.reopened, Kind.paused, Kind.resumed, Kind.resolved})


# -- the facts ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """One entry of a conversation's timeline, as much of it as a report reads."""

    kind: Kind
    at: datetime  # when it happened (a reply: when it was written)
    owner_id: str | None = None  # assigned: the new owner
    team_id: str | None = None  # assigned: the new team
    keeps_team: bool = False  # assigned, naming no team: the team stays
    deadline_kind: str | None = None  # deadline: first_response, next_response, resolution
    started_at: datetime | None = None  # deadline: when its clock started
    due_at: datetime | None = None  # deadline: due then (None: no deadline armed)
    version: int | None = None  # deadline, alert, acknowledged: the deadline's version
    step: str = ""  # alert: warning, breach, escalation-N


@dataclass(frozen=True)
class History:
    """One conversation: who and where it is, and its timeline in stream order.

    `opened_at`, `team_id`, `owner_id` and `resolved_at` are the conversation as it is now;
    they stand in for a timeline that holds no opening, assignment or resolution (one begun
    before the timeline was kept)."""

    conversation_id: str
    tenant_id: str
    platform: str
    author_id: str
    opened_at: datetime
    team_id: str | None = None
    owner_id: str | None = None
    resolved_at: datetime | None = None
    calendar: BusinessCalendar = ALWAYS_OPEN
    events: tuple[Event, ...] = ()


@dataclass(frozen=True)
class Lens:
    """Whose figures a report counts: the reader's reach (everything; whole tenants; figures
    while a conversation was in one of `teams`; figures while it was owned by one of `people`),
    within `within` tenants (None: any), narrowed by the request to one tenant, team or person."""

    everything: bool = False
    tenants: frozenset[str] = frozenset()
    teams: frozenset[str] = frozenset()  # team ids
    people: frozenset[str] = frozenset()
    within: frozenset[str] | None = None
    tenant: str | None = None
    team: str | None = None  # a team id
    person: str | None = None

    def counts(self, tenant_id: str, team_id: str | None, owner_id: str | None) -> bool:
        """Whether a figure of this tenant, held by this team and owner at the time, is counted."""
        if self.within is not None and tenant_id not in self.within:
            return False
        if self.tenant is not None and tenant_id != self.tenant:
            return False
        if self.team is not None and team_id != self.team:
            return False
        if self.person is not None and owner_id != self.person:
            return False
        return (
            self.everything
            or tenant_id in self.tenants
            or (team_id is not None and team_id in self.teams)
            or (owner_id is not None and owner_id in self.people)
        )


@dataclass(frozen=True)
class TeamLabel:
    tenant_id: str
    slug: str
    name: str | None = None  # None: the reader may not see the team's name


@dataclass(frozen=True)
class ReportFacts:
    """What a report is made of: the histories of the conversations it may count, histories of
    the same authors' other conversations (read only for who answered them: continuity), and
    the names the reader may see (person id -> name; team id -> label)."""

    conversations: Sequence[History]
    lens: Lens
    earlier: Sequence[History] = ()
    names: Mapping[str, str] = field(default_factory=dict)
    teams: Mapping[str, TeamLabel] = field(default_factory=dict)


# -- the report --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Figures:
    """The figures of one row of a report (see the module's docstring for what each means)."""

    responses: int = 0
    first_responses: int = 0
    first_response_median: timedelta | None = None
    first_response_p90: timedelta | None = None
    responses_with_deadline: int = 0
    responses_in_time: int = 0
    breaches: int = 0
    escalations: int = 0
    acknowledgements: int = 0
    returning_authors: int = 0  # first answered, by someone, having been answered before
    answered_by_same_person: int = 0

    @property
    def attainment(self) -> float | None:
        """The share of responses with a deadline made by it (None: no such response)."""
        return share(self.responses_in_time, self.responses_with_deadline)

    @property
    def continuity(self) -> float | None:
        """The share of returning authors answered by who answered them last (None: none returned)."""
        return share(self.answered_by_same_person, self.returning_authors)


@dataclass(frozen=True)
class BucketLine:
    start: datetime
    end: datetime
    label: str  # the bucket's local date (a week: its Monday), ISO
    figures: Figures
    open: int  # just before `end`
    awaiting: int


@dataclass(frozen=True)
class PersonLine:
    person_id: str | None  # None: while nobody owned it (the team's queue)
    name: str | None  # None: nobody, or a person whose name the reader may not see
    figures: Figures
    open: int  # at the end of the period
    awaiting: int


@dataclass(frozen=True)
class TeamLine:
    tenant_id: str
    team_id: str | None  # None: while no team held it
    slug: str | None
    name: str | None
    figures: Figures
    open: int
    awaiting: int


@dataclass(frozen=True)
class Report:
    """One report: from `start` to `end` (the period asked, cut at now), in `timezone`."""

    start: datetime
    end: datetime
    until: datetime  # the end asked for
    now: datetime
    bucket: Bucket
    timezone: str
    summary: Figures
    open: int  # at `end`
    awaiting: int
    buckets: tuple[BucketLine, ...]
    people: tuple[PersonLine, ...]
    teams: tuple[TeamLine, ...]


def share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def nearest_rank(values: Sequence[timedelta], percentile: int) -> timedelta | None:
    """The nearest-rank percentile: the ceil(percentile * n / 100)-th smallest value (1-based,
    at least the first); None of no values."""
    if not values:
        return None
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile must be in 1..100, got {percentile}")
    ordered = sorted(values)
    rank = max(1, -(-percentile * len(ordered) // 100))
    return ordered[rank - 1]


# -- reading the timeline ------------------------------------------------------------------------


def event_of(kind: str, at: datetime, detail: str, person_id: str | None = None) -> Event | None:
    """A timeline row as a report reads it (`TimelineRow.kind`, `.at`, `.detail` JSON and
    `.person_id`); None for a kind reports do not read. A detail that is not the event's JSON
    gives what the row's own columns say."""
    try:
        known = Kind(kind)
    except ValueError:
        return None
    try:
        data: Any = json.loads(detail)
    except (ValueError, TypeError):
        data = None
    if not isinstance(data, dict):
        data = {}
    match known:
        case Kind.assigned:
            return Event(
                known,
                at,
                owner_id=_text(data.get("owner_id")) if "owner_id" in data else person_id,
                team_id=_text(data.get("team_id")),
                keeps_team="team_id" not in data,
            )
        case Kind.deadline:
            return Event(
                known,
                at,
                owner_id=_text(data.get("owner_id")),
                deadline_kind=_text(data.get("kind")),
                started_at=_instant(data.get("started_at")),
                due_at=_instant(data.get("due_at")),
                version=_number(data.get("deadline_version")),
            )
        case Kind.alert_sent | Kind.alert_failed:
            step = _text(data.get("step")) or _text(data.get("alert_kind")) or ""
            return Event(known, at, version=_number(data.get("deadline_version")), step=step)
        case Kind.acknowledged:
            return Event(known, at, version=_number(data.get("deadline_version")))
    return Event(known, at)


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _number(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _instant(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
        return moment.astimezone(UTC) if moment.tzinfo is not None else None
    except (ValueError, OverflowError):
        return None


# -- replaying a history -------------------------------------------------------------------------


@dataclass(frozen=True)
class _State:
    at: datetime  # from when (never earlier than the state before)
    open: bool
    awaiting: bool
    owner: str | None
    team: str | None


@dataclass(frozen=True)
class _Response:
    at: datetime
    owner: str | None
    team: str | None
    first: bool
    waited: timedelta | None  # first responses: business time since the clock started
    due_at: datetime | None  # the deadline armed at the reply


@dataclass(frozen=True)
class _Mark:
    """A breach, an escalation step or an acknowledgement, once per deadline."""

    what: Literal["breach", "escalation", "acknowledgement"]
    at: datetime
    owner: str | None
    team: str | None


@dataclass
class _Replay:
    history: History
    opened: datetime
    states: list[_State]
    responses: list[_Response]
    marks: list[_Mark]
    times: list[datetime] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.times = [state.at for state in self.states]

    def state_before(self, moment: datetime) -> _State | None:
        """How the conversation stood just before `moment` (None: not opened yet)."""
        index = bisect_left(self.times, moment)
        return self.states[index - 1] if index else None


def replay(history: History) -> _Replay:
    """Every state, reply and alert of one conversation, in the order they happened."""
    events = history.events
    lifecycle = any(e.kind in _LIFECYCLE for e in events)
    assigned = any(e.kind is Kind.assigned for e in events)
    owner, team = (None, None) if assigned else (history.owner_id, history.team_id)
    opened_events = [e.at for e in events if e.kind is Kind.opened]
    first_at = min((e.at for e in events), default=history.opened_at)
    opened = opened_events[0] if opened_events else min(history.opened_at, first_at)
    states: list[_State] = []
    responses: list[_Response] = []
    marks: list[_Mark] = []
    is_open = awaiting = False
    clock = opened  # the running maximum of the events' times: states never go back in time
    if not opened_events:  # a timeline begun after the opening: open from the opening
        is_open = awaiting = True
        states.append(_State(opened, True, True, owner, team))
    first_start: datetime | None = None
    deadline: Event | None = None
    paused_since: datetime | None = None
    pauses: list[tuple[datetime, datetime]] = []
    answered = False
    seen: set[tuple[str, int | None, str]] = set()

    def close_pause(at: datetime) -> None:
        nonlocal paused_since
        if paused_since is not None:
            pauses.append((paused_since, at))
            paused_since = None

    for event in events:
        clock = max(clock, event.at)
        kind = event.kind
        if kind is Kind.opened:
            is_open = awaiting = True
        elif kind is Kind.assigned:
            owner = event.owner_id
            team = team if event.keeps_team else event.team_id
        elif kind is Kind.deadline:
            deadline = event
            if event.deadline_kind == "first_response" and first_start is None:
                first_start = event.started_at
        elif kind is Kind.responded:
            close_pause(event.at)
            waited = None
            if not answered:
                start = first_start or opened
                waited = history.calendar.elapsed(start, event.at) - sum(
                    (history.calendar.elapsed(max(s, start), min(e, event.at)) for s, e in pauses), _ZERO
                )
                waited = max(waited, _ZERO)
            due = deadline.due_at if deadline is not None else None
            responses.append(_Response(event.at, owner, team, not answered, waited, due))
            answered = True
            awaiting = False
        elif kind is Kind.reopened:
            close_pause(event.at)
            is_open = awaiting = True
        elif kind is Kind.paused:
            paused_since = paused_since or event.at
            awaiting = False
        elif kind is Kind.resumed:
            close_pause(event.at)
            is_open = awaiting = True
        elif kind is Kind.resolved:
            close_pause(event.at)
            is_open = awaiting = False
        elif kind in (Kind.alert_sent, Kind.alert_failed):
            step = event.step
            what: Literal["breach", "escalation"] | None = (
                "breach" if step == "breach" else "escalation" if step.startswith("escalation") else None
            )
            if what is not None and (what, event.version, step) not in seen:
                seen.add((what, event.version, step))
                marks.append(_Mark(what, event.at, owner, team))
        elif kind is Kind.acknowledged:
            if ("acknowledgement", event.version, "") not in seen:
                seen.add(("acknowledgement", event.version, ""))
                marks.append(_Mark("acknowledgement", event.at, owner, team))
        if kind in _LIFECYCLE or kind is Kind.assigned:
            states.append(_State(clock, is_open, awaiting, owner, team))
    if not lifecycle and history.resolved_at is not None:  # the timeline never said; the row does
        at = max(clock, history.resolved_at)
        states.append(_State(at, False, False, owner, team))
    return _Replay(history, opened, states, responses, marks)


# -- counting ------------------------------------------------------------------------------------


@dataclass
class _Tally:
    responses: int = 0
    waits: list[timedelta] = field(default_factory=list)
    with_deadline: int = 0
    in_time: int = 0
    breaches: int = 0
    escalations: int = 0
    acknowledgements: int = 0
    returning: int = 0
    same: int = 0
    open: int = 0
    awaiting: int = 0

    def figures(self) -> Figures:
        return Figures(
            responses=self.responses,
            first_responses=len(self.waits),
            first_response_median=nearest_rank(self.waits, 50),
            first_response_p90=nearest_rank(self.waits, 90),
            responses_with_deadline=self.with_deadline,
            responses_in_time=self.in_time,
            breaches=self.breaches,
            escalations=self.escalations,
            acknowledgements=self.acknowledgements,
            returning_authors=self.returning,
            answered_by_same_person=self.same,
        )


def bucket_edges(start: datetime, end: datetime, bucket: Bucket, timezone: str) -> list[tuple[datetime, str]]:
    """The start of every bucket from `start` (and `end` last, labelled ""): local midnights
    (of Mondays, for weeks) in `timezone` between them. Empty when `end` is not after `start`."""
    if end <= start:
        return []
    zone = ZoneInfo(timezone)
    step = timedelta(days=7 if bucket == "week" else 1)
    day = _local_date(start, zone)
    if bucket == "week":
        day = _minus(day, timedelta(days=day.weekday()))
    edges = [(start, day.isoformat())]
    while True:
        try:
            day += step
            boundary = datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)
        except OverflowError:
            break
        if boundary >= end:
            break
        if boundary > edges[-1][0]:
            edges.append((boundary, day.isoformat()))
    edges.append((end, ""))
    return edges


def _local_date(at: datetime, zone: ZoneInfo) -> date:
    try:
        return at.astimezone(zone).date()
    except OverflowError:
        return at.date()


def _minus(day: date, delta: timedelta) -> date:
    try:
        return day - delta
    except OverflowError:
        return date.min


def build_report(
    facts: ReportFacts,
    *,
    start: datetime,
    end: datetime,
    now: datetime,
    bucket: Bucket = "day",
    timezone: str = "UTC",
) -> Report:
    """The report of `facts` from `start` to `end` (cut at `now`), in buckets of `bucket`."""
    lens = facts.lens
    until = end
    end = max(start, min(end, now))
    edges = bucket_edges(start, end, bucket, timezone)
    starts = [at for at, _ in edges[:-1]]
    lines = [_Tally() for _ in starts]
    total = _Tally()
    people: dict[str | None, _Tally] = {}
    teams: dict[tuple[str, str | None], _Tally] = {}
    replays = [replay(history) for history in facts.conversations]
    answers = _answers_by_author([*replays, *(replay(history) for history in facts.earlier)])

    def tallies(at: datetime | None, tenant: str, owner: str | None, team: str | None) -> list[_Tally]:
        found = [total, people.setdefault(owner, _Tally()), teams.setdefault((tenant, team), _Tally())]
        if at is not None:
            found.append(lines[bisect_right(starts, at) - 1])
        return found

    def within(at: datetime) -> bool:
        return start <= at < end

    for run in replays:
        history = run.history
        tenant = history.tenant_id
        for response in run.responses:
            if not within(response.at) or not lens.counts(tenant, response.team, response.owner):
                continue
            returning = same = False
            if response.first and response.owner is not None:
                before = _answered_before(answers, history, run.opened)
                returning = before is not None
                same = before == response.owner
            for tally in tallies(response.at, tenant, response.owner, response.team):
                tally.responses += 1
                if response.waited is not None:
                    tally.waits.append(response.waited)
                if response.due_at is not None:
                    tally.with_deadline += 1
                    tally.in_time += response.at <= response.due_at
                tally.returning += returning
                tally.same += same
        for mark in run.marks:
            if not within(mark.at) or not lens.counts(tenant, mark.team, mark.owner):
                continue
            for tally in tallies(mark.at, tenant, mark.owner, mark.team):
                if mark.what == "breach":
                    tally.breaches += 1
                elif mark.what == "escalation":
                    tally.escalations += 1
                else:
                    tally.acknowledgements += 1
        for index, (edge, _) in enumerate(edges[1:]):
            state = run.state_before(edge)
            if state is None or not state.open or not lens.counts(tenant, state.team, state.owner):
                continue
            line = lines[index]
            line.open += 1
            line.awaiting += state.awaiting
        state = run.state_before(end)
        if state is not None and state.open and lens.counts(tenant, state.team, state.owner):
            for tally in tallies(None, tenant, state.owner, state.team):
                tally.open += 1
                tally.awaiting += state.awaiting
    return Report(
        start=start,
        end=end,
        until=until,
        now=now,
        bucket=bucket,
        timezone=timezone,
        summary=total.figures(),
        open=total.open,
        awaiting=total.awaiting,
        buckets=tuple(
            BucketLine(
                start=at,
                end=edges[index + 1][0],
                label=label,
                figures=lines[index].figures(),
                open=lines[index].open,
                awaiting=lines[index].awaiting,
            )
            for index, (at, label) in enumerate(edges[:-1])
        ),
        people=tuple(
            PersonLine(
                person_id=person,
                name=facts.names.get(person) if person is not None else None,
                figures=tally.figures(),
                open=tally.open,
                awaiting=tally.awaiting,
            )
            for person, tally in sorted(people.items(), key=lambda item: (item[0] is None, item[0] or ""))
        ),
        teams=tuple(
            TeamLine(
                tenant_id=tenant,
                team_id=team,
                slug=label.slug if (label := facts.teams.get(team or "")) else None,
                name=label.name if label else None,
                figures=tally.figures(),
                open=tally.open,
                awaiting=tally.awaiting,
            )
            for (tenant, team), tally in sorted(
                teams.items(),
                key=lambda item: (item[0][0], item[0][1] is None, _team_order(facts, item[0][1])),
            )
        ),
    )


def _team_order(facts: ReportFacts, team: str | None) -> str:
    label = facts.teams.get(team or "")
    return label.slug if label else team or ""


_AuthorKey = tuple[str, str, str]  # tenant, platform, author id


def _answers_by_author(replays: Iterable[_Replay]) -> dict[_AuthorKey, list[tuple[datetime, str, str]]]:
    """Every reply made by a known person, per author: (when, conversation, who), by time."""
    answers: dict[_AuthorKey, list[tuple[datetime, str, str]]] = {}
    for run in replays:
        h = run.history
        for response in run.responses:
            if response.owner is not None:
                answers.setdefault((h.tenant_id, h.platform, h.author_id), []).append(
                    (response.at, h.conversation_id, response.owner)
                )
    for replies in answers.values():
        replies.sort()
    return answers


def _answered_before(
    answers: Mapping[_AuthorKey, list[tuple[datetime, str, str]]], history: History, opened: datetime
) -> str | None:
    """Who answered this author last, in another conversation, before this one opened."""
    replies = answers.get((history.tenant_id, history.platform, history.author_id), [])
    last = None
    for at, conversation, person in replies:
        if at >= opened:
            break
        if conversation != history.conversation_id:
            last = person
    return last


# -- CSV -----------------------------------------------------------------------------------------

FIGURE_COLUMNS = (
    "responses",
    "first_responses",
    "first_response_median_seconds",
    "first_response_p90_seconds",
    "responses_with_deadline",
    "responses_in_time",
    "attainment",
    "breaches",
    "escalations",
    "acknowledgements",
    "returning_authors",
    "answered_by_same_person",
    "continuity",
    "open",
    "awaiting",
)


def seconds(value: timedelta | None) -> int | None:
    """A duration in whole seconds (rounded), for the JSON and CSV answers."""
    return None if value is None else round(value.total_seconds())


def _figure_cells(figures: Figures, open_: int, awaiting: int) -> list[str]:
    def number(value: int | None) -> str:
        return "" if value is None else str(value)

    def fraction(value: float | None) -> str:
        return "" if value is None else f"{value:.4f}"

    return [
        number(figures.responses),
        number(figures.first_responses),
        number(seconds(figures.first_response_median)),
        number(seconds(figures.first_response_p90)),
        number(figures.responses_with_deadline),
        number(figures.responses_in_time),
        fraction(figures.attainment),
        number(figures.breaches),
        number(figures.escalations),
        number(figures.acknowledgements),
        number(figures.returning_authors),
        number(figures.answered_by_same_person),
        fraction(figures.continuity),
        number(open_),
        number(awaiting),
    ]


def report_csv(report: Report, table: str) -> str:
    """One table of the report as CSV (RFC 4180, CRLF): `days` (one row per bucket), `people`
    or `teams`. Every text cell is made safe for a spreadsheet (`csv_cell`): a name that
    starts like a formula stays text. Durations are whole seconds, shares fractions of 1."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    if table == "days":
        writer.writerow(["start", "end", "label", *FIGURE_COLUMNS])
        for line in report.buckets:
            text = [line.start.isoformat(), line.end.isoformat(), line.label]
            writer.writerow([*map(csv_cell, text), *_figure_cells(line.figures, line.open, line.awaiting)])
    elif table == "people":
        writer.writerow(["person", "name", *FIGURE_COLUMNS])
        for person in report.people:
            text = [person.person_id or "", person.name or ""]
            writer.writerow(
                [*map(csv_cell, text), *_figure_cells(person.figures, person.open, person.awaiting)]
            )
    elif table == "teams":
        writer.writerow(["tenant", "team", "name", *FIGURE_COLUMNS])
        for team in report.teams:
            text = [team.tenant_id, team.slug or team.team_id or "", team.name or ""]
            writer.writerow([*map(csv_cell, text), *_figure_cells(team.figures, team.open, team.awaiting)])
    else:
        raise ValueError(f"no table {table!r}: one of {', '.join(TABLES)}")
    return out.getvalue()
