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
