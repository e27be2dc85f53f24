"""Read-only views for operators, until the API exists.

Times are UTC: RFC 3339 with the offset in JSON (`2026-05-22T15:55:00+00:00`), and
`YYYY-MM-DD HH:MM:SS` under a header that says UTC in tables.
"""

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func
from sqlmodel import col, select

from shared.db.models import AccountRow, ConversationRow, InteractionRow, PersonRow, PollStateRow
from shared.db.session import create_engine, session_factory
from shared.events import utcnow

DEFAULT_LIMIT = 50


def rfc3339(value: Any) -> Any:
    """What `json.dumps` writes for a value of these views: times as RFC 3339 with their offset."""
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _table_time(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def _render(header: tuple[str, ...], lines: Sequence[tuple[Any, ...]]) -> str:
    rows = [header, *lines]
    widths = [max(len(str(line[i])) for line in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(str(v).ljust(w) for v, w in zip(line, widths, strict=True)).rstrip() for line in rows
    )


async def list_conversations(
    url: str, *, tenant: str | None, state: str | None, limit: int
) -> list[dict[str, Any]]:
    """The newest `limit` conversations (by when they opened), with who owns them and why."""
    engine = create_engine(url)
    try:
        async with session_factory(engine)() as session:
            query = (
                select(ConversationRow, PersonRow.name)
                .join(PersonRow, col(PersonRow.id) == col(ConversationRow.owner_id), isouter=True)
                .order_by(col(ConversationRow.opened_at).desc(), col(ConversationRow.id))
                .limit(limit)
            )
            if tenant:
                query = query.where(ConversationRow.tenant_id == tenant)
            if state:
                query = query.where(ConversationRow.state == state)
            rows = (await session.exec(query)).all()
    finally:
        await engine.dispose()
    return [
        {
            "id": conversation.id,
            "tenant": conversation.tenant_id,
            "account": conversation.account_id,
            "platform": conversation.platform,
            "thread": conversation.thread_id,
            "state": conversation.state,
            "topic": conversation.topic,
            "priority": conversation.priority,
            "owner": conversation.owner_id,
            "owner_name": owner_name,
            "author": conversation.author_name or conversation.author_id,
            "opened_at": conversation.opened_at,
            "warn_at": conversation.warn_at,
            "due_at": conversation.due_at,
            "why": conversation.assignment_reason,
            "text": conversation.last_inbound_text,
        }
        for conversation, owner_name in rows
    ]


def render_table(rows: list[dict[str, Any]], *, more: bool = False) -> str:
    """`more`: older conversations were left out (the rows are the newest `len(rows)`)."""
    if not rows:
        return "no conversations"
    header = (
        "CONVERSATION", "TENANT", "ACCOUNT", "STATE", "OWNER", "AUTHOR", "OPENED (UTC)", "DUE (UTC)", "TEXT",
    )  # fmt: skip
    lines = [
        (
            row["id"][:12],
            row["tenant"],
            row["account"],
            row["state"],
            row["owner_name"] or row["owner"] or "(queued)",
            row["author"][:20],
            _table_time(row["opened_at"]),
            _table_time(row["due_at"]),
            row["text"].replace("\n", " ")[:40],
        )
        for row in rows
    ]
    table = _render(header, lines)
    if more:
        table += f"\n(the newest {len(rows)}; --limit N shows more)"
    return table


async def list_accounts(url: str, *, tenant: str | None) -> list[dict[str, Any]]:
    """Every account with how its connector is doing: polled platforms keep a health record;
    a webhook account is `waiting` until its first event, `ok` once events arrive, and
    `silent` when it falls under a tenth of its usual daily rate (the operator alert's rule)."""
    from services.ingest.silence import is_silent

    now = utcnow()
    day, week = now - timedelta(days=1), now - timedelta(days=8)
    engine = create_engine(url)
    try:
        async with session_factory(engine)() as session:
            last_received = (
                select(func.max(InteractionRow.received_at))
                .where(col(InteractionRow.account_id) == col(AccountRow.id))
                .correlate(AccountRow)
                .scalar_subquery()
            )
            query = select(AccountRow, last_received).order_by(col(AccountRow.tenant_id), col(AccountRow.id))
            if tenant:
                query = query.where(AccountRow.tenant_id == tenant)
            accounts = (await session.exec(query)).all()
            states = (await session.exec(select(PollStateRow))).all()
            received = col(InteractionRow.received_at)
            rates = (
                await session.exec(
                    select(
                        InteractionRow.account_id,
                        func.count().filter(received >= day),
                        func.count().filter(received < day),
                    )
                    .where(received >= week)
                    .group_by(col(InteractionRow.account_id))
                )
            ).all()
    finally:
        await engine.dispose()
    health = {s.account_id: s for s in states if s.feed == "health"}
    last_event: dict[str, datetime] = {}
    for state in states:
        if state.last_event_at and (
            state.account_id not in last_event or state.last_event_at > last_event[state.account_id]
        ):
            last_event[state.account_id] = state.last_event_at
    rate = {account_id: (last_day, before) for account_id, last_day, before in rates}
    rows = []
    for account, received_at in accounts:
        record = health.get(account.id)
        polled = account.credentials is not None
        latest = max(
            (t for t in (last_event.get(account.id), _utc(received_at)) if t is not None), default=None
        )
        if record is not None:
            condition = record.state
        elif polled:
            condition = "starting"
        elif latest is None:
            condition = "waiting"
        else:
            last_day, before = rate.get(account.id, (0, 0))
            condition = "silent" if is_silent(last_day=last_day, previous_week=before) else "ok"
        rows.append(
            {
                "id": account.id,
                "tenant": account.tenant_id,
                "platform": account.platform,
                "platform_id": account.external_id,
                "mode": "polled" if polled else "webhook",
                "state": condition,
                "last_event_at": latest,
                "last_success_at": record.last_success_at if record else None,
                "last_error": record.last_error if record else "",
            }
        )
    return rows


def _utc(value: datetime | str | None) -> datetime | None:
    """A time read through a subquery: SQLite gives it back naive (UTC) or as text."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def render_accounts(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no accounts"
    header = ("ACCOUNT", "TENANT", "PLATFORM", "MODE", "STATE", "LAST EVENT (UTC)", "LAST ERROR")
    lines = [
        (
            row["id"], row["tenant"], row["platform"], row["mode"], row["state"],
            _table_time(row["last_event_at"]), (row["last_error"] or "-")[:60],
        )
        for row in rows
    ]  # fmt: skip
    return _render(header, lines)
