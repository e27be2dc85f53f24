"""Persistence for notify: deadlines (newest version wins) and alert claims."""

import functools
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlmodel.ext.asyncio.session import AsyncSession

from services.notify.chain import Chain
from services.notify.channels import Preferences
from services.notify.email import OverdueContext, Recipient
from services.notify.timers import Deadline, DeadlineState, TimerPayload
from shared.db.core import (
    ACCOUNTS,
    ALERTS,
    CONVERSATIONS,
    DEADLINES,
    DELIVERIES,
    MEMBERS,
    PEOPLE,
    TEAMS,
    TENANTS,
    TOPICS,
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
        warn_at=row.warn_at,
        last_step=row.last_step,
        acknowledged_at=row.acknowledged_at,
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
            # a new version is a new deadline: its timeline starts over, unacknowledged
            "last_step": None,
            "acknowledged_at": None,
            "acknowledged_by": None,
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


async def advance(*, session: AsyncSession, fired: TimerPayload, finished: bool) -> None:
    """Note the alert of the timeline just handled; `finished`: it was the last one."""
    values: dict[str, Any] = {"last_step": fired.step, "updated_at": utcnow()}
    if finished:
        values["state"] = DeadlineState.alerted
    await execute(
        session,
        update(DEADLINES)
        .where(
            DEADLINES.c.conversation_id == fired.conversation_id,
            DEADLINES.c.version == fired.deadline_version,
            DEADLINES.c.state == DeadlineState.armed,
        )
        .values(**values),
    )


async def acknowledge(*, session: AsyncSession, conversation_id: str, version: int, person_id: str) -> str:
    """Someone is on it: no more escalation for this deadline version. Returns what happened:
    acknowledged, already (acknowledged before), or outdated (the deadline moved on)."""
    now = utcnow()
    done = await execute(
        session,
        update(DEADLINES)
        .where(
            DEADLINES.c.conversation_id == conversation_id,
            DEADLINES.c.version == version,
            DEADLINES.c.acknowledged_at.is_(None),
        )
        .values(acknowledged_at=now, acknowledged_by=person_id, updated_at=now),
    )
    if done.rowcount != 1:
        rows = await fetch_rows(
            session,
            select(DEADLINES.c.version, DEADLINES.c.acknowledged_at).where(
                DEADLINES.c.conversation_id == conversation_id
            ),
        )
        if rows and rows[0].version == version and rows[0].acknowledged_at is not None:
            return "already"
        return "outdated"
    tenant = await fetch_rows(
        session, select(CONVERSATIONS.c.tenant_id).where(CONVERSATIONS.c.id == conversation_id)
    )
    await execute(
        session,
        dialect_insert(session, ALERTS)
        .values(
            id=alert_id(conversation_id, version, "ack"),
            conversation_id=conversation_id,
            deadline_version=version,
            step="ack",
            tenant_id=tenant[0].tenant_id if tenant else "",
            channel="link",
            recipients=person_id,
            message_id="",
            status="acknowledged",
            attempts=0,
            last_error="",
            created_at=now,
            sent_at=now,
        )
        .on_conflict_do_nothing(),
    )
    return "acknowledged"


@functools.lru_cache(maxsize=2048)
def _chain(text: str | None) -> Chain:
    return Chain.parse(json.loads(text)) if text else Chain()


async def get_chains(*, session: AsyncSession, ids: Iterable[str]) -> dict[str, Chain]:
    """The escalation chain of each conversation: its topic's, else its tenant's."""
    rows = await fetch_rows(
        session,
        select(CONVERSATIONS.c.id, TENANTS.c.escalation, TOPICS.c.escalation.label("topic_escalation"))
        .join(TENANTS, TENANTS.c.id == CONVERSATIONS.c.tenant_id)
        .outerjoin(
            TOPICS,
            (TOPICS.c.tenant_id == CONVERSATIONS.c.tenant_id) & (TOPICS.c.name == CONVERSATIONS.c.topic),
        )
        .where(CONVERSATIONS.c.id.in_(list(ids))),
    )
    return {row.id: _chain(row.topic_escalation or row.escalation) for row in rows}


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
    team_row = await fetch_rows(session, select(TEAMS.c.lead_id).where(TEAMS.c.id == conversation.team_id))
    tenant_row = await fetch_rows(
        session,
        select(TENANTS.c.manager_id, TENANTS.c.escalation).where(TENANTS.c.id == conversation.tenant_id),
    )
    lead_id = team_row[0].lead_id if team_row else None
    manager_id = tenant_row[0].manager_id if tenant_row else None
    members = await fetch_rows(
        session,
        select(PEOPLE.c.id)
        .join(MEMBERS, MEMBERS.c.person_id == PEOPLE.c.id)
        .where(MEMBERS.c.team_id == conversation.team_id)
        .order_by(PEOPLE.c.id),
    )
    team_ids = [m.id for m in members]
    named = {step.person_id for step in _chain(tenant_row[0].escalation if tenant_row else None).steps}
    for chain in (await get_chains(session=session, ids=[conversation_id])).values():
        named |= {step.person_id for step in chain.steps}
    wanted = {*team_ids, conversation.owner_id, lead_id, manager_id, *named} - {None}
    people = {
        p.id: Recipient(p.name, p.email, p.id)
        for p in await fetch_rows(
            session,
            select(PEOPLE.c.id, PEOPLE.c.name, PEOPLE.c.email).where(
                PEOPLE.c.id.in_(wanted), PEOPLE.c.active.is_(True)
            ),
        )
    }
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
        owner=people.get(conversation.owner_id or ""),
        team=[people[p] for p in team_ids if p in people],
        # The router's own record closes the window in which it has committed a
        # reply whose cleared deadline has not reached notify yet.
        still_waiting=conversation.deadline_version == version and conversation.due_at is not None,
        tenant_id=conversation.tenant_id,
        lead=people.get(lead_id or ""),
        manager=people.get(manager_id or ""),
        people=people,
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


# -- deliveries: one alert to one person on one channel --------------------------------------


def delivery_id(alert: str, channel: str, person_id: str) -> str:
    return f"{alert}|{channel}|{person_id}"


async def claim_deliveries(
    *,
    session: AsyncSession,
    fired: TimerPayload,
    wanted: list[tuple[str, str]],
    lease: timedelta,
    include_failed: bool = False,
) -> list[Any]:
    """Take the (channel, person) deliveries of an alert that are not done yet: new ones, and
    retrying ones whose lease has run out (another replica is not sending them). Returns rows."""
    now = utcnow()
    alert = alert_id(fired.conversation_id, fired.deadline_version, fired.step)
    if wanted:
        await execute(
            session,
            dialect_insert(session, DELIVERIES).on_conflict_do_nothing(),
            [
                {
                    "id": delivery_id(alert, channel, person),
                    "alert_id": alert,
                    "conversation_id": fired.conversation_id,
                    "deadline_version": fired.deadline_version,
                    "step": fired.step,
                    "tenant_id": fired.tenant_id,
                    "channel": channel,
                    "person_id": person,
                    "status": "queued",
                    "attempts": 0,
                    "last_error": "",
                    "detail": "",
                    "created_at": now,
                }
                for channel, person in wanted
            ],
        )
    statuses = ["queued", "retrying", "sending", *(["failed"] if include_failed else [])]
    query = select(DELIVERIES).where(
        DELIVERIES.c.status.in_(statuses),
        (DELIVERIES.c.lease_until.is_(None)) | (DELIVERIES.c.lease_until < now),
    )
    if wanted:
        query = query.where(DELIVERIES.c.alert_id == alert)
    else:  # a retry: every delivery of this deadline version still owed
        query = query.where(
            DELIVERIES.c.conversation_id == fired.conversation_id,
            DELIVERIES.c.deadline_version == fired.deadline_version,
        )
    rows = await fetch_rows(session, query)
    taken = []
    for row in rows:
        done = await execute(
            session,
            update(DELIVERIES)
            .where(DELIVERIES.c.id == row.id, DELIVERIES.c.status == row.status)
            # a failed delivery taken again (a replayed dead letter) starts its attempts over
            .values(
                status="sending",
                lease_until=now + lease,
                attempts=0 if row.status == "failed" else row.attempts,
            ),
        )
        if done.rowcount == 1:
            taken.append(row.id)
    if not taken:
        return []
    return list(await fetch_rows(session, select(DELIVERIES).where(DELIVERIES.c.id.in_(taken))))


async def finish_delivery(
    *, session: AsyncSession, row_id: str, status: str, attempts: int, error: str = "", detail: str = ""
) -> None:
    await execute(
        session,
        update(DELIVERIES)
        .where(DELIVERIES.c.id == row_id)
        .values(
            status=status,
            attempts=attempts,
            lease_until=None,
            last_error=error[:2000],
            detail=detail[:500],
            sent_at=utcnow() if status == "sent" else None,
        ),
    )


async def get_preferences(
    *, session: AsyncSession, people: Iterable[str]
) -> tuple[dict[str, Preferences], dict[str, str]]:
    """People's alert preferences, and their sealed Apprise URLs."""
    rows = await fetch_rows(session, select(PEOPLE).where(PEOPLE.c.id.in_(list(people))))
    preferences = {
        row.id: Preferences.parse(
            row.notify,
            row.quiet_hours,
            row.timezone,
            working_hours=row.working_hours,
            present=row.active and row.status != "offline",
        )
        for row in rows
    }
    return preferences, {row.id: row.apprise_urls for row in rows}


async def recently_sent(
    *, session: AsyncSession, pairs: set[tuple[str, str]], since: datetime, exclude: set[str]
) -> dict[tuple[str, str], int]:
    """How many alerts each (person, channel) pair was sent, or is being sent, since `since`
    (`exclude`: the deliveries asking)."""
    if not pairs:
        return {}
    rows = await fetch_rows(
        session,
        select(DELIVERIES.c.person_id, DELIVERIES.c.channel, func.count())
        .where(
            DELIVERIES.c.person_id.in_({p for p, _ in pairs}),
            ((DELIVERIES.c.status == "sent") & (DELIVERIES.c.sent_at >= since))
            | ((DELIVERIES.c.status == "sending") & (DELIVERIES.c.created_at >= since)),
            DELIVERIES.c.id.not_in(exclude),
        )
        .group_by(DELIVERIES.c.person_id, DELIVERIES.c.channel),
    )
    return {(row[0], row[1]): int(row[2]) for row in rows if (row[0], row[1]) in pairs}


async def claim_grouped(
    *, session: AsyncSession, person_id: str, channel: str, lease: timedelta
) -> list[Any]:
    """The alerts held back for one person on one channel, taken for sending as one message."""
    now = utcnow()
    rows = await fetch_rows(
        session,
        select(DELIVERIES.c.id).where(
            DELIVERIES.c.person_id == person_id,
            DELIVERIES.c.channel == channel,
            DELIVERIES.c.status == "grouped",
        ),
    )
    ids = [row.id for row in rows]
    if not ids:
        return []
    await execute(
        session,
        update(DELIVERIES)
        .where(DELIVERIES.c.id.in_(ids), DELIVERIES.c.status == "grouped")
        .values(status="sending", lease_until=now + lease),
    )
    return list(
        await fetch_rows(
            session,
            select(DELIVERIES)
            .where(DELIVERIES.c.id.in_(ids), DELIVERIES.c.status == "sending")
            .order_by(DELIVERIES.c.created_at),
        )
    )


async def count_grouped(*, session: AsyncSession, person_id: str, channel: str) -> int:
    rows = await fetch_rows(
        session,
        select(func.count()).where(
            DELIVERIES.c.person_id == person_id,
            DELIVERIES.c.channel == channel,
            DELIVERIES.c.status == "grouped",
        ),
    )
    return int(rows[0][0])
