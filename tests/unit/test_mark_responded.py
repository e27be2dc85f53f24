"""Mark responded: the brand answered where StayHuman does not watch (a phone call, the platform's
own app for an account not connected for replies), said by a person.

It has the effect of the brand's reply arriving in the thread (the clock stops, the owner's load
is released, continuity is recorded, the resolution target and the auto-resolve timer run), with
no interaction: its `ConversationResponded` names none, and its outcome says who said so and
who answered. The pure cases call `apply_command` on a loaded world; the service cases go
through `Router.apply` over the in-memory repository and read what it publishes and keeps.
"""

import copy
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from services.router.assignment import Person
from services.router.commands import Applied, apply_command
from services.router.conversations import Conversation, Refusal, State, World
from services.router.deadlines import Sla, Targets
from shared.commands import MarkResponded, Pause, Resolve, Resume
from shared.events import (
    CommandApplied,
    ConversationResponded,
    DeadlineChanged,
    DeadlineKind,
    Event,
    Rejection,
)
from tests.fuzz import properties
from tests.unit.routing_world import (
    ACCOUNT,
    STANDARD,
    T0,
    TENANT,
    Desk,
    answer,
    build_world,
    commit,
    deadline,
    events,
    write,
)

MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)
# STANDARD with a resolution target: a day from the opening.
RESOLVING = Sla(
    default=Targets(first_response=HOUR, next_response=30 * MINUTE, resolution=timedelta(days=1)),
    name="resolving",
)


def mark(
    conversation: Conversation,
    *,
    at: datetime = T0,
    by: str = "kai",
    person: str | None = None,
    note: str = "",
) -> MarkResponded:
    return MarkResponded(
        command_id=f"mark-{conversation.id[:8]}-{by}",
        tenant_id=TENANT,
        conversation_id=conversation.id,
        person_id=person,
        note=note,
        issued_by=by,
        issued_at=at,
    )


def crew() -> list[Person]:
    """alice and bob in team support; zed in the world (he serves another tenant) but not in it."""
    return [Person("alice"), Person("bob", load=1), Person("zed")]


def world_of(**kwargs: Any) -> World:
    return build_world(crew(), teams={"support": ["alice", "bob"]}, **kwargs)


# -- pure: apply_command on a loaded world ---------------------------------------------------


def test_it_stops_the_clock_releases_the_owner_and_credits_the_owner_by_default() -> None:
    world = world_of()
    conversation = write(world, author="ann")
    assert (conversation.owner_id, world.people["alice"].load) == ("alice", 1)
    commit(world)
    world.now = T0 + 10 * MINUTE

    verdict = apply_command(world, mark(conversation, at=T0 + 9 * MINUTE, note="called them"))

    assert verdict == Applied(
        f"{conversation.id[:8]}… marked responded by kai (answered by alice): called them", person_id="alice"
    )
    assert (conversation.state, conversation.responded_at, conversation.awaiting_since) == (
        State.responded,
        T0 + 9 * MINUTE,  # when kai said so, not when the router got to it
        None,
    )
    assert (conversation.owner_id, conversation.load_weight, world.people["alice"].load) == ("alice", 0, 0)
    assert world.continuity[(ACCOUNT, "ann")] == "alice"
    [responded] = events(world, ConversationResponded)
    assert (responded.interaction_id, responded.responded_at) == ("", T0 + 9 * MINUTE)
    cleared = deadline(world, conversation)
    assert (cleared.due_at, cleared.kind, cleared.reason) == (None, None, "responded")
    assert "alice" in world.freed  # she may take queued work in the same unit of work


def test_the_person_named_is_credited_and_the_owner_keeps_the_conversation() -> None:
    world = world_of()
    conversation = write(world, author="ann")
    commit(world)

    verdict = apply_command(world, mark(conversation, by="ops", person="bob"))

    assert verdict == Applied(f"{conversation.id[:8]}… marked responded by ops (answered by bob)", "bob")
    assert world.continuity[(ACCOUNT, "ann")] == "bob"
    assert world.answered == {(ACCOUNT, "ann"): "bob"}
    assert (conversation.owner_id, world.people["alice"].load, world.people["bob"].load) == ("alice", 0, 1)


def test_a_paused_conversation_is_answered_as_a_reply_answers_it() -> None:
    world = world_of(auto_resolve=timedelta(hours=6))
    conversation = write(world)
    apply_command(world, Pause(tenant_id=TENANT, conversation_id=conversation.id, issued_at=T0))
    commit(world)
    world.now = T0 + HOUR

    assert isinstance(apply_command(world, mark(conversation, at=T0 + HOUR)), Applied)

    assert (conversation.state, conversation.paused_at, conversation.responded_at) == (
        State.responded,
        None,
        T0 + HOUR,
    )
    [timer] = world.timers
    assert (timer.at, timer.command.type) == (T0 + 7 * HOUR, "conversation.auto_resolve")


def test_a_queued_conversation_is_answered_without_crediting_anyone() -> None:
    world = build_world([Person("alice", status="away")])
    conversation = write(world, author="ann")
    assert conversation.owner_id is None
    commit(world)

    verdict = apply_command(world, mark(conversation))

    assert verdict == Applied(f"{conversation.id[:8]}… marked responded by kai (nobody owns it to credit)")
    assert conversation.state == State.responded
    assert world.continuity == {} and world.answered == {}


def test_a_command_dated_after_now_answers_now() -> None:
    world = world_of()
    conversation = write(world)
    commit(world)

    apply_command(world, mark(conversation, at=T0 + HOUR))

    assert conversation.responded_at == T0


def _resolved(world: World, conversation: Conversation) -> None:
    apply_command(world, Resolve(tenant_id=TENANT, conversation_id=conversation.id, issued_at=T0))


def _responded(world: World, conversation: Conversation) -> None:
    answer(world, conversation)


def _marked(world: World, conversation: Conversation) -> None:
    apply_command(world, mark(conversation, by="lee"))


def _wrote_after_it_was_said(world: World, conversation: Conversation) -> None:
    """Paused; kai called at 2 minutes, the customer wrote at 3 (the clock runs again from
    then), and the router applies kai's word at 5: the call did not answer that message."""
    apply_command(world, Pause(tenant_id=TENANT, conversation_id=conversation.id, issued_at=T0))
    world.now = T0 + 3 * MINUTE
    write(world, thread=conversation.thread_id, author=conversation.author_id)
    world.now = T0 + 5 * MINUTE


Before = Callable[[World, Conversation], None]
REFUSED: list[tuple[Before, dict[str, Any], Rejection, str]] = [
    (_resolved, {}, Rejection.closed, "the conversation is resolved"),
    (_responded, {}, Rejection.already_done, "nothing is waiting for an answer"),
    (_marked, {}, Rejection.already_done, "nothing is waiting for an answer"),
    (
        _wrote_after_it_was_said,
        {"at": T0 + 2 * MINUTE},
        Rejection.outdated,
        "the customer wrote again after it was marked responded",
    ),
    (lambda w, c: None, {"person": "zed"}, Rejection.not_a_member, f"zed does not serve tenant {TENANT}"),
    (lambda w, c: None, {"person": "nobody"}, Rejection.unknown_person, "nobody is not an active person"),
]


def test_each_refusal_says_why_and_changes_nothing() -> None:
    for before, options, code, reason in REFUSED:
        world = world_of()
        conversation = write(world, author="ann")
        before(world, conversation)
        commit(world)
        snapshot = copy.deepcopy((world.conversations, world.people, world.continuity))

        verdict = apply_command(world, mark(conversation, **options))

        assert verdict == Refusal(code, reason), before
        assert (world.conversations, world.people, world.continuity) == snapshot
        assert (world.events, world.timers) == ([], [])


def test_an_inactive_person_is_refused() -> None:
    world = world_of()
    world.people["bob"].active = False
    conversation = write(world)
    commit(world)

    assert apply_command(world, mark(conversation, person="bob")) == Refusal(
        Rejection.unknown_person, "bob is not an active person"
    )


# -- the same effect as the brand's reply, whatever came before ------------------------------


def _comparable(event: Event) -> dict[str, Any]:
    """An event without what names its cause: its random id and the interaction that answered."""
    return event.model_dump(exclude={"event_id", "interaction_id", "correlation_id"})


@properties(100)
@given(data=st.data())
def test_marking_does_what_the_brands_reply_would_do_or_refuses_and_changes_nothing(
    data: st.DataObject,
) -> None:
    world = build_world(
        [Person("alice", capacity=2), Person("bob", capacity=1)],
        sla=data.draw(st.sampled_from([STANDARD, RESOLVING, None]), label="policy"),
        auto_resolve=data.draw(st.sampled_from([None, timedelta(hours=6)]), label="auto resolve"),
    )
    for step in range(data.draw(st.integers(1, 12), label="steps")):
        world.now += timedelta(minutes=data.draw(st.integers(0, 90), label="minutes"))
        ordered = sorted(world.conversations.values(), key=lambda c: (c.opened_at, c.id))
        operation = data.draw(st.sampled_from(["write", "again", "answer", "pause", "resume", "resolve"]))
        if operation == "write" or not ordered:
            write(world, thread=f"t{step}", author=data.draw(st.sampled_from(["ann", "ben"]), label="author"))
            continue
        conversation = data.draw(st.sampled_from(ordered), label="conversation")
        if operation == "again":
            write(world, thread=conversation.thread_id, author=conversation.author_id)
        elif operation == "answer":
            answer(world, conversation)
        else:
            kind = {"pause": Pause, "resume": Resume, "resolve": Resolve}[operation]
            apply_command(world, kind(tenant_id=TENANT, conversation_id=conversation.id, issued_at=world.now))
    commit(world)
    world.now += timedelta(minutes=data.draw(st.integers(0, 90), label="then minutes"))
    target = data.draw(
        st.sampled_from(sorted(world.conversations, key=lambda c: world.conversations[c].opened_at)),
        label="marked",
    )
    replied, marked = copy.deepcopy(world), copy.deepcopy(world)

    answer(replied, replied.conversations[target])
    command = mark(marked.conversations[target], at=marked.now)
    verdict = apply_command(marked, command)

    if isinstance(verdict, Refusal):
        assert world.conversations[target].state not in (State.open, State.paused)
        assert marked.events == [] and marked.conversations == world.conversations
        return
    assert marked.conversations == replied.conversations
    assert {p.id: p.load for p in marked.people.values()} == {p.id: p.load for p in replied.people.values()}
    assert (marked.continuity, marked.answered, marked.freed) == (
        replied.continuity,
        replied.answered,
        replied.freed,
    )
    assert [(t.key, t.at, t.command) for t in marked.timers] == [
        (t.key, t.at, t.command) for t in replied.timers
    ]
    assert [_comparable(e.event) for e in marked.events] == [_comparable(e.event) for e in replied.events]
    assert [e.msg_id for e in marked.events if isinstance(e.event, DeadlineChanged)] == [
        e.msg_id for e in replied.events if isinstance(e.event, DeadlineChanged)
    ]


# -- through the service: what is published and kept -----------------------------------------


async def test_the_service_publishes_the_stopped_clock_and_the_outcome_naming_who() -> None:
    desk = Desk(build_world([Person("alice", capacity=1), Person("bob", capacity=0)]))
    first = await desk.write(author="ann")
    waiting = await desk.write(author="ben")
    assert (first.owner_id, waiting.owner_id, desk.person("alice").load) == ("alice", None, 1)
    desk.now = T0 + 20 * MINUTE

    outcome = await desk.apply(mark(first, at=desk.now, by="kai", note="called them"))

    first, waiting = desk.conversation(first), desk.conversation(waiting)
    assert (first.state, first.responded_at, first.due_at) == (State.responded, T0 + 20 * MINUTE, None)
    # alice's load is released, so she takes the queued conversation in the same unit of work
    assert (waiting.owner_id, desk.person("alice").load) == ("alice", 1)
    assert desk.state.continuity == {(ACCOUNT, "ann"): "alice"}
    published = {m.subject: m for m in outcome.outgoing}
    assert f"sh.conv.{TENANT}.{first.id}.responded" in published
    assert deadline(outcome, first).reason == "responded"
    [applied] = events(outcome, CommandApplied)
    assert (applied.command_type, applied.issued_by, applied.person_id, applied.conversation_id) == (
        "conversation.mark_responded",
        "kai",
        "alice",
        first.id,
    )
    assert applied.summary == f"{first.id[:8]}… marked responded by kai (answered by alice): called them"
    assert published[f"sh.result.tenant.{TENANT}.applied"].msg_id == f"outcome:{applied.command_id}"


async def test_with_a_resolution_target_the_deadline_moves_to_it() -> None:
    desk = Desk(build_world([Person("alice")], sla=RESOLVING, auto_resolve=timedelta(days=2)))
    conversation = await desk.write()
    desk.now = T0 + 10 * MINUTE

    outcome = await desk.apply(mark(conversation, at=desk.now, person="alice"))

    conversation = desk.conversation(conversation)
    assert (conversation.deadline_kind, conversation.due_at) == ("resolution", T0 + timedelta(days=1))
    event = deadline(outcome, conversation)
    assert (event.kind, event.due_at, event.reason, event.owner_id) == (
        DeadlineKind.resolution,
        T0 + timedelta(days=1),
        "responded",
        "alice",
    )
    [timer] = outcome.timers
    assert (timer.at, timer.command.type) == (
        T0 + 10 * MINUTE + timedelta(days=2),
        "conversation.auto_resolve",
    )


async def test_a_refused_mark_is_published_with_its_reason_and_changes_nothing() -> None:
    desk = Desk(build_world([Person("alice"), Person("bob")]))
    conversation = await desk.write()
    await desk.answer(conversation)
    before = copy.deepcopy(desk.state.conversations)

    outcome = await desk.apply(mark(conversation, person="bob"))

    [rejected] = outcome.rejections
    assert (rejected.code, rejected.reason, rejected.person_id, rejected.issued_by) == (
        Rejection.already_done,
        "nothing is waiting for an answer",
        "bob",
        "kai",
    )
    assert [m.subject for m in outcome.outgoing] == [f"sh.result.tenant.{TENANT}.rejected"]
    assert desk.state.conversations == before


async def test_the_authors_next_conversation_goes_to_whoever_answered() -> None:
    desk = Desk(build_world([Person("alice"), Person("bob", load=1)]))
    conversation = await desk.write(author="ann")
    assert conversation.owner_id == "alice"

    await desk.apply(mark(conversation, by="alice", person="bob", note="bob called her"))

    assert desk.state.continuity == {(ACCOUNT, "ann"): "bob"}
    assert (await desk.write(author="ann", text="one more thing")).owner_id == "bob"  # though busier
