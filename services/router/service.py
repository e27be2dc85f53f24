"""The router as an application service: interactions or commands in, an `Outcome` out.

Each call is one unit of work over the repository port: drop what was seen
already, load the world it touches, let the pure domain decide (`conversations`,
`commands`), give freed people queued work, save, and keep every message to
publish in the outbox in that same transaction. It neither publishes nor
acknowledges: the consumers do what the outcome says, after the commit.
"""

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from services.router import conversations
from services.router.commands import Applied, apply_command
from services.router.conversations import Conversation, Emitted, Timer, World
from services.router.ports import Contention, Ids, RandomIds, Repository, UnitOfWork
from shared import subjects
from shared.commands import (
    AnyCommand,
    CheckAvailability,
    Claim,
    ConversationCommand,
    HandOver,
    MarkResponded,
    Reassign,
    Recompute,
    SetStatus,
)
from shared.events import (
    CommandApplied,
    CommandRejected,
    ConversationAssigned,
    ConversationOpened,
    ConversationPaused,
    ConversationReopened,
    ConversationResolved,
    ConversationResponded,
    ConversationResumed,
    DeadlineChanged,
    Direction,
    Event,
    InteractionReceived,
    InteractionRetracted,
)
from shared.ids import conversation_id
from shared.logs import correlation_id
from shared.messages import Outgoing, at_header, command_outgoing
from shared.tracing import carrier_of, span

log = logging.getLogger(__name__)

Interaction = InteractionReceived | InteractionRetracted

# Queued conversations looked at per person who frees capacity, per transaction.
QUEUE_SCAN = 50

# How often a unit of work the database gave up (a deadlock) is done again before its batch fails.
CONTENTION_ATTEMPTS = 5


@dataclass
class Counters:
    """What a committed unit of work did, for the consumers' metrics."""

    routed: int = 0
    duplicates: int = 0
    retracted: int = 0
    assigned: int = 0
    commands: dict[str, int] = field(default_factory=dict)  # by command type
    latencies: list[float] = field(default_factory=list)  # ingest received -> routed, in seconds


@dataclass
class Outcome:
    """What a unit of work decided and committed; `outgoing` is what to publish, in order."""

    events: list[Emitted] = field(default_factory=list)  # with their message ids, outcomes included
    timers: list[Timer] = field(default_factory=list)
    outgoing: list[Outgoing] = field(default_factory=list)  # events, then timers, then checks
    rejections: list[CommandRejected] = field(default_factory=list)
    unknown: set[str] = field(default_factory=set)  # keys (see `key_of`) of unknown accounts' items
    counters: Counters = field(default_factory=Counters)
    outbox_id: str | None = None  # the outbox row to delete once `outgoing` is published


def key_of(item: Interaction | AnyCommand) -> str:
    """Retractions name no interaction of their own: their event id stands for them."""
    if isinstance(item, InteractionReceived):
        return item.interaction_id
    if isinstance(item, InteractionRetracted):
        return item.event_id
    return str(item.command_id)


@dataclass
class Router:
    repository: Repository
    backfill_cutoff: timedelta
    ids: Ids = field(default_factory=RandomIds)
    # Outbox rows whose messages are published: deleted by the next unit of work (or by
    # `forget_published` when none comes), not by a transaction of their own.
    _published: set[str] = field(default_factory=set)

    def published(self, outbox_id: str) -> None:
        """The consumer published an outcome's messages: its outbox row may go."""
        self._published.add(outbox_id)

    def _take_published(self) -> list[str]:
        """The rows one unit of work deletes: taken from the set, so that two running at once
        (PostgreSQL) never wait on each other's deletes; given back if it does not commit."""
        done = sorted(self._published)
        self._published.difference_update(done)
        return done

    async def forget_published(self) -> None:
        """Delete the rows of published outcomes now (an idle router, before the relay looks)."""
        done = self._take_published()
        if done:
            try:
                await self.repository.delete_outbox(done)
            except BaseException:
                self._published.update(done)
                raise

    @asynccontextmanager
    async def _unit_of_work(self) -> AsyncIterator[UnitOfWork]:
        done = self._take_published()
        try:
            async with self.repository.unit_of_work() as uow:
                await uow.delete_outbox(done)
                yield uow
        except BaseException:
            self._published.update(done)
            raise

    async def _retrying(self, work: Callable[[], Awaitable[Outcome]]) -> Outcome:
        """Do a unit of work again when the database gave it up for another's sake (a deadlock),
        after a short random wait so that the two do not meet the same way twice."""
        for attempt in range(1, CONTENTION_ATTEMPTS):
            try:
                return await work()
            except Contention:
                await asyncio.sleep(random.uniform(0.005, 0.02) * 2**attempt)
        return await work()

    async def route(
        self,
        batch: Sequence[Interaction],
        now: datetime,
        *,
        traces: Mapping[str, Mapping[str, str] | None] | None = None,
    ) -> Outcome:
        """Interactions, new or withdrawn: stored once, joined to or opening their
        conversations, assigned, their clocks set. `traces`: each item's trace headers by key."""
        return await self._retrying(lambda: self._route(batch, now, traces or {}))

    async def apply(self, commands: Sequence[AnyCommand], now: datetime) -> Outcome:
        """Commands from people, operators and the router's own timers, each applied or rejected
        with its reason; a command applied already (a redelivery) does nothing again."""
        return await self._retrying(lambda: self._apply(commands, now))

    async def _route(
        self, batch: Sequence[Interaction], now: datetime, traces: Mapping[str, Mapping[str, str] | None]
    ) -> Outcome:
        outcome = Outcome()
        interactions = [e for e in batch if isinstance(e, InteractionReceived)]
        retractions = [e for e in batch if isinstance(e, InteractionRetracted)]
        async with self._unit_of_work() as uow:
            await uow.lock_accounts({e.account_id for e in batch})
            known = await uow.known_interactions([ix.interaction_id for ix in interactions])
            fresh: dict[str, InteractionReceived] = {}
            senders: dict[str, str] = {}  # replies stored already, and who wrote them in the inbox
            for ix in interactions:
                if ix.interaction_id not in known and ix.interaction_id not in fresh:
                    fresh[ix.interaction_id] = ix
                    continue
                outcome.counters.duplicates += 1
                if ix.sent_by is None or ix.direction is not Direction.outbound:
                    continue
                # A reply sent from the inbox, and its echo from the platform: one message, whichever
                # came first; the writer is credited either way.
                earlier = fresh.get(ix.interaction_id)
                if earlier is None:
                    senders[ix.interaction_id] = ix.sent_by
                elif earlier.sent_by is None:
                    fresh[ix.interaction_id] = earlier.model_copy(update={"sent_by": ix.sent_by})
            named = await uow.name_senders(senders) if senders else []
            if not fresh and not retractions and not named:
                return outcome
            cids = await self._conversation_ids(uow, [*fresh.values(), *retractions])
            world = await uow.load_world(
                now=now,
                backfill_cutoff=self.backfill_cutoff,
                new_id=self.ids.new_id,
                conversation_ids=set(cids.values()) | {where for where, _ in named},
                account_ids={ix.account_id for ix in fresh.values()},
                reach=lambda world: conversations.teams_in_reach(world, list(fresh.values()), cids),
            )
            await uow.load_continuity(world, {(ix.account_id, ix.author.id) for ix in fresh.values()})
            customers = [ix for ix in fresh.values() if ix.direction is Direction.inbound]
            await uow.load_replies(
                world,
                {k for ix in customers for k in conversations.reply_keys(ix, cids[ix.interaction_id])},
                min((ix.created_at for ix in customers), default=None),
            )
            carriers: list[tuple[int, dict[str, str]]] = []
            stored: list[tuple[InteractionReceived, str | None]] = []
            seen: dict[tuple[str, str], str] = {}
            for ix in fresh.values():
                if ix.account_id not in world.accounts:
                    outcome.unknown.add(ix.interaction_id)
                    continue
                cid = cids[ix.interaction_id]
                if ix.parent_id and (ix.account_id, ix.parent_id) in seen and cid not in world.conversations:
                    cid = seen[(ix.account_id, ix.parent_id)]  # its parent came in this same batch
                first = len(world.events)
                with span(
                    "route interaction",
                    parent=traces.get(ix.interaction_id),
                    attributes={"stayhuman.conversation_id": cid},
                ):
                    conversation = conversations.receive(world, ix, cid)
                    carriers.append((first, carrier_of()))
                if conversation is not None:
                    seen[(ix.account_id, ix.external_id)] = conversation.id
                    if conversation.id in world.created and conversation.owner_id:
                        _log_assignment(ix, conversation)
                    where: str | None = conversation.id
                elif ix.direction is Direction.outbound:
                    where = conversations.waiting_key(ix, cid)  # kept for the message it answers
                else:
                    where = None
                stored.append((ix, where))
                outcome.counters.latencies.append(max(0.0, (now - ix.received_at).total_seconds()))
            # replies of this batch that joined a conversation since
            stored = [(ix, world.adopted.pop(ix.interaction_id, where)) for ix, where in stored]
            await uow.add_interactions(stored)
            await uow.move_interactions(world.adopted)
            for retraction in retractions:
                cid = cids[retraction.event_id]
                await uow.retract_interactions(
                    tenant_id=retraction.tenant_id,
                    account_id=retraction.account_id,
                    external_id=retraction.external_id,
                    at=retraction.retracted_at,
                )
                conversation = world.conversations.get(cid)
                waiting = (
                    await uow.count_waiting(cid, conversation.awaiting_since)
                    if conversation is not None
                    else 0
                )
                carriers.append((len(world.events), carrier_of()))
                conversations.retract(world, retraction, cid, still_waiting=waiting)
            for where, reply in named:
                # a reply still waiting for its conversation is credited when it joins one
                if where in world.conversations:
                    conversations.credit_sender(world, world.conversations[where], reply)
            await settle(uow, world, outcome, carriers)
        outcome.counters.routed = len(stored)
        outcome.counters.retracted = len(retractions)
        outcome.counters.assigned = len(world.assigned_people)
        return outcome

    async def _conversation_ids(self, uow: UnitOfWork, items: list[Interaction]) -> dict[str, str]:
        """Each item's conversation: its thread's, or for a reply deep in a chain, the one where
        the chain began."""
        fresh = [ix for ix in items if isinstance(ix, InteractionReceived)]
        parents = await uow.parent_conversations(
            {(ix.account_id, ix.parent_id) for ix in fresh if ix.parent_id}
        )
        cids = {key_of(e): conversation_id(account_id=e.account_id, thread_id=e.thread_id) for e in items}
        for ix in fresh:
            if ix.parent_id and (ix.account_id, ix.parent_id) in parents:
                cids[ix.interaction_id] = parents[(ix.account_id, ix.parent_id)]
        return cids

    async def _apply(self, commands: Sequence[AnyCommand], now: datetime) -> Outcome:
        outcome = Outcome()
        async with self._unit_of_work() as uow:
            seen = await uow.seen_commands({c.command_id for c in commands})
            todo: dict[str, AnyCommand] = {}
            for command in commands:
                if command.command_id not in seen and command.command_id not in todo:
                    todo[command.command_id] = command
            if not todo:
                return outcome
            world = await self._load_for(uow, list(todo.values()), now)
            for command in todo.values():
                verdict = apply_command(world, command)
                world.emit(f"outcome:{command.command_id}", _outcome_event(world, command, verdict))
                outcome.counters.commands[command.type] = outcome.counters.commands.get(command.type, 0) + 1
            await settle(uow, world, outcome)
            await uow.record_commands(list(todo), now)
        outcome.rejections = [e.event for e in outcome.events if isinstance(e.event, CommandRejected)]
        outcome.counters.assigned = len(world.assigned_people)
        return outcome

    async def _load_for(self, uow: UnitOfWork, commands: list[AnyCommand], now: datetime) -> World:
        conversation_ids = {c.conversation_id for c in commands if isinstance(c, ConversationCommand)}
        people = {c.person_id for c in commands if isinstance(c, SetStatus | HandOver | CheckAvailability)}
        named = {
            c.person_id for c in commands if isinstance(c, Claim | Reassign | MarkResponded) and c.person_id
        }
        tenants = {c.tenant_id for c in commands if isinstance(c, ConversationCommand | Recompute)}
        for command in commands:
            if isinstance(command, Recompute):
                conversation_ids |= set(await uow.open_conversations_of(command.tenant_id))
        return await uow.load_world(
            now=now,
            backfill_cutoff=self.backfill_cutoff,
            new_id=self.ids.new_id,
            conversation_ids=conversation_ids,
            person_ids=people | named,
            tenant_ids=tenants,
            owned_by=people,
        )


def _outcome_event(world: World, command: AnyCommand, verdict: Applied | conversations.Refusal) -> Event:
    """`CommandApplied` or `CommandRejected`, on the tenant's subject, or the person's for a
    command about a person (who may serve many tenants)."""
    common = {
        "event_id": world.new_id(),
        "occurred_at": world.now,
        "tenant_id": getattr(command, "tenant_id", ""),
        "correlation_id": command.correlation_id,
        "command_id": command.command_id,
        "command_type": command.type,
        "issued_by": command.issued_by,
        "issued_at": command.issued_at,
        "conversation_id": getattr(command, "conversation_id", None),
        "person_id": getattr(command, "person_id", None),
    }
    if isinstance(verdict, Applied):
        if verdict.person_id is not None:
            common["person_id"] = verdict.person_id  # e.g. who answered, when the command left it implied
        return CommandApplied(**common, summary=verdict.summary)
    log.warning("command refused", extra={"command_id": command.command_id, "reason": verdict.reason})
    return CommandRejected(**common, code=verdict.code, reason=verdict.reason)


async def settle(
    uow: UnitOfWork, world: World, outcome: Outcome, carriers: list[tuple[int, dict[str, str]]] | None = None
) -> None:
    """Finish a unit of work: people who can take more work take queued conversations (no
    sweep: right when capacity frees), everything changed is written, and the messages to
    publish (events, then the router's timers, then checks for elsewhere) go to the outbox."""
    elsewhere = await _fill_queues(uow, world)
    await uow.save_world(world)
    marks = sorted(carriers or [], key=lambda item: item[0])
    skipped = conversations.superseded(world.events)
    trace: dict[str, str] = {}
    mark = 0
    for index, emitted in enumerate(world.events):
        # each event carries the trace of the last item routed at or before it
        while mark < len(marks) and marks[mark][0] <= index:
            trace = marks[mark][1]
            mark += 1
        if index in skipped:
            continue
        outcome.events.append(emitted)
        outcome.outgoing.append(event_outgoing(emitted, trace))
    outcome.timers = list(world.timers)
    outcome.outgoing.extend(timer_outgoing(timer) for timer in world.timers)
    outcome.outgoing.extend(elsewhere)
    outcome.outbox_id = await uow.add_outbox(outcome.outgoing, world.now)


async def _fill_queues(uow: UnitOfWork, world: World) -> list[Outgoing]:
    """Queued conversations for the people this unit of work freed; returns the checks to ask
    for people who also serve tenants it did not load (their queues there are filled by that
    check, in a unit of work of its own)."""
    freed = sorted(p for p in world.freed if p in world.people and world.people[p].available(world.now))
    if not freed:
        return []
    memberships = await uow.teams_of(freed)
    elsewhere = []
    for person_id in freed:
        if any(t not in world.teams for t in memberships.get(person_id, set())):
            check = CheckAvailability(
                # the whole fresh id, so that no other check (another router, a restart) has it;
                # the person after it as far as the id's 64 characters allow
                command_id=f"freed-{world.new_id()}-{person_id}"[:64],
                person_id=person_id,
                issued_by="router",
                issued_at=world.now,
            )
            elsewhere.append(command_outgoing(check))
        team_ids = {t for t in memberships.get(person_id, set()) if t in world.teams}
        if not team_ids:
            continue
        queued = [c for c in await uow.take_queued(team_ids, QUEUE_SCAN) if c.id not in world.conversations]
        for conversation in queued:
            world.conversations[conversation.id] = conversation
        queued_here = [c for c in world.conversations.values() if c.team_id in team_ids]
        conversations.fill_from_queue(world, person_id, queued_here)
    return elsewhere


def subject_for(event: Event) -> str:
    match event:
        case (
            ConversationOpened()
            | ConversationAssigned()
            | ConversationResponded()
            | ConversationReopened()
            | ConversationPaused()
            | ConversationResumed()
            | ConversationResolved()
        ):
            return subjects.conversation_event(
                tenant_id=event.tenant_id,
                conversation_id=event.conversation_id,
                event=event.type.split(".", 1)[1],  # type: ignore[arg-type]
            )
        case DeadlineChanged():
            return subjects.deadline(tenant_id=event.tenant_id, conversation_id=event.conversation_id)
        case CommandApplied():
            return subjects.command_outcome(
                tenant_id=event.tenant_id, person_id=event.person_id, outcome="applied"
            )
        case CommandRejected():
            return subjects.command_outcome(
                tenant_id=event.tenant_id, person_id=event.person_id, outcome="rejected"
            )
    raise TypeError(f"no subject for {type(event).__name__}")


def event_outgoing(emitted: Emitted, trace_headers: dict[str, str]) -> Outgoing:
    return Outgoing(
        subject_for(emitted.event),
        emitted.event.model_dump_json().encode(),
        emitted.msg_id,
        emitted.event.correlation_id,
        headers=trace_headers,
    )


def timer_outgoing(timer: Timer) -> Outgoing:
    """One of the router's own timers, armed by publishing its schedule (a re-arm replaces it)."""
    return Outgoing(
        subjects.router_timer_schedule(key=timer.key),
        timer.command.model_dump_json().encode(),
        f"rsched:{timer.key}:{timer.at.timestamp():.6f}",
        timer.command.correlation_id,
        headers={
            "Nats-Schedule": at_header(timer.at),
            "Nats-Schedule-Target": subjects.router_timer_fired(key=timer.key),
            "Nats-Schedule-TTL": "24h",
        },
    )


def _log_assignment(ix: InteractionReceived, conversation: Conversation) -> None:
    token = correlation_id.set(ix.correlation_id)
    log.info(
        "conversation assigned",
        extra={
            "conversation_id": conversation.id,
            "owner_id": conversation.owner_id,
            "reason": conversation.assignment_reason,
        },
    )
    correlation_id.reset(token)
