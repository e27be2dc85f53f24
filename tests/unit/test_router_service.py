"""The router's application service over the in-memory repository: the whole path of a batch
(dedupe, loading, the domain, queues, the outbox) and what it says about each command."""

import json
from datetime import timedelta

from services.router.assignment import Person
from services.router.conversations import Team, World
from services.router.memory import MemoryRepository
from services.router.ports import CountingIds
from services.router.service import Outcome, Router
from shared import ids
from shared.commands import (
    AnyCommand,
    AutoResolve,
    CheckAvailability,
    Claim,
    MarkResponded,
    Pause,
    Resolve,
    SetStatus,
    command_adapter,
    subject_of,
)
from shared.events import (
    CommandApplied,
    ConversationAssigned,
    ConversationOpened,
    ConversationResponded,
    DeadlineChanged,
    Event,
    Rejection,
)
from tests.unit.routing_world import (
    T0,
    TENANT,
    build_world,
    message,
    repository,
    serialized,
    service,
)

MINUTE = timedelta(minutes=1)


def of(outcome: Outcome, kind: type[Event]) -> list[Event]:
    return [e.event for e in outcome.events if isinstance(e.event, kind)]


async def opened(router: Router, world: World, thread: str = "t1", author: str = "ann") -> str:
    outcome = await router.route(
        [message(world, thread=thread, author=author, external_id=f"m-{thread}")], T0
    )
    [event] = of(outcome, ConversationOpened)
    assert isinstance(event, ConversationOpened)
    return event.conversation_id


async def test_a_batch_opens_assigns_and_keeps_its_messages_in_the_outbox() -> None:
    world = build_world([Person("alice")])
    repo = repository(world)
    outcome = await service(repo).route([message(world, thread="t1", external_id="m1")], T0)
    kinds = [type(e.event) for e in outcome.events]
    assert kinds == [ConversationOpened, ConversationAssigned, DeadlineChanged]
    assert [m.msg_id for m in outcome.outgoing] == [e.msg_id for e in outcome.events]
    assert outcome.outbox_id is not None
    assert repo.state.outbox[outcome.outbox_id][1] == outcome.outgoing
    assert repo.state.people["alice"].load == 1
    assert outcome.counters.routed == 1


async def test_an_interaction_seen_already_does_nothing_again() -> None:
    world = build_world([Person("alice")])
    router = service(repository(world))
    ix = message(world, thread="t1", external_id="m1")
    await router.route([ix], T0)
    again = await router.route([ix, ix], T0 + MINUTE)
    assert (again.outgoing, again.counters.duplicates, again.outbox_id) == ([], 2, None)


async def test_an_unknown_account_is_told_to_the_consumer_and_nothing_is_stored() -> None:
    world = build_world([Person("alice")])
    repo = repository(world)
    ix = message(world, thread="t1", external_id="m1").model_copy(update={"account_id": "ghost"})
    outcome = await service(repo).route([ix], T0)
    assert outcome.unknown == {ix.interaction_id}
    assert outcome.outgoing == [] and repo.state.interactions == {}


async def test_a_reply_routed_before_its_message_answers_it_when_it_comes() -> None:
    world = build_world([Person("alice")])
    router = service(repository(world))
    reply = message(world, thread="t1", outbound=True, external_id="r1", at=T0 + MINUTE)
    first = await router.route([reply], T0 + MINUTE)
    assert first.events == []
    customer = message(world, thread="t1", external_id="m1", at=T0)
    outcome = await router.route([customer], T0 + 2 * MINUTE)
    assert [type(e) for e in of(outcome, ConversationResponded)] == [ConversationResponded]
    assert not any(isinstance(e.event, DeadlineChanged) and e.event.due_at for e in outcome.events)


async def test_a_successful_claim_publishes_command_applied() -> None:
    world = build_world([Person("alice"), Person("bob")])
    router = service(repository(world))
    cid = await opened(router, world)
    claim = Claim(
        command_id="claim-0001", tenant_id=TENANT, conversation_id=cid, person_id="bob", issued_at=T0
    )
    outcome = await router.apply([claim], T0 + MINUTE)
    [applied] = of(outcome, CommandApplied)
    assert isinstance(applied, CommandApplied)
    assert (applied.command_id, applied.command_type, applied.conversation_id) == (
        "claim-0001",
        "conversation.claim",
        cid,
    )
    assert applied.summary == f"bob owns {cid[:8]}…"
    out = next(m for m in outcome.outgoing if m.msg_id == "outcome:claim-0001")
    assert out.subject == f"sh.result.tenant.{TENANT}.applied"
    assert outcome.rejections == []


async def test_a_claim_for_someone_at_capacity_is_rejected_with_a_reason_a_person_can_read() -> None:
    world = build_world([Person("alice"), Person("bob", capacity=1, load=1)])
    repo = repository(world)
    router = service(repo)
    cid = await opened(router, world)
    claim = Claim(
        command_id="claim-0002", tenant_id=TENANT, conversation_id=cid, person_id="bob", issued_at=T0
    )
    outcome = await router.apply([claim], T0 + MINUTE)
    [rejected] = outcome.rejections
    assert (rejected.code, rejected.reason) == (Rejection.at_capacity, "bob is at capacity (1/1)")
    assert [m.subject for m in outcome.outgoing] == [f"sh.result.tenant.{TENANT}.rejected"]
    assert repo.state.conversations[cid].owner_id == "alice"


async def test_a_command_on_an_unknown_conversation_is_rejected() -> None:
    world = build_world([Person("alice")])
    router = service(repository(world))
    resolve = Resolve(command_id="resolve-0001", tenant_id=TENANT, conversation_id="3f" * 16, issued_at=T0)
    outcome = await router.apply([resolve], T0)
    [rejected] = outcome.rejections
    assert rejected.code is Rejection.unknown_conversation
    assert rejected.reason == f"no conversation 3f3f3f3f… in tenant {TENANT}"


async def test_a_redelivered_command_produces_nothing_new() -> None:
    world = build_world([Person("alice")])
    router = service(repository(world))
    cid = await opened(router, world)
    pause = Pause(command_id="pause-0001", tenant_id=TENANT, conversation_id=cid, issued_at=T0)
    first = await router.apply([pause], T0 + MINUTE)
    assert len(of(first, CommandApplied)) == 1
    again = await router.apply([pause, pause], T0 + 2 * MINUTE)
    assert (again.outgoing, again.events, again.outbox_id) == ([], [], None)


async def test_the_routers_own_timers_get_outcomes_too() -> None:
    world = build_world([Person("alice")])
    router = service(repository(world))
    cid = await opened(router, world)
    stale = AutoResolve(command_id="autoresolve-x", tenant_id=TENANT, conversation_id=cid, issued_by="router")
    check = CheckAvailability(command_id="avail-alice-1", person_id="alice", issued_by="router")
    outcome = await router.apply([stale, check], T0 + MINUTE)
    [rejected] = outcome.rejections
    assert (rejected.command_id, rejected.code) == ("autoresolve-x", Rejection.outdated)
    subjects = {m.msg_id: m.subject for m in outcome.outgoing}
    assert subjects["outcome:avail-alice-1"] == "sh.result.person.alice.applied"
    assert subjects["outcome:autoresolve-x"] == f"sh.result.tenant.{TENANT}.rejected"


async def test_a_person_freed_who_also_serves_another_tenant_has_a_check_sent_for_it() -> None:
    """A reply frees alice in acme; her queue in kettle, a tenant this batch did not load, is
    filled by a check of her availability in a unit of work of its own."""
    world = build_world([Person("alice")])
    repo = repository(world)
    kettle = ids.team_id(tenant_id="kettle", slug="care")
    repo.state.teams[kettle] = Team(kettle, "kettle", "care", ["alice"])
    router = service(repo)
    await opened(router, world)
    reply = message(world, thread="t1", outbound=True, external_id="r1", at=T0 + MINUTE)
    outcome = await router.route([reply], T0 + MINUTE)
    checks = [m for m in outcome.outgoing if m.subject == "sh.cmd.person.alice.check_availability"]
    assert len(checks) == 1
    command_id = json.loads(checks[0].payload)["command_id"]
    assert command_id.startswith("freed-") and command_id.endswith("-alice")
    assert outcome.outgoing[-1] == checks[0]  # after the events and the timers


async def test_a_freed_persons_check_has_an_id_of_its_own_that_fits_whatever_their_id() -> None:
    """The check's id is its `Nats-Msg-Id` and the key it is applied once by: the whole of a
    fresh id, never a part that another router or a restarted one could make again; a person
    id of 63 characters still leaves it within a command id's 64."""
    long = "a" * 63
    world = build_world([Person(long)])
    repo = repository(world)
    kettle = ids.team_id(tenant_id="kettle", slug="care")
    repo.state.teams[kettle] = Team(kettle, "kettle", "care", [long])
    router = service(repo)
    made = []
    for thread in ("t1", "t2"):
        await opened(router, world, thread=thread)
        reply = message(world, thread=thread, outbound=True, external_id=f"r-{thread}", at=T0 + MINUTE)
        outcome = await router.route([reply], T0 + MINUTE)
        [check] = [m for m in outcome.outgoing if m.subject == f"sh.cmd.person.{long}.check_availability"]
        made.append(json.loads(check.payload)["command_id"])
    assert all(len(c) <= 64 and c.startswith("freed-") for c in made)
    assert made[0] != made[1] and made[0][6:38] != made[1][6:38]  # two whole fresh ids


async def test_events_carry_the_tenants_configuration_version() -> None:
    world = build_world([Person("alice")])
    world.tenants[TENANT].config_version = 7
    outcome = await service(repository(world)).route([message(world, thread="t1", external_id="m1")], T0)
    versions = {type(e.event).__name__: getattr(e.event, "config_version", None) for e in outcome.events}
    assert versions == {"ConversationOpened": 7, "ConversationAssigned": 7, "DeadlineChanged": 7}


async def run_day(repo: MemoryRepository, world: World) -> list[bytes]:
    """A small day of routing: messages, a reply, commands accepted and refused."""
    router = service(repo, ids=CountingIds())
    batch = [
        message(world, thread="t1", author="ann", external_id="m1", at=T0),
        message(world, thread="t2", author="bea", external_id="m2", at=T0),
        message(world, thread="t1", author="ann", external_id="m3", at=T0 + MINUTE),
        message(world, thread="t1", outbound=True, external_id="r1", at=T0 + 2 * MINUTE),
    ]
    first = await router.route(batch, T0 + 3 * MINUTE)
    cid = next(e.event.conversation_id for e in first.events if isinstance(e.event, ConversationOpened))
    commands: list[AnyCommand] = [
        Claim(command_id="c-0000001", tenant_id=TENANT, conversation_id=cid, person_id="bob", issued_at=T0),
        Resolve(command_id="c-0000002", tenant_id=TENANT, conversation_id="0" * 32, issued_at=T0),
        SetStatus(command_id="c-0000003", person_id="alice", status="offline", issued_at=T0),
    ]
    second = await router.apply(commands, T0 + 4 * MINUTE)
    return [serialized(first), serialized(second)]


async def test_the_same_input_with_the_same_clock_and_ids_gives_the_same_bytes() -> None:
    world = build_world([Person("alice", capacity=1), Person("bob")])
    runs = []
    for _ in range(2):
        runs.append(await run_day(repository(world), world))
    assert runs[0] == runs[1]
    assert b"outcome:c-0000002" in runs[0][1]


async def test_mark_responded_publishes_the_reply_and_an_outcome_naming_who_said_so_and_who_answered() -> (
    None
):
    world = build_world([Person("alice"), Person("bob")])
    repo = repository(world)
    router = service(repo)
    cid = await opened(router, world)
    sent = MarkResponded(
        command_id="mark-0001",
        tenant_id=TENANT,
        conversation_id=cid,
        person_id="bob",
        note="called them",
        issued_by="kai",
        issued_at=T0 + 4 * MINUTE,
    )
    command = command_adapter.validate_json(sent.model_dump_json())  # as it comes off the stream
    assert subject_of(command) == f"sh.cmd.conv.{TENANT}.{cid}.mark_responded"

    outcome = await router.apply([command], T0 + 5 * MINUTE)

    assert [m.subject for m in outcome.outgoing] == [
        f"sh.conv.{TENANT}.{cid}.responded",
        f"sh.deadline.{TENANT}.{cid}",
        f"sh.result.tenant.{TENANT}.applied",
    ]
    responded, cleared, applied = (json.loads(m.payload) for m in outcome.outgoing)
    assert (responded["interaction_id"], responded["responded_at"]) == ("", "2026-05-20T10:04:00Z")
    assert (cleared["due_at"], cleared["reason"]) == (None, "responded")
    assert (applied["issued_by"], applied["person_id"], applied["summary"]) == (
        "kai",
        "bob",
        f"{cid[:8]}… marked responded by kai (answered by bob): called them",
    )
    assert repo.state.conversations[cid].state == "responded"
    assert repo.state.people["alice"].load == 0
    assert repo.state.continuity == {("acme-x", "ann"): "bob"}
