"""Several router processes, one database (PostgreSQL, or SQLite where they take turns with
each unit of work), one durable consumer.

A few thousand interactions on three routers: no conversation is assigned twice, no owner
goes over capacity, and equally loaded owners of equal capacity end up with counts that
differ by at most one. A thousand messages sent together with the brand's replies on two
routers: every reply counts, whichever router gets it first, and nobody is alerted."""

import asyncio
import json
import re
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
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
from tests.e2e.stack import Stack, smtp_env
from tests.helpers import config_yaml, eventually
from tests.smtp import Received, SmtpServer

pytestmark = [pytest.mark.e2e]

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


def interaction(
    tenant: str,
    account: str,
    external_id: str,
    thread: str,
    *,
    outbound: bool = False,
    at: datetime | None = None,
    parent: str | None = None,
) -> Outgoing:
    now = datetime.now(UTC)
    event = InteractionReceived(
        tenant_id=tenant,
        interaction_id=interaction_id(
            tenant_id=tenant, account_id=account, external_id=external_id, edit_version=0
        ),
        account_id=account,
        platform=Platform.facebook,
        external_id=external_id,
        kind=Kind.reply if outbound else Kind.comment,
        direction=Direction.outbound if outbound else Direction.inbound,
        thread_id=thread,
        parent_id=parent,
        author=Author(id="brand" if outbound else f"author-{thread}", name="Someone"),
        text="We are on it." if outbound else "Where is my order?",
        created_at=at or now,
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
    tmp_path: Path, empty_database_url: str, nats_server: EmbeddedNats
) -> None:
    postgres_url = empty_database_url  # the routers' database: SQLite or PostgreSQL
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
        # the routers waited for each other's units of work; none failed for meeting another
        assert "batch failed" not in stack.logs() and "routing failed" not in stack.logs()
    finally:
        stack.stop()


PAIRS = 1000
SLA_SECONDS = 60  # longer than routing all pairs takes (about 20 s here, twice that on a loaded machine); a conversation left open would breach


@pytest.mark.postgres
async def test_replies_sent_with_their_messages_to_two_routers_all_count_and_nobody_is_alerted(
    tmp_path: Path, postgres_url: str, nats_server: EmbeddedNats
) -> None:
    """Each pair is a customer's message and the brand's reply a millisecond later, published
    together; with batches of one, the two routers routinely route the two at the same moment
    (or the reply first). One message nobody answers shows that a conversation left open would
    be alerted within the test."""
    smtp = SmtpServer().start()
    stack = Stack.configured(
        tmp_path / "stack",
        config_yaml(
            tenant="acme",
            account="acme-fb",
            secret="acme-secret-0123456789",
            people=["p0", "p1"],
            first_response=f"{SLA_SECONDS}s",
        ),
        nats=nats_server,
        STAYHUMAN_DATABASE_URL=postgres_url,
        STAYHUMAN_LOG_LEVEL="warning",
        STAYHUMAN_ROUTER_BATCH_SIZE="3",
        STAYHUMAN_ALERT_GROUPING="false",  # every alert is its own email
        **smtp_env(smtp.port),
    ).start("--routers", "2")
    try:
        started = datetime.now(UTC)
        messages = []
        for n in range(PAIRS):
            messages.append(interaction("acme", "acme-fb", f"m{n}", f"t{n}", at=started))
            messages.append(
                interaction(
                    "acme",
                    "acme-fb",
                    f"r{n}",
                    f"t{n}",
                    outbound=True,
                    parent=f"m{n}" if n % 2 else None,  # half name the message they answer
                    at=started + timedelta(milliseconds=1),
                )
            )
        messages.append(interaction("acme", "acme-fb", "canary", "unanswered", at=started))
        nc = await nats.connect(nats_server.url)
        js = nc.jetstream()
        for first in range(0, len(messages), 500):
            await publish_pipelined(js, messages[first : first + 500])
        await nc.close()

        async def all_stored() -> bool:
            rows = await query(postgres_url, select(func.count()).select_from(INTERACTIONS))
            return rows[0][0] == len(messages)

        await eventually(all_stored, what=f"{len(messages)} interactions stored", timeout=SLA_SECONDS)
        routed = (datetime.now(UTC) - started).total_seconds()
        rows = await query(postgres_url, select(CONVERSATIONS.c.thread_id, CONVERSATIONS.c.state))
        still_open = sorted(row.thread_id for row in rows if row.state == "open")
        print(
            f"\n{len(messages)} interactions routed by 2 routers in {routed:.1f} s; open: {len(still_open)}"
        )
        assert still_open == ["unanswered"], f"{len(still_open) - 1} answered conversations left open"
        assert len(rows) == PAIRS + 1
        people = await query(postgres_url, select(PEOPLE.c.id, PEOPLE.c.load))
        assert sorted(row.load for row in people) == [0, 1]  # only the canary weighs on its owner

        [canary] = await query(
            postgres_url, select(CONVERSATIONS.c.id).where(CONVERSATIONS.c.thread_id == "unanswered")
        )

        async def canary_alerted() -> list[Received]:
            return [m for m in smtp.messages() if canary.id in m.body]

        await eventually(canary_alerted, timeout=SLA_SECONDS + 20, what="the unanswered message's alert")
        await asyncio.sleep(3)  # every other deadline fell due no later than the canary's
        others = [m.subject for m in smtp.messages() if canary.id not in m.body]
        assert others == [], f"{len(others)} false alerts, e.g. {others[:3]}"
    finally:
        stack.stop()
        smtp.stop()
