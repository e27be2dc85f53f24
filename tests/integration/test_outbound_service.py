"""The outbound service over a real database and platform fakes over real HTTP: a reply is
posted once, answered by the brand's interaction credited to its writer; nothing is posted
without a live session of that person; a lost answer is posted again only where the platform
dedupes, else looked for in the thread, else in doubt; an expired token is refreshed and kept."""

import asyncio
import json
import math
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
from pydantic import BaseModel

from services.outbound.clients import Clients
from services.outbound.service import Handled, Outbound, Policy
from services.outbound.store import SqlStore
from shared import ids
from shared.commands import SendReply
from shared.db.models import AccountRow, ReplyRow, ReplyTokenRow
from shared.db.session import create_engine, session_factory
from shared.events import (
    CommandApplied,
    CommandRejected,
    ConnectorProblem,
    InteractionReceived,
    ReplyContext,
    ReplyEvent,
    utcnow,
)
from shared.secrets import SecretBox, new_key
from tests.api_world import World
from tests.helpers import eventually
from tests.write_fakes.mastodon import FakeMastodonWrites
from tests.write_fakes.x import FakeX


@dataclass
class Setup:
    world: World
    service: Outbound
    conversation_id: str
    interaction_id: str
    session: str
    box: SecretBox

    def command(self, text: str = "Yes, until 6 pm on Sundays!", **extra: Any) -> SendReply:
        values: dict[str, Any] = {
            "tenant_id": "acme",
            "conversation_id": self.conversation_id,
            "person_id": "kai",
            "session": self.session,
            "text": text,
            "issued_by": "kai",
            **extra,
        }
        return SendReply(**values)

    async def row(self, reply_id: str) -> ReplyRow | None:
        async with self.world.sessions() as session:
            return await session.get(ReplyRow, reply_id)


def messages_of(handled: Handled) -> list[Any]:
    decoded: list[Any] = []
    for message in handled.messages:
        data = json.loads(message.payload)
        kinds: dict[str, type[BaseModel]] = {
            "interaction.received": InteractionReceived,
            "reply.changed": ReplyEvent,
            "command.applied": CommandApplied,
            "command.rejected": CommandRejected,
            "connector.problem": ConnectorProblem,
        }
        kind = kinds[data["type"]]
        decoded.append(kind.model_validate(data))
    return decoded


async def setup(
    database_url: str,
    *,
    platform: str,
    credentials: dict[str, str],
    external_id: str,
    kind: str,
    context: ReplyContext | None,
    account_external_id: str | None = None,
    author_id: str = "7001",
    author_handle: str = "fan@elsewhere.example",
) -> AsyncIterator[Setup]:
    box = SecretBox(new_key())
    engine = create_engine(database_url)
    async with World(database_url) as world:
        await world.tenant("acme")
        await world.tenant("globex")
        await world.person("kai", name="Kai Moreno")
        team = await world.team("acme", "care", members=["kai"])
        await world.add(
            AccountRow(
                id="acme-social",
                tenant_id="acme",
                platform=platform,
                handle="Bluebird",
                team_id=team,
                webhook_secret="",
                external_id=account_external_id,
                reply_credentials=box.seal(json.dumps(credentials, sort_keys=True)),
            )
        )
        conversation_id = await world.conversation(
            "acme", "acme-social", team_id=team, owner_id="kai", platform=platform, thread_id=external_id,
            author_id=author_id, author_handle=author_handle,
        )  # fmt: skip
        interaction_id = await world.interaction(
            conversation_id, external_id=external_id, kind=kind, author_id=author_id, text="open on Sunday?",
            reply_context=context.model_dump_json() if context else None,
        )  # fmt: skip
        signed_in = await world.session_for("kai")
        clients = Clients(allow_private_webhooks=True, timeout=httpx.Timeout(1.0, connect=1.0))
        service = Outbound(
            store=SqlStore(session_factory(engine)),
            box=box,
            clients=clients.for_platform,
            policy=Policy(retry_delay=0.1, settle=0.2),
        )
        try:
            yield Setup(
                world, service, conversation_id, interaction_id, ids.token_sha256(signed_in.cookie), box
            )
        finally:
            await clients.close()
            await engine.dispose()


@pytest.fixture
async def mastodon() -> AsyncIterator[FakeMastodonWrites]:
    fake = FakeMastodonWrites().start()
    yield fake
    fake.stop()


@pytest.fixture
async def x() -> AsyncIterator[FakeX]:
    fake = FakeX().start()
    yield fake
    fake.stop()


@pytest.fixture
async def on_mastodon(database_url: str, mastodon: FakeMastodonWrites) -> AsyncIterator[Setup]:
    status = mastodon.status("fan@elsewhere.example", visibility="direct")
    async for made in setup(
        database_url, platform="mastodon", kind="dm", external_id=status, account_external_id=mastodon.own_id,
        credentials={"access_token": mastodon.token, "api_base_url": mastodon.url},
        context=ReplyContext(visibility="direct"),
    ):  # fmt: skip
        yield made


@pytest.fixture
async def on_x(database_url: str, x: FakeX) -> AsyncIterator[Setup]:
    tweet = x.tweet("4242", "fan")
    async for made in setup(
        database_url, platform="x", kind="mention", external_id=tweet, account_external_id=x.own_id,
        credentials={"access_token": "x-access-0", "refresh_token": x.refresh_token, "client_id": x.client_id,
                     "api_base_url": x.url, "token_url": f"{x.url}/2/oauth2/token"},
        context=ReplyContext(mentions=[x.own_id]), author_id="4242", author_handle="fan",
    ):  # fmt: skip
        yield made


async def test_a_reply_goes_out_once_as_the_brands_message_credited_to_its_writer(
    on_mastodon: Setup, mastodon: FakeMastodonWrites
) -> None:
    command = on_mastodon.command()
    handled = await on_mastodon.service.handle(command, now=utcnow(), last_delivery=False)
    assert handled.retry_in is None
    posted = mastodon.own_statuses()
    assert len(posted) == 1
    request = mastodon.requests("POST", "/api/v1/statuses")[0]
    assert request.headers["idempotency-key"] == command.command_id
    body = (
        request.json()
        if request.headers.get("content-type", "").startswith("application/json")
        else request.form()
    )
    recorded = await on_mastodon.row(command.command_id)
    assert recorded is not None
    assert body["visibility"] == "direct" and body["in_reply_to_id"] == recorded.target
    assert body["status"].startswith("@fan@elsewhere.example ")
    events = messages_of(handled)
    interaction = next(e for e in events if isinstance(e, InteractionReceived))
    assert interaction.direction == "outbound" and interaction.sent_by == "kai"
    assert interaction.external_id == posted[0]["id"] and interaction.parent_id is not None
    assert [e.state for e in events if isinstance(e, ReplyEvent)] == ["sending", "sent"]
    assert any(isinstance(e, CommandApplied) for e in events)
    row = await on_mastodon.row(command.command_id)
    assert row is not None and row.state == "sent" and row.platform_id == posted[0]["id"]

    again = await on_mastodon.service.handle(command, now=utcnow(), last_delivery=False)  # a redelivery
    assert len(mastodon.own_statuses()) == 1
    assert [m.msg_id for m in again.messages] == [m.msg_id for m in handled.messages[1:]]


async def test_nothing_is_posted_without_a_live_session_of_the_person_it_names(
    on_mastodon: Setup, mastodon: FakeMastodonWrites
) -> None:
    forged = on_mastodon.command(session=secrets.token_hex(32))
    someone_else = on_mastodon.command(person_id="maria")
    for command in (forged, someone_else):
        handled = await on_mastodon.service.handle(command, now=utcnow(), last_delivery=False)
        [outcome] = messages_of(handled)
        assert isinstance(outcome, CommandRejected) and "session" in outcome.reason
        assert await on_mastodon.row(command.command_id) is None
    expired = on_mastodon.command()
    later = utcnow() + timedelta(days=15)  # past the session's lifetime
    [outcome] = messages_of(await on_mastodon.service.handle(expired, now=later, last_delivery=False))
    assert isinstance(outcome, CommandRejected)
    assert mastodon.requests("POST") == []


async def test_another_tenants_conversation_is_not_answered(
    on_mastodon: Setup, mastodon: FakeMastodonWrites
) -> None:
    command = on_mastodon.command(tenant_id="globex")
    [outcome] = messages_of(await on_mastodon.service.handle(command, now=utcnow(), last_delivery=False))
    assert isinstance(outcome, CommandRejected) and outcome.code == "unknown_conversation"
    assert mastodon.requests("POST") == []


async def test_a_lost_answer_on_mastodon_is_posted_again_under_the_same_key(
    on_mastodon: Setup, mastodon: FakeMastodonWrites
) -> None:
    mastodon.hold = 3.0  # the status is made; its answer comes after the client gave up
    command = on_mastodon.command()
    first = await on_mastodon.service.handle(command, now=utcnow(), last_delivery=False)
    assert first.retry_in is not None
    assert len(mastodon.own_statuses()) == 1
    mastodon.hold = None
    second = await on_mastodon.service.handle(command, now=utcnow(), last_delivery=False)
    assert len(mastodon.own_statuses()) == 1, "the same Idempotency-Key makes no second status"
    row = await on_mastodon.row(command.command_id)
    assert row is not None and row.state == "sent" and row.platform_id == mastodon.own_statuses()[0]["id"]
    assert any(isinstance(e, InteractionReceived) for e in messages_of(second))


async def test_a_lost_answer_on_x_is_found_in_the_timeline_not_posted_twice(on_x: Setup, x: FakeX) -> None:
    x.hold = 3.0
    command = on_x.command()
    handled = await on_x.service.handle(command, now=utcnow(), last_delivery=False)
    assert len(x.own_posts()) == 1
    row = await on_x.row(command.command_id)
    assert row is not None and row.state == "sent" and row.platform_id == x.own_posts()[0]["id"]
    assert handled.retry_in is None
    x.hold = None
    await on_x.service.handle(command, now=utcnow(), last_delivery=False)
    assert len(x.own_posts()) == 1


async def died_mid_post(setup: Setup, command: SendReply, fake: FakeX) -> None:
    """Run the command and stop it once the platform holds the post it took: as when the service
    is killed after the platform accepted the reply and before its answer was recorded."""
    before = len(fake.requests("POST", "/2/tweets"))
    task = asyncio.create_task(setup.service.handle(command, now=utcnow(), last_delivery=False))
    await eventually(lambda: _true(len(fake.requests("POST", "/2/tweets")) > before), timeout=10,
                     what="the post at the platform")  # fmt: skip
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def _true(value: bool) -> bool:
    return value


async def test_after_a_crash_mid_post_x_is_read_first_and_in_doubt_when_it_cannot_be(
    on_x: Setup, x: FakeX
) -> None:
    """The next delivery finds the post in the brand's timeline and records it; when the timeline
    cannot be read, the person is told to check on X. Nothing is posted a second time."""
    x.hold = math.inf
    command = on_x.command()
    await died_mid_post(on_x, command, x)
    assert len(x.own_posts()) == 1
    x.hold = None
    handled = await on_x.service.handle(command, now=utcnow(), last_delivery=False)
    row = await on_x.row(command.command_id)
    assert row is not None and row.state == "sent" and row.platform_id == x.own_posts()[0]["id"]
    assert any(isinstance(e, InteractionReceived) for e in messages_of(handled))

    other = on_x.command(text="And on holidays too.")
    x.hold = math.inf
    await died_mid_post(on_x, other, x)
    x.hold = None
    x.expire()  # the timeline cannot be read now: the token was revoked, its refresh token too
    x.refresh_token = "revoked"
    handled = await on_x.service.handle(other, now=utcnow(), last_delivery=False)
    row = await on_x.row(other.command_id)
    assert row is not None and row.state == "in_doubt", (row, [(r.method, r.path) for r in x.received])
    assert len(x.own_posts()) == 2  # each reply once
    rejected = [e for e in messages_of(handled) if isinstance(e, CommandRejected)]
    assert rejected and rejected[0].code == "in_doubt" and "check on the platform" in rejected[0].reason


async def test_an_expired_x_token_is_refreshed_and_the_rotated_one_kept(on_x: Setup, x: FakeX) -> None:
    x.expire()
    command = on_x.command()
    await on_x.service.handle(command, now=utcnow(), last_delivery=False)
    row = await on_x.row(command.command_id)
    assert row is not None and row.state == "sent"
    async with on_x.world.sessions() as session:
        kept = await session.get(ReplyTokenRow, "acme-social")
    assert kept is not None and kept.failing == ""
    values = json.loads(on_x.box.open(kept.credentials))
    assert values["refresh_token"] == x.refresh_token != "x-refresh-0"


async def test_a_revoked_mastodon_token_fails_the_reply_and_tells_the_operator(
    on_mastodon: Setup, mastodon: FakeMastodonWrites
) -> None:
    mastodon.expire()
    command = on_mastodon.command()
    events = messages_of(await on_mastodon.service.handle(command, now=utcnow(), last_delivery=False))
    assert any(isinstance(e, ConnectorProblem) and e.problem == "failing" for e in events)
    row = await on_mastodon.row(command.command_id)
    assert row is not None and row.state == "failed"
    second = on_mastodon.command(text="trying again")
    [outcome] = messages_of(await on_mastodon.service.handle(second, now=utcnow(), last_delivery=False))
    assert isinstance(outcome, CommandRejected) and outcome.code == "not_connected"
    assert len(mastodon.requests("POST", "/api/v1/statuses")) == 1


async def test_two_replicas_holding_the_same_command_post_it_once(on_x: Setup, x: FakeX) -> None:
    """A redelivery that races the first delivery (another replica) makes no second attempt."""
    x.hold = 0.5
    command = on_x.command()
    results = await asyncio.gather(
        *(on_x.service.handle(command, now=utcnow(), last_delivery=False) for _ in range(3))
    )
    assert len(x.own_posts()) == 1
    assert sum(1 for handled in results if handled.retry_in is not None) >= 1
    x.hold = None
    for handled in results:
        if handled.retry_in is not None:
            await on_x.service.handle(command, now=utcnow(), last_delivery=False)
    row = await on_x.row(command.command_id)
    assert row is not None and row.state == "sent" and len(x.own_posts()) == 1


async def test_after_a_crash_a_token_that_merely_expired_is_renewed_to_read_the_timeline(
    on_x: Setup, x: FakeX
) -> None:
    x.hold = math.inf
    command = on_x.command()
    await died_mid_post(on_x, command, x)
    x.hold = None
    x.expire()  # access tokens last two hours on X; the refresh token still works
    await on_x.service.handle(command, now=utcnow(), last_delivery=False)
    row = await on_x.row(command.command_id)
    assert row is not None and row.state == "sent" and len(x.own_posts()) == 1


async def test_a_command_id_that_names_another_persons_reply_tells_and_does_nothing(
    on_mastodon: Setup, mastodon: FakeMastodonWrites
) -> None:
    first = on_mastodon.command()
    await on_mastodon.service.handle(first, now=utcnow(), last_delivery=False)
    await on_mastodon.world.person("maria", name="Maria Lopez")
    maria = await on_mastodon.world.session_for("maria")
    stolen = on_mastodon.command(
        command_id=first.command_id,
        person_id="maria",
        session=ids.token_sha256(maria.cookie),
        text="mine now",
    )
    handled = await on_mastodon.service.handle(stolen, now=utcnow(), last_delivery=False)
    assert handled.messages == [] and handled.retry_in is None
    assert len(mastodon.own_statuses()) == 1


async def test_a_brand_message_that_only_contains_the_words_is_not_taken_for_the_lost_reply(
    on_x: Setup, x: FakeX
) -> None:
    """Only the same text (as a platform shows it back) is the echo: a longer message of the brand
    that holds the reply's words does not make a reply whose answer was lost count as sent."""
    await on_x.world.interaction(
        on_x.conversation_id,
        direction="outbound",
        text="Thanks! We will call you tomorrow.",
        external_id="earlier",
    )
    x.hold = math.inf
    command = on_x.command(text="Thanks!")
    await died_mid_post(on_x, command, x)
    x.hold = None
    x.expire()
    x.refresh_token = "revoked"  # the timeline cannot be read: only the stored echo could tell
    await on_x.service.handle(command, now=utcnow(), last_delivery=False)
    row = await on_x.row(command.command_id)
    assert row is not None and row.state == "in_doubt", row


async def test_a_reply_whose_last_delivery_failed_is_settled_for_its_writer(on_x: Setup, x: FakeX) -> None:
    """In doubt when an attempt may have reached the platform; a settled reply is told nothing again."""
    x.hold = math.inf
    command = on_x.command()
    await died_mid_post(on_x, command, x)
    messages = await on_x.service.give_up(command, "could not be sent: OperationalError", utcnow())
    row = await on_x.row(command.command_id)
    assert row is not None and row.state == "in_doubt"
    rejected = [e for e in messages_of(Handled(messages)) if isinstance(e, CommandRejected)]
    assert rejected and rejected[0].code == "in_doubt"
    assert await on_x.service.give_up(command, "again", utcnow()) == []
