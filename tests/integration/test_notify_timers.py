"""Deadlines to timers to email, against a real nats-server, each database and a real SMTP server."""

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext
from sqlalchemy import insert, update
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from services.notify.mailer import SmtpMailer
from services.notify.main import NotifyWorkers, build_workers
from services.notify.settings import NotifySettings
from shared import subjects
from shared.db.models import ConversationRow
from shared.db.session import create_engine, session_factory, transaction
from shared.events import DeadlineChanged, DeadlineKind
from shared.ids import conversation_id
from shared.jetstream import MSG_ID, StreamSettings, ensure_streams, stream_configs
from shared.secrets import new_key, new_vapid_pem
from stayhuman.config import apply_config, parse_config
from tests.helpers import config_yaml, eventually, unique
from tests.smtp import SmtpServer


@dataclass
class World:
    js: JetStreamContext
    sessions: async_sessionmaker[AsyncSession]
    smtp: SmtpServer
    settings: NotifySettings
    workers: NotifyWorkers | None = None

    async def start_notify(self) -> None:
        self.workers = build_workers(self.js, self.sessions, self.settings, SmtpMailer(self.settings))
        await self.workers.start()

    async def stop_notify(self) -> None:
        if self.workers is not None:
            await self.workers.stop()
            self.workers = None

    async def conversation(self, *, version: int = 1) -> str:
        """A conversation as the router leaves it: open, assigned to maria."""
        cid = conversation_id(account_id="acme-fb", thread_id=unique("thread"))
        now = datetime.now(UTC)
        async with transaction(self.sessions) as session:
            connection = await session.connection()
            await connection.execute(
                insert(ConversationRow.__table__).values(  # type: ignore[attr-defined]
                    id=cid,
                    tenant_id="acme",
                    account_id="acme-fb",
                    platform="facebook",
                    thread_id=cid,
                    state="open",
                    team_id=None,
                    owner_id="maria",
                    assignment_reason="test",
                    author_id="u1",
                    author_name="Dana Reyes",
                    last_inbound_text="Where is my order?",
                    last_inbound_url="https://facebook.example/p/1",
                    opened_at=now,
                    assigned_at=now,
                    awaiting_since=now,
                    last_inbound_at=now,
                    deadline_version=version,
                    updated_at=now,
                )
            )
        return cid

    async def deadline(self, cid: str, version: int, due_at: datetime | None) -> None:
        """Publish the router's deadline contract (and keep its conversation row in step)."""
        async with transaction(self.sessions) as session:
            connection = await session.connection()
            await connection.execute(
                update(ConversationRow.__table__)  # type: ignore[attr-defined]
                .where(ConversationRow.__table__.c.id == cid)  # type: ignore[attr-defined]
                .where(ConversationRow.__table__.c.deadline_version <= version)  # type: ignore[attr-defined]
                .values(deadline_version=version, due_at=due_at)
            )
        event = DeadlineChanged(
            tenant_id="acme",
            conversation_id=cid,
            account_id="acme-fb",
            deadline_version=version,
            kind=DeadlineKind.first_response if due_at else None,
            owner_id="maria",
            started_at=datetime.now(UTC) if due_at else None,
            warn_at=None,
            due_at=due_at,
            reason="test",
        )
        await self.js.publish(
            subjects.deadline(tenant_id="acme", conversation_id=cid),
            event.model_dump_json().encode(),
            headers={MSG_ID: f"deadline:{cid}:{version}"},
        )

    def mails_for(self, cid: str) -> list:  # type: ignore[type-arg]
        return [m for m in self.smtp.messages() if cid in m.body]


@pytest.fixture
async def world(nc: Client, database_url: str) -> AsyncIterator[World]:
    js = nc.jetstream()
    await ensure_streams(js, stream_configs(StreamSettings()))
    engine = create_engine(database_url)
    sessions = session_factory(engine)
    text = config_yaml(tenant="acme", account="acme-fb", secret="s" * 20, people=["maria"])
    await apply_config(sessions, parse_config(text, source="t.yaml"), source="t.yaml")
    smtp = SmtpServer().start()
    settings = NotifySettings(
        nats_url="unused",
        database_url=database_url,
        smtp_host="127.0.0.1",
        smtp_port=smtp.port,
        smtp_security="none",
        alert_retry_initial=timedelta(seconds=1),
        alert_retry_max=timedelta(seconds=3),
        notify_ack_wait=timedelta(seconds=2),
        secret_key=new_key(),  # type: ignore[arg-type]
        vapid_private_key=new_vapid_pem(),  # type: ignore[arg-type]
    )
    state = World(js, sessions, smtp, settings)
    await state.start_notify()
    yield state
    await state.stop_notify()
    smtp.stop()
    await engine.dispose()


def soon(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


async def test_a_due_deadline_sends_one_email_at_due_time(world: World) -> None:
    cid = await world.conversation()
    due = soon(1.5)
    await world.deadline(cid, 1, due)
    mails = await eventually(lambda: _mails(world, cid), timeout=10, what="the overdue email")
    lateness = mails[0].at - due.timestamp()
    print(f"overdue email {lateness * 1000:.0f} ms after the due time")
    assert 0 <= lateness < 2
    assert mails[0].recipients == ["maria@example.com"]
    assert "Dana Reyes has waited" in mails[0].subject
    await asyncio.sleep(1)
    assert len(world.mails_for(cid)) == 1


async def _mails(world: World, cid: str) -> list:  # type: ignore[type-arg]
    return world.mails_for(cid)


async def test_rearm_moves_the_timer(world: World) -> None:
    cid = await world.conversation()
    await world.deadline(cid, 1, soon(1))
    await world.deadline(cid, 2, soon(3))
    await asyncio.sleep(2)
    assert world.mails_for(cid) == []  # the first time passed without a word
    mails = await eventually(lambda: _mails(world, cid), timeout=10, what="the moved email")
    assert len(mails) == 1 and mails[0].message["Message-ID"].startswith(f"<overdue.{cid}.v2@")


async def test_cancel_stops_the_email(world: World) -> None:
    cid = await world.conversation()
    await world.deadline(cid, 1, soon(1))
    await world.deadline(cid, 2, None)  # the brand replied
    await asyncio.sleep(3)
    assert world.mails_for(cid) == []


async def test_out_of_order_versions_never_alert_wrongly(world: World) -> None:
    cid = await world.conversation()
    await world.deadline(cid, 2, None)  # responded, delivered first
    await world.deadline(cid, 1, soon(0.5))  # the older "set", arriving late
    late = await world.conversation()
    await world.deadline(late, 3, soon(2.5))
    await world.deadline(late, 2, soon(0.5))  # an older, earlier time must not win
    await asyncio.sleep(1.5)
    assert world.mails_for(cid) == [] and world.mails_for(late) == []
    mails = await eventually(lambda: _mails(world, late), timeout=10, what="version 3's email")
    assert mails[0].message["Message-ID"].startswith(f"<overdue.{late}.v3@")
    assert world.mails_for(cid) == []


async def test_a_deadline_already_past_fires_at_once(world: World) -> None:
    cid = await world.conversation()
    started = time.time()
    await world.deadline(cid, 1, soon(-60))
    mails = await eventually(lambda: _mails(world, cid), timeout=5, what="the immediate email")
    assert mails[0].at - started < 2


async def test_timers_armed_while_notify_is_down_fire_once_after_restart(world: World) -> None:
    cid = await world.conversation()
    await world.deadline(cid, 1, soon(1))
    await eventually(lambda: _armed(world, cid), timeout=5, what="the timer to be armed")
    await world.stop_notify()
    await asyncio.sleep(2)  # the timer fires while nobody listens
    assert world.mails_for(cid) == []
    await world.start_notify()
    await eventually(lambda: _mails(world, cid), timeout=10, what="the email after restart")
    await asyncio.sleep(1)
    assert len(world.mails_for(cid)) == 1


async def _armed(world: World, cid: str) -> bool:
    assert world.workers is not None
    return cid in await world.workers.scheduler.armed_conversations()


async def test_reconciler_rearms_a_purged_schedule(world: World) -> None:
    cid = await world.conversation()
    await world.deadline(cid, 1, soon(3))
    await eventually(lambda: _armed(world, cid), timeout=5, what="the timer to be armed")
    await world.stop_notify()
    await world.js.purge_stream(
        subjects.TIMERS_STREAM, subject=subjects.timer_schedule(tenant_id="acme", conversation_id=cid)
    )
    await world.start_notify()  # reconciles at start, while it already consumes
    assert world.workers is not None and world.workers.reconciling is not None
    assert not world.workers.reconciling.done()  # started, not waited for
    assert await world.workers.reconciling == 1
    assert await _armed(world, cid)
    await eventually(lambda: _mails(world, cid), timeout=10, what="the email of the re-armed timer")


async def test_smtp_outage_ends_in_exactly_one_email(world: World) -> None:
    cid = await world.conversation()
    world.smtp.stop()
    await world.deadline(cid, 1, soon(0.5))
    await asyncio.sleep(4)  # several failed attempts, each retried on a timer
    world.smtp.start()
    mails = await eventually(lambda: _mails(world, cid), timeout=15, what="the email after the outage")
    await asyncio.sleep(2)
    assert len(world.mails_for(cid)) == 1 and mails[0].recipients == ["maria@example.com"]


async def test_a_slow_smtp_server_gets_one_email_not_a_redelivery(world: World) -> None:
    """Sending takes longer than the ack wait: the timer is kept in progress, not redelivered."""
    world.smtp.delay = 5
    cid = await world.conversation()
    await world.deadline(cid, 1, soon(0.2))
    await eventually(lambda: _mails(world, cid), timeout=15, what="the slow email")
    await asyncio.sleep(3)
    assert len(world.mails_for(cid)) == 1
    info = await world.js.consumer_info(subjects.TIMERS_STREAM, "notify-timers")
    assert info.delivered.consumer_seq == 1  # delivered once: no redelivery while it was slow
    assert info.num_ack_pending == 0


async def test_a_deadline_nats_cannot_schedule_is_not_armed_and_never_fires(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """Due after 2262 (Go's nanoseconds end there): armed, the schedule would overflow and fire
    at once. It is not armed, and the log says so; a deadline after it is handled as usual."""
    far = await world.conversation()
    await world.deadline(far, 1, datetime(2300, 1, 1, tzinfo=UTC))
    control = await world.conversation()
    await world.deadline(control, 1, soon(1))  # behind the far one in the same stream
    await eventually(lambda: _mails(world, control), timeout=10, what="the control deadline's email")
    await asyncio.sleep(1)
    assert world.mails_for(far) == []
    assert world.workers is not None
    assert far not in await world.workers.scheduler.armed_conversations()
    said = [r for r in caplog.records if "after what NATS can schedule" in r.getMessage()]
    assert said and getattr(said[0], "conversation_id", None) == far
