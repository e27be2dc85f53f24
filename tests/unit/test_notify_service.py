"""notify's application service against the in-memory repository, with fake channels: what
goes out, the events that tell of it, and the acknowledge command. Runs in well under a second."""

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TypeVar

from services.notify.decisions import AckOutcome
from shared.commands import Acknowledge
from tests.notify_world import T0, World, deadline, events_of, fired, memory_world

C1, C2, C3 = "a" * 32, "b" * 32, "c" * 32
T = TypeVar("T")


def run(scenario: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(scenario())


def acknowledge(cid: str, version: int, command_id: str = "cmd00001") -> Acknowledge:
    return Acknowledge(
        tenant_id="acme", conversation_id=cid, deadline_version=version, person_id="maria",
        command_id=command_id, issued_by="maria", issued_at=T0,
    )  # fmt: skip


def test_a_deadline_arms_its_timer_and_a_newer_version_moves_it_an_older_one_never() -> None:
    async def scenario() -> None:
        world = memory_world(C1)
        await world.service.deadlines_changed([deadline(C1, 1, T0 + timedelta(minutes=30))])
        await world.service.deadlines_changed([deadline(C1, 3, T0 + timedelta(minutes=45))])
        await world.service.deadlines_changed([deadline(C1, 2, T0 + timedelta(minutes=5))])
        assert [(t.deadline_version, t.at) for t in world.scheduler.armed] == [
            (1, T0 + timedelta(minutes=30)),
            (3, T0 + timedelta(minutes=45)),
        ]
        await world.service.deadlines_changed([deadline(C1, 4, None)])  # answered
        assert world.scheduler.cancelled == [("acme", C1)]

    run(scenario)


def test_an_alert_sent_gives_alert_sent_and_goes_once() -> None:
    async def scenario() -> None:
        world = memory_world(C1)
        await world.service.deadlines_changed([deadline(C1, 1, T0)])
        world.clock.at = T0 + timedelta(seconds=1)
        outcome = await world.fire(fired(C1, 1))
        assert [m.subject for m in world.email.sent] == [
            "[Acme] Overdue on Facebook: Dana Reyes has waited 1 second"
        ]
        assert world.email.sent[0].to[0].id == "maria" and world.email.sent[0].key == f"overdue.{C1}.v1"
        [sent] = events_of(outcome)
        assert sent["type"] == "alert.sent" and sent["subject"] == "sh.alert.acme.sent"
        assert sent["alert_kind"] == "breach" and sent["person_id"] == "maria" and sent["channel"] == "email"
        assert sent["msg_id"] == f"alert:{C1}:1:breach|email|maria:1:sent"
        again = await world.fire(fired(C1, 1))  # a redelivered timer
        assert len(world.email.sent) == 1 and events_of(again) == []

    run(scenario)


def test_an_smtp_failure_retries_then_gives_up_with_a_dead_letter() -> None:
    async def scenario() -> None:
        world = memory_world(C1, max_attempts=2)
        world.email.failing = True
        await world.service.deadlines_changed([deadline(C1, 1, T0)])
        [first] = events_of(await world.fire(fired(C1, 1)))
        assert first["type"] == "alert.failed" and first["final"] is False and first["retry_at"]
        assert "SMTPServerDisconnected" in str(first["error"])
        retry = world.scheduler.armed[-1]
        assert retry.step == "retry" and retry.attempt == 1
        world.clock.at = T0 + timedelta(minutes=5)
        outcome = await world.fire(retry)
        [last] = events_of(outcome)
        assert last["type"] == "alert.failed" and last["final"] is True and last["retry_at"] is None
        assert len(outcome.dead_letters) == 1 and "email to maria" in outcome.dead_letters[0].error
        world.email.failing = False  # replaying the dead letter tries again
        replay = await world.fire(fired(C1, 1, step="retry"))
        assert [e["type"] for e in events_of(replay)] == ["alert.sent"] and len(world.email.sent) == 1

    run(scenario)


def test_a_burst_holds_what_comes_after_the_first_and_sends_one_digest() -> None:
    async def scenario() -> None:
        world = memory_world(C1, C2, C3, group_window=timedelta(seconds=60), group_after=1)
        await world.service.deadlines_changed([deadline(c, 1, T0) for c in (C1, C2, C3)])
        for c in (C1, C2, C3):
            await world.fire(fired(c, 1))
        assert len(world.email.sent) == 1  # the rest wait for the end of the window
        assert world.scheduler.groups[-1] == ("maria", "email", T0 + timedelta(seconds=60))
        world.clock.at = T0 + timedelta(seconds=60)
        outcome = await world.service.window_ended("maria", "email")
        digest = world.email.sent[-1]
        assert digest.kind == "digest" and digest.subject.startswith("[Acme] 2 conversations need you")
        assert sorted(str(e["conversation_id"]) for e in events_of(outcome)) == [
            C2,
            C3,
        ]  # one per conversation
        assert {e["alert_kind"] for e in events_of(outcome)} == {"digest"}

    run(scenario)


def test_acknowledge_applies_once_and_says_so() -> None:
    async def scenario() -> None:
        world = memory_world(C1)
        await world.service.deadlines_changed([deadline(C1, 2, T0)])
        outcome, applied = await world.service.acknowledge(acknowledge(C1, 2))
        assert outcome is AckOutcome.acknowledged
        assert [(e["subject"], e["type"]) for e in events_of(applied)] == [
            ("sh.alert.acme.acknowledged", "alert.acknowledged"),
            ("sh.result.tenant.acme.applied", "command.applied"),
        ]
        # the same command again (a redelivery) is answered the same, byte for byte
        assert (await world.service.acknowledge(acknowledge(C1, 2)))[1] == applied
        outcome, twice = await world.service.acknowledge(acknowledge(C1, 2, "cmd00002"))
        [rejected] = events_of(twice)
        assert outcome is AckOutcome.already and rejected["code"] == "already_done"
        outcome, old = await world.service.acknowledge(acknowledge(C1, 1, "cmd00003"))
        [rejected] = events_of(old)
        assert rejected["subject"] == "sh.result.tenant.acme.rejected" and rejected["code"] == "outdated"
        assert rejected["reason"] == "the deadline moved on: it was answered or changed"
        _, unknown = await world.service.acknowledge(acknowledge(C2, 1, "cmd00004"))
        assert events_of(unknown)[0]["code"] == "unknown_conversation"

    run(scenario)


def test_an_acknowledged_deadline_escalates_no_further_but_its_breach_still_comes() -> None:
    async def scenario() -> None:
        world = memory_world(C1)
        await world.service.deadlines_changed([deadline(C1, 1, T0)])
        await world.service.acknowledge(acknowledge(C1, 1))
        await world.fire(fired(C1, 1))
        assert len(world.email.sent) == 1  # the owner's breach
        assert events_of(await world.fire(fired(C1, 1, step="escalation-1"))) == []
        assert len(world.email.sent) == 1

    run(scenario)


def test_the_same_input_clock_and_ids_give_the_same_outcome_byte_for_byte() -> None:
    async def scenario(world: World) -> list[bytes]:
        world.email.failing = True
        await world.service.deadlines_changed([deadline(C1, 1, T0), deadline(C2, 1, T0)])
        said = []
        for c in (C1, C2):
            outcome = await world.fire(fired(c, 1))
            said += [e.payload for batch in outcome.events for e in batch.envelopes]
        world.email.failing = False
        retry = await world.fire(world.scheduler.armed[-1])
        said += [e.payload for batch in retry.events for e in batch.envelopes]
        _, acked = await world.service.acknowledge(acknowledge(C1, 1))
        said += [e.payload for e in acked.replies]
        said += [t.model_dump_json().encode() for t in world.scheduler.armed]
        return said

    first = asyncio.run(scenario(memory_world(C1, C2)))
    second = asyncio.run(scenario(memory_world(C1, C2)))
    assert first == second and len(first) > 5
