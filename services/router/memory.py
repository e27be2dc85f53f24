"""The router's repository in a process: what `sql.SqlRepository` keeps, kept in dicts.

For tests and simulations that want the whole path (dedupe, queues, loads, replies
waiting for a conversation not yet opened) in milliseconds. It answers as the SQL
one does, ordering included (`tests/integration/test_router_repository_contract.py`
holds both to it). A unit of work works on the stored state and puts the copy taken
at its start back if it raises; units of work run one at a time.
"""

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from services.router.assignment import Person
from services.router.conversations import (
    AccountRoute,
    Conversation,
    Reply,
    Team,
    TenantRules,
    World,
)
from services.router.ports import COMMAND_MEMORY, Ids, LoadConflict, RandomIds, reply_context_json
from shared.events import InteractionReceived
from shared.messages import Outgoing


@dataclass
class StoredInteraction:
    """What the router keeps of an interaction (the columns it reads again)."""

    id: str
    tenant_id: str
    account_id: str
    external_id: str
    direction: str
    thread_id: str
    created_at: datetime
    correlation_id: str
    edit_version: int
    conversation_id: str | None
    retracted_at: datetime | None = None
    reply_context: str | None = None  # `ReplyContext` as JSON
    sent_by: str | None = None


@dataclass
class State:
    """Everything the repository holds; a unit of work's rollback puts a copy of it back."""

    tenants: dict[str, TenantRules]
    teams: dict[str, Team]
    accounts: dict[str, AccountRoute]
    people: dict[str, Person]
    conversations: dict[str, Conversation]
    interactions: dict[str, StoredInteraction]
    continuity: dict[tuple[str, str], str]
    commands: dict[str, datetime]
    outbox: dict[str, tuple[datetime, list[Outgoing]]]

    def copy(self) -> "State":
        """A copy a unit of work cannot change: what it changes in place (people, stored
        interactions) is copied; rules are never changed, conversations only replaced."""
        return State(
            tenants=dict(self.tenants),
            teams=dict(self.teams),
            accounts=dict(self.accounts),
            people={k: replace(v) for k, v in self.people.items()},
            conversations=dict(self.conversations),
            interactions={k: replace(v) for k, v in self.interactions.items()},
            continuity=dict(self.continuity),
            commands=dict(self.commands),
            outbox=dict(self.outbox),
        )


class MemoryUnitOfWork:
    """The repository port's unit of work over the state in memory (see `ports.UnitOfWork`)."""

    def __init__(self, state: State, ids: Ids) -> None:
        self.state = state
        self.ids = ids

    async def lock_accounts(self, account_ids: Iterable[str]) -> None:
        return None  # units of work run one at a time

    async def known_interactions(self, ids: Iterable[str]) -> set[str]:
        return {i for i in ids if i in self.state.interactions}

    async def parent_conversations(self, wanted: set[tuple[str, str]]) -> dict[tuple[str, str], str]:
        return {
            (i.account_id, i.external_id): i.conversation_id
            for i in self.state.interactions.values()
            if (i.account_id, i.external_id) in wanted
            and i.conversation_id is not None
            and i.conversation_id in self.state.conversations
        }

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
        state = self.state
        world = World(now=now, backfill_cutoff=backfill_cutoff, new_id=new_id)
        person_ids, owned_by = set(person_ids), set(owned_by)
        wanted = set(conversation_ids) | {
            c.id
            for c in state.conversations.values()
            if c.owner_id in owned_by and c.state in ("open", "paused")
        }
        world.conversations = {
            c: replace(state.conversations[c]) for c in sorted(wanted) if c in state.conversations
        }
        account_ids = set(account_ids) | {c.account_id for c in world.conversations.values()}
        world.accounts = {a: state.accounts[a] for a in sorted(account_ids) if a in state.accounts}
        tenant_ids = (
            set(tenant_ids)
            | {a.tenant_id for a in world.accounts.values()}
            | {c.tenant_id for c in world.conversations.values()}
            | {t.tenant_id for t in state.teams.values() if person_ids & set(t.members)}
        )
        world.tenants = {t: state.tenants[t] for t in sorted(tenant_ids) if t in state.tenants}
        world.teams = {
            t.id: replace(t, members=sorted(t.members))
            for t in sorted(state.teams.values(), key=lambda t: t.id)
            if t.tenant_id in tenant_ids
        }
        teams = (
            world.teams if reach is None else {t: world.teams[t] for t in reach(world) if t in world.teams}
        )
        people = person_ids | {p for team in teams.values() for p in team.members}
        people |= {c.owner_id for c in world.conversations.values() if c.owner_id}
        world.people = {p: replace(state.people[p]) for p in sorted(people) if p in state.people}
        return world

    async def load_continuity(self, world: World, pairs: set[tuple[str, str]]) -> None:
        for pair in pairs:
            if pair in self.state.continuity:
                world.continuity[pair] = self.state.continuity[pair]

    async def load_replies(self, world: World, keys: Iterable[str], since: datetime | None) -> None:
        keys = set(keys)
        existing = keys & set(world.conversations)
        waiting = keys - existing

        def wanted(i: StoredInteraction) -> bool:
            if i.direction != "outbound" or i.retracted_at is not None:
                return False
            if i.conversation_id in existing and since is not None and i.created_at >= since:
                return True
            return i.conversation_id in waiting

        for i in sorted(filter(wanted, self.state.interactions.values()), key=lambda i: (i.created_at, i.id)):
            assert i.conversation_id is not None
            world.replies.setdefault(i.conversation_id, []).append(
                Reply(i.id, i.thread_id, i.created_at, i.correlation_id, i.edit_version, i.sent_by)
            )

    async def add_interactions(self, stored: list[tuple[InteractionReceived, str | None]]) -> None:
        for ix, conversation_id in stored:
            if ix.interaction_id in self.state.interactions:
                raise KeyError(f"interaction {ix.interaction_id} is stored already")
            self.state.interactions[ix.interaction_id] = StoredInteraction(
                id=ix.interaction_id,
                tenant_id=ix.tenant_id,
                account_id=ix.account_id,
                external_id=ix.external_id,
                direction=ix.direction.value,
                thread_id=ix.thread_id,
                created_at=ix.created_at,
                correlation_id=ix.correlation_id,
                edit_version=ix.edit_version,
                conversation_id=conversation_id,
                reply_context=reply_context_json(ix),
                sent_by=ix.sent_by,
            )

    async def name_senders(self, senders: dict[str, str]) -> list[tuple[str, Reply]]:
        named = []
        for interaction_id, person_id in sorted(senders.items()):
            i = self.state.interactions.get(interaction_id)
            if i is None or i.direction != "outbound" or i.sent_by is not None or i.conversation_id is None:
                continue
            i.sent_by = person_id
            reply = Reply(i.id, i.thread_id, i.created_at, i.correlation_id, i.edit_version, person_id)
            named.append((i.conversation_id, reply))
        return named

    async def move_interactions(self, moves: dict[str, str]) -> None:
        for interaction_id, target in moves.items():
            if interaction_id in self.state.interactions:
                self.state.interactions[interaction_id].conversation_id = target

    async def retract_interactions(
        self, *, tenant_id: str, account_id: str, external_id: str, at: datetime
    ) -> None:
        for i in self.state.interactions.values():
            if (i.tenant_id, i.account_id, i.external_id) == (tenant_id, account_id, external_id):
                if i.retracted_at is None:
                    i.retracted_at = at

    async def count_waiting(self, conversation_id: str, since: datetime | None) -> int:
        return sum(
            1
            for i in self.state.interactions.values()
            if i.conversation_id == conversation_id
            and i.direction == "inbound"
            and i.retracted_at is None
            and (since is None or i.created_at >= since)
        )

    async def teams_of(self, person_ids: Iterable[str]) -> dict[str, set[str]]:
        result: dict[str, set[str]] = {}
        for person_id in person_ids:
            for team in self.state.teams.values():
                if person_id in team.members:
                    result.setdefault(person_id, set()).add(team.id)
        return result

    async def take_queued(self, team_ids: set[str], limit: int) -> list[Conversation]:
        queued = [
            c
            for c in self.state.conversations.values()
            if c.team_id in team_ids and c.state == "open" and c.owner_id is None
        ]
        queued.sort(key=lambda c: (c.due_at is None, c.due_at, c.queued_at is None, c.queued_at, c.id))
        return [replace(c) for c in queued[:limit]]

    async def open_conversations_of(self, tenant_id: str) -> list[str]:
        return [
            c.id
            for c in self.state.conversations.values()
            if c.tenant_id == tenant_id and c.state in ("open", "responded")
        ]

    async def seen_commands(self, ids: Iterable[str]) -> set[str]:
        return {i for i in ids if i in self.state.commands}

    async def record_commands(self, ids: Iterable[str], now: datetime) -> None:
        for command_id in ids:
            if command_id in self.state.commands:
                raise KeyError(f"command {command_id} is recorded already")
            self.state.commands[command_id] = now
        for command_id, at in list(self.state.commands.items()):
            if at < now - COMMAND_MEMORY:
                del self.state.commands[command_id]

    async def save_world(self, world: World) -> None:
        state = self.state
        for cid in sorted(world.created):
            if cid in state.conversations:
                raise KeyError(f"conversation {cid} exists already")
            state.conversations[cid] = replace(world.conversations[cid])
        for cid in sorted(world.changed - world.created):
            if cid in state.conversations:
                state.conversations[cid] = replace(world.conversations[cid])
        for person_id, delta in sorted(world.load_deltas.items()):
            person = state.people.get(person_id)
            if delta == 0:
                continue
            if person is None or not (
                0 <= person.load + delta and (delta < 0 or person.load + delta <= person.capacity)
            ):
                raise LoadConflict(f"the load of {person_id} could not change by {delta}")
            person.load += delta
        for person_id, status in sorted(world.statuses.items()):
            if person_id in state.people:
                state.people[person_id].status = status
        for person_id in sorted(world.assigned_people):
            if person_id in state.people:
                state.people[person_id].last_assigned_at = world.now
        state.continuity.update(world.answered)

    async def add_outbox(self, messages: list[Outgoing], now: datetime) -> str | None:
        if not messages:
            return None
        row_id = self.ids.new_id()
        self.state.outbox[row_id] = (now, list(messages))
        return row_id

    async def delete_outbox(self, ids: list[str]) -> None:
        for row_id in ids:
            self.state.outbox.pop(row_id, None)


class MemoryRepository:
    """The router's repository in memory (see `ports.Repository`); `of(world)` seeds it."""

    def __init__(self, ids: Ids | None = None) -> None:
        self.state = State({}, {}, {}, {}, {}, {}, {}, {}, {})
        self.ids = ids or RandomIds()
        self._lock = asyncio.Lock()

    @classmethod
    def of(cls, world: World, ids: Ids | None = None) -> "MemoryRepository":
        """A repository holding what `world` holds: its rules, teams, accounts, people,
        conversations and continuity (as a configuration and earlier routing left them)."""
        repository = cls(ids)
        state = repository.state
        state.tenants = dict(world.tenants)
        state.teams = {t.id: replace(t, members=list(t.members)) for t in world.teams.values()}
        state.accounts = dict(world.accounts)
        state.people = {p.id: replace(p) for p in world.people.values()}
        state.conversations = {c.id: replace(c) for c in world.conversations.values()}
        state.continuity = dict(world.continuity)
        return repository

    @asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator[MemoryUnitOfWork]:
        async with self._lock:
            before = self.state.copy()
            try:
                yield MemoryUnitOfWork(self.state, self.ids)
            except BaseException:
                self.state = before
                raise

    async def pending_outbox(self, *, older_than: datetime | None, limit: int) -> dict[str, list[Outgoing]]:
        rows = sorted(self.state.outbox.items(), key=lambda item: item[1][0])
        due = [(row_id, messages) for row_id, (at, messages) in rows if older_than is None or at < older_than]
        return {row_id: list(messages) for row_id, messages in due[:limit]}

    async def delete_outbox(self, ids: list[str]) -> None:
        for row_id in ids:
            self.state.outbox.pop(row_id, None)
