"""The reports, read from the database: one scope and period's conversation histories, made into
figures by `services.api.reports`, answered as JSON or as CSV.

Who reads which figures is decided once, by `report_lens`, from the roles table's `reports`
reach: an agency admin every tenant, a tenant admin and a client viewer their tenants (the
whole tenant), a team lead what happened while conversations were in the teams they lead, an
agent their own work (what happened while a conversation was theirs), in the tenants they
serve. A request narrows that to one tenant, one team of it (by slug) or one person; naming one
the reader cannot reach answers 404, as if it did not exist.

What is read: the conversations that may hold a counted figure (in reach, with an event in
the period or open during it), their timelines (`timeline`, the events of SH_EVENTS the api
keeps), their SLA calendars (`slapolicy` -> `calendar`), and, for continuity only, who
answered the same authors' other conversations. Never what a customer wrote: no message, no
author's name or handle is selected, so a report holds none, for a client viewer as for
anyone. Names are shown only of the people and teams the reader may see (`see`); the others
by their id or slug.

`GET /api/reports` answers the report as JSON, `GET /api/reports/{table}.csv` one of its
tables (`days`, `people`, `teams`) as CSV. The period is `since` to `until` (RFC 3339 with an
offset, or dates: `until` a date means to the end of that day), at most 366 days; without
them, the last 7 days in `tz` (today and the six days before, up to now).
"""

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any, Literal
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field
from sqlalchemy import ColumnElement, and_, exists, false, or_, select, true
from sqlmodel import col

from services.api.access import Action, Viewer
from services.api.auth import clock_of
from services.api.charts import first_response_chart, open_load_chart
from services.api.countdown import calendar_of as parsed_calendar
from services.api.reads import ERRORS, NOT_FOUND
from services.api.reports import (
    BUCKETS,
    KINDS,
    TABLES,
    Bucket,
    Event,
    Figures,
    History,
    Kind,
    Lens,
    Report,
    ReportFacts,
    TeamLabel,
    build_report,
    event_of,
    report_csv,
    seconds,
)
from services.api.scope import Access, access, forbidden, not_found, person_filter
from shared.businesstime import ALWAYS_OPEN, BusinessCalendar
from shared.db.core import fetch_rows
from shared.db.models import (
    CalendarRow,
    ConversationRow,
    PersonRow,
    SlaPolicyRow,
    TeamRow,
    TenantRow,
    TimelineRow,
)
from shared.ids import SLUG_PATTERN

MAX_PERIOD = timedelta(days=366)
DEFAULT_DAYS = 7
CHUNK = 500  # ids per IN (...) list
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
TZ_PATTERN = r"^[A-Za-z0-9_+\-/]{1,64}$"

__all__ = [
    "first_response_chart",
    "open_load_chart",
    "report_for",
    "report_lens",
    "reports_router",
]


# -- whose figures ---------------------------------------------------------------------------


def report_lens(viewer: Viewer) -> Lens:
    """The figures `viewer` may read in a report, from the `reports` reach of the roles table;
    403 when their roles give them no reports at all.

    Whole tenants (agency admin: all; tenant admin, client viewer: theirs), teams (a team
    lead's: what happened while a conversation was in them) and people (an agent: themselves,
    what happened while a conversation was theirs), all within the tenants the viewer holds a
    role in."""
    scope = viewer.scope(Action.reports)
    if scope.empty:
        raise forbidden(Action.reports, "reports")
    if scope.everything:
        return Lens(everything=True)
    people = set(scope.people)
    if scope.owner is not None:
        people.add(scope.owner)
    return Lens(
        tenants=scope.tenants,
        teams=scope.teams,
        people=frozenset(people),
        within=viewer.tenants(),
    )


def team_reachable(viewer: Viewer, *, team_id: str, tenant_id: str) -> bool:
    """Whether the viewer may name this team in a report: its tenant or the team is in their
    reports reach, or they see the team (an agent's own teams: their work in it)."""
    for action in (Action.reports, Action.see):
        scope = viewer.scope(action)
        if scope.everything or tenant_id in scope.tenants or team_id in scope.teams:
            return True
    return False


# -- the period ------------------------------------------------------------------------------


def bad(field: str, error: str) -> HTTPException:
    return HTTPException(400, {"error": error, "field": field})


def zone_of(tz: str) -> ZoneInfo:
    """The IANA timezone named, or 400."""
    try:
        return ZoneInfo(tz)
    except (ValueError, TypeError, OSError, KeyError):  # ZoneInfoNotFoundError is a KeyError
        raise bad("tz", f"{tz!r} is not an IANA timezone such as 'Europe/Berlin'") from None


def instant(value: str | datetime, field: str, zone: ZoneInfo, *, end: bool) -> datetime:
    """An RFC 3339 time with its offset, or a date: its first moment in `zone` (as `until`,
    `end`: the first moment of the day after, so the date is included)."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise bad(field, f"{field} needs a timezone offset")
        try:
            return value.astimezone(UTC)
        except OverflowError:
            raise bad(field, f"{field} is outside the years 1 to 9999 in UTC") from None
    text = value.strip()
    if _DATE.fullmatch(text):
        try:
            day = date.fromisoformat(text) + timedelta(days=1 if end else 0)
            return datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)
        except (ValueError, OverflowError):
            raise bad(field, f"{field} {text!r} is not a date within the years 1 to 9999") from None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise bad(
            field, f"{field} is neither a date (2026-11-20) nor an RFC 3339 time (2026-11-20T09:00:00Z)"
        ) from None
    return instant(moment, field, zone, end=end)


def period_of(
    since: str | datetime | None, until: str | datetime | None, *, zone: ZoneInfo, now: datetime
) -> tuple[datetime, datetime]:
    """The period asked for, or 400 naming the part at fault. Without `until`: now. Without
    `since`: the first moment of the sixth local day before the last day of the period (the
    last 7 days)."""
    end = instant(until, "until", zone, end=True) if until is not None else now
    if since is not None:
        start = instant(since, "since", zone, end=False)
    else:
        try:
            last_day = (end - timedelta(microseconds=1)).astimezone(zone).date()
            start = datetime.combine(last_day - timedelta(days=DEFAULT_DAYS - 1), time(0), tzinfo=zone)
            start = start.astimezone(UTC)
        except (OverflowError, ValueError):
            start = end - timedelta(days=DEFAULT_DAYS)
    if end <= start:
        raise bad("until", "until must be after since (until is now unless given)")
    if end - start > MAX_PERIOD:
        raise bad("until", f"a report covers at most {MAX_PERIOD.days} days: shorten the period")
    return start, end


# -- loading ---------------------------------------------------------------------------------


def _chunks(values: Iterable[str]) -> list[list[str]]:
    ordered = sorted(set(values))
    return [ordered[i : i + CHUNK] for i in range(0, len(ordered), CHUNK)]


def _assigned_to(people: Iterable[str]) -> Any:
    """Conversations the timeline says were ever assigned to one of these people."""
    return select(col(TimelineRow.conversation_id)).where(
        col(TimelineRow.kind) == Kind.assigned.value,
        col(TimelineRow.person_id).in_(sorted(people)),
        col(TimelineRow.conversation_id).is_not(None),
    )


def reach_clause(lens: Lens, team_tenants: Iterable[str]) -> ColumnElement[bool]:
    """The conversations that may hold a figure the lens counts, as a WHERE clause on
    `conversation` (a lead's teams: every conversation of their tenants, each figure then
    counted only while in the team)."""
    conversation_id, tenant_id = col(ConversationRow.id), col(ConversationRow.tenant_id)
    clause: ColumnElement[bool]
    if lens.everything:
        clause = true()
    else:
        clauses: list[ColumnElement[bool]] = []
        tenants = set(lens.tenants) | set(team_tenants)
        if tenants:
            clauses.append(tenant_id.in_(sorted(tenants)))
        if lens.people:
            clauses.append(
                or_(
                    col(ConversationRow.owner_id).in_(sorted(lens.people)),
                    conversation_id.in_(_assigned_to(lens.people)),
                )
            )
        clause = or_(*clauses) if clauses else false()
    if lens.within is not None:
        clause = and_(clause, tenant_id.in_(sorted(lens.within)))
    if lens.tenant is not None:
        clause = and_(clause, tenant_id == lens.tenant)
    if lens.person is not None:
        clause = and_(
            clause,
            or_(
                col(ConversationRow.owner_id) == lens.person,
                conversation_id.in_(_assigned_to([lens.person])),
            ),
        )
    return clause


def period_clause(start: datetime, end: datetime, lens: Lens) -> ColumnElement[bool]:
    """Conversations with an event in the period, or open during it."""
    events = select(col(TimelineRow.conversation_id)).where(
        col(TimelineRow.at) >= start,
        col(TimelineRow.at) < end,
        col(TimelineRow.conversation_id).is_not(None),
        col(TimelineRow.kind).in_(sorted(KINDS)),
    )
    if lens.tenant is not None:
        events = events.where(col(TimelineRow.tenant_id) == lens.tenant)
    elif lens.within is not None:
        events = events.where(col(TimelineRow.tenant_id).in_(sorted(lens.within)))
    opened_before = or_(
        col(ConversationRow.opened_at) < end,
        exists().where(
            col(TimelineRow.conversation_id) == col(ConversationRow.id),
            col(TimelineRow.kind) == Kind.opened.value,
            col(TimelineRow.at) < end,
        ),
    )
    not_closed = or_(
        col(ConversationRow.state) != "resolved",
        col(ConversationRow.resolved_at).is_(None),
        col(ConversationRow.resolved_at) >= start,
    )
    return or_(col(ConversationRow.id).in_(events), and_(opened_before, not_closed))


_COLUMNS = (
    col(ConversationRow.id),
    col(ConversationRow.tenant_id),
    col(ConversationRow.platform),
    col(ConversationRow.author_id),
    col(ConversationRow.opened_at),
    col(ConversationRow.team_id),
    col(ConversationRow.owner_id),
    col(ConversationRow.resolved_at),
    col(ConversationRow.sla_policy_id),
)  # nothing a customer wrote, nor who they are beyond their platform id


async def _timelines(access: Access, rows: Sequence[Any], kinds: Iterable[str]) -> dict[str, list[Event]]:
    """The timeline of each conversation, in stream order (entries of another tenant skipped)."""
    tenant_of = {row.id: row.tenant_id for row in rows}
    events: dict[str, list[Event]] = {row.id: [] for row in rows}
    wanted = sorted(kinds)
    for chunk in _chunks(tenant_of):
        entries = await fetch_rows(
            access.session,
            select(
                col(TimelineRow.conversation_id),
                col(TimelineRow.tenant_id),
                col(TimelineRow.kind),
                col(TimelineRow.at),
                col(TimelineRow.detail),
                col(TimelineRow.person_id),
            )
            .where(col(TimelineRow.conversation_id).in_(chunk), col(TimelineRow.kind).in_(wanted))
            .order_by(
                col(TimelineRow.conversation_id),
                col(TimelineRow.seq),
                col(TimelineRow.at),
                col(TimelineRow.id),
            ),
        )
        for conversation_id, tenant_id, kind, at, detail, person_id in entries:
            if conversation_id is None or tenant_of.get(conversation_id) != tenant_id:
                continue
            event = event_of(kind, at, detail, person_id)
            if event is not None:
                events[conversation_id].append(event)
    return events


async def _calendars(access: Access, rows: Sequence[Any]) -> dict[tuple[str, str], BusinessCalendar]:
    """The business calendar of each (tenant, SLA policy) named: its calendar's, else always open."""
    wanted = {(row.tenant_id, row.sla_policy_id) for row in rows if row.sla_policy_id}
    if not wanted:
        return {}
    policies = await fetch_rows(
        access.session,
        select(col(SlaPolicyRow.id), col(SlaPolicyRow.tenant_id), col(SlaPolicyRow.calendar_id)).where(
            col(SlaPolicyRow.id).in_(sorted({policy for _, policy in wanted}))
        ),
    )
    calendar_ids = sorted({calendar for _, _, calendar in policies if calendar})
    calendars: dict[str, tuple[str, BusinessCalendar]] = {}
    if calendar_ids:
        for row in await fetch_rows(
            access.session,
            select(
                col(CalendarRow.id),
                col(CalendarRow.tenant_id),
                col(CalendarRow.timezone),
                col(CalendarRow.hours),
                col(CalendarRow.holidays_country),
                col(CalendarRow.holidays_subdivision),
                col(CalendarRow.closed_days),
            ).where(col(CalendarRow.id).in_(calendar_ids)),
        ):
            calendars[row.id] = (row.tenant_id, calendar_of(row))
    found: dict[tuple[str, str], BusinessCalendar] = {}
    for policy, tenant, calendar in policies:
        kept = calendars.get(calendar or "")
        found[(tenant, policy)] = kept[1] if kept is not None and kept[0] == tenant else ALWAYS_OPEN
    return found


def calendar_of(row: Any) -> BusinessCalendar:
    """A calendar row's calendar, as the inbox's countdowns read it (one parser, cached)."""
    return parsed_calendar(
        row.timezone, row.hours, row.holidays_country, row.holidays_subdivision, row.closed_days
    )


def _histories(
    rows: Sequence[Any],
    events: dict[str, list[Event]],
    calendars: dict[tuple[str, str], BusinessCalendar],
) -> list[History]:
    return [
        History(
            conversation_id=row.id,
            tenant_id=row.tenant_id,
            platform=row.platform,
            author_id=row.author_id,
            opened_at=row.opened_at,
            team_id=row.team_id,
            owner_id=row.owner_id,
            resolved_at=row.resolved_at,
            calendar=calendars.get((row.tenant_id, row.sla_policy_id or ""), ALWAYS_OPEN),
            events=tuple(events.get(row.id, ())),
        )
        for row in rows
    ]


async def _earlier(access: Access, rows: Sequence[Any]) -> list[History]:
    """The same authors' other conversations with the same tenants: only who answered them is
    read (continuity)."""
    loaded = {row.id for row in rows}
    authors = {(row.tenant_id, row.platform, row.author_id) for row in rows}
    tenants = sorted({tenant for tenant, _, _ in authors})
    found: list[Any] = []
    for chunk in _chunks(author for _, _, author in authors):
        found += [
            row
            for row in (
                await fetch_rows(
                    access.session,
                    select(*_COLUMNS).where(
                        col(ConversationRow.author_id).in_(chunk), col(ConversationRow.tenant_id).in_(tenants)
                    ),
                )
            )
            if row.id not in loaded and (row.tenant_id, row.platform, row.author_id) in authors
        ]
    if not found:
        return []
    events = await _timelines(access, found, (Kind.assigned.value, Kind.responded.value))
    return _histories(found, events, {})


async def _names(access: Access, people: set[str]) -> dict[str, str]:
    """The names of these people the viewer may see (and their own)."""
    if not people:
        return {}
    see = access.scope(Action.see)
    me = access.viewer.person_id
    visible = or_(
        person_filter(see) if not see.empty else false(),
        col(PersonRow.id) == me if me is not None else false(),
    )
    names: dict[str, str] = {}
    for chunk in _chunks(people):
        for person_id, name in await fetch_rows(
            access.session,
            select(col(PersonRow.id), col(PersonRow.name)).where(col(PersonRow.id).in_(chunk), visible),
        ):
            names[person_id] = name
    return names


async def _team_labels(access: Access, teams: set[str], lens: Lens) -> dict[str, TeamLabel]:
    """Each team's slug, and its name where the viewer may see the team."""
    if not teams:
        return {}
    see = access.scope(Action.see)
    labels: dict[str, TeamLabel] = {}
    for chunk in _chunks(teams):
        for team_id, tenant_id, slug, name in await fetch_rows(
            access.session,
            select(col(TeamRow.id), col(TeamRow.tenant_id), col(TeamRow.slug), col(TeamRow.name)).where(
                col(TeamRow.id).in_(chunk)
            ),
        ):
            if lens.within is not None and tenant_id not in lens.within:
                continue
            seen = see.everything or tenant_id in see.tenants or team_id in see.teams
            labels[team_id] = TeamLabel(tenant_id=tenant_id, slug=slug, name=name if seen else None)
    return labels


def _who(histories: Iterable[History]) -> tuple[set[str], set[str]]:
    """Every person and team the histories name."""
    people: set[str] = set()
    teams: set[str] = set()
    for history in histories:
        people.update(p for p in (history.owner_id,) if p)
        teams.update(t for t in (history.team_id,) if t)
        for event in history.events:
            if event.kind is Kind.assigned:
                people.update(p for p in (event.owner_id,) if p)
                teams.update(t for t in (event.team_id,) if t)
    return people, teams


async def _narrowed(
    access: Access, lens: Lens, *, tenant: str | None, team: str | None, person: str | None
) -> Lens:
    """The lens narrowed to the tenant, team and person named: 404 for one beyond the viewer."""
    viewer = access.viewer
    session = access.session
    team_id = None
    if tenant is not None:
        known = viewer.tenants()
        if (known is not None and tenant not in known) or await session.get(TenantRow, tenant) is None:
            raise not_found("tenant")
    if team is not None:
        assert tenant is not None
        found = await fetch_rows(
            session,
            select(col(TeamRow.id)).where(col(TeamRow.tenant_id) == tenant, col(TeamRow.slug) == team),
        )
        if not found or not team_reachable(viewer, team_id=found[0].id, tenant_id=tenant):
            raise not_found("team")
        team_id = found[0].id
    if person is not None:
        me = viewer.person_id
        reach = person_filter(access.scope(Action.reports))
        found_person = await fetch_rows(
            session,
            select(col(PersonRow.id)).where(
                col(PersonRow.id) == person, or_(reach, col(PersonRow.id) == me) if me else reach
            ),
        )
        if not found_person:
            raise not_found("person")
    return replace(lens, tenant=tenant, team=team_id, person=person)


async def report_for(
    access: Access,
    *,
    tenant: str | None = None,
    team: str | None = None,
    person: str | None = None,
    since: str | datetime | None = None,
    until: str | datetime | None = None,
    bucket: Bucket = "day",
    now: datetime,
    tz: str = "UTC",
) -> Report:
    """The report the viewer may read, narrowed to a tenant, a team of it (its slug) and a person,
    from `since` to `until` (RFC 3339 text or dates, or aware datetimes; defaults: the last 7
    days in `tz` up to `now`), in buckets of a day or a week in `tz`.

    403 when the viewer's roles give no reports; 400 for a team without its tenant, a bad time,
    `until` not after `since`, a period over 366 days, an unknown bucket or timezone; 404 for a
    tenant, team or person beyond the viewer's reach."""
    lens = report_lens(access.viewer)
    if team is not None and tenant is None:
        raise bad("tenant", "team slugs are per tenant: name the tenant too (tenant=...)")
    if bucket not in BUCKETS:
        raise bad("bucket", f"bucket is one of {', '.join(BUCKETS)}")
    zone = zone_of(tz)
    start, end = period_of(since, until, zone=zone, now=now)
    lens = await _narrowed(access, lens, tenant=tenant, team=team, person=person)
    team_tenants: set[str] = set()
    if lens.teams:
        team_tenants = {
            row.tenant_id
            for row in await fetch_rows(
                access.session,
                select(col(TeamRow.tenant_id)).where(col(TeamRow.id).in_(sorted(lens.teams))),
            )
        }
    counted_until = max(start, min(end, now))
    rows = await fetch_rows(
        access.session,
        select(*_COLUMNS)
        .where(reach_clause(lens, team_tenants), period_clause(start, counted_until, lens))
        .order_by(col(ConversationRow.id)),
    )
    events = await _timelines(access, rows, KINDS)
    histories = _histories(rows, events, await _calendars(access, rows))
    earlier = await _earlier(access, rows)
    people, teams = _who(histories)
    facts = ReportFacts(
        conversations=histories,
        lens=lens,
        earlier=earlier,
        names=await _names(access, people),
        teams=await _team_labels(access, teams, lens),
    )
    return build_report(facts, start=start, end=end, now=now, bucket=bucket, timezone=tz)


# -- what the API answers ----------------------------------------------------------------------


class FiguresView(BaseModel):
    """The figures of one row. Times are business time in whole seconds; shares are fractions of 1
    (null when there is nothing to divide)."""

    responses: int = Field(description="Replies made (first and next ones).")
    first_responses: int = Field(description="Conversations whose first reply was made.")
    first_response_median_seconds: int | None = Field(
        description="Median first response time, business time (nearest rank)."
    )
    first_response_p90_seconds: int | None = Field(
        description="90th percentile first response time, business time (nearest rank)."
    )
    responses_with_deadline: int = Field(description="Replies made while a deadline was armed.")
    responses_in_time: int = Field(description="Of those, replies made at or before the due time.")
    attainment: float | None = Field(description="responses_in_time / responses_with_deadline.")
    breaches: int = Field(description="Deadlines that passed unanswered (breach alerts), each once.")
    escalations: int = Field(description="Escalation steps taken, each step of each deadline once.")
    acknowledgements: int = Field(description='Deadlines acknowledged ("I\'m on it").')
    returning_authors: int = Field(description="First answered conversations of authors answered before.")
    answered_by_same_person: int = Field(description="Of those, answered by who answered them last.")
    continuity: float | None = Field(description="answered_by_same_person / returning_authors.")
    open: int = Field(description="Conversations not resolved, at the end of the row's time.")
    awaiting: int = Field(description="Of those, awaiting a reply.")


class BucketView(FiguresView):
    start: datetime
    end: datetime
    label: str = Field(description="The day (a week: its Monday) in the report's timezone.")


class PersonLineView(FiguresView):
    person: str | None = Field(description="Who owned the conversations then (null: nobody, the queue).")
    name: str | None = Field(description="Their name, when the viewer may see it.")


class TeamLineView(FiguresView):
    tenant: str
    team: str | None = Field(description="The team's slug (null: no team held the conversations).")
    name: str | None = Field(description="The team's name, when the viewer may see it.")


class ReportView(BaseModel):
    """A report: figures over the period, per day or week, per person and per team."""

    since: datetime
    until: datetime = Field(description="Counted up to here: the end asked for, or now if earlier.")
    now: datetime
    bucket: Literal["day", "week"]
    timezone: str
    tenant: str | None
    team: str | None
    person: str | None
    summary: FiguresView
    days: list[BucketView] = Field(description="One row per bucket (day or week).")
    people: list[PersonLineView]
    teams: list[TeamLineView]
    csv: dict[str, str] = Field(description="Where each table is as CSV.")


def _figures(figures: Figures, open_: int, awaiting: int) -> dict[str, Any]:
    return {
        "responses": figures.responses,
        "first_responses": figures.first_responses,
        "first_response_median_seconds": seconds(figures.first_response_median),
        "first_response_p90_seconds": seconds(figures.first_response_p90),
        "responses_with_deadline": figures.responses_with_deadline,
        "responses_in_time": figures.responses_in_time,
        "attainment": figures.attainment,
        "breaches": figures.breaches,
        "escalations": figures.escalations,
        "acknowledgements": figures.acknowledgements,
        "returning_authors": figures.returning_authors,
        "answered_by_same_person": figures.answered_by_same_person,
        "continuity": figures.continuity,
        "open": open_,
        "awaiting": awaiting,
    }


def report_query(report: Report, *, tenant: str | None, team: str | None, person: str | None) -> str:
    """The query string that asks for this report again."""
    asked = {
        "tenant": tenant,
        "team": team,
        "person": person,
        "since": report.start.isoformat(),
        "until": report.until.isoformat(),
        "bucket": report.bucket,
        "tz": report.timezone,
    }
    return urlencode({key: value for key, value in asked.items() if value is not None})


def report_view(report: Report, *, tenant: str | None, team: str | None, person: str | None) -> ReportView:
    query = report_query(report, tenant=tenant, team=team, person=person)
    return ReportView(
        since=report.start,
        until=report.end,
        now=report.now,
        bucket=report.bucket,
        timezone=report.timezone,
        tenant=tenant,
        team=team,
        person=person,
        summary=FiguresView(**_figures(report.summary, report.open, report.awaiting)),
        days=[
            BucketView(
                start=line.start,
                end=line.end,
                label=line.label,
                **_figures(line.figures, line.open, line.awaiting),
            )
            for line in report.buckets
        ],
        people=[
            PersonLineView(
                person=line.person_id, name=line.name, **_figures(line.figures, line.open, line.awaiting)
            )
            for line in report.people
        ],
        teams=[
            TeamLineView(
                tenant=line.tenant_id,
                team=line.slug or line.team_id,
                name=line.name,
                **_figures(line.figures, line.open, line.awaiting),
            )
            for line in report.teams
        ],
        csv={table: f"/api/reports/{table}.csv?{query}" for table in TABLES},
    )


TenantParam = Annotated[str | None, Query(min_length=1, max_length=63, pattern=SLUG_PATTERN)]
TeamParam = Annotated[
    str | None,
    Query(min_length=1, max_length=63, pattern=SLUG_PATTERN, description="A team's slug, with tenant."),
]
PersonParam = Annotated[str | None, Query(min_length=1, max_length=63, pattern=SLUG_PATTERN)]
TimeParam = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=64,
        description="RFC 3339 with an offset (2026-11-20T09:00:00Z), or a date (2026-11-20) in tz.",
    ),
]
BucketParam = Annotated[
    Literal["day", "week"], Query(description="One row per day or per week (from Monday).")
]
TzParam = Annotated[
    str,
    Query(min_length=1, max_length=64, pattern=TZ_PATTERN, description="IANA timezone of days and dates."),
]
TableParam = Annotated[str, Path(min_length=1, max_length=32, description="days, people or teams.")]


@dataclass(frozen=True)
class Asked:
    """What a report is asked for, as the query string of either route gives it."""

    tenant: str | None
    team: str | None
    person: str | None
    since: str | None
    until: str | None
    bucket: Bucket
    tz: str


def asked(
    tenant: TenantParam = None,
    team: TeamParam = None,
    person: PersonParam = None,
    since: TimeParam = None,
    until: TimeParam = None,
    bucket: BucketParam = "day",
    tz: TzParam = "UTC",
) -> Asked:
    return Asked(tenant, team, person, since, until, bucket, tz)


async def report_asked(access: Access, query: Asked, now: datetime) -> Report:
    return await report_for(
        access,
        tenant=query.tenant,
        team=query.team,
        person=query.person,
        since=query.since,
        until=query.until,
        bucket=query.bucket,
        now=now,
        tz=query.tz,
    )


def reports_router() -> APIRouter:
    router = APIRouter(prefix="/api", tags=["reports"], responses={**ERRORS, **NOT_FOUND})

    @router.get("/reports", response_model=ReportView)
    async def reports(
        request: Request, access: Annotated[Access, Depends(access)], query: Annotated[Asked, Depends(asked)]
    ) -> ReportView:
        """First response times (median and p90, business time), SLA attainment, breaches,
        escalations, acknowledgements, open load and continuity over a period: in total, per
        day or week, per person and per team, of what the viewer's role lets them report on."""
        report = await report_asked(access, query, clock_of(request)())
        return report_view(report, tenant=query.tenant, team=query.team, person=query.person)

    @router.get(
        "/reports/{table}.csv",
        response_class=Response,
        responses={200: {"content": {"text/csv": {}}, "description": "The table as CSV."}},
    )
    async def report_table(
        table: TableParam,
        request: Request,
        access: Annotated[Access, Depends(access)],
        query: Annotated[Asked, Depends(asked)],
    ) -> Response:
        """One table of the report as CSV: `days`, `people` or `teams` (the same parameters)."""
        if table not in TABLES:
            raise bad("table", f"no table {table!r}: one of {', '.join(TABLES)}")
        report = await report_asked(access, query, clock_of(request)())
        name = f"stayhuman-{table}-{report.start:%Y%m%d}-{report.until:%Y%m%d}.csv"
        return Response(
            report_csv(report, table),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )

    return router
