"""Persistence for the router: keyword-only functions over one session, batch-sized.

The hot path writes with SQLAlchemy Core executemany: building ORM objects for
thousands of rows a second costs more than the database does.
"""

import dataclasses
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, func, insert, select, update
from sqlmodel.ext.asyncio.session import AsyncSession

from services.router.assignment import Candidate
from services.router.conversations import Conversation, RoutingContext
from services.router.deadlines import SlaTargets
from shared.db.core import (
    ACCOUNTS,
    CONVERSATIONS,
    INTERACTIONS,
    MEMBERS,
    PEOPLE,
    POLICIES,
    TEAMS,
    execute,
    fetch_rows,
)


async def get_known_interaction_ids(*, session: AsyncSession, ids: Iterable[str]) -> set[str]:
    rows = await fetch_rows(session, select(INTERACTIONS.c.id).where(INTERACTIONS.c.id.in_(list(ids))))
    return {row.id for row in rows}


async def get_conversations(*, session: AsyncSession, ids: Iterable[str]) -> dict[str, Conversation]:
    rows = await fetch_rows(session, select(CONVERSATIONS).where(CONVERSATIONS.c.id.in_(list(ids))))
    return {row.id: Conversation(**row._mapping) for row in rows}


async def get_routing_contexts(
    *, session: AsyncSession, account_ids: Iterable[str], backfill_cutoff: timedelta
) -> dict[str, RoutingContext]:
    """One context per known account; accounts of one team share their candidates."""
    accounts = await fetch_rows(
        session, select(ACCOUNTS.c.id, ACCOUNTS.c.team_id).where(ACCOUNTS.c.id.in_(list(account_ids)))
    )
    team_ids = {account.team_id for account in accounts}
    teams = {
        team.id: team for team in await fetch_rows(session, select(TEAMS).where(TEAMS.c.id.in_(team_ids)))
    }
    policy_ids = {team.sla_policy_id for team in teams.values() if team.sla_policy_id}
    policies = {
        policy.id: policy
        for policy in await fetch_rows(session, select(POLICIES).where(POLICIES.c.id.in_(policy_ids)))
    }
    members: dict[str, list[Candidate]] = {team_id: [] for team_id in teams}
    people = await fetch_rows(
        session,
        select(MEMBERS.c.team_id, PEOPLE.c.id, PEOPLE.c.last_assigned_at)
        .join(PEOPLE, PEOPLE.c.id == MEMBERS.c.person_id)
        .where(MEMBERS.c.team_id.in_(team_ids)),
    )
    for team_id, person_id, last_assigned_at in people:
        members[team_id].append(Candidate(person_id, last_assigned_at))
    contexts = {}
    for account in accounts:
        team = teams[account.team_id]
        policy = policies.get(team.sla_policy_id or "")
        contexts[account.id] = RoutingContext(
            team_id=team.id,
            team_slug=team.slug,
            candidates=members[team.id],
            sla=_targets(policy) if policy else None,
            backfill_cutoff=backfill_cutoff,
        )
    return contexts


def _targets(policy: Any) -> SlaTargets:
    def seconds(value: int | None) -> timedelta | None:
        return timedelta(seconds=value) if value else None

    return SlaTargets(
        first_response=timedelta(seconds=policy.first_response_seconds),
        next_response=seconds(policy.next_response_seconds),
        warn_before=seconds(policy.warn_before_seconds),
    )


async def add_interactions(*, session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    await execute(session, insert(INTERACTIONS), rows)


_FIELDS = [f.name for f in dataclasses.fields(Conversation)]


def _values(conversation: Conversation) -> dict[str, Any]:
    return {name: getattr(conversation, name) for name in _FIELDS}


async def save_conversations(
    *, session: AsyncSession, created: list[Conversation], changed: list[Conversation]
) -> None:
    await execute(session, insert(CONVERSATIONS), [_values(c) for c in created])
    columns = [c.name for c in CONVERSATIONS.columns if c.name != "id"]
    statement = (
        update(CONVERSATIONS)
        .where(CONVERSATIONS.c.id == bindparam("conversation_id"))
        .values({name: bindparam(name) for name in columns})
    )
    params = []
    for conversation in changed:
        values = _values(conversation)
        values["conversation_id"] = values.pop("id")
        params.append(values)
    await execute(session, statement, params)


async def record_assignments(*, session: AsyncSession, assigned: dict[str, datetime]) -> None:
    statement = (
        update(PEOPLE).where(PEOPLE.c.id == bindparam("person_id")).values(last_assigned_at=bindparam("at"))
    )
    await execute(session, statement, [{"person_id": p, "at": at} for p, at in assigned.items()])


async def count_open_by_team(*, session: AsyncSession) -> list[tuple[str, str, bool, int]]:
    """(tenant, team slug, has an owner, open conversations) for the queue-depth gauges."""
    rows = await fetch_rows(
        session,
        select(
            TEAMS.c.tenant_id,
            TEAMS.c.slug,
            CONVERSATIONS.c.owner_id.is_not(None).label("owned"),
            func.count(),
        )
        .join(TEAMS, TEAMS.c.id == CONVERSATIONS.c.team_id)
        .where(CONVERSATIONS.c.state == "open")
        .group_by(TEAMS.c.tenant_id, TEAMS.c.slug, "owned"),
    )
    return [(row[0], row[1], bool(row[2]), int(row[3])) for row in rows]


async def retract_interactions(
    *, session: AsyncSession, tenant_id: str, account_id: str, external_id: str, at: datetime
) -> None:
    """Mark every version of a withdrawn message (a removed comment) as retracted."""
    await execute(
        session,
        update(INTERACTIONS)
        .where(
            INTERACTIONS.c.tenant_id == tenant_id,
            INTERACTIONS.c.account_id == account_id,
            INTERACTIONS.c.external_id == external_id,
            INTERACTIONS.c.retracted_at.is_(None),
        )
        .values(retracted_at=at),
    )


async def count_waiting(*, session: AsyncSession, conversation_id: str, since: datetime | None) -> int:
    """Inbound messages of a conversation still waiting for an answer (not withdrawn)."""
    query = select(func.count()).where(
        INTERACTIONS.c.conversation_id == conversation_id,
        INTERACTIONS.c.direction == "inbound",
        INTERACTIONS.c.retracted_at.is_(None),
    )
    if since is not None:
        query = query.where(INTERACTIONS.c.created_at >= since)
    return int((await fetch_rows(session, query))[0][0])
