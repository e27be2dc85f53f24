"""`stayhuman status|claim|reassign|pause|resume|resolve|mark-responded|acknowledge` against a real
nats-server and each database."""

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext
from sqlalchemy import insert, update

from shared import subjects
from shared.commands import (
    AnyCommand,
    MarkResponded,
    command_adapter,
    msg_id_of,
    notify_command_adapter,
    subject_of,
)
from shared.db.core import CONVERSATIONS, DEADLINES, PEOPLE
from shared.db.session import create_engine, session_factory, transaction
from shared.jetstream import MSG_ID, StreamSettings, ensure_streams, stream_configs
from shared.preflight import Refused, Request, find_conversation, prepare
from shared.secrets import new_key
from stayhuman.cli import main
from stayhuman.config import apply_config, parse_config
from stayhuman.natsserver import EmbeddedNats, free_port
from tests.helpers import config_yaml

STREAM = subjects.COMMANDS_STREAM


@dataclass
class Installation:
    js: JetStreamContext
    conversation: str  # in tenant acme
    sibling: str  # in tenant acme too, its id shares the first 6 characters with `conversation`
    capsys: pytest.CaptureFixture[str]

    async def run(self, *argv: str) -> tuple[int, str, str]:
        """The CLI as an operator runs it (in a thread: it runs its own event loop)."""
        self.capsys.readouterr()
        code = await asyncio.to_thread(main, list(argv))
        out, err = self.capsys.readouterr()
        return code, out, err

    async def stored(self) -> int:
        return (await self.js.stream_info(STREAM)).state.messages

    async def last(self, subject: str) -> tuple[AnyCommand, dict[str, str]]:
        message = await self.js.get_last_msg(STREAM, subject)
        assert message.data is not None
        return command_adapter.validate_json(message.data), dict(message.headers or {})


async def _add_conversation(sessions: Any, *, conversation_id: str, tenant: str, account: str) -> None:
    now = datetime.now(UTC)
    async with transaction(sessions) as session:
        connection = await session.connection()
        await connection.execute(
            insert(CONVERSATIONS).values(
                id=conversation_id,
                tenant_id=tenant,
                account_id=account,
                platform="facebook",
                thread_id=f"thread-{conversation_id}",
                state="open",
                skills="[]",
                author_id="author-1",
                opened_at=now,
                last_inbound_at=now,
                updated_at=now,
            )
        )


@pytest.fixture
async def installation(
    nc: Client,
    nats_server: EmbeddedNats,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> AsyncIterator[Installation]:
    """Tenants acme (maria, li, inactive olga; team care) and globex (zed), two acme conversations."""
    monkeypatch.setenv("STAYHUMAN_NATS_URL", nats_server.url)
    monkeypatch.setenv("STAYHUMAN_DATABASE_URL", database_url)
    monkeypatch.setenv("STAYHUMAN_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("STAYHUMAN_SECRET_KEY", new_key())  # as an operator sets it: the database is elsewhere
    monkeypatch.setenv("STAYHUMAN_NATS_CONNECT_TIMEOUT", "5s")
    js = nc.jetstream()
    await ensure_streams(js, stream_configs(StreamSettings()))
    engine = create_engine(database_url)
    sessions = session_factory(engine)
    for tenant, people in (("acme", ["maria", "li", "olga"]), ("globex", ["zed"])):
        yaml = config_yaml(tenant=tenant, account=f"{tenant}-fb", secret="s" * 20, people=people)
        await apply_config(sessions, parse_config(yaml, source="t.yaml"), source="t.yaml")
    async with transaction(sessions) as session:
        connection = await session.connection()
        await connection.execute(update(PEOPLE).where(PEOPLE.c.id == "olga").values(active=False))
    prefix = uuid.uuid4().hex[:6]
    conversation = prefix + "0" + uuid.uuid4().hex[:25]
    sibling = prefix + "1" + uuid.uuid4().hex[:25]
    for conversation_id in (conversation, sibling):
        await _add_conversation(sessions, conversation_id=conversation_id, tenant="acme", account="acme-fb")
    await engine.dispose()
    yield Installation(js, conversation, sibling, capsys)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["status", "maria", "away"],
            {"type": "person.set_status", "person_id": "maria", "status": "away"},
        ),
        (
            ["claim", "{conv}", "--person", "li"],
            {"type": "conversation.claim", "person_id": "li"},
        ),
        (
            ["reassign", "{conv}", "--to", "maria", "--reason", "speaks Portuguese"],
            {
                "type": "conversation.reassign",
                "person_id": "maria",
                "team": None,
                "reason": "speaks Portuguese",
            },
        ),
        (
            ["reassign", "{conv}", "--team", "care"],
            {"type": "conversation.reassign", "person_id": None, "team": "care", "reason": ""},
        ),
        (
            ["pause", "{conv}", "--reason", "waiting for the order number"],
            {"type": "conversation.pause", "reason": "waiting for the order number"},
        ),
        (["resume", "{conv}"], {"type": "conversation.resume"}),
        (
            ["resolve", "{conv}", "--reason", "refunded"],
            {"type": "conversation.resolve", "reason": "refunded"},
        ),
        (
            ["mark-responded", "{conv}", "--person", "li", "--note", "called them"],
            {"type": "conversation.mark_responded", "person_id": "li", "note": "called them"},
        ),
        (
            ["mark-responded", "{conv}"],
            {"type": "conversation.mark_responded", "person_id": None, "note": ""},
        ),
    ],
    ids=[
        "status",
        "claim",
        "reassign-to",
        "reassign-team",
        "pause",
        "resume",
        "resolve",
        "mark-responded",
        "mark-responded-owner",
    ],
)
async def test_each_command_reaches_the_commands_stream(
    installation: Installation, argv: list[str], expected: dict[str, Any]
) -> None:
    conversation = installation.conversation
    argv = [arg.replace("{conv}", conversation) for arg in argv]
    code, out, err = await installation.run(*argv, "--by", "ops-desk")
    assert (code, err) == (0, "")
    assert await installation.stored() == 1
    if expected["type"].startswith("conversation."):
        expected |= {"tenant_id": "acme", "conversation_id": conversation}
        subject = subjects.conversation_command(
            tenant_id="acme", conversation_id=conversation, verb=expected["type"].split(".")[1]
        )
    else:
        subject = subjects.person_command(person_id="maria", verb="set_status")
    command, headers = await installation.last(subject)
    assert command.model_dump(mode="json", include=set(expected)) == expected
    assert command.issued_by == "ops-desk"
    assert subject_of(command) == subject
    assert headers[MSG_ID] == msg_id_of(command) == f"cmd:{command.command_id}"
    assert out.startswith(f"sent {expected['type']} ") and f"(command {command.command_id})" in out


async def test_a_prefix_names_the_conversation_and_the_line_says_what_was_sent(
    installation: Installation,
) -> None:
    conversation = installation.conversation
    code, out, _ = await installation.run("pause", conversation[:7].upper())
    assert code == 0
    command, _ = await installation.last(
        subjects.conversation_command(tenant_id="acme", conversation_id=conversation, verb="pause")
    )
    assert command.issued_by == "operator"  # the default of --by
    assert out == f"sent conversation.pause {conversation} (command {command.command_id})\n"


async def test_mark_responded_says_who_answered_in_its_line(installation: Installation) -> None:
    conversation = installation.conversation
    code, out, _ = await installation.run(
        "mark-responded", conversation[:8], "--person", "maria", "--by", "kai", "--note", "called them"
    )
    assert code == 0
    command, _ = await installation.last(
        subjects.conversation_command(tenant_id="acme", conversation_id=conversation, verb="mark_responded")
    )
    assert isinstance(command, MarkResponded)
    assert (command.issued_by, command.person_id, command.note) == ("kai", "maria", "called them")
    assert out == (
        f"sent conversation.mark_responded {conversation} answered by maria (command {command.command_id})\n"
    )


async def test_json_prints_the_command_as_stored(installation: Installation) -> None:
    code, out, _ = await installation.run("claim", installation.conversation, "--person", "maria", "--json")
    assert code == 0
    printed = command_adapter.validate_python(json.loads(out))
    stored, _ = await installation.last(subject_of(printed))
    assert printed == stored


async def test_the_same_command_id_is_stored_once(installation: Installation) -> None:
    argv = ["resolve", installation.conversation, "--command-id", "retry-7f3a2b"]
    first = await installation.run(*argv)
    second = await installation.run(*argv)
    assert first[0] == second[0] == 0
    assert first[1].startswith("sent conversation.resolve")
    assert second[1].startswith("already sent conversation.resolve") and "stored once" in second[1]
    assert await installation.stored() == 1
    command, headers = await installation.last(subjects.all_commands())
    assert command.command_id == "retry-7f3a2b" and headers[MSG_ID] == "cmd:retry-7f3a2b"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["pause", "{missing}"], "no conversation '{missing}'"),
        (
            ["pause", "{prefix6}"],
            "'{prefix6}' matches 2 conversations ({first}, {second}): give more characters",
        ),
        (["pause", "{prefix5}"], "'{prefix5}' is not a conversation id"),
        (["pause", "not-hex-at-all"], "'not-hex-at-all' is not a conversation id"),
        (["claim", "{conv}", "--person", "nobody"], "no person 'nobody'"),
        (["claim", "{conv}", "--person", "olga"], "person 'olga' is inactive"),
        (["reassign", "{conv}", "--to", "zed"], "person 'zed' is not a member of any team of tenant 'acme'"),
        (["reassign", "{conv}", "--team", "billing"], "no team 'billing' in tenant 'acme' (its teams: care)"),
        (["status", "nobody", "away"], "no person 'nobody'"),
        (["status", "olga", "available"], "person 'olga' is inactive"),
        (["resume", "{conv}", "--command-id", "short"], "--command-id 'short'"),
        (["pause", "{conv}", "--reason", "x" * 201], "--reason: String should have at most 200 characters"),
        (
            ["mark-responded", "{conv}", "--note", "x" * 201],
            "--note: String should have at most 200 characters",
        ),
        (
            ["mark-responded", "{conv}", "--person", "zed"],
            "person 'zed' is not a member of any team of tenant 'acme'",
        ),
        (["mark-responded", "{conv}", "--person", "olga"], "person 'olga' is inactive"),
        (["mark-responded", "{missing}"], "no conversation '{missing}'"),
        (["pause", "{conv}", "--reason", "waiting\x07on them"], "--reason: Value error, control characters"),
    ],
    ids=[
        "unknown-conversation",
        "ambiguous-prefix",
        "short-prefix",
        "not-an-id",
        "unknown-person",
        "inactive-person",
        "person-of-another-tenant",
        "unknown-team",
        "status-unknown-person",
        "status-inactive-person",
        "bad-command-id",
        "long-reason",
        "mark-responded-long-note",
        "mark-responded-person-of-another-tenant",
        "mark-responded-inactive-person",
        "mark-responded-unknown-conversation",
        "control-character-in-reason",
    ],
)
async def test_a_bad_request_names_the_problem_and_sends_nothing(
    installation: Installation, argv: list[str], message: str
) -> None:
    first, second = sorted([installation.conversation, installation.sibling])
    values = {
        "conv": installation.conversation,
        "missing": uuid.uuid4().hex,
        "prefix6": installation.conversation[:6],
        "prefix5": installation.conversation[:5],
        "first": first,
        "second": second,
    }
    argv = [arg.format(**values) for arg in argv]
    code, out, err = await installation.run(*argv)
    assert code == 2 and out == ""
    assert err.startswith("stayhuman: error: ") and message.format(**values) in err
    assert await installation.stored() == 0


async def test_reassign_takes_a_person_or_a_team_not_both(installation: Installation) -> None:
    with pytest.raises(SystemExit) as exit_:
        await installation.run("reassign", installation.conversation, "--to", "maria", "--team", "care")
    assert exit_.value.code == 2
    assert "argument --team: not allowed with argument --to" in installation.capsys.readouterr().err
    with pytest.raises(SystemExit):
        await installation.run("reassign", installation.conversation)
    assert "one of the arguments --to --team is required" in installation.capsys.readouterr().err
    assert await installation.stored() == 0


async def test_unreachable_nats_fails_within_the_connect_timeout(
    installation: Installation, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"nats://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("STAYHUMAN_NATS_URL", url)
    monkeypatch.setenv("STAYHUMAN_NATS_CONNECT_TIMEOUT", "1s")
    started = time.monotonic()
    code, out, err = await installation.run("resume", installation.conversation)
    assert time.monotonic() - started < 4
    assert code == 1 and out == ""
    assert f"could not connect to NATS at {url} within 1 s" in err and "nothing was sent" in err
    assert await installation.stored() == 0


async def test_a_missing_commands_stream_is_named(installation: Installation) -> None:
    await installation.js.delete_stream(STREAM)  # as before the router ever started
    code, _, err = await installation.run("resume", installation.conversation)
    assert code == 1
    assert f"has no stream {STREAM}: the router creates it when it first starts" in err
    with pytest.raises(Exception, match="stream not found"):
        await installation.js.stream_info(STREAM)  # and the CLI did not create it


async def _arm_deadline(database_url: str, conversation_id: str, *, version: int, due: bool = True) -> None:
    """Notify's copy of the conversation's deadline, as notify keeps it."""
    now = datetime.now(UTC)
    engine = create_engine(database_url)
    async with transaction(session_factory(engine)) as session:
        connection = await session.connection()
        await connection.execute(
            insert(DEADLINES).values(
                conversation_id=conversation_id,
                tenant_id="acme",
                version=version,
                kind="first_response",
                due_at=now if due else None,
                state="armed" if due else "cleared",
                updated_at=now,
            )
        )
    await engine.dispose()


async def test_acknowledge_names_the_running_deadline_on_notifys_subjects(
    installation: Installation, database_url: str
) -> None:
    """The command goes to notify's own family (sh.ncmd), never the router's (sh.cmd)."""
    code, out, err = await installation.run("acknowledge", installation.conversation[:8], "--person", "maria")
    assert code == 2 and "no running deadline to acknowledge" in err
    await _arm_deadline(database_url, installation.conversation, version=3)
    code, out, err = await installation.run("acknowledge", installation.conversation, "--person", "maria")
    assert code == 0, err
    subject = subjects.notify_command(
        tenant_id="acme", conversation_id=installation.conversation, verb="acknowledge"
    )
    message = await installation.js.get_last_msg(STREAM, subject)
    assert message.data is not None
    command = notify_command_adapter.validate_json(message.data)
    assert (command.person_id, command.deadline_version, command.conversation_id) == (
        "maria",
        3,
        installation.conversation,
    )
    assert f"sent alert.acknowledge {installation.conversation} deadline 3 by maria" in out
    code, _out, err = await installation.run("acknowledge", installation.conversation, "--person", "zed")
    assert code == 2 and "not a member of any team of tenant 'acme'" in err


async def test_checks_scoped_to_tenants_never_find_another_tenants_conversation(
    installation: Installation, database_url: str
) -> None:
    """What the API will call for a signed-in person: another tenant's conversation is not there."""
    engine = create_engine(database_url)
    try:
        async with session_factory(engine)() as session:
            found = await find_conversation(
                session=session, reference=installation.conversation, tenants={"acme"}
            )
            assert found.tenant_id == "acme"
            for reference in (installation.conversation, installation.conversation[:6]):
                with pytest.raises(Refused) as refused:
                    await find_conversation(session=session, reference=reference, tenants={"globex"})
                assert str(refused.value) == f"no conversation {reference!r}"
                assert refused.value.field == "conversation"
            request = Request(action="claim", conversation=installation.conversation, person="zed")
            with pytest.raises(Refused) as refused:
                await prepare(session=session, request=request, tenants={"globex"})
            assert "no conversation" in str(refused.value)
            request = Request(
                action="claim", conversation=installation.conversation, person="li", command_id="x y"
            )
            with pytest.raises(Refused) as refused:
                await prepare(session=session, request=request, tenants={"acme"})
            assert refused.value.field == "command_id" and str(refused.value).startswith("command_id 'x y'")
    finally:
        await engine.dispose()


async def test_waiting_for_an_outcome_no_service_gives_says_so(installation: Installation) -> None:
    """Sent and stored, but nothing applies it (no router here): exit 1, and the line says what to check."""
    code, out, err = await installation.run("status", "maria", "away", "--wait", "1")
    assert code == 1 and out == ""
    assert "sent person.set_status" in err and "but no outcome within 1 s" in err
    assert await installation.stored() == 1
    with pytest.raises(SystemExit) as exited:
        await installation.run("status", "maria", "away", "--wait", "0")
    assert exited.value.code == 2
    assert "'0' is not a number of seconds from 0 to 600" in installation.capsys.readouterr().err
