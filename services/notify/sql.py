"""notify's repository on SQLAlchemy (SQLite, PostgreSQL): deadlines (newest version wins),
alert claims, the delivery log, acknowledgements and the outbox of alert events."""

import functools
import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import bindparam, case, delete, func, select, update
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from services.notify.chain import Chain
from services.notify.decisions import AckOutcome, Preferences
from services.notify.ports import (
    AckResult,
    AlertClaim,
    AlertStart,
    AlertStarted,
    AssignmentContext,
    ClaimOutcome,
    ContextWanted,
    CurrentDeadline,
    Delivery,
    DeliveryUpdate,
    Envelope,
    EventBatch,
    OverdueContext,
    Recipient,
)
from services.notify.push import link_generations
from services.notify.timers import DeadlineState, TimerPayload, WatchedDeadline
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
from shared.db.models import NotifyOutboxRow
from shared.db.session import dialect_insert, insert_ignoring, transaction
from shared.events import DeadlineChanged

NOTIFY_OUTBOX = NotifyOutboxRow.__table__  # type: ignore[attr-defined]


def _deadline(row: Any) -> WatchedDeadline:
    return WatchedDeadline(
        conversation_id=row.conversation_id,
        tenant_id=row.tenant_id,
        version=row.version,
        due_at=row.due_at,
        state=row.state,
        warn_at=row.warn_at,
        last_step=row.last_step,
        acknowledged_at=row.acknowledged_at,
    )


def _deadline_row(e: DeadlineChanged, now: datetime) -> dict[str, Any]:
    return {
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


async def store_deadlines(
    *, session: AsyncSession, events: Iterable[DeadlineChanged], now: datetime
) -> dict[str, CurrentDeadline]:
    """Keep each conversation's newest deadline (an older version never overwrites a newer one),
    and give back the current deadline and escalation chain of each.

    One statement for the batch (executemany, its SQL compiled once); the rows it wrote are
    known from RETURNING and are the events themselves, so only those it left alone (a newer
    or the same version stored before) are read back."""
    newest: dict[str, DeadlineChanged] = {}
    for e in events:
        known = newest.get(e.conversation_id)
        if known is None or known.deadline_version < e.deadline_version:
            newest[e.conversation_id] = e
    if not newest:
        return {}
    events = list(newest.values())
    rows = [_deadline_row(e, now) for e in events]
    connection = await session.connection()
    written = {row[0] for row in await connection.execute(_store_statement(session, rows[0]), rows)}
    current = {e.conversation_id: _watched(e) for e in events if e.conversation_id in written}
    left = [e.conversation_id for e in events if e.conversation_id not in written]
    if left:
        current.update(await get_deadlines(session=session, ids=left))
    chains = await get_chains(session=session, ids=list(current))
    return {cid: CurrentDeadline(d, chains.get(cid, Chain())) for cid, d in current.items()}


_STORE_STATEMENTS: dict[str, Any] = {}


def _store_statement(session: AsyncSession, row: dict[str, Any]) -> Any:
    """The upsert of `store_deadlines` for the session's database, built once: SQLAlchemy
    compiles a dialect's INSERT ... ON CONFLICT again on every execution (it is not cached),
    and building it cost as much again, every batch."""
    name = session.bind.dialect.name if session.bind is not None else "sqlite"
    statement = _STORE_STATEMENTS.get(name)
    if statement is None:
        insert = dialect_insert(session, DEADLINES)
        statement = _STORE_STATEMENTS[name] = insert.on_conflict_do_update(
            index_elements=["conversation_id"],
            set_={column: insert.excluded[column] for column in row if column != "conversation_id"},
            where=DEADLINES.c.version < insert.excluded.version,
        ).returning(DEADLINES.c.conversation_id)
    return statement


def _watched(e: DeadlineChanged) -> WatchedDeadline:
    """The deadline as `store_deadlines` just wrote it."""
    return WatchedDeadline(
        conversation_id=e.conversation_id,
        tenant_id=e.tenant_id,
        version=e.deadline_version,
        due_at=e.due_at,
        state=DeadlineState.armed if e.due_at else DeadlineState.cleared,
        warn_at=e.warn_at,
    )


async def get_current(*, session: AsyncSession, ids: Iterable[str]) -> dict[str, CurrentDeadline]:
    deadlines = await get_deadlines(session=session, ids=ids)
    if not deadlines:
        return {}
    chains = await get_chains(session=session, ids=list(deadlines))
    return {cid: CurrentDeadline(d, chains.get(cid, Chain())) for cid, d in deadlines.items()}


# Selects built once (SQLAlchemy caches their compiled form, but building one costs every call).
_DEADLINES_OF = select(DEADLINES).where(DEADLINES.c.conversation_id.in_(bindparam("ids", expanding=True)))
_CHAINS_OF = (
    select(CONVERSATIONS.c.id, TENANTS.c.escalation, TOPICS.c.escalation.label("topic_escalation"))
    .join(TENANTS, TENANTS.c.id == CONVERSATIONS.c.tenant_id)
    .outerjoin(
        TOPICS,
        (TOPICS.c.tenant_id == CONVERSATIONS.c.tenant_id) & (TOPICS.c.name == CONVERSATIONS.c.topic),
    )
    .where(CONVERSATIONS.c.id.in_(bindparam("ids", expanding=True)))
)

_PEOPLE_OF = select(PEOPLE).where(PEOPLE.c.id.in_(bindparam("ids", expanding=True)))


async def get_deadlines(*, session: AsyncSession, ids: Iterable[str]) -> dict[str, WatchedDeadline]:
    connection = await session.connection()
    rows = await connection.execute(_DEADLINES_OF, {"ids": list(ids)})
    return {row.conversation_id: _deadline(row) for row in rows}


async def get_armed_deadlines(*, session: AsyncSession, after: str, limit: int) -> list[WatchedDeadline]:
    """Armed deadlines in id order, a page at a time (for the reconciler)."""
    rows = await fetch_rows(
        session,
        select(DEADLINES)
        .where(DEADLINES.c.state == DeadlineState.armed, DEADLINES.c.conversation_id > after)
        .order_by(DEADLINES.c.conversation_id)
        .limit(limit),
    )
    return [_deadline(row) for row in rows]


def alert_id(conversation_id: str, version: int, step: str) -> str:
    return f"{conversation_id}:{version}:{step}"


async def claim_alert(
    *,
    session: AsyncSession,
    tenant_id: str,
    conversation_id: str,
    version: int,
    step: str,
    lease_until: datetime,
    now: datetime,
) -> AlertClaim:
    """Take the right to send this alert: once per (conversation, version, step), across replicas."""
    key = alert_id(conversation_id, version, step)
    inserted = await execute(
        session,
        insert_ignoring(session, ALERTS).values(
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
            lease_until=lease_until,
            last_error="",
            created_at=now,
        ),
    )
    if inserted.rowcount == 1:
        return AlertClaim(ClaimOutcome.claimed, 0)
    row = (await fetch_rows(session, select(ALERTS).where(ALERTS.c.id == key)))[0]
    if row.status in ("sent", "failed", "skipped"):
        return AlertClaim(ClaimOutcome.done, row.attempts)
    taken = await execute(
        session,
        update(ALERTS)
        .where(
            ALERTS.c.id == key,
            ALERTS.c.status.in_(["sending", "retrying"]),
            (ALERTS.c.lease_until.is_(None)) | (ALERTS.c.lease_until < now),
        )
        .values(status="sending", lease_until=lease_until),
    )
    if taken.rowcount == 1:
        return AlertClaim(ClaimOutcome.claimed, row.attempts)
    until = _aware(row.lease_until)
    remaining = (until - now).total_seconds() if until else 1.0
    return AlertClaim(ClaimOutcome.busy, row.attempts, max(0.5, remaining))


async def finish_alert(
    *,
    session: AsyncSession,
    conversation_id: str,
    version: int,
    step: str,
    status: str,
    attempts: int,
    now: datetime,
    recipients: str = "",
    message_id: str = "",
    error: str = "",
) -> None:
    """Record the outcome of one attempt: sent, retrying, failed or skipped."""
    await execute(
        session,
        update(ALERTS)
        .where(ALERTS.c.id == alert_id(conversation_id, version, step))
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


async def advance(
    *, session: AsyncSession, conversation_id: str, version: int, step: str, finished: bool, now: datetime
) -> None:
    """Note the alert of the timeline just handled; `finished`: it was the last one."""
    values: dict[str, Any] = {"last_step": step, "updated_at": now}
    if finished:
        values["state"] = DeadlineState.alerted
    await execute(
        session,
        update(DEADLINES)
        .where(
            DEADLINES.c.conversation_id == conversation_id,
            DEADLINES.c.version == version,
            DEADLINES.c.state == DeadlineState.armed,
        )
        .values(**values),
    )


async def acknowledge(
    *,
    session: AsyncSession,
    tenant_id: str,
    conversation_id: str,
    version: int,
    person_id: str,
    command_id: str,
    now: datetime,
) -> AckResult:
    """Someone is on it: no more escalation for this deadline version. The acknowledgement's
    row names the command that made it, so that command seen again gets its first answer. Another
    tenant's conversation is unknown: nothing is read from it or written to it."""
    ack_id = alert_id(conversation_id, version, "ack")
    before = await fetch_rows(
        session, select(ALERTS).where(ALERTS.c.id == ack_id, ALERTS.c.tenant_id == tenant_id)
    )
    if before and before[0].message_id == command_id:
        return AckResult(AckOutcome.acknowledged, tenant_id, _aware(before[0].sent_at))
    current = await fetch_rows(
        session,
        select(DEADLINES.c.version, DEADLINES.c.acknowledged_at).where(
            DEADLINES.c.conversation_id == conversation_id, DEADLINES.c.tenant_id == tenant_id
        ),
    )
    if not current:
        return AckResult(AckOutcome.unknown)
    if current[0].version != version:
        return AckResult(AckOutcome.outdated, tenant_id)
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
        return AckResult(AckOutcome.already, tenant_id, _aware(current[0].acknowledged_at))
    await execute(
        session,
        insert_ignoring(session, ALERTS).values(
            id=ack_id,
            conversation_id=conversation_id,
            deadline_version=version,
            step="ack",
            tenant_id=tenant_id,
            channel="link",
            recipients=person_id,
            message_id=command_id[:255],
            status="acknowledged",
            attempts=0,
            last_error="",
            created_at=now,
            sent_at=now,
        ),
    )
    return AckResult(AckOutcome.acknowledged, tenant_id, now)


def _aware(moment: datetime | None) -> datetime | None:
    """SQLite gives back naive UTC; PostgreSQL aware."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


@functools.lru_cache(maxsize=2048)
def _chain(text: str | None) -> Chain:
    return Chain.parse(json.loads(text)) if text else Chain()


async def get_chains(*, session: AsyncSession, ids: Iterable[str]) -> dict[str, Chain]:
    """The escalation chain of each conversation: its topic's, else its tenant's."""
    connection = await session.connection()
    rows = await connection.execute(_CHAINS_OF, {"ids": list(ids)})
    return {row.id: _chain(row.topic_escalation or row.escalation) for row in rows}


async def start_alert(
    *, session: AsyncSession, start: AlertStart, lease_until: datetime, now: datetime
) -> AlertStarted:
    """One alert of `SqlRepository.start_alerts`, in its transaction."""
    fired = start.fired
    claim = await claim_alert(
        session=session, tenant_id=fired.tenant_id, conversation_id=fired.conversation_id,
        version=fired.deadline_version, step=fired.step, lease_until=lease_until, now=now,
    )  # fmt: skip
    if claim.outcome is ClaimOutcome.busy:
        return AlertStarted(claim)
    rows: list[Delivery] = []
    if claim.outcome is ClaimOutcome.claimed:
        if start.skipped is None:
            rows = await claim_deliveries(
                session=session, fired=fired, wanted=list(start.wanted), lease_until=lease_until, now=now
            )
        await finish_alert(
            session=session, conversation_id=fired.conversation_id, version=fired.deadline_version,
            step=fired.step, now=now, status=start.status,
            attempts=start.attempts(claim), recipients=start.recipients,
            error=start.skipped or "",
        )  # fmt: skip
    await advance(
        session=session, conversation_id=fired.conversation_id, version=fired.deadline_version,
        step=fired.step, finished=start.finished, now=now,
    )  # fmt: skip
    return AlertStarted(claim, tuple(rows))


_CONTEXTS_OF = (
    select(
        CONVERSATIONS,
        TENANTS.c.name.label("tenant_name"),
        TENANTS.c.manager_id.label("manager_id"),
        TENANTS.c.escalation.label("tenant_escalation"),
        ACCOUNTS.c.handle.label("account_handle"),
        TEAMS.c.lead_id.label("lead_id"),
    )
    .join(TENANTS, TENANTS.c.id == CONVERSATIONS.c.tenant_id)
    .join(ACCOUNTS, ACCOUNTS.c.id == CONVERSATIONS.c.account_id)
    .outerjoin(TEAMS, TEAMS.c.id == CONVERSATIONS.c.team_id)
    .where(CONVERSATIONS.c.id.in_(bindparam("ids", expanding=True)))
)
_MEMBERS_OF = (
    select(MEMBERS.c.team_id, PEOPLE.c.id)
    .join(MEMBERS, MEMBERS.c.person_id == PEOPLE.c.id)
    .where(MEMBERS.c.team_id.in_(bindparam("ids", expanding=True)))
    .order_by(PEOPLE.c.id)
)
_ACTIVE_PEOPLE_OF = select(PEOPLE).where(
    PEOPLE.c.id.in_(bindparam("ids", expanding=True)), PEOPLE.c.active.is_(True)
)


async def get_overdue_contexts(
    *, session: AsyncSession, wanted: Sequence[ContextWanted]
) -> list[OverdueContext | None]:
    """What each alert says and whom it may reach, with their preferences and push link
    generations: four reads for the whole batch, whatever its size. In the order given."""
    if not wanted:
        return []
    connection = await session.connection()

    async def rows_of(statement: Any, ids: list[str]) -> Sequence[Any]:
        return (await connection.execute(statement, {"ids": ids})).all() if ids else []

    conversations = {
        row.id: row for row in await rows_of(_CONTEXTS_OF, sorted({w.conversation_id for w in wanted}))
    }
    teams = sorted({c.team_id for c in conversations.values() if c.team_id is not None})
    members: dict[str, list[str]] = {}
    for row in await rows_of(_MEMBERS_OF, teams):
        members.setdefault(row.team_id, []).append(row.id)
    asked: dict[str, set[str]] = {}
    for w in wanted:
        conversation = conversations.get(w.conversation_id)
        if conversation is None:
            continue
        named = {step.person_id for step in _chain(conversation.tenant_escalation).steps}
        named |= {step.person_id for step in w.chain.steps}
        asked[w.conversation_id] = {
            *members.get(conversation.team_id, []), conversation.owner_id, conversation.lead_id,
            conversation.manager_id, *named,
        } - {None}  # fmt: skip
    everyone = sorted(set().union(*asked.values())) if asked else []
    active = {p.id: p for p in await rows_of(_ACTIVE_PEOPLE_OF, everyone)}
    generations = await link_generations(session=session, people=list(active))
    contexts: list[OverdueContext | None] = []
    for w in wanted:
        conversation = conversations.get(w.conversation_id)
        if conversation is None:
            contexts.append(None)
            continue
        found = [active[p] for p in sorted(asked[w.conversation_id]) if p in active]
        people = {p.id: Recipient(p.name, p.email, p.id) for p in found}
        lead_id, manager_id = conversation.lead_id, conversation.manager_id
        contexts.append(
            OverdueContext(
                conversation_id=conversation.id,
                deadline_version=w.version,
                tenant_name=conversation.tenant_name,
                account_id=conversation.account_id,
                account_handle=conversation.account_handle,
                platform=conversation.platform,
                author_name=conversation.author_name or conversation.author_id,
                text=conversation.last_inbound_text,
                url=conversation.last_inbound_url,
                waiting_since=conversation.awaiting_since or conversation.opened_at,
                due_at=w.due_at,
                owner=people.get(conversation.owner_id or ""),
                team=[people[p] for p in members.get(conversation.team_id, []) if p in people],
                # The router's own record closes the window in which it has committed a
                # reply whose cleared deadline has not reached notify yet.
                still_waiting=conversation.deadline_version == w.version and conversation.due_at is not None,
                tenant_id=conversation.tenant_id,
                lead=people.get(lead_id or ""),
                manager=people.get(manager_id or ""),
                people=people,
                preferences={p.id: _preferences(p) for p in found},
                link_generations={p: generations.get(p, 0) for p in people},
            )
        )
    return contexts


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
    lease_until: datetime,
    now: datetime,
    include_failed: bool = False,
) -> list[Delivery]:
    """Take the (channel, person) deliveries of an alert that are not done yet: new ones, and
    retrying ones whose lease has run out (another replica is not sending them)."""
    alert = alert_id(fired.conversation_id, fired.deadline_version, fired.step)
    if wanted:
        await execute(
            session,
            insert_ignoring(session, DELIVERIES),
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
    if wanted:
        which = DELIVERIES.c.alert_id == alert
    else:  # a retry: every delivery of this deadline version still owed
        which = (DELIVERIES.c.conversation_id == fired.conversation_id) & (
            DELIVERIES.c.deadline_version == fired.deadline_version
        )
    # One statement takes them: a delivery another replica took meanwhile no longer matches.
    rows = await fetch_rows(
        session,
        update(DELIVERIES)
        .where(
            which,
            DELIVERIES.c.status.in_(statuses),
            (DELIVERIES.c.lease_until.is_(None)) | (DELIVERIES.c.lease_until < now),
        )
        .values(
            status="sending",
            lease_until=lease_until,
            # a failed delivery taken again (a replayed dead letter) starts its attempts over
            attempts=case((DELIVERIES.c.status == "failed", 0), else_=DELIVERIES.c.attempts),
        )
        .returning(*DELIVERIES.c),
    )
    return sorted((_delivery(row) for row in rows), key=lambda d: d.id)


def _delivery(row: Any) -> Delivery:
    return Delivery(
        id=row.id,
        conversation_id=row.conversation_id,
        deadline_version=row.deadline_version,
        step=row.step,
        tenant_id=row.tenant_id,
        channel=row.channel,
        person_id=row.person_id,
        status=row.status,
        attempts=row.attempts,
    )


_FINISH_DELIVERY = (
    update(DELIVERIES)
    .where(DELIVERIES.c.id == bindparam("row_id"))
    .values(
        status=bindparam("new_status"),
        attempts=bindparam("new_attempts"),
        lease_until=None,
        last_error=bindparam("error"),
        detail=bindparam("new_detail"),
        sent_at=bindparam("at"),
    )
)


async def finish_deliveries(*, session: AsyncSession, updates: list[DeliveryUpdate], now: datetime) -> None:
    """Each delivery's outcome, in one statement (executemany)."""
    await execute(
        session,
        _FINISH_DELIVERY,
        [
            {
                "row_id": u.id, "new_status": u.status, "new_attempts": u.attempts, "error": u.error[:2000],
                "new_detail": u.detail[:500], "at": now if u.status == "sent" else None,
            }
            for u in updates
        ],
    )  # fmt: skip


async def get_preferences(
    *, session: AsyncSession, people: Iterable[str]
) -> tuple[dict[str, Preferences], dict[str, str]]:
    """People's alert preferences, and their sealed Apprise URLs."""
    connection = await session.connection()
    rows = (await connection.execute(_PEOPLE_OF, {"ids": list(people)})).all()
    return {row.id: _preferences(row) for row in rows}, {row.id: row.apprise_urls for row in rows}


def _preferences(row: Any) -> Preferences:
    return Preferences.parse(
        row.notify,
        row.quiet_hours,
        row.timezone,
        working_hours=row.working_hours,
        present=row.active and row.status != "offline",
    )


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
    *, session: AsyncSession, person_id: str, channel: str, lease_until: datetime, now: datetime
) -> list[Delivery]:
    """The alerts held back for one person on one channel, taken for sending as one message."""
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
        .values(status="sending", lease_until=lease_until),
    )
    rows = await fetch_rows(
        session,
        select(DELIVERIES)
        .where(DELIVERIES.c.id.in_(ids), DELIVERIES.c.status == "sending")
        .order_by(DELIVERIES.c.created_at, DELIVERIES.c.id),
    )
    return [_delivery(row) for row in rows]


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


async def get_assignment_context(
    *, session: AsyncSession, conversation_id: str, person_id: str
) -> AssignmentContext | None:
    found = await fetch_rows(
        session,
        select(
            CONVERSATIONS.c.platform,
            CONVERSATIONS.c.author_name,
            CONVERSATIONS.c.last_inbound_text,
            CONVERSATIONS.c.last_inbound_url,
            TENANTS.c.name.label("tenant_name"),
            PEOPLE.c.name.label("person_name"),
            PEOPLE.c.email,
        )
        .select_from(CONVERSATIONS)
        .join(TENANTS, TENANTS.c.id == CONVERSATIONS.c.tenant_id)
        .join(PEOPLE, PEOPLE.c.id == person_id)
        .where(CONVERSATIONS.c.id == conversation_id),
    )
    if not found:
        return None
    row = found[0]
    return AssignmentContext(
        tenant_name=row.tenant_name,
        platform=row.platform,
        author_name=row.author_name,
        text=row.last_inbound_text,
        url=row.last_inbound_url,
        person=Recipient(row.person_name, row.email, person_id),
    )


def _encode(batch: EventBatch) -> bytes:
    return "\n".join(
        json.dumps([e.subject, e.msg_id, e.payload.decode()], separators=(",", ":")) for e in batch.envelopes
    ).encode()


def _decode(row_id: str, blob: bytes) -> EventBatch:
    envelopes = []
    for line in blob.decode().splitlines():
        subject, msg_id, payload = json.loads(line)
        envelopes.append(Envelope(subject, msg_id, payload.encode()))
    return EventBatch(row_id, tuple(envelopes))


async def add_events(*, session: AsyncSession, events: EventBatch, now: datetime) -> None:
    await execute(
        session,
        insert_ignoring(session, NOTIFY_OUTBOX).values(
            id=events.id, messages=_encode(events), created_at=now
        ),
    )


class SqlRepository:
    """`ports.NotifyRepository` over the database: each method one transaction."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions

    async def store_deadlines(
        self, events: Iterable[DeadlineChanged], *, now: datetime
    ) -> dict[str, CurrentDeadline]:
        async with transaction(self.sessions) as session:
            return await store_deadlines(session=session, events=list(events), now=now)

    async def current(self, ids: Iterable[str]) -> dict[str, CurrentDeadline]:
        async with self.sessions() as session:
            return await get_current(session=session, ids=list(ids))

    async def deadlines(self, ids: Iterable[str]) -> dict[str, WatchedDeadline]:
        async with self.sessions() as session:
            return await get_deadlines(session=session, ids=list(ids))

    async def armed_deadlines(self, *, after: str, limit: int) -> list[WatchedDeadline]:
        async with self.sessions() as session:
            return await get_armed_deadlines(session=session, after=after, limit=limit)

    async def chains(self, ids: Iterable[str]) -> dict[str, Chain]:
        async with self.sessions() as session:
            return await get_chains(session=session, ids=list(ids))

    async def claim_alert(
        self,
        *,
        tenant_id: str,
        conversation_id: str,
        version: int,
        step: str,
        lease_until: datetime,
        now: datetime,
    ) -> AlertClaim:
        async with transaction(self.sessions) as session:
            return await claim_alert(
                session=session, tenant_id=tenant_id, conversation_id=conversation_id, version=version,
                step=step, lease_until=lease_until, now=now,
            )  # fmt: skip

    async def finish_alert(
        self, *, conversation_id: str, version: int, step: str, status: str, attempts: int,
        recipients: str = "", error: str = "", now: datetime,
    ) -> None:  # fmt: skip
        async with transaction(self.sessions) as session:
            await finish_alert(
                session=session, conversation_id=conversation_id, version=version, step=step, status=status,
                attempts=attempts, now=now, recipients=recipients, error=error,
            )  # fmt: skip

    async def start_alerts(
        self, starts: Sequence[AlertStart], *, lease_until: datetime, now: datetime
    ) -> list[AlertStarted]:
        async with transaction(self.sessions) as session:
            return [
                await start_alert(session=session, start=start, lease_until=lease_until, now=now)
                for start in starts
            ]

    async def claim_owed(
        self,
        *,
        conversation_id: str,
        version: int,
        include_failed: bool,
        lease_until: datetime,
        now: datetime,
    ) -> list[Delivery]:
        fired = TimerPayload(
            tenant_id="", conversation_id=conversation_id, deadline_version=version, step="retry", at=now
        )
        async with transaction(self.sessions) as session:
            return await claim_deliveries(
                session=session, fired=fired, wanted=[], lease_until=lease_until, now=now,
                include_failed=include_failed,
            )  # fmt: skip

    async def finish_deliveries(
        self, updates: list[DeliveryUpdate], *, events: EventBatch | None, now: datetime
    ) -> None:
        async with transaction(self.sessions) as session:
            await finish_deliveries(session=session, updates=updates, now=now)
            if events is not None and events.envelopes:
                await add_events(session=session, events=events, now=now)

    async def advance(
        self, *, conversation_id: str, version: int, step: str, finished: bool, now: datetime
    ) -> None:
        async with transaction(self.sessions) as session:
            await advance(
                session=session, conversation_id=conversation_id, version=version, step=step,
                finished=finished, now=now,
            )  # fmt: skip

    async def acknowledge(
        self,
        *,
        tenant_id: str,
        conversation_id: str,
        version: int,
        person_id: str,
        command_id: str,
        now: datetime,
    ) -> AckResult:
        async with transaction(self.sessions) as session:
            return await acknowledge(
                session=session, tenant_id=tenant_id, conversation_id=conversation_id, version=version,
                person_id=person_id, command_id=command_id, now=now,
            )  # fmt: skip

    async def overdue_contexts(self, wanted: Sequence[ContextWanted]) -> list[OverdueContext | None]:
        async with self.sessions() as session:
            return await get_overdue_contexts(session=session, wanted=wanted)

    async def assignment_context(self, *, conversation_id: str, person_id: str) -> AssignmentContext | None:
        async with self.sessions() as session:
            return await get_assignment_context(
                session=session, conversation_id=conversation_id, person_id=person_id
            )

    async def account_names(self, account_id: str) -> tuple[str, str]:
        async with self.sessions() as session:
            return await get_account_names(session=session, account_id=account_id)

    async def preferences(self, people: Iterable[str]) -> dict[str, Preferences]:
        async with self.sessions() as session:
            return (await get_preferences(session=session, people=list(people)))[0]

    async def link_generations(self, people: Iterable[str]) -> dict[str, int]:
        async with self.sessions() as session:
            return await link_generations(session=session, people=list(people))

    async def recently_sent(
        self, *, pairs: set[tuple[str, str]], since: datetime, exclude: set[str]
    ) -> dict[tuple[str, str], int]:
        async with self.sessions() as session:
            return await recently_sent(session=session, pairs=pairs, since=since, exclude=exclude)

    async def claim_grouped(
        self, *, person_id: str, channel: str, lease_until: datetime, now: datetime
    ) -> list[Delivery]:
        async with transaction(self.sessions) as session:
            return await claim_grouped(
                session=session, person_id=person_id, channel=channel, lease_until=lease_until, now=now
            )

    async def count_grouped(self, *, person_id: str, channel: str) -> int:
        async with self.sessions() as session:
            return await count_grouped(session=session, person_id=person_id, channel=channel)

    async def add_events(self, events: EventBatch, *, now: datetime) -> None:
        async with transaction(self.sessions) as session:
            await add_events(session=session, events=events, now=now)

    async def pending_events(self, *, older_than: datetime | None, limit: int) -> list[EventBatch]:
        query = select(NOTIFY_OUTBOX).order_by(NOTIFY_OUTBOX.c.created_at, NOTIFY_OUTBOX.c.id).limit(limit)
        if older_than is not None:
            query = query.where(NOTIFY_OUTBOX.c.created_at < older_than)
        async with self.sessions() as session:
            return [_decode(row.id, row.messages) for row in await fetch_rows(session, query)]

    async def published(self, ids: list[str]) -> None:
        if ids:
            async with transaction(self.sessions) as session:
                await execute(session, delete(NOTIFY_OUTBOX).where(NOTIFY_OUTBOX.c.id.in_(ids)))
