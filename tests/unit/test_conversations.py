from datetime import UTC, datetime, timedelta

from services.router.assignment import Candidate
from services.router.conversations import RoutingContext, State, route_interaction
from services.router.deadlines import SlaTargets
from shared.events import (
    Author,
    ConversationAssigned,
    ConversationOpened,
    ConversationReopened,
    ConversationResponded,
    DeadlineChanged,
    DeadlineKind,
    Direction,
    InteractionReceived,
    InteractionRetracted,
    Kind,
    Platform,
)
from shared.ids import conversation_id, interaction_id

T0 = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)


def context(*people: str, sla: SlaTargets | None = None) -> RoutingContext:
    return RoutingContext(
        team_id="team-1",
        team_slug="care",
        candidates=[Candidate(p, None) for p in people],
        sla=sla or SlaTargets(first_response=timedelta(minutes=30), next_response=timedelta(hours=1)),
        backfill_cutoff=timedelta(hours=24),
    )


def interaction(
    external_id: str,
    *,
    direction: Direction = Direction.inbound,
    at: datetime = T0,
    thread: str = "post-1",
    edit_version: int = 0,
) -> InteractionReceived:
    return InteractionReceived(
        tenant_id="acme",
        correlation_id=f"cid-{external_id}",
        interaction_id=interaction_id(
            tenant_id="acme", account_id="acme-fb", external_id=external_id, edit_version=edit_version
        ),
        account_id="acme-fb",
        platform=Platform.facebook,
        external_id=external_id,
        edit_version=edit_version,
        kind=Kind.comment,
        direction=direction,
        thread_id=thread,
        author=Author(id="u1", name="Dana"),
        text=f"text of {external_id}",
        created_at=at,
        received_at=at + timedelta(seconds=1),
    )


def test_first_inbound_opens_assigns_and_sets_a_deadline() -> None:
    ctx = context("maria", "li")
    outcome = route_interaction(None, interaction("m1"), ctx, now=T0 + timedelta(seconds=2))
    conversation = outcome.conversation
    assert conversation is not None
    assert conversation.id == conversation_id(account_id="acme-fb", thread_id="post-1")
    assert conversation.state == State.open and conversation.owner_id == "li"
    assert outcome.assigned_to == "li"
    types = [type(e.event) for e in outcome.events]
    assert types == [ConversationOpened, ConversationAssigned, DeadlineChanged]
    deadline = outcome.events[2].event
    assert isinstance(deadline, DeadlineChanged)
    assert deadline.deadline_version == 1 and deadline.due_at == T0 + timedelta(minutes=30)
    assert deadline.kind is DeadlineKind.first_response and deadline.owner_id == "li"
    assert all(e.event.correlation_id == "cid-m1" for e in outcome.events)
    # the next conversation goes to the other member
    other = route_interaction(None, interaction("m2", thread="post-2"), ctx, now=T0 + timedelta(seconds=3))
    assert other.assigned_to == "maria"


def test_message_ids_are_deterministic() -> None:
    first = route_interaction(None, interaction("m1"), context("maria"), now=T0)
    again = route_interaction(None, interaction("m1"), context("maria"), now=T0 + timedelta(seconds=9))
    assert [e.msg_id for e in first.events] == [e.msg_id for e in again.events]


def test_a_second_inbound_message_does_not_move_the_clock() -> None:
    opened = route_interaction(None, interaction("m1"), context("maria"), now=T0).conversation
    outcome = route_interaction(
        opened, interaction("m2", at=T0 + timedelta(minutes=5)), context("maria"), now=T0
    )
    assert outcome.events == []
    assert outcome.conversation is not None
    assert outcome.conversation.due_at == T0 + timedelta(minutes=30)
    assert outcome.conversation.last_inbound_text == "text of m2"


def test_brand_reply_responds_and_clears_the_deadline() -> None:
    opened = route_interaction(None, interaction("m1"), context("maria"), now=T0).conversation
    reply = interaction("r1", direction=Direction.outbound, at=T0 + timedelta(minutes=4))
    outcome = route_interaction(opened, reply, context("maria"), now=T0 + timedelta(minutes=4))
    assert outcome.conversation is not None and outcome.conversation.state == State.responded
    responded, cleared = (e.event for e in outcome.events)
    assert isinstance(responded, ConversationResponded)
    assert isinstance(cleared, DeadlineChanged)
    assert cleared.deadline_version == 2 and cleared.due_at is None and cleared.reason == "responded"


def test_a_reply_older_than_the_question_does_not_answer_it() -> None:
    opened = route_interaction(None, interaction("m1"), context("maria"), now=T0).conversation
    early = interaction("r0", direction=Direction.outbound, at=T0 - timedelta(minutes=1))
    outcome = route_interaction(opened, early, context("maria"), now=T0)
    assert outcome.events == [] and outcome.conversation is not None
    assert outcome.conversation.state == State.open


def test_outbound_without_conversation_is_only_recorded() -> None:
    outcome = route_interaction(
        None, interaction("r1", direction=Direction.outbound), context("maria"), now=T0
    )
    assert outcome.conversation is None and outcome.events == []


def test_customer_writing_again_after_reply_starts_next_response_clock() -> None:
    ctx = context("maria")
    conversation = route_interaction(None, interaction("m1"), ctx, now=T0).conversation
    conversation = route_interaction(
        conversation,
        interaction("r1", direction=Direction.outbound, at=T0 + timedelta(minutes=1)),
        ctx,
        now=T0,
    ).conversation
    later = T0 + timedelta(minutes=10)
    outcome = route_interaction(conversation, interaction("m2", at=later), ctx, now=later)
    reopened, deadline = (e.event for e in outcome.events)
    assert isinstance(reopened, ConversationReopened)
    assert isinstance(deadline, DeadlineChanged)
    assert deadline.deadline_version == 3
    assert deadline.kind is DeadlineKind.next_response and deadline.due_at == later + timedelta(hours=1)
    assert outcome.conversation is not None and outcome.conversation.owner_id == "maria"


def test_an_edit_moves_nothing() -> None:
    ctx = context("maria")
    conversation = route_interaction(None, interaction("m1"), ctx, now=T0).conversation
    outcome = route_interaction(conversation, interaction("m1", edit_version=1), ctx, now=T0)
    assert outcome.events == []


def test_backfilled_conversation_is_assigned_without_deadline() -> None:
    old = T0 - timedelta(days=2)
    outcome = route_interaction(None, interaction("m1", at=old), context("maria"), now=T0)
    assert outcome.assigned_to == "maria"
    assert [type(e.event) for e in outcome.events] == [ConversationOpened, ConversationAssigned]
    assert outcome.conversation is not None and outcome.conversation.due_at is None


def test_team_without_members_queues_with_a_deadline() -> None:
    outcome = route_interaction(None, interaction("m1"), context(), now=T0)
    assert outcome.assigned_to is None
    assert outcome.conversation is not None and outcome.conversation.owner_id is None
    assigned = outcome.events[1].event
    assert isinstance(assigned, ConversationAssigned) and assigned.owner_id is None
    assert isinstance(outcome.events[2].event, DeadlineChanged)


def retraction(external_id: str, *, at: datetime = T0) -> InteractionRetracted:
    return InteractionRetracted(
        tenant_id="acme", account_id="acme-fb", platform=Platform.facebook, external_id=external_id,
        thread_id="post-1", retracted_at=at, correlation_id="cid-r",
    )  # fmt: skip


def test_a_withdrawn_message_with_nothing_else_waiting_resolves_and_stops_the_clock() -> None:
    from services.router.conversations import retract_interaction
    from shared.events import ConversationResolved

    opened = route_interaction(None, interaction("m1"), context("maria"), now=T0).conversation
    outcome = retract_interaction(opened, retraction("m1"), still_waiting=0, now=T0 + timedelta(minutes=1))
    resolved, cleared = (e.event for e in outcome.events)
    assert isinstance(resolved, ConversationResolved) and isinstance(cleared, DeadlineChanged)
    assert cleared.due_at is None and cleared.reason == "retracted" and cleared.deadline_version == 2
    assert outcome.conversation is not None and outcome.conversation.state == State.resolved
    # writing again later reopens it, with a new clock
    again = route_interaction(
        outcome.conversation, interaction("m2", at=T0 + timedelta(hours=1)), context("maria"), now=T0
    )
    assert again.conversation is not None and again.conversation.state == State.open
    assert isinstance(again.events[-1].event, DeadlineChanged) and again.events[-1].event.due_at is not None


def test_a_withdrawn_message_leaves_the_others_waiting() -> None:
    from services.router.conversations import retract_interaction

    opened = route_interaction(None, interaction("m1"), context("maria"), now=T0).conversation
    outcome = retract_interaction(opened, retraction("m2"), still_waiting=1, now=T0)
    assert (
        outcome.events == [] and outcome.conversation is not None and outcome.conversation.state == State.open
    )
