"""What the outbound service needs from outside: its store (`store.SqlStore`) and one client
per platform (`platforms.base.PlatformClient`, each over real HTTP)."""

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from shared.db.models import AccountRow, ConversationRow, InteractionRow, ReplyRow, ReplyTokenRow
from shared.events import ReplyContext


@dataclass(frozen=True)
class Answered:
    """The message a reply answers, with its conversation and account."""

    conversation: ConversationRow
    account: AccountRow
    interaction: InteractionRow
    context: ReplyContext | None


class ReplyStore(Protocol):
    # who may send
    async def live_session(self, session_sha256: str, person_id: str, now: datetime) -> bool: ...
    async def person_name(self, person_id: str) -> str: ...

    # what a reply answers
    async def answered(
        self, tenant_id: str, conversation_id: str, reply_to: str | None
    ) -> Answered | None: ...
    async def private_reply_used(self, account_id: str, target: str, reply_id: str) -> bool: ...
    async def youtube_replies_since(self, since: datetime, reply_id: str) -> int: ...
    async def brand_messages(
        self, account_id: str, conversation_id: str, since: datetime
    ) -> list[InteractionRow]: ...

    # replies: recorded before they are posted, each attempt claimed before it is made
    async def get(self, reply_id: str) -> ReplyRow | None: ...
    async def record(self, row: ReplyRow) -> ReplyRow: ...
    async def start_attempt(self, row: ReplyRow, now: datetime) -> ReplyRow | None: ...
    async def update(self, reply_id: str, **values: Any) -> ReplyRow: ...

    # credentials as refreshed
    async def refreshed(self, account_id: str) -> ReplyTokenRow | None: ...
    async def keep_token(
        self,
        account_id: str,
        *,
        source: str,
        sealed: str,
        expires_at: datetime | None,
        failing: str,
        now: datetime,
    ) -> None: ...
