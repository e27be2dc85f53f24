"""Read-only views for operators, until the API exists."""

from typing import Any

from sqlmodel import col, select

from shared.db.models import Conversation, Person
from shared.db.session import create_engine, session_factory


async def list_conversations(
    url: str, *, tenant: str | None, state: str | None, limit: int
) -> list[dict[str, Any]]:
    engine = create_engine(url)
    try:
        async with session_factory(engine)() as session:
            query = (
                select(Conversation, Person.name)
                .join(Person, col(Person.id) == col(Conversation.owner_id), isouter=True)
                .order_by(col(Conversation.opened_at).desc())
                .limit(limit)
            )
            if tenant:
                query = query.where(Conversation.tenant_id == tenant)
            if state:
                query = query.where(Conversation.state == state)
            rows = (await session.exec(query)).all()
    finally:
        await engine.dispose()
    return [
        {
            "id": conversation.id,
            "tenant": conversation.tenant_id,
            "account": conversation.account_id,
            "thread": conversation.thread_id,
            "state": conversation.state,
            "owner": conversation.owner_id,
            "owner_name": owner_name,
            "author": conversation.author_name or conversation.author_id,
            "opened_at": conversation.opened_at,
            "due_at": conversation.due_at,
            "why": conversation.assignment_reason,
            "text": conversation.last_inbound_text,
        }
        for conversation, owner_name in rows
    ]


def render_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no conversations"
    header = ("CONVERSATION", "TENANT", "ACCOUNT", "STATE", "OWNER", "AUTHOR", "OPENED", "DUE", "TEXT")
    lines = [header]
    for row in rows:
        lines.append(
            (
                row["id"][:12],
                row["tenant"],
                row["account"],
                row["state"],
                row["owner_name"] or row["owner"] or "(queued)",
                row["author"][:20],
                row["opened_at"].strftime("%Y-%m-%d %H:%M:%S"),
                row["due_at"].strftime("%H:%M:%S") if row["due_at"] else "-",
                row["text"].replace("\n", " ")[:40],
            )
        )
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(str(v).ljust(w) for v, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )


async def list_accounts(url: str, *, tenant: str | None) -> list[dict[str, Any]]:
    """Every account with how its connector is doing (polled platforms keep a health record)."""
    from shared.db.models import Account, PollState

    engine = create_engine(url)
    try:
        async with session_factory(engine)() as session:
            query = select(Account).order_by(col(Account.tenant_id), col(Account.id))
            if tenant:
                query = query.where(Account.tenant_id == tenant)
            accounts = (await session.exec(query)).all()
            states = (await session.exec(select(PollState))).all()
    finally:
        await engine.dispose()
    health = {s.account_id: s for s in states if s.feed == "health"}
    last_event: dict[str, Any] = {}
    for state in states:
        if state.last_event_at and (
            state.account_id not in last_event or state.last_event_at > last_event[state.account_id]
        ):
            last_event[state.account_id] = state.last_event_at
    rows = []
    for account in accounts:
        record = health.get(account.id)
        polled = account.credentials is not None
        rows.append(
            {
                "id": account.id,
                "tenant": account.tenant_id,
                "platform": account.platform,
                "platform_id": account.external_id,
                "mode": "polled" if polled else "webhook",
                "state": record.state if record else ("starting" if polled else "-"),
                "last_event_at": last_event.get(account.id),
                "last_success_at": record.last_success_at if record else None,
                "last_error": record.last_error if record else "",
            }
        )
    return rows


def render_accounts(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no accounts"
    header = ("ACCOUNT", "TENANT", "PLATFORM", "MODE", "STATE", "LAST EVENT", "LAST ERROR")
    lines = [header]
    for row in rows:
        lines.append(
            (
                row["id"], row["tenant"], row["platform"], row["mode"], row["state"],
                row["last_event_at"].strftime("%Y-%m-%d %H:%M:%S") if row["last_event_at"] else "-",
                (row["last_error"] or "-")[:60],
            )
        )  # fmt: skip
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(str(v).ljust(w) for v, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )
