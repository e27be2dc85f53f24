"""What people read: conversations, their history, people, teams, their own work, command outcomes.
What happens next comes live from services/api/live.py (`GET /api/stream`).

Every route takes `Access` and reads only through its scoped filters and lookups, so a
listing never shows another tenant's row and a conversation the viewer may not see answers
404 as if it did not exist. Listings page with an opaque cursor (the sort key and the id of
the last row shown): the order is total, so walking every page shows each row once, even
when rows share a due time.
"""

import base64
import binascii
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from pydantic import AwareDatetime
from sqlalchemy import ColumnElement, and_, func, or_, true
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.api.access import Action
from services.api.auth import clock_of
from services.api.history import TimelineEntry as HistoryEntry
from services.api.scope import Access, access
from services.api.security import safe_url
from services.api.views import (
    AlertView,
    Author,
    CommandOutcomeView,
    ConversationDetail,
    ConversationItem,
    ConversationPage,
    DeadlineView,
    DeliveryView,
    Message,
    PeopleList,
    PersonItem,
    PersonRef,
    Problem,
    TeamItem,
    TeamList,
    TeamOfPerson,
    TeamRef,
    TimelineEntry,
)
from services.router.assignment import Person
from shared.businesstime import BusinessCalendar
from shared.db.models import (
    AlertRow,
    CommandOutcomeRow,
    ConversationRow,
    DeadlineRow,
    DeliveryRow,
    InteractionRow,
    PersonRow,
    TeamMemberRow,
    TeamRow,
    TimelineRow,
)
from shared.ids import SLUG_PATTERN

TEXT_LIMIT = 280  # characters of the customer's last message a list shows
MESSAGE_LIMIT = 500  # the newest messages a conversation's page lists
TIMELINE_LIMIT = 500
COMMAND_ID_PATTERN = r"^[A-Za-z0-9_.:-]{8,64}$"

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem, "description": "A parameter is wrong; `field` names it."},
    401: {"model": Problem, "description": "Not signed in."},
    403: {"model": Problem, "description": "The viewer's role does not allow it."},
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": Problem, "description": "Nothing the viewer may see has this id."}
}

Limit = Annotated[int, Query(ge=1, le=200, description="Items per page.")]
CursorParam = Annotated[
    str | None,
    Query(min_length=1, max_length=400, description="`next_cursor` of the page before; none: the first."),
]
Slug = Annotated[str | None, Query(min_length=1, max_length=63, pattern=SLUG_PATTERN)]
CONVERSATION_ID_PATTERN = r"^[0-9a-f]{32}$"
ConversationId = Annotated[str, Path(pattern=CONVERSATION_ID_PATTERN, description="32 hex characters.")]


# -- cursors ---------------------------------------------------------------------------------


def encode_cursor(kind: str, *parts: Any) -> str:
    """An opaque position: base64url of the listing's kind and its sort key, unpadded."""
    raw = json.dumps([kind, *parts], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(kind: str, text: str, arity: int, *, field: str = "cursor") -> list[Any]:
    """The parts of a cursor this listing made, or 400 naming `field`."""
    try:
        data = json.loads(base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True))
    except (ValueError, binascii.Error, UnicodeError):
        data = None
    if not isinstance(data, list) or len(data) != arity + 1 or data[0] != kind:
        raise HTTPException(
            400,
            {
                "error": f"{field} is not a cursor of this listing: give next_cursor as it came",
                "field": field,
            },
        )
    return data[1:]


def _time_part(value: Any, field: str) -> datetime | None:
    if value is None:
        return None
    try:
        at = utc(datetime.fromisoformat(value)) if isinstance(value, str) else None
    except ValueError:
        at = None
    if at is None:
        raise HTTPException(400, {"error": f"{field} holds no valid time", "field": field})
    return at


def utc(at: datetime) -> datetime | None:
    """The time in UTC, or None when it has no offset or falls outside the calendar in UTC."""
    if at.tzinfo is None:
        return None
    try:
        return at.astimezone(UTC)
    except OverflowError:
        return None


def _id_part(value: Any, field: str) -> str:
    if not isinstance(value, str) or len(value) > 200:
        raise HTTPException(400, {"error": f"{field} holds no valid id", "field": field})
    return value


# -- shaping rows ----------------------------------------------------------------------------


def shorten(text: str, limit: int = TEXT_LIMIT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def is_overdue(row: ConversationRow, now: datetime) -> bool:
    return (
        row.state == "open" and row.awaiting_since is not None and row.due_at is not None and row.due_at < now
    )


def overdue_clause(now: datetime) -> ColumnElement[bool]:
    """`is_overdue` as SQL: awaiting an answer past the due time."""
    return and_(
        col(ConversationRow.state) == "open",
        col(ConversationRow.awaiting_since).is_not(None),
        col(ConversationRow.due_at) < now,
    )


def conversation_item(
    row: ConversationRow,
    team: tuple[str | None, str | None],
    owner_name: str | None,
    now: datetime,
) -> ConversationItem:
    slug, team_name = team
    return ConversationItem(
        id=row.id,
        tenant=row.tenant_id,
        account=row.account_id,
        platform=row.platform,
        state=row.state,
        team=TeamRef(slug=slug, name=team_name or slug) if slug else None,
        owner=PersonRef(id=row.owner_id, name=owner_name or row.owner_id) if row.owner_id else None,
        topic=row.topic,
        priority=row.priority,
        author=Author(id=row.author_id, name=row.author_name, handle=row.author_handle),
        last_inbound_text=shorten(row.last_inbound_text),
        last_inbound_url=safe_url(row.last_inbound_url),
        opened_at=row.opened_at,
        awaiting_since=row.awaiting_since,
        due_at=row.due_at,
        warn_at=row.warn_at,
        deadline_kind=row.deadline_kind,
        overdue=is_overdue(row, now),
    )


def outcome_view(command_id: str, row: CommandOutcomeRow | None) -> CommandOutcomeView:
    url = f"/api/commands/{command_id}"
    if row is None:
        return CommandOutcomeView(command_id=command_id, status="pending", outcome_url=url)
    return CommandOutcomeView(
        command_id=row.command_id,
        status="applied" if row.outcome == "applied" else "rejected",
        outcome_url=url,
        command_type=row.command_type,
        code=row.code or None,
        reason=row.reason,
        tenant=row.tenant_id or None,
        conversation_id=row.conversation_id,
        person_id=row.person_id,
        issued_by=row.issued_by,
        at=row.at,
    )


def timeline_entry(row: TimelineRow | HistoryEntry) -> TimelineEntry:
    """A timeline entry as the API shows it: a stored row, or one made from an event just read."""
    try:
        detail = json.loads(row.detail)
    except ValueError:
        detail = {}
    return TimelineEntry(
        id=row.id,
        seq=row.seq,
        tenant=row.tenant_id,
        conversation_id=row.conversation_id,
        person_id=row.person_id,
        at=row.at,
        kind=row.kind,
        actor=row.actor,
        summary=row.summary,
        detail=detail if isinstance(detail, dict) else {},
    )


def presence(row: PersonRow, now: datetime) -> tuple[bool | None, bool, bool | None]:
    """On shift, out of office, available: decided as the router decides (its `Person`)."""
    out_of_office = (
        (row.out_of_office_from, row.out_of_office_until)
        if row.out_of_office_from is not None and row.out_of_office_until is not None
        else None
    )
    person = Person(id=row.id, status=row.status, active=row.active, out_of_office=out_of_office)
    away = person.out_of_office_at(now)
    try:
        if row.working_hours:
            person.working_hours = BusinessCalendar.parse(
                timezone=row.timezone, hours=json.loads(row.working_hours)
            )
    except (ValueError, TypeError, KeyError, AttributeError):
        return None, away, None  # hours `apply` would have refused: not known
    return person.on_shift(now), away, person.available(now)


def now_of(request: Request) -> datetime:
    """The time now, by the app's clock (`auth.clock_of`)."""
    return clock_of(request)()


# -- queries ---------------------------------------------------------------------------------


def listing() -> Any:
    """Conversations with their team's slug and name and their owner's name."""
    return (
        select(ConversationRow, TeamRow.slug, TeamRow.name, PersonRow.name)
        .join(TeamRow, col(TeamRow.id) == col(ConversationRow.team_id), isouter=True)
        .join(PersonRow, col(PersonRow.id) == col(ConversationRow.owner_id), isouter=True)
    )


def by_due(query: Any, cursor: str | None) -> Any:
    """Ordered by due time (none last), then id; after the cursor's row."""
    due = col(ConversationRow.due_at)
    ident = col(ConversationRow.id)
    if cursor is not None:
        key, last = decode_cursor("due", cursor, 2)
        at, last_id = _time_part(key, "cursor"), _id_part(last, "cursor")
        if at is None:
            query = query.where(due.is_(None), ident > last_id)
        else:
            query = query.where(or_(due > at, and_(due == at, ident > last_id), due.is_(None)))
    return query.order_by(due.asc().nulls_last(), ident)


def due_cursor(row: ConversationRow) -> str:
    return encode_cursor("due", row.due_at.isoformat() if row.due_at else None, row.id)


def by_opened_desc(query: Any, cursor: str | None) -> Any:
    """Newest first (by when they opened), then id."""
    opened = col(ConversationRow.opened_at)
    ident = col(ConversationRow.id)
    if cursor is not None:
        key, last = decode_cursor("opened", cursor, 2)
        at, last_id = _time_part(key, "cursor"), _id_part(last, "cursor")
        if at is None:
            raise HTTPException(400, {"error": "cursor holds no valid time", "field": "cursor"})
        query = query.where(or_(opened < at, and_(opened == at, ident < last_id)))
    return query.order_by(opened.desc(), ident.desc())


def opened_cursor(row: ConversationRow) -> str:
    return encode_cursor("opened", row.opened_at.isoformat(), row.id)


async def page(
    session: AsyncSession, query: Any, limit: int, cursor_of: Any, now: datetime
) -> ConversationPage:
    rows = (await session.exec(query.limit(limit + 1))).all()
    items = [conversation_item(row, (slug, name), owner, now) for row, slug, name, owner in rows[:limit]]
    more = len(rows) > limit
    return ConversationPage(items=items, next_cursor=cursor_of(rows[limit - 1][0]) if more else None)


def team_of_tenant(tenant: str | None, team: str | None) -> ColumnElement[bool]:
    """The `team` filter: a team slug means something only within its tenant."""
    if team is None:
        return true()
    if tenant is None:
        raise HTTPException(
            400, {"error": "team slugs are per tenant: name the tenant too (tenant=...)", "field": "tenant"}
        )
    return col(ConversationRow.team_id).in_(
        select(TeamRow.id).where(TeamRow.tenant_id == tenant, TeamRow.slug == team)
    )


def serving(tenant: str | None, team: str | None) -> ColumnElement[bool]:
    """People filtered to those serving a tenant (any of its teams) or one of its teams."""
    if tenant is None and team is None:
        return true()
    if tenant is None:
        raise HTTPException(
            400, {"error": "team slugs are per tenant: name the tenant too (tenant=...)", "field": "tenant"}
        )
    members = (
        select(TeamMemberRow.person_id)
        .join(TeamRow, col(TeamRow.id) == col(TeamMemberRow.team_id))
        .where(TeamRow.tenant_id == tenant)
    )
    if team is not None:
        members = members.where(TeamRow.slug == team)
    return col(PersonRow.id).in_(members)


# -- routes ----------------------------------------------------------------------------------


async def conversation_detail(access: Access, row: ConversationRow, now: datetime) -> ConversationDetail:
    """A conversation the viewer may see (`access.conversation` gave `row`) with its messages,
    its timeline, its deadline, and the alerts it caused."""
    session = access.session
    team = (
        (await session.exec(select(TeamRow.slug, TeamRow.name).where(TeamRow.id == row.team_id))).first()
        if row.team_id
        else None
    )
    owner = await session.get(PersonRow, row.owner_id) if row.owner_id else None
    mine = (InteractionRow.conversation_id == row.id, InteractionRow.tenant_id == row.tenant_id)
    interactions = (
        await session.exec(
            select(InteractionRow)
            .where(*mine)
            .order_by(
                col(InteractionRow.created_at).desc(),
                col(InteractionRow.id).desc(),
            )
            .limit(MESSAGE_LIMIT + 1)
        )
    ).all()
    entries = (
        await session.exec(
            select(TimelineRow)
            .where(TimelineRow.conversation_id == row.id, TimelineRow.tenant_id == row.tenant_id)
            .order_by(col(TimelineRow.seq).desc(), col(TimelineRow.at).desc())
            .limit(TIMELINE_LIMIT + 1)
        )
    ).all()
    deadline = (
        await session.exec(
            select(DeadlineRow).where(
                DeadlineRow.conversation_id == row.id, DeadlineRow.tenant_id == row.tenant_id
            )
        )
    ).first()
    alerts = (
        await session.exec(
            select(AlertRow)
            .where(AlertRow.conversation_id == row.id, AlertRow.tenant_id == row.tenant_id)
            .order_by(col(AlertRow.created_at), col(AlertRow.id))
        )
    ).all()
    deliveries = (
        await session.exec(
            select(DeliveryRow)
            .where(DeliveryRow.conversation_id == row.id, DeliveryRow.tenant_id == row.tenant_id)
            .order_by(col(DeliveryRow.created_at), col(DeliveryRow.id))
        )
    ).all()
    return ConversationDetail(
        conversation=conversation_item(
            row, (team[0], team[1]) if team else (None, None), owner.name if owner else None, now
        ),
        why=row.assignment_reason,
        messages=messages_of(list(reversed(interactions[:MESSAGE_LIMIT]))),
        messages_complete=len(interactions) <= MESSAGE_LIMIT,
        timeline=[timeline_entry(entry) for entry in reversed(entries[:TIMELINE_LIMIT])],
        timeline_complete=len(entries) <= TIMELINE_LIMIT,
        deadline=DeadlineView(
            version=deadline.version,
            kind=deadline.kind,
            state=deadline.state,
            started_at=deadline.started_at,
            warn_at=deadline.warn_at,
            due_at=deadline.due_at,
            acknowledged_by=deadline.acknowledged_by,
            acknowledged_at=deadline.acknowledged_at,
        )
        if deadline
        else None,
        alerts=[
            AlertView(
                id=alert.id,
                deadline_version=alert.deadline_version,
                step=alert.step,
                channel=alert.channel,
                status=alert.status,
                attempts=alert.attempts,
                created_at=alert.created_at,
                sent_at=alert.sent_at,
            )
            for alert in alerts
        ],
        deliveries=[
            DeliveryView(
                id=delivery.id,
                alert_id=delivery.alert_id,
                deadline_version=delivery.deadline_version,
                step=delivery.step,
                channel=delivery.channel,
                person=delivery.person_id,
                status=delivery.status,
                attempts=delivery.attempts,
                created_at=delivery.created_at,
                sent_at=delivery.sent_at,
            )
            for delivery in deliveries
        ],
    )


async def people_list(access: Access, now: datetime, tenant: str | None, team: str | None) -> PeopleList:
    """People the viewer may see: their load, status, shift and absence now, and their teams."""
    session = access.session
    rows = (
        await session.exec(
            select(PersonRow).where(access.people(), serving(tenant, team)).order_by(col(PersonRow.id))
        )
    ).all()
    ids = [row.id for row in rows]
    teams: dict[str, list[TeamOfPerson]] = {person_id: [] for person_id in ids}
    for person_id, tenant_id, slug, name in (
        await session.exec(
            select(TeamMemberRow.person_id, TeamRow.tenant_id, TeamRow.slug, TeamRow.name)
            .join(TeamRow, col(TeamRow.id) == col(TeamMemberRow.team_id))
            .where(col(TeamMemberRow.person_id).in_(ids), access.teams())
            .order_by(col(TeamRow.tenant_id), col(TeamRow.slug))
        )
    ).all():
        teams[person_id].append(TeamOfPerson(tenant=tenant_id, slug=slug, name=name))
    owned = dict(
        (
            await session.exec(
                select(ConversationRow.owner_id, func.count())
                .where(
                    col(ConversationRow.owner_id).in_(ids),
                    ConversationRow.state != "resolved",
                    access.conversations(),
                )
                .group_by(col(ConversationRow.owner_id))
            )
        ).all()
    )
    items = []
    for row in rows:
        on_shift, away, available = presence(row, now)
        items.append(
            PersonItem(
                id=row.id,
                name=row.name,
                active=row.active,
                status=row.status,
                load=row.load,
                capacity=row.capacity,
                on_shift=on_shift,
                out_of_office=away,
                out_of_office_until=row.out_of_office_until if away else None,
                available=available,
                teams=teams[row.id],
                open_owned=int(owned.get(row.id, 0)),
            )
        )
    return PeopleList(items=items)


async def team_list(access: Access, now: datetime, tenant: str | None) -> TeamList:
    """Teams the viewer may see: lead, members, their queue, what is overdue, who waits longest."""
    session = access.session
    query = select(TeamRow).where(access.teams()).order_by(col(TeamRow.tenant_id), col(TeamRow.slug))
    if tenant is not None:
        query = query.where(TeamRow.tenant_id == tenant)
    rows = (await session.exec(query)).all()
    ids = [row.id for row in rows]
    names = dict(
        (
            await session.exec(
                select(PersonRow.id, PersonRow.name).where(
                    col(PersonRow.id).in_(sorted({row.lead_id for row in rows if row.lead_id}))
                )
            )
        ).all()
    )
    members: dict[str, list[PersonRef]] = {team_id: [] for team_id in ids}
    for team_id, person_id, name in (
        await session.exec(
            select(TeamMemberRow.team_id, PersonRow.id, PersonRow.name)
            .join(PersonRow, col(PersonRow.id) == col(TeamMemberRow.person_id))
            .where(col(TeamMemberRow.team_id).in_(ids), access.people())
            .order_by(col(PersonRow.id))
        )
    ).all():
        members[team_id].append(PersonRef(id=person_id, name=name))
    queued = and_(col(ConversationRow.state) == "open", col(ConversationRow.owner_id).is_(None))
    counts = {
        team_id: (queue, late, oldest)
        for team_id, queue, late, oldest in (
            await session.exec(
                select(
                    ConversationRow.team_id,
                    func.count().filter(queued),
                    func.count().filter(overdue_clause(now)),
                    func.min(ConversationRow.awaiting_since).filter(queued),
                )
                .where(col(ConversationRow.team_id).in_(ids), access.conversations())
                .group_by(col(ConversationRow.team_id))
            )
        ).all()
    }
    items = []
    for row in rows:
        queue, late, oldest = counts.get(row.id, (0, 0, None))
        items.append(
            TeamItem(
                tenant=row.tenant_id,
                slug=row.slug,
                name=row.name,
                lead=PersonRef(id=row.lead_id, name=names.get(row.lead_id, row.lead_id))
                if row.lead_id
                else None,
                members=members[row.id],
                queue=int(queue or 0),
                overdue=int(late or 0),
                oldest_waiting=oldest,
            )
        )
    return TeamList(items=items)


def reads_router() -> APIRouter:
    router = APIRouter(prefix="/api", tags=["read"], responses=ERRORS)

    @router.get("/conversations", response_model=ConversationPage)
    async def conversations(
        request: Request,
        access: Annotated[Access, Depends(access)],
        tenant: Slug = None,
        team: Annotated[
            str | None, Query(min_length=1, max_length=63, pattern=SLUG_PATTERN, description="With tenant.")
        ] = None,
        owner: Slug = None,
        platform: Annotated[str | None, Query(min_length=1, max_length=32, pattern=SLUG_PATTERN)] = None,
        topic: Slug = None,
        state: Literal["open", "paused", "responded", "resolved"] | None = None,
        overdue: bool | None = None,
        due_before: Annotated[AwareDatetime | None, Query(description="RFC 3339 with an offset.")] = None,
        q: Annotated[
            str | None,
            Query(
                min_length=1,
                max_length=200,
                pattern=r"^[^\x00]*$",
                description="Words in the text or author.",
            ),
        ] = None,
        cursor: CursorParam = None,
        limit: Limit = 50,
    ) -> ConversationPage:
        """Conversations the viewer may see, soonest due first (those with no deadline last)."""
        now = now_of(request)
        query = listing().where(access.conversations(), team_of_tenant(tenant, team))
        if tenant is not None:
            query = query.where(ConversationRow.tenant_id == tenant)
        if owner is not None:
            query = query.where(ConversationRow.owner_id == owner)
        if platform is not None:
            query = query.where(ConversationRow.platform == platform)
        if topic is not None:
            query = query.where(ConversationRow.topic == topic)
        if state is not None:
            query = query.where(ConversationRow.state == state)
        if overdue is not None:
            query = query.where(overdue_clause(now) if overdue else ~overdue_clause(now))
        if due_before is not None:
            before = utc(due_before)
            if before is None:
                raise HTTPException(
                    400, {"error": "due_before is outside the calendar in UTC", "field": "due_before"}
                )
            query = query.where(col(ConversationRow.due_at) < before)
        if q is not None:
            query = query.where(
                or_(
                    col(ConversationRow.last_inbound_text).icontains(q, autoescape=True),
                    col(ConversationRow.author_name).icontains(q, autoescape=True),
                    col(ConversationRow.author_handle).icontains(q, autoescape=True),
                )
            )
        return await page(access.session, by_due(query, cursor), limit, due_cursor, now)

    @router.get("/conversations/{conversation_id}", response_model=ConversationDetail, responses=NOT_FOUND)
    async def conversation(
        conversation_id: ConversationId, request: Request, access: Annotated[Access, Depends(access)]
    ) -> ConversationDetail:
        """A conversation with its messages, its timeline, its deadline, and the alerts it caused."""
        return await conversation_detail(access, await access.conversation(conversation_id), now_of(request))

    @router.get(
        "/conversations/{conversation_id}/author-history",
        response_model=ConversationPage,
        responses=NOT_FOUND,
    )
    async def author_history(
        conversation_id: ConversationId,
        request: Request,
        access: Annotated[Access, Depends(access)],
        cursor: CursorParam = None,
        limit: Limit = 50,
    ) -> ConversationPage:
        """The same author's earlier conversations with the same tenant (on the same platform),
        newest first."""
        row = await access.conversation(conversation_id)
        query = listing().where(
            access.conversations(),
            ConversationRow.tenant_id == row.tenant_id,
            ConversationRow.platform == row.platform,
            ConversationRow.author_id == row.author_id,
            ConversationRow.id != row.id,
            col(ConversationRow.opened_at) <= row.opened_at,
        )
        return await page(
            access.session, by_opened_desc(query, cursor), limit, opened_cursor, now_of(request)
        )

    @router.get("/people", response_model=PeopleList)
    async def people(
        request: Request, access: Annotated[Access, Depends(access)], tenant: Slug = None, team: Slug = None
    ) -> PeopleList:
        """People the viewer may see: their load, status, shift and absence now, and their teams."""
        return await people_list(access, now_of(request), tenant, team)

    @router.get("/teams", response_model=TeamList)
    async def teams(
        request: Request, access: Annotated[Access, Depends(access)], tenant: Slug = None
    ) -> TeamList:
        """Teams the viewer may see: lead, members, their queue, what is overdue, who waits longest."""
        return await team_list(access, now_of(request), tenant)

    @router.get("/my-work", response_model=ConversationPage)
    async def my_work(
        request: Request,
        access: Annotated[Access, Depends(access)],
        cursor: CursorParam = None,
        limit: Limit = 50,
    ) -> ConversationPage:
        """Every conversation the signed-in person owns and has not resolved, in every tenant they
        serve, soonest due first."""
        me = access.viewer.person_id
        if me is None:
            raise HTTPException(
                403,
                {
                    "error": "my-work lists what a signed-in person owns, and a token is no person: "
                    "ask /api/conversations?owner=<person id> instead",
                    "field": "auth",
                },
            )
        query = listing().where(
            access.conversations(), ConversationRow.owner_id == me, ConversationRow.state != "resolved"
        )
        return await page(access.session, by_due(query, cursor), limit, due_cursor, now_of(request))

    @router.get(
        "/commands/{command_id}",
        response_model=CommandOutcomeView,
        response_model_exclude_none=True,
        responses=NOT_FOUND,
    )
    async def command(
        command_id: Annotated[str, Path(pattern=COMMAND_ID_PATTERN)],
        access: Annotated[Access, Depends(access)],
    ) -> CommandOutcomeView:
        """What became of a command: pending until the service that applies it answers."""
        row = await access.session.get(CommandOutcomeRow, command_id)
        if row is not None and not await may_see_outcome(access, row):
            raise HTTPException(404, {"error": "no command", "field": "command_id"})
        return outcome_view(command_id, row)

    return router


async def may_see_outcome(access: Access, row: CommandOutcomeRow) -> bool:
    """An outcome is seen by who may see what its command was about."""
    try:
        if row.conversation_id is not None:
            await access.conversation(row.conversation_id)
        elif row.person_id is not None:
            if row.person_id != access.viewer.person_id:
                await access.person(row.person_id)
        elif row.tenant_id:
            access.tenant(row.tenant_id, Action.read_config)
        else:
            return False
    except HTTPException:
        return False
    return True


def messages_of(rows: Sequence[InteractionRow]) -> list[Message]:
    """Each message once, as last edited (its newest version received), where it first appeared."""
    newest: dict[str, InteractionRow] = {}
    versions: dict[str, int] = {}
    retracted: dict[str, datetime] = {}
    for row in rows:
        key = row.external_id
        versions[key] = versions.get(key, 0) + 1
        kept = newest.get(key)
        if kept is None or (row.received_at, row.id) > (kept.received_at, kept.id):
            newest[key] = row
        if row.retracted_at is not None:
            retracted[key] = min(row.retracted_at, retracted.get(key, row.retracted_at))
    return [
        Message(
            id=row.id,
            direction=row.direction,
            kind=row.kind,
            author_id=row.author_id,
            author_name=row.author_name,
            text=row.text,
            url=safe_url(row.url),
            created_at=row.created_at,
            edited=versions[key] > 1,
            retracted=key in retracted,
            retracted_at=retracted.get(key),
            sent_by=row.sent_by,
        )
        for key, row in newest.items()
    ]
