"""What users see when parts fail: JetStream unavailable, the router killed mid-stream."""

import asyncio
import os
import re
import signal
import time
from pathlib import Path

import httpx
import nats
import pytest
from sqlalchemy import func
from sqlmodel import col, select

from shared import subjects
from shared.db.models import ConversationRow, InteractionRow
from shared.db.session import create_engine, session_factory
from stayhuman.natsserver import EmbeddedNats
from tests.e2e.stack import Stack, post_webhook
from tests.helpers import config_yaml, eventually, generic_body

pytestmark = pytest.mark.e2e
SECRET = "failure-secret-0123456789"


def started_stack(workdir: Path, nats_server: EmbeddedNats, **env: str) -> Stack:
    stack = Stack(workdir, env_overrides=env, nats=nats_server)
    config = workdir / "acme.yaml"
    workdir.mkdir(parents=True, exist_ok=True)
    config.write_text(
        config_yaml(tenant="acme", account="acme-fb", secret=SECRET, people=["maria", "li", "sam"])
    )
    stack.cli("migrate")
    stack.cli("apply", "-f", str(config))
    return stack.start()


async def test_503_when_jetstream_does_not_acknowledge(tmp_path: Path, nats_server: EmbeddedNats) -> None:
    stack = started_stack(tmp_path / "stack", nats_server, STAYHUMAN_PUBLISH_TIMEOUT="1s")
    try:
        nc = await nats.connect(nats_server.url)
        await nc.jetstream().delete_stream(subjects.INTERACTIONS_STREAM)
        await nc.close()
        async with httpx.AsyncClient(timeout=30) as client:
            no_stream = await post_webhook(client, stack, "acme-fb", SECRET, generic_body("m-1"))
            not_ready = await client.get(stack.url("ingest-ops", "/readyz"))
            nats_server.stop()
            started = time.monotonic()
            no_server = await post_webhook(client, stack, "acme-fb", SECRET, generic_body("m-2"))
            waited = time.monotonic() - started
        assert no_stream.status_code == 503
        assert no_stream.json()["error"] == "interaction not stored, retry later"
        assert no_stream.headers["retry-after"] == "5"
        assert not_ready.status_code == 503
        assert not_ready.json()["checks"]["streams"] == "missing: SH_INTERACTIONS"
        assert no_server.status_code == 503 and waited < 10
    finally:
        stack.stop()


async def _count(stack: Stack, model: type) -> int:
    engine = create_engine(stack.database_url)
    try:
        async with session_factory(engine)() as session:
            query = select(func.count()).select_from(model)
            if model is ConversationRow:
                query = query.where(col(ConversationRow.owner_id).is_not(None))
            return int((await session.exec(query)).one())
    finally:
        await engine.dispose()


def _metric(text: str, name: str) -> float:
    match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


async def test_router_killed_mid_stream_loses_and_duplicates_nothing(
    tmp_path: Path, nats_server: EmbeddedNats
) -> None:
    total = 2000
    stack = started_stack(
        tmp_path / "stack",
        nats_server,
        STAYHUMAN_ROUTER_ACK_WAIT="2s",
        STAYHUMAN_ROUTER_BATCH_SIZE="100",
        STAYHUMAN_LOG_LEVEL="warning",
    )
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    try:
        router_pid = stack.service_pid("router")
        killed_at: list[int] = []

        sent = asyncio.Event()

        async def killer() -> None:
            # Freeze the router early so that a backlog builds; once every webhook is in,
            # let it chew the backlog batch after batch, and kill it in the middle: it then
            # dies holding a batch it has fetched and not acknowledged.
            async def started() -> bool:
                return await _count(stack, ConversationRow) >= total // 10

            await eventually(started, timeout=60, interval=0.01, what="the first assignments")
            os.kill(router_pid, signal.SIGSTOP)
            await sent.wait()
            os.kill(router_pid, signal.SIGCONT)
            while not killed_at:
                assigned = await _count(stack, ConversationRow)
                if total // 4 <= assigned <= 3 * total // 4:
                    os.kill(router_pid, signal.SIGKILL)
                    killed_at.append(assigned)
                    return
                await asyncio.sleep(0.005)

        async def send(client: httpx.AsyncClient, queue: asyncio.Queue[int], statuses: list[int]) -> None:
            while not queue.empty():
                i = queue.get_nowait()
                body = generic_body(f"crash-{i}", thread_id=f"crash-thread-{i}")
                statuses.append((await post_webhook(client, stack, "acme-fb", SECRET, body)).status_code)

        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(total):
            queue.put_nowait(i)
        statuses: list[int] = []
        kill = asyncio.create_task(killer())
        async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=32)) as client:
            await asyncio.gather(*(send(client, queue, statuses) for _ in range(32)))
        sent.set()
        await asyncio.wait_for(kill, timeout=60)
        print(f"router SIGKILLed with {killed_at[0]} of {total} assigned")
        assert statuses.count(202) == total

        async def all_assigned() -> bool:
            return await _count(stack, ConversationRow) == total

        await eventually(all_assigned, timeout=90, interval=0.2, what=f"{total} assigned conversations")
        new_pid = stack.service_pid("router")
        assert new_pid != router_pid  # `up` restarted it
        async with httpx.AsyncClient() as client:
            metrics = (await client.get(stack.url("router", "/metrics"))).text
        redelivered = _metric(metrics, "stayhuman_router_redeliveries_total")
        deliveries = 0
        for lane in range(subjects.LANES):  # the router consumes the interactions stream by lane
            info = await js.consumer_info(subjects.INTERACTIONS_STREAM, f"router-interactions-{lane}")
            deliveries += info.delivered.consumer_seq
        print(
            f"redeliveries seen by the restarted router: {redelivered:.0f}; "
            f"deliveries {deliveries} for {total} messages"
        )
        assert redelivered > 0
        assert deliveries > total  # deliveries beyond one per message: redeliveries
        assert await _count(stack, InteractionRow) == total
        info = await js.stream_info(
            subjects.EVENTS_STREAM, subjects_filter=subjects.all_conversation_events("assigned")
        )
        per_conversation = info.state.subjects or {}
        assert len(per_conversation) == total
        assert set(per_conversation.values()) == {1}
    finally:
        await nc.close()
        stack.stop()
