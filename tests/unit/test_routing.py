"""The router case by case, as its users see it: who owns a conversation, when it is due, how it
lives on.

Every case goes through the router's application service (`Router.route` for what customers
and the brand write, `Router.apply` for commands and the router's own timers) over the
in-memory repository, with a fixed clock and counted ids (`routing_world.Desk`), and looks at
what each step's `Outcome` published (events, timers, rejections) and at what the repository
holds afterwards. A change of configuration between steps (someone's status, absence or team,
a tenant's policies) is a change of what the repository holds, as the configuration sync makes.

The World's own bookkeeping is not seen from outside: for its load deltas the cases look at
the loads the repository keeps; for the people it freed, at the queued conversations they take
in the same unit of work, or, for someone who also serves another tenant
(`Desk.serve_elsewhere`), at the check of their availability the outcome asks for there. Nothing here calls the domain
directly, so no case stayed pure: each one has a path through the service. The pure core under
random days of work is `test_routing_properties`; deadline arithmetic and calendars at their
limits are in `test_routing_time_limits` and `test_businesstime`.
"""

import copy
import dataclasses
import itertools
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from services.router.assignment import Person
from services.router.conversations import Conversation, State
from services.router.deadlines import Sla, Targets
from shared.businesstime import WEEKDAYS, BusinessCalendar
from shared.commands import (
    AnyCommand,
    AutoResolve,
    CheckAvailability,
    Claim,
    HandOver,
    MarkResponded,
    Pause,
    Reassign,
    Recompute,
    Resolve,
    Resume,
    SetStatus,
)
from shared.events import (
    CommandApplied,
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
    Desk,
    assigned,
    build_world,
    deadline,
    effects,
    events,
    freed,
    team_id,
    topic,
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


def answered_ann_last(*people: Person, **world: object) -> Desk:
    """A desk whose repository remembers that alice answered ann last."""
    seed = build_world(people, **world)  # type: ignore[arg-type]
    seed.continuity[(ACCOUNT, "ann")] = "alice"
    return Desk(seed)


def pause(desk: Desk, conversation: Conversation) -> Pause:
    return Pause(tenant_id=TENANT, conversation_id=conversation.id, issued_at=desk.now)


# -- continuity ------------------------------------------------------------------------------


async def test_continuity_gives_the_author_to_whoever_answered_them_last() -> None:
    desk = answered_ann_last(Person("alice", load=3), Person("bob"))

    conversation = await desk.write(author="ann")

    assert conversation.owner_id == "alice"  # although bob is less loaded
    event = assigned(desk.last, conversation)
    assert event.step == "continuity"
    assert "continuity: alice answered this author last" in event.reason
    assert conversation.assignment_reason == event.reason


async def test_continuity_is_per_author() -> None:
    desk = answered_ann_last(Person("alice", load=3), Person("bob"))

    assert (await desk.write(author="ben")).owner_id == "bob"


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
async def test_continuity_falls_back_to_the_match_when_the_last_answerer_cannot_take_it(
    alice: Callable[[], Person], because: str
) -> None:
    desk = answered_ann_last(alice(), Person("bob", load=5))

    conversation = await desk.write(author="ann")

    assert conversation.owner_id == "bob"
    event = assigned(desk.last, conversation)
    assert event.step == "match"
    assert event.reason == (
        f"team support: continuity: alice (answered this author last) {because}; "
        "matched bob: least loaded (5/20), longest since last assignment"
    )
    assert conversation.assignment_reason == event.reason


async def test_continuity_falls_back_when_the_last_answerer_is_not_in_the_team() -> None:
    desk = answered_ann_last(
        Person("alice"), Person("bob", load=5), teams={"support": ["bob"], "billing": ["alice", "bob"]}
    )

    conversation = await desk.write(author="ann")

    assert conversation.owner_id == "bob"
    event = assigned(desk.last, conversation)
    assert event.step == "match"
    assert event.reason.startswith(
        "team support: continuity: alice (answered this author last) is not in team support; matched bob: "
    )


async def test_continuity_names_a_last_answerer_who_is_gone_altogether() -> None:
    world = build_world([Person("bob")])
    world.continuity[(ACCOUNT, "ann")] = "maria"  # no longer a person the tenant's teams know
    desk = Desk(world)

    conversation = await desk.write(author="ann")

    assert conversation.owner_id == "bob"
    assert "continuity: maria (answered this author last) is not in team support; matched bob" in (
        assigned(desk.last, conversation).reason
    )


async def test_continuity_says_why_the_last_answerer_was_passed_over_when_it_queues() -> None:
    desk = answered_ann_last(Person("alice", capacity=20, load=20), Person("bob", status="offline"))

    conversation = await desk.write(author="ann")

    assert conversation.owner_id is None
    assert assigned(desk.last, conversation).reason == (
        "team support: continuity: alice (answered this author last) is at capacity (20/20); "
        "2 matching members busy or away; waiting in the team queue"
    )


async def test_an_owner_with_no_room_for_a_heavier_conversation_is_named_with_its_weight() -> None:
    urgent = topic("outage", keywords=["down"], priority="urgent")
    desk = answered_ann_last(Person("alice", load=18, weights={"urgent": 3}), Person("bob"), topics=[urgent])

    conversation = await desk.write(author="ann", text="the site is down")

    assert conversation.owner_id == "bob"
    assert "alice (answered this author last) has no room for it (18/20, it weighs 3); matched bob" in (
        assigned(desk.last, conversation).reason
    )


async def test_a_reopened_conversation_says_why_its_owner_did_not_keep_it() -> None:
    desk = answered_ann_last(Person("alice"), Person("bob"))
    conversation = await desk.write(author="ann")
    await desk.answer(conversation)
    desk.person("alice").status = "offline"

    conversation = await desk.write(thread=conversation.thread_id, author="ann")

    assert conversation.owner_id == "bob"
    assert "continuity: alice (owns this conversation) is offline; matched bob" in (
        assigned(desk.last, conversation).reason
    )


async def test_an_out_of_office_answerer_passes_the_author_to_their_substitute() -> None:
    alice = Person("alice", out_of_office=(T0 - HOUR, T0 + timedelta(days=6)), substitute_id="carol")
    desk = answered_ann_last(alice, Person("bob"), Person("carol", load=4))

    conversation = await desk.write(author="ann")

    assert conversation.owner_id == "carol"  # although bob is less loaded
    event = assigned(desk.last, conversation)
    assert event.step == "continuity"
    assert "alice answered this author last and is out of office; carol substitutes" in event.reason


async def test_a_substitute_who_cannot_take_it_leaves_it_to_the_match() -> None:
    alice = Person("alice", out_of_office=(T0 - HOUR, T0 + timedelta(days=6)), substitute_id="carol")
    desk = answered_ann_last(alice, Person("bob", load=4), Person("carol", status="away"))

    conversation = await desk.write(author="ann")

    assert conversation.owner_id == "bob"
    event = assigned(desk.last, conversation)
    assert event.step == "match"
    assert (
        "continuity: alice (answered this author last) is out of office and their substitute carol is away;"
        " matched bob" in event.reason
    )


async def test_a_long_reason_is_cut_cleanly_to_fit_its_column() -> None:
    team, name = "support-" + "t" * 55, "refunds-" + "r" * 55  # slugs and names of 63 characters
    former, owner = "alice-" + "a" * 57, "bob-" + "b" * 59
    world = build_world(
        [Person(former, status="away"), Person(owner)],
        teams={team: [former, owner]},
        topics=[topic(name, team=team)],
    )
    world.continuity[(ACCOUNT, "ann")] = former
    desk = Desk(world)

    conversation = await desk.write(author="ann")

    reason = assigned(desk.last, conversation).reason
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
async def test_skills_and_language_pick_who_can_answer(written: str, spoken: str) -> None:
    people = [
        Person("alice", languages=frozenset({spoken})),  # speaks it, lacks the skill
        Person("bob", skills=skilled("billing"), languages=frozenset({spoken, "en"}), load=2),
        Person(
            "carol", skills=skilled("billing"), languages=frozenset({"en"})
        ),  # least loaded, wrong language
    ]
    desk = Desk(build_world(people, topics=[BILLING]))

    conversation = await desk.write(text="where is my invoice", language=written)

    assert conversation.owner_id == "bob"
    event = assigned(desk.last, conversation)
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
async def test_the_least_loaded_gets_it(alice: Person, bob: Person, owner: str) -> None:
    desk = Desk(build_world([copy.deepcopy(alice), copy.deepcopy(bob)]))

    conversation = await desk.write()

    assert conversation.owner_id == owner
    person = desk.person(owner)
    assert f"least loaded ({person.load - 1}/{person.capacity})" in assigned(desk.last, conversation).reason


async def test_equal_loads_go_to_whoever_waited_longest_since_their_last_assignment() -> None:
    alice = Person("alice", last_assigned_at=T0 - HOUR)
    bob = Person("bob", last_assigned_at=T0 - 2 * HOUR)
    desk = Desk(build_world([alice, bob]))

    assert (await desk.write()).owner_id == "bob"
    assert desk.person("bob").last_assigned_at == T0
    desk.state.people["carol"] = Person("carol")  # never assigned: waited longest of all
    desk.state.teams[SUPPORT].members.append("carol")
    assert (await desk.write()).owner_id == "carol"


async def test_nobody_available_queues_the_conversation_with_its_clock_running() -> None:
    desk = Desk(build_world([Person("alice", status="away"), Person("bob", capacity=1, load=1)]))

    conversation = await desk.write()

    assert conversation.owner_id is None
    assert conversation.state == State.open
    assert conversation.queued_at == T0
    assert conversation.due_at == T0 + HOUR
    event = assigned(desk.last, conversation)
    assert (event.step, event.owner_id, event.team_id) == ("queue", None, SUPPORT)
    assert "2 matching members busy or away; waiting in the team queue" in event.reason


async def test_any_member_answers_when_nobody_in_the_team_has_the_skill() -> None:
    legal = topic("legal", keywords=["lawyer"], skills=["legal"])
    desk = Desk(build_world([Person("alice", load=1), Person("bob")], topics=[legal]))

    conversation = await desk.write(text="my lawyer will call you")

    assert conversation.owner_id == "bob"
    event = assigned(desk.last, conversation)
    assert event.step == "any member"
    assert "no member has the skills and language asked; any member" in event.reason


async def test_a_busy_member_with_the_skill_keeps_the_match_strict() -> None:
    legal = topic("legal", keywords=["lawyer"], skills=["legal"])
    desk = Desk(
        build_world([Person("alice"), Person("bob", skills=skilled("legal"), status="away")], topics=[legal])
    )

    conversation = await desk.write(text="my lawyer will call you")

    assert conversation.owner_id is None
    assert assigned(desk.last, conversation).step == "queue"


# -- capacity --------------------------------------------------------------------------------


async def test_capacity_is_never_exceeded() -> None:
    desk = Desk(build_world([Person("alice", capacity=2)]))

    owners = [(await desk.write()).owner_id for _ in range(3)]

    assert owners == ["alice", "alice", None]
    assert desk.person("alice").load == 2


async def test_priority_weights_count_against_capacity() -> None:
    outage = topic("outage", keywords=["down"], priority="urgent")
    desk = Desk(build_world([Person("alice", capacity=3, weights={"urgent": 3})], topics=[outage]))
    question = await desk.write()

    urgent = await desk.write(text="the site is down")

    assert urgent.owner_id is None  # 1 + 3 > 3
    await desk.answer(question)  # frees alice: in the same unit of work she takes the queue
    urgent = desk.conversation(urgent)
    assert urgent.owner_id == "alice"
    assert (urgent.load_weight, desk.person("alice").load) == (3, 3)


async def test_answering_frees_capacity_for_the_queue() -> None:
    desk = Desk(build_world([Person("alice", capacity=1)]))
    desk.serve_elsewhere("alice")
    first = await desk.write()
    waiting = await desk.write()
    assert waiting.owner_id is None

    outcome = await desk.answer(first)

    assert freed(outcome) == {"alice"}

    first, waiting = desk.conversation(first), desk.conversation(waiting)
    assert (first.state, first.load_weight) == (State.responded, 0)
    # the answer freed alice first, then she took the queue
    assert [(type(e), getattr(e, "conversation_id", None)) for e in effects(outcome)][:2] == [
        (ConversationResponded, first.id),
        (DeadlineChanged, first.id),
    ]
    assert waiting.owner_id == "alice"
    assert waiting.queued_at is None
    assert desk.person("alice").load == 1
    assert assigned(outcome, waiting).step == "from queue"


async def test_a_paused_conversation_does_not_count() -> None:
    desk = Desk(build_world([Person("alice", capacity=1)]))
    desk.serve_elsewhere("alice")
    first = await desk.write()

    outcome = await desk.apply(pause(desk, first))

    assert freed(outcome) == {"alice"}
    first = desk.conversation(first)
    assert (first.state, first.owner_id, first.load_weight, desk.person("alice").load) == (
        State.paused,
        "alice",
        0,
        0,
    )
    assert (await desk.write()).owner_id == "alice"


async def test_a_freed_person_takes_the_queue_earliest_due_first_leaving_what_others_have_skills_for() -> (
    None
):
    hurry = topic("hurry", keywords=["asap"], priority="high")
    desk = Desk(
        build_world(
            [
                Person("alice", capacity=1, status="away"),
                Person("bob", skills=skilled("billing"), status="away"),
            ],
            topics=[BILLING, hurry],
        )
    )
    invoice = await desk.write(text="my invoice")  # due 11:00
    desk.now = T0 + 5 * MINUTE
    question = await desk.write()  # due 11:05
    desk.now = T0 + 10 * MINUTE
    urgent = await desk.write(text="asap please")  # queued last, due first: 10:25
    queue = [invoice, question, urgent]
    assert [c.owner_id for c in queue] == [None, None, None]

    await desk.apply(SetStatus(person_id="alice", status="available", issued_at=desk.now))

    assert [desk.conversation(c).owner_id for c in queue] == [None, None, "alice"]
    await desk.answer(urgent)
    assert [desk.conversation(c).owner_id for c in queue] == [None, "alice", "alice"]  # bob has billing


async def test_a_freed_person_takes_what_nobody_in_the_team_has_skills_for() -> None:
    desk = Desk(build_world([Person("alice", status="away"), Person("bob", status="away")], topics=[BILLING]))
    invoice = await desk.write(text="my invoice")
    assert invoice.owner_id is None

    await desk.apply(SetStatus(person_id="alice", status="available", issued_at=desk.now))

    assert desk.conversation(invoice).owner_id == "alice"


# -- availability ----------------------------------------------------------------------------


async def test_away_keeps_what_they_own_and_takes_nothing_new() -> None:
    desk = Desk(build_world([Person("alice"), Person("bob", load=3)]))
    desk.serve_elsewhere("alice")
    mine = await desk.write()
    assert mine.owner_id == "alice"

    outcome = await desk.apply(SetStatus(person_id="alice", status="away", issued_at=desk.now))

    assert (desk.conversation(mine).owner_id, desk.person("alice").load) == ("alice", 1)
    assert effects(outcome) == []
    assert freed(outcome) == set()
    assert (await desk.write()).owner_id == "bob"


async def test_offline_hands_over_everything_open_but_keeps_what_waits_on_the_customer() -> None:
    whenever = topic("whenever", keywords=["whenever"], priority="low")
    desk = Desk(build_world([Person("alice"), Person("bob", load=3)], topics=[whenever]))
    soon, later, paused = await desk.write(), await desk.write(text="whenever you can"), await desk.write()
    await desk.apply(pause(desk, paused))
    assert [desk.conversation(c).owner_id for c in (soon, later, paused)] == ["alice"] * 3

    outcome = await desk.apply(SetStatus(person_id="alice", status="offline", issued_at=desk.now))

    assert [desk.conversation(c).owner_id for c in (soon, later, paused)] == ["bob", "bob", "alice"]
    assert (desk.person("alice").load, desk.person("bob").load) == (0, 5)
    event = assigned(outcome, soon)
    assert event.step == "hand over, match"
    assert event.reason.startswith("handed over (alice went offline); ")
    assert event.previous_owner_id == "alice"
    assert deadline(outcome, soon).owner_id == "bob"


async def test_shift_end_hands_over_only_what_falls_due_before_the_next_shift() -> None:
    friday = datetime(2026, 5, 22, 16, 30, tzinfo=UTC)
    whenever = topic("whenever", keywords=["whenever"], priority="low")
    alice = Person("alice", working_hours=DAY_SHIFT)
    desk = Desk(build_world([alice, Person("bob", load=5)], now=friday, topics=[whenever]))
    soon = await desk.write()  # due 17:30, after the shift
    later = await desk.write(text="whenever you can")  # due Monday 16:30, after alice is back at 09:00
    [timer] = (await desk.apply(CheckAvailability(person_id="alice", issued_at=desk.now))).timers
    assert timer.at == datetime(2026, 5, 22, 17, 0, tzinfo=UTC)

    desk.now = timer.at
    outcome = await desk.apply(timer.command)

    assert (desk.conversation(soon).owner_id, desk.conversation(later).owner_id) == ("bob", "alice")
    event = assigned(outcome, soon)
    assert event.step == "hand over, match"
    assert event.reason.startswith("handed over (alice's shift ended); ")
    assert [(t.key, t.at) for t in outcome.timers] == [
        ("person.alice", datetime(2026, 5, 25, 9, 0, tzinfo=UTC))
    ]


async def test_out_of_office_hands_over_to_the_substitute() -> None:
    desk = Desk(
        build_world([Person("alice", substitute_id="carol"), Person("bob", load=2), Person("carol", load=3)])
    )
    mine = await desk.write()
    assert mine.owner_id == "alice"

    desk.person("alice").out_of_office = (T0 + 30 * MINUTE, T0 + timedelta(days=7))
    desk.now = T0 + 30 * MINUTE
    outcome = await desk.apply(CheckAvailability(person_id="alice", issued_at=desk.now))

    assert desk.conversation(mine).owner_id == "carol"  # although bob is less loaded
    event = assigned(outcome, mine)
    assert event.step == "hand over, continuity"
    assert "alice owned it and is out of office; carol substitutes" in event.reason
    assert (desk.person("alice").load, desk.person("carol").load) == (0, 4)
    assert [t.at for t in outcome.timers] == [T0 + timedelta(days=7)]


async def test_check_availability_arms_a_timer_at_the_next_shift_change() -> None:
    desk = Desk(build_world([Person("alice", working_hours=DAY_SHIFT)]))

    outcome = await desk.apply(CheckAvailability(person_id="alice", issued_at=desk.now))

    [timer] = outcome.timers
    assert timer.key == "person.alice"
    assert timer.at == datetime(2026, 5, 20, 17, 0, tzinfo=UTC)
    assert isinstance(timer.command, CheckAvailability)
    assert timer.command.person_id == "alice"
    desk.person("alice").out_of_office = (T0 + 2 * HOUR, T0 + timedelta(days=2))
    outcome = await desk.apply(CheckAvailability(person_id="alice", issued_at=desk.now))
    assert [t.at for t in outcome.timers] == [T0 + 2 * HOUR]  # the absence begins before the shift ends


async def test_nobody_to_hand_over_to_queues_the_conversation() -> None:
    desk = Desk(build_world([Person("alice"), Person("bob", status="away")]))
    mine = await desk.write()

    outcome = await desk.apply(SetStatus(person_id="alice", status="offline", issued_at=desk.now))

    mine = desk.conversation(mine)
    assert mine.owner_id is None
    assert mine.queued_at == T0
    assert assigned(outcome, mine).step == "hand over, queue"
    assert deadline(outcome, mine).owner_id is None


# -- deadlines -------------------------------------------------------------------------------


async def test_the_clock_runs_in_business_hours_and_skips_public_holidays() -> None:
    sla = Sla(default=Targets(first_response=30 * MINUTE), warn_before=10 * MINUTE, calendar=OFFICE)
    desk = Desk(build_world([Person("alice")], now=FRIDAY_EVENING, sla=sla))

    conversation = await desk.write()

    assert conversation.due_at == datetime(2026, 5, 26, 9, 25, tzinfo=BERLIN)
    assert conversation.warn_at == datetime(2026, 5, 26, 9, 15, tzinfo=BERLIN)
    event = deadline(desk.last, conversation)
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
async def test_each_priority_has_its_target(text: str, priority: str, target: timedelta) -> None:
    desk = Desk(build_world([Person("alice")], topics=PRIORITY_TOPICS))

    conversation = await desk.write(text=text)

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
async def test_vip_and_high_reach_raise_the_priority_and_so_the_target(
    vip: bool, followers: int | None, priority: str, target: timedelta
) -> None:
    sla = dataclasses.replace(STANDARD, high_reach_followers=10_000)
    desk = Desk(build_world([Person("alice")], sla=sla, vip={"@Ann"} if vip else ()))

    conversation = await desk.write(author="ann", followers=followers)

    assert conversation.priority == priority
    assert conversation.due_at == T0 + target
    assert events(desk.last, ConversationOpened, conversation)[0].priority == priority


async def test_pause_stops_the_clock_and_resume_gives_back_the_business_time_left() -> None:
    sla = Sla(default=Targets(first_response=30 * MINUTE), warn_before=10 * MINUTE, calendar=OFFICE)
    desk = Desk(build_world([Person("alice")], now=FRIDAY_EVENING, sla=sla))
    conversation = await desk.write()  # due Tuesday 09:25

    desk.now = FRIDAY_EVENING + 3 * MINUTE  # 2 business minutes before the weekend
    paused = await desk.apply(pause(desk, conversation))
    assert (desk.conversation(conversation).due_at, deadline(paused, conversation).due_at) == (None, None)
    assert events(paused, ConversationPaused, conversation)[0].reason == "waiting on the customer"

    desk.now = datetime(2026, 5, 26, 10, 0, tzinfo=BERLIN)  # 62 business minutes later
    resumed = await desk.apply(Resume(tenant_id=TENANT, conversation_id=conversation.id, issued_at=desk.now))

    conversation = desk.conversation(conversation)
    assert conversation.state == State.open
    assert conversation.due_at == datetime(2026, 5, 26, 10, 27, tzinfo=BERLIN)  # 09:25 + 62 min
    assert conversation.warn_at == datetime(2026, 5, 26, 10, 17, tzinfo=BERLIN)
    assert (conversation.owner_id, desk.person("alice").load) == ("alice", 1)
    event = deadline(resumed, conversation)
    assert (event.kind, event.due_at, event.owner_id) == (
        DeadlineKind.first_response,
        conversation.due_at,
        "alice",
    )
    assert events(resumed, ConversationResumed, conversation)


async def test_a_recompute_after_a_pause_keeps_the_time_the_pause_gave_back() -> None:
    sla = Sla(default=Targets(first_response=30 * MINUTE), warn_before=10 * MINUTE, calendar=OFFICE)
    desk = Desk(build_world([Person("alice")], now=FRIDAY_EVENING, sla=sla))
    conversation = await desk.write()
    desk.now = FRIDAY_EVENING + 3 * MINUTE
    await desk.apply(pause(desk, conversation))
    desk.now = datetime(2026, 5, 26, 10, 0, tzinfo=BERLIN)
    await desk.apply(Resume(tenant_id=TENANT, conversation_id=conversation.id, issued_at=desk.now))
    conversation = desk.conversation(conversation)
    resumed = (conversation.due_at, conversation.warn_at)

    await desk.apply(Recompute(tenant_id=TENANT, issued_at=desk.now))  # the same policy: nothing moves

    conversation = desk.conversation(conversation)
    assert (conversation.due_at, conversation.warn_at) == resumed
    assert conversation.paused_business_seconds == 62 * 60


RESOLVE_IN_8H = Sla(default=Targets(first_response=HOUR, next_response=30 * MINUTE, resolution=8 * HOUR))


async def test_after_a_reply_the_resolution_target_keeps_a_clock() -> None:
    desk = Desk(build_world([Person("alice")], sla=RESOLVE_IN_8H))
    conversation = await desk.write()
    assert (conversation.deadline_kind, conversation.due_at) == ("first_response", T0 + HOUR)

    desk.now = T0 + 20 * MINUTE
    outcome = await desk.answer(conversation)

    conversation = desk.conversation(conversation)
    assert conversation.state == State.responded
    assert (conversation.deadline_kind, conversation.due_at) == ("resolution", T0 + 8 * HOUR)
    event = deadline(outcome, conversation)
    assert (event.kind, event.started_at, event.due_at) == (DeadlineKind.resolution, T0, T0 + 8 * HOUR)


async def test_a_conversation_reopened_after_resolution_counts_its_resolution_target_anew() -> None:
    desk = Desk(build_world([Person("alice")], sla=RESOLVE_IN_8H))
    conversation = await desk.write()
    desk.now = T0 + HOUR
    resolve = Resolve(
        tenant_id=TENANT, conversation_id=conversation.id, reason="answered by phone", issued_at=desk.now
    )
    await desk.apply(resolve)

    desk.now = T0 + 3 * 24 * HOUR  # three days later the customer writes again
    conversation = await desk.write(thread=conversation.thread_id, at=desk.now)

    assert conversation.state == State.open
    assert (conversation.deadline_kind, conversation.due_at) == ("next_response", desk.now + 30 * MINUTE)
    await desk.answer(conversation, at=desk.now + MINUTE)
    conversation = desk.conversation(conversation)
    assert (conversation.deadline_kind, conversation.due_at) == ("resolution", desk.now + 8 * HOUR)


async def test_the_resolution_target_holds_the_clock_when_it_falls_first() -> None:
    sla = Sla(default=Targets(first_response=HOUR, resolution=20 * MINUTE))
    desk = Desk(build_world([Person("alice")], sla=sla))

    conversation = await desk.write()

    assert (conversation.deadline_kind, conversation.due_at) == ("resolution", T0 + 20 * MINUTE)


async def test_a_no_sla_topic_is_assigned_without_a_deadline() -> None:
    thanks = topic("thanks", keywords=["thanks"], no_sla=True)
    desk = Desk(build_world([Person("alice")], topics=[thanks]))

    conversation = await desk.write(text="thanks a lot")

    assert (conversation.state, conversation.owner_id, conversation.due_at) == (State.open, "alice", None)
    assert events(desk.last, DeadlineChanged) == []


async def test_a_no_sla_topic_without_a_team_is_recorded_as_resolved() -> None:
    spam = topic("spam", keywords=["crypto"], team=None, no_sla=True)
    desk = Desk(build_world([Person("alice")], topics=[spam]))

    conversation = await desk.write(text="free crypto")

    assert (conversation.state, conversation.owner_id, conversation.team_id) == (State.resolved, None, None)
    assert events(desk.last, ConversationAssigned) == []
    assert events(desk.last, DeadlineChanged) == []
    [resolved] = events(desk.last, ConversationResolved)
    assert resolved.reason == "topic spam: recorded, no answer needed"
    assert desk.person("alice").load == 0

    conversation = await desk.write(thread=conversation.thread_id, text="more free crypto")

    assert conversation.state == State.resolved
    assert desk.last.events == []  # still nothing to answer: no reopening


async def test_a_message_older_than_the_backfill_cutoff_is_assigned_but_never_alerts() -> None:
    desk = Desk(build_world([Person("alice")]))

    old = await desk.write(at=T0 - 25 * HOUR)
    recent = await desk.write(at=T0 - 23 * HOUR)

    assert (old.owner_id, old.due_at) == ("alice", None)
    assert events(desk.outcomes, DeadlineChanged, old) == []
    assert recent.due_at == T0 - 22 * HOUR  # within the cutoff: overdue, and alerted


# -- the life of a conversation --------------------------------------------------------------


async def test_a_reply_stops_the_clock_and_records_who_answered() -> None:
    desk = Desk(build_world([Person("alice")]))
    conversation = await desk.write(author="ann")

    desk.now = T0 + 10 * MINUTE
    outcome = await desk.answer(conversation)

    conversation = desk.conversation(conversation)
    assert (conversation.state, conversation.responded_at) == (State.responded, T0 + 10 * MINUTE)
    assert (conversation.due_at, conversation.deadline_kind) == (None, None)
    assert [e.interaction_id for e in events(outcome, ConversationResponded)]
    event = deadline(outcome, conversation)
    assert (event.due_at, event.kind, event.reason, event.deadline_version) == (None, None, "responded", 2)
    assert desk.state.continuity == {(ACCOUNT, "ann"): "alice"}
    assert outcome.timers == []  # the tenant resolves nothing by itself


async def test_the_next_conversation_of_an_answered_author_goes_to_whoever_answered() -> None:
    desk = Desk(build_world([Person("alice", load=3), Person("bob")]))
    first = await desk.write(author="ann")
    await desk.apply(Claim(tenant_id=TENANT, conversation_id=first.id, person_id="alice", issued_at=T0))
    await desk.answer(first)
    assert desk.state.continuity == {(ACCOUNT, "ann"): "alice"}

    assert (await desk.write(author="ann")).owner_id == "alice"  # although bob is less loaded
    assert (await desk.write(author="ben")).owner_id == "bob"


async def test_the_customer_writing_again_reopens_with_the_next_response_clock_for_the_same_owner() -> None:
    desk = answered_ann_last(Person("alice", load=4), Person("bob"))
    conversation = await desk.write(author="ann")
    assert conversation.owner_id == "alice"
    desk.now = T0 + 10 * MINUTE
    await desk.answer(conversation)
    desk.state.continuity.clear()

    desk.now = T0 + HOUR
    again = await desk.write(thread=conversation.thread_id, author="ann")

    assert again.id == conversation.id
    conversation = again
    assert (conversation.state, conversation.owner_id) == (State.open, "alice")
    assert events(desk.last, ConversationReopened, conversation)[0].reopened_at == T0 + HOUR
    event = assigned(desk.last, conversation)
    assert (event.step, event.previous_owner_id) == ("continuity", "alice")
    assert "alice owns this conversation" in event.reason
    assert (conversation.deadline_kind, conversation.due_at) == ("next_response", T0 + HOUR + 30 * MINUTE)
    assert deadline(desk.last, conversation).started_at == T0 + HOUR


async def test_a_reopened_conversation_moves_on_when_its_owner_cannot_take_it() -> None:
    desk = Desk(build_world([Person("alice"), Person("bob", load=1)]))
    conversation = await desk.write()
    await desk.answer(conversation)
    desk.person("alice").status = "away"

    conversation = await desk.write(thread=conversation.thread_id)

    assert conversation.owner_id == "bob"
    assert assigned(desk.last, conversation).step == "match"


async def test_writing_after_a_resolution_reopens() -> None:
    desk = Desk(build_world([Person("alice")]))
    conversation = await desk.write()
    await desk.apply(Resolve(tenant_id=TENANT, conversation_id=conversation.id, issued_at=desk.now))
    assert desk.conversation(conversation).state == State.resolved

    desk.now = T0 + 2 * HOUR
    conversation = await desk.write(thread=conversation.thread_id)

    assert (conversation.state, conversation.owner_id) == (State.open, "alice")
    assert events(desk.last, ConversationReopened, conversation)
    assert (conversation.deadline_kind, conversation.due_at) == ("next_response", T0 + 2 * HOUR + 30 * MINUTE)


async def test_the_customer_writing_to_a_paused_conversation_resumes_it() -> None:
    desk = Desk(build_world([Person("alice")]))
    conversation = await desk.write()
    await desk.apply(pause(desk, conversation))

    desk.now = T0 + HOUR
    conversation = await desk.write(thread=conversation.thread_id)

    assert (conversation.state, conversation.owner_id, desk.person("alice").load) == (State.open, "alice", 1)
    assert events(desk.last, ConversationResumed, conversation)
    assert conversation.due_at == T0 + HOUR + 30 * MINUTE


async def test_edits_move_nothing() -> None:
    desk = Desk(build_world([Person("alice")]))
    conversation = await desk.write()
    before = copy.deepcopy(conversation)
    desk.now = T0 + 5 * MINUTE

    edited = await desk.write(thread=conversation.thread_id, edit_version=1, text="hello?? (edited)")
    outcomes = [desk.last, await desk.answer(conversation, edit=1)]  # an edited reply is no new answer

    assert [e for outcome in outcomes for e in outcome.events] == []
    assert edited == desk.conversation(conversation) == before


async def test_a_reply_written_before_the_customers_last_message_does_not_answer_it() -> None:
    desk = Desk(build_world([Person("alice")]))
    conversation = await desk.write()
    await desk.answer(conversation, at=T0 + 10 * MINUTE)
    desk.now = T0 + 20 * MINUTE
    await desk.write(thread=conversation.thread_id)

    outcome = await desk.answer(conversation, at=T0 + 15 * MINUTE)  # delivered late

    assert desk.conversation(conversation).state == State.open
    assert outcome.events == []


async def test_a_reply_arms_auto_resolve_and_the_timer_resolves_a_quiet_conversation() -> None:
    desk = Desk(build_world([Person("alice")], auto_resolve=timedelta(days=2)))
    conversation = await desk.write()
    desk.now = T0 + 10 * MINUTE
    [timer] = (await desk.answer(conversation)).timers
    assert (timer.key, timer.at) == (f"conv.{TENANT}.{conversation.id}", T0 + 10 * MINUTE + timedelta(days=2))
    assert isinstance(timer.command, AutoResolve)
    assert timer.command.conversation_id == conversation.id

    desk.now = timer.at
    outcome = await desk.apply(timer.command)

    assert desk.conversation(conversation).state == State.resolved
    [resolved] = events(outcome, ConversationResolved)
    assert resolved.reason == "no new message for 2 days, 0:00:00 after the reply"


async def _customer_wrote_again(desk: Desk, conversation: Conversation) -> None:
    desk.now = T0 + timedelta(days=1)
    await desk.write(thread=conversation.thread_id)


async def _answered_again_later(desk: Desk, conversation: Conversation) -> None:
    await _customer_wrote_again(desk, conversation)
    desk.now += HOUR
    await desk.answer(conversation)


@pytest.mark.parametrize(
    "since", [_customer_wrote_again, _answered_again_later], ids=["customer wrote", "answered again"]
)
async def test_a_stale_auto_resolve_timer_does_nothing(
    since: Callable[[Desk, Conversation], Awaitable[None]],
) -> None:
    desk = Desk(build_world([Person("alice")], auto_resolve=timedelta(days=2)))
    conversation = await desk.write()
    [stale] = (await desk.answer(conversation)).timers
    await since(desk, conversation)
    before = copy.deepcopy(desk.conversation(conversation))

    desk.now = stale.at
    outcome = await desk.apply(stale.command)

    assert desk.conversation(conversation) == before
    assert effects(outcome) == []
    [rejected] = outcome.rejections
    assert rejected.code is Rejection.outdated


async def test_every_deadline_change_has_a_higher_version() -> None:
    desk = Desk(build_world([Person("alice"), Person("bob", load=2)], sla=RESOLVE_IN_8H))
    conversation = await desk.write()

    async def command(kind: type[Pause | Resume | Resolve]) -> None:
        desk.now += 5 * MINUTE
        await desk.apply(kind(tenant_id=TENANT, conversation_id=conversation.id, issued_at=desk.now))

    await command(Pause)
    await command(Resume)
    await desk.answer(conversation)
    desk.now += HOUR
    await desk.write(thread=conversation.thread_id)
    await desk.apply(
        Claim(tenant_id=TENANT, conversation_id=conversation.id, person_id="bob", issued_at=desk.now)
    )
    await command(Resolve)

    versions = [e.deadline_version for e in events(desk.outcomes, DeadlineChanged, conversation)]
    assert len(versions) >= 7
    assert all(a < b for a, b in itertools.pairwise(versions))
    assert versions[-1] == desk.conversation(conversation).deadline_version


@pytest.mark.parametrize("answered", [False, True], ids=["waiting for an answer", "answered"])
async def test_an_owner_change_republishes_the_deadline_for_the_new_owner(answered: bool) -> None:
    desk = Desk(build_world([Person("alice"), Person("bob", load=1)], sla=RESOLVE_IN_8H))
    conversation = await desk.write()
    if answered:
        await desk.answer(conversation)
    before = deadline(desk.outcomes, conversation)

    outcome = await desk.apply(
        Claim(tenant_id=TENANT, conversation_id=conversation.id, person_id="bob", issued_at=desk.now)
    )

    after = deadline(outcome, conversation)
    assert after.owner_id == "bob"
    assert after.deadline_version == before.deadline_version + 1
    assert (after.kind, after.started_at, after.warn_at, after.due_at) == (
        before.kind,
        before.started_at,
        before.warn_at,
        before.due_at,
    )


# -- commands --------------------------------------------------------------------------------


async def test_a_claim_moves_the_conversation_and_its_load() -> None:
    desk = Desk(build_world([Person("alice"), Person("bob", load=1)]))
    desk.serve_elsewhere("alice")
    conversation = await desk.write()
    assert (desk.person("alice").load, desk.person("bob").load) == (1, 1)

    outcome = await desk.apply(
        Claim(
            tenant_id=TENANT, conversation_id=conversation.id, person_id="bob", issued_by="bob", issued_at=T0
        )
    )

    assert desk.conversation(conversation).owner_id == "bob"
    assert (desk.person("alice").load, desk.person("bob").load) == (0, 2)
    assert "alice" in freed(outcome)
    event = assigned(outcome, conversation)
    assert (event.step, event.reason, event.previous_owner_id) == ("claim", "bob claimed it", "alice")
    assert outcome.rejections == []


async def test_a_claim_at_capacity_is_refused() -> None:
    desk = Desk(build_world([Person("alice"), Person("bob", capacity=1, load=1)]))
    conversation = await desk.write()

    outcome = await desk.apply(
        Claim(tenant_id=TENANT, conversation_id=conversation.id, person_id="bob", issued_at=T0)
    )

    assert desk.conversation(conversation).owner_id == "alice"
    assert effects(outcome) == []
    [rejected] = outcome.rejections
    assert (rejected.code, rejected.reason) == (Rejection.at_capacity, "bob is at capacity (1/1)")


async def test_reassign_to_a_person() -> None:
    desk = Desk(build_world([Person("alice"), Person("bob", load=1)]))
    conversation = await desk.write()

    outcome = await desk.apply(
        Reassign(
            tenant_id=TENANT, conversation_id=conversation.id, person_id="bob", issued_by="lead", issued_at=T0
        ),
    )

    assert desk.conversation(conversation).owner_id == "bob"
    assert assigned(outcome, conversation).reason == "bob was given it by lead"


async def test_reassign_to_a_team_lets_that_team_choose() -> None:
    people = [Person("alice"), Person("carol", load=1), Person("dave", skills=skilled("billing"), load=2)]
    desk = Desk(build_world(people, teams={"support": ["alice"], "billing": ["carol", "dave"]}))
    conversation = await desk.write()
    assert conversation.owner_id == "alice"

    outcome = await desk.apply(
        Reassign(tenant_id=TENANT, conversation_id=conversation.id, team="billing", issued_at=T0)
    )

    conversation = desk.conversation(conversation)
    assert (conversation.team_id, conversation.owner_id) == (team_id("billing"), "carol")
    assert (desk.person("alice").load, desk.person("carol").load) == (0, 2)
    event = assigned(outcome, conversation)
    assert (event.team_id, event.step) == (team_id("billing"), "match")
    assert deadline(outcome, conversation).owner_id == "carol"


async def test_reassign_to_a_team_with_nobody_free_queues_it_and_releases_the_owner() -> None:
    desk = Desk(
        build_world(
            [Person("alice"), Person("carol", status="away")],
            teams={"support": ["alice"], "billing": ["carol"]},
        )
    )
    conversation = await desk.write()
    desk.now = T0 + MINUTE

    outcome = await desk.apply(
        Reassign(tenant_id=TENANT, conversation_id=conversation.id, team="billing", issued_at=desk.now),
    )

    conversation = desk.conversation(conversation)
    assert (conversation.team_id, conversation.owner_id, conversation.queued_at) == (
        team_id("billing"),
        None,
        T0 + MINUTE,
    )
    assert desk.person("alice").load == 0
    event = assigned(outcome, conversation)
    assert (event.step, event.owner_id, event.previous_owner_id) == ("queue", None, "alice")
    assert deadline(outcome, conversation).owner_id is None  # notify stops alerting alice


async def test_resolve_frees_the_owner_and_stops_the_clock() -> None:
    desk = Desk(build_world([Person("alice")]))
    desk.serve_elsewhere("alice")
    conversation = await desk.write()

    outcome = await desk.apply(
        Resolve(tenant_id=TENANT, conversation_id=conversation.id, issued_by="alice", issued_at=T0)
    )

    conversation = desk.conversation(conversation)
    assert (conversation.state, conversation.resolved_at, desk.person("alice").load) == (
        State.resolved,
        T0,
        0,
    )
    assert events(outcome, ConversationResolved)[0].reason == "resolved by alice"
    assert deadline(outcome, conversation).due_at is None
    assert freed(outcome) == {"alice"}


async def test_a_command_for_another_tenants_conversation_is_refused() -> None:
    desk = Desk(build_world([Person("alice")]))
    conversation = await desk.write()

    outcome = await desk.apply(Resolve(tenant_id="other", conversation_id=conversation.id, issued_at=T0))

    assert desk.conversation(conversation).state == State.open
    [rejected] = outcome.rejections
    assert rejected.code is Rejection.unknown_conversation
    assert effects(outcome) == []


# -- redelivery ------------------------------------------------------------------------------

Scenario = Callable[[], Awaitable[tuple[Desk, AnyCommand]]]


async def _owned() -> tuple[Desk, Conversation]:
    desk = Desk(build_world([Person("alice"), Person("bob", load=1)], auto_resolve=timedelta(days=1)))
    conversation = await desk.write()
    desk.now += MINUTE
    return desk, conversation


async def _claim() -> tuple[Desk, AnyCommand]:
    desk, c = await _owned()
    return desk, Claim(tenant_id=TENANT, conversation_id=c.id, person_id="bob", issued_at=desk.now)


async def _reassign_to_person() -> tuple[Desk, AnyCommand]:
    desk, c = await _owned()
    return desk, Reassign(tenant_id=TENANT, conversation_id=c.id, person_id="bob", issued_at=desk.now)


async def _reassign_to_team(*, queued: bool) -> tuple[Desk, AnyCommand]:
    status = "away" if queued else "available"
    people = [Person("alice"), Person("carol", status=status)]
    desk = Desk(build_world(people, teams={"support": ["alice"], "billing": ["carol"]}))
    c = await desk.write()
    desk.now += MINUTE
    return desk, Reassign(tenant_id=TENANT, conversation_id=c.id, team="billing", issued_at=desk.now)


async def _pause() -> tuple[Desk, AnyCommand]:
    desk, c = await _owned()
    return desk, pause(desk, c)


async def _resume() -> tuple[Desk, AnyCommand]:
    desk, c = await _owned()
    await desk.apply(pause(desk, c))
    desk.now += HOUR
    return desk, Resume(tenant_id=TENANT, conversation_id=c.id, issued_at=desk.now)


async def _resolve() -> tuple[Desk, AnyCommand]:
    desk, c = await _owned()
    return desk, Resolve(tenant_id=TENANT, conversation_id=c.id, issued_at=desk.now)


async def _mark_responded() -> tuple[Desk, AnyCommand]:
    desk, c = await _owned()
    return desk, MarkResponded(
        tenant_id=TENANT, conversation_id=c.id, person_id="bob", issued_by="alice", issued_at=desk.now
    )


async def _auto_resolve() -> tuple[Desk, AnyCommand]:
    desk, c = await _owned()
    [timer] = (await desk.answer(c)).timers
    desk.now = timer.at
    return desk, timer.command


async def _set_status() -> tuple[Desk, AnyCommand]:
    desk, _ = await _owned()
    return desk, SetStatus(person_id="alice", status="offline", issued_at=desk.now)


async def _check_availability() -> tuple[Desk, AnyCommand]:
    desk, _ = await _owned()
    desk.person("alice").out_of_office = (desk.now, desk.now + timedelta(days=2))
    return desk, CheckAvailability(person_id="alice", issued_at=desk.now)


async def _hand_over() -> tuple[Desk, AnyCommand]:
    desk, _ = await _owned()
    desk.state.teams[SUPPORT].members.remove("alice")  # what HandOver is for: she left the team
    return desk, HandOver(person_id="alice", reason="left the team", issued_at=desk.now)


async def _recompute() -> tuple[Desk, AnyCommand]:
    desk, _ = await _owned()
    desk.state.tenants[TENANT].policies[POLICY] = Sla(default=Targets(first_response=2 * HOUR))
    return desk, Recompute(tenant_id=TENANT, issued_at=desk.now)


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
        _mark_responded,
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
        "mark responded",
        "auto resolve",
        "set status",
        "check availability",
        "hand over",
        "recompute",
    ],
)
async def test_a_redelivered_command_changes_nothing(scenario: Scenario) -> None:
    desk, command = await scenario()
    first = await desk.apply(command)
    assert effects(first), "the first delivery does something"
    assert first.rejections == [] and events(first, CommandApplied)
    armed = {(t.key, t.at) for t in first.timers}
    desk.now += MINUTE  # the redelivery comes a little later
    conversations_before = copy.deepcopy(desk.state.conversations)
    people_before = copy.deepcopy(desk.state.people)

    again = await desk.apply(command)

    assert (again.events, again.timers, again.outgoing, again.outbox_id) == ([], [], [], None)
    # a redelivery after the router forgot the command (`COMMAND_MEMORY`) changes nothing either
    del desk.state.commands[command.command_id]
    late = await desk.apply(command)

    assert [getattr(e.event, "command_id", None) for e in late.events] == [
        command.command_id
    ]  # its outcome, nothing else
    assert effects(late) == []
    assert desk.state.conversations == conversations_before
    assert desk.state.people == people_before
    assert {(t.key, t.at) for t in late.timers} <= armed  # re-arming the same timer replaces it
