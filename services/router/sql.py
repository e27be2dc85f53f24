"""The router's repository in SQLite or PostgreSQL: `SqlRepository`, and the queries under it.

The hot path writes with SQLAlchemy Core executemany: building ORM objects for
thousands of rows a second costs more than the database does.
"""

import dataclasses
import functools
import hashlib
import json
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    and_,
    bindparam,
    case,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from services.router.assignment import Person
from services.router.conversations import (
    AccountRoute,
    Conversation,
    Reply,
    Team,
    TenantRules,
    World,
    random_id,
)
from services.router.deadlines import Sla, Targets
from services.router.ports import COMMAND_MEMORY, Contention, LoadConflict, reply_context_json
from services.router.topics import Rule, Topic
from shared import outbox
from shared.businesstime import ALWAYS_OPEN, BusinessCalendar
from shared.db.core import (
    ACCOUNTS,
    CALENDARS,
    CONTINUITY,
    CONVERSATIONS,
    INTERACTIONS,
    MEMBERS,
    PEOPLE,
    POLICIES,
    PROCESSED_COMMANDS,
    TEAMS,
    TENANTS,
    TOPICS,
    execute,
    fetch_rows,
    insert_many,
    insert_objects,
)
from shared.db.session import dialect_insert, transaction
from shared.events import InteractionReceived
from shared.messages import Outgoing

# PostgreSQL's deadlock_detected and serialization_failure: the transaction was rolled back.
_GAVE_WAY = {"40P01", "40001"}


def _is_postgresql(session: AsyncSession) -> bool:
    return session.bind is not None and session.bind.dialect.name == "postgresql"


def _advisory_key(kind: str, value: str) -> int:
    digest = hashlib.blake2b(f"stayhuman:{kind}:{value}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


_LOCK_ACCOUNTS = text(
    "SELECT pg_advisory_xact_lock(k) FROM unnest(CAST(:keys AS bigint[])) AS k ORDER BY k"
).bindparams(bindparam("keys", type_=ARRAY(BigInteger)))


async def lock_accounts(*, session: AsyncSession, account_ids: Iterable[str]) -> None:
    """Route each account's messages one transaction at a time across routers, before anything
    is read: a transaction-scoped advisory lock per account, taken in one global order (no
    deadlock). Otherwise a reply could look for its conversation while another router's
    transaction is still opening it, and find none. On SQLite the router's transactions hold the
    database's write lock from their start (`create_engine(exclusive_writes=True)`).

    Per account rather than per thread: a routing transaction locks every person of the
    account's tenant anyway, and a batch takes one lock per account instead of up to three
    per message (a 5,000-message batch would not fit PostgreSQL's lock table)."""
    keys = sorted({_advisory_key("account", a) for a in account_ids})
    if keys and _is_postgresql(session):
        await execute(session, _LOCK_ACCOUNTS.bindparams(keys=keys))


async def get_known_interaction_ids(*, session: AsyncSession, ids: Iterable[str]) -> set[str]:
    rows = await fetch_rows(session, select(INTERACTIONS.c.id).where(INTERACTIONS.c.id.in_(list(ids))))
    return {row.id for row in rows}


async def add_interactions(*, session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    await insert_many(session, INTERACTIONS, rows)


async def load_replies(
    *, session: AsyncSession, world: World, keys: Iterable[str], since: datetime | None
) -> None:
    """The brand's replies the router has under `keys` (conversations, and the waiting keys of
    replies that found none): in a conversation, those written at or after `since` (the earliest
    new message: earlier ones answer none of them); waiting ones, all."""
    keys = set(keys)
    if not keys:
        return
    existing = keys & set(world.conversations)
    waiting = keys - existing
    conditions: list[Any] = []
    if existing and since is not None:
        conditions.append(INTERACTIONS.c.conversation_id.in_(existing) & (INTERACTIONS.c.created_at >= since))
    if waiting:
        conditions.append(INTERACTIONS.c.conversation_id.in_(waiting))
    if not conditions:
        return
    rows = await fetch_rows(
        session,
        select(
            INTERACTIONS.c.id,
            INTERACTIONS.c.conversation_id,
            INTERACTIONS.c.thread_id,
            INTERACTIONS.c.created_at,
            INTERACTIONS.c.correlation_id,
            INTERACTIONS.c.edit_version,
            INTERACTIONS.c.sent_by,
        )
        .where(
            INTERACTIONS.c.direction == "outbound",
            INTERACTIONS.c.retracted_at.is_(None),
            or_(*conditions),
        )
        .order_by(INTERACTIONS.c.created_at, INTERACTIONS.c.id),
    )
    for row in rows:
        world.replies.setdefault(row.conversation_id, []).append(
            Reply(row.id, row.thread_id, row.created_at, row.correlation_id, row.edit_version, row.sent_by)
        )


async def name_senders(*, session: AsyncSession, senders: dict[str, str]) -> list[tuple[str, Reply]]:
    """Who wrote stored replies that name nobody yet (their platform's echo came first); returns
    those named now with where they are kept. The account lock keeps other routers out between
    the read and the write."""
    if not senders:
        return []
    rows = await fetch_rows(
        session,
        select(
            INTERACTIONS.c.id,
            INTERACTIONS.c.conversation_id,
            INTERACTIONS.c.thread_id,
            INTERACTIONS.c.created_at,
            INTERACTIONS.c.correlation_id,
            INTERACTIONS.c.edit_version,
        )
        .where(
            INTERACTIONS.c.id.in_(list(senders)),
            INTERACTIONS.c.direction == "outbound",
            INTERACTIONS.c.sent_by.is_(None),
            INTERACTIONS.c.conversation_id.is_not(None),
        )
        .order_by(INTERACTIONS.c.id),
    )
    named = [
        (
            row.conversation_id,
            Reply(
                row.id, row.thread_id, row.created_at, row.correlation_id, row.edit_version, senders[row.id]
            ),
        )
        for row in rows
    ]
    await execute(
        session,
        update(INTERACTIONS)
        .where(INTERACTIONS.c.id == bindparam("interaction_id"), INTERACTIONS.c.sent_by.is_(None))
        .values(sent_by=bindparam("person_id")),
        [{"interaction_id": reply.interaction_id, "person_id": reply.sent_by} for _, reply in named],
    )
    return named


async def move_interactions(*, session: AsyncSession, moves: dict[str, str]) -> None:
    """Stored interactions that joined a conversation (replies that were waiting for it)."""
    await execute(
        session,
        update(INTERACTIONS)
        .where(INTERACTIONS.c.id == bindparam("interaction_id"))
        .values(conversation_id=bindparam("target")),
        [{"interaction_id": i, "target": c} for i, c in sorted(moves.items())],
    )


_FIELDS = tuple(f.name for f in dataclasses.fields(Conversation))


def _values(conversation: Conversation) -> dict[str, Any]:
    return {name: getattr(conversation, name) for name in _FIELDS}


async def save_conversations(
    *, session: AsyncSession, created: list[Conversation], changed: list[Conversation]
) -> None:
    await insert_objects(session, CONVERSATIONS, created, _FIELDS)
    columns = [c.name for c in CONVERSATIONS.columns if c.name != "id"]
    statement = (
        update(CONVERSATIONS)
        .where(CONVERSATIONS.c.id == bindparam("conversation_id"))
        .values({name: bindparam(name) for name in columns})
    )
    params = []
    for conversation in changed:
        values = _values(conversation)
        values["conversation_id"] = values.pop("id")
        params.append(values)
    await execute(session, statement, params)


async def count_open_by_team(*, session: AsyncSession) -> list[tuple[str, str, bool, int]]:
    """(tenant, team slug, has an owner, open conversations) for the queue-depth gauges."""
    rows = await fetch_rows(
        session,
        select(
            TEAMS.c.tenant_id,
            TEAMS.c.slug,
            CONVERSATIONS.c.owner_id.is_not(None).label("owned"),
            func.count(),
        )
        .join(TEAMS, TEAMS.c.id == CONVERSATIONS.c.team_id)
        .where(CONVERSATIONS.c.state == "open")
        .group_by(TEAMS.c.tenant_id, TEAMS.c.slug, "owned"),
    )
    return [(row[0], row[1], bool(row[2]), int(row[3])) for row in rows]


async def retract_interactions(
    *, session: AsyncSession, tenant_id: str, account_id: str, external_id: str, at: datetime
) -> None:
    """Mark every version of a withdrawn message (a removed comment) as retracted."""
    await execute(
        session,
        update(INTERACTIONS)
        .where(
            INTERACTIONS.c.tenant_id == tenant_id,
            INTERACTIONS.c.account_id == account_id,
            INTERACTIONS.c.external_id == external_id,
            INTERACTIONS.c.retracted_at.is_(None),
        )
        .values(retracted_at=at),
    )


async def count_waiting(*, session: AsyncSession, conversation_id: str, since: datetime | None) -> int:
    """Inbound messages of a conversation still waiting for an answer (not withdrawn)."""
    query = select(func.count()).where(
        INTERACTIONS.c.conversation_id == conversation_id,
        INTERACTIONS.c.direction == "inbound",
        INTERACTIONS.c.retracted_at.is_(None),
    )
    if since is not None:
        query = query.where(INTERACTIONS.c.created_at >= since)
    return int((await fetch_rows(session, query))[0][0])


# -- the world of one transaction ------------------------------------------------------------


def _json(text: str | None, default: Any) -> Any:
    return json.loads(text) if text else default


@functools.lru_cache(maxsize=1024)
def _calendar(
    timezone: str, hours: str | None, country: str | None, subdivision: str | None, closed: str
) -> BusinessCalendar:
    return BusinessCalendar.parse(
        timezone=timezone,
        hours=_json(hours, None),
        holidays_country=country,
        holidays_subdivision=subdivision,
        closed_days=_json(closed, []),
    )


@functools.lru_cache(maxsize=4096)
def _rule(text: str) -> Rule:
    return Rule.parse(_json(text, {}))


def _sla(policy: Any, calendars: dict[str, BusinessCalendar]) -> Sla:
    def seconds(value: int | None) -> timedelta | None:
        return timedelta(seconds=value) if value else None

    default = Targets(
        first_response=timedelta(seconds=policy.first_response_seconds),
        next_response=seconds(policy.next_response_seconds),
        resolution=seconds(policy.resolution_seconds),
    )
    by_priority = {
        priority: Targets(
            first_response=seconds(given.get("first_response")) or default.first_response,
            next_response=seconds(given.get("next_response")) or default.next_response,
            resolution=seconds(given.get("resolution")) or default.resolution,
        )
        for priority, given in _json(policy.targets, {}).items()
    }
    return Sla(
        default=default,
        by_priority=by_priority,
        warn_before=seconds(policy.warn_before_seconds),
        calendar=calendars.get(policy.calendar_id or "", ALWAYS_OPEN),
        vip_bump=policy.vip_bump,
        high_reach_followers=policy.high_reach_followers,
        high_reach_bump=policy.high_reach_bump,
        name=policy.name,
    )


def _person(row: Any) -> Person:
    ooo = (
        (row.out_of_office_from, row.out_of_office_until)
        if row.out_of_office_from is not None and row.out_of_office_until is not None
        else None
    )
    return Person(
        id=row.id,
        name=row.name,
        skills=frozenset(_json(row.skills, [])),
        languages=frozenset(_json(row.languages, [])),
        capacity=row.capacity,
        weights=_json(row.priority_weights, {}),
        load=row.load,
        status=row.status,
        active=row.active,
        working_hours=_calendar(row.timezone, row.working_hours, None, None, "[]")
        if row.working_hours
        else None,
        out_of_office=ooo,
        substitute_id=row.substitute_id,
        last_assigned_at=row.last_assigned_at,
    )


def _locked(session: AsyncSession, query: Any, *, skip_locked: bool = False) -> Any:
    """FOR UPDATE on PostgreSQL (SQLite has one writer at a time and no row locks)."""
    if _is_postgresql(session):
        return query.with_for_update(skip_locked=skip_locked)
    return query


async def load_world(
    *,
    session: AsyncSession,
    now: datetime,
    backfill_cutoff: timedelta,
    new_id: Callable[[], str] = random_id,
    conversation_ids: Iterable[str] = (),
    account_ids: Iterable[str] = (),
    person_ids: Iterable[str] = (),
    tenant_ids: Iterable[str] = (),
    owned_by: Iterable[str] = (),
    rules: "RulesCache | None" = None,
    reach: Callable[[World], set[str]] | None = None,
) -> World:
    """Lock and load what a transaction may change, always in the same order: conversations
    (by id), then people (by id). Rules (tenants, topics, policies, teams) are read unlocked,
    through `rules` when given."""
    world = World(now=now, backfill_cutoff=backfill_cutoff, new_id=new_id)
    person_ids = set(person_ids)
    owned_by = set(owned_by)
    conversation_ids = set(conversation_ids)
    if owned_by:
        rows = await fetch_rows(
            session,
            select(CONVERSATIONS.c.id).where(
                CONVERSATIONS.c.owner_id.in_(owned_by), CONVERSATIONS.c.state.in_(["open", "paused"])
            ),
        )
        conversation_ids |= {row.id for row in rows}
    if conversation_ids:
        rows = await fetch_rows(
            session,
            _locked(
                session,
                select(CONVERSATIONS)
                .where(CONVERSATIONS.c.id.in_(conversation_ids))
                .order_by(CONVERSATIONS.c.id),
            ),
        )
        world.conversations = {row.id: Conversation(**row._mapping) for row in rows}
    account_ids = set(account_ids) | {c.account_id for c in world.conversations.values()}
    accounts = await fetch_rows(
        session,
        select(ACCOUNTS.c.id, ACCOUNTS.c.tenant_id, ACCOUNTS.c.team_id).where(ACCOUNTS.c.id.in_(account_ids)),
    )
    world.accounts = {a.id: AccountRoute(a.id, a.tenant_id, a.team_id) for a in accounts}
    tenant_ids = (
        set(tenant_ids)
        | {a.tenant_id for a in accounts}
        | {c.tenant_id for c in world.conversations.values()}
    )
    if person_ids:
        rows = await fetch_rows(
            session,
            select(TEAMS.c.tenant_id)
            .join(MEMBERS, MEMBERS.c.team_id == TEAMS.c.id)
            .where(MEMBERS.c.person_id.in_(person_ids)),
        )
        tenant_ids |= {row.tenant_id for row in rows}
    if rules is not None:
        await rules.load(session, world, tenant_ids)
    else:
        await _load_rules(session, world, tenant_ids)
    teams = world.teams if reach is None else {t: world.teams[t] for t in reach(world) if t in world.teams}
    wanted = person_ids | {p for team in teams.values() for p in team.members}
    wanted |= {c.owner_id for c in world.conversations.values() if c.owner_id}
    if wanted:
        rows = await fetch_rows(
            session, _locked(session, select(PEOPLE).where(PEOPLE.c.id.in_(wanted)).order_by(PEOPLE.c.id))
        )
        world.people = {row.id: _person(row) for row in rows}
    return world


@dataclass
class _Rules:
    version: int
    tenant: TenantRules
    teams: dict[str, Team]


class RulesCache:
    """Each tenant's rules (topics, policies, calendars, teams and their members) as last read,
    with the configuration version they were read at. `stayhuman apply` moves a tenant's version
    on with every change to them in the same transaction, so one query for the versions tells
    which tenants must be read again. The objects are shared between units of work: the domain
    only reads them."""

    def __init__(self) -> None:
        self._rules: dict[str, _Rules] = {}

    async def load(self, session: AsyncSession, world: World, tenant_ids: set[str]) -> None:
        if not tenant_ids:
            return
        versions = {
            row.id: row.config_version
            for row in await fetch_rows(
                session, select(TENANTS.c.id, TENANTS.c.config_version).where(TENANTS.c.id.in_(tenant_ids))
            )
        }
        stale = {t for t, v in versions.items() if t not in self._rules or self._rules[t].version != v}
        for tenant_id in set(self._rules) & (tenant_ids - set(versions)):
            del self._rules[tenant_id]  # removed
        if stale:
            fresh = World(now=world.now, backfill_cutoff=world.backfill_cutoff)
            await _load_rules(session, fresh, stale)
            for tenant_id, rules in fresh.tenants.items():
                teams = {k: team for k, team in fresh.teams.items() if team.tenant_id == tenant_id}
                # the version the rules were read at: a newer apply makes them stale, not wrong
                self._rules[tenant_id] = _Rules(versions[tenant_id], rules, teams)
        for tenant_id in versions:
            if tenant_id in self._rules:
                cached = self._rules[tenant_id]
                world.tenants[tenant_id] = cached.tenant
                world.teams.update(cached.teams)


async def _load_rules(session: AsyncSession, world: World, tenant_ids: set[str]) -> None:
    if not tenant_ids:
        return
    tenants = await fetch_rows(session, select(TENANTS).where(TENANTS.c.id.in_(tenant_ids)))
    calendars = {
        row.id: _calendar(
            row.timezone, row.hours, row.holidays_country, row.holidays_subdivision, row.closed_days
        )
        for row in await fetch_rows(session, select(CALENDARS).where(CALENDARS.c.tenant_id.in_(tenant_ids)))
    }
    policies: dict[str, dict[str, Sla]] = {t: {} for t in tenant_ids}
    for row in await fetch_rows(session, select(POLICIES).where(POLICIES.c.tenant_id.in_(tenant_ids))):
        policies[row.tenant_id][row.id] = _sla(row, calendars)
    topics: dict[str, list[Topic]] = {t: [] for t in tenant_ids}
    for row in await fetch_rows(
        session,
        select(TOPICS)
        .where(TOPICS.c.tenant_id.in_(tenant_ids))
        .order_by(TOPICS.c.tenant_id, TOPICS.c.position),
    ):
        topics[row.tenant_id].append(
            Topic(
                name=row.name,
                rule=_rule(row.rule),
                team_id=row.team_id,
                priority=row.priority,
                sla_policy_id=row.sla_policy_id,
                no_sla=row.no_sla,
                skills=frozenset(_json(row.skills, [])),
                is_default=row.is_default,
            )
        )
    for row in tenants:
        world.tenants[row.id] = TenantRules(
            id=row.id,
            topics=topics[row.id],
            policies=policies[row.id],
            vip=frozenset(_json(row.vip, [])),
            auto_resolve=timedelta(seconds=row.auto_resolve_seconds) if row.auto_resolve_seconds else None,
            config_version=row.config_version,
        )
    teams = await fetch_rows(session, select(TEAMS).where(TEAMS.c.tenant_id.in_(tenant_ids)))
    world.teams = {t.id: Team(t.id, t.tenant_id, t.slug, [], t.sla_policy_id, t.lead_id) for t in teams}
    if world.teams:
        for member in await fetch_rows(
            session,
            select(MEMBERS)
            .where(MEMBERS.c.team_id.in_(list(world.teams)))
            .order_by(MEMBERS.c.team_id, MEMBERS.c.person_id),
        ):
            world.teams[member.team_id].members.append(member.person_id)


async def load_continuity(*, session: AsyncSession, world: World, pairs: set[tuple[str, str]]) -> None:
    if not pairs:
        return
    accounts = {a for a, _ in pairs}
    authors = {b for _, b in pairs}
    rows = await fetch_rows(
        session,
        select(CONTINUITY).where(CONTINUITY.c.account_id.in_(accounts), CONTINUITY.c.author_id.in_(authors)),
    )
    for row in rows:
        if (row.account_id, row.author_id) in pairs:
            world.continuity[(row.account_id, row.author_id)] = row.person_id


async def teams_of(*, session: AsyncSession, person_ids: Iterable[str]) -> dict[str, set[str]]:
    result: dict[str, set[str]] = {}
    for row in await fetch_rows(session, select(MEMBERS).where(MEMBERS.c.person_id.in_(list(person_ids)))):
        result.setdefault(row.person_id, set()).add(row.team_id)
    return result


async def take_queued(*, session: AsyncSession, team_ids: set[str], limit: int) -> list[Conversation]:
    """Queued conversations of these teams, earliest due first, skipping rows another router holds."""
    query = (
        select(CONVERSATIONS)
        .where(
            CONVERSATIONS.c.team_id.in_(team_ids),
            CONVERSATIONS.c.state == "open",
            CONVERSATIONS.c.owner_id.is_(None),
        )
        .order_by(CONVERSATIONS.c.due_at.asc().nulls_last(), CONVERSATIONS.c.queued_at, CONVERSATIONS.c.id)
        .limit(limit)
    )
    rows = await fetch_rows(session, _locked(session, query, skip_locked=True))
    return [Conversation(**row._mapping) for row in rows]


async def _change_loads(session: AsyncSession, deltas: dict[str, int]) -> None:
    """Every person's load moved by its delta in one statement, each row only within bounds (never
    past capacity, never below zero); if any row is out of bounds, nothing of the unit of work
    stands. The rows are locked already (`load_world`), so one statement takes no new locks."""
    if not deltas:
        return
    delta = case(
        *((PEOPLE.c.id == person_id, literal(change)) for person_id, change in deltas.items()), else_=0
    )
    within = or_(
        and_(delta > 0, PEOPLE.c.load + delta <= PEOPLE.c.capacity),
        and_(delta < 0, PEOPLE.c.load + delta >= 0),
    )
    result = await execute(
        session,
        update(PEOPLE).where(PEOPLE.c.id.in_(list(deltas)), within).values(load=PEOPLE.c.load + delta),
    )
    if result.rowcount != len(deltas):
        changes = ", ".join(f"{person_id} by {change}" for person_id, change in deltas.items())
        raise LoadConflict(f"the loads could not all change ({changes}): one would pass its bounds")


async def save_world(*, session: AsyncSession, world: World) -> None:
    """Write what the world's operations changed: conversations, loads (conditionally), continuity."""
    await save_conversations(
        session=session,
        created=[world.conversations[c] for c in sorted(world.created)],
        changed=[world.conversations[c] for c in sorted(world.changed - world.created)],
    )
    await _change_loads(session, {p: d for p, d in sorted(world.load_deltas.items()) if d != 0})
    for person_id, status in sorted(world.statuses.items()):
        await execute(session, update(PEOPLE).where(PEOPLE.c.id == person_id).values(status=status))
    if world.assigned_people:
        await execute(
            session,
            update(PEOPLE)
            .where(PEOPLE.c.id == bindparam("person_id"))
            .values(last_assigned_at=bindparam("at")),
            [{"person_id": p, "at": world.now} for p in sorted(world.assigned_people)],
        )
    if world.answered:
        statement = dialect_insert(session, CONTINUITY)
        statement = statement.on_conflict_do_update(
            index_elements=["account_id", "author_id"],
            set_={"person_id": statement.excluded.person_id, "answered_at": statement.excluded.answered_at},
        )
        await execute(
            session,
            statement,
            [
                {"account_id": a, "author_id": b, "person_id": p, "answered_at": world.now}
                for (a, b), p in sorted(world.answered.items())
            ],
        )


async def parent_conversations(
    *, session: AsyncSession, wanted: set[tuple[str, str]]
) -> dict[tuple[str, str], str]:
    """(account, external id) of earlier messages -> their conversation: replies deep in a chain
    join the conversation where the chain began."""
    if not wanted:
        return {}
    rows = await fetch_rows(
        session,
        # only conversations that exist: a reply kept for a message not yet seen names none
        select(INTERACTIONS.c.account_id, INTERACTIONS.c.external_id, INTERACTIONS.c.conversation_id)
        .join(CONVERSATIONS, CONVERSATIONS.c.id == INTERACTIONS.c.conversation_id)
        .where(
            INTERACTIONS.c.account_id.in_({a for a, _ in wanted}),
            INTERACTIONS.c.external_id.in_({e for _, e in wanted}),
        ),
    )
    return {
        (r.account_id, r.external_id): r.conversation_id
        for r in rows
        if (r.account_id, r.external_id) in wanted
    }


async def open_conversations_of(*, session: AsyncSession, tenant_id: str) -> list[str]:
    rows = await fetch_rows(
        session,
        select(CONVERSATIONS.c.id).where(
            CONVERSATIONS.c.tenant_id == tenant_id, CONVERSATIONS.c.state.in_(["open", "responded"])
        ),
    )
    return [row.id for row in rows]


async def people_with_schedules(*, session: AsyncSession) -> list[str]:
    """Active people whose availability changes by itself (working hours, an absence)."""
    rows = await fetch_rows(
        session,
        select(PEOPLE.c.id).where(
            PEOPLE.c.active.is_(True),
            (PEOPLE.c.working_hours.is_not(None)) | (PEOPLE.c.out_of_office_until.is_not(None)),
        ),
    )
    return [row.id for row in rows]


async def seen_commands(*, session: AsyncSession, ids: Iterable[str]) -> set[str]:
    rows = await fetch_rows(
        session, select(PROCESSED_COMMANDS.c.id).where(PROCESSED_COMMANDS.c.id.in_(list(ids)))
    )
    return {row.id for row in rows}


async def record_commands(*, session: AsyncSession, ids: Iterable[str], now: datetime) -> None:
    """Remember applied commands (in the transaction that applied them), forget old ones."""
    await execute(session, insert(PROCESSED_COMMANDS), [{"id": i, "processed_at": now} for i in ids])
    await execute(
        session, delete(PROCESSED_COMMANDS).where(PROCESSED_COMMANDS.c.processed_at < now - COMMAND_MEMORY)
    )


def _interaction_row(ix: InteractionReceived, conversation_id: str | None) -> dict[str, object]:
    return {
        "id": ix.interaction_id,
        "tenant_id": ix.tenant_id,
        "account_id": ix.account_id,
        "external_id": ix.external_id,
        "edit_version": ix.edit_version,
        "kind": ix.kind.value,
        "direction": ix.direction.value,
        "thread_id": ix.thread_id,
        "author_id": ix.author.id,
        "author_name": ix.author.name,
        "text": ix.text,
        "url": ix.url,
        "language": ix.language,
        "created_at": ix.created_at,
        "received_at": ix.received_at,
        "conversation_id": conversation_id,
        "correlation_id": ix.correlation_id,
        "reply_context": reply_context_json(ix),
        "sent_by": ix.sent_by,
    }


class SqlUnitOfWork:
    """The repository port's unit of work over one session (see `ports.UnitOfWork`)."""

    def __init__(self, session: AsyncSession, rules: RulesCache | None = None) -> None:
        self.session = session
        self.rules = rules

    async def lock_accounts(self, account_ids: Iterable[str]) -> None:
        await lock_accounts(session=self.session, account_ids=account_ids)

    async def known_interactions(self, ids: Iterable[str]) -> set[str]:
        return await get_known_interaction_ids(session=self.session, ids=ids)

    async def parent_conversations(self, wanted: set[tuple[str, str]]) -> dict[tuple[str, str], str]:
        return await parent_conversations(session=self.session, wanted=wanted)

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
        return await load_world(
            session=self.session,
            now=now,
            backfill_cutoff=backfill_cutoff,
            new_id=new_id,
            conversation_ids=conversation_ids,
            account_ids=account_ids,
            person_ids=person_ids,
            tenant_ids=tenant_ids,
            owned_by=owned_by,
            rules=self.rules,
            reach=reach,
        )

    async def load_continuity(self, world: World, pairs: set[tuple[str, str]]) -> None:
        await load_continuity(session=self.session, world=world, pairs=pairs)

    async def load_replies(self, world: World, keys: Iterable[str], since: datetime | None) -> None:
        await load_replies(session=self.session, world=world, keys=keys, since=since)

    async def add_interactions(self, stored: list[tuple[InteractionReceived, str | None]]) -> None:
        await add_interactions(session=self.session, rows=[_interaction_row(ix, c) for ix, c in stored])

    async def name_senders(self, senders: dict[str, str]) -> list[tuple[str, Reply]]:
        return await name_senders(session=self.session, senders=senders)

    async def move_interactions(self, moves: dict[str, str]) -> None:
        await move_interactions(session=self.session, moves=moves)

    async def retract_interactions(
        self, *, tenant_id: str, account_id: str, external_id: str, at: datetime
    ) -> None:
        await retract_interactions(
            session=self.session, tenant_id=tenant_id, account_id=account_id, external_id=external_id, at=at
        )

    async def count_waiting(self, conversation_id: str, since: datetime | None) -> int:
        return await count_waiting(session=self.session, conversation_id=conversation_id, since=since)

    async def teams_of(self, person_ids: Iterable[str]) -> dict[str, set[str]]:
        return await teams_of(session=self.session, person_ids=person_ids)

    async def take_queued(self, team_ids: set[str], limit: int) -> list[Conversation]:
        return await take_queued(session=self.session, team_ids=team_ids, limit=limit)

    async def open_conversations_of(self, tenant_id: str) -> list[str]:
        return await open_conversations_of(session=self.session, tenant_id=tenant_id)

    async def seen_commands(self, ids: Iterable[str]) -> set[str]:
        return await seen_commands(session=self.session, ids=ids)

    async def record_commands(self, ids: Iterable[str], now: datetime) -> None:
        await record_commands(session=self.session, ids=ids, now=now)

    async def save_world(self, world: World) -> None:
        await save_world(session=self.session, world=world)

    async def add_outbox(self, messages: list[Outgoing], now: datetime) -> str | None:
        return await outbox.add_outbox(session=self.session, messages=messages)

    async def delete_outbox(self, ids: list[str]) -> None:
        if ids:
            await outbox.delete_outbox(session=self.session, ids=ids)


class SqlRepository:
    """The router's repository in the database the sessions open (see `ports.Repository`)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions
        self.rules = RulesCache()

    @asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator[SqlUnitOfWork]:
        try:
            async with transaction(self.sessions) as session:
                yield SqlUnitOfWork(session, self.rules)
        except DBAPIError as error:
            if getattr(error.orig, "sqlstate", None) in _GAVE_WAY:
                raise Contention(str(error.orig)) from error
            raise

    async def pending_outbox(self, *, older_than: datetime | None, limit: int) -> dict[str, list[Outgoing]]:
        async with self.sessions() as session:
            return await outbox.get_pending_outbox(session=session, older_than=older_than, limit=limit)

    async def delete_outbox(self, ids: list[str]) -> None:
        async with transaction(self.sessions) as session:
            await outbox.delete_outbox(session=session, ids=ids)

    async def count_open_by_team(self) -> list[tuple[str, str, bool, int]]:
        async with self.sessions() as session:
            return await count_open_by_team(session=session)

    async def people_with_schedules(self) -> list[str]:
        async with self.sessions() as session:
            return await people_with_schedules(session=session)
