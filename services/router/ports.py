"""What the router's application service needs from the world outside: storage, a clock, ids.

`Repository` opens units of work; `sql.SqlRepository` keeps them in SQLite or
PostgreSQL, `memory.MemoryRepository` in a process (tests, simulations). Both
must give the same service the same answers: `tests/integration/
test_router_repository_contract.py` holds them to it. `Clock` and `Ids` are given
so that the same input, at the same time, with the same ids, gives the same
output byte for byte.
"""

from collections.abc import Callable, Iterable
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta
from typing import Protocol

from services.router.conversations import Conversation, Reply, World
from shared import ids
from shared.events import InteractionReceived, utcnow
from shared.messages import Outgoing

# Processed command ids are kept a little longer than SH_COMMANDS keeps the commands.
COMMAND_MEMORY = timedelta(days=8)


def reply_context_json(ix: InteractionReceived) -> str | None:
    """What answering an interaction needs, as both repositories keep it (`ReplyContext` as JSON,
    only the fields the platform gave), or None when it gave nothing."""
    return ix.reply.model_dump_json(exclude_defaults=True) if ix.reply is not None else None


class LoadConflict(RuntimeError):
    """An owner's load could not change as planned: another transaction got there first."""


class Contention(RuntimeError):
    """The database gave up a unit of work for another's sake (a deadlock, a serialization
    failure): nothing of it was kept, and doing it again is safe."""


class UnitOfWork(Protocol):
    """One transaction: everything written in it is kept together, or nothing is."""

    async def lock_accounts(self, account_ids: Iterable[str]) -> None:
        """Route each account's messages one transaction at a time (across routers), before
        anything is read, so that a reply never looks for a conversation still being opened."""

    async def known_interactions(self, ids: Iterable[str]) -> set[str]:
        """Which of these interactions are stored already (platforms redeliver for days)."""
        ...

    async def parent_conversations(self, wanted: set[tuple[str, str]]) -> dict[tuple[str, str], str]:
        """(account, external id) of earlier messages -> the conversation they are in."""
        ...

    async def load_world(
        self,
        *,
        now: datetime,
        backfill_cutoff: timedelta,
        new_id: Callable[[], str],
        conversation_ids: Iterable[str] = (),
        account_ids: Iterable[str] = (),
        person_ids: Iterable[str] = (),
        tenant_ids: Iterable[str] = (),
        owned_by: Iterable[str] = (),
        reach: Callable[[World], set[str]] | None = None,
    ) -> World:
        """Lock and load what the transaction may change: these conversations and those the
        `owned_by` people own (open or paused), the accounts, the rules of every tenant involved
        (the people's too), and the people named, the owners, and every person of the teams
        `reach` names once the rest is loaded (when None: of every team of those tenants)."""
        ...

    async def load_continuity(self, world: World, pairs: set[tuple[str, str]]) -> None:
        """Who last answered each (account, author)."""

    async def load_replies(self, world: World, keys: Iterable[str], since: datetime | None) -> None:
        """The brand's replies kept under `keys`: in a conversation, those written since `since`;
        waiting for a conversation (see `conversations.waiting_key`), all."""

    async def add_interactions(self, stored: list[tuple[InteractionReceived, str | None]]) -> None:
        """Keep interactions, each with where it belongs (a conversation, a waiting key, none)."""

    async def name_senders(self, senders: dict[str, str]) -> list[tuple[str, Reply]]:
        """Who wrote stored replies (interaction id -> person), for those that name nobody yet: the
        platform's echo of a reply sent from the inbox came before the reply's own interaction.
        Returns the replies named now, each with where it is kept (a conversation, a waiting key)."""
        ...

    async def move_interactions(self, moves: dict[str, str]) -> None:
        """Replies that were waiting joined a conversation: interaction id -> conversation id."""

    async def retract_interactions(
        self, *, tenant_id: str, account_id: str, external_id: str, at: datetime
    ) -> None:
        """Every version of a withdrawn message is retracted."""

    async def count_waiting(self, conversation_id: str, since: datetime | None) -> int:
        """Inbound messages of a conversation still waiting for an answer (not withdrawn)."""
        ...

    async def teams_of(self, person_ids: Iterable[str]) -> dict[str, set[str]]:
        """Every team of each person, in every tenant."""
        ...

    async def take_queued(self, team_ids: set[str], limit: int) -> list[Conversation]:
        """Queued conversations of these teams, earliest due first (locked; skipping any
        another router holds)."""
        ...

    async def open_conversations_of(self, tenant_id: str) -> list[str]:
        """Conversations of a tenant whose deadlines a recompute looks at."""
        ...

    async def seen_commands(self, ids: Iterable[str]) -> set[str]:
        """Which of these commands were applied already."""
        ...

    async def record_commands(self, ids: Iterable[str], now: datetime) -> None:
        """Remember applied commands; forget those older than `COMMAND_MEMORY`."""

    async def save_world(self, world: World) -> None:
        """Write what changed: conversations, loads (refused with `LoadConflict` past capacity
        or below zero), statuses, last assignments, continuity."""

    async def add_outbox(self, messages: list[Outgoing], now: datetime) -> str | None:
        """Keep the messages with the state that caused them; returns the outbox row's id."""
        ...

    async def delete_outbox(self, ids: list[str]) -> None:
        """Forget outbox rows whose messages an earlier unit of work's consumer published."""


class Repository(Protocol):
    def unit_of_work(self) -> AbstractAsyncContextManager[UnitOfWork]:
        """A transaction: committed when the block ends, rolled back if it raises."""
        ...

    async def pending_outbox(self, *, older_than: datetime | None, limit: int) -> dict[str, list[Outgoing]]:
        """Outbox rows not yet deleted (published), oldest first."""
        ...

    async def delete_outbox(self, ids: list[str]) -> None:
        """Forget outbox rows once their messages are published."""


class Clock(Protocol):
    def now(self) -> datetime: ...


class Ids(Protocol):
    def new_id(self) -> str:
        """A fresh id, 32 hex digits."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return utcnow()


class RandomIds:
    def new_id(self) -> str:
        return ids.new_id()


class CountingIds:
    """Ids 1, 2, 3... after a prefix: the same sequence every time (tests, replays)."""

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix
        self.count = 0

    def new_id(self) -> str:
        self.count += 1
        return f"{self.prefix}{self.count:032x}"[-32:]


class FixedClock:
    """A clock that says what it is told (tests, replays)."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def now(self) -> datetime:
        return self.at
