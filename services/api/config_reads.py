"""A tenant's configuration, read-only: what `stayhuman apply` set, and the file it came from.

`GET /api/tenants/{tenant_id}/configuration` answers who may read the tenant's configuration
(`Action.read_config`: agency admins, the tenant's admins and its team leads); a tenant the
viewer has no role in answers 404, a role without the right 403. Every query goes through
`Access` and names the tenant, so the answer holds that tenant's rows and nothing else.

The people shown are those the tenant's configuration names (its teams' leads and members,
its admins and client viewers, its manager, the people its escalation chains alert), never
another tenant's. Their email addresses are shown to admins (agency admins and the tenant's
admins) only; a team lead sees `null`, and `<redacted>` in the YAML.

`yaml` is the file the newest kept version came from, as `apply` stored it: secrets (webhook
secrets, access tokens, API tokens, Apprise URLs) already `<redacted>`. It is null for a
tenant last changed before files were kept.
"""

import json
from datetime import date, datetime
from typing import Annotated, Any

import yaml
from fastapi import APIRouter, Depends, HTTPException, Path
from pydantic import BaseModel, Field
from sqlmodel import col, select

from services.api.access import Action, Viewer
from services.api.auth import problems
from services.api.scope import Access, access
from services.api.views import PersonRef
from services.notify.chain import Chain, ChainError
from services.router.topics import PRIORITIES
from shared import ids
from shared.db.models import (
    AppliedConfigurationRow,
    CalendarRow,
    PersonRow,
    RoleGrantRow,
    SlaPolicyRow,
    TeamMemberRow,
    TeamRow,
    TenantRow,
    TopicRow,
)

REDACTED = "<redacted>"  # what the kept file says in place of a secret (stayhuman.config)
TenantPath = Annotated[str, Path(pattern=ids.SLUG_PATTERN, max_length=63, description="The tenant's id.")]


class ConfiguredTenant(BaseModel):
    id: str
    name: str
    config_version: int = Field(description="Moved on by every apply that changed this tenant.")
    applied_at: datetime | None = Field(
        description="When the version `yaml` shows was applied; null: no file kept yet."
    )
    manager: PersonRef | None = Field(description="Whom escalation steps `notify: manager` alert.")
    vip: list[str] = Field(description="Author ids or handles whose conversations rank higher.")
    auto_resolve_after_seconds: int | None = Field(
        description="A responded conversation quiet this long resolves; null: never."
    )


class ConfiguredPerson(BaseModel):
    id: str
    name: str
    email: str | None = Field(description="Shown to agency admins and the tenant's admins; null to others.")
    active: bool
    roles: list[str] = Field(
        description="What they are in this tenant: tenant_admin, client_viewer, team_lead, agent, manager."
    )
    teams: list[str] = Field(description="Slugs of this tenant's teams they answer in.")
    capacity: int = Field(description="Conversations awaiting their answer at once, across tenants.")
    priority_weights: dict[str, int] = Field(description="How much a conversation of a priority weighs.")
    languages: list[str]
    skills: list[str]
    timezone: str
    working_hours: dict[str, Any] | None = Field(description="Their weekly hours; null: always on shift.")


class ConfiguredTeam(BaseModel):
    slug: str
    name: str
    lead: PersonRef | None
    members: list[PersonRef]
    sla_policy: str | None = Field(description="The policy of its conversations whose topic names none.")


class ConfiguredTopic(BaseModel):
    """One routing rule; the list is in the order rules are tried (the default topic last)."""

    name: str
    default: bool = Field(description="Takes what no other topic matched.")
    rule: dict[str, Any] = Field(description="What an interaction must match (empty: anything).")
    team: str | None = Field(description="The team slug it routes to.")
    priority: str
    sla_policy: str | None = Field(description="Its own policy; null: its team's.")
    no_sla: bool = Field(description="Recorded and assigned, never alerted.")
    skills: list[str] = Field(description="What its owner must have.")


class Targets(BaseModel):
    first_response_seconds: int
    next_response_seconds: int | None
    resolution_seconds: int | None


class ConfiguredPolicy(BaseModel):
    name: str
    calendar: str | None = Field(description="The business hours its clock runs in; null: around the clock.")
    targets: dict[str, Targets] = Field(description="Per priority (low, normal, high, urgent), in seconds.")
    warn_before_seconds: int | None
    vip_bump: int = Field(description="Priority levels added for a VIP author.")
    high_reach_followers: int | None = Field(description="Authors with this many followers rank higher.")
    high_reach_bump: int


class Holidays(BaseModel):
    country: str
    subdivision: str | None


class ConfiguredCalendar(BaseModel):
    name: str
    timezone: str
    hours: dict[str, Any] | None = Field(description="Open hours per weekday; null: around the clock.")
    holidays: Holidays | None = Field(description="Whose public holidays close it.")
    closed_days: list[date]


class Step(BaseModel):
    after_seconds: int = Field(description="Wall-clock wait after the breach.")
    notify: str = Field(description="owner, team, lead, manager or person.")
    person: str | None = Field(description="With notify person: whom.")
    repeat_every_seconds: int | None
    repeat_times: int


class TopicChain(BaseModel):
    topic: str
    steps: list[Step]


class Escalation(BaseModel):
    default: list[Step] = Field(description="The tenant's chain: who is alerted after a breach.")
    topics: list[TopicChain] = Field(description="Topics with a chain of their own, in topic order.")


class ConfigurationView(BaseModel):
    """What `stayhuman apply` set for one tenant, and the file (secrets redacted) it came from."""

    tenant: ConfiguredTenant
    people: list[ConfiguredPerson]
    teams: list[ConfiguredTeam]
    topics: list[ConfiguredTopic]
    sla_policies: list[ConfiguredPolicy]
    calendars: list[ConfiguredCalendar]
    escalation: Escalation
    yaml: str | None = Field(
        description="The configuration file of this tenant (with the people it names) the newest "
        "kept version came from, every secret <redacted>; null: applied before files were kept."
    )
    yaml_version: int | None = Field(description="The configuration version `yaml` is of.")


# -- pure shaping ------------------------------------------------------------------------------


def shows_email(viewer: Viewer, tenant_id: str) -> bool:
    """Email addresses are for the people who administer the tenant."""
    return viewer.agency_admin or tenant_id in viewer.tenant_admin


def loads(text: str | None, default: Any) -> Any:
    """A JSON column, or `default` when it is empty or unreadable."""
    if not text:
        return default
    try:
        value = json.loads(text)
    except ValueError:
        return default
    return value if value is not None else default


def targets(policy: SlaPolicyRow) -> dict[str, Targets]:
    """Every priority's targets, as the router takes them: a priority's own, else the policy's."""
    given = loads(policy.targets, {})
    given = given if isinstance(given, dict) else {}
    result = {}
    for priority in PRIORITIES:
        own: dict[str, Any] = given[priority] if isinstance(given.get(priority), dict) else {}
        result[priority] = Targets(
            first_response_seconds=own.get("first_response") or policy.first_response_seconds,
            next_response_seconds=own.get("next_response") or policy.next_response_seconds,
            resolution_seconds=own.get("resolution") or policy.resolution_seconds,
        )
    return result


def steps(text: str | None) -> list[Step]:
    try:
        chain = Chain.parse(loads(text, []))
    except ChainError:
        return []
    return [
        Step(
            after_seconds=int(step.after.total_seconds()),
            notify=step.notify.value,
            person=step.person_id,
            repeat_every_seconds=int(step.repeat_every.total_seconds()) if step.repeat_every else None,
            repeat_times=step.repeat_times,
        )
        for step in chain.steps
    ]


def without_emails(text: str) -> str:
    """The kept file with each person's email address `<redacted>`, for who may not see them."""
    document = yaml.safe_load(text)
    if not isinstance(document, dict):
        return text
    for person in document.get("people") or []:
        if isinstance(person, dict) and "email" in person:
            person["email"] = REDACTED
    dumped: str = yaml.safe_dump(
        document, sort_keys=False, allow_unicode=True, default_flow_style=False, width=100
    )
    return dumped


# -- the read ----------------------------------------------------------------------------------


async def configuration_of(access: Access, tenant_id: str) -> ConfigurationView:
    """The tenant's configuration as `access`'s viewer may read it (404: a tenant outside their
    reach or none at all; 403: their roles there give no `read_config`)."""
    access.tenant(tenant_id, Action.read_config)
    session = access.session

    def of_tenant(column: Any) -> Any:
        return access.tenants(Action.read_config, column)

    tenant = (
        await session.exec(select(TenantRow).where(TenantRow.id == tenant_id, of_tenant(TenantRow.id)))
    ).first()
    if tenant is None:
        raise HTTPException(404, {"error": "no tenant", "field": "tenant"})
    teams = (
        await session.exec(
            select(TeamRow)
            .where(TeamRow.tenant_id == tenant_id, access.teams(Action.read_config))
            .order_by(col(TeamRow.slug))
        )
    ).all()
    team_ids = [team.id for team in teams]
    memberships = (
        await session.exec(
            select(TeamMemberRow.team_id, TeamMemberRow.person_id)
            .where(col(TeamMemberRow.team_id).in_(team_ids))
            .order_by(col(TeamMemberRow.person_id))
        )
    ).all()
    grants = (
        await session.exec(
            select(RoleGrantRow.person_id, RoleGrantRow.role).where(
                RoleGrantRow.tenant_id == tenant_id, of_tenant(RoleGrantRow.tenant_id)
            )
        )
    ).all()
    topics = (
        await session.exec(
            select(TopicRow)
            .where(TopicRow.tenant_id == tenant_id, of_tenant(TopicRow.tenant_id))
            .order_by(col(TopicRow.position), col(TopicRow.name))
        )
    ).all()
    policies = (
        await session.exec(
            select(SlaPolicyRow)
            .where(SlaPolicyRow.tenant_id == tenant_id, of_tenant(SlaPolicyRow.tenant_id))
            .order_by(col(SlaPolicyRow.name))
        )
    ).all()
    calendars = (
        await session.exec(
            select(CalendarRow)
            .where(CalendarRow.tenant_id == tenant_id, of_tenant(CalendarRow.tenant_id))
            .order_by(col(CalendarRow.name))
        )
    ).all()
    kept = (
        await session.exec(
            select(AppliedConfigurationRow)
            .where(
                AppliedConfigurationRow.tenant_id == tenant_id,
                of_tenant(AppliedConfigurationRow.tenant_id),
            )
            .order_by(col(AppliedConfigurationRow.config_version).desc())
            .limit(1)
        )
    ).first()

    chain = steps(tenant.escalation)
    topic_chains = [
        TopicChain(topic=topic.name, steps=steps(topic.escalation))
        for topic in topics
        if topic.escalation is not None
    ]
    roles: dict[str, set[str]] = {}

    def role(person_id: str | None, name: str) -> None:
        if person_id:
            roles.setdefault(person_id, set()).add(name)

    slug_of = {team.id: team.slug for team in teams}
    teams_of: dict[str, list[str]] = {}
    for team_id, person_id in memberships:
        role(person_id, "agent")
        teams_of.setdefault(person_id, []).append(slug_of[team_id])
    for team in teams:
        role(team.lead_id, "team_lead")
    for person_id, granted in grants:
        role(person_id, granted)
    role(tenant.manager_id, "manager")
    named = set(roles) | {
        step.person for item in [chain, *(c.steps for c in topic_chains)] for step in item if step.person
    }
    people = (
        await session.exec(
            select(PersonRow).where(col(PersonRow.id).in_(sorted(named))).order_by(col(PersonRow.id))
        )
    ).all()
    names = {person.id: person.name for person in people}

    def ref(person_id: str | None) -> PersonRef | None:
        return PersonRef(id=person_id, name=names.get(person_id, person_id)) if person_id else None

    emails = shows_email(access.viewer, tenant_id)
    members: dict[str, list[PersonRef]] = {team_id: [] for team_id in team_ids}
    for team_id, person_id in memberships:
        members[team_id].append(PersonRef(id=person_id, name=names.get(person_id, person_id)))
    policy_names = {policy.id: policy.name for policy in policies}
    calendar_names = {calendar.id: calendar.name for calendar in calendars}
    return ConfigurationView(
        tenant=ConfiguredTenant(
            id=tenant.id,
            name=tenant.name,
            config_version=tenant.config_version,
            applied_at=kept.applied_at if kept else None,
            manager=ref(tenant.manager_id),
            vip=[str(v) for v in loads(tenant.vip, [])],
            auto_resolve_after_seconds=tenant.auto_resolve_seconds,
        ),
        people=[
            ConfiguredPerson(
                id=person.id,
                name=person.name,
                email=person.email if emails else None,
                active=person.active,
                roles=sorted(roles.get(person.id, set())),
                teams=sorted(teams_of.get(person.id, [])),
                capacity=person.capacity,
                priority_weights=loads(person.priority_weights, {}),
                languages=loads(person.languages, []),
                skills=loads(person.skills, []),
                timezone=person.timezone,
                working_hours=loads(person.working_hours, None),
            )
            for person in people
        ],
        teams=[
            ConfiguredTeam(
                slug=team.slug,
                name=team.name,
                lead=ref(team.lead_id),
                members=members[team.id],
                sla_policy=policy_names.get(team.sla_policy_id or ""),
            )
            for team in teams
        ],
        topics=[
            ConfiguredTopic(
                name=topic.name,
                default=topic.is_default,
                rule=loads(topic.rule, {}),
                team=slug_of.get(topic.team_id or ""),
                priority=topic.priority,
                sla_policy=policy_names.get(topic.sla_policy_id or ""),
                no_sla=topic.no_sla,
                skills=loads(topic.skills, []),
            )
            for topic in topics
        ],
        sla_policies=[
            ConfiguredPolicy(
                name=policy.name,
                calendar=calendar_names.get(policy.calendar_id or ""),
                targets=targets(policy),
                warn_before_seconds=policy.warn_before_seconds,
                vip_bump=policy.vip_bump,
                high_reach_followers=policy.high_reach_followers,
                high_reach_bump=policy.high_reach_bump,
            )
            for policy in policies
        ],
        calendars=[
            ConfiguredCalendar(
                name=calendar.name,
                timezone=calendar.timezone,
                hours=loads(calendar.hours, None),
                holidays=Holidays(
                    country=calendar.holidays_country, subdivision=calendar.holidays_subdivision
                )
                if calendar.holidays_country
                else None,
                closed_days=loads(calendar.closed_days, []),
            )
            for calendar in calendars
        ],
        escalation=Escalation(default=chain, topics=topic_chains),
        yaml=(kept.yaml if emails else without_emails(kept.yaml)) if kept else None,
        yaml_version=kept.config_version if kept else None,
    )


def configuration_router() -> APIRouter:
    router = APIRouter(prefix="/api", tags=["configuration"])

    @router.get(
        "/tenants/{tenant_id}/configuration",
        response_model=ConfigurationView,
        responses=problems(400, 401, 403, 404),
        summary="What `stayhuman apply` set for a tenant, and the file (secrets redacted) it came from",
    )
    async def configuration(
        tenant_id: TenantPath, access: Annotated[Access, Depends(access)]
    ) -> ConfigurationView:
        """People, teams, topics in the order they are tried, SLA policies with every priority's
        targets, calendars and escalation chains, read-only; for agency admins, the tenant's admins
        and its team leads."""
        return await configuration_of(access, tenant_id)

    return router
