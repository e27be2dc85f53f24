"""Three router processes, one PostgreSQL database, one durable consumer, a few thousand
interactions: no conversation is assigned twice, no owner goes over capacity, and equally
loaded owners of equal capacity end up with counts that differ by at most one."""

import json
import re
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import httpx
import nats
import pytest
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from sqlalchemy import func, select

from shared import subjects
from shared.db.core import CONVERSATIONS, INTERACTIONS, PEOPLE, fetch_rows
from shared.db.session import create_engine, session_factory
from shared.events import Author, Direction, InteractionReceived, Kind, Platform
from shared.ids import dedupe_key, interaction_id
from shared.jetstream import Outgoing, publish_pipelined
from stayhuman.natsserver import EmbeddedNats
from tests.e2e.stack import Stack
from tests.helpers import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

ROUTERS = 3
SPREAD = 2000  # conversations for four owners with room for all of them
BUSY = 1200  # conversations for three owners with room for 300 each
CAPACITY = 300
SAME_THREAD = 200  # threads that get two messages at once, likely on two replicas

CONFIG = f"""
people:
{"".join(f"  - {{id: p{n}, name: P{n}, email: p{n}@example.com, capacity: 10000}}{chr(10)}" for n in range(4))}
{"".join(f"  - {{id: b{n}, name: B{n}, email: b{n}@example.com, capacity: {CAPACITY}}}{chr(10)}" for n in range(3))}
tenants:
  - id: acme
    name: Acme
    sla_policies: [{{name: standard, first_response: 1h}}]
    teams: [{{id: care, name: Care, sla_policy: standard, members: [p0, p1, p2, p3]}}]
    accounts: [{{id: acme-fb, platform: facebook, handle: Acme, team: care, webhook_secret: acme-secret-0123456789}}]
  - id: busy
    name: Busy
    sla_policies: [{{name: standard, first_response: 1h}}]
    teams: [{{id: care, name: Care, sla_policy: standard, members: [b0, b1, b2]}}]
    accounts: [{{id: busy-fb, platform: facebook, handle: Busy, team: care, webhook_secret: busy-secret-0123456789}}]
"""


def interaction(tenant: str, account: str, external_id: str, thread: str) -> Outgoing:
    now = datetime.now(UTC)
    event = InteractionReceived(
        tenant_id=tenant,
        interaction_id=interaction_id(
            tenant_id=tenant, account_id=account, external_id=external_id, edit_version=0
        ),
        account_id=account,
        platform=Platform.facebook,
        external_id=external_id,
        kind=Kind.comment,
        direction=Direction.inbound,
        thread_id=thread,
        author=Author(id=f"author-{thread}", name="Someone"),
        text="Where is my order?",
        created_at=now,
        received_at=now,
    )
    return Outgoing(
        subjects.interaction_received(tenant_id=tenant, account_id=account),
        event.model_dump_json().encode(),
        dedupe_key(tenant_id=tenant, account_id=account, external_id=external_id, edit_version=0),
        "",
    )


async def query(url: str, statement: object) -> list:
    engine = create_engine(url)
    try:
        async with session_factory(engine)() as session:
            return list(await fetch_rows(session, statement))
    finally:
        await engine.dispose()


async def test_three_routers_share_the_work_without_double_assignment_or_overload(
    tmp_path: Path, postgres_url: str, nats_server: EmbeddedNats
) -> None:
    stack = Stack.configured(
        tmp_path / "stack",
        CONFIG,
        nats=nats_server,
        STAYHUMAN_DATABASE_URL=postgres_url,
        STAYHUMAN_LOG_LEVEL="warning",
        STAYHUMAN_ROUTER_BATCH_SIZE="100",
    ).start("--routers", str(ROUTERS))
    try:
        messages = [interaction("acme", "acme-fb", f"a{n}", f"a-thread-{n}") for n in range(SPREAD)]
        messages += [interaction("busy", "busy-fb", f"b{n}", f"b-thread-{n}") for n in range(BUSY)]
        # two messages of one new thread, side by side: two replicas may race to open it
        for n in range(SAME_THREAD):
            messages.insert(2 * n + 1, interaction("acme", "acme-fb", f"a{n}-again", f"a-thread-{n}"))
        total = len(messages)
        nc = await nats.connect(nats_server.url)
        js = nc.jetstream()
        started = time.monotonic()
        for first in range(0, total, 500):
            await publish_pipelined(js, messages[first : first + 500])

        async def all_stored() -> bool:
            rows = await query(postgres_url, select(func.count()).select_from(INTERACTIONS))
            return rows[0][0] == total

        await eventually(all_stored, what=f"{total} interactions stored", timeout=240)
        elapsed = time.monotonic() - started
        print(
            f"\n{total} interactions routed by {ROUTERS} routers in {elapsed:.1f} s ({total / elapsed:.0f}/s)"
        )

        # every router took a share of the batches
        shares = []
        async with httpx.AsyncClient() as client:
            for index in range(ROUTERS):
                text = (
                    await client.get(f"http://127.0.0.1:{stack.ports['router'] + 10 * index}/metrics")
                ).text
                found = re.search(r'stayhuman_router_interactions_total\{result="routed"\} ([0-9.e+]+)', text)
                shares.append(float(found.group(1)) if found else 0.0)
        print(f"routed per router: {shares}")
        assert all(share > 0 for share in shares), shares
        assert sum(shares) == total

        conversations = await query(
            postgres_url, select(CONVERSATIONS.c.id, CONVERSATIONS.c.tenant_id, CONVERSATIONS.c.owner_id)
        )
        assert len(conversations) == SPREAD + BUSY  # the raced threads opened one conversation each

        # exactly one assignment per conversation, as published (the outbox relay may still be
        # publishing the last batches of a router whose publish failed)
        consumer = await js.pull_subscribe(
            subjects.all_conversation_events("assigned"),
            durable=None,
            stream=subjects.EVENTS_STREAM,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL, ack_policy=AckPolicy.NONE),
        )
        assigned: Counter[str] = Counter()
        give_up = time.monotonic() + 60
        while set(assigned) != {row.id for row in conversations} and time.monotonic() < give_up:
            try:
                batch = await consumer.fetch(1000, timeout=2)
            except nats.errors.TimeoutError:
                continue
            for msg in batch:
                assigned[json.loads(msg.data)["conversation_id"]] += 1
        assert set(assigned) == {row.id for row in conversations}
        doubled = {cid: n for cid, n in assigned.items() if n != 1}
        assert not doubled, f"assigned more than once: {list(doubled.items())[:5]}"
        await nc.close()

        # loads: exact, within capacity, and fair
        people = {row.id: row for row in await query(postgres_url, select(PEOPLE))}
        owned = Counter(row.owner_id for row in conversations if row.owner_id)
        for person in people.values():
            assert person.load == owned[person.id], person.id
            assert person.load <= person.capacity, person.id
        spread = [owned[f"p{n}"] for n in range(4)]
        print(
            f"acme: {spread} (of {SPREAD}); busy: {[owned[f'b{n}'] for n in range(3)]} (capacity {CAPACITY})"
        )
        assert sum(spread) == SPREAD and max(spread) - min(spread) <= 1
        assert [owned[f"b{n}"] for n in range(3)] == [CAPACITY] * 3
        queued = [row for row in conversations if row.tenant_id == "busy" and row.owner_id is None]
        assert len(queued) == BUSY - 3 * CAPACITY
    finally:
        stack.stop()
