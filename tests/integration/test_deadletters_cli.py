"""`stayhuman dead-letters` (list and replay) and `stayhuman push-link` against a real nats-server."""

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig
from nats.js.errors import NotFoundError
from sqlalchemy import update

from shared import subjects
from shared.db.core import PEOPLE
from shared.db.migrate import upgrade
from shared.db.session import create_engine, session_factory, transaction
from shared.jetstream import (
    MSG_ID,
    StreamSettings,
    dead_letter,
    ensure_streams,
    keep_dead_letter,
    stream_configs,
)
from shared.logs import CORRELATION_HEADER
from shared.secrets import LinkSigner, new_key
from stayhuman.cli import main
from stayhuman.config import apply_config, parse_config
from stayhuman.natsserver import EmbeddedNats, free_port
from tests.helpers import config_yaml

DLQ = subjects.DEAD_LETTER_STREAM
EVENTS = subjects.EVENTS_STREAM
COMMANDS = subjects.COMMANDS_STREAM


@dataclass
class Cli:
    js: JetStreamContext
    capsys: pytest.CaptureFixture[str]

    async def run(self, *argv: str) -> tuple[int, str, str]:
        """The CLI as an operator runs it (in a thread: it runs its own event loop)."""
        self.capsys.readouterr()
        code = await asyncio.to_thread(main, list(argv))
        out, err = self.capsys.readouterr()
        return code, out, err

    async def listed(self, *argv: str) -> list[dict[str, object]]:
        code, out, err = await self.run("dead-letters", "--json", *argv)
        assert (code, err) == (0, "")
        return list(json.loads(out))

    async def kept(self) -> list[int]:
        """The sequences on the dead-letter stream, read through the server, not the CLI."""
        info = await self.js.stream_info(DLQ)
        found = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            try:
                found.append((await self.js.get_msg(DLQ, seq)).seq or 0)
            except NotFoundError:
                continue
        return found

    async def count(self, stream: str) -> int:
        return (await self.js.stream_info(stream)).state.messages

    async def keep(self, *, stream: str, consumer: str, subject: str, data: bytes, error: str) -> int:
        """An entry as a service keeps work it could not do; returns its dead-letter sequence."""
        await keep_dead_letter(
            self.js,
            stream=stream,
            consumer=consumer,
            subject=subject,
            data=data,
            error=error,
            key=uuid.uuid4().hex,
        )
        return (await self.js.stream_info(DLQ)).state.last_seq

    async def poison(self, *, subject: str, data: bytes, error: str, consumer: str = "deadlines") -> int:
        """A message published to SH_EVENTS, delivered to a consumer that gives up on it."""
        await self.js.publish(
            subject, data, headers={CORRELATION_HEADER: "corr-1", MSG_ID: f"first:{uuid.uuid4().hex}"}
        )
        await self.js.add_consumer(
            EVENTS,
            ConsumerConfig(durable_name=consumer, filter_subject=subject, ack_policy=AckPolicy.EXPLICIT),
        )
        subscription = await self.js.pull_subscribe_bind(durable=consumer, stream=EVENTS)
        (msg,) = await subscription.fetch(1, timeout=5)
        await dead_letter(self.js, msg, stream=EVENTS, consumer=consumer, error=error)
        await subscription.unsubscribe()
        return (await self.js.stream_info(DLQ)).state.last_seq


def _event_subject(event: subjects.ConversationEvent = "opened") -> str:
    return subjects.conversation_event(tenant_id="acme", conversation_id=uuid.uuid4().hex, event=event)


@pytest.fixture
async def cli(
    nc: Client,
    nats_server: EmbeddedNats,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> AsyncIterator[Cli]:
    monkeypatch.setenv("STAYHUMAN_NATS_URL", nats_server.url)
    monkeypatch.setenv("STAYHUMAN_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("STAYHUMAN_NATS_CONNECT_TIMEOUT", "5s")
    js = nc.jetstream()
    await ensure_streams(js, stream_configs(StreamSettings()))
    yield Cli(js, capsys)


# Listing -----------------------------------------------------------------------------------


async def test_the_list_shows_each_entry_and_consumes_nothing(cli: Cli) -> None:
    delivered = _event_subject()
    kept = _event_subject("assigned")
    first = await cli.poison(subject=delivered, data=b'{"hello":  "world"}', error="ValueError: bad\nthing")
    second = await cli.keep(
        stream=EVENTS, consumer="alerts", subject=kept, data=b"x" * 100, error="SMTP refused"
    )
    code, out, err = await cli.run("dead-letters")
    assert (code, err) == (0, "")
    header, *rows = out.splitlines()
    assert header.split() == ["SEQ", "KEPT", "(UTC)", "FROM", "SUBJECT", "DELIVERIES", "ERROR", "BODY"]
    assert len(rows) == 2
    assert rows[0].split()[0] == str(first) and rows[1].split()[0] == str(second)
    assert f"{EVENTS}/deadlines" in rows[0] and delivered in rows[0]
    assert "ValueError: bad thing" in rows[0] and '{"hello": "world"}' in rows[0]
    assert rows[0].split()[5] == "1"  # delivered once before it was given up on
    assert f"{EVENTS}/alerts" in rows[1] and kept in rows[1] and "SMTP refused" in rows[1]
    assert rows[1].split()[5] == "-"  # kept by a service: never delivered
    assert "x" * 39 + "…" in rows[1]  # a preview, not the whole body

    again = await cli.run("dead-letters")
    assert again == (0, out, "")
    assert await cli.kept() == [first, second]


async def test_json_gives_every_field(cli: Cli) -> None:
    subject = _event_subject()
    first = await cli.poison(subject=subject, data=b'{"n": 1}', error="boom")
    second = await cli.keep(
        stream=COMMANDS, consumer="router-commands", subject="sh.gone.a", data=b"\xff\xfe", error="lost"
    )
    one, two = await cli.listed()
    assert one.pop("kept_at")
    assert one == {
        "seq": first,
        "stream": EVENTS,
        "consumer": "deadlines",
        "subject": subject,
        "error": "boom",
        "deliveries": 1,
        "original_seq": 1,
        "headers": {CORRELATION_HEADER: "corr-1"},  # the application's own only
        "size": 8,
        "truncated_from": None,  # kept whole (a message at the server's limit is cut, and says so)
        "preview": '{"n": 1}',
    }
    assert two["seq"] == second and two["stream"] == COMMANDS and two["consumer"] == "router-commands"
    assert two["subject"] == "sh.gone.a" and two["deliveries"] is None and two["original_seq"] is None
    assert two["headers"] == {} and two["size"] == 2 and two["preview"] == "��"


async def test_the_list_filters_by_stream_and_consumer_and_stops_at_the_limit(cli: Cli) -> None:
    events_a = await cli.keep(stream=EVENTS, consumer="a", subject=_event_subject(), data=b"1", error="e")
    events_b = await cli.keep(stream=EVENTS, consumer="b", subject=_event_subject(), data=b"2", error="e")
    commands_a = await cli.keep(stream=COMMANDS, consumer="a", subject="sh.cmd.x", data=b"3", error="e")

    async def seqs(*argv: str) -> list[object]:
        return [entry["seq"] for entry in await cli.listed(*argv)]

    assert await seqs() == [events_a, events_b, commands_a]
    assert await seqs("--stream", EVENTS) == [events_a, events_b]
    assert await seqs("--stream", "sh_commands") == [commands_a]
    assert await seqs("--consumer", "a") == [events_a, commands_a]
    assert await seqs("--stream", EVENTS, "--consumer", "b") == [events_b]
    assert await seqs("--stream", "SH_NOTHING") == []
    assert await seqs("--limit", "2") == [events_a, events_b]

    code, out, _ = await cli.run("dead-letters", "--limit", "1")
    assert code == 0 and out.endswith("(the oldest 1 of 3: --limit shows more)\n")
    code, out, _ = await cli.run("dead-letters", "--consumer", "nobody")
    assert (code, out) == (0, "no dead letters\n")
    code, out, _ = await cli.run("dead-letters", "--limit", "0", "--stream", "sh_commands")
    assert (code, out) == (0, "1 dead letter (--limit 0 lists none)\n")
    code, out, err = await cli.run("dead-letters", "--stream", "sh.events")
    assert (code, out) == (2, "") and "--stream 'sh.events': give a name without dots" in err


# Replaying ---------------------------------------------------------------------------------


async def test_a_replay_puts_the_body_back_on_its_subject_and_removes_the_entry(cli: Cli) -> None:
    subject = _event_subject()
    replayed = await cli.poison(subject=subject, data=b'{"again": true}', error="boom")
    other = await cli.keep(stream=EVENTS, consumer="b", subject=_event_subject(), data=b"2", error="e")
    stored = await cli.count(EVENTS)

    code, out, err = await cli.run("dead-letters", "replay", str(replayed))
    assert (code, err) == (0, "")
    back = await cli.js.get_last_msg(EVENTS, subject)
    assert back.data == b'{"again": true}' and back.seq == stored + 1
    headers = dict(back.headers or {})
    assert headers[MSG_ID] == f"replay:{replayed}"
    assert headers[CORRELATION_HEADER] == "corr-1"
    assert not [name for name in headers if name.startswith("Sh-")]
    assert (
        out == f"replayed dead letter {replayed} to {subject} ({EVENTS} seq {back.seq}); removed from {DLQ}\n"
    )
    assert await cli.kept() == [other]


async def test_replaying_an_entry_again_within_the_window_stores_it_once(cli: Cli) -> None:
    subject = _event_subject()
    seq = await cli.keep(stream=EVENTS, consumer="a", subject=subject, data=b"once", error="e")
    # As if a replay was stored and its entry then not removed (the connection dropped).
    await cli.js.publish(subject, b"once", headers={MSG_ID: f"replay:{seq}"})
    stored = await cli.count(EVENTS)
    code, out, _ = await cli.run("dead-letters", "replay", str(seq))
    assert code == 0
    assert (
        out
        == f"dead letter {seq} was already replayed to {subject} ({EVENTS} stored it once); removed from {DLQ}\n"
    )
    assert await cli.count(EVENTS) == stored
    assert await cli.kept() == []


async def test_replay_all_takes_what_the_filters_choose(cli: Cli) -> None:
    first, second = _event_subject(), _event_subject("resolved")
    command = subjects.person_command(person_id="maria", verb="set_status")
    events = [
        await cli.poison(subject=first, data=b"first", error="e"),
        await cli.keep(stream=EVENTS, consumer="b", subject=second, data=b"second", error="e"),
    ]
    commands = await cli.keep(stream=COMMANDS, consumer="router", subject=command, data=b"cmd", error="e")

    code, out, err = await cli.run("dead-letters", "replay", "--all", "--stream", EVENTS)
    assert (code, err) == (0, "")
    assert [line.split()[3] for line in out.splitlines()] == [str(seq) for seq in events]
    assert (await cli.js.get_last_msg(EVENTS, first)).data == b"first"
    assert (await cli.js.get_last_msg(EVENTS, second)).data == b"second"
    assert await cli.kept() == [commands]

    code, out, _ = await cli.run("dead-letters", "replay", "--all")
    assert code == 0 and out.startswith(f"replayed dead letter {commands} to {command} ({COMMANDS} seq ")
    assert (await cli.js.get_last_msg(COMMANDS, command)).data == b"cmd"
    assert await cli.kept() == []
    assert await cli.run("dead-letters", "replay", "--all") == (0, "no dead letters to replay\n", "")


async def test_an_unknown_sequence_replays_nothing(cli: Cli) -> None:
    known = await cli.keep(stream=EVENTS, consumer="a", subject=_event_subject(), data=b"1", error="e")
    stored = await cli.count(EVENTS)
    code, out, err = await cli.run("dead-letters", "replay", str(known), "999")
    assert (code, out) == (2, "")
    assert f"no dead letter 999 on {DLQ}" in err and "nothing was replayed" in err
    assert await cli.kept() == [known]
    assert await cli.count(EVENTS) == stored


async def test_sequences_do_not_mix_with_filters(cli: Cli) -> None:
    known = await cli.keep(stream=EVENTS, consumer="a", subject=_event_subject(), data=b"1", error="e")
    code, out, err = await cli.run("dead-letters", "replay", str(known), "--stream", EVENTS)
    assert (code, out) == (2, "") and "give either sequence numbers or --all" in err
    with pytest.raises(SystemExit) as exit_:
        await cli.run("dead-letters", "replay", str(known), "--all")
    assert exit_.value.code == 2
    assert await cli.kept() == [known]


async def test_a_subject_no_stream_takes_is_reported_and_kept(cli: Cli) -> None:
    gone = await cli.keep(stream=EVENTS, consumer="a", subject="sh.gone.away", data=b"1", error="e")
    subject = _event_subject()
    fine = await cli.keep(stream=EVENTS, consumer="a", subject=subject, data=b"2", error="e")
    code, out, err = await cli.run("dead-letters", "replay", "--all")
    assert code == 1
    assert err == (
        f"stayhuman: error: dead letter {gone} not replayed: no stream takes sh.gone.away any more; "
        f"kept on {DLQ}\n"
    )
    assert out.startswith(f"replayed dead letter {fine} to {subject}")
    assert await cli.kept() == [gone]


# Failures of the connection ----------------------------------------------------------------


@pytest.mark.parametrize(
    "argv", [["dead-letters"], ["dead-letters", "replay", "--all"]], ids=["list", "replay"]
)
async def test_unreachable_nats_fails_within_the_connect_timeout(
    cli: Cli, monkeypatch: pytest.MonkeyPatch, argv: list[str]
) -> None:
    kept = await cli.keep(stream=EVENTS, consumer="a", subject=_event_subject(), data=b"1", error="e")
    url = f"nats://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("STAYHUMAN_NATS_URL", url)
    monkeypatch.setenv("STAYHUMAN_NATS_CONNECT_TIMEOUT", "1s")
    started = time.monotonic()
    code, out, err = await cli.run(*argv)
    assert time.monotonic() - started < 4
    assert (code, out) == (1, "")
    assert f"could not connect to NATS at {url} within 1 s" in err
    assert await cli.kept() == [kept]


async def test_a_missing_dead_letter_stream_is_named(cli: Cli) -> None:
    await cli.js.delete_stream(DLQ)  # as before any service started
    code, out, err = await cli.run("dead-letters")
    assert (code, out) == (1, "")
    assert f"has no stream {DLQ}: the services create it when they first start" in err


# push-link ---------------------------------------------------------------------------------


@pytest.fixture
async def people(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A migrated SQLite database with maria (active) and olga (inactive); returns the secret key."""
    key = new_key()
    url = f"sqlite+aiosqlite:///{tmp_path / 'stayhuman.db'}"
    monkeypatch.setenv("STAYHUMAN_DATABASE_URL", url)
    monkeypatch.setenv("STAYHUMAN_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("STAYHUMAN_SECRET_KEY", key)
    monkeypatch.setenv("STAYHUMAN_PUBLIC_URL", "https://alerts.example.com/")
    await asyncio.to_thread(upgrade, url)
    engine = create_engine(url)
    sessions = session_factory(engine)
    yaml = config_yaml(tenant="acme", account="acme-fb", secret="s" * 20, people=["maria", "olga"])
    await apply_config(sessions, parse_config(yaml, source="t.yaml"), source="t.yaml")
    async with transaction(sessions) as session:
        connection = await session.connection()
        await connection.execute(update(PEOPLE).where(PEOPLE.c.id == "olga").values(active=False))
    await engine.dispose()
    return key


async def test_push_link_names_the_person_in_a_sealed_token(
    people: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = await asyncio.to_thread(main, ["push-link", "maria"])
    out, err = capsys.readouterr()
    assert (code, err) == (0, "")
    prefix = "https://alerts.example.com/push/"
    assert out.startswith(prefix) and out.endswith("\n")
    token = out.strip().removeprefix(prefix)
    # signed with the installation's link key (derived from its secret key), naming the person
    assert LinkSigner.of_secret_key(people).read(token, purpose="push", max_age=60) == "0:maria"
    assert LinkSigner.of_secret_key(new_key()).read(token, purpose="push", max_age=60) is None


@pytest.mark.parametrize(
    ("person", "message"), [("nobody", "no person 'nobody'"), ("olga", "person 'olga' is inactive")]
)
async def test_push_link_wants_an_active_person(
    people: str, capsys: pytest.CaptureFixture[str], person: str, message: str
) -> None:
    code = await asyncio.to_thread(main, ["push-link", person])
    out, err = capsys.readouterr()
    assert (code, out) == (2, "")
    assert err == f"stayhuman: error: {message}\n"
