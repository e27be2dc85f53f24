"""Persistence for the router: keyword-only functions over one session, batch-sized."""

from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy import delete, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.router.assignment import Candidate
from services.router.conversations import RoutingContext
from services.router.deadlines import SlaTargets
from shared.db.models import (
    Account,
    Conversation,
    Interaction,
    OutboxMessage,
    Person,
    SlaPolicy,
    Team,
    TeamMember,
)


async def get_known_interaction_ids(*, session: AsyncSession, ids: Iterable[str]) -> set[str]:
    rows = await session.exec(select(Interaction.id).where(col(Interaction.id).in_(list(ids))))
    return set(rows.all())


async def get_conversations(*, session: AsyncSession, ids: Iterable[str]) -> dict[str, Conversation]:
    rows = await session.exec(select(Conversation).where(col(Conversation.id).in_(list(ids))))
    return {row.id: row for row in rows.all()}


async def get_routing_contexts(
    *, session: AsyncSession, account_ids: Iterable[str], backfill_cutoff: timedelta
) -> dict[str, RoutingContext]:
    """One context per known account; accounts of one team share their candidates."""
    accounts = (await session.exec(select(Account).where(col(Account.id).in_(list(account_ids))))).all()
    team_ids = {account.team_id for account in accounts}
    teams = {
        team.id: team for team in (await session.exec(select(Team).where(col(Team.id).in_(team_ids)))).all()
    }
    policy_ids = {team.sla_policy_id for team in teams.values() if team.sla_policy_id}
    policies = {
        policy.id: policy
        for policy in (await session.exec(select(SlaPolicy).where(col(SlaPolicy.id).in_(policy_ids)))).all()
    }
    members: dict[str, list[Candidate]] = {team_id: [] for team_id in teams}
    rows = await session.exec(
        select(TeamMember.team_id, Person.id, Person.last_assigned_at)
        .join(Person, col(Person.id) == col(TeamMember.person_id))
        .where(col(TeamMember.team_id).in_(team_ids))
    )
    for team_id, person_id, last_assigned_at in rows.all():
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


def _targets(policy: SlaPolicy) -> SlaTargets:
    return SlaTargets(
        first_response=timedelta(seconds=policy.first_response_seconds),
        next_response=(
            timedelta(seconds=policy.next_response_seconds) if policy.next_response_seconds else None
        ),
        warn_before=timedelta(seconds=policy.warn_before_seconds) if policy.warn_before_seconds else None,
    )


async def record_assignments(*, session: AsyncSession, assigned: dict[str, datetime]) -> None:
    for person_id, at in assigned.items():
        await session.exec(update(Person).where(col(Person.id) == person_id).values(last_assigned_at=at))


async def get_pending_outbox(
    *, session: AsyncSession, older_than: datetime | None, limit: int
) -> list[OutboxMessage]:
    query = select(OutboxMessage).order_by(col(OutboxMessage.created_at)).limit(limit)
    if older_than is not None:
        query = query.where(col(OutboxMessage.created_at) < older_than)
    return list((await session.exec(query)).all())


async def delete_outbox(*, session: AsyncSession, ids: list[str]) -> None:
    await session.exec(delete(OutboxMessage).where(col(OutboxMessage.id).in_(ids)))
