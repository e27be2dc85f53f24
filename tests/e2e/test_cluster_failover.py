"""The whole path on a 3-node NATS cluster and PostgreSQL, with a node killed during traffic."""

import asyncio
import statistics
import time
from pathlib import Path

import httpx
import nats
import pytest
from sqlalchemy import func
from sqlmodel import col, select

from shared import subjects
from shared.db.models import ConversationRow
from shared.db.session import create_engine, session_factory
from tests.cluster import NatsCluster
from tests.e2e.stack import Stack, post_webhook
from tests.helpers import config_yaml, eventually, generic_body
from tests.smtp import SmtpServer

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]
SECRET = "cluster-secret-0123456789"
SLA_SECONDS = 6
TOTAL = 150


async def count_assigned(database_url: str) -> int:
    engine = create_engine(database_url)
    try:
        async with session_factory(engine)() as session:
            query = (
                select(func.count())
                .select_from(ConversationRow)
                .where(col(ConversationRow.owner_id).is_not(None))
            )
            return int((await session.exec(query)).one())
    finally:
        await engine.dispose()


async def due_times(database_url: str) -> dict[str, float]:
    engine = create_engine(database_url)
    try:
        async with session_factory(engine)() as session:
            rows = (await session.exec(select(ConversationRow.id, ConversationRow.due_at))).all()
            return {cid: due.timestamp() for cid, due in rows if due is not None}
    finally:
        await engine.dispose()


async def test_a_nats_node_dies_during_traffic_and_nothing_is_lost_or_doubled(
    tmp_path: Path, postgres_url: str
) -> None:
    cluster = NatsCluster(tmp_path / "nats").start()
    smtp = SmtpServer().start()
    try:
        await _run(tmp_path, postgres_url, cluster, smtp)
    finally:
        smtp.stop()
        cluster.stop()


async def _run(tmp_path: Path, postgres_url: str, cluster: NatsCluster, smtp: SmtpServer) -> None:
    stack = Stack(
        tmp_path / "stack",
        env_overrides={
            "STAYHUMAN_NATS_URL": cluster.urls,
            "STAYHUMAN_NATS_REPLICAS": "3",
            "STAYHUMAN_DATABASE_URL": postgres_url,
            "STAYHUMAN_SMTP_HOST": "127.0.0.1",
            "STAYHUMAN_SMTP_PORT": str(smtp.port),
            "STAYHUMAN_SMTP_SECURITY": "none",
            "STAYHUMAN_LOG_LEVEL": "warning",
            "STAYHUMAN_ROUTER_ACK_WAIT": "5s",
            "STAYHUMAN_NOTIFY_ACK_WAIT": "5s",
            "STAYHUMAN_ALERT_GROUPING": "false",  # one email per conversation: what is counted
        },
    )
    (tmp_path / "stack").mkdir(parents=True)
    config = tmp_path / "acme.yaml"
    config.write_text(
        config_yaml(
            tenant="acme",
            account="acme-fb",
            secret=SECRET,
            people=["maria", "li"],
            first_response=f"{SLA_SECONDS}s",
        )
    )
    stack.cli("migrate")
    stack.cli("apply", "-f", str(config))
    try:
        stack.start("--routers", "2")
        nc = await nats.connect(cluster.urls.split(","))
        leader = (await nc.jetstream().stream_info(subjects.TIMERS_STREAM)).cluster.leader  # type: ignore[union-attr]
        await nc.close()
        assert leader is not None
        statuses: list[int] = []

        async def traffic() -> None:
            async with httpx.AsyncClient(timeout=30) as client:
                for i in range(TOTAL):
                    body = generic_body(f"cluster-{i}", thread_id=f"cluster-thread-{i}")
                    for _attempt in range(5):  # a platform retries what was not accepted
                        response = await post_webhook(client, stack, "acme-fb", SECRET, body)
                        if response.status_code == 202:
                            break
                        await asyncio.sleep(1)
                    statuses.append(response.status_code)
                    await asyncio.sleep(0.04)

        sending = asyncio.create_task(traffic())
        await asyncio.sleep(3)
        killed_at = time.time()
        cluster.node_named(leader).kill()  # the leader of the timer stream, mid-traffic
        print(f"killed {leader} (timer stream leader) with {len(statuses)} of {TOTAL} webhooks sent")
        await sending
        assert statuses == [202] * TOTAL

        async def all_assigned() -> bool:
            return await count_assigned(postgres_url) == TOTAL

        await eventually(all_assigned, timeout=60, interval=0.5, what=f"{TOTAL} assigned conversations")
        dues = await due_times(postgres_url)
        assert len(dues) == TOTAL

        async def all_mailed() -> bool:
            return len({m.message["X-StayHuman-Conversation"] for m in smtp.messages()}) >= TOTAL

        await eventually(all_mailed, timeout=SLA_SECONDS + 60, interval=0.5, what="an email per conversation")
        await asyncio.sleep(3)
        mails = smtp.messages()
        per_conversation: dict[str, list[float]] = {}
        for mail in mails:
            per_conversation.setdefault(str(mail.message["X-StayHuman-Conversation"]), []).append(mail.at)
        assert set(per_conversation) == set(dues)
        doubled = {cid: len(times) for cid, times in per_conversation.items() if len(times) > 1}
        assert doubled == {}
        lateness = sorted(times[0] - dues[cid] for cid, times in per_conversation.items())
        around_kill = [
            times[0] - dues[cid] for cid, times in per_conversation.items() if abs(dues[cid] - killed_at) < 10
        ]
        print(
            f"{len(mails)} emails for {TOTAL} conversations; lateness p50 {statistics.median(lateness) * 1000:.0f} ms, "
            f"max {lateness[-1] * 1000:.0f} ms; due within 10 s of the kill: {len(around_kill)}, "
            f"max lateness {max(around_kill, default=0) * 1000:.0f} ms"
        )
        assert lateness[0] >= 0  # never before the due time
        assert lateness[-1] < 10  # on time across the leader loss
    finally:
        stack.stop()
