"""Replies written in the inbox, as the router sees them: who is credited, and the platform's echo.

The outbound service publishes a reply it posted as an outbound interaction naming its writer
(`sent_by`); the platform then sends the same message back (its webhook or a poll: the echo),
with the same external id, hence the same interaction id, naming nobody. Either may come first
(Meta delivers the echo before its API answers). Whichever does, the conversation is answered
once, and the author goes next time to whoever wrote the reply. Every case goes through
`Router.route` over the in-memory repository (`routing_world.Desk`).
"""

from datetime import timedelta

import pytest

from services.router.assignment import Person
from services.router.conversations import Conversation, State
from shared.events import ConversationResponded, InteractionReceived, ReplyContext
from tests.unit.routing_world import ACCOUNT, T0, Desk, build_world, events, message

MINUTE = timedelta(minutes=1)


async def owned_by_alice() -> tuple[Desk, Conversation]:
    """alice owns ann's conversation; bob serves the same team."""
    desk = Desk(build_world([Person("alice"), Person("bob", load=1)]))
    conversation = await desk.write(author="ann")
    assert conversation.owner_id == "alice"
    desk.now = T0 + 10 * MINUTE
    return desk, conversation


def reply(desk: Desk, thread: str, *, sent_by: str | None, external_id: str = "r-1") -> InteractionReceived:
    """The brand's reply in a thread, now: from the inbox (`sent_by`), or its echo (None)."""
    ix = message(desk.world, thread=thread, outbound=True, external_id=external_id, now=desk.now)
    return ix.model_copy(update={"sent_by": sent_by})


def responded(desk: Desk) -> list[ConversationResponded]:
    return events(desk.outcomes, ConversationResponded)


async def test_a_reply_written_in_the_inbox_credits_its_writer_not_the_owner() -> None:
    desk, conversation = await owned_by_alice()

    await desk.route(reply(desk, conversation.thread_id, sent_by="bob"))

    assert desk.conversation(conversation).state == State.responded
    assert len(responded(desk)) == 1
    assert desk.state.continuity == {(ACCOUNT, "ann"): "bob"}
    desk.person("bob").load = 0
    desk.now = T0 + 2 * timedelta(days=1)
    assert (await desk.write(author="ann")).owner_id == "bob"  # ann's next conversation


@pytest.mark.parametrize("who", ["carol", "inactive", "elsewhere"])
async def test_a_writer_who_does_not_serve_the_tenant_is_not_credited(who: str) -> None:
    members = ["alice"] if who == "elsewhere" else ["alice", "bob"]
    people = [Person("alice"), Person("bob", active=who != "inactive")]
    desk = Desk(build_world(people, teams={"support": members}))
    if who == "elsewhere":
        desk.serve_elsewhere("bob")
    conversation = await desk.write(author="ann")
    sender = "carol" if who == "carol" else "bob"

    await desk.route(reply(desk, conversation.thread_id, sent_by=sender))

    assert len(responded(desk)) == 1
    assert desk.state.continuity == {(ACCOUNT, "ann"): "alice"}  # the owner, as for any reply


async def test_the_echo_after_the_reply_is_a_duplicate() -> None:
    desk, conversation = await owned_by_alice()
    sent = reply(desk, conversation.thread_id, sent_by="bob")
    await desk.route(sent)

    desk.now += MINUTE
    echo = await desk.route(reply(desk, conversation.thread_id, sent_by=None))

    assert (echo.events, echo.outgoing, echo.counters.duplicates) == ([], [], 1)
    assert len(responded(desk)) == 1
    assert desk.state.interactions[sent.interaction_id].sent_by == "bob"
    assert desk.state.continuity == {(ACCOUNT, "ann"): "bob"}


async def test_the_echo_before_the_reply_is_credited_to_the_writer_once_the_reply_comes() -> None:
    desk, conversation = await owned_by_alice()
    echo = reply(desk, conversation.thread_id, sent_by=None)
    await desk.route(echo)
    assert desk.state.continuity == {(ACCOUNT, "ann"): "alice"}  # nobody known yet: the owner
    assert desk.conversation(conversation).state == State.responded

    desk.now += MINUTE
    late = await desk.route(reply(desk, conversation.thread_id, sent_by="bob"))

    assert (late.events, late.outgoing, late.counters.duplicates) == ([], [], 1)
    assert len(responded(desk)) == 1  # answered once, by the echo
    assert desk.state.interactions[echo.interaction_id].sent_by == "bob"
    assert desk.state.continuity == {(ACCOUNT, "ann"): "bob"}
    # a redelivery of the reply: nothing more
    again = await desk.route(reply(desk, conversation.thread_id, sent_by="bob"))
    assert (again.events, again.outgoing) == ([], [])
    assert desk.state.continuity == {(ACCOUNT, "ann"): "bob"}


@pytest.mark.parametrize("echo_first", [True, False])
async def test_the_reply_and_its_echo_in_one_batch_answer_once_for_the_writer(echo_first: bool) -> None:
    desk, conversation = await owned_by_alice()
    pair = [
        reply(desk, conversation.thread_id, sent_by=None),
        reply(desk, conversation.thread_id, sent_by="bob"),
    ]

    outcome = await desk.route(*(pair if echo_first else pair[::-1]))

    assert outcome.counters.duplicates == 1 and len(responded(desk)) == 1
    assert desk.state.interactions[pair[0].interaction_id].sent_by == "bob"
    assert desk.state.continuity == {(ACCOUNT, "ann"): "bob"}


async def test_a_late_writer_does_not_take_the_author_from_whoever_answered_after() -> None:
    desk, conversation = await owned_by_alice()
    # bob's reply from the inbox: its echo comes first
    await desk.route(reply(desk, conversation.thread_id, sent_by=None, external_id="r-1"))
    desk.now = T0 + 20 * MINUTE
    await desk.write(thread=conversation.thread_id, author="ann")  # ann writes again
    desk.now = T0 + 30 * MINUTE
    await desk.route(reply(desk, conversation.thread_id, sent_by=None, external_id="r-2"))  # alice on the app
    assert len(responded(desk)) == 2

    desk.now = T0 + 31 * MINUTE
    await desk.route(reply(desk, conversation.thread_id, sent_by="bob", external_id="r-1"))  # its reply, late

    assert desk.state.continuity == {(ACCOUNT, "ann"): "alice"}  # she answered last
    assert len(responded(desk)) == 2


@pytest.mark.parametrize("echo_first", [True, False])
async def test_a_reply_routed_before_the_message_it_answers_credits_its_writer(echo_first: bool) -> None:
    """Platforms deliver out of order: the reply waits for its conversation, writer and all."""
    desk = Desk(build_world([Person("alice"), Person("bob", load=1)]))
    customer = message(desk.world, author="ann", at=T0, now=T0 + 6 * MINUTE)
    desk.now = T0 + 5 * MINUTE
    if echo_first:
        await desk.route(reply(desk, customer.thread_id, sent_by=None))
    await desk.route(reply(desk, customer.thread_id, sent_by="bob"))
    assert responded(desk) == [] and desk.state.continuity == {}

    desk.now = T0 + 6 * MINUTE
    await desk.route(customer)

    assert desk.conversation(customer.thread_id).state == State.responded
    assert len(responded(desk)) == 1
    assert desk.state.continuity == {(ACCOUNT, "ann"): "bob"}


async def test_what_answering_needs_and_who_wrote_are_stored_with_the_interaction() -> None:
    desk, conversation = await owned_by_alice()
    context = ReplyContext(mentions=["brand-1"], in_reply_to_user="brand-1")
    inbound = message(desk.world, thread=conversation.thread_id, author="ann", now=desk.now)
    inbound = inbound.model_copy(update={"reply": context})
    answer = reply(desk, conversation.thread_id, sent_by="bob", external_id="r-9")

    await desk.route(inbound, answer)

    stored = desk.state.interactions
    assert stored[inbound.interaction_id].reply_context is not None
    assert ReplyContext.model_validate_json(stored[inbound.interaction_id].reply_context or "") == context
    assert (stored[inbound.interaction_id].sent_by, stored[answer.interaction_id].sent_by) == (None, "bob")
    assert stored[answer.interaction_id].reply_context is None
