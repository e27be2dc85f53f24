"""The life of a conversation: what one interaction does to it, and which events say so.

Pure: the caller loads the conversation and the routing context, and stores what
comes back. Every event gets a deterministic message id, so that replaying the
same interaction (a redelivery after a crash) can never publish a second,
different fact.
"""

import enum
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from services.router.assignment import Candidate, choose_owner
from services.router.deadlines import Deadline, SlaTargets, plan_deadline
from shared.events import (
    ConversationAssigned,
    ConversationOpened,
    ConversationReopened,
    ConversationResolved,
    ConversationResponded,
    DeadlineChanged,
    DeadlineKind,
    Direction,
    Event,
    InteractionReceived,
    InteractionRetracted,
)
from shared.ids import conversation_id


class State(enum.StrEnum):
    open = "open"  # waiting for the brand's answer
    responded = "responded"
    resolved = "resolved"  # nothing left to answer


@dataclass(slots=True)
class Conversation:
    """A conversation as the router reasons about it: one row of the `conversation` table."""

    id: str
    tenant_id: str
    account_id: str
    platform: str
    thread_id: str
    state: str
    author_id: str
    opened_at: datetime
    last_inbound_at: datetime
    updated_at: datetime
    team_id: str | None = None
    owner_id: str | None = None
    assignment_reason: str = ""
    author_name: str = ""
    last_inbound_text: str = ""
    last_inbound_url: str | None = None
    language: str | None = None
    assigned_at: datetime | None = None
    awaiting_since: datetime | None = None
    responded_at: datetime | None = None
    deadline_version: int = 0
    deadline_kind: str | None = None
    warn_at: datetime | None = None
    due_at: datetime | None = None


@dataclass
class RoutingContext:
    """What the router knows about the account an interaction came to."""

    team_id: str
    team_slug: str
    candidates: list[Candidate]
    sla: SlaTargets | None
    backfill_cutoff: timedelta


@dataclass(frozen=True)
class Emitted:
    msg_id: str
    event: Event


@dataclass
class Outcome:
    conversation: Conversation | None
    events: list[Emitted] = field(default_factory=list)
    assigned_to: str | None = None
    created: bool = False  # the conversation is new: insert it
    changed: bool = False  # an existing conversation changed: update it


def route_interaction(
    conversation: Conversation | None,
    ix: InteractionReceived,
    context: RoutingContext,
    *,
    now: datetime,
) -> Outcome:
    """Apply one new interaction to its conversation (None if the thread has none yet)."""
    if ix.direction is Direction.outbound:
        return _outbound(conversation, ix, now=now)
    if conversation is None:
        return _open(ix, context, now=now)
    if ix.edit_version > 0:
        return Outcome(conversation)  # an edit is not a new message: no clock moves
    if conversation.state in (State.responded, State.resolved):
        return _reopen(conversation, ix, context, now=now)
    conversation.last_inbound_at = max(conversation.last_inbound_at, ix.created_at)
    conversation.last_inbound_text = ix.text
    conversation.last_inbound_url = ix.url
    conversation.updated_at = now
    return Outcome(conversation, changed=True)


def _open(ix: InteractionReceived, context: RoutingContext, *, now: datetime) -> Outcome:
    cid = conversation_id(account_id=ix.account_id, thread_id=ix.thread_id)
    choice = choose_owner(context.candidates, team=context.team_slug)
    conversation = Conversation(
        id=cid,
        tenant_id=ix.tenant_id,
        account_id=ix.account_id,
        platform=ix.platform.value,
        thread_id=ix.thread_id,
        state=State.open,
        team_id=context.team_id,
        owner_id=choice.person_id,
        assignment_reason=choice.reason,
        author_id=ix.author.id,
        author_name=ix.author.name or ix.author.handle,
        last_inbound_text=ix.text,
        last_inbound_url=ix.url,
        language=ix.language,
        opened_at=ix.created_at,
        assigned_at=now if choice.person_id else None,
        awaiting_since=ix.created_at,
        last_inbound_at=ix.created_at,
        updated_at=now,
    )
    if choice.person_id is not None:
        for candidate in context.candidates:
            if candidate.person_id == choice.person_id:
                candidate.last_assigned_at = now
    common = {"tenant_id": ix.tenant_id, "correlation_id": ix.correlation_id, "occurred_at": now}
    outcome = Outcome(conversation, assigned_to=choice.person_id, created=True)
    outcome.events.append(
        Emitted(
            f"opened:{cid}:{ix.interaction_id}",
            ConversationOpened(
                **common,
                conversation_id=cid,
                account_id=ix.account_id,
                platform=ix.platform,
                thread_id=ix.thread_id,
                author=ix.author,
                interaction_id=ix.interaction_id,
                opened_at=ix.created_at,
            ),
        )
    )
    outcome.events.append(
        Emitted(
            f"assigned:{cid}:{ix.interaction_id}",
            ConversationAssigned(
                **common,
                conversation_id=cid,
                account_id=ix.account_id,
                team_id=context.team_id,
                owner_id=choice.person_id,
                reason=choice.reason,
                assigned_at=now,
            ),
        )
    )
    deadline = plan_deadline(
        kind=DeadlineKind.first_response,
        started_at=ix.created_at,
        sla=context.sla,
        now=now,
        backfill_cutoff=context.backfill_cutoff,
    )
    if deadline is not None:
        outcome.events.append(_set_deadline(conversation, deadline, ix.correlation_id, now=now))
    return outcome


def _reopen(
    conversation: Conversation, ix: InteractionReceived, context: RoutingContext, *, now: datetime
) -> Outcome:
    conversation.state = State.open
    conversation.awaiting_since = ix.created_at
    conversation.last_inbound_at = max(conversation.last_inbound_at, ix.created_at)
    conversation.last_inbound_text = ix.text
    conversation.last_inbound_url = ix.url
    conversation.updated_at = now
    outcome = Outcome(conversation, changed=True)
    outcome.events.append(
        Emitted(
            f"reopened:{conversation.id}:{ix.interaction_id}",
            ConversationReopened(
                **_envelope(conversation, ix.correlation_id, now),
                interaction_id=ix.interaction_id,
                reopened_at=ix.created_at,
            ),
        )
    )
    deadline = plan_deadline(
        kind=DeadlineKind.next_response,
        started_at=ix.created_at,
        sla=context.sla,
        now=now,
        backfill_cutoff=context.backfill_cutoff,
    )
    if deadline is not None:
        outcome.events.append(_set_deadline(conversation, deadline, ix.correlation_id, now=now))
    return outcome


def _outbound(conversation: Conversation | None, ix: InteractionReceived, *, now: datetime) -> Outcome:
    # A reply written before the customer's latest message does not answer it
    # (platforms deliver out of order), and an edit of a reply is not a new one.
    if (
        conversation is None
        or conversation.state != State.open
        or ix.edit_version > 0
        or (conversation.awaiting_since is not None and ix.created_at < conversation.awaiting_since)
    ):
        return Outcome(conversation)
    conversation.state = State.responded
    conversation.responded_at = ix.created_at
    conversation.awaiting_since = None
    conversation.updated_at = now
    outcome = Outcome(conversation, changed=True)
    outcome.events.append(
        Emitted(
            f"responded:{conversation.id}:{ix.interaction_id}",
            ConversationResponded(
                **_envelope(conversation, ix.correlation_id, now),
                interaction_id=ix.interaction_id,
                responded_at=ix.created_at,
            ),
        )
    )
    if conversation.due_at is not None:
        outcome.events.append(
            _set_deadline(conversation, None, ix.correlation_id, now=now, reason="responded")
        )
    return outcome


def retract_interaction(
    conversation: Conversation | None, retraction: InteractionRetracted, *, still_waiting: int, now: datetime
) -> Outcome:
    """A withdrawn message. When nothing else waits for an answer, the conversation is resolved
    and its clock stops; otherwise the wait goes on from the earlier message."""
    if conversation is None or conversation.state != State.open or still_waiting > 0:
        return Outcome(conversation)
    conversation.state = State.resolved
    conversation.awaiting_since = None
    conversation.updated_at = now
    outcome = Outcome(conversation, changed=True)
    outcome.events.append(
        Emitted(
            f"resolved:{conversation.id}:retracted:{retraction.external_id}",
            ConversationResolved(
                **_envelope(conversation, retraction.correlation_id, now),
                reason="the message waiting for an answer was withdrawn by its author",
                resolved_at=retraction.retracted_at,
            ),
        )
    )
    if conversation.due_at is not None:
        outcome.events.append(
            _set_deadline(conversation, None, retraction.correlation_id, now=now, reason="retracted")
        )
    return outcome


def _envelope(conversation: Conversation, correlation_id: str, now: datetime) -> dict[str, Any]:
    """What every event about a conversation says first."""
    return {
        "tenant_id": conversation.tenant_id,
        "correlation_id": correlation_id,
        "occurred_at": now,
        "conversation_id": conversation.id,
        "account_id": conversation.account_id,
    }


def _set_deadline(
    conversation: Conversation,
    deadline: Deadline | None,
    correlation_id: str,
    *,
    now: datetime,
    reason: str = "",
) -> Emitted:
    conversation.deadline_version += 1
    conversation.deadline_kind = deadline.kind.value if deadline else None
    conversation.warn_at = deadline.warn_at if deadline else None
    conversation.due_at = deadline.due_at if deadline else None
    event = DeadlineChanged(
        **_envelope(conversation, correlation_id, now),
        deadline_version=conversation.deadline_version,
        kind=deadline.kind if deadline else None,
        owner_id=conversation.owner_id,
        started_at=deadline.started_at if deadline else None,
        warn_at=conversation.warn_at,
        due_at=conversation.due_at,
        reason=reason or (deadline.kind.value if deadline else "cleared"),
    )
    return Emitted(f"deadline:{conversation.id}:{conversation.deadline_version}", event)
