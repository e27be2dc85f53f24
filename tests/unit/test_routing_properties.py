"""The router's pure core under random days of work: what must hold whatever happens."""

import dataclasses
from collections import Counter
from datetime import datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from services.router import conversations
from services.router.assignment import Person
from services.router.commands import apply_command
from services.router.conversations import Conversation, State, Timer, World
from services.router.topics import PRIORITIES
from shared.businesstime import WEEKDAYS, BusinessCalendar
from shared.commands import Claim, Pause, Reassign, Resolve, Resume
from shared.events import ConversationAssigned, DeadlineChanged
from tests.fuzz import properties
from tests.unit.routing_world import (
    ACCOUNT,
    STANDARD,
    T0,
    TENANT,
    answer,
    build_world,
    commit,
    topic,
    write,
)

PROPERTY = properties(150)

DAY_SHIFT = BusinessCalendar.parse(timezone="UTC", hours={day: [["09:00", "17:00"]] for day in WEEKDAYS[:5]})
TOPICS = [
    topic("billing", keywords=["invoice"], skills=["billing"]),
    topic("hurry", keywords=["asap"], priority="high"),
    topic("outage", keywords=["down"], priority="urgent"),
    topic("whenever", keywords=["whenever"], priority="low"),
    topic("thanks", keywords=["thanks"], no_sla=True),
]
TEXTS = ["hello?", "my invoice is wrong", "asap please", "the site is down", "whenever you can", "thanks!"]
LANGUAGES = [None, "de", "de-AT", "en-GB", "fr"]
AUTHORS = ["ann", "ben", "dora"]  # few, so the same authors come back
SLA = dataclasses.replace(STANDARD, high_reach_followers=10_000)
OPERATIONS = [
    "write",
    "write",
    "write",
    "again",
    "answer",
    "answer",
    "answer",
    "pause",
    "resume",
    "resolve",
    "claim",
    "reassign",
    "status",
    "check",
    "wait",
]


@st.composite
def crews(draw: st.DrawFn) -> list[Person]:
    """A few people of random capacities, weights, skills, languages, shifts and absences."""
    size = draw(st.integers(2, 4), label="people")
    ids = [f"p{i}" for i in range(size)]
    crew = []
    for person_id in ids:
        absence = None
        if draw(st.booleans(), label=f"{person_id} takes time off"):
            begins = T0 + timedelta(hours=draw(st.integers(0, 48), label="off in hours"))
            absence = (begins, begins + timedelta(hours=draw(st.integers(1, 72), label="off for hours")))
        crew.append(
            Person(
                person_id,
                capacity=draw(st.integers(1, 3), label=f"{person_id} capacity"),
                weights=draw(
                    st.dictionaries(st.sampled_from(PRIORITIES), st.integers(1, 3), max_size=4),
                    label=f"{person_id} weights",
                ),
                skills=frozenset(draw(st.sets(st.just("billing")), label=f"{person_id} skills")),
                languages=frozenset(
                    draw(st.sets(st.sampled_from(["de", "en", "fr-CA"]), max_size=2), label="languages")
                ),
                working_hours=draw(st.sampled_from([None, DAY_SHIFT]), label=f"{person_id} shift"),
                out_of_office=absence,
                substitute_id=draw(st.sampled_from([None, *ids]), label=f"{person_id} substitute"),
            )
        )
    return crew


def settle(world: World, armed: dict[str, Timer]) -> None:
    """What the service does at the end of a unit of work: freed people take from the queue."""
    for person_id in sorted(world.freed):
        person = world.people[person_id]
        if person.available(world.now):
            conversations.fill_from_queue(world, person_id, list(world.conversations.values()))
    for timer in world.timers:
        armed[timer.key] = timer  # a re-arm replaces the timer of that key


def check_loads(world: World, before: dict[str, int]) -> None:
    """Capacity holds, each load is exactly what its open conversations weigh, and the deltas say so."""
    for person in world.people.values():
        weighing = [
            c.load_weight
            for c in world.conversations.values()
            if c.owner_id == person.id and c.state == State.open
        ]
        assert 0 <= person.load <= person.capacity, person
        assert person.load == sum(weighing), person
        assert person.load - before[person.id] == world.load_deltas.get(person.id, 0)
    for conversation in world.conversations.values():
        owner = world.people.get(conversation.owner_id or "")
        if conversation.state != State.open or owner is None:
            assert conversation.load_weight == 0, conversation
        else:
            assert conversation.load_weight == owner.weight(conversation.priority), conversation


def check_events(world: World, versions: dict[str, int]) -> None:
    """Only people who take work now are given any (a claim is their own choice), and every
    deadline change of a conversation carries a higher version than the one before."""
    for emitted in world.events:
        event = emitted.event
        if isinstance(event, ConversationAssigned) and event.owner_id and event.step != "claim":
            assert world.people[event.owner_id].available(world.now), event
        if isinstance(event, DeadlineChanged):
            assert event.deadline_version > versions.get(event.conversation_id, 0)
            versions[event.conversation_id] = event.deadline_version
            assert emitted.msg_id == f"deadline:{event.conversation_id}:{event.deadline_version}"


def pick(data: st.DataObject, world: World) -> Conversation | None:
    if not world.conversations:
        return None
    ordered = sorted(world.conversations.values(), key=lambda c: (c.opened_at, c.id))
    return data.draw(st.sampled_from(ordered), label="conversation")


@PROPERTY
@given(crew=crews(), data=st.data())
def test_loads_capacity_and_continuity_hold_through_any_day(crew: list[Person], data: st.DataObject) -> None:
    world = build_world(crew, sla=SLA, topics=TOPICS, vip={"dora"}, auto_resolve=timedelta(hours=6))
    people = [p.id for p in crew]
    armed: dict[str, Timer] = {}
    versions: dict[str, int] = {}
    for person_id in people:
        conversations.check_availability(world, person_id)
    settle(world, armed)
    commit(world)

    for _ in range(data.draw(st.integers(1, 60), label="steps")):
        before = {p.id: p.load for p in world.people.values()}
        operation = data.draw(st.sampled_from(OPERATIONS), label="operation")
        conversation = pick(data, world)
        someone = data.draw(st.sampled_from(people), label="person")
        if operation == "write":
            author = data.draw(st.sampled_from(AUTHORS), label="author")
            last = world.people.get(world.continuity.get((ACCOUNT, author), ""))
            could = last is not None and last.available(world.now)
            new = write(
                world,
                thread=f"t{len(world.conversations)}",  # ids decide orders: keep them reproducible
                author=author,
                text=data.draw(st.sampled_from(TEXTS), label="text"),
                language=data.draw(st.sampled_from(LANGUAGES), label="language"),
                followers=data.draw(st.sampled_from([None, 10, 50_000]), label="followers"),
            )
            if could and last is not None and before[last.id] + last.weight(new.priority) <= last.capacity:
                assert new.owner_id == last.id, "continuity when the last answerer can take it"
        elif conversation is None:
            pass
        elif operation == "again":
            write(world, thread=conversation.thread_id, author=conversation.author_id)
        elif operation == "answer":
            answer(world, conversation)
        elif operation in ("pause", "resume", "resolve"):
            kind = {"pause": Pause, "resume": Resume, "resolve": Resolve}[operation]
            apply_command(world, kind(tenant_id=TENANT, conversation_id=conversation.id, issued_at=world.now))
        elif operation == "claim":
            apply_command(
                world,
                Claim(
                    tenant_id=TENANT, conversation_id=conversation.id, person_id=someone, issued_at=world.now
                ),
            )
        elif operation == "reassign":
            apply_command(
                world,
                Reassign(
                    tenant_id=TENANT, conversation_id=conversation.id, team="support", issued_at=world.now
                ),
            )
        if operation == "status":
            status = data.draw(st.sampled_from(["available", "away", "offline"]), label="status")
            conversations.set_status(world, someone, status)
        elif operation == "check":
            conversations.check_availability(world, someone)
        elif operation == "wait":
            minutes = st.one_of(st.integers(1, 120), st.integers(1, 3 * 24 * 60))  # mostly within a shift
            world.now += timedelta(minutes=data.draw(minutes, label="minutes"))
            for timer in sorted(armed.values(), key=lambda t: (t.at, t.key)):
                if timer.at <= world.now:
                    del armed[timer.key]
                    apply_command(world, timer.command)
        settle(world, armed)
        check_loads(world, before)
        check_events(world, versions)
        commit(world)


@PROPERTY
@given(
    size=st.integers(2, 5),
    capacity=st.integers(1, 8),
    load=st.integers(0, 3),
    last_assigned=st.lists(st.one_of(st.none(), st.integers(1, 600)), min_size=5, max_size=5),
    data=st.data(),
)
def test_equal_people_share_new_conversations_within_one_of_each_other(
    size: int, capacity: int, load: int, last_assigned: list[int | None], data: st.DataObject
) -> None:
    def when(minutes: int | None) -> datetime | None:
        return None if minutes is None else T0 - timedelta(minutes=minutes)

    crew = [
        Person(f"p{i}", capacity=capacity, load=min(load, capacity), last_assigned_at=when(last_assigned[i]))
        for i in range(size)
    ]
    world = build_world(crew, sla=SLA, topics=TOPICS)

    for _ in range(data.draw(st.integers(1, 3 * size * capacity), label="conversations")):
        world.now += timedelta(seconds=data.draw(st.integers(0, 300), label="seconds"))
        write(
            world,
            thread=f"t{len(world.conversations)}",
            author=data.draw(st.sampled_from(AUTHORS), label="author"),
            text=data.draw(st.sampled_from(TEXTS), label="text"),
            language=data.draw(st.sampled_from(LANGUAGES), label="language"),
        )

    counts = Counter(c.owner_id for c in world.conversations.values() if c.owner_id)
    shares = [counts[p.id] for p in crew]
    assert max(shares) - min(shares) <= 1, shares
