"""The order messages arrive in: a brand reply the router gets before the customer's message it
answers (platforms deliver out of order, and two routers may take them at the same moment)
still answers it when that message comes, in the same transaction or a later one.

Through the router's application service over the in-memory repository: what a reply waits
under between transactions is what the repository keeps, not what a test keeps in a world."""

from datetime import timedelta

from services.router import conversations
from services.router.assignment import Person
from services.router.conversations import Conversation, State, World
from services.router.service import Outcome
from shared import ids
from shared.commands import Pause
from shared.events import (
    ConversationAssigned,
    ConversationOpened,
    ConversationReopened,
    ConversationResponded,
    DeadlineChanged,
    Event,
    InteractionReceived,
)
from tests.unit.routing_world import ACCOUNT, T0, TENANT, build_world, message, repository, service, topic

MINUTE = timedelta(minutes=1)


class Desk:
    """The router's service over an in-memory repository that holds `world`'s rules and people."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.repo = repository(world)
        self.router = service(self.repo)

    async def route(self, *batch: InteractionReceived) -> Outcome:
        """One transaction of the router (a batch)."""
        return await self.router.route(list(batch), self.world.now)

    def conversation(self, thread: str) -> Conversation:
        return self.repo.state.conversations[ids.conversation_id(account_id=ACCOUNT, thread_id=thread)]

    def kept_under(self, ix: InteractionReceived) -> str | None:
        """Where the repository keeps an interaction: its conversation, or the key it waits under."""
        return self.repo.state.interactions[ix.interaction_id].conversation_id


def reply(world: World, thread: str, **kwargs: object) -> InteractionReceived:
    return message(world, thread=thread, outbound=True, **kwargs)  # type: ignore[arg-type]


def kinds(outcome: Outcome) -> list[type[Event]]:
    return [type(e.event) for e in outcome.events]


def of(outcome: Outcome, kind: type[Event]) -> list[Event]:
    return [e.event for e in outcome.events if isinstance(e.event, kind)]


async def test_a_reply_that_comes_first_answers_the_message_when_it_opens_its_conversation() -> None:
    desk = Desk(build_world([Person("alice")]))
    answered = reply(desk.world, "post-1", at=T0 + MINUTE)

    assert (await desk.route(answered)).events == []  # no conversation yet: recorded, kept
    outcome = await desk.route(message(desk.world, thread="post-1", at=T0))

    conversation = desk.conversation("post-1")
    assert conversation.state == State.responded
    assert conversation.owner_id == "alice"
    assert desk.repo.state.people["alice"].load == 0
    # no deadline set only to be cleared: notify is never asked to arm one
    assert kinds(outcome) == [ConversationOpened, ConversationAssigned, ConversationResponded]
    [responded] = of(outcome, ConversationResponded)
    assert isinstance(responded, ConversationResponded)
    assert responded.interaction_id == answered.interaction_id
    assert desk.repo.state.continuity[(ACCOUNT, "ann")] == "alice"
    assert desk.kept_under(answered) == conversation.id


async def test_the_same_within_one_batch() -> None:
    desk = Desk(build_world([Person("alice")]))

    outcome = await desk.route(
        reply(desk.world, "post-1", at=T0 + MINUTE), message(desk.world, thread="post-1", at=T0)
    )

    assert desk.conversation("post-1").state == State.responded
    assert of(outcome, DeadlineChanged) == []


async def test_a_reply_written_before_the_message_does_not_answer_it() -> None:
    desk = Desk(build_world([Person("alice")]))
    await desk.route(reply(desk.world, "post-1", at=T0 - MINUTE))

    await desk.route(message(desk.world, thread="post-1", at=T0))

    conversation = desk.conversation("post-1")
    assert conversation.state == State.open
    assert conversation.due_at == T0 + timedelta(hours=1)


async def test_an_edit_of_a_reply_is_no_answer() -> None:
    desk = Desk(build_world([Person("alice")]))

    await desk.route(
        reply(desk.world, "post-1", at=T0 + MINUTE, edit_version=1),
        message(desk.world, thread="post-1", at=T0),
    )

    assert desk.conversation("post-1").state == State.open


async def test_a_reply_naming_the_message_it_answers_waits_for_that_message_in_another_thread() -> None:
    """X and Mastodon put a reply in the thread of the message it answers: the brand's answer to
    a customer's second tweet has a thread of its own, and joins the conversation with it."""
    desk = Desk(build_world([Person("alice")]))
    world = desk.world
    await desk.route(
        message(world, thread="tweet:A", at=T0, external_id="A"),
        reply(world, "tweet:A", parent="A", at=T0 + MINUTE, external_id="R1"),
    )
    conversation = desk.conversation("tweet:A")
    assert conversation.state == State.responded

    late = reply(world, "tweet:B", parent="B", at=T0 + 3 * MINUTE, external_id="R2")  # answers B
    assert (await desk.route(late)).events == []
    assert desk.kept_under(late) == conversations.waiting_key(late, "-")
    again = message(world, thread="tweet:R1", parent="R1", at=T0 + 2 * MINUTE, external_id="B")
    outcome = await desk.route(again)  # B's parent, R1, is in the conversation

    assert desk.conversation("tweet:A").state == State.responded  # reopened by B, answered by R2
    assert kinds(outcome)[:1] == [ConversationReopened]
    responded = of(outcome, ConversationResponded)[-1]
    assert isinstance(responded, ConversationResponded)
    assert responded.interaction_id == late.interaction_id
    assert desk.kept_under(late) == desk.kept_under(again) == conversation.id
    assert of(outcome, DeadlineChanged) == []


async def test_a_message_that_comes_after_the_reply_to_it_leaves_the_conversation_answered() -> None:
    desk = Desk(build_world([Person("alice")]))
    await desk.route(message(desk.world, thread="post-1", at=T0))
    await desk.route(reply(desk.world, "post-1", at=T0 + 5 * MINUTE))

    outcome = await desk.route(message(desk.world, thread="post-1", at=T0 + 2 * MINUTE))  # before the reply

    conversation = desk.conversation("post-1")
    assert conversation.state == State.responded
    assert conversation.responded_at == T0 + 5 * MINUTE
    assert of(outcome, DeadlineChanged) == []
    assert desk.repo.state.people["alice"].load == 0


async def test_a_paused_conversation_answered_before_the_customer_wrote_again_stays_answered() -> None:
    desk = Desk(build_world([Person("alice")]))
    await desk.route(message(desk.world, thread="post-1", at=T0))
    cid = desk.conversation("post-1").id
    await desk.router.apply([Pause(tenant_id=TENANT, conversation_id=cid, issued_at=T0)], T0)
    await desk.route(reply(desk.world, "post-1", at=T0 + 5 * MINUTE))
    assert desk.conversation("post-1").state == State.responded

    outcome = await desk.route(message(desk.world, thread="post-1", at=T0 + 2 * MINUTE))

    assert desk.conversation("post-1").state == State.responded
    assert of(outcome, DeadlineChanged) == []


async def test_the_brands_own_comment_under_the_same_post_is_no_answer() -> None:
    """Facebook names the post as the parent of every top comment, the brand's own included."""
    desk = Desk(build_world([Person("alice")]))
    own = reply(desk.world, "comment:brand-1", parent="post-9", at=T0 + MINUTE)
    await desk.route(own)

    await desk.route(message(desk.world, thread="comment:c-1", parent="post-9", at=T0))

    conversation = desk.conversation("comment:c-1")
    assert conversation.state == State.open
    assert desk.kept_under(own) != conversation.id


async def test_a_reply_to_the_same_parent_in_the_same_thread_answers_a_later_sibling() -> None:
    """A brand reply to a top comment we never got answers the next comment in its thread."""
    desk = Desk(build_world([Person("alice")]))
    waiting = reply(desk.world, "comment:c-1", parent="c-1", at=T0 + MINUTE)
    await desk.route(waiting)

    await desk.route(message(desk.world, thread="comment:c-1", parent="c-1", at=T0))

    conversation = desk.conversation("comment:c-1")
    assert conversation.state == State.responded
    assert desk.kept_under(waiting) == conversation.id


async def test_a_conversation_recorded_only_takes_its_replies_in_without_answering() -> None:
    desk = Desk(
        build_world([Person("alice")], topics=[topic("thanks", keywords=["thanks"], team=None, no_sla=True)])
    )
    waiting = reply(desk.world, "post-1", parent="m-1", at=T0 + MINUTE)

    await desk.route(waiting, message(desk.world, thread="post-1", text="thanks!", at=T0, external_id="m-1"))

    conversation = desk.conversation("post-1")
    assert conversation.state == State.resolved
    assert desk.kept_under(waiting) == conversation.id


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


async def test_a_deadline_set_and_cleared_in_one_transaction_is_published_once_as_cleared() -> None:
    """A message past its deadline and the reply to it, routed together: publishing the past-due
    deadline would let notify fire it before the clearing one arrives; only the newest goes out."""
    desk = Desk(build_world([Person("alice")]))
    outcome = await desk.route(
        message(desk.world, thread="post-9", at=T0 - timedelta(hours=3)),
        reply(desk.world, "post-9", at=T0 - timedelta(hours=1)),
    )

    [kept] = of(outcome, DeadlineChanged)
    assert isinstance(kept, DeadlineChanged)
    assert kept.due_at is None and kept.deadline_version == 2  # set, then cleared
    assert [m.msg_id for m in outcome.outgoing if m.subject.startswith("sh.deadline.")] == [
        f"deadline:{kept.conversation_id}:2"
    ]
