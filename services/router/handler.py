"""The router's hot path: a batch of interactions in, conversations and events out.

One database transaction per batch, events written to the outbox in that same
transaction, then published with their acks in flight together, then the input
acknowledged. A crash anywhere leaves either nothing (redelivery redoes it) or
committed state whose events the outbox relay publishes under the same ids.
"""

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from prometheus_client import Counter, Histogram
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from services.router import store
from services.router.conversations import (
    Conversation,
    Emitted,
    Outcome,
    retract_interaction,
    route_interaction,
)
from shared import outbox, subjects
from shared.db.session import transaction
from shared.events import (
    ConversationAssigned,
    ConversationOpened,
    ConversationReopened,
    ConversationResolved,
    ConversationResponded,
    DeadlineChanged,
    Event,
    InteractionReceived,
    InteractionRetracted,
    interaction_adapter,
    utcnow,
)
from shared.ids import conversation_id
from shared.jetstream import Outgoing, dead_letter, is_last_delivery, publish_pipelined
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

    async def handle_batch(self, msgs: list[Msg]) -> None:
        items: list[tuple[Msg, AnyEvent]] = []
        for msg in msgs:
            if msg.metadata.num_delivered > 1:
                REDELIVERED.inc()
            try:
                items.append((msg, interaction_adapter.validate_json(msg.data)))
            except ValidationError as error:
                ROUTED.labels("dead_letter").inc()
                await self._dead_letter(msg, f"invalid interaction: {error}")
        if not items:
            return
        try:
            await self._route(items)
        except Exception:
            if len(items) == 1:
                raise
            # Isolate the message that fails so one poison message cannot hold back
            # the batch, and so it reaches the dead letter on its last delivery.
            log.warning("batch failed; routing its messages one by one", exc_info=True)
            for item in items:
                await self._route_alone(item)

    async def _route_alone(self, item: tuple[Msg, AnyEvent]) -> None:
        msg, _ix = item
        try:
            await self._route([item])
        except Exception as error:
            if is_last_delivery(msg, self.max_deliver):
                ROUTED.labels("dead_letter").inc()
                await self._dead_letter(msg, f"{type(error).__name__}: {error}")
            else:
                await msg.nak(delay=1.0)

    async def _dead_letter(self, msg: Msg, error: str) -> None:
        await dead_letter(self.js, msg, stream=subjects.INTERACTIONS_STREAM, consumer=CONSUMER, error=error)

    async def _route(self, items: list[tuple[Msg, AnyEvent]]) -> None:
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
        self, events: list[AnyEvent], headers: dict[str, dict[str, str] | None]
    ) -> tuple[str | None, list[Outgoing], set[str]]:
        now = utcnow()
        rows: list[Outgoing] = []
        unknown: set[str] = set()
        interactions = [e for e in events if isinstance(e, InteractionReceived)]
        retractions = [e for e in events if isinstance(e, InteractionRetracted)]
        async with transaction(self.sessions) as session:
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
                return None, rows, unknown
            contexts = await store.get_routing_contexts(
                session=session,
                account_ids={ix.account_id for ix in fresh.values()},
                backfill_cutoff=self.backfill_cutoff,
            )
            conversations = await store.get_conversations(
                session=session,
                ids={
                    conversation_id(account_id=ix.account_id, thread_id=ix.thread_id) for ix in fresh.values()
                }
                | {conversation_id(account_id=r.account_id, thread_id=r.thread_id) for r in retractions},
            )
            assigned: dict[str, datetime] = {}
            created: dict[str, Conversation] = {}
            changed: dict[str, Conversation] = {}
            interaction_rows = []
            for ix in fresh.values():
                context = contexts.get(ix.account_id)
                if context is None:
                    unknown.add(ix.interaction_id)
                    continue
                cid = conversation_id(account_id=ix.account_id, thread_id=ix.thread_id)
                with span(
                    "route interaction",
                    parent=headers.get(ix.interaction_id),
                    attributes={"stayhuman.conversation_id": cid},
                ):
                    outcome = route_interaction(conversations.get(cid), ix, context, now=now)
                    trace_headers = carrier_of()
                conversation = outcome.conversation
                if conversation is not None:
                    conversations[cid] = conversation
                    if outcome.created:
                        created[cid] = conversation
                    elif outcome.changed and cid not in created:
                        changed[cid] = conversation
                if outcome.assigned_to:
                    assigned[outcome.assigned_to] = now
                    _log_assignment(ix, outcome)
                interaction_rows.append(_interaction_row(ix, conversation))
                rows.extend(to_outgoing(emitted, trace_headers) for emitted in outcome.events)
                ROUTING_LATENCY.observe(max(0.0, (now - ix.received_at).total_seconds()))
                ROUTED.labels("routed").inc()
            await store.add_interactions(session=session, rows=interaction_rows)
            for retraction in retractions:
                cid = conversation_id(account_id=retraction.account_id, thread_id=retraction.thread_id)
                await store.retract_interactions(
                    session=session,
                    tenant_id=retraction.tenant_id,
                    account_id=retraction.account_id,
                    external_id=retraction.external_id,
                    at=retraction.retracted_at,
                )
                conversation = conversations.get(cid)
                waiting = (
                    await store.count_waiting(
                        session=session, conversation_id=cid, since=conversation.awaiting_since
                    )
                    if conversation is not None
                    else 0
                )
                outcome = retract_interaction(conversation, retraction, still_waiting=waiting, now=now)
                if outcome.changed and outcome.conversation is not None and cid not in created:
                    changed[cid] = outcome.conversation
                rows.extend(to_outgoing(emitted, carrier_of()) for emitted in outcome.events)
                ROUTED.labels("retracted").inc()
            await store.save_conversations(
                session=session, created=list(created.values()), changed=list(changed.values())
            )
            await store.record_assignments(session=session, assigned=assigned)
            outbox_id = await outbox.add_outbox(session=session, messages=rows)
        return outbox_id, rows, unknown


def _key(event: AnyEvent) -> str:
    """Retractions name no interaction of their own: their event id stands for them."""
    return event.interaction_id if isinstance(event, InteractionReceived) else event.event_id


def _interaction_row(ix: InteractionReceived, conversation: Conversation | None) -> dict[str, object]:
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
        "conversation_id": conversation.id if conversation else None,
        "correlation_id": ix.correlation_id,
    }


def _log_assignment(ix: InteractionReceived, outcome: Outcome) -> None:
    ASSIGNED.inc()
    conversation = outcome.conversation
    token = correlation_id.set(ix.correlation_id)
    log.info(
        "conversation assigned",
        extra={
            "conversation_id": conversation.id if conversation else None,
            "owner_id": outcome.assigned_to,
            "reason": conversation.assignment_reason if conversation else "",
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
