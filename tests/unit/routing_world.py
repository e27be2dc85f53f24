"""Builders for the router's core: a World with one tenant, one account, teams and people.

No database and no broker: the tests load a World the way the repository would, call
the pure operations, and look at what changed (state, events, loads, timers); or put
that world in an in-memory repository and go through the application service, as a `Desk`
does (a fixed clock, counted ids, each step's outcome kept, reads from the repository).
"""

import dataclasses
import json
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from services.router import conversations
from services.router.assignment import Person
from services.router.conversations import AccountRoute, Conversation, Emitted, Team, TenantRules, World
from services.router.deadlines import Sla, Targets
from services.router.memory import MemoryRepository, State
from services.router.ports import CountingIds, FixedClock, Ids
from services.router.service import Outcome, Router
from services.router.topics import Rule, Topic
from shared import ids
from shared.commands import AnyCommand
from shared.events import (
    Author,
    CommandApplied,
    CommandRejected,
    ConversationAssigned,
    DeadlineChanged,
    Direction,
    Event,
    InteractionReceived,
    Kind,
    Platform,
)

E = TypeVar("E", bound=Event)

TENANT = "acme"
ACCOUNT = "acme-x"
T0 = datetime(2026, 5, 20, 10, 0, tzinfo=UTC)  # a Wednesday, no holiday anywhere near
# An hour to answer, then half an hour for each next answer; less for higher priorities.
STANDARD = Sla(
    default=Targets(first_response=timedelta(hours=1), next_response=timedelta(minutes=30)),
    by_priority={
        "high": Targets(first_response=timedelta(minutes=15), next_response=timedelta(minutes=10)),
        "urgent": Targets(first_response=timedelta(minutes=5), next_response=timedelta(minutes=5)),
        "low": Targets(first_response=timedelta(days=3)),
    },
    name="standard",
)
POLICY = ids.sla_policy_id(tenant_id=TENANT, name="standard")


def team_id(slug: str) -> str:
    return ids.team_id(tenant_id=TENANT, slug=slug)


SUPPORT = team_id("support")


def build_world(
    people: Iterable[Person],
    *,
    now: datetime = T0,
    teams: dict[str, list[str]] | None = None,
    sla: Sla | None = STANDARD,
    topics: Iterable[Topic] = (),
    vip: Iterable[str] = (),
    auto_resolve: timedelta | None = None,
) -> World:
    """A world whose account routes to the first team (by default "support", with everyone in it)."""
    people = list(people)
    teams = teams if teams is not None else {"support": [p.id for p in people]}
    world = World(now=now)
    world.people = {p.id: p for p in people}
    world.teams = {
        team_id(slug): Team(team_id(slug), TENANT, slug, list(members), sla_policy_id=POLICY if sla else None)
        for slug, members in teams.items()
    }
    world.tenants[TENANT] = TenantRules(
        TENANT,
        topics=list(topics),
        policies={POLICY: sla} if sla else {},
        vip=frozenset(vip),
        auto_resolve=auto_resolve,
    )
    world.accounts[ACCOUNT] = AccountRoute(ACCOUNT, TENANT, team_id(next(iter(teams))))
    return world


def topic(
    name: str,
    *,
    keywords: Iterable[str] = (),
    priority: str = "normal",
    team: str | None = "support",
    skills: Iterable[str] = (),
    no_sla: bool = False,
) -> Topic:
    return Topic(
        name=name,
        rule=Rule.parse({"keywords": list(keywords)} if keywords else {}),
        team_id=team_id(team) if team else None,
        priority=priority,
        sla_policy_id=None if no_sla else POLICY,
        no_sla=no_sla,
        skills=frozenset(skills),
    )


def commit(world: World) -> World:
    """What a new transaction sees: the same state, nothing changed yet."""
    world.events.clear()
    world.created.clear()
    world.changed.clear()
    world.load_deltas.clear()
    world.assigned_people.clear()
    world.answered.clear()
    world.timers.clear()
    world.freed.clear()
    world.adopted.clear()
    return world


def message(
    world: World,
    *,
    thread: str | None = None,
    author: str = "ann",
    text: str = "hello?",
    at: datetime | None = None,
    language: str | None = None,
    followers: int | None = None,
    edit_version: int = 0,
    outbound: bool = False,
    parent: str | None = None,
    external_id: str | None = None,
    now: datetime | None = None,
) -> InteractionReceived:
    """An interaction received at `now` (by default the world's time), written at `at` (by default then)."""
    external_id = external_id or uuid.uuid4().hex
    now = now or world.now
    return InteractionReceived(
        tenant_id=TENANT,
        interaction_id=ids.interaction_id(
            tenant_id=TENANT, account_id=ACCOUNT, external_id=external_id, edit_version=edit_version
        ),
        account_id=ACCOUNT,
        platform=Platform.x,
        external_id=external_id,
        edit_version=edit_version,
        kind=Kind.reply if outbound else Kind.mention,
        direction=Direction.outbound if outbound else Direction.inbound,
        thread_id=thread or uuid.uuid4().hex,
        parent_id=parent,
        author=Author(id="brand" if outbound else author, handle=author, followers=followers),
        text=text,
        language=language,
        created_at=at or now,
        received_at=now,
    )


def write(
    world: World,
    *,
    thread: str | None = None,
    author: str = "ann",
    text: str = "hello?",
    at: datetime | None = None,
    language: str | None = None,
    followers: int | None = None,
    edit_version: int = 0,
) -> Conversation:
    """A customer writes: a new conversation, or the next message in `thread`."""
    ix = message(
        world,
        thread=thread,
        author=author,
        text=text,
        at=at,
        language=language,
        followers=followers,
        edit_version=edit_version,
    )
    conversation = conversations.receive(world, ix, _cid(ix.thread_id))
    assert conversation is not None
    return conversation


def answer(world: World, conversation: Conversation, *, at: datetime | None = None, edit: int = 0) -> None:
    """The brand replies in the conversation's thread."""
    ix = message(world, thread=conversation.thread_id, at=at, outbound=True, edit_version=edit)
    conversations.receive(world, ix, conversation.id)


def _cid(thread: str) -> str:
    return ids.conversation_id(account_id=ACCOUNT, thread_id=thread)


Source = World | Outcome | Iterable[Outcome]


def _emitted(source: Source) -> list[Emitted]:
    if isinstance(source, World):
        return list(source.events)
    if isinstance(source, Outcome):
        return list(source.events)
    return [e for outcome in source for e in outcome.events]


def events(source: Source, kind: type[E], conversation: Conversation | None = None) -> list[E]:
    """The events of a kind a world emitted since its last commit, or an outcome (or several, in
    order) published; only a conversation's if one is named."""
    return [
        e.event
        for e in _emitted(source)
        if isinstance(e.event, kind)
        and (conversation is None or getattr(e.event, "conversation_id", None) == conversation.id)
    ]


def effects(source: Source) -> list[Event]:
    """What changed, as events: all of them but the outcome each command gets."""
    return [e.event for e in _emitted(source) if not isinstance(e.event, CommandApplied | CommandRejected)]


def assigned(source: Source, conversation: Conversation) -> ConversationAssigned:
    """The last assignment event of a conversation."""
    return events(source, ConversationAssigned, conversation)[-1]


def deadline(source: Source, conversation: Conversation) -> DeadlineChanged:
    """The last deadline event of a conversation."""
    return events(source, DeadlineChanged, conversation)[-1]


def repository(world: World) -> MemoryRepository:
    """An in-memory repository holding what `world` holds (its rules, people, conversations)."""
    return MemoryRepository.of(world)


def service(repo: MemoryRepository, *, ids: Ids | None = None) -> Router:
    """The router's application service over `repo`, with counted ids unless told otherwise."""
    return Router(repo, backfill_cutoff=timedelta(hours=24), ids=ids or CountingIds())


def serialized(outcome: Outcome) -> bytes:
    """An outcome as bytes: what it publishes, in order, and what it tells the consumer
    (the outbox row's id aside: it names storage, not a fact)."""
    document = {
        "outgoing": [
            [m.subject, m.msg_id, m.correlation_id, m.payload.decode(), m.headers] for m in outcome.outgoing
        ],
        "events": [[e.msg_id, e.event.model_dump_json()] for e in outcome.events],
        "timers": [[t.key, t.at.isoformat(), t.command.model_dump_json()] for t in outcome.timers],
        "rejections": [r.model_dump_json() for r in outcome.rejections],
        "unknown": sorted(outcome.unknown),
        "counters": dataclasses.asdict(outcome.counters),
    }
    return json.dumps(document, sort_keys=True).encode()


def freed(outcome: Outcome) -> set[str]:
    """Who the unit of work freed and can take more work, among people who also serve a tenant
    it did not load (see `Desk.serve_elsewhere`): the router asks to check their availability."""
    return {m.subject.split(".")[3] for m in outcome.outgoing if m.subject.endswith(".check_availability")}


class Desk:
    """The router as its users see it: the application service over an in-memory repository
    seeded with `world` (its rules, people, conversations), a fixed clock and counted ids.

    Every step is one unit of work (`Router.route` or `Router.apply`); its `Outcome` is kept
    (`last`, and all of them in order in `outcomes`), and what a test reads afterwards is what
    the repository holds. `world` is only the seed: changing it later changes nothing here;
    a change of configuration is a change of what the repository holds (`person`, `state`)."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.clock = FixedClock(world.now)
        self.ids = CountingIds()
        self.repo = repository(world)
        self.router = Router(self.repo, backfill_cutoff=world.backfill_cutoff, ids=self.ids)
        self.outcomes: list[Outcome] = []

    @property
    def now(self) -> datetime:
        return self.clock.now()

    @now.setter
    def now(self, at: datetime) -> None:
        self.clock.at = at

    @property
    def last(self) -> Outcome:
        """The outcome of the last step."""
        return self.outcomes[-1]

    @property
    def state(self) -> State:
        """What the repository holds."""
        return self.repo.state

    async def route(self, *batch: InteractionReceived) -> Outcome:
        """One batch of interactions, routed now."""
        outcome = await self.router.route(list(batch), self.now)
        self.outcomes.append(outcome)
        return outcome

    async def apply(self, *commands: AnyCommand) -> Outcome:
        """Commands, applied now in one unit of work."""
        outcome = await self.router.apply(list(commands), self.now)
        self.outcomes.append(outcome)
        return outcome

    async def write(
        self,
        *,
        thread: str | None = None,
        author: str = "ann",
        text: str = "hello?",
        at: datetime | None = None,
        language: str | None = None,
        followers: int | None = None,
        edit_version: int = 0,
    ) -> Conversation:
        """A customer writes: a new conversation, or the next message in `thread`; returns
        the conversation as the repository holds it afterwards."""
        ix = message(
            self.world,
            thread=thread,
            author=author,
            text=text,
            at=at,
            language=language,
            followers=followers,
            edit_version=edit_version,
            now=self.now,
        )
        await self.route(ix)
        return self.conversation(ix.thread_id)

    async def answer(
        self, conversation: Conversation, *, at: datetime | None = None, edit: int = 0
    ) -> Outcome:
        """The brand replies in the conversation's thread."""
        return await self.route(
            message(
                self.world,
                thread=conversation.thread_id,
                at=at,
                outbound=True,
                edit_version=edit,
                now=self.now,
            )
        )

    def conversation(self, which: Conversation | str) -> Conversation:
        """A conversation (or the one of a thread) as the repository holds it now."""
        thread = which.thread_id if isinstance(which, Conversation) else which
        return self.repo.state.conversations[_cid(thread)]

    def serve_elsewhere(self, *person_ids: str) -> None:
        """Put people in a team of another tenant too, one no unit of work here loads: whom a
        unit of work frees is then seen in the outcome, as the checks it asks for (`freed`)."""
        elsewhere = ids.team_id(tenant_id="kettle", slug="care")
        self.repo.state.teams[elsewhere] = Team(elsewhere, "kettle", "care", list(person_ids))

    def person(self, person_id: str) -> Person:
        """A person as the repository holds them (the same object from one step to the next)."""
        return self.repo.state.people[person_id]
