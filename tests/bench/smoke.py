"""Smoke benchmark: interactions per second, webhook to assigned, on this machine.

`make bench` prints figures; it asserts nothing about speed (machines are noisy).
Phase 1 drives the whole path over HTTP; phase 2 feeds JetStream directly to
measure what the router alone sustains.
"""

import argparse
import asyncio
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nats
from sqlalchemy import func
from sqlmodel import col, select

from services.ingest.generic import GenericInteraction, normalise
from shared import subjects
from shared.db.models import ConversationRow
from shared.db.session import create_engine, session_factory
from shared.events import ConversationResolved, DeadlineChanged, DeadlineKind, Platform
from shared.ids import dedupe_key
from shared.jetstream import Outgoing, publish_pipelined
from stayhuman.natsserver import EmbeddedNats
from tests.bench.loadgen import build_post, run_load
from tests.e2e.stack import Stack
from tests.helpers import config_yaml, generic_body, sign

SECRET = "bench-secret-0123456789"


async def assigned(stack: Stack) -> int:
    engine = create_engine(stack.database_url)
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


async def wait_assigned(stack: Stack, target: int, timeout: float = 600) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await assigned(stack) >= target:
            return time.monotonic()
        await asyncio.sleep(0.05)
    raise RuntimeError(f"only {await assigned(stack)} of {target} assigned after {timeout}s")


async def http_phase(stack: Stack, count: int, connections: int) -> None:
    requests = []
    for i in range(count):
        body = generic_body(f"http-{i}", thread_id=f"http-thread-{i}")
        headers = {"Content-Type": "application/json", "X-Signature-256": sign(SECRET, body)}
        requests.append(
            build_post("127.0.0.1", stack.ports["ingest"], "/webhooks/generic/bench-fb", body, headers)
        )
    before = await assigned(stack)
    started = time.monotonic()
    result = await run_load("127.0.0.1", stack.ports["ingest"], requests, connections=connections)
    done_at = await wait_assigned(stack, before + count)
    print(f"webhooks answered: {result.statuses} over {connections} connections")
    print(
        f"ingest, webhook -> JetStream ack:   {count / result.seconds:8.0f} interactions/s"
        f"  (p50 {result.percentile(0.5) * 1000:.1f} ms, p99 {result.percentile(0.99) * 1000:.1f} ms)"
    )
    print(f"whole path, webhook -> assigned:    {count / (done_at - started):8.0f} interactions/s")


async def router_phase(stack: Stack, nats_url: str, count: int) -> None:
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    now = datetime.now(UTC)
    messages = []
    for i in range(count):
        payload = GenericInteraction.model_validate_json(generic_body(f"js-{i}", thread_id=f"js-thread-{i}"))
        event = normalise(
            payload,
            tenant_id="bench",
            account_id="bench-fb",
            platform=Platform.facebook,
            received_at=now,
            correlation_id="",
        )
        messages.append(
            Outgoing(
                subjects.interaction_received(tenant_id="bench", account_id="bench-fb"),
                event.model_dump_json().encode(),
                dedupe_key(
                    tenant_id="bench", account_id="bench-fb", external_id=event.external_id, edit_version=0
                ),
            )
        )
    before = await assigned(stack)
    started = time.monotonic()
    for chunk in range(0, count, 2000):
        await publish_pipelined(js, messages[chunk : chunk + 2000])
    published_at = time.monotonic()
    done_at = await wait_assigned(stack, before + count)
    await nc.close()
    print(f"JetStream publish (pipelined):      {count / (published_at - started):8.0f} interactions/s")
    print(f"router, JetStream -> assigned:      {count / (done_at - started):8.0f} interactions/s")


async def deadline_phase(nats_url: str, count: int) -> None:
    """Deadline contracts straight onto JetStream, as the router publishes them; notify arms each."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    before = (await js.stream_info(subjects.TIMERS_STREAM)).state.messages
    due = datetime.now(UTC) + timedelta(days=1)
    messages = []
    for i in range(count):
        cid = uuid.uuid5(uuid.NAMESPACE_URL, f"bench-deadline-{i}").hex
        event = DeadlineChanged(
            tenant_id="bench",
            conversation_id=cid,
            account_id="bench-fb",
            deadline_version=1,
            kind=DeadlineKind.first_response,
            owner_id="ana",
            started_at=due,
            warn_at=None,
            due_at=due + timedelta(seconds=i % 3600),
            reason="bench",
        )
        messages.append(
            Outgoing(
                subjects.deadline(tenant_id="bench", conversation_id=cid),
                event.model_dump_json().encode(),
                f"deadline:{cid}:1",
            )
        )
    started = time.monotonic()
    for chunk in range(0, count, 2000):
        await publish_pipelined(js, messages[chunk : chunk + 2000])
    while True:
        if (await js.stream_info(subjects.TIMERS_STREAM)).state.messages >= before + count:
            break
        await asyncio.sleep(0.05)
    elapsed = time.monotonic() - started
    info = await js.stream_info(subjects.TIMERS_STREAM)
    await nc.close()
    print(f"notify, deadline -> armed timer:    {count / elapsed:8.0f} deadlines/s")
    print(
        f"timer stream: {info.state.messages} armed, {info.state.bytes / info.state.messages:.0f} bytes each"
    )


async def timeline_phase(nats_url: str, count: int) -> None:
    """Conversation events straight onto JetStream, as the router publishes them; the api keeps each
    in its timeline table."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    now = datetime.now(UTC)
    messages = []
    for i in range(count):
        cid = uuid.uuid5(uuid.NAMESPACE_URL, f"bench-timeline-{i}").hex
        event = ConversationResolved(
            tenant_id="bench", conversation_id=cid, account_id="bench-fb", reason="bench", resolved_at=now
        )
        messages.append(
            Outgoing(
                subjects.conversation_event(tenant_id="bench", conversation_id=cid, event="resolved"),
                event.model_dump_json().encode(),
                f"resolved:{cid}:bench",
            )
        )
    started = time.monotonic()
    for chunk in range(0, count, 2000):
        await publish_pipelined(js, messages[chunk : chunk + 2000])
    published_at = time.monotonic()
    while True:
        info = await js.consumer_info(subjects.EVENTS_STREAM, "api-timeline")
        if info.num_pending == 0 and info.num_ack_pending == 0:
            break
        await asyncio.sleep(0.05)
    elapsed = time.monotonic() - started
    await nc.close()
    print(f"JetStream publish (pipelined):      {count / (published_at - started):8.0f} events/s")
    print(f"api, event -> timeline row:         {count / elapsed:8.0f} events/s")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--http", type=int, default=10000, help="webhooks over HTTP")
    parser.add_argument("--direct", type=int, default=20000, help="interactions fed to JetStream directly")
    parser.add_argument("--deadlines", type=int, default=20000, help="deadlines armed directly")
    parser.add_argument("--timeline", type=int, default=20000, help="events the api's timeline keeps")
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        server = EmbeddedNats(work / "nats").start()
        stack = Stack(work / "stack", env_overrides={"STAYHUMAN_LOG_LEVEL": "warning"}, nats=server)
        # no SMTP server is set: `up` runs its dev sink; nothing falls due during the run
        (work / "stack").mkdir()
        config = work / "bench.yaml"
        config.write_text(
            config_yaml(tenant="bench", account="bench-fb", secret=SECRET, people=["ana", "ben", "cy", "di"])
        )
        stack.cli("migrate")
        stack.cli("apply", "-f", str(config))
        stack.start()
        try:
            print(
                f"StayHuman smoke benchmark ({args.http} over HTTP, {args.direct} direct, "
                f"{args.deadlines} deadlines, {args.timeline} timeline events), SQLite"
            )
            await http_phase(stack, args.http, args.connections)
            await router_phase(stack, server.url, args.direct)
            await deadline_phase(server.url, args.deadlines)
            await timeline_phase(server.url, args.timeline)
        finally:
            stack.stop()
            server.stop()


if __name__ == "__main__":
    asyncio.run(main())
