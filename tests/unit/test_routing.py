"""The router's pure core, case by case: who owns a conversation, when it is due, how it lives on."""

import copy
import dataclasses
import itertools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from services.router import conversations
from services.router.assignment import Person
from services.router.commands import Applied, apply_command
from services.router.conversations import Conversation, Refusal, State, World
from services.router.deadlines import Sla, Targets
from shared.businesstime import WEEKDAYS, BusinessCalendar
from shared.commands import (
    AnyCommand,
    AutoResolve,
    CheckAvailability,
    Claim,
    HandOver,
    Pause,
    Reassign,
    Recompute,
    Resolve,
    Resume,
    SetStatus,
)
from shared.events import (
    ConversationAssigned,
    ConversationOpened,
    ConversationPaused,
    ConversationReopened,
    ConversationResolved,
    ConversationResponded,
    ConversationResumed,
    DeadlineChanged,
    DeadlineKind,
    Rejection,
)
from tests.unit.routing_world import (
    ACCOUNT,
    POLICY,
    STANDARD,
    SUPPORT,
    T0,
    TENANT,
    answer,
    assigned,
    build_world,
    commit,
    deadline,
    events,
    team_id,
    topic,
    write,
)

BERLIN = ZoneInfo("Europe/Berlin")
OFFICE = BusinessCalendar.parse(
    timezone="Europe/Berlin",
    hours={day: [["09:00", "18:00"]] for day in WEEKDAYS[:5]},
    holidays_country="DE",
)
FRIDAY_EVENING = datetime(2026, 5, 22, 17, 55, tzinfo=BERLIN)  # Monday 2026-05-25 is Whit Monday
DAY_SHIFT = BusinessCalendar.parse(timezone="UTC", hours={day: [["09:00", "17:00"]] for day in WEEKDAYS[:5]})
MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)


def skilled(*skills: str) -> frozenset[str]:
    return frozenset(skills)


# -- continuity ------------------------------------------------------------------------------


def test_continuity_gives_the_author_to_whoever_answered_them_last() -> None:
    world = build_world([Person("alice", load=3), Person("bob")])
    world.continuity[(ACCOUNT, "ann")] = "alice"

    conversation = write(world, author="ann")

    assert conversation.owner_id == "alice"  # although bob is less loaded
    event = assigned(world, conversation)
    assert event.step == "continuity"
    assert "continuity: alice answered this author last" in event.reason
    assert conversation.assignment_reason == event.reason


def test_continuity_is_per_author() -> None:
    world = build_world([Person("alice", load=3), Person("bob")])
    world.continuity[(ACCOUNT, "ann")] = "alice"

    assert write(world, author="ben").owner_id == "bob"


def _away() -> Person:
    return Person("alice", status="away")


def _offline() -> Person:
    return Person("alice", status="offline")


def _full() -> Person:
    return Person("alice", capacity=1, load=1)


def _out_of_office() -> Person:
    return Person("alice", out_of_office=(T0 - HOUR, T0 + timedelta(days=3)))


def _off_shift() -> Person:
    return Person(
        "alice", working_hours=BusinessCalendar.parse(timezone="UTC", hours={"sat": [["09:00", "17:00"]]})
    )


def _deactivated() -> Person:
    return Person("alice", active=False)


@pytest.mark.parametrize(
    ("alice", "because"),
    [
        (_away, "is away"),
        (_offline, "is offline"),
        (_full, "is at capacity (1/1)"),
        (_out_of_office, "is out of office and has no substitute"),
        (_off_shift, "is off shift"),
        (_deactivated, "is deactivated"),
    ],
    ids=["away", "offline", "at capacity", "out of office without substitute", "off shift", "deactivated"],
)
def test_continuity_falls_back_to_the_match_when_the_last_answerer_cannot_take_it(
    alice: Callable[[], Person], because: str
) -> None:
    world = build_world([alice(), Person("bob", load=5)])
    world.continuity[(ACCOUNT, "ann")] = "alice"

    conversation = write(world, author="ann")

    assert conversation.owner_id == "bob"
    event = assigned(world, conversation)
    assert event.step == "match"
    assert event.reason == (
        f"team support: continuity: alice (answered this author last) {because}; "
        "matched bob: least loaded (5/20), longest since last assignment"
    )
    assert conversation.assignment_reason == event.reason


def test_continuity_falls_back_when_the_last_answerer_is_not_in_the_team() -> None:
    world = build_world(
        [Person("alice"), Person("bob", load=5)], teams={"support": ["bob"], "billing": ["alice", "bob"]}
    )
    world.continuity[(ACCOUNT, "ann")] = "alice"

    conversation = write(world, author="ann")

    assert conversation.owner_id == "bob"
    event = assigned(world, conversation)
    assert event.step == "match"
    assert event.reason.startswith(
        "team support: continuity: alice (answered this author last) is not in team support; matched bob: "
    )


def test_continuity_names_a_last_answerer_who_is_gone_altogether() -> None:
    world = build_world([Person("bob")])
    world.continuity[(ACCOUNT, "ann")] = "maria"  # no longer a person the tenant's teams know

    conversation = write(world, author="ann")

    assert conversation.owner_id == "bob"
    assert "continuity: maria (answered this author last) is not in team support; matched bob" in (
        assigned(world, conversation).reason
    )


def test_continuity_says_why_the_last_answerer_was_passed_over_when_it_queues() -> None:
    world = build_world([Person("alice", capacity=20, load=20), Person("bob", status="offline")])
    world.continuity[(ACCOUNT, "ann")] = "alice"

    conversation = write(world, author="ann")

    assert conversation.owner_id is None
    assert assigned(world, conversation).reason == (
        "team support: continuity: alice (answered this author last) is at capacity (20/20); "
        "2 matching members busy or away; waiting in the team queue"
    )


def test_an_owner_with_no_room_for_a_heavier_conversation_is_named_with_its_weight() -> None:
    urgent = topic("outage", keywords=["down"], priority="urgent")
    world = build_world([Person("alice", load=18, weights={"urgent": 3}), Person("bob")], topics=[urgent])
    world.continuity[(ACCOUNT, "ann")] = "alice"

    conversation = write(world, author="ann", text="the site is down")

    assert conversation.owner_id == "bob"
    assert "alice (answered this author last) has no room for it (18/20, it weighs 3); matched bob" in (
        assigned(world, conversation).reason
    )


def test_a_reopened_conversation_says_why_its_owner_did_not_keep_it() -> None:
    world = build_world([Person("alice"), Person("bob")])
    world.continuity[(ACCOUNT, "ann")] = "alice"
    conversation = write(world, author="ann")
    answer(world, conversation)
    world.people["alice"].status = "offline"
    commit(world)

    write(world, thread=conversation.thread_id, author="ann")

    assert conversation.owner_id == "bob"
    assert "continuity: alice (owns this conversation) is offline; matched bob" in (
        assigned(world, conversation).reason
    )


def test_an_out_of_office_answerer_passes_the_author_to_their_substitute() -> None:
    alice = Person("alice", out_of_office=(T0 - HOUR, T0 + timedelta(days=6)), substitute_id="carol")
    world = build_world([alice, Person("bob"), Person("carol", load=4)])
    world.continuity[(ACCOUNT, "ann")] = "alice"

    conversation = write(world, author="ann")

    assert conversation.owner_id == "carol"  # although bob is less loaded
    event = assigned(world, conversation)
    assert event.step == "continuity"
    assert "alice answered this author last and is out of office; carol substitutes" in event.reason


def test_a_substitute_who_cannot_take_it_leaves_it_to_the_match() -> None:
    alice = Person("alice", out_of_office=(T0 - HOUR, T0 + timedelta(days=6)), substitute_id="carol")
    world = build_world([alice, Person("bob", load=4), Person("carol", status="away")])
    world.continuity[(ACCOUNT, "ann")] = "alice"

    conversation = write(world, author="ann")

    assert conversation.owner_id == "bob"
    event = assigned(world, conversation)
    assert event.step == "match"
    assert (
        "continuity: alice (answered this author last) is out of office and their substitute carol is away;"
        " matched bob" in event.reason
    )


def test_a_long_reason_is_cut_cleanly_to_fit_its_column() -> None:
    team, name = "support-" + "t" * 55, "refunds-" + "r" * 55  # slugs and names of 63 characters
    former, owner = "alice-" + "a" * 57, "bob-" + "b" * 59
    world = build_world(
        [Person(former, status="away"), Person(owner)],
        teams={team: [former, owner]},
        topics=[topic(name, team=team)],
    )
    world.continuity[(ACCOUNT, "ann")] = former

    conversation = write(world, author="ann")

    reason = assigned(world, conversation).reason
    whole = (
        f"topic {name}: team {team}: continuity: {former} (answered this author last) is away; "
        f"matched {owner}: least loaded (0/20), longest since last assignment"
    )
    assert len(whole) > 300
    assert conversation.assignment_reason == reason
    assert len(reason) <= 300 and reason.endswith("…")
    assert whole.startswith(reason[:-1]) and not whole[len(reason) - 1].isalnum()  # between words


# -- matching --------------------------------------------------------------------------------

BILLING = topic("billing", keywords=["invoice"], skills=["billing"])


@pytest.mark.parametrize(
    ("written", "spoken"), [("de", "de-AT"), ("de-CH", "de"), ("pt_BR", "PT")], ids=lambda value: value
)
def test_skills_and_language_pick_who_can_answer(written: str, spoken: str) -> None:
    people = [
        Person("alice", languages=frozenset({spoken})),  # speaks it, lacks the skill
        Person("bob", skills=skilled("billing"), languages=frozenset({spoken, "en"}), load=2),
        Person(
            "carol", skills=skilled("billing"), languages=frozenset({"en"})
        ),  # least loaded, wrong language
    ]
    world = build_world(people, topics=[BILLING])

    conversation = write(world, text="where is my invoice", language=written)

    assert conversation.owner_id == "bob"
    event = assigned(world, conversation)
    assert event.step == "match"
    assert f"has skills billing and language {written}, least loaded (2/20)" in event.reason


@pytest.mark.parametrize(
    ("alice", "bob", "owner"),
    [
        (Person("alice", capacity=10, load=2), Person("bob", capacity=2, load=1), "alice"),  # 20% < 50%
        (Person("alice", capacity=4, load=2), Person("bob", capacity=2, load=1), "bob"),  # 50% each: fewer
    ],
    ids=["share of capacity", "then absolute load"],
)
def test_the_least_loaded_gets_it(alice: Person, bob: Person, owner: str) -> None:
    world = build_world([copy.deepcopy(alice), copy.deepcopy(bob)])

    conversation = write(world)

    assert conversation.owner_id == owner
    person = world.people[owner]
    assert f"least loaded ({person.load - 1}/{person.capacity})" in assigned(world, conversation).reason


def test_equal_loads_go_to_whoever_waited_longest_since_their_last_assignment() -> None:
    alice = Person("alice", last_assigned_at=T0 - HOUR)
    bob = Person("bob", last_assigned_at=T0 - 2 * HOUR)
    world = build_world([alice, bob])

    assert write(world).owner_id == "bob"
    assert bob.last_assigned_at == T0
    world.people["carol"] = Person("carol")  # never assigned: waited longest of all
    world.teams[SUPPORT].members.append("carol")
    assert write(world).owner_id == "carol"


def test_nobody_available_queues_the_conversation_with_its_clock_running() -> None:
    world = build_world([Person("alice", status="away"), Person("bob", capacity=1, load=1)])

    conversation = write(world)

    assert conversation.owner_id is None
    assert conversation.state == State.open
    assert conversation.queued_at == T0
    assert conversation.due_at == T0 + HOUR
    event = assigned(world, conversation)
    assert (event.step, event.owner_id, event.team_id) == ("queue", None, SUPPORT)
    assert "2 matching members busy or away; waiting in the team queue" in event.reason


def test_any_member_answers_when_nobody_in_the_team_has_the_skill() -> None:
    legal = topic("legal", keywords=["lawyer"], skills=["legal"])
    world = build_world([Person("alice", load=1), Person("bob")], topics=[legal])

    conversation = write(world, text="my lawyer will call you")

    assert conversation.owner_id == "bob"
    event = assigned(world, conversation)
    assert event.step == "any member"
    assert "no member has the skills and language asked; any member" in event.reason


def test_a_busy_member_with_the_skill_keeps_the_match_strict() -> None:
    legal = topic("legal", keywords=["lawyer"], skills=["legal"])
    world = build_world(
        [Person("alice"), Person("bob", skills=skilled("legal"), status="away")], topics=[legal]
    )

    conversation = write(world, text="my lawyer will call you")

    assert conversation.owner_id is None
    assert assigned(world, conversation).step == "queue"


# -- capacity --------------------------------------------------------------------------------


def test_capacity_is_never_exceeded() -> None:
    alice = Person("alice", capacity=2)
    world = build_world([alice])

    owners = [write(world).owner_id for _ in range(3)]

    assert owners == ["alice", "alice", None]
    assert alice.load == 2


def test_priority_weights_count_against_capacity() -> None:
    outage = topic("outage", keywords=["down"], priority="urgent")
    alice = Person("alice", capacity=3, weights={"urgent": 3})
    world = build_world([alice], topics=[outage])
    question = write(world)

    urgent = write(world, text="the site is down")

    assert urgent.owner_id is None  # 1 + 3 > 3
    answer(world, question)
    conversations.fill_from_queue(world, "alice", [urgent])
    assert urgent.owner_id == "alice"
    assert (urgent.load_weight, alice.load) == (3, 3)


def test_answering_frees_capacity_for_the_queue() -> None:
    alice = Person("alice", capacity=1)
    world = build_world([alice])
    first = write(world)
    waiting = write(world)
    assert waiting.owner_id is None
    commit(world)

    answer(world, first)

    assert (first.state, first.load_weight, alice.load) == (State.responded, 0, 0)
    assert world.load_deltas == {"alice": -1}
    assert world.freed == {"alice"}
    conversations.fill_from_queue(world, "alice", [waiting])
    assert waiting.owner_id == "alice"
    assert waiting.queued_at is None
    assert alice.load == 1
    assert world.load_deltas == {"alice": 0}
    assert assigned(world, waiting).step == "from queue"


def test_a_paused_conversation_does_not_count() -> None:
    alice = Person("alice", capacity=1)
    world = build_world([alice])
    first = write(world)
    commit(world)

    apply_command(world, Pause(tenant_id=TENANT, conversation_id=first.id, issued_at=world.now))

    assert (first.state, first.owner_id, first.load_weight, alice.load) == (State.paused, "alice", 0, 0)
    assert world.load_deltas == {"alice": -1}
    assert world.freed == {"alice"}
    assert write(world).owner_id == "alice"


def test_a_freed_person_takes_the_queue_earliest_due_first_leaving_what_others_have_skills_for() -> None:
    hurry = topic("hurry", keywords=["asap"], priority="high")
    alice = Person("alice", capacity=1, status="away")
    world = build_world(
        [alice, Person("bob", skills=skilled("billing"), status="away")], topics=[BILLING, hurry]
    )
    invoice = write(world, text="my invoice")  # due 11:00
    world.now = T0 + 5 * MINUTE
    question = write(world)  # due 11:05
    world.now = T0 + 10 * MINUTE
    urgent = write(world, text="asap please")  # queued last, due first: 10:25
    queue = [invoice, question, urgent]
    assert [c.owner_id for c in queue] == [None, None, None]

    conversations.set_status(world, "alice", "available")
    assert "alice" in world.freed
    conversations.fill_from_queue(world, "alice", queue)

    assert [c.owner_id for c in queue] == [None, None, "alice"]
    answer(world, urgent)
    conversations.fill_from_queue(world, "alice", queue)
    assert [c.owner_id for c in queue] == [None, "alice", "alice"]  # bob has billing: the invoice waits


def test_a_freed_person_takes_what_nobody_in_the_team_has_skills_for() -> None:
    world = build_world([Person("alice", status="away"), Person("bob", status="away")], topics=[BILLING])
    invoice = write(world, text="my invoice")
    assert invoice.owner_id is None

    conversations.set_status(world, "alice", "available")
    conversations.fill_from_queue(world, "alice", [invoice])

    assert invoice.owner_id == "alice"


# -- availability ----------------------------------------------------------------------------


def test_away_keeps_what_they_own_and_takes_nothing_new() -> None:
    alice = Person("alice")
    world = build_world([alice, Person("bob", load=3)])
    mine = write(world)
    assert mine.owner_id == "alice"
    commit(world)

    apply_command(world, SetStatus(person_id="alice", status="away", issued_at=world.now))

    assert (mine.owner_id, alice.load) == ("alice", 1)
    assert world.events == []
    assert "alice" not in world.freed
    assert write(world).owner_id == "bob"


def test_offline_hands_over_everything_open_but_keeps_what_waits_on_the_customer() -> None:
    whenever = topic("whenever", keywords=["whenever"], priority="low")
    alice = Person("alice")
    bob = Person("bob", load=3)
    world = build_world([alice, bob], topics=[whenever])
    soon, later, paused = write(world), write(world, text="whenever you can"), write(world)
    conversations.pause(world, paused, "p1", reason="")
    assert [c.owner_id for c in (soon, later, paused)] == ["alice"] * 3
    commit(world)

    apply_command(world, SetStatus(person_id="alice", status="offline", issued_at=world.now))

    assert [c.owner_id for c in (soon, later, paused)] == ["bob", "bob", "alice"]
    assert (alice.load, bob.load) == (0, 5)
    event = assigned(world, soon)
    assert event.step == "hand over, match"
    assert event.reason.startswith("handed over (alice went offline); ")
    assert event.previous_owner_id == "alice"
    assert deadline(world, soon).owner_id == "bob"


def test_shift_end_hands_over_only_what_falls_due_before_the_next_shift() -> None:
    friday = datetime(2026, 5, 22, 16, 30, tzinfo=UTC)
    whenever = topic("whenever", keywords=["whenever"], priority="low")
    alice = Person("alice", working_hours=DAY_SHIFT)
    world = build_world([alice, Person("bob", load=5)], now=friday, topics=[whenever])
    soon = write(world)  # due 17:30, after the shift
    later = write(world, text="whenever you can")  # due Monday 16:30, after alice is back at 09:00
    conversations.check_availability(world, "alice")
    [timer] = world.timers
    assert timer.at == datetime(2026, 5, 22, 17, 0, tzinfo=UTC)
    commit(world)

    world.now = timer.at
    apply_command(world, timer.command)

    assert (soon.owner_id, later.owner_id) == ("bob", "alice")
    event = assigned(world, soon)
    assert event.step == "hand over, match"
    assert event.reason.startswith("handed over (alice's shift ended); ")
    assert [(t.key, t.at) for t in world.timers] == [
        ("person.alice", datetime(2026, 5, 25, 9, 0, tzinfo=UTC))
    ]


def test_out_of_office_hands_over_to_the_substitute() -> None:
    alice = Person("alice", substitute_id="carol")
    carol = Person("carol", load=3)
    world = build_world([alice, Person("bob", load=2), carol])
    mine = write(world)
    assert mine.owner_id == "alice"
    commit(world)

    alice.out_of_office = (T0 + 30 * MINUTE, T0 + timedelta(days=7))
    world.now = T0 + 30 * MINUTE
    apply_command(world, CheckAvailability(person_id="alice", issued_at=world.now))

    assert mine.owner_id == "carol"  # although bob is less loaded
    event = assigned(world, mine)
    assert event.step == "hand over, continuity"
    assert "alice owned it and is out of office; carol substitutes" in event.reason
    assert (alice.load, carol.load) == (0, 4)
    assert [t.at for t in world.timers] == [T0 + timedelta(days=7)]


def test_check_availability_arms_a_timer_at_the_next_shift_change() -> None:
    alice = Person("alice", working_hours=DAY_SHIFT)
    world = build_world([alice])

    conversations.check_availability(world, "alice")

    [timer] = world.timers
    assert timer.key == "person.alice"
    assert timer.at == datetime(2026, 5, 20, 17, 0, tzinfo=UTC)
    assert isinstance(timer.command, CheckAvailability)
    assert timer.command.person_id == "alice"
    commit(world)
    alice.out_of_office = (T0 + 2 * HOUR, T0 + timedelta(days=2))
    conversations.check_availability(world, "alice")
    assert [t.at for t in world.timers] == [T0 + 2 * HOUR]  # the absence begins before the shift ends


def test_nobody_to_hand_over_to_queues_the_conversation() -> None:
    world = build_world([Person("alice"), Person("bob", status="away")])
    mine = write(world)
    commit(world)

    conversations.set_status(world, "alice", "offline")

    assert mine.owner_id is None
    assert mine.queued_at == T0
    assert assigned(world, mine).step == "hand over, queue"
    assert deadline(world, mine).owner_id is None


# -- deadlines -------------------------------------------------------------------------------


def test_the_clock_runs_in_business_hours_and_skips_public_holidays() -> None:
    sla = Sla(default=Targets(first_response=30 * MINUTE), warn_before=10 * MINUTE, calendar=OFFICE)
    world = build_world([Person("alice")], now=FRIDAY_EVENING, sla=sla)

    conversation = write(world)

    assert conversation.due_at == datetime(2026, 5, 26, 9, 25, tzinfo=BERLIN)
    assert conversation.warn_at == datetime(2026, 5, 26, 9, 15, tzinfo=BERLIN)
    event = deadline(world, conversation)
    assert (event.kind, event.owner_id, event.deadline_version) == (DeadlineKind.first_response, "alice", 1)
    assert (event.started_at, event.warn_at, event.due_at) == (
        FRIDAY_EVENING,
        conversation.warn_at,
        conversation.due_at,
    )


PRIORITY_TOPICS = [
    topic("hurry", keywords=["asap"], priority="high"),
    topic("outage", keywords=["down"], priority="urgent"),
]
PRIORITY_TOPICS.append(topic("whenever", keywords=["whenever"], priority="low"))


@pytest.mark.parametrize(
    ("text", "priority", "target"),
    [
        ("hello", "normal", HOUR),
        ("asap please", "high", 15 * MINUTE),
        ("the site is down", "urgent", 5 * MINUTE),
        ("whenever you can", "low", timedelta(days=3)),
    ],
)
def test_each_priority_has_its_target(text: str, priority: str, target: timedelta) -> None:
    world = build_world([Person("alice")], topics=PRIORITY_TOPICS)

    conversation = write(world, text=text)

    assert conversation.priority == priority
    assert conversation.due_at == T0 + target


@pytest.mark.parametrize(
    ("vip", "followers", "priority", "target"),
    [
        (False, 9_999, "normal", HOUR),
        (True, None, "high", 15 * MINUTE),
        (False, 10_000, "high", 15 * MINUTE),
        (True, 50_000, "urgent", 5 * MINUTE),
    ],
    ids=["neither", "vip", "high reach", "both"],
)
def test_vip_and_high_reach_raise_the_priority_and_so_the_target(
    vip: bool, followers: int | None, priority: str, target: timedelta
) -> None:
    sla = dataclasses.replace(STANDARD, high_reach_followers=10_000)
    world = build_world([Person("alice")], sla=sla, vip={"@Ann"} if vip else ())

    conversation = write(world, author="ann", followers=followers)

    assert conversation.priority == priority
    assert conversation.due_at == T0 + target
    assert events(world, ConversationOpened, conversation)[0].priority == priority


def test_pause_stops_the_clock_and_resume_gives_back_the_business_time_left() -> None:
    sla = Sla(default=Targets(first_response=30 * MINUTE), warn_before=10 * MINUTE, calendar=OFFICE)
    alice = Person("alice")
    world = build_world([alice], now=FRIDAY_EVENING, sla=sla)
    conversation = write(world)  # due Tuesday 09:25

    world.now = FRIDAY_EVENING + 3 * MINUTE  # 2 business minutes before the weekend
    apply_command(world, Pause(tenant_id=TENANT, conversation_id=conversation.id, issued_at=world.now))
    assert (conversation.due_at, deadline(world, conversation).due_at) == (None, None)
    assert events(world, ConversationPaused, conversation)[0].reason == "waiting on the customer"

    world.now = datetime(2026, 5, 26, 10, 0, tzinfo=BERLIN)  # 62 business minutes later
    apply_command(world, Resume(tenant_id=TENANT, conversation_id=conversation.id, issued_at=world.now))

    assert conversation.state == State.open
    assert conversation.due_at == datetime(2026, 5, 26, 10, 27, tzinfo=BERLIN)  # 09:25 + 62 min
    assert conversation.warn_at == datetime(2026, 5, 26, 10, 17, tzinfo=BERLIN)
    assert (conversation.owner_id, alice.load) == ("alice", 1)
    event = deadline(world, conversation)
    assert (event.kind, event.due_at, event.owner_id) == (
        DeadlineKind.first_response,
        conversation.due_at,
        "alice",
    )
    assert events(world, ConversationResumed, conversation)


def test_a_recompute_after_a_pause_keeps_the_time_the_pause_gave_back() -> None:
    sla = Sla(default=Targets(first_response=30 * MINUTE), warn_before=10 * MINUTE, calendar=OFFICE)
    world = build_world([Person("alice")], now=FRIDAY_EVENING, sla=sla)
    conversation = write(world)
    world.now = FRIDAY_EVENING + 3 * MINUTE
    apply_command(world, Pause(tenant_id=TENANT, conversation_id=conversation.id, issued_at=world.now))
    world.now = datetime(2026, 5, 26, 10, 0, tzinfo=BERLIN)
    apply_command(world, Resume(tenant_id=TENANT, conversation_id=conversation.id, issued_at=world.now))
    resumed = (conversation.due_at, conversation.warn_at)

    conversations.recompute(world, conversation, "recompute-1")  # the same policy: nothing moves

    assert (conversation.due_at, conversation.warn_at) == resumed
    assert conversation.paused_business_seconds == 62 * 60


RESOLVE_IN_8H = Sla(default=Targets(first_response=HOUR, next_response=30 * MINUTE, resolution=8 * HOUR))


def test_after_a_reply_the_resolution_target_keeps_a_clock() -> None:
    world = build_world([Person("alice")], sla=RESOLVE_IN_8H)
    conversation = write(world)
    assert (conversation.deadline_kind, conversation.due_at) == ("first_response", T0 + HOUR)

    world.now = T0 + 20 * MINUTE
    answer(world, conversation)

    assert conversation.state == State.responded
    assert (conversation.deadline_kind, conversation.due_at) == ("resolution", T0 + 8 * HOUR)
    event = deadline(world, conversation)
    assert (event.kind, event.started_at, event.due_at) == (DeadlineKind.resolution, T0, T0 + 8 * HOUR)


def test_a_conversation_reopened_after_resolution_counts_its_resolution_target_anew() -> None:
    world = build_world([Person("alice")], sla=RESOLVE_IN_8H)
    conversation = write(world)
    world.now = T0 + HOUR
    conversations.resolve(world, conversation, "done", reason="answered by phone")

    world.now = T0 + 3 * 24 * HOUR  # three days later the customer writes again
    write(world, thread=conversation.thread_id, at=world.now)

    assert conversation.state == State.open
    assert (conversation.deadline_kind, conversation.due_at) == ("next_response", world.now + 30 * MINUTE)
    answer(world, conversation, at=world.now + MINUTE)
    assert (conversation.deadline_kind, conversation.due_at) == ("resolution", world.now + 8 * HOUR)


def test_the_resolution_target_holds_the_clock_when_it_falls_first() -> None:
    sla = Sla(default=Targets(first_response=HOUR, resolution=20 * MINUTE))
    world = build_world([Person("alice")], sla=sla)

    conversation = write(world)

    assert (conversation.deadline_kind, conversation.due_at) == ("resolution", T0 + 20 * MINUTE)


def test_a_no_sla_topic_is_assigned_without_a_deadline() -> None:
    thanks = topic("thanks", keywords=["thanks"], no_sla=True)
    world = build_world([Person("alice")], topics=[thanks])

    conversation = write(world, text="thanks a lot")

    assert (conversation.state, conversation.owner_id, conversation.due_at) == (State.open, "alice", None)
    assert events(world, DeadlineChanged) == []


def test_a_no_sla_topic_without_a_team_is_recorded_as_resolved() -> None:
    spam = topic("spam", keywords=["crypto"], team=None, no_sla=True)
    alice = Person("alice")
    world = build_world([alice], topics=[spam])

    conversation = write(world, text="free crypto")

    assert (conversation.state, conversation.owner_id, conversation.team_id) == (State.resolved, None, None)
    assert events(world, ConversationAssigned) == []
    assert events(world, DeadlineChanged) == []
    [resolved] = events(world, ConversationResolved)
    assert resolved.reason == "topic spam: recorded, no answer needed"
    assert alice.load == 0
    commit(world)

    write(world, thread=conversation.thread_id, text="more free crypto")

    assert conversation.state == State.resolved
    assert world.events == []  # still nothing to answer: no reopening


def test_a_message_older_than_the_backfill_cutoff_is_assigned_but_never_alerts() -> None:
    world = build_world([Person("alice")])

    old = write(world, at=T0 - 25 * HOUR)
    recent = write(world, at=T0 - 23 * HOUR)

    assert (old.owner_id, old.due_at) == ("alice", None)
    assert events(world, DeadlineChanged, old) == []
    assert recent.due_at == T0 - 22 * HOUR  # within the cutoff: overdue, and alerted


# -- the life of a conversation --------------------------------------------------------------


def test_a_reply_stops_the_clock_and_records_who_answered() -> None:
    alice = Person("alice")
    world = build_world([alice])
    conversation = write(world, author="ann")
    commit(world)

    world.now = T0 + 10 * MINUTE
    answer(world, conversation)

    assert (conversation.state, conversation.responded_at) == (State.responded, T0 + 10 * MINUTE)
    assert (conversation.due_at, conversation.deadline_kind) == (None, None)
    assert [e.interaction_id for e in events(world, ConversationResponded)]
    event = deadline(world, conversation)
    assert (event.due_at, event.kind, event.reason, event.deadline_version) == (None, None, "responded", 2)
    assert world.answered == {(ACCOUNT, "ann"): "alice"}
    assert world.continuity[(ACCOUNT, "ann")] == "alice"
    assert world.timers == []  # the tenant resolves nothing by itself


def test_the_next_conversation_of_an_answered_author_goes_to_whoever_answered() -> None:
    world = build_world([Person("alice", load=3), Person("bob")])
    first = write(world, author="ann")
    apply_command(world, Claim(tenant_id=TENANT, conversation_id=first.id, person_id="alice", issued_at=T0))
    answer(world, first)
    assert world.continuity == {(ACCOUNT, "ann"): "alice"}

    assert write(world, author="ann").owner_id == "alice"  # although bob is less loaded
    assert write(world, author="ben").owner_id == "bob"


def test_the_customer_writing_again_reopens_with_the_next_response_clock_for_the_same_owner() -> None:
    world = build_world([Person("alice", load=4), Person("bob")])
    world.continuity[(ACCOUNT, "ann")] = "alice"
    conversation = write(world, author="ann")
    assert conversation.owner_id == "alice"
    world.now = T0 + 10 * MINUTE
    answer(world, conversation)
    world.continuity.clear()
    commit(world)

    world.now = T0 + HOUR
    again = write(world, thread=conversation.thread_id, author="ann")

    assert again is conversation
    assert (conversation.state, conversation.owner_id) == (State.open, "alice")
    assert events(world, ConversationReopened, conversation)[0].reopened_at == T0 + HOUR
    event = assigned(world, conversation)
    assert (event.step, event.previous_owner_id) == ("continuity", "alice")
    assert "alice owns this conversation" in event.reason
    assert (conversation.deadline_kind, conversation.due_at) == ("next_response", T0 + HOUR + 30 * MINUTE)
    assert deadline(world, conversation).started_at == T0 + HOUR


def test_a_reopened_conversation_moves_on_when_its_owner_cannot_take_it() -> None:
    alice = Person("alice")
    world = build_world([alice, Person("bob", load=1)])
    conversation = write(world)
    answer(world, conversation)
    alice.status = "away"

    write(world, thread=conversation.thread_id)

    assert conversation.owner_id == "bob"
    assert assigned(world, conversation).step == "match"


def test_writing_after_a_resolution_reopens() -> None:
    world = build_world([Person("alice")])
    conversation = write(world)
    apply_command(world, Resolve(tenant_id=TENANT, conversation_id=conversation.id, issued_at=world.now))
    assert conversation.state == State.resolved
    commit(world)

    world.now = T0 + 2 * HOUR
    write(world, thread=conversation.thread_id)

    assert (conversation.state, conversation.owner_id) == (State.open, "alice")
    assert events(world, ConversationReopened, conversation)
    assert (conversation.deadline_kind, conversation.due_at) == ("next_response", T0 + 2 * HOUR + 30 * MINUTE)


def test_the_customer_writing_to_a_paused_conversation_resumes_it() -> None:
    alice = Person("alice")
    world = build_world([alice])
    conversation = write(world)
    conversations.pause(world, conversation, "p1", reason="")
    commit(world)

    world.now = T0 + HOUR
    write(world, thread=conversation.thread_id)

    assert (conversation.state, conversation.owner_id, alice.load) == (State.open, "alice", 1)
    assert events(world, ConversationResumed, conversation)
    assert conversation.due_at == T0 + HOUR + 30 * MINUTE


def test_edits_move_nothing() -> None:
    world = build_world([Person("alice")])
    conversation = write(world)
    before = copy.deepcopy(conversation)
    commit(world)
    world.now = T0 + 5 * MINUTE

    write(world, thread=conversation.thread_id, edit_version=1, text="hello?? (edited)")
    answer(world, conversation, edit=1)  # an edited reply is no new answer

    assert world.events == []
    assert conversation == before


def test_a_reply_written_before_the_customers_last_message_does_not_answer_it() -> None:
    world = build_world([Person("alice")])
    conversation = write(world)
    answer(world, conversation, at=T0 + 10 * MINUTE)
    world.now = T0 + 20 * MINUTE
    write(world, thread=conversation.thread_id)
    commit(world)

    answer(world, conversation, at=T0 + 15 * MINUTE)  # delivered late

    assert conversation.state == State.open
    assert world.events == []


def test_a_reply_arms_auto_resolve_and_the_timer_resolves_a_quiet_conversation() -> None:
    world = build_world([Person("alice")], auto_resolve=timedelta(days=2))
    conversation = write(world)
    world.now = T0 + 10 * MINUTE
    answer(world, conversation)
    [timer] = world.timers
    assert (timer.key, timer.at) == (f"conv.{TENANT}.{conversation.id}", T0 + 10 * MINUTE + timedelta(days=2))
    assert isinstance(timer.command, AutoResolve)
    assert timer.command.conversation_id == conversation.id
    commit(world)

    world.now = timer.at
    apply_command(world, timer.command)

    assert conversation.state == State.resolved
    [resolved] = events(world, ConversationResolved)
    assert resolved.reason == "no new message for 2 days, 0:00:00 after the reply"


def _customer_wrote_again(world: World, conversation: Conversation) -> None:
    world.now = T0 + timedelta(days=1)
    write(world, thread=conversation.thread_id)


def _answered_again_later(world: World, conversation: Conversation) -> None:
    _customer_wrote_again(world, conversation)
    world.now += HOUR
    answer(world, conversation)


@pytest.mark.parametrize(
    "since", [_customer_wrote_again, _answered_again_later], ids=["customer wrote", "answered again"]
)
def test_a_stale_auto_resolve_timer_does_nothing(since: Callable[[World, Conversation], None]) -> None:
    world = build_world([Person("alice")], auto_resolve=timedelta(days=2))
    conversation = write(world)
    answer(world, conversation)
    [stale] = world.timers
    since(world, conversation)
    before = copy.deepcopy(conversation)
    commit(world)

    world.now = stale.at
    apply_command(world, stale.command)

    assert conversation == before
    assert world.events == []


def test_every_deadline_change_has_a_higher_version() -> None:
    world = build_world([Person("alice"), Person("bob", load=2)], sla=RESOLVE_IN_8H)
    conversation = write(world)

    def command(kind: type[Pause | Resume | Resolve]) -> None:
        world.now += 5 * MINUTE
        apply_command(world, kind(tenant_id=TENANT, conversation_id=conversation.id, issued_at=world.now))

    command(Pause)
    command(Resume)
    answer(world, conversation)
    world.now += HOUR
    write(world, thread=conversation.thread_id)
    apply_command(
        world, Claim(tenant_id=TENANT, conversation_id=conversation.id, person_id="bob", issued_at=world.now)
    )
    command(Resolve)

    versions = [e.deadline_version for e in events(world, DeadlineChanged, conversation)]
    assert len(versions) >= 7
    assert all(a < b for a, b in itertools.pairwise(versions))
    assert versions[-1] == conversation.deadline_version


@pytest.mark.parametrize("answered", [False, True], ids=["waiting for an answer", "answered"])
def test_an_owner_change_republishes_the_deadline_for_the_new_owner(answered: bool) -> None:
    world = build_world([Person("alice"), Person("bob", load=1)], sla=RESOLVE_IN_8H)
    conversation = write(world)
    if answered:
        answer(world, conversation)
    before = deadline(world, conversation)
    commit(world)

    apply_command(
        world, Claim(tenant_id=TENANT, conversation_id=conversation.id, person_id="bob", issued_at=world.now)
    )

    after = deadline(world, conversation)
    assert after.owner_id == "bob"
    assert after.deadline_version == before.deadline_version + 1
    assert (after.kind, after.started_at, after.warn_at, after.due_at) == (
        before.kind,
        before.started_at,
        before.warn_at,
        before.due_at,
    )


# -- commands --------------------------------------------------------------------------------


def test_a_claim_moves_the_conversation_and_its_load() -> None:
    alice, bob = Person("alice"), Person("bob", load=1)
    world = build_world([alice, bob])
    conversation = write(world)
    commit(world)

    apply_command(
        world,
        Claim(
            tenant_id=TENANT, conversation_id=conversation.id, person_id="bob", issued_by="bob", issued_at=T0
        ),
    )

    assert (conversation.owner_id, alice.load, bob.load) == ("bob", 0, 2)
    assert world.load_deltas == {"alice": -1, "bob": 1}
    assert "alice" in world.freed
    event = assigned(world, conversation)
    assert (event.step, event.reason, event.previous_owner_id) == ("claim", "bob claimed it", "alice")


def test_a_claim_at_capacity_is_refused() -> None:
    world = build_world([Person("alice"), Person("bob", capacity=1, load=1)])
    conversation = write(world)
    commit(world)

    verdict = apply_command(
        world, Claim(tenant_id=TENANT, conversation_id=conversation.id, person_id="bob", issued_at=T0)
    )

    assert conversation.owner_id == "alice"
    assert world.events == []
    assert verdict == Refusal(Rejection.at_capacity, "bob is at capacity (1/1)")


def test_reassign_to_a_person() -> None:
    world = build_world([Person("alice"), Person("bob", load=1)])
    conversation = write(world)

    apply_command(
        world,
        Reassign(
            tenant_id=TENANT, conversation_id=conversation.id, person_id="bob", issued_by="lead", issued_at=T0
        ),
    )

    assert conversation.owner_id == "bob"
    assert assigned(world, conversation).reason == "bob was given it by lead"


def test_reassign_to_a_team_lets_that_team_choose() -> None:
    people = [Person("alice"), Person("carol", load=1), Person("dave", skills=skilled("billing"), load=2)]
    world = build_world(people, teams={"support": ["alice"], "billing": ["carol", "dave"]})
    conversation = write(world)
    assert conversation.owner_id == "alice"

    apply_command(
        world, Reassign(tenant_id=TENANT, conversation_id=conversation.id, team="billing", issued_at=T0)
    )

    assert (conversation.team_id, conversation.owner_id) == (team_id("billing"), "carol")
    assert (world.people["alice"].load, world.people["carol"].load) == (0, 2)
    event = assigned(world, conversation)
    assert (event.team_id, event.step) == (team_id("billing"), "match")
    assert deadline(world, conversation).owner_id == "carol"


def test_reassign_to_a_team_with_nobody_free_queues_it_and_releases_the_owner() -> None:
    alice = Person("alice")
    world = build_world(
        [alice, Person("carol", status="away")], teams={"support": ["alice"], "billing": ["carol"]}
    )
    conversation = write(world)
    commit(world)
    world.now = T0 + MINUTE

    apply_command(
        world,
        Reassign(tenant_id=TENANT, conversation_id=conversation.id, team="billing", issued_at=world.now),
    )

    assert (conversation.team_id, conversation.owner_id, conversation.queued_at) == (
        team_id("billing"),
        None,
        T0 + MINUTE,
    )
    assert alice.load == 0
    event = assigned(world, conversation)
    assert (event.step, event.owner_id, event.previous_owner_id) == ("queue", None, "alice")
    assert deadline(world, conversation).owner_id is None  # notify stops alerting alice


def test_resolve_frees_the_owner_and_stops_the_clock() -> None:
    alice = Person("alice")
    world = build_world([alice])
    conversation = write(world)
    commit(world)

    apply_command(
        world, Resolve(tenant_id=TENANT, conversation_id=conversation.id, issued_by="alice", issued_at=T0)
    )

    assert (conversation.state, conversation.resolved_at, alice.load) == (State.resolved, T0, 0)
    assert events(world, ConversationResolved)[0].reason == "resolved by alice"
    assert deadline(world, conversation).due_at is None
    assert world.freed == {"alice"}


def test_a_command_for_another_tenants_conversation_is_refused() -> None:
    world = build_world([Person("alice")])
    conversation = write(world)
    commit(world)

    verdict = apply_command(world, Resolve(tenant_id="other", conversation_id=conversation.id, issued_at=T0))

    assert conversation.state == State.open
    assert isinstance(verdict, Refusal) and verdict.code is Rejection.unknown_conversation


# -- redelivery ------------------------------------------------------------------------------

Scenario = Callable[[], tuple[World, AnyCommand]]


def _owned() -> tuple[World, Conversation]:
    world = build_world([Person("alice"), Person("bob", load=1)], auto_resolve=timedelta(days=1))
    conversation = write(world)
    world.now += MINUTE
    return world, conversation


def _claim() -> tuple[World, AnyCommand]:
    world, c = _owned()
    return world, Claim(tenant_id=TENANT, conversation_id=c.id, person_id="bob", issued_at=world.now)


def _reassign_to_person() -> tuple[World, AnyCommand]:
    world, c = _owned()
    return world, Reassign(tenant_id=TENANT, conversation_id=c.id, person_id="bob", issued_at=world.now)


def _reassign_to_team(*, queued: bool) -> tuple[World, AnyCommand]:
    status = "away" if queued else "available"
    people = [Person("alice"), Person("carol", status=status)]
    world = build_world(people, teams={"support": ["alice"], "billing": ["carol"]})
    c = write(world)
    world.now += MINUTE
    return world, Reassign(tenant_id=TENANT, conversation_id=c.id, team="billing", issued_at=world.now)


def _pause() -> tuple[World, AnyCommand]:
    world, c = _owned()
    return world, Pause(tenant_id=TENANT, conversation_id=c.id, issued_at=world.now)


def _resume() -> tuple[World, AnyCommand]:
    world, c = _owned()
    conversations.pause(world, c, "p1", reason="")
    world.now += HOUR
    return world, Resume(tenant_id=TENANT, conversation_id=c.id, issued_at=world.now)


def _resolve() -> tuple[World, AnyCommand]:
    world, c = _owned()
    return world, Resolve(tenant_id=TENANT, conversation_id=c.id, issued_at=world.now)


def _auto_resolve() -> tuple[World, AnyCommand]:
    world, c = _owned()
    answer(world, c)
    [timer] = world.timers
    world.now = timer.at
    return world, timer.command


def _set_status() -> tuple[World, AnyCommand]:
    world, _ = _owned()
    return world, SetStatus(person_id="alice", status="offline", issued_at=world.now)


def _check_availability() -> tuple[World, AnyCommand]:
    world, _ = _owned()
    world.people["alice"].out_of_office = (world.now, world.now + timedelta(days=2))
    return world, CheckAvailability(person_id="alice", issued_at=world.now)


def _hand_over() -> tuple[World, AnyCommand]:
    world, _ = _owned()
    world.teams[SUPPORT].members.remove("alice")  # what HandOver is for: she left the team
    return world, HandOver(person_id="alice", reason="left the team", issued_at=world.now)


def _recompute() -> tuple[World, AnyCommand]:
    world, _ = _owned()
    world.tenants[TENANT].policies[POLICY] = Sla(default=Targets(first_response=2 * HOUR))
    return world, Recompute(tenant_id=TENANT, issued_at=world.now)


@pytest.mark.parametrize(
    "scenario",
    [
        _claim,
        _reassign_to_person,
        lambda: _reassign_to_team(queued=False),
        lambda: _reassign_to_team(queued=True),
        _pause,
        _resume,
        _resolve,
        _auto_resolve,
        _set_status,
        _check_availability,
        _hand_over,
        _recompute,
    ],
    ids=[
        "claim",
        "reassign to a person",
        "reassign to a team",
        "reassign to a team that queues it",
        "pause",
        "resume",
        "resolve",
        "auto resolve",
        "set status",
        "check availability",
        "hand over",
        "recompute",
    ],
)
def test_a_redelivered_command_changes_nothing(scenario: Scenario) -> None:
    world, command = scenario()
    commit(world)
    verdict = apply_command(world, command)
    assert world.events, "the first delivery does something"
    assert isinstance(verdict, Applied)
    armed = {(t.key, t.at) for t in world.timers}
    commit(world)
    world.now += MINUTE  # the redelivery comes a little later
    conversations_before = copy.deepcopy(world.conversations)
    people_before = copy.deepcopy(world.people)

    apply_command(world, command)

    assert world.events == []
    assert world.conversations == conversations_before
    assert world.people == people_before
    assert not any(world.load_deltas.values())
    assert {(t.key, t.at) for t in world.timers} <= armed  # re-arming the same timer replaces it
