"""The inbox's pages: HTML made on the server from the same scoped reads as the JSON API.

Every page takes `Access` like every route of the API, so a page shows exactly what the
JSON answers would, and a conversation outside the viewer's reach is "not found" here too.
A person who is not signed in is sent to the sign-in page and back. The pages load one
script of their own (`static/inbox.js`, no framework, from this service, no CDN); actions
post to the JSON API with the session's CSRF token, and live updates come from
`GET /api/stream`, which refreshes the part of the page they concern. A conversation's page
says what the platform's rules allow before anything is typed, and its reply box posts to
`POST /api/conversations/{id}/replies` (services/api/replies.py); a live refresh keeps the draft.
"""

import hashlib
import json
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

import jinja2
from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from pydantic import BeforeValidator, StringConstraints
from sqlmodel import col, select

from services.api.access import Action, Target
from services.api.auth import SESSION_COOKIE, authenticate, settings_of
from services.api.charts import first_response_chart, open_load_chart
from services.api.config_reads import configuration_of
from services.api.countdown import Countdown, calendar_of, countdown, duration_text
from services.api.reads import (
    ConversationId,
    CursorParam,
    by_due,
    by_opened_desc,
    conversation_detail,
    conversation_item,
    due_cursor,
    listing,
    now_of,
    overdue_clause,
    people_list,
    team_list,
)
from services.api.replies import reply_list
from services.api.report_reads import report_for, report_view
from services.api.scope import Access, access, not_found
from services.api.views import ConversationItem, DeadlineView, Message, ReplyView
from shared import ids
from shared.db.models import CalendarRow, ConversationRow, PersonRow, SlaPolicyRow, TeamMemberRow, TenantRow
from shared.ids import SLUG_PATTERN

HERE = Path(__file__).parent
STATIC = HERE / "static"
PAGE_SIZE = 50
QUEUE_SIZE = 20
BREACH_HORIZON = timedelta(hours=1)
HISTORY_SIZE = 10

# A page runs only its own scripts, styles and images, talks only to this service, and is
# never framed. The charts are inline SVG, which needs no source of its own.
PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)

templates = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"),
    autoescape=jinja2.select_autoescape(["html"]),
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def _asset_version() -> str:
    digest = hashlib.sha256()
    for path in sorted(STATIC.glob("*")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


ASSETS = _asset_version()


def _stamp(at: datetime | None) -> str:
    return at.isoformat() if at else ""


def _clock_time(at: datetime | None) -> str:
    return at.strftime("%Y-%m-%d %H:%M UTC") if at else ""


templates.filters["iso"] = _stamp
templates.filters["when"] = _clock_time
templates.filters["duration"] = duration_text
templates.globals["assets"] = ASSETS


# -- answering as a page ----------------------------------------------------------------------


class PageRoute(APIRoute):
    """A route that answers HTML: a person not signed in is sent to sign in, and any error the
    request causes is a page saying what went wrong, with the status the API would give."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def answer(request: Request) -> Response:
            try:
                response = await handler(request)
            except HTTPException as error:
                if error.status_code == 401:
                    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                    return RedirectResponse(f"/login?{urlencode({'next': target})}", status_code=303)
                detail = error.detail if isinstance(error.detail, dict) else {"error": str(error.detail)}
                return error_page(request, error.status_code, str(detail.get("error", "")))
            except RequestValidationError as error:
                fields = ", ".join(str(item["loc"][-1]) for item in error.errors())
                return error_page(request, 400, f"this address has a wrong parameter: {fields}")
            response.headers.setdefault("content-security-policy", PAGE_CSP)
            response.headers.setdefault("cache-control", "no-store")
            return response

        return answer


TITLES = {400: "Wrong address", 403: "Not yours to see", 404: "Not found", 409: "Not now"}


def error_page(request: Request, status: int, message: str) -> HTMLResponse:
    body = templates.get_template("error.html").render(
        title=TITLES.get(status, "Something went wrong"),
        status=status,
        message=message,
        me=None,
        nav=[],
        csrf="",
        page="error",
    )
    return HTMLResponse(body, status_code=status, headers={"content-security-policy": PAGE_CSP})


def render(name: str, status: int = 200, **context: Any) -> HTMLResponse:
    return HTMLResponse(
        templates.get_template(name).render(**context), status_code=status, headers={"vary": "HX-Request"}
    )


def part_or_page(request: Request, part: str, page: str) -> str:
    """The part of a page that changes, when the page's script asks for it (a live refresh sends
    `HX-Request: true`, as htmx would), else the whole page."""
    return part if request.headers.get("hx-request") == "true" else page


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a path of this site only (never //elsewhere or a URL)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/inbox"
    if any(ord(ch) < 0x20 for ch in target):
        return "/inbox"
    return target


# -- what every page shows ------------------------------------------------------------------


@dataclass(frozen=True)
class Me:
    person_id: str | None
    name: str
    status: str  # available, away or offline; "" for a token
    roles: dict[str, list[str]]
    tenants: list[tuple[str, str]]  # (id, name) of every tenant they have a role in


async def me_of(access: Access) -> Me:
    viewer = access.viewer
    name, status = viewer.label, ""
    if viewer.person_id:
        person = await access.session.get(PersonRow, viewer.person_id)
        name = person.name if person else viewer.person_id
        works = bool(viewer.member_of or viewer.leads)  # a status means something to who takes work
        status = person.status if person and works else ""
    visible = viewer.tenants()
    query = select(TenantRow.id, TenantRow.name).order_by(col(TenantRow.id))
    if visible is not None:
        query = query.where(col(TenantRow.id).in_(sorted(visible)))
    tenants = [
        (tenant_id, tenant_name) for tenant_id, tenant_name in (await access.session.exec(query)).all()
    ]
    roles = {role.value: sorted(held) for role, held in viewer.roles().items()}
    return Me(viewer.person_id, name, status, roles, tenants)


def navigation(access: Access) -> list[tuple[str, str, str]]:
    """The pages the viewer's roles open: (key, label, path)."""
    viewer = access.viewer
    links: list[tuple[str, str, str]] = []
    if not viewer.scope(Action.see).empty:
        links.append(("work", "My work", "/inbox"))
        links.append(("board", "Board", "/inbox/board"))
    if not viewer.scope(Action.reports).empty:
        links.append(("reports", "Reports", "/inbox/reports"))
    if not viewer.scope(Action.read_config).empty:
        links.append(("config", "Configuration", "/inbox/configuration"))
    return links


async def frame(access: Access, page: str) -> dict[str, Any]:
    """What the layout needs: who is signed in, the navigation, the CSRF token for actions."""
    return {
        "me": await me_of(access),
        "nav": navigation(access),
        "csrf": access.principal.csrf_token or "",
        "page": page,
    }


def visible_tenant(access: Access, tenant: str) -> None:
    """A tenant filter names a tenant the viewer has a role in, else 404 (as if none existed)."""
    visible = access.viewer.tenants()
    if visible is not None and tenant not in visible:
        raise not_found("tenant")


# -- rows with their countdowns ---------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    item: ConversationItem
    countdown: Countdown
    tenant_name: str
    vip: bool


async def calendars_of(access: Access, rows: Sequence[ConversationRow]) -> dict[str, Any]:
    """The business calendar of each SLA policy the rows name (a policy with none: always open)."""
    policies = sorted({row.sla_policy_id for row in rows if row.sla_policy_id})
    if not policies:
        return {}
    found = (
        await access.session.exec(
            select(  # type: ignore[call-overload]
                SlaPolicyRow.id,
                CalendarRow.timezone,
                CalendarRow.hours,
                CalendarRow.holidays_country,
                CalendarRow.holidays_subdivision,
                CalendarRow.closed_days,
            )
            .join(CalendarRow, col(CalendarRow.id) == col(SlaPolicyRow.calendar_id), isouter=True)
            .where(col(SlaPolicyRow.id).in_(policies))
        )
    ).all()
    return {
        policy: calendar_of(zone, hours, country, part, closed)
        for policy, zone, hours, country, part, closed in found
    }


def countdown_of(row: ConversationRow, calendars: dict[str, Any], now: datetime) -> Countdown:
    return countdown(
        state=row.state,
        awaiting=row.awaiting_since is not None,
        due_at=row.due_at,
        paused_remaining_seconds=row.paused_remaining_seconds,
        calendar=calendars.get(row.sla_policy_id or "", calendar_of(None, None)),
        now=now,
    )


async def tenant_facts(access: Access, tenant_ids: set[str]) -> dict[str, tuple[str, set[str]]]:
    """Each tenant's name and VIP list (author ids and handles)."""
    if not tenant_ids:
        return {}
    found = (
        await access.session.exec(
            select(TenantRow.id, TenantRow.name, TenantRow.vip).where(
                col(TenantRow.id).in_(sorted(tenant_ids))
            )
        )
    ).all()
    facts: dict[str, tuple[str, set[str]]] = {}
    for tenant_id, name, vip in found:
        try:
            listed = {str(entry) for entry in json.loads(vip or "[]")}
        except ValueError:
            listed = set()
        facts[tenant_id] = (name, listed)
    return facts


async def rows_of(access: Access, found: Sequence[Any], now: datetime) -> list[Row]:
    conversations = [entry[0] for entry in found]
    calendars = await calendars_of(access, conversations)
    tenants = await tenant_facts(access, {row.tenant_id for row in conversations})
    rows = []
    for row, slug, team_name, owner_name in found:
        name, vip = tenants.get(row.tenant_id, (row.tenant_id, set()))
        rows.append(
            Row(
                item=conversation_item(row, (slug, team_name), owner_name, now),
                countdown=countdown_of(row, calendars, now),
                tenant_name=name,
                vip=row.author_id in vip or (bool(row.author_handle) and row.author_handle in vip),
            )
        )
    return rows


# -- My work ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkFilters:
    tenant: str | None
    priority: str | None
    overdue: bool

    def query(self, **extra: str | None) -> str:
        given = {"tenant": self.tenant, "priority": self.priority, "overdue": "1" if self.overdue else None}
        given.update(extra)
        return urlencode({key: value for key, value in given.items() if value})


async def my_work_lists(
    access: Access, filters: WorkFilters, cursor: str | None, now: datetime
) -> dict[str, Any]:
    """The conversations the signed-in person owns and has not resolved, soonest due first,
    and their teams' queue (open, nobody owns it yet), which they may claim."""
    me = access.viewer.person_id

    def narrowed(query: Any) -> Any:
        if filters.tenant:
            query = query.where(ConversationRow.tenant_id == filters.tenant)
        if filters.priority:
            query = query.where(ConversationRow.priority == filters.priority)
        if filters.overdue:
            query = query.where(overdue_clause(now))
        return query

    mine: list[Row] = []
    more: str | None = None
    if me is not None:
        query = narrowed(
            listing().where(
                access.conversations(), ConversationRow.owner_id == me, ConversationRow.state != "resolved"
            )
        )
        found = (await access.session.exec(by_due(query, cursor).limit(PAGE_SIZE + 1))).all()
        mine = await rows_of(access, found[:PAGE_SIZE], now)
        more = due_cursor(found[PAGE_SIZE - 1][0]) if len(found) > PAGE_SIZE else None
    teams = sorted({team.id for team in access.viewer.member_of} | {team.id for team in access.viewer.leads})
    queue: list[Row] = []
    if teams:
        query = narrowed(
            listing().where(
                access.conversations(),
                col(ConversationRow.team_id).in_(teams),
                col(ConversationRow.owner_id).is_(None),
                ConversationRow.state == "open",
            )
        )
        found = (await access.session.exec(by_due(query, None).limit(QUEUE_SIZE))).all()
        queue = await rows_of(access, found, now)
    return {"mine": mine, "queue": queue, "next_cursor": more, "filters": filters}


# -- a conversation ---------------------------------------------------------------------------


@dataclass(frozen=True)
class EarlierConversation:
    item: ConversationItem
    answered_by: str | None
    answered_after: float | None  # seconds from opening to its first answer, when answered


async def author_card(access: Access, row: ConversationRow, now: datetime) -> dict[str, Any]:
    """Who wrote: the author's earlier conversations with this tenant, who answered and how fast,
    their language, followers, and whether the tenant counts them as a VIP."""
    query = listing().where(
        access.conversations(),
        ConversationRow.tenant_id == row.tenant_id,
        ConversationRow.platform == row.platform,
        ConversationRow.author_id == row.author_id,
        ConversationRow.id != row.id,
        col(ConversationRow.opened_at) <= row.opened_at,
    )
    found = (await access.session.exec(by_opened_desc(query, None).limit(HISTORY_SIZE))).all()
    earlier = [
        EarlierConversation(
            item=conversation_item(other, (slug, team_name), owner_name, now),
            answered_by=owner_name if other.responded_at else None,
            answered_after=(other.responded_at - other.opened_at).total_seconds()
            if other.responded_at and other.responded_at >= other.opened_at
            else None,
        )
        for other, slug, team_name, owner_name in found
    ]
    facts = await tenant_facts(access, {row.tenant_id})
    _, vip = facts.get(row.tenant_id, ("", set()))
    return {
        "earlier": earlier,
        "language": row.language,
        "followers": row.author_followers,
        "verified": row.author_verified,
        "vip": row.author_id in vip or (bool(row.author_handle) and row.author_handle in vip),
    }


def actions_for(access: Access, row: ConversationRow, deadline: DeadlineView | None) -> list[dict[str, str]]:
    """The actions the roles table gives the viewer on this conversation, in the state it is in."""
    target = Target(tenant_id=row.tenant_id, team_id=row.team_id, owner_id=row.owner_id)
    viewer = access.viewer
    acts = viewer.may(Action.act, target)
    actions: list[dict[str, str]] = []
    me = viewer.person_id
    if row.state == "resolved":
        return actions
    if acts and me is not None and row.owner_id != me:
        actions.append({"verb": "claim", "label": "Claim", "key": "c"})
    if acts and row.state == "open" and row.awaiting_since is not None:
        actions.append({"verb": "mark-responded", "label": "Mark responded", "key": "r"})
    if acts and me is not None and deadline is not None and deadline.state == "alerted":
        if deadline.acknowledged_by is None:  # "I'm on it": stops the escalation
            actions.append({"verb": "acknowledge", "label": "Acknowledge: I'm on it", "key": "y"})
    if acts and row.state == "open":
        actions.append({"verb": "pause", "label": "Pause", "key": "p", "ask": "Why pause it?"})
    if acts and row.state == "paused":
        actions.append({"verb": "resume", "label": "Resume", "key": "u"})
    if viewer.may(Action.reassign, target):
        actions.append({"verb": "reassign", "label": "Reassign", "key": "a", "ask": "Give it to"})
    if acts:
        actions.append(
            {"verb": "resolve", "label": "Resolve", "key": "x", "ask": "Why resolve it? (optional)"}
        )
    return [{"ask": "", **action} for action in actions]


async def reassign_choices(access: Access, row: ConversationRow) -> list[tuple[str, str]]:
    """Whom the viewer may give this conversation to: the people of its team they may reassign to."""
    if row.team_id is None or not access.viewer.may(
        Action.reassign, Target(tenant_id=row.tenant_id, team_id=row.team_id, owner_id=row.owner_id)
    ):
        return []
    found = (
        await access.session.exec(
            select(PersonRow.id, PersonRow.name)
            .join(TeamMemberRow, col(TeamMemberRow.person_id) == col(PersonRow.id))
            .where(TeamMemberRow.team_id == row.team_id, access.people(Action.reassign))
            .order_by(col(PersonRow.name))
        )
    ).all()
    return [(person_id, name) for person_id, name in found if person_id != row.owner_id]


@dataclass(frozen=True)
class ThreadItem:
    """One entry of the thread: a message (with the inbox's reply it is the echo of, if any), or
    a reply written in the inbox that is not in the thread yet (sending, failed, in doubt)."""

    at: datetime
    message: Message | None
    reply: ReplyView | None


def thread_of(
    row: ConversationRow, messages: Sequence[Message], replies: Sequence[ReplyView]
) -> list[ThreadItem]:
    """Messages and replies in the order they were written. A sent reply shows once: as the
    message the platform echoed under its id, once that came, with who wrote it."""
    echoes = {
        ids.interaction_id(
            tenant_id=row.tenant_id, account_id=row.account_id, external_id=reply.platform_id, edit_version=0
        ): reply
        for reply in replies
        if reply.state == "sent" and reply.platform_id
    }
    items = [ThreadItem(message.created_at, message, echoes.get(message.id)) for message in messages]
    echoed = {item.reply.id for item in items if item.reply is not None}
    items += [
        ThreadItem(reply.sent_at or reply.requested_at, None, reply)
        for reply in replies
        if reply.id not in echoed
    ]
    return sorted(items, key=lambda item: item.at)


async def conversation_page_context(
    access: Access, conversation_id: str, now: datetime, youtube_units: int
) -> dict[str, Any]:
    row = await access.conversation(conversation_id)
    detail = await conversation_detail(access, row, now)
    calendars = await calendars_of(access, [row])
    replies = await reply_list(access, row, now, youtube_units)
    return {
        "row": row,
        "detail": detail,
        "replies": replies,
        "thread": thread_of(row, detail.messages, replies.items),
        "countdown": countdown_of(row, calendars, now),
        "author": await author_card(access, row, now),
        "actions": actions_for(access, row, detail.deadline),
        "choices": await reassign_choices(access, row),
        "tenant_name": (await tenant_facts(access, {row.tenant_id})).get(row.tenant_id, (row.tenant_id,))[0],
    }


# -- the board --------------------------------------------------------------------------------


async def board_context(access: Access, tenant: str | None, now: datetime) -> dict[str, Any]:
    """Per tenant: each person's load against capacity, status and shift; each team's queue;
    what breaches within the next hour (and what already has)."""
    if tenant is not None:
        visible_tenant(access, tenant)
    people = await people_list(access, now, tenant, None)
    teams = await team_list(access, now, tenant)
    soon = listing().where(
        access.conversations(),
        ConversationRow.state == "open",
        col(ConversationRow.awaiting_since).is_not(None),
        col(ConversationRow.due_at) < now + BREACH_HORIZON,
    )
    if tenant is not None:
        soon = soon.where(ConversationRow.tenant_id == tenant)
    found = (await access.session.exec(by_due(soon, None).limit(PAGE_SIZE))).all()
    breaching = await rows_of(access, found, now)
    by_tenant: dict[str, dict[str, Any]] = {}
    for team in teams.items:
        by_tenant.setdefault(team.tenant, {"teams": [], "people": {}, "breaching": []})["teams"].append(team)
    for person in people.items:
        for serves in person.teams:
            by_tenant.setdefault(serves.tenant, {"teams": [], "people": {}, "breaching": []})["people"][
                person.id
            ] = person
    for entry in breaching:
        by_tenant.setdefault(entry.item.tenant, {"teams": [], "people": {}, "breaching": []})[
            "breaching"
        ].append(entry)
    names = await tenant_facts(access, set(by_tenant))
    return {
        "tenants": [
            {"id": tenant_id, "name": names.get(tenant_id, (tenant_id,))[0], **parts}
            for tenant_id, parts in sorted(by_tenant.items())
        ],
        "tenant": tenant,
        "horizon": BREACH_HORIZON,
    }


async def report_choices(
    access: Access, tenant: str | None, now: datetime
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """The teams (slug, name) and people (id, name) of a tenant the reports form offers: those
    the viewer may see (a client viewer sees none: their reports are per tenant)."""
    if tenant is None:
        return [], []
    try:
        teams = [(team.slug, team.name) for team in (await team_list(access, now, tenant)).items]
        people = [(person.id, person.name) for person in (await people_list(access, now, tenant, None)).items]
    except HTTPException:
        return [], []
    return teams, people


# -- routes -----------------------------------------------------------------------------------


def _blank(value: object) -> object:
    """An empty form field is a filter not given (a GET form submits every field)."""
    return value or None


SlugText = Annotated[str, StringConstraints(min_length=1, max_length=63, pattern=SLUG_PATTERN)]
Slug = Annotated[SlugText | None, BeforeValidator(_blank), Query()]
Priority = Annotated[
    Annotated[str, StringConstraints(min_length=1, max_length=16, pattern=SLUG_PATTERN)] | None,
    BeforeValidator(_blank),
    Query(),
]
# An empty form field means "not given": the reports page's filters submit them empty.
ReportTime = Annotated[
    Annotated[str, StringConstraints(max_length=64)] | None, BeforeValidator(_blank), Query()
]
OverdueOnly = Annotated[Literal["1", "0", ""] | None, Query()]


def pages_router() -> APIRouter:
    router = APIRouter(route_class=PageRoute, include_in_schema=False)

    @router.get("/", response_class=HTMLResponse)
    async def home() -> Response:
        return RedirectResponse("/inbox", status_code=303)

    @router.get("/login", response_class=HTMLResponse)
    async def login(request: Request, next: Annotated[str | None, Query(max_length=2000)] = None) -> Response:
        target = safe_next(next)
        if request.cookies.get(SESSION_COOKIE):
            async with request.app.state.sessions() as session:
                if await authenticate(request, session) is not None:
                    return RedirectResponse(target, status_code=303)
        return render("login.html", next=target, me=None, nav=[], csrf="", page="login")

    @router.get("/inbox", response_class=HTMLResponse)
    async def my_work(
        request: Request,
        access: Annotated[Access, Depends(access)],
        tenant: Slug = None,
        priority: Priority = None,
        overdue: OverdueOnly = None,
        cursor: CursorParam = None,
    ) -> Response:
        if access.viewer.scope(Action.see).empty and not access.viewer.scope(Action.reports).empty:
            return RedirectResponse("/inbox/reports", status_code=303)  # a client viewer reads reports
        now = now_of(request)
        if tenant is not None:
            visible_tenant(access, tenant)
        filters = WorkFilters(tenant=tenant, priority=priority, overdue=overdue == "1")
        lists = await my_work_lists(access, filters, cursor, now)
        template = part_or_page(request, "work_lists.html", "my_work.html")
        return render(template, **(await frame(access, "work")), **lists, now=now, cursor=cursor)

    @router.get("/inbox/c/{conversation_id}", response_class=HTMLResponse)
    async def conversation(
        conversation_id: ConversationId, request: Request, access: Annotated[Access, Depends(access)]
    ) -> Response:
        context = await conversation_page_context(
            access, conversation_id, now_of(request), settings_of(request).youtube_units_for_replies()
        )
        template = part_or_page(request, "conversation_body.html", "conversation.html")
        return render(template, **(await frame(access, "work")), **context, now=now_of(request))

    @router.get("/inbox/board", response_class=HTMLResponse)
    async def board(
        request: Request, access: Annotated[Access, Depends(access)], tenant: Slug = None
    ) -> Response:
        context = await board_context(access, tenant, now_of(request))
        template = part_or_page(request, "board_body.html", "board.html")
        return render(template, **(await frame(access, "board")), **context, now=now_of(request))

    @router.get("/inbox/reports", response_class=HTMLResponse)
    async def reports(
        request: Request,
        access: Annotated[Access, Depends(access)],
        tenant: Slug = None,
        team: Slug = None,
        person: Slug = None,
        since: ReportTime = None,
        until: ReportTime = None,
        bucket: Literal["day", "week"] = "day",
    ) -> Response:
        asked = {"tenant": tenant, "team": team, "person": person, "since": since, "until": until}
        report = await report_for(
            access,
            tenant=tenant,
            team=team,
            person=person,
            since=since,
            until=until,
            bucket=bucket,
            now=now_of(request),
        )
        charts = {"first_response": first_response_chart(report), "open_load": open_load_chart(report)}
        view = report_view(report, tenant=tenant, team=team, person=person)
        teams, people = await report_choices(access, tenant, now_of(request))
        return render(
            "reports.html",
            **(await frame(access, "reports")),
            report=view,
            charts=charts,
            asked=asked,
            teams=teams,
            people=people,
        )

    @router.get("/inbox/configuration", response_class=HTMLResponse)
    async def configuration(
        request: Request, access: Annotated[Access, Depends(access)], tenant: Slug = None
    ) -> Response:
        scope = access.require_some(Action.read_config)
        me = await me_of(access)
        readable = [
            (tenant_id, name)
            for tenant_id, name in me.tenants
            if scope.everything or tenant_id in scope.tenants
        ]
        if tenant is None:
            if not readable:
                raise not_found("tenant")
            tenant = readable[0][0]
        config = await configuration_of(access, tenant)
        return render(
            "configuration.html", **(await frame(access, "config")), config=config, tenants=readable
        )

    return router


def mount_static(app: Any) -> None:
    """The pages' own script and styles. Their address carries a digest of their content
    (`?v=` of `ASSETS`), so a browser never runs an old script against a new page."""
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
