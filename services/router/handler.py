"""The router's hot path: a batch of interactions in, conversations and events out.

One database transaction per batch, events written to the outbox in that same
transaction, then published with their acks in flight together, then the input
acknowledged. A crash anywhere leaves either nothing (redelivery redoes it) or
committed state whose events the outbox relay publishes under the same ids.
"""

import asyncio
import logging
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from prometheus_client import Counter, Histogram
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from services.router import conversations, store
from services.router.conversations import Conversation, Emitted, Timer, World
from shared import ids, outbox, subjects
from shared.commands import (
    AnyCommand,
    AutoResolve,
    CheckAvailability,
    Claim,
    ConversationCommand,
    HandOver,
    Pause,
    Reassign,
    Recompute,
    Resolve,
    Resume,
    SetStatus,
    command_adapter,
)
from shared.db.session import transaction
from shared.events import (
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
    interaction_adapter,
    utcnow,
)
from shared.ids import conversation_id
from shared.jetstream import Outgoing, at_header, dead_letter, is_last_delivery, publish_pipelined
from shared.logs import correlation_id
from shared.tracing import carrier_of, span

log = logging.getLogger(__name__)

CONSUMER = "router-interactions"
AnyEvent = InteractionReceived | InteractionRetracted

ROUTED = Counter("stayhuman_router_interactions_total", "Interactions handled", ["result"])
REDELIVERED = Counter("stayhuman_router_redeliveries_total", "Messages delivered more than once")
ASSIGNED = Counter("stayhuman_router_assignments_total", "Conversations assigned to a person")
BATCH_SECONDS = Histogram(
    "stayhuman_router_batch_seconds",
    "Time to route one batch, commit included",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
ROUTING_LATENCY = Histogram(
    "stayhuman_router_latency_seconds",
    "From ingest receiving an interaction to the router committing it",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


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
    raise TypeError(f"no subject for {type(event).__name__}")


def to_outgoing(emitted: Emitted, trace_headers: dict[str, str]) -> Outgoing:
    return Outgoing(
        subject_for(emitted.event),
        emitted.event.model_dump_json().encode(),
        emitted.msg_id,
        emitted.event.correlation_id,
        headers=trace_headers,
    )


@dataclass
class InteractionRouter:
    js: JetStreamContext
    sessions: async_sessionmaker[AsyncSession]
    backfill_cutoff: timedelta
    max_deliver: int
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    consumer: str = CONSUMER

    async def handle_batch(self, msgs: list[Msg]) -> None:
        items: list[tuple[Msg, Any]] = []
        for msg in msgs:
            if msg.metadata.num_delivered > 1:
                REDELIVERED.inc()
            try:
                items.append((msg, self._decode(msg.data)))
            except ValidationError as error:
                ROUTED.labels("dead_letter").inc()
                await self._dead_letter(msg, f"invalid {self.what}: {error}")
            except (ValueError, OverflowError) as error:  # e.g. an instant before year 1 in UTC
                ROUTED.labels("dead_letter").inc()
                await self._dead_letter(msg, f"invalid {self.what}: {type(error).__name__}: {error}")
        if len(items) == 1:
            await self._route_alone(items[0])
            return
        if not items:
            return
        try:
            await self._route(items)
        except Exception:
            # Isolate the message that fails so one poison message cannot hold back
            # the batch, and so it reaches the dead letter on its last delivery.
            log.warning("batch failed; routing its messages one by one", exc_info=True)
            for item in items:
                await self._route_alone(item)

    async def _route_alone(self, item: tuple[Msg, Any]) -> None:
        """Route one message; if that fails, it comes again, or on its last delivery it is kept
        on the dead letter with its error (never nak'ed into a silent drop at max_deliver)."""
        msg, _ix = item
        try:
            await self._route([item])
        except Exception as error:
            last = is_last_delivery(msg, self.max_deliver)
            log.warning(
                "routing failed",
                exc_info=True,
                extra={
                    "consumer": self.consumer,
                    "deliveries": msg.metadata.num_delivered,
                    "dead_letter": last,
                },
            )
            if last:
                ROUTED.labels("dead_letter").inc()
                await self._dead_letter(msg, f"{type(error).__name__}: {error}")
            else:
                await msg.nak(delay=1.0)

    what = "interaction"

    def _decode(self, data: bytes) -> Any:
        return interaction_adapter.validate_json(data)

    async def _dead_letter(self, msg: Msg, error: str) -> None:
        stream = msg.metadata.stream if msg.metadata else subjects.INTERACTIONS_STREAM
        await dead_letter(self.js, msg, stream=stream, consumer=self.consumer, error=error)

    async def _route(self, items: list[tuple[Msg, Any]]) -> None:
        with BATCH_SECONDS.time():
            outbox_id, rows, unknown = await self._commit(
                [ix for _msg, ix in items], {_key(ix): msg.headers for msg, ix in items}
            )
        try:
            await publish_pipelined(self.js, rows)
        except Exception:
            # Committed: the relay publishes these under the same ids. The input is
            # acked anyway, since routing it again would find it already stored.
            log.warning("events not yet published; the outbox relay will retry", exc_info=True)
        else:
            if outbox_id is not None:
                async with transaction(self.sessions) as session:
                    await outbox.delete_outbox(session=session, ids=[outbox_id])
        for msg, ix in items:
            if _key(ix) in unknown:
                ROUTED.labels("dead_letter").inc()
                await self._dead_letter(msg, f"unknown account {ix.account_id!r}")
            else:
                await msg.ack()

    async def _commit(
        self, events: list[Any], headers: dict[str, dict[str, str] | None]
    ) -> tuple[str | None, list[Outgoing], set[str]]:
        unknown: set[str] = set()
        interactions = [e for e in events if isinstance(e, InteractionReceived)]
        retractions = [e for e in events if isinstance(e, InteractionRetracted)]
        async with self.lock, transaction(self.sessions) as session:
            now = utcnow()
            await store.lock_accounts(session=session, account_ids={e.account_id for e in events})
            known = await store.get_known_interaction_ids(
                session=session, ids=[ix.interaction_id for ix in interactions]
            )
            fresh: dict[str, InteractionReceived] = {}
            for ix in interactions:
                if ix.interaction_id in known or ix.interaction_id in fresh:
                    ROUTED.labels("duplicate").inc()
                else:
                    fresh[ix.interaction_id] = ix
            if not fresh and not retractions:
                return None, [], unknown
            parents = await store.parent_conversations(
                session=session,
                wanted={(ix.account_id, ix.parent_id) for ix in fresh.values() if ix.parent_id},
            )
            every: list[InteractionReceived | InteractionRetracted] = [*fresh.values(), *retractions]
            cids = {_key(e): conversation_id(account_id=e.account_id, thread_id=e.thread_id) for e in every}
            for ix in fresh.values():
                if ix.parent_id and (ix.account_id, ix.parent_id) in parents:
                    cids[ix.interaction_id] = parents[(ix.account_id, ix.parent_id)]
            world = await store.load_world(
                session=session,
                now=now,
                backfill_cutoff=self.backfill_cutoff,
                conversation_ids=set(cids.values()),
                account_ids={ix.account_id for ix in fresh.values()},
            )
            await store.load_continuity(
                session=session,
                world=world,
                pairs={(ix.account_id, ix.author.id) for ix in fresh.values()},
            )
            customers = [ix for ix in fresh.values() if ix.direction is Direction.inbound]
            await store.load_replies(
                session=session,
                world=world,
                keys={k for ix in customers for k in conversations.reply_keys(ix, cids[ix.interaction_id])},
                since=min((ix.created_at for ix in customers), default=None),
            )
            carriers: list[tuple[int, dict[str, str]]] = []
            interaction_rows = []
            seen: dict[tuple[str, str], str] = {}
            for ix in fresh.values():
                if ix.account_id not in world.accounts:
                    unknown.add(ix.interaction_id)
                    continue
                cid = cids[ix.interaction_id]
                if ix.parent_id and (ix.account_id, ix.parent_id) in seen and cid not in world.conversations:
                    cid = seen[(ix.account_id, ix.parent_id)]  # its parent came in this same batch
                first = len(world.events)
                with span(
                    "route interaction",
                    parent=headers.get(ix.interaction_id),
                    attributes={"stayhuman.conversation_id": cid},
                ):
                    conversation = conversations.receive(world, ix, cid)
                    carriers.append((first, carrier_of()))
                if conversation is not None:
                    seen[(ix.account_id, ix.external_id)] = conversation.id
                    if conversation.id in world.created and conversation.owner_id:
                        _log_assignment(ix, conversation)
                if conversation is not None:
                    where: str | None = conversation.id
                elif ix.direction is Direction.outbound:
                    where = conversations.waiting_key(ix, cid)  # kept for the message it answers
                else:
                    where = None
                interaction_rows.append(_interaction_row(ix, where))
                ROUTING_LATENCY.observe(max(0.0, (now - ix.received_at).total_seconds()))
            for row in interaction_rows:  # replies of this batch that joined a conversation since
                row["conversation_id"] = world.adopted.pop(str(row["id"]), row["conversation_id"])
            await store.add_interactions(session=session, rows=interaction_rows)
            await store.move_interactions(session=session, moves=world.adopted)
            for retraction in retractions:
                cid = cids[retraction.event_id]
                await store.retract_interactions(
                    session=session,
                    tenant_id=retraction.tenant_id,
                    account_id=retraction.account_id,
                    external_id=retraction.external_id,
                    at=retraction.retracted_at,
                )
                conversation = world.conversations.get(cid)
                waiting = (
                    await store.count_waiting(
                        session=session, conversation_id=cid, since=conversation.awaiting_since
                    )
                    if conversation is not None
                    else 0
                )
                carriers.append((len(world.events), carrier_of()))
                conversations.retract(world, retraction, cid, still_waiting=waiting)
            rows = await settle(session, world, carriers)
            outbox_id = await outbox.add_outbox(session=session, messages=rows)
        # counted once committed: a batch rolled back and routed again counts once
        ROUTED.labels("routed").inc(len(interaction_rows))
        ROUTED.labels("retracted").inc(len(retractions))
        ASSIGNED.inc(len(world.assigned_people))
        return outbox_id, rows, unknown


def _key(item: Any) -> str:
    """Retractions name no interaction of their own: their event id stands for them."""
    if isinstance(item, InteractionReceived):
        return item.interaction_id
    if isinstance(item, InteractionRetracted):
        return item.event_id
    return str(item.command_id)


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
    }


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


@dataclass
class OutboxRelay:
    """Publishes events that were committed but not published (a crash, a NATS outage)."""

    js: JetStreamContext
    sessions: async_sessionmaker[AsyncSession]
    grace: timedelta = timedelta(seconds=10)

    async def relay_once(self, *, everything: bool = False) -> int:
        older_than = None if everything else utcnow() - self.grace
        async with self.sessions() as session:
            pending = await outbox.get_pending_outbox(session=session, older_than=older_than, limit=20)
        if not pending:
            return 0
        messages = [message for batch in pending.values() for message in batch]
        await publish_pipelined(self.js, messages)
        async with transaction(self.sessions) as session:
            await outbox.delete_outbox(session=session, ids=list(pending))
        log.info("outbox relayed", extra={"count": len(messages)})
        return len(messages)


# Queued conversations looked at per person who frees capacity, per transaction.
QUEUE_SCAN = 50


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


async def settle(
    session: AsyncSession, world: World, carriers: list[tuple[int, dict[str, str]]] | None = None
) -> list[Outgoing]:
    """Finish a transaction's work: people who can take more work take queued conversations
    (no sweep: right when capacity frees), then everything changed is written, and the
    messages to publish are returned (events, then the router's timers)."""
    elsewhere = await _fill_queues(session, world)
    await store.save_world(session=session, world=world)
    rows: list[Outgoing] = []
    marks = sorted(carriers or [], key=lambda item: item[0])
    skipped = conversations.superseded(world.events)
    for index, emitted in enumerate(world.events):
        if index in skipped:
            continue
        trace: dict[str, str] = {}
        for first, carrier in marks:
            if first <= index:
                trace = carrier
        rows.append(to_outgoing(emitted, trace))
    rows.extend(timer_outgoing(timer) for timer in world.timers)
    rows.extend(elsewhere)
    for reason in world.rejected:
        log.warning("command refused", extra={"reason": reason})
    return rows


async def _fill_queues(session: AsyncSession, world: World) -> list[Outgoing]:
    """Queued conversations for the people this transaction freed; returns the checks to ask
    for people who also serve tenants this transaction did not load (their queues there are
    filled by that check, in a transaction of its own)."""
    freed = sorted(p for p in world.freed if p in world.people and world.people[p].available(world.now))
    if not freed:
        return []
    memberships = await store.teams_of(session=session, person_ids=freed)
    elsewhere = []
    for person_id in freed:
        if any(t not in world.teams for t in memberships.get(person_id, set())):
            elsewhere.append(
                outbox.command_outgoing(
                    CheckAvailability(
                        command_id=f"freed-{person_id}-{uuid.uuid4().hex[:12]}",
                        person_id=person_id,
                        issued_by="router",
                    )
                )
            )
        team_ids = {t for t in memberships.get(person_id, set()) if t in world.teams}
        if not team_ids:
            continue
        queued = [
            c
            for c in await store.take_queued(session=session, team_ids=team_ids, limit=QUEUE_SCAN)
            if c.id not in world.conversations
        ]
        for conversation in queued:
            world.conversations[conversation.id] = conversation
        queued_here = [c for c in world.conversations.values() if c.team_id in team_ids]
        conversations.fill_from_queue(world, person_id, queued_here)
    return elsewhere


COMMANDS_CONSUMER = "router-commands"
TIMERS_CONSUMER = "router-timers"


@dataclass
class CommandRouter(InteractionRouter):
    """Commands from people and operators (and the router's own timers), applied like interactions:
    one transaction per batch, events through the outbox, then acked."""

    consumer: str = COMMANDS_CONSUMER
    what = "command"

    def _decode(self, data: bytes) -> Any:
        return command_adapter.validate_json(data)

    async def _commit(
        self, events: list[Any], headers: dict[str, dict[str, str] | None]
    ) -> tuple[str | None, list[Outgoing], set[str]]:
        async with self.lock, transaction(self.sessions) as session:
            now = utcnow()
            # A command delivered again (its ack was lost) was applied already: once is enough.
            seen = await store.seen_commands(session=session, ids={c.command_id for c in events})
            commands: list[AnyCommand] = []
            for command in events:
                if command.command_id not in seen and command.command_id not in {
                    c.command_id for c in commands
                }:
                    commands.append(command)
            if not commands:
                return None, [], set()
            conversation_ids = {c.conversation_id for c in commands if isinstance(c, ConversationCommand)}
            people = {
                c.person_id for c in commands if isinstance(c, SetStatus | HandOver | CheckAvailability)
            }
            named = {c.person_id for c in commands if isinstance(c, Claim | Reassign) and c.person_id}
            tenants = {c.tenant_id for c in commands if isinstance(c, ConversationCommand | Recompute)}
            for command in commands:
                if isinstance(command, Recompute):
                    conversation_ids |= set(
                        await store.open_conversations_of(session=session, tenant_id=command.tenant_id)
                    )
            world = await store.load_world(
                session=session,
                now=now,
                backfill_cutoff=self.backfill_cutoff,
                conversation_ids=conversation_ids,
                person_ids=people | named,
                tenant_ids=tenants,
                owned_by=people,
            )
            for command in commands:
                apply_command(world, command)
                COMMANDS.labels(command.type).inc()
            rows = await settle(session, world)
            await store.record_commands(session=session, ids=[c.command_id for c in commands], now=now)
            outbox_id = await outbox.add_outbox(session=session, messages=rows)
        return outbox_id, rows, set()


COMMANDS = Counter("stayhuman_router_commands_total", "Commands applied by the router", ["type"])


def apply_command(world: World, command: AnyCommand) -> None:
    """One command on a loaded world (pure: the same call in tests and replays)."""
    key = f"cmd-{command.command_id}"
    if isinstance(command, SetStatus):
        conversations.set_status(world, command.person_id, command.status.value)
        return
    if isinstance(command, CheckAvailability):
        conversations.check_availability(world, command.person_id)
        return
    if isinstance(command, HandOver):
        conversations.hand_over(
            world,
            command.person_id,
            until=None,
            reason=command.reason or "handed over",
            key=key,
            only_gone=True,
        )
        return
    if isinstance(command, Recompute):
        for each in list(world.conversations.values()):
            if each.tenant_id == command.tenant_id:
                conversations.recompute(world, each, key)
        return
    conversation = world.conversations.get(command.conversation_id)
    if conversation is None or conversation.tenant_id != command.tenant_id:
        world.rejected.append(
            f"{command.type}: no conversation {command.conversation_id} in {command.tenant_id}"
        )
        return
    match command:
        case Claim():
            conversations.claim(world, conversation, command.person_id, key, by=command.issued_by)
        case Reassign():
            team_id = ids.team_id(tenant_id=command.tenant_id, slug=command.team) if command.team else None
            if (
                team_id is not None
                and conversation.team_id == team_id
                and (conversation.assigned_at is not None and conversation.assigned_at >= command.issued_at)
            ):
                return  # done already: this is a redelivery
            conversations.reassign(
                world, conversation, key, person_id=command.person_id, team_id=team_id, by=command.issued_by
            )
        case Pause():
            conversations.pause(world, conversation, key, reason=command.reason)
        case Resume():
            conversations.resume(world, conversation, key)
        case Resolve():
            conversations.resolve(
                world, conversation, key, reason=command.reason or f"resolved by {command.issued_by}"
            )
        case AutoResolve():
            conversations.auto_resolve(world, conversation, key)
