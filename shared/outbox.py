"""The outbox: messages committed with the state that caused them, published after the commit.

The router writes its events here in the transaction that routes a batch;
`stayhuman apply` writes commands here (a removed owner's hand-over, a
recompute) in the transaction that changes the configuration. The router's relay
publishes what is left under each message's own `Nats-Msg-Id`, so a crash
between commit and publish only delays a message, never loses or doubles it.
"""

import json
from datetime import datetime, timedelta

from sqlalchemy import delete, insert, select
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.db.core import OUTBOX, execute, fetch_rows
from shared.events import utcnow
from shared.ids import new_id
from shared.messages import Outgoing, command_outgoing  # noqa: F401 (here since before)

# Rows written for the relay alone (nobody publishes them first) are dated this far
# back, so the relay takes them at its next pass instead of waiting out its grace.
RELAY_AT_ONCE = timedelta(days=1)


# A row holds its messages one after another, each a line of JSON saying where it goes and how
# long its payload is, then the payload's bytes as they will be published. (Rows written before
# this format are lines of JSON with the payload as a string in them: still read.)
_FORMAT = b"stayhuman-outbox 2\n"
# One encoder for every head line: `json.dumps` with separators of its own builds an encoder a call.
_HEAD = json.JSONEncoder(separators=(",", ":")).encode


def encode(messages: list[Outgoing]) -> bytes:
    parts = [_FORMAT]
    for m in messages:
        head = [m.subject, m.msg_id, m.correlation_id, m.headers, len(m.payload)]
        parts.append(_HEAD(head).encode() + b"\n")
        parts.append(m.payload)
    return b"".join(parts)


def decode(blob: bytes) -> list[Outgoing]:
    if not blob.startswith(_FORMAT):
        return _decode_lines(blob)
    result = []
    at = len(_FORMAT)
    while at < len(blob):
        end = blob.index(b"\n", at)
        subject, msg_id, correlation_id, headers, size = json.loads(blob[at:end])
        at = end + 1 + size
        result.append(Outgoing(subject, blob[end + 1 : at], msg_id, correlation_id, headers))
    return result


def _decode_lines(blob: bytes) -> list[Outgoing]:
    result = []
    for line in blob.decode().splitlines():
        subject, msg_id, correlation_id, payload, headers = json.loads(line)
        result.append(Outgoing(subject, payload.encode(), msg_id, correlation_id, headers))
    return result


async def add_outbox(
    *, session: AsyncSession, messages: list[Outgoing], relay_only: bool = False
) -> str | None:
    """Keep messages with the state that caused them; returns the outbox row id.

    `relay_only`: nobody publishes these right after the commit (a configuration
    change): the relay takes them at its next pass."""
    if not messages:
        return None
    row_id = new_id()
    created_at = utcnow() - RELAY_AT_ONCE if relay_only else utcnow()
    await execute(session, insert(OUTBOX).values(id=row_id, messages=encode(messages), created_at=created_at))
    return row_id


async def get_pending_outbox(
    *, session: AsyncSession, older_than: datetime | None, limit: int
) -> dict[str, list[Outgoing]]:
    query = select(OUTBOX).order_by(OUTBOX.c.created_at).limit(limit)
    if older_than is not None:
        query = query.where(OUTBOX.c.created_at < older_than)
    return {row.id: decode(row.messages) for row in await fetch_rows(session, query)}


async def delete_outbox(*, session: AsyncSession, ids: list[str]) -> None:
    await execute(session, delete(OUTBOX).where(OUTBOX.c.id.in_(ids)))
