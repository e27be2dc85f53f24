"""The action endpoints: each action, asked by each role, becomes the command the router or notify
applies, or is refused with a sentence naming the input at fault; nothing is sent on a refusal.

The agency is test_api_reads.py's (kettle: care led by rosa with kai and sam, social with sid;
northwind: care with sam and nils; ada agency admin, tina kettle's admin, vera its client
viewer). Commands are kept in memory (`KeptCommands`), except in the last tests, which send
them to a real nats-server through `JetStreamCommands` and read them back from SH_COMMANDS.
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import nats
import pytest
from nats.aio.client import Client

from services.api.actions import CommandNotSent, JetStreamCommands, KeptCommands
from shared import subjects
from shared.commands import (
    Acknowledge,
    Claim,
    ConversationCommand,
    MarkResponded,
    Pause,
    Reassign,
    Resolve,
    Resume,
    SetStatus,
    command_adapter,
    notify_command_adapter,
    subject_of,
)
from shared.db.models import CommandOutcomeRow
from shared.jetstream import MSG_ID, StreamSettings, ensure_streams, stream_configs
from shared.preflight import AnyPreparedCommand
from stayhuman.natsserver import EmbeddedNats
from tests.api_world import Clock, World, bearer, build_api, client
from tests.integration.test_api_reads import Agency, T, build_agency


@pytest.fixture
async def agency(database_url: str) -> AsyncIterator[Agency]:
    async with World(database_url) as world:
        yield await build_agency(world)


@pytest.fixture
def kept() -> KeptCommands:
    return KeptCommands()


@pytest.fixture
async def http(database_url: str, kept: KeptCommands) -> AsyncIterator[httpx.AsyncClient]:
    async with client(build_api(database_url, commands=kept, clock=Clock(T))) as http:
        yield http


def accepted(response: httpx.Response) -> str:
    """The command id of a 202, after checking the answer says where its outcome will be."""
    assert response.status_code == 202, response.text
    body = response.json()
    assert body == {
        "command_id": body["command_id"],
        "status": "pending",
        "outcome_url": f"/api/commands/{body['command_id']}",
    }
    return str(body["command_id"])


def refused(response: httpx.Response, status: int, field: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    named = {body.get("field")} | {problem["field"] for problem in body.get("problems", [])}
    assert field in named, body
    return str(body.get("error"))


# -- what each action sends -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("who", "action", "body", "kind", "expected"),
    [
        ("tina", "claim", {"person": "sam"}, Claim, {"person_id": "sam"}),
        ("kai", "claim", None, Claim, {"person_id": "kai"}),
        (
            "tina",
            "reassign",
            {"person": "rosa", "reason": "speaks Portuguese"},
            Reassign,
            {"person_id": "rosa", "team": None, "reason": "speaks Portuguese"},
        ),
        (
            "tina",
            "reassign",
            {"team": "social"},
            Reassign,
            {"person_id": None, "team": "social", "reason": ""},
        ),
        (
            "tina",
            "pause",
            {"reason": "waiting for the receipt"},
            Pause,
            {"reason": "waiting for the receipt"},
        ),
        ("kai", "resume", None, Resume, {}),
        ("tina", "resolve", {"reason": "refunded"}, Resolve, {"reason": "refunded"}),
        (
            "tina",
            "mark-responded",
            {"person": "kai", "note": "called them"},
            MarkResponded,
            {"person_id": "kai", "note": "called them"},
        ),
        ("kai", "mark-responded", {}, MarkResponded, {"person_id": None, "note": ""}),
        ("kai", "acknowledge", None, Acknowledge, {"person_id": "kai", "deadline_version": 3}),
    ],
)
async def test_each_action_sends_its_command(
    agency: Agency,
    http: httpx.AsyncClient,
    kept: KeptCommands,
    who: str,
    action: str,
    body: dict[str, Any] | None,
    kind: type,
    expected: dict[str, Any],
) -> None:
    conversation = await agency.conversation(agency.kettle_fb, owner_id="kai")
    await agency.world.deadline(conversation, due_at=T + timedelta(minutes=30), version=3)
    response = await http.post(
        f"/api/conversations/{conversation}/{action}", json=body, headers=agency.as_(who)
    )
    command_id = accepted(response)
    [command] = kept.sent
    assert isinstance(command, kind) and isinstance(command, ConversationCommand)
    assert command.model_dump(include=set(expected)) == expected
    assert (command.tenant_id, command.conversation_id) == ("kettle", conversation)
    assert (command.command_id, command.issued_by) == (command_id, who)


async def test_claiming_for_oneself_needs_serving_the_tenant(
    agency: Agency, http: httpx.AsyncClient, kept: KeptCommands
) -> None:
    """tina administers kettle but serves in none of its teams: she gives work, she takes none."""
    conversation = await agency.conversation(agency.kettle_fb)
    response = await http.post(f"/api/conversations/{conversation}/claim", headers=agency.as_("tina"))
    assert "not a member of any team of tenant 'kettle'" in refused(response, 400, "person")
    assert kept.sent == []


async def test_setting_a_status_sends_set_status(
    agency: Agency, http: httpx.AsyncClient, kept: KeptCommands
) -> None:
    command_id = accepted(
        await http.post("/api/people/kai/status", json={"status": "away"}, headers=agency.as_("kai"))
    )
    assert kept.sent == [
        SetStatus(
            person_id="kai",
            status="away",
            issued_by="kai",
            command_id=command_id,
            issued_at=kept.sent[0].issued_at,
        )
    ]


async def test_a_client_given_command_id_is_the_commands_id_so_a_retry_does_it_once(
    agency: Agency, http: httpx.AsyncClient, kept: KeptCommands
) -> None:
    conversation = await agency.conversation(agency.kettle_fb)
    for _ in range(2):  # the answer was lost: the client sends it again
        response = await http.post(
            f"/api/conversations/{conversation}/claim",
            json={"command_id": "retry-7f3a2b"},
            headers=agency.as_("kai"),
        )
        assert accepted(response) == "retry-7f3a2b"
    assert [command.command_id for command in kept.sent] == ["retry-7f3a2b", "retry-7f3a2b"]


# -- refusals ---------------------------------------------------------------------------------------


async def test_what_preflight_refuses_is_a_400_naming_the_field_and_nothing_is_sent(
    agency: Agency, http: httpx.AsyncClient, kept: KeptCommands
) -> None:
    conversation = await agency.conversation(agency.kettle_fb, owner_id="kai")  # no deadline
    path = f"/api/conversations/{conversation}"
    tina = agency.as_("tina")

    assert refused(
        await http.post(f"{path}/claim", json={"person": "ghost"}, headers=tina), 400, "person"
    ) == ("no person 'ghost'")
    assert "not a member of any team of tenant 'kettle'" in refused(
        await http.post(f"{path}/claim", json={"person": "nils"}, headers=tina), 400, "person"
    )
    assert "its teams: care, social" in refused(
        await http.post(f"{path}/reassign", json={"team": "nope"}, headers=tina), 400, "team"
    )
    refused(await http.post(f"{path}/reassign", json={"reason": "no one named"}, headers=tina), 400, "person")
    assert "no running deadline" in refused(
        await http.post(f"{path}/acknowledge", headers=agency.as_("kai")), 400, "conversation"
    )
    refused(
        await http.post(f"{path}/claim", json={"command_id": "not one"}, headers=agency.as_("kai")),
        400,
        "command_id",
    )
    refused(await http.post(f"{path}/pause", json={"reason": "x" * 201}, headers=tina), 400, "reason")
    refused(await http.post(f"{path}/pause", json={"reason": "a\x00b"}, headers=tina), 400, "reason")
    refused(await http.post(f"{path}/mark-responded", json={"note": "\x1b[2J"}, headers=tina), 400, "note")
    refused(await http.post(f"{path}/claim", json={"persons": "kai"}, headers=tina), 400, "persons")
    refused(await http.post(f"{path}/claim", json={"person": "Kai Smith"}, headers=tina), 400, "person")
    refused(await http.post(f"{path}/claim?wait=11", headers=agency.as_("kai")), 400, "wait")
    refused(await http.post("/api/people/kai/status", json={"status": "asleep"}, headers=tina), 400, "status")
    refused(await http.post("/api/people/kai/status", json={}, headers=tina), 400, "status")
    refused(await http.post("/api/conversations/xyz/claim", headers=tina), 400, "conversation_id")
    assert kept.sent == []


async def test_a_cookie_without_its_csrf_token_changes_nothing(
    agency: Agency, http: httpx.AsyncClient, kept: KeptCommands
) -> None:
    conversation = await agency.conversation(agency.kettle_fb)
    response = await http.post(
        f"/api/conversations/{conversation}/claim", headers=agency.signed["kai"].cookie_only
    )
    refused(response, 403, "csrf")
    assert kept.sent == []


# -- who may do what --------------------------------------------------------------------------------


async def test_an_agent_takes_from_their_teams_queue_but_not_from_a_teammate(
    agency: Agency, http: httpx.AsyncClient, kept: KeptCommands
) -> None:
    queued = await agency.conversation(agency.kettle_fb)
    teammates = await agency.conversation(agency.kettle_fb, owner_id="sam")
    other_team = await agency.conversation(agency.kettle_social_fb)
    kai = agency.as_("kai")

    accepted(await http.post(f"/api/conversations/{queued}/claim", headers=kai))
    assert kept.sent[-1] == Claim(
        tenant_id="kettle",
        conversation_id=queued,
        person_id="kai",
        issued_by="kai",
        command_id=kept.sent[-1].command_id,
        issued_at=kept.sent[-1].issued_at,
    )
    refused(await http.post(f"/api/conversations/{teammates}/claim", headers=kai), 403, "action")
    refused(await http.post(f"/api/conversations/{teammates}/pause", headers=kai), 403, "action")
    # giving the queue's conversation to someone else is reassigning: not an agent's
    refused(
        await http.post(f"/api/conversations/{queued}/claim", json={"person": "sam"}, headers=kai),
        403,
        "action",
    )
    refused(await http.post(f"/api/conversations/{other_team}/claim", headers=kai), 404, "conversation")
    assert len(kept.sent) == 1


async def test_an_agent_may_not_reassign_even_their_own(
    agency: Agency, http: httpx.AsyncClient, kept: KeptCommands
) -> None:
    own = await agency.conversation(agency.kettle_fb, owner_id="kai")
    response = await http.post(
        f"/api/conversations/{own}/reassign", json={"person": "sam"}, headers=agency.as_("kai")
    )
    assert "you may not reassign" in refused(response, 403, "action")
    accepted(await http.post(f"/api/conversations/{own}/resolve", headers=agency.as_("kai")))
    assert [type(command) for command in kept.sent] == [Resolve]


async def test_a_team_lead_reassigns_only_within_the_teams_they_lead(
    agency: Agency, http: httpx.AsyncClient, kept: KeptCommands
) -> None:
    care = await agency.conversation(agency.kettle_fb, owner_id="kai")
    social = await agency.conversation(agency.kettle_social_fb)
    rosa = agency.as_("rosa")
    path = f"/api/conversations/{care}"

    accepted(await http.post(f"{path}/reassign", json={"person": "sam"}, headers=rosa))
    accepted(await http.post(f"{path}/reassign", json={"team": "care"}, headers=rosa))
    accepted(await http.post(f"{path}/claim", json={"person": "sam"}, headers=rosa))
    assert "to person sid" in refused(
        await http.post(f"{path}/reassign", json={"person": "sid"}, headers=rosa), 403, "action"
    )
    assert "to team social" in refused(
        await http.post(f"{path}/reassign", json={"team": "social"}, headers=rosa), 403, "action"
    )
    refused(await http.post(f"{path}/claim", json={"person": "sid"}, headers=rosa), 403, "action")
    refused(
        await http.post(f"/api/conversations/{social}/reassign", json={"team": "care"}, headers=rosa),
        404,
        "conversation",
    )
    assert [(type(c).__name__, getattr(c, "person_id", None)) for c in kept.sent] == [
        ("Reassign", "sam"),
        ("Reassign", None),
        ("Claim", "sam"),
    ]
    # kettle's admin gives anything of kettle to anyone serving kettle
    accepted(await http.post(f"{path}/reassign", json={"person": "sid"}, headers=agency.as_("tina")))
    accepted(await http.post(f"{path}/reassign", json={"team": "social"}, headers=agency.as_("tina")))
    assert len(kept.sent) == 5


async def test_who_may_set_whose_status(agency: Agency, http: httpx.AsyncClient, kept: KeptCommands) -> None:
    away = {"status": "away"}
    accepted(await http.post("/api/people/kai/status", json=away, headers=agency.as_("kai")))
    refused(await http.post("/api/people/rosa/status", json=away, headers=agency.as_("kai")), 403, "action")
    accepted(await http.post("/api/people/kai/status", json=away, headers=agency.as_("rosa")))
    refused(await http.post("/api/people/sid/status", json=away, headers=agency.as_("rosa")), 404, "person")
    refused(await http.post("/api/people/nils/status", json=away, headers=agency.as_("tina")), 404, "person")
    refused(await http.post("/api/people/kai/status", json=away, headers=agency.as_("vera")), 404, "person")
    accepted(await http.post("/api/people/nils/status", json=away, headers=agency.as_("ada")))
    assert [(c.person_id, c.issued_by) for c in kept.sent if isinstance(c, SetStatus)] == [
        ("kai", "kai"),
        ("kai", "rosa"),
        ("nils", "ada"),
    ]


async def test_a_token_acts_for_its_tenant_and_names_the_person(
    agency: Agency, http: httpx.AsyncClient, kept: KeptCommands
) -> None:
    conversation = await agency.conversation(agency.kettle_fb)
    await agency.world.deadline(conversation, due_at=T + timedelta(minutes=30))
    crm = bearer(await agency.world.token_for("kettle", name="crm"))
    reports = bearer(await agency.world.token_for("kettle", "client_viewer", name="bi"))
    path = f"/api/conversations/{conversation}"

    refused(await http.post(f"{path}/claim", headers=crm), 400, "person")
    accepted(await http.post(f"{path}/claim", json={"person": "kai"}, headers=crm))  # no CSRF for a token
    assert (kept.sent[-1].issued_by, kept.sent[-1].person_id) == ("token:crm", "kai")  # type: ignore[union-attr]
    assert "a token is no person" in refused(await http.post(f"{path}/acknowledge", headers=crm), 403, "auth")
    refused(await http.post(f"{path}/claim", json={"person": "kai"}, headers=reports), 404, "conversation")
    assert len(kept.sent) == 1


# -- waiting for the outcome, and NATS away ---------------------------------------------------------


@dataclass
class AnsweringCommands(KeptCommands):
    """Keeps each command and, a moment later, writes its outcome as the timeline consumer would
    after the router applied it (`answer` False: the router never answers)."""

    world: World | None = None
    answer: bool = True

    async def send(self, command: AnyPreparedCommand) -> None:
        await super().send(command)
        if self.answer:
            asyncio.get_running_loop().call_later(0.3, lambda: asyncio.ensure_future(self._outcome(command)))

    async def _outcome(self, command: AnyPreparedCommand) -> None:
        assert self.world is not None
        await self.world.add(
            CommandOutcomeRow(
                command_id=command.command_id,
                tenant_id="kettle",
                conversation_id=getattr(command, "conversation_id", None),
                command_type=command.type,
                issued_by=command.issued_by,
                outcome="rejected",
                code="at_capacity",
                reason="kai is at capacity",
                at=T,
            )
        )


async def test_waiting_answers_with_the_outcome_when_it_comes_in_time(
    agency: Agency, database_url: str
) -> None:
    conversation = await agency.conversation(agency.kettle_fb)
    answering = AnsweringCommands(world=agency.world)
    async with client(build_api(database_url, commands=answering, clock=Clock(T))) as http:
        response = await http.post(
            f"/api/conversations/{conversation}/claim?wait=5", headers=agency.as_("kai")
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["status"], body["code"], body["reason"]) == (
            "rejected",
            "at_capacity",
            "kai is at capacity",
        )
        assert body["command_id"] == answering.sent[0].command_id
        assert body["command_type"] == "conversation.claim"

        answering.answer = False
        late = await http.post(f"/api/conversations/{conversation}/claim?wait=0.5", headers=agency.as_("kai"))
        accepted(late)


async def test_nats_not_storing_the_command_is_a_503_saying_it_was_not_sent(
    agency: Agency, database_url: str
) -> None:
    conversation = await agency.conversation(agency.kettle_fb)
    down = KeptCommands(failing=True)
    async with client(build_api(database_url, commands=down, clock=Clock(T))) as http:
        response = await http.post(
            f"/api/conversations/{conversation}/claim",
            json={"command_id": "again-0001"},
            headers=agency.as_("kai"),
        )
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    body = response.json()
    assert body["field"] == "nats" and body["command_id"] == "again-0001"
    assert body["error"].startswith("the command was not sent") and "again-0001" in body["error"]
    assert down.sent == []


async def test_commands_reach_the_commands_stream_once_under_their_id(
    agency: Agency, database_url: str, nc: Client
) -> None:
    js = nc.jetstream()
    await ensure_streams(js, stream_configs(StreamSettings()))
    conversation = await agency.conversation(agency.kettle_fb, owner_id="kai")
    await agency.world.deadline(conversation, due_at=T + timedelta(minutes=30), version=2)
    async with client(build_api(database_url, commands=JetStreamCommands(js), clock=Clock(T))) as http:
        for _ in range(2):
            response = await http.post(
                f"/api/conversations/{conversation}/pause",
                json={"reason": "waiting for the receipt", "command_id": "pause-0001"},
                headers=agency.as_("kai"),
            )
            assert accepted(response) == "pause-0001"
        accepted(await http.post(f"/api/conversations/{conversation}/acknowledge", headers=agency.as_("kai")))

    pause = Pause(tenant_id="kettle", conversation_id=conversation, reason="x", command_id="pause-0001")
    assert (await js.stream_info(subjects.COMMANDS_STREAM)).state.messages == 2  # the retry stored once
    stored = await js.get_last_msg(subjects.COMMANDS_STREAM, subject_of(pause))
    assert stored.headers is not None and stored.headers[MSG_ID] == "cmd:pause-0001"
    command = command_adapter.validate_json(stored.data or b"")
    assert isinstance(command, Pause)
    assert (command.reason, command.issued_by, command.conversation_id) == (
        "waiting for the receipt",
        "kai",
        conversation,
    )
    ack_subject = subjects.notify_command(
        tenant_id="kettle", conversation_id=conversation, verb="acknowledge"
    )
    acknowledged = notify_command_adapter.validate_json(
        (await js.get_last_msg(subjects.COMMANDS_STREAM, ack_subject)).data or b""
    )
    assert (acknowledged.person_id, acknowledged.deadline_version) == ("kai", 2)


async def test_nats_going_away_is_a_503_and_jetstream_commands_says_not_sent(
    agency: Agency, database_url: str, nats_server: EmbeddedNats
) -> None:
    connection = await nats.connect(nats_server.url)
    try:
        sender = JetStreamCommands(connection.jetstream(), timeout=1.0)
        conversation = await agency.conversation(agency.kettle_fb)
        claim = Claim(tenant_id="kettle", conversation_id=conversation, person_id="kai")
        with pytest.raises(CommandNotSent):  # no stream takes sh.cmd.>: nothing stores it
            await sender.send(claim)
        nats_server.stop()
        async with client(build_api(database_url, commands=sender, clock=Clock(T))) as http:
            response = await http.post(f"/api/conversations/{conversation}/claim", headers=agency.as_("kai"))
        assert response.status_code == 503, response.text
        assert response.json()["field"] == "nats"
    finally:
        with contextlib.suppress(ConnectionResetError):  # closing flushes to the socket the server closed
            await connection.close()
