"""The order messages arrive in: a brand reply the router gets before the customer's message it
answers (platforms deliver out of order, and two routers may take them at the same moment)
still answers it when that message comes, in the same transaction or a later one."""

from datetime import timedelta

from services.router import conversations
from services.router.assignment import Person
from services.router.conversations import Conversation, State, World
from shared import ids
from shared.events import (
    ConversationAssigned,
    ConversationOpened,
    ConversationReopened,
    ConversationResponded,
    DeadlineChanged,
    InteractionReceived,
)
from tests.unit.routing_world import ACCOUNT, T0, answer, build_world, commit, events, message, topic, write

MINUTE = timedelta(minutes=1)


def route(world: World, ix: InteractionReceived, conversation_id: str | None = None) -> Conversation | None:
    """What the handler does: the thread's conversation, unless the message's parent has one."""
    cid = conversation_id or ids.conversation_id(account_id=ACCOUNT, thread_id=ix.thread_id)
    return conversations.receive(world, ix, cid)


def reply(world: World, thread: str, **kwargs: object) -> InteractionReceived:
    return message(world, thread=thread, outbound=True, **kwargs)  # type: ignore[arg-type]


def test_a_reply_that_comes_first_answers_the_message_when_it_opens_its_conversation() -> None:
    world = build_world([Person("alice")])
    answered = reply(world, "post-1", at=T0 + MINUTE)

    assert route(world, answered) is None  # no conversation yet: recorded, kept
    commit(world)
    conversation = route(world, message(world, thread="post-1", at=T0))

    assert conversation is not None
    assert conversation.state == State.responded
    assert conversation.owner_id == "alice"
    assert world.people["alice"].load == 0
    assert [type(e.event) for e in world.events] == [
        ConversationOpened,
        ConversationAssigned,
        ConversationResponded,
    ]  # no deadline set only to be cleared: notify is never asked to arm one
    assert events(world, ConversationResponded)[0].interaction_id == answered.interaction_id
    assert world.continuity[(ACCOUNT, "ann")] == "alice"


def test_the_same_within_one_batch() -> None:
    world = build_world([Person("alice")])

    route(world, reply(world, "post-1", at=T0 + MINUTE))
    conversation = route(world, message(world, thread="post-1", at=T0))

    assert conversation is not None and conversation.state == State.responded
    assert events(world, DeadlineChanged) == []


def test_a_reply_written_before_the_message_does_not_answer_it() -> None:
    world = build_world([Person("alice")])
    route(world, reply(world, "post-1", at=T0 - MINUTE))
    commit(world)

    conversation = route(world, message(world, thread="post-1", at=T0))

    assert conversation is not None and conversation.state == State.open
    assert conversation.due_at == T0 + timedelta(hours=1)


def test_an_edit_of_a_reply_is_no_answer() -> None:
    world = build_world([Person("alice")])
    route(world, reply(world, "post-1", at=T0 + MINUTE, edit_version=1))

    conversation = route(world, message(world, thread="post-1", at=T0))

    assert conversation is not None and conversation.state == State.open


def test_a_reply_naming_the_message_it_answers_waits_for_that_message_in_another_thread() -> None:
    """X and Mastodon put a reply in the thread of the message it answers: the brand's answer to
    a customer's second tweet has a thread of its own, and joins the conversation with it."""
    world = build_world([Person("alice")])
    first = message(world, thread="tweet:A", at=T0, external_id="A")
    conversation = route(world, first)
    assert conversation is not None
    route(world, reply(world, "tweet:A", parent="A", at=T0 + MINUTE, external_id="R1"))
    assert conversation.state == State.responded
    commit(world)

    late = reply(world, "tweet:B", parent="B", at=T0 + 3 * MINUTE, external_id="R2")  # answers B
    assert route(world, late) is None
    assert world.replies[conversations.waiting_key(late, "-")] == [conversations.Reply.of(late)]
    commit(world)
    again = message(world, thread="tweet:R1", parent="R1", at=T0 + 2 * MINUTE, external_id="B")
    route(world, again, conversation.id)  # B's parent, R1, is in the conversation

    assert conversation.state == State.responded  # reopened by B, answered by R2
    assert [type(e.event) for e in world.events][:1] == [ConversationReopened]
    assert events(world, ConversationResponded)[-1].interaction_id == late.interaction_id
    assert world.adopted == {late.interaction_id: conversation.id}
    assert events(world, DeadlineChanged) == []


def test_a_message_that_comes_after_the_reply_to_it_leaves_the_conversation_answered() -> None:
    world = build_world([Person("alice")])
    conversation = write(world, thread="post-1", at=T0)
    answer(world, conversation, at=T0 + 5 * MINUTE)
    commit(world)

    route(world, message(world, thread="post-1", at=T0 + 2 * MINUTE))  # written before the reply

    assert conversation.state == State.responded
    assert conversation.responded_at == T0 + 5 * MINUTE
    assert events(world, DeadlineChanged) == []
    assert world.people["alice"].load == 0


def test_a_paused_conversation_answered_before_the_customer_wrote_again_stays_answered() -> None:
    world = build_world([Person("alice")])
    conversation = write(world, thread="post-1", at=T0)
    conversations.pause(world, conversation, "p1", reason="")
    commit(world)
    route(world, reply(world, "post-1", at=T0 + 5 * MINUTE))
    assert conversation.state == State.responded
    commit(world)

    route(world, message(world, thread="post-1", at=T0 + 2 * MINUTE))

    assert conversation.state == State.responded
    assert events(world, DeadlineChanged) == []


def test_the_brands_own_comment_under_the_same_post_is_no_answer() -> None:
    """Facebook names the post as the parent of every top comment, the brand's own included."""
    world = build_world([Person("alice")])
    route(world, reply(world, "comment:brand-1", parent="post-9", at=T0 + MINUTE))
    commit(world)

    conversation = route(world, message(world, thread="comment:c-1", parent="post-9", at=T0))

    assert conversation is not None and conversation.state == State.open
    assert world.adopted == {}


def test_a_reply_to_the_same_parent_in_the_same_thread_answers_a_later_sibling() -> None:
    """A brand reply to a top comment we never got answers the next comment in its thread."""
    world = build_world([Person("alice")])
    waiting = reply(world, "comment:c-1", parent="c-1", at=T0 + MINUTE)
    route(world, waiting)
    commit(world)

    conversation = route(world, message(world, thread="comment:c-1", parent="c-1", at=T0))

    assert conversation is not None and conversation.state == State.responded
    assert world.adopted == {waiting.interaction_id: conversation.id}


def test_a_conversation_recorded_only_takes_its_replies_in_without_answering() -> None:
    world = build_world(
        [Person("alice")], topics=[topic("thanks", keywords=["thanks"], team=None, no_sla=True)]
    )
    waiting = reply(world, "post-1", parent="m-1", at=T0 + MINUTE)
    route(world, waiting)

    conversation = route(world, message(world, thread="post-1", text="thanks!", at=T0, external_id="m-1"))

    assert conversation is not None and conversation.state == State.resolved
    assert world.adopted == {waiting.interaction_id: conversation.id}


def test_the_keys_a_message_looks_under_include_where_its_replies_wait() -> None:
    world = build_world([Person("alice")])
    customer = message(world, thread="tweet:R1", parent="R1", external_id="B")
    brand = reply(world, "tweet:B", parent="B")
    threadless = reply(world, "tweet:R1")
    cid = ids.conversation_id(account_id=ACCOUNT, thread_id="tweet:R1")

    keys = conversations.reply_keys(customer, "conversation-of-A")

    assert conversations.waiting_key(brand, "-") in keys
    assert conversations.waiting_key(threadless, cid) in keys
    assert keys[0] == "conversation-of-A" and len(set(keys)) == len(keys) == 4


def test_a_deadline_set_and_cleared_in_one_transaction_is_published_once_as_cleared() -> None:
    """A message past its deadline and the reply to it, routed together: publishing the past-due
    deadline would let notify fire it before the clearing one arrives; only the newest goes out."""
    world = build_world([Person("alice")])
    route(world, message(world, thread="post-9", at=T0 - timedelta(hours=3)))
    route(world, reply(world, "post-9", at=T0 - timedelta(hours=1)))
    deadlines = [i for i, e in enumerate(world.events) if isinstance(e.event, DeadlineChanged)]
    published = [
        e.event for i, e in enumerate(world.events) if i not in conversations.superseded(world.events)
    ]
    kept = [e for e in published if isinstance(e, DeadlineChanged)]
    assert len(deadlines) == 2 and len(kept) == 1
    assert kept[0].due_at is None and kept[0].deadline_version == max(
        world.events[i].event.deadline_version
        for i in deadlines  # type: ignore[attr-defined]
    )
