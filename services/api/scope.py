"""The one place every route's access is decided: who is asking, and what they may see.

Every route takes `Access` (the FastAPI dependency `access`): it authenticates the
request (a session cookie, or a machine's bearer token), checks the CSRF token of a
state-changing request made with a cookie, loads the viewer's roles, and gives the
route its queries already scoped. A route never builds a `where tenant_id = ...` of
its own: it asks `Access` for the filter of the action it performs, and `Access.target`
for the one row it acts on (404 for what the viewer may not see, 403 for what they may
see but not do), so that a route forgotten here cannot leak what another tenant has.
"""

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException, Request
from sqlalchemy import ColumnElement, false, or_, true
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.api.access import Action, Role, Scope, Target, Team, Viewer
from services.api.auth import Principal, authenticate, check_csrf
from shared.db.models import (
    ConversationRow,
    PersonRow,
    RoleGrantRow,
    TeamMemberRow,
    TeamRow,
)


async def load_viewer(session: AsyncSession, principal: Principal) -> Viewer:
    """The viewer a principal is: a token's role, or a person's grants and teams."""
    if principal.person_id is None:
        assert principal.token_id is not None and principal.tenant_id is not None
        return Viewer.of_token(
            principal.token_id,
            name=principal.token_name,
            tenant_id=principal.tenant_id,
            role=Role(principal.role),
        )
    person_id = principal.person_id
    grants = (
        await session.exec(
            select(RoleGrantRow.role, RoleGrantRow.tenant_id).where(RoleGrantRow.person_id == person_id)
        )
    ).all()
    leads = (
        await session.exec(select(TeamRow.id, TeamRow.tenant_id).where(TeamRow.lead_id == person_id))
    ).all()
    teams = (
        await session.exec(
            select(TeamRow.id, TeamRow.tenant_id)
            .join(TeamMemberRow, col(TeamMemberRow.team_id) == col(TeamRow.id))
            .where(TeamMemberRow.person_id == person_id)
        )
    ).all()
    return Viewer.of_person(
        person_id,
        grants=[(role, tenant) for role, tenant in grants],
        leads=[Team(id, tenant) for id, tenant in leads],
        teams=[Team(id, tenant) for id, tenant in teams],
    )


def conversation_filter(scope: Scope) -> ColumnElement[bool]:
    """The conversations a scope reaches, as a WHERE clause on `conversation`."""
    if scope.everything:
        return true()
    clauses: list[ColumnElement[bool]] = []
    if scope.tenants:
        clauses.append(col(ConversationRow.tenant_id).in_(sorted(scope.tenants)))
    if scope.teams:
        clauses.append(col(ConversationRow.team_id).in_(sorted(scope.teams)))
    if scope.queues:
        clauses.append(
            col(ConversationRow.team_id).in_(sorted(scope.queues)) & col(ConversationRow.owner_id).is_(None)
        )
    if scope.owner is not None:
        clauses.append(col(ConversationRow.owner_id) == scope.owner)
    return or_(*clauses) if clauses else false()


def person_filter(scope: Scope) -> ColumnElement[bool]:
    """The people a scope reaches, as a WHERE clause on `person`: named ones, and the members
    of its teams or of any team of its tenants."""
    if scope.everything:
        return true()
    clauses: list[ColumnElement[bool]] = []
    if scope.people or scope.owner is not None:
        clauses.append(
            col(PersonRow.id).in_(sorted(scope.people | ({scope.owner} if scope.owner else set())))
        )
    if scope.teams:
        clauses.append(
            col(PersonRow.id).in_(
                select(TeamMemberRow.person_id).where(col(TeamMemberRow.team_id).in_(sorted(scope.teams)))
            )
        )
    if scope.tenants:
        clauses.append(
            col(PersonRow.id).in_(
                select(TeamMemberRow.person_id)
                .join(TeamRow, col(TeamRow.id) == col(TeamMemberRow.team_id))
                .where(col(TeamRow.tenant_id).in_(sorted(scope.tenants)))
            )
        )
        # ... and those the configuration gives a role in them (admins, client viewers), in no team
        clauses.append(
            col(PersonRow.id).in_(
                select(RoleGrantRow.person_id).where(col(RoleGrantRow.tenant_id).in_(sorted(scope.tenants)))
            )
        )
    return or_(*clauses) if clauses else false()


def team_filter(scope: Scope) -> ColumnElement[bool]:
    """The teams a scope reaches, as a WHERE clause on `team`."""
    if scope.everything:
        return true()
    clauses: list[ColumnElement[bool]] = []
    if scope.tenants:
        clauses.append(col(TeamRow.tenant_id).in_(sorted(scope.tenants)))
    if scope.teams:
        clauses.append(col(TeamRow.id).in_(sorted(scope.teams)))
    return or_(*clauses) if clauses else false()


def tenant_filter(scope: Scope, column: Any) -> ColumnElement[bool]:
    """Rows of whole tenants (tokens, reports of a tenant) a scope reaches, on `column`."""
    if scope.everything:
        return true()
    return col(column).in_(sorted(scope.tenants)) if scope.tenants else false()


def not_found(what: str) -> HTTPException:
    return HTTPException(404, {"error": f"no {what}", "field": what.split(" ")[0]})


def forbidden(action: Action, what: str) -> HTTPException:
    return HTTPException(
        403, {"error": f"you may not {action.value.replace('_', ' ')} {what}", "field": "action"}
    )


@dataclass
class Access:
    """The asking viewer, their database session, and the scoped queries."""

    viewer: Viewer
    session: AsyncSession
    principal: Principal

    def scope(self, action: Action) -> Scope:
        return self.viewer.scope(action)

    @property
    def session_sha256(self) -> str | None:
        """The SHA-256 the asking person's session is kept under (`websession.id_sha256`); None
        for a token. A reply carries it, so the outbound service posts only for a live session."""
        return self.principal.session_id

    def conversations(self, action: Action = Action.see) -> ColumnElement[bool]:
        return conversation_filter(self.require_some(action))

    def people(self, action: Action = Action.see) -> ColumnElement[bool]:
        return person_filter(self.require_some(action))

    def teams(self, action: Action = Action.see) -> ColumnElement[bool]:
        return team_filter(self.require_some(action))

    def tenants(self, action: Action, column: Any) -> ColumnElement[bool]:
        return tenant_filter(self.require_some(action), column)

    def require_some(self, action: Action) -> Scope:
        """The action's scope, or 403 when the viewer's roles give them none of it at all."""
        scope = self.scope(action)
        if scope.empty:
            raise forbidden(action, "anything here")
        return scope

    async def conversation(self, conversation_id: str, action: Action = Action.see) -> ConversationRow:
        """The conversation, if the viewer may see it (else 404, as if it did not exist), and
        may do `action` on it (else 403)."""
        row = (
            await self.session.exec(
                select(ConversationRow).where(
                    ConversationRow.id == conversation_id, conversation_filter(self.scope(Action.see))
                )
            )
        ).first()
        if row is None:
            raise not_found("conversation")
        target = Target(tenant_id=row.tenant_id, team_id=row.team_id, owner_id=row.owner_id)
        if action is not Action.see and not self.viewer.may(action, target):
            raise forbidden(action, "this conversation")
        return row

    async def person(self, person_id: str, action: Action = Action.see) -> PersonRow:
        """The person, if the viewer may see them (else 404) and do `action` for them (else 403)."""
        row = (
            await self.session.exec(
                select(PersonRow).where(PersonRow.id == person_id, person_filter(self.scope(Action.see)))
            )
        ).first()
        if row is None and action is Action.set_status and person_id == self.viewer.person_id:
            row = await self.session.get(PersonRow, person_id)  # anyone sees themselves
        if row is None:
            raise not_found("person")
        if action is not Action.see:
            teams = (
                await self.session.exec(
                    select(TeamRow.id, TeamRow.tenant_id)
                    .join(TeamMemberRow, col(TeamMemberRow.team_id) == col(TeamRow.id))
                    .where(TeamMemberRow.person_id == person_id)
                )
            ).all()
            granted = (
                await self.session.exec(
                    select(RoleGrantRow.tenant_id).where(
                        RoleGrantRow.person_id == person_id, RoleGrantRow.tenant_id != ""
                    )
                )
            ).all()
            target = Target(
                person_id=person_id,
                person_teams=frozenset(Team(id, t) for id, t in teams),
                person_tenants=frozenset(granted),
            )
            if not self.viewer.may(action, target):
                raise forbidden(action, f"person {person_id}")
        return row

    def tenant(self, tenant_id: str, action: Action) -> None:
        """404 for a tenant the viewer has no role in, 403 when they may not do `action` there."""
        visible = self.viewer.tenants()
        if visible is not None and tenant_id not in visible:
            raise not_found("tenant")
        if not self.viewer.may(action, Target(tenant_id=tenant_id)):
            raise forbidden(action, f"in tenant {tenant_id}")


async def access(request: Request) -> AsyncIterator[Access]:
    """The dependency every route but sign-in takes."""
    sessions: async_sessionmaker[AsyncSession] = request.app.state.sessions
    async with sessions() as session:
        principal = await authenticate(request, session)
        if principal is None:
            raise HTTPException(
                401,
                {
                    "error": "sign in first: a session cookie, or an API token as Authorization: Bearer",
                    "field": "auth",
                },
                headers={"WWW-Authenticate": "Bearer"},
            )
        check_csrf(request, principal)
        yield Access(viewer=await load_viewer(session, principal), session=session, principal=principal)
