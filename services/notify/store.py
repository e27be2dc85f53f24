"""Persistence for notify: deadlines (newest version wins) and alert claims."""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlmodel.ext.asyncio.session import AsyncSession

from services.notify.email import OverdueContext, Recipient
from services.notify.timers import Deadline, DeadlineState, TimerPayload
from shared.db.core import (
    ACCOUNTS,
    ALERTS,
    CONVERSATIONS,
    DEADLINES,
    MEMBERS,
    PEOPLE,
    TENANTS,
    execute,
    fetch_rows,
)
from shared.db.session import dialect_insert
from shared.events import DeadlineChanged, utcnow


def _deadline(row: Any) -> Deadline:
    return Deadline(
        conversation_id=row.conversation_id,
        tenant_id=row.tenant_id,
        version=row.version,
        due_at=row.due_at,
        state=row.state,
    )


async def store_deadlines(*, session: AsyncSession, events: Iterable[DeadlineChanged]) -> None:
    """Keep each conversation's newest deadline; an older version never overwrites a newer one."""
    now = utcnow()
    rows = [
        {
            "conversation_id": e.conversation_id,
            "tenant_id": e.tenant_id,
            "version": e.deadline_version,
            "kind": e.kind.value if e.kind else None,
            "owner_id": e.owner_id,
            "started_at": e.started_at,
            "warn_at": e.warn_at,
            "due_at": e.due_at,
            "state": DeadlineState.armed if e.due_at else DeadlineState.cleared,
            "updated_at": now,
        }
        for e in events
    ]
    if not rows:
        return
    statement = dialect_insert(session, DEADLINES).values(rows)
    statement = statement.on_conflict_do_update(
        index_elements=["conversation_id"],
        set_={name: statement.excluded[name] for name in rows[0] if name != "conversation_id"},
        where=DEADLINES.c.version < statement.excluded.version,
    )
    await execute(session, statement)


async def get_deadlines(*, session: AsyncSession, ids: Iterable[str]) -> dict[str, Deadline]:
    rows = await fetch_rows(session, select(DEADLINES).where(DEADLINES.c.conversation_id.in_(list(ids))))
    return {row.conversation_id: _deadline(row) for row in rows}


async def get_armed_deadlines(*, session: AsyncSession, after: str, limit: int) -> list[Deadline]:
    """Armed deadlines in id order, a page at a time (for the reconciler)."""
    rows = await fetch_rows(
        session,
        select(DEADLINES)
        .where(DEADLINES.c.state == DeadlineState.armed, DEADLINES.c.conversation_id > after)
        .order_by(DEADLINES.c.conversation_id)
        .limit(limit),
    )
    return [_deadline(row) for row in rows]


@dataclass(frozen=True)
class Claim:
    outcome: str  # claimed; done (sent, failed or skipped before); busy (another replica holds it)
    attempts: int = 0
    retry_in: float = 0.0


def alert_id(conversation_id: str, version: int, step: str) -> str:
    return f"{conversation_id}:{version}:{step}"


async def claim_alert(
    *, session: AsyncSession, tenant_id: str, conversation_id: str, version: int, step: str, lease: timedelta
) -> Claim:
    """Take the right to send this alert: once per (conversation, version, step), across replicas."""
    now = utcnow()
    key = alert_id(conversation_id, version, step)
    inserted = await execute(
        session,
        dialect_insert(session, ALERTS)
        .values(
            id=key,
            conversation_id=conversation_id,
            deadline_version=version,
            step=step,
            tenant_id=tenant_id,
            channel="email",
            recipients="",
            message_id="",
            status="sending",
            attempts=0,
            lease_until=now + lease,
            last_error="",
            created_at=now,
        )
        .on_conflict_do_nothing(),
    )
    if inserted.rowcount == 1:
        return Claim("claimed", 0)
    row = (await fetch_rows(session, select(ALERTS).where(ALERTS.c.id == key)))[0]
    if row.status in ("sent", "failed", "skipped"):
        return Claim("done", row.attempts)
    taken = await execute(
        session,
        update(ALERTS)
        .where(
            ALERTS.c.id == key,
            ALERTS.c.status.in_(["sending", "retrying"]),
            (ALERTS.c.lease_until.is_(None)) | (ALERTS.c.lease_until < now),
        )
        .values(status="sending", lease_until=now + lease),
    )
    if taken.rowcount == 1:
        return Claim("claimed", row.attempts)
    remaining = (row.lease_until - now).total_seconds() if row.lease_until else 1.0
    return Claim("busy", row.attempts, max(0.5, remaining))


async def finish_alert(
    *,
    session: AsyncSession,
    fired: TimerPayload,
    status: str,
    attempts: int,
    recipients: str = "",
    message_id: str = "",
    error: str = "",
) -> None:
    """Record the outcome of one attempt: sent, retrying or failed."""
    now = utcnow()
    conversation_id, version = fired.conversation_id, fired.deadline_version
    await execute(
        session,
        update(ALERTS)
        .where(ALERTS.c.id == alert_id(conversation_id, version, fired.step))
        .values(
            status=status,
            attempts=attempts,
            lease_until=None,
            recipients=recipients,
            message_id=message_id,
            last_error=error[:2000],
            sent_at=now if status == "sent" else None,
        ),
    )
    if status in ("sent", "failed"):
        await execute(
            session,
            update(DEADLINES)
            .where(DEADLINES.c.conversation_id == conversation_id, DEADLINES.c.version == version)
            .values(
                state=DeadlineState.alerted if status == "sent" else DeadlineState.failed, updated_at=now
            ),
        )


async def get_overdue_context(
    *, session: AsyncSession, conversation_id: str, version: int, due_at: datetime
) -> OverdueContext | None:
    row = await fetch_rows(
        session,
        select(
            CONVERSATIONS,
            TENANTS.c.name.label("tenant_name"),
            ACCOUNTS.c.handle.label("account_handle"),
        )
        .join(TENANTS, TENANTS.c.id == CONVERSATIONS.c.tenant_id)
        .join(ACCOUNTS, ACCOUNTS.c.id == CONVERSATIONS.c.account_id)
        .where(CONVERSATIONS.c.id == conversation_id),
    )
    if not row:
        return None
    conversation = row[0]
    owner = None
    if conversation.owner_id:
        people = await fetch_rows(
            session, select(PEOPLE.c.name, PEOPLE.c.email).where(PEOPLE.c.id == conversation.owner_id)
        )
        owner = Recipient(people[0].name, people[0].email) if people else None
    team = await fetch_rows(
        session,
        select(PEOPLE.c.name, PEOPLE.c.email)
        .join(MEMBERS, MEMBERS.c.person_id == PEOPLE.c.id)
        .where(MEMBERS.c.team_id == conversation.team_id)
        .order_by(PEOPLE.c.id),
    )
    return OverdueContext(
        conversation_id=conversation.id,
        deadline_version=version,
        tenant_name=conversation.tenant_name,
        account_id=conversation.account_id,
        account_handle=conversation.account_handle,
        platform=conversation.platform,
        author_name=conversation.author_name or conversation.author_id,
        text=conversation.last_inbound_text,
        url=conversation.last_inbound_url,
        waiting_since=conversation.awaiting_since or conversation.opened_at,
        due_at=due_at,
        owner=owner,
        team=[Recipient(p.name, p.email) for p in team],
        # The router's own record closes the window in which it has committed a
        # reply whose cleared deadline has not reached notify yet.
        still_waiting=conversation.state == "open" and conversation.deadline_version == version,
    )


async def get_account_names(*, session: AsyncSession, account_id: str) -> tuple[str, str]:
    """(tenant name, account handle) for messages about an account."""
    rows = await fetch_rows(
        session,
        select(TENANTS.c.name, ACCOUNTS.c.handle)
        .join(TENANTS, TENANTS.c.id == ACCOUNTS.c.tenant_id)
        .where(ACCOUNTS.c.id == account_id),
    )
    return (rows[0][0], rows[0][1]) if rows else ("an unknown tenant", account_id)
