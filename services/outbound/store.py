"""The outbound service's tables, and what it reads of the others', in SQL.

It owns `reply` (each reply, recorded before it is posted) and `replytoken` (reply credentials
as it refreshed them). It reads a signed-in person's session (only a live session of the person
a reply names may send it), the conversation and the message a reply answers, the account and
its sealed reply credentials, and the thread's outbound interactions (an echo of a reply whose
answer was lost says it went out)."""

import json
from datetime import datetime
from typing import Any

from sqlalchemy import func, update
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.outbound.ports import Answered
from shared import reply_rules
from shared.db.core import execute
from shared.db.models import (
    AccountRow,
    ConversationRow,
    InteractionRow,
    PersonRow,
    ReplyRow,
    ReplyTokenRow,
    WebSessionRow,
)
from shared.db.session import dialect_insert
from shared.events import ReplyState


class SqlStore:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions

    # -- who may send ---------------------------------------------------------------------

    async def live_session(self, session_sha256: str, person_id: str, now: datetime) -> bool:
        """Whether the session is signed in now, and is that person's."""
        async with self.sessions() as session:
            row = await session.get(WebSessionRow, session_sha256)
            if row is None or row.person_id != person_id or row.expires_at <= now:
                return False
            person = await session.get(PersonRow, person_id)
            return person is not None and person.active

    async def person_name(self, person_id: str) -> str:
        async with self.sessions() as session:
            person = await session.get(PersonRow, person_id)
            return person.name if person is not None else person_id

    # -- what a reply answers ---------------------------------------------------------------

    async def answered(self, tenant_id: str, conversation_id: str, reply_to: str | None) -> Answered | None:
        """The conversation (of that tenant only), its account, and the message answered: the one
        named, if it is an inbound message of that conversation, else its latest inbound message."""
        async with self.sessions() as session:
            conversation = await session.get(ConversationRow, conversation_id)
            if conversation is None or conversation.tenant_id != tenant_id:
                return None
            account = await session.get(AccountRow, conversation.account_id)
            if account is None:
                return None
            query = select(InteractionRow).where(
                InteractionRow.conversation_id == conversation.id,
                InteractionRow.direction == "inbound",
                col(InteractionRow.retracted_at).is_(None),
            )
            if reply_to is not None:
                query = query.where(InteractionRow.id == reply_to)
            query = query.order_by(
                col(InteractionRow.created_at).desc(), col(InteractionRow.id).desc()
            ).limit(1)
            interaction = (await session.exec(query)).first()
            if interaction is None:
                return None
            return Answered(
                conversation, account, interaction, reply_rules.context_of(interaction.reply_context)
            )

    async def private_reply_used(self, account_id: str, target: str, reply_id: str) -> bool:
        """Instagram allows one private reply to a comment: one went (or may have gone) already."""
        async with self.sessions() as session:
            query = select(func.count()).where(
                ReplyRow.account_id == account_id,
                ReplyRow.target == target,
                ReplyRow.method == "private_reply",
                ReplyRow.id != reply_id,
                col(ReplyRow.state).in_([ReplyState.sending, ReplyState.sent, ReplyState.in_doubt]),
            )
            return bool((await session.exec(query)).one())

    async def youtube_replies_since(self, since: datetime, reply_id: str) -> int:
        """Replies posted (or being posted) on YouTube since `since`: each took 50 quota units."""
        async with self.sessions() as session:
            query = select(func.count()).where(
                ReplyRow.platform == "youtube",
                ReplyRow.id != reply_id,
                col(ReplyRow.started_at).is_not(None) | (ReplyRow.state == ReplyState.sent),
                ReplyRow.requested_at >= since,
            )
            return int((await session.exec(query)).one())

    async def brand_messages(
        self, account_id: str, conversation_id: str, since: datetime
    ) -> list[InteractionRow]:
        """The brand's messages in the thread written since `since`: where the platform's echo of
        a reply whose answer was lost would be."""
        async with self.sessions() as session:
            query = (
                select(InteractionRow)
                .where(
                    InteractionRow.account_id == account_id,
                    InteractionRow.conversation_id == conversation_id,
                    InteractionRow.direction == "outbound",
                    InteractionRow.created_at >= since,
                )
                .order_by(col(InteractionRow.created_at))
            )
            return list((await session.exec(query)).all())

    # -- replies ----------------------------------------------------------------------------

    async def get(self, reply_id: str) -> ReplyRow | None:
        async with self.sessions() as session:
            return await session.get(ReplyRow, reply_id)

    async def record(self, row: ReplyRow) -> ReplyRow:
        """Record a reply before anything is posted; the stored one when it was recorded already."""
        async with self.sessions() as session, session.begin():
            values = row.model_dump()
            await execute(
                session, dialect_insert(session, ReplyRow).values(**values).on_conflict_do_nothing()
            )
        stored = await self.get(row.id)
        assert stored is not None
        return stored

    async def start_attempt(self, row: ReplyRow, now: datetime) -> ReplyRow | None:
        """Record an attempt before it is made, if nobody else did since `row` was read (two
        replicas holding the same command make one attempt); None when another did."""
        async with self.sessions() as session, session.begin():
            result = await execute(
                session,
                update(ReplyRow)
                .where(
                    col(ReplyRow.id) == row.id,
                    col(ReplyRow.attempts) == row.attempts,
                    col(ReplyRow.state) == ReplyState.sending,
                )
                .values(attempts=row.attempts + 1, started_at=now, updated_at=now),
            )
            if result.rowcount != 1:
                return None
        return await self.get(row.id)

    async def update(self, reply_id: str, **values: Any) -> ReplyRow:
        async with self.sessions() as session, session.begin():
            await execute(session, update(ReplyRow).where(col(ReplyRow.id) == reply_id).values(**values))
        stored = await self.get(reply_id)
        assert stored is not None
        return stored

    # -- credentials ------------------------------------------------------------------------

    async def refreshed(self, account_id: str) -> ReplyTokenRow | None:
        async with self.sessions() as session:
            return await session.get(ReplyTokenRow, account_id)

    async def keep_token(
        self,
        account_id: str,
        *,
        source: str,
        sealed: str,
        expires_at: datetime | None,
        failing: str,
        now: datetime,
    ) -> None:
        async with self.sessions() as session, session.begin():
            values = {
                "account_id": account_id,
                "source_sha256": source,
                "credentials": sealed,
                "expires_at": expires_at,
                "failing": failing[:1000],
                "updated_at": now,
            }
            insert = dialect_insert(session, ReplyTokenRow).values(**values)
            await execute(
                session,
                insert.on_conflict_do_update(
                    index_elements=["account_id"], set_={k: v for k, v in values.items() if k != "account_id"}
                ),
            )


def credentials_json(values: dict[str, Any]) -> str:
    return json.dumps(values, sort_keys=True, separators=(",", ":"))
