"""notify's application service against the in-memory repository, with fake channels: what
goes out (alerts, assignment notices, operator alerts), the events that tell of it, and the
acknowledge command. Runs in well under a second."""

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import replace
from datetime import timedelta
from typing import Any, TypeVar

import pytest

from services.notify.decisions import AckOutcome, Preferences
from services.notify.memory import MemoryRepository
from services.notify.ports import Recipient
from services.notify.senders import email_of
from shared.commands import Acknowledge
from shared.events import ConnectorProblem, ConversationAssigned, Platform
from tests.notify_world import LI, T0, World, context, deadline, events_of, fired, memory_world

C1, C2, C3 = "a" * 32, "b" * 32, "c" * 32
T = TypeVar("T")


def run(scenario: Callable[[], Coroutine[Any, Any, T]]) -> T:
    return asyncio.run(scenario())


OPERATOR = "ops@example.com"


def acknowledge(cid: str, version: int, command_id: str = "cmd00001", tenant: str = "acme") -> Acknowledge:
    return Acknowledge(
        tenant_id=tenant, conversation_id=cid, deadline_version=version, person_id="maria",
        command_id=command_id, issued_by="maria", issued_at=T0,
    )  # fmt: skip


def assigned(
    cid: str, owner: str | None, *, event_id: str = "e" * 32, team: str | None = "support", **changes: object
) -> ConversationAssigned:
    values: dict[str, object] = {
        "event_id": event_id, "occurred_at": T0, "tenant_id": "acme", "conversation_id": cid,
        "account_id": "acme-fb", "team_id": team, "owner_id": owner, "reason": "rule vip, step 1: the lead",
        "assigned_at": T0, "step": "match", **changes,
    }  # fmt: skip
    return ConversationAssigned.model_validate(values)


def assignment_world(*channels: str, **options: object) -> World:
    """C1 and C2 known; maria asked to hear of assignments on `channels`."""
    repository = MemoryRepository(
        conversations={c: context(c) for c in (C1, C2)},
        preferences_of={"maria": Preferences({"assigned": channels})} if channels else {},
    )
    return World(repository, **options)  # type: ignore[arg-type]


def connector_problem(*, problem: str = "failing", event_id: str = "f" * 32) -> ConnectorProblem:
    return ConnectorProblem.model_validate(
        {
            "event_id": event_id, "occurred_at": T0, "tenant_id": "acme", "account_id": "acme-fb",
            "platform": Platform.facebook, "problem": problem, "detail": "HTTP 401: the token was revoked",
            "since": T0 - timedelta(hours=1),
        }
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


def test_the_whole_team_gets_one_email_when_nobody_owns_the_conversation() -> None:
    async def scenario() -> None:
        world = memory_world(C1)
        known = world.repository
        assert isinstance(known, MemoryRepository)
        known.conversations[C1] = replace(context(C1), owner=None)
        await world.service.deadlines_changed([deadline(C1, 1, T0)])
        outcome = await world.fire(fired(C1, 1))
        [message] = world.email.sent
        assert [r.id for r in message.to] == ["li", "maria"]  # in the order of their deliveries
        email = email_of(message, sender="StayHuman <alerts@acme.example>")
        assert email["To"] == "Li Wei <li@example.com>, Maria Lopez <maria@example.com>"
        assert email["Message-ID"] == f"<overdue.{C1}.v1@acme.example>"
        said = events_of(outcome)
        assert [(e["type"], e["person_id"], e["channel"]) for e in said] == [
            ("alert.sent", "li", "email"),
            ("alert.sent", "maria", "email"),
        ]  # one delivery per person, both by the one email

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
        # another tenant naming acme's conversation: unknown to it, and nothing changes for acme
        outcome, stranger = await world.service.acknowledge(acknowledge(C1, 2, "cmd00009", tenant="globex"))
        [rejected] = events_of(stranger)
        assert outcome is AckOutcome.unknown and rejected["code"] == "unknown_conversation"
        assert rejected["subject"] == "sh.result.tenant.globex.rejected"
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


# -- assignment notices -------------------------------------------------------------------------


def test_an_assignment_tells_the_new_owner_on_each_channel_they_chose() -> None:
    async def scenario() -> None:
        world = assignment_world("email", "push")
        outcome = await world.service.conversation_assigned(assigned(C1, "maria"), last_try=False)
        for channel in (world.email, world.push):
            [message] = channel.sent
            assert message.to == (Recipient("Maria Lopez", "maria@example.com", "maria"),)
            assert message.subject == "[Acme] New on Facebook for you: Dana Reyes"
            assert message.text == (
                "Dana Reyes: Where is my order?\n\nWhy you: rule vip, step 1: the lead\n\n"
                "Open the conversation: https://facebook.example/p/1\n"
            )
            assert message.key == f"assigned.{'e' * 32}"
        said = events_of(outcome)
        assert [(e["type"], e["channel"]) for e in said] == [("alert.sent", "email"), ("alert.sent", "push")]
        for e in said:
            assert e["subject"] == "sh.alert.acme.sent" and e["alert_kind"] == "assignment"
            assert e["person_id"] == "maria" and e["conversation_id"] == C1 and e["step"] == "assigned"
        assert said[0]["detail"] == f"<assigned.{'e' * 32}@example.com>"
        assert outcome.retry_in is None

    run(scenario)


def test_a_redelivered_assignment_notifies_nobody_twice() -> None:
    async def scenario() -> None:
        world = assignment_world("email", "push")
        await world.service.conversation_assigned(assigned(C1, "maria"), last_try=False)
        again = await world.service.conversation_assigned(assigned(C1, "maria"), last_try=False)
        assert events_of(again) == [] and again.retry_in is None
        assert len(world.email.sent) == 1 and len(world.push.sent) == 1
        # a later assignment of the same conversation to her is news of its own
        later = await world.service.conversation_assigned(
            assigned(C1, "maria", event_id="d" * 32, previous_owner_id="li"), last_try=False
        )
        assert len(events_of(later)) == 2 and len(world.email.sent) == 2

    run(scenario)


def test_push_only_without_a_subscription_fails_for_good_at_once() -> None:
    async def scenario() -> None:
        world = assignment_world("push")
        world.push.unreachable = {"maria"}
        outcome = await world.service.conversation_assigned(assigned(C1, "maria"), last_try=False)
        [failed] = events_of(outcome)
        assert failed["type"] == "alert.failed" and failed["subject"] == "sh.alert.acme.failed"
        assert failed["alert_kind"] == "assignment" and failed["channel"] == "push"
        assert failed["person_id"] == "maria" and failed["final"] is True and failed["retry_at"] is None
        assert failed["error"] == "nowhere to reach maria by push"
        assert outcome.retry_in is None  # retrying cannot help
        assert world.push.sent == [] and world.email.sent == []  # she asked for push only
        again = await world.service.conversation_assigned(assigned(C1, "maria"), last_try=False)
        assert events_of(again) == []

    run(scenario)


def test_a_failed_channel_is_retried_alone_and_the_one_that_went_is_not_sent_again() -> None:
    async def scenario() -> None:
        world = assignment_world("email", "push")
        world.push.failing = True
        first = await world.service.conversation_assigned(assigned(C1, "maria"), last_try=False)
        sent, failed = events_of(first)
        assert sent["type"] == "alert.sent" and sent["channel"] == "email"
        assert failed["type"] == "alert.failed" and failed["channel"] == "push" and failed["final"] is False
        assert failed["retry_at"] == (T0 + timedelta(seconds=5)).isoformat().replace("+00:00", "Z")
        assert first.retry_in == 5.0
        world.push.failing = False
        world.clock.at = T0 + timedelta(seconds=5)
        second = await world.service.conversation_assigned(assigned(C1, "maria"), last_try=False)
        [pushed] = events_of(second)
        assert pushed["type"] == "alert.sent" and pushed["channel"] == "push"
        assert pushed["msg_id"] != sent["msg_id"] and second.retry_in is None
        assert len(world.email.sent) == 1 and len(world.push.sent) == 1

    run(scenario)


def test_an_assignment_failing_on_its_last_try_gives_up() -> None:
    async def scenario() -> None:
        world = assignment_world("email")
        world.email.failing = True
        outcome = await world.service.conversation_assigned(assigned(C1, "maria"), last_try=True)
        [failed] = events_of(outcome)
        assert failed["type"] == "alert.failed" and failed["final"] is True and failed["retry_at"] is None
        assert "SMTPServerDisconnected" in str(failed["error"]) and outcome.retry_in is None

    run(scenario)


@pytest.mark.parametrize(
    ("event", "channels"),
    [
        (assigned(C1, None), ("email",)),  # to the team's queue: nobody owns it
        (assigned(C1, None, team=None), ("email",)),
        (assigned(C1, "maria", previous_owner_id="maria"), ("email",)),  # no change
        (assigned(C1, "maria", assigned_at=T0 - timedelta(minutes=11)), ("email",)),  # a backlog
        (assigned(C1, "maria"), ()),  # she asked for no notices
        (assigned(C1, "ghost"), ("email",)),  # nobody notify knows
    ],
)
def test_an_assignment_that_is_no_news_tells_nobody(
    event: ConversationAssigned, channels: tuple[str, ...]
) -> None:
    async def scenario() -> None:
        world = assignment_world(*channels)
        outcome = await world.service.conversation_assigned(event, last_try=False)
        assert events_of(outcome) == [] and outcome.retry_in is None
        assert world.email.sent == [] and world.push.sent == []

    run(scenario)


def test_a_batch_of_assignments_gets_the_channels_each_owner_asked_for() -> None:
    async def scenario() -> None:
        world = assignment_world("email", "push")
        batch = [
            assigned(C1, "maria"),
            assigned(C2, "li"),  # li asked for nothing
            assigned(C1, "maria", previous_owner_id="maria"),  # no change
            assigned(C2, "maria", assigned_at=T0 - timedelta(minutes=11)),  # a backlog
            assigned(C1, "ghost"),  # nobody notify knows
            assigned(C1, None),
            assigned(C2, "maria", event_id="f" * 32),
        ]
        channels = await world.service.assignment_channels(batch)
        assert channels == [("email", "push"), (), (), (), (), (), ("email", "push")]

    run(scenario)


def test_an_assignment_to_someone_not_on_the_conversation_s_team_tells_nobody() -> None:
    async def scenario() -> None:
        world = assignment_world("email")
        known = world.repository
        assert isinstance(known, MemoryRepository)
        known.conversations[C2] = replace(context(C2), owner=LI, team=[LI], people={"li": LI})
        for _ in range(2):  # nor on a redelivery
            outcome = await world.service.conversation_assigned(assigned(C2, "maria"), last_try=False)
            assert events_of(outcome) == [] and outcome.retry_in is None and world.email.sent == []

    run(scenario)


# -- operator alerts ----------------------------------------------------------------------------


def test_a_connector_problem_tells_the_operator() -> None:
    async def scenario() -> None:
        world = memory_world(C1, operator=OPERATOR)
        outcome = await world.service.connector_problem(connector_problem(), attempt=1, last_try=False)
        [message] = world.email.sent
        assert message.to == (Recipient("", OPERATOR),)
        assert message.subject == "[StayHuman] Acme: the Facebook connector of Acme keeps failing"
        assert message.text.startswith(
            "The Facebook account Acme (acme-fb) of Acme keeps failing since 2026-11-26 09:00:00 UTC."
        )
        assert "HTTP 401: the token was revoked" in message.text and world.push.sent == []
        [sent] = events_of(outcome)
        assert sent["type"] == "alert.sent" and sent["subject"] == "sh.alert.acme.sent"
        assert sent["alert_kind"] == "connector" and sent["channel"] == "email" and sent["step"] == "failing"
        assert sent["person_id"] is None and sent["conversation_id"] is None
        assert sent["msg_id"] == f"alert:connector:{'f' * 32}:1:sent" and outcome.retry_in is None
        silent = await world.service.connector_problem(
            connector_problem(problem="silent", event_id="9" * 32), attempt=1, last_try=False
        )
        assert world.email.sent[-1].subject.endswith("the Facebook connector of Acme has gone silent")
        assert events_of(silent)[0]["step"] == "silent"

    run(scenario)


def test_an_operator_alert_retries_an_outage_and_gives_up_on_the_last_try() -> None:
    async def scenario() -> None:
        world = memory_world(C1, operator=OPERATOR)
        world.email.failing = True
        first = await world.service.connector_problem(connector_problem(), attempt=1, last_try=False)
        [failed] = events_of(first)
        assert failed["type"] == "alert.failed" and failed["alert_kind"] == "connector"
        assert failed["final"] is False and failed["retry_at"] == "2026-11-26T10:00:05Z"
        assert first.retry_in == 5.0
        last = await world.service.connector_problem(connector_problem(), attempt=3, last_try=True)
        [given_up] = events_of(last)
        assert given_up["final"] is True and given_up["retry_at"] is None and last.retry_in is None
        assert given_up["msg_id"] == f"alert:connector:{'f' * 32}:3:failed"
        # out of tries, the problem is kept on the dead letter: replaying it tells the operator again
        [kept] = last.dead_letters
        assert kept.subject == "sh.ops.acme.acme-fb" and "email to" in kept.error
        assert ConnectorProblem.model_validate_json(kept.data) == connector_problem()
        assert first.dead_letters == ()
        world.email.failing = False  # a redelivery that gets through
        [sent] = events_of(
            await world.service.connector_problem(connector_problem(), attempt=2, last_try=False)
        )
        assert sent["type"] == "alert.sent" and len(world.email.sent) == 1

    run(scenario)


def test_an_operator_address_rejected_for_good_is_not_retried() -> None:
    async def scenario() -> None:
        world = memory_world(C1, operator=OPERATOR)
        world.email.unreachable = {OPERATOR}
        outcome = await world.service.connector_problem(connector_problem(), attempt=1, last_try=False)
        [failed] = events_of(outcome)
        assert failed["type"] == "alert.failed" and failed["final"] is True and failed["retry_at"] is None
        assert outcome.retry_in is None and world.email.sent == []
        assert outcome.dead_letters == ()  # replaying would be refused the same way

    run(scenario)


def test_without_an_operator_address_a_connector_problem_is_only_logged() -> None:
    async def scenario() -> None:
        world = memory_world(C1)
        outcome = await world.service.connector_problem(connector_problem(), attempt=1, last_try=False)
        assert events_of(outcome) == [] and outcome.retry_in is None and world.email.sent == []

    run(scenario)


def test_an_assignment_notice_is_the_same_byte_for_byte_from_the_same_input_clock_and_ids() -> None:
    async def scenario(world: World) -> list[object]:
        world.push.failing = True
        said: list[object] = []
        for _ in range(2):  # the push fails, then goes on the redelivery
            outcome = await world.service.conversation_assigned(assigned(C1, "maria"), last_try=False)
            said += [(b.id, e.subject, e.msg_id, e.payload) for b in outcome.events for e in b.envelopes]
            said.append(outcome.retry_in)
            world.push.failing = False
            world.clock.at += timedelta(seconds=5)
        said += [
            (m.to, m.subject, m.text, m.summary, m.key, m.sent_at) for m in world.email.sent + world.push.sent
        ]
        return said

    first = asyncio.run(scenario(assignment_world("email", "push")))
    second = asyncio.run(scenario(assignment_world("email", "push")))
    assert first == second and len(first) == 7
