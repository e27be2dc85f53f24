"""Outbound killed (SIGKILL) after the platform accepted a reply and before its answer was
recorded, on every platform: after a restart the platform has exactly one reply, recorded as
sent under that reply's id and credited to its writer once; or, when the thread cannot be read
after the restart, the reply is "in doubt" for a person to check, and still only one is there.

Real processes: an embedded nats-server, a migrated database, `python -m stayhuman outbound`,
and each platform's write fake over HTTP. The fake stores the post and holds its answer; once
the post is there the service is killed; the fake answers again and the service is restarted;
the command comes back after the consumer's ack wait (2 s here)."""

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext

from services.outbound.consumers import CONSUMER
from shared import subjects
from shared.commands import SendReply
from shared.db.models import ReplyRow
from shared.events import CommandApplied, CommandRejected, InteractionReceived, ReplyEvent
from shared.jetstream import publish_pipelined
from shared.messages import command_outgoing
from shared.secrets import SecretBox
from stayhuman.natsserver import EmbeddedNats
from tests.api_world import World
from tests.helpers import eventually, installation_keys
from tests.outbound_world import ACCOUNT, FLAVOURS, Flavour, OutboundProcess, answerable
from tests.write_fakes.x import FakeX

pytestmark = pytest.mark.e2e

TEXT = "Yes, we are open until 6 pm on Sundays!"
SETTLED = ("sent", "failed", "in_doubt")

# (flavour, what goes wrong before the restart, database)
CASES = [
    *(pytest.param(name, "", "sqlite", id=name) for name in FLAVOURS),
    pytest.param("x_reply", "token revoked", "sqlite", id="x_reply-token_revoked"),
    pytest.param("messenger", "thread unreadable", "sqlite", id="messenger-thread_unreadable"),
    pytest.param("bluesky", "", "postgres", id="bluesky-postgres", marks=pytest.mark.postgres),
    pytest.param("messenger", "", "postgres", id="messenger-postgres", marks=pytest.mark.postgres),
]


def trouble_before_restart(flavour: Flavour, trouble: str) -> None:
    """What keeps the restarted service from reading the thread back."""
    if trouble == "token revoked":  # the brand revoked the app on X: no token of it works
        assert isinstance(flavour.fake, FakeX)
        flavour.fake.expire()
        flavour.fake.refresh_token = "issued-to-someone-else"
    elif trouble == "thread unreadable":  # Meta's reads answer 500
        flavour.fake.errors = [500] * 5
    else:
        assert not trouble, trouble


@dataclass
class Published:
    """What the service published about the reply, read back from the streams."""

    interactions: list[InteractionReceived]
    states: list[str]
    outcomes: list[CommandApplied | CommandRejected]


async def stored(js: JetStreamContext, subject: str) -> list[Any]:
    """Every message the streams hold on `subject`, read without consuming them."""
    sub = await js.subscribe(subject, ordered_consumer=True)
    found = []
    try:
        while True:
            found.append(await sub.next_msg(timeout=0.3))
    except NatsTimeout:
        pass
    finally:
        await sub.unsubscribe()
    return found


async def published(js: JetStreamContext, command: SendReply) -> Published:
    interactions = [  # stored as sh.ix.<lane>.<tenant>.<account>
        InteractionReceived.model_validate_json(m.data) for m in await stored(js, subjects.all_interactions())
    ]
    events = [ReplyEvent.model_validate_json(m.data) for m in await stored(js, subjects.all_reply_events())]
    outcomes: list[CommandApplied | CommandRejected] = []
    for m in await stored(js, "sh.result.tenant.acme.*"):
        outcome = (CommandApplied if m.subject.endswith(".applied") else CommandRejected).model_validate_json(
            m.data
        )
        if outcome.command_id == command.command_id:
            outcomes.append(outcome)
    return Published(
        interactions=[i for i in interactions if i.direction == "outbound" and i.account_id == ACCOUNT],
        states=[str(e.state) for e in events if e.reply_id == command.command_id],
        outcomes=outcomes,
    )


async def command_done(js: JetStreamContext) -> bool:
    """The reply command is acknowledged: nothing of it is pending or being handled."""
    info = await js.consumer_info(subjects.COMMANDS_STREAM, CONSUMER)
    return info.num_ack_pending == 0 and info.num_pending == 0 and info.delivered.stream_seq >= 1


@pytest.mark.parametrize(("name", "trouble", "empty_database_url"), CASES, indirect=["empty_database_url"])
async def test_killed_after_the_platform_took_the_reply_it_is_there_once(
    name: str, trouble: str, database_url: str, nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    started = time.monotonic()
    flavour = FLAVOURS[name]()
    keys = installation_keys()
    rows = await answerable(database_url, flavour, SecretBox(keys["STAYHUMAN_SECRET_KEY"]))
    outbound = OutboundProcess.configured(
        tmp_path,
        **keys,
        STAYHUMAN_NATS_URL=nats_server.url,
        STAYHUMAN_DATABASE_URL=database_url,
        STAYHUMAN_OUTBOUND_ACK_WAIT="2s",
        STAYHUMAN_OUTBOUND_SETTLE="0.2",
        STAYHUMAN_OUTBOUND_RETRY_DELAY="0.5",
        STAYHUMAN_OUTBOUND_PRIVATE_WEBHOOKS="true",
        STAYHUMAN_LOG_JSON="false",
    )
    command = SendReply(
        tenant_id="acme", conversation_id=rows.conversation_id, person_id="kai", session=rows.session,
        text=TEXT, issued_by="kai",
    )  # fmt: skip
    nc: Client = await nats.connect(nats_server.url)
    js = nc.jetstream()
    world = World(database_url)

    async def row() -> ReplyRow | None:
        async with world.sessions() as session:
            return await session.get(ReplyRow, command.command_id)

    async def settled() -> ReplyRow | bool:
        found = await row()
        return found if found is not None and found.state in SETTLED else False

    async def at_the_platform() -> list[str]:
        return flavour.replies()

    flavour.fake.hold = math.inf  # the platform stores the post and never answers
    try:
        await outbound.start()
        await publish_pipelined(js, [command_outgoing(command)])
        await eventually(at_the_platform, timeout=30, what=f"the reply stored by the {flavour.name} fake")
        before = await row()
        assert before is not None and before.state == "sending" and before.started_at is not None, before
        outbound.kill()
        flavour.fake.hold = None
        trouble_before_restart(flavour, trouble)
        await outbound.start()
        after = await eventually(settled, timeout=60, what="the reply settled after the restart")
        assert isinstance(after, ReplyRow)
        await eventually(lambda: command_done(js), timeout=30, what="the reply command acknowledged")
        seen = await published(js, command)
    except BaseException:
        print(f"\noutbound's log:\n{outbound.tail()}")
        raise
    finally:
        outbound.stop()
        flavour.fake.stop()
        await world.close()
        await nc.close()

    replies = flavour.replies()
    print(
        f"\n{flavour.name + (f' ({trouble})' if trouble else ''):<32} {database_url.split('+', 1)[0]:<10} "
        f"killed mid-post, restarted: posts sent {flavour.writes()}, replies at the platform {len(replies)}, "
        f"reads {flavour.reads()}; row {after.state} {after.platform_id or after.error!r}; "
        f"interactions {len(seen.interactions)}, reply events {seen.states}; "
        f"{time.monotonic() - started:.1f} s"
    )
    assert len(replies) == 1, f"the platform has {len(replies)} replies: {replies}"
    if not flavour.idempotent:
        assert flavour.writes() == 1, "posted again on a platform that does not dedupe"
    assert [o.command_id for o in seen.outcomes] == [command.command_id]
    if trouble:
        assert after.state == "in_doubt", after
        assert after.platform_id is None
        assert seen.states == ["in_doubt"]
        assert seen.interactions == []
        [outcome] = seen.outcomes
        assert isinstance(outcome, CommandRejected) and outcome.code == "in_doubt", outcome
        return
    assert after.state == "sent", after
    assert after.platform_id == replies[0]
    assert seen.states == ["sent"]
    [interaction] = seen.interactions
    assert interaction.sent_by == "kai"
    assert interaction.external_id == replies[0]
    assert interaction.text == TEXT
    assert isinstance(seen.outcomes[0], CommandApplied)
    if flavour.idempotent:
        assert flavour.writes() == 2, "settled by posting again under the same key"
    else:
        assert flavour.reads() >= 1, "a platform without our key is read before anything else"
