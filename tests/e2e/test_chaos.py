"""Reliability under load. Signed webhooks arrive at a steady rate from several tenants for the
whole test while every part of the system fails in turn: both routers and an ingest worker
and notify are killed with SIGKILL, a node of the 3-node NATS cluster and PostgreSQL itself
are restarted, deliveries come twice (the same webhooks again, and messages republished on
JetStream under new ids) and a poison message is put straight on the interactions subject.
Afterwards every interaction answered 202 is stored once and its conversation assigned once,
every conversation left unanswered past its SLA is alerted once, no answered one is, and the
poison message is on the dead letter with its error. And a lone NATS server (no cluster) killed
and started again under load loses and doubles nothing."""

import asyncio
import json
import os
import signal
import subprocess
import time
import uuid
from collections import Counter
from pathlib import Path

import asyncpg
import httpx
import nats
import pytest
from nats.aio.msg import Msg
from sqlalchemy import select
from sqlalchemy.engine import make_url

from shared import subjects
from shared.db.core import CONVERSATIONS, INTERACTIONS
from shared.ids import conversation_id
from shared.jetstream import DLQ_ERROR
from stayhuman.natsserver import EmbeddedNats
from tests.chaos import (
    Timeline,
    WebhookSender,
    assigned_per_conversation,
    consumers_idle,
    generic,
    paced,
    read_all,
)
from tests.cluster import NatsCluster
from tests.e2e.stack import Stack, smtp_env
from tests.helpers import eventually
from tests.smtp import SmtpServer

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

BULK_TENANTS = ("north", "south", "east")
RATE = float(os.environ.get("STAYHUMAN_CHAOS_RATE", "150"))  # bulk webhooks a second, all tenants
SLA_SECONDS = 45  # longer than a killed router takes to come back on a loaded machine (~30 s)
SLA_PAIRS = 8  # conversations of the SLA tenant: this many answered in time, as many left to breach
REPLY_AFTER = 0.5  # seconds between a customer's message and the brand's reply
DUPLICATES = 200  # webhooks sent again, and as many messages republished on JetStream


def _secret(tenant: str) -> str:
    return f"{tenant}-secret-0123456789"


def _config(tenants: tuple[str, ...], sla: dict[str, int]) -> str:
    lines = ["people:"]
    for tenant in tenants:
        for n in range(2):
            lines.append(
                f"  - {{id: {tenant}-p{n}, name: P{n}, email: {tenant}-p{n}@example.com, capacity: 100000}}"
            )
    lines.append("tenants:")
    for tenant in tenants:
        lines += [
            f"  - id: {tenant}",
            f"    name: {tenant.title()}",
            f"    sla_policies: [{{name: standard, first_response: {sla.get(tenant, 3600)}s}}]",
            f"    teams: [{{id: care, name: Care, sla_policy: standard, members: [{tenant}-p0, {tenant}-p1]}}]",
            f"    accounts: [{{id: {tenant}-fb, platform: facebook, handle: {tenant.title()}, team: care, "
            f"webhook_secret: {_secret(tenant)}}}]",
        ]
    return "\n".join(lines) + "\n"


def _pid(port: int) -> int:
    return int(httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).json()["pid"])


async def _restarted(port: int, old: int) -> int:
    async def new_pid() -> int:
        try:
            async with httpx.AsyncClient() as client:
                pid = int((await client.get(f"http://127.0.0.1:{port}/healthz", timeout=2)).json()["pid"])
        except (httpx.HTTPError, ValueError):
            return 0
        return pid if pid != old else 0

    return await eventually(new_pid, timeout=60, interval=0.2, what=f"a new process on port {port}")


async def _stored(stack: Stack, nc: nats.NATS) -> tuple[Counter[str], dict[str, str | None], Counter[str]]:
    """What the run left: rows per interaction id, each conversation's owner, and the
    ConversationAssigned events per conversation."""
    rows = await stack.query(select(INTERACTIONS.c.id))
    conversations = await stack.query(select(CONVERSATIONS.c.id, CONVERSATIONS.c.owner_id))
    owners = {row.id: row.owner_id for row in conversations}
    return Counter(row.id for row in rows), owners, await assigned_per_conversation(nc)


async def _postgres_accepts(url: str) -> bool:
    target = make_url(url)
    try:
        connection = await asyncpg.connect(
            host=target.host,
            port=target.port or 5432,
            user=target.username,
            database=target.database,
            timeout=2,
        )
    except (TimeoutError, OSError, asyncpg.PostgresError):
        return False
    await connection.close()
    return True


@pytest.mark.timeout(600)  # a bound on a stuck run; a run takes about 2-3 minutes
async def test_under_steady_load_every_fault_in_turn_loses_doubles_and_misses_nothing(
    tmp_path: Path, postgres_url: str
) -> None:
    cluster = NatsCluster(tmp_path / "nats").start()
    smtp = SmtpServer().start()
    try:
        await _chaos(tmp_path, postgres_url, cluster, smtp)
    finally:
        smtp.stop()
        cluster.stop()


async def _chaos(tmp_path: Path, postgres_url: str, cluster: NatsCluster, smtp: SmtpServer) -> None:
    tenants = (*BULK_TENANTS, "sla")
    stack = Stack.configured(
        tmp_path / "stack",
        _config(tenants, {"sla": SLA_SECONDS}),
        STAYHUMAN_NATS_URL=cluster.urls,
        STAYHUMAN_NATS_REPLICAS="3",
        STAYHUMAN_DATABASE_URL=postgres_url,
        STAYHUMAN_LOG_LEVEL="warning",
        STAYHUMAN_ROUTER_ACK_WAIT="5s",
        STAYHUMAN_NOTIFY_ACK_WAIT="5s",
        STAYHUMAN_ALERT_GROUPING="false",  # one email per conversation: what is counted
        **smtp_env(smtp.port),
    )
    timeline = Timeline()
    stack.start("--routers", "2")
    timeline.note("up --routers 2 on a 3-node NATS cluster and PostgreSQL")
    nc = await nats.connect(cluster.urls.split(","), max_reconnect_attempts=-1)
    js = nc.jetstream()
    router_ports = [stack.ports["router"] + 10 * index for index in range(2)]
    breach_threads: list[str] = []
    answered_threads: list[str] = []
    try:
        async with WebhookSender(
            lambda account: stack.url("ingest", f"/webhooks/generic/{account}"),
            {f"{tenant}-fb": _secret(tenant) for tenant in tenants},
        ) as sender:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()

            def bulk(n: int) -> None:
                tenant = BULK_TENANTS[n % len(BULK_TENANTS)]
                sender.send(f"{tenant}-fb", f"b{n}", generic(f"b{n}", f"b{n}"))

            def with_sla(n: int) -> None:
                if n >= 2 * SLA_PAIRS:
                    return
                thread = f"s{n}"
                sender.send("sla-fb", thread, generic(thread, thread))
                if n % 2:
                    breach_threads.append(thread)
                else:
                    answered_threads.append(thread)
                    reply = generic(f"r{n}", thread, outbound=True)
                    loop.call_later(REPLY_AFTER, lambda: sender.send("sla-fb", thread, reply))

            loaded = time.monotonic()
            load = asyncio.gather(paced(RATE, stop, bulk, sender.busy), paced(2.0, stop, with_sla))
            timeline.note(f"load: {RATE:.0f} webhooks/s over {len(BULK_TENANTS)} tenants, "
                          f"and {2 * SLA_PAIRS} conversations of tenant sla (SLA {SLA_SECONDS} s), two a second")  # fmt: skip

            async def accepted_at_least(count: int) -> bool:
                return len(sender.accepted()) >= count

            await eventually(lambda: accepted_at_least(300), timeout=60, what="traffic flowing")

            # one after the other, without waiting for each to come back (starting a process
            # takes tens of seconds on a loaded machine): the services recover side by side
            old = [_pid(port) for port in router_ports]
            for pid in old:
                os.kill(pid, signal.SIGKILL)
            timeline.note(f"kill -9 both routers {old} ({len(sender.accepted())} accepted so far)")
            worker = stack.service_pid("ingest")
            os.kill(worker, signal.SIGKILL)
            timeline.note(f"kill -9 ingest worker {worker}")
            notify = stack.service_pid("notify")
            os.kill(notify, signal.SIGKILL)
            timeline.note(f"kill -9 notify {notify}")
            await asyncio.gather(
                *(_restarted(port, pid) for port, pid in zip(router_ports, old, strict=True)),
                _restarted(stack.ports["notify"], notify),
            )
            timeline.note("both routers and notify started again by up")

            leader = (await js.stream_info(subjects.INTERACTIONS_STREAM)).cluster.leader  # type: ignore[union-attr]
            assert leader is not None
            node = cluster.node_named(leader)
            node.stop()
            timeline.note(f"NATS node {leader} (leader of {subjects.INTERACTIONS_STREAM}) stopped")
            node.start(wait=False)
            await asyncio.to_thread(node.wait_ready, 30)
            timeline.note(f"NATS node {leader} started again")

            started = time.monotonic()
            await asyncio.to_thread(
                subprocess.run,
                "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main restart",
                shell=True,
                check=True,
                timeout=120,
            )
            await eventually(
                lambda: _postgres_accepts(postgres_url), timeout=60, interval=0.2, what="PostgreSQL"
            )
            timeline.note(
                f"PostgreSQL restarted, accepting connections after {time.monotonic() - started:.1f} s"
            )

            again = [d for d in sender.accepted() if d.account != "sla-fb"][:DUPLICATES]
            for delivery in again:
                sender.send(delivery.account, delivery.thread, delivery.body)
            stored: list[Msg] = []
            sub = await js.subscribe(subjects.all_interactions(), ordered_consumer=True)
            while len(stored) < DUPLICATES:
                stored.append(await sub.next_msg(timeout=10))
            await sub.unsubscribe()
            for msg in stored:
                event = json.loads(msg.data)
                await js.publish(
                    subjects.interaction_received(
                        tenant_id=event["tenant_id"], account_id=event["account_id"]
                    ),
                    msg.data,
                    headers={"Nats-Msg-Id": uuid.uuid4().hex},
                )
            poison = b'{"tenant_id": "north", "interaction_id": '  # cut off: not JSON
            await js.publish(
                subjects.interaction_received(tenant_id="north", account_id="north-fb"),
                poison,
                headers={"Nats-Msg-Id": uuid.uuid4().hex},
            )
            timeline.note(
                f"{len(again)} webhooks sent again, {len(stored)} stored interactions republished "
                f"under new Nats-Msg-Id, one poison message (not JSON) on the interactions subject"
            )

            async def sla_sent() -> bool:
                return len(breach_threads) == SLA_PAIRS

            await eventually(sla_sent, timeout=60, interval=0.2, what="every conversation of tenant sla sent")
            stop.set()
            sent, _ = await load
            await sender.drain()
            seconds = time.monotonic() - loaded
            timeline.note(
                f"load stopped: {sent} bulk webhooks in {seconds:.0f} s ({sent / seconds:.0f}/s of {RATE:.0f}/s "
                f"offered: sending waits while ingest is behind), {len(sender.deliveries)} deliveries in all"
            )
        accepted = sender.accepted()
        unaccepted = [d for d in sender.deliveries if d.interaction_id is None]
        print(f"statuses over all attempts: {dict(sender.statuses)}")
        assert unaccepted == [], f"{len(unaccepted)} deliveries never accepted, e.g. {unaccepted[:3]}"
        ids = {d.interaction_id for d in accepted}
        threads = {conversation_id(account_id=d.account, thread_id=d.thread) for d in accepted}

        async def all_stored() -> bool:
            rows = await stack.query(select(INTERACTIONS.c.id))
            return len({row.id for row in rows} & ids) == len(ids)

        await eventually(all_stored, timeout=120, interval=0.5, what=f"{len(ids)} interactions stored")
        timeline.note(f"all {len(ids)} accepted interactions stored")
        breached = {conversation_id(account_id="sla-fb", thread_id=t) for t in breach_threads}
        answered = {conversation_id(account_id="sla-fb", thread_id=t) for t in answered_threads}

        async def all_alerted() -> bool:
            return breached <= {str(m.message["X-StayHuman-Conversation"]) for m in smtp.messages()}

        await eventually(all_alerted, timeout=SLA_SECONDS + 90, interval=0.5, what="every breach alerted")
        timeline.note(f"all {len(breached)} breached conversations alerted")
        streams = (subjects.INTERACTIONS_STREAM, subjects.EVENTS_STREAM, subjects.TIMERS_STREAM)
        await eventually(
            lambda: consumers_idle(nc, *streams), timeout=60, interval=0.5, what="consumers settled"
        )
        timeline.note("every consumer settled")

        per_interaction, owners, assigned = await _stored(stack, nc)
        alerts: dict[str, set[str]] = {}
        for mail in smtp.messages():
            alerts.setdefault(str(mail.message["X-StayHuman-Conversation"]), set()).add(
                str(mail.message["Message-ID"])
            )
        dead = await read_all(nc, "sh.dlq.>")
        poisoned = [m for m in dead if m.data == poison]
        print(
            f"counted: {len(accepted)} deliveries accepted ({len(ids)} interactions, {len(threads)} conversations); "
            f"{sum(per_interaction.values())} interaction rows, {len(owners)} conversations "
            f"({sum(1 for o in owners.values() if o)} with an owner); {sum(assigned.values())} ConversationAssigned "
            f"for {len(assigned)} conversations; {len(smtp.messages())} emails, {len(alerts)} conversations alerted "
            f"({sum(len(v) for v in alerts.values())} distinct Message-IDs); {len(dead)} dead letters"
        )
        assert {i: n for i, n in per_interaction.items() if n != 1} == {}
        assert ids <= set(per_interaction)
        assert set(owners) == threads
        assert [cid for cid, owner in owners.items() if owner is None] == []
        assert set(assigned) == threads
        assert {cid: n for cid, n in assigned.items() if n != 1} == {}, "a conversation assigned twice"
        assert set(alerts) == breached, f"alerted but answered: {set(alerts) & answered}"
        assert {cid: ids for cid, ids in alerts.items() if len(ids) != 1} == {}
        assert len(poisoned) == 1 and (poisoned[0].headers or {}).get(DLQ_ERROR), poisoned
        assert [m for m in dead if m.data != poison] == []
        print(f"poison on {poisoned[0].subject}: {poisoned[0].headers[DLQ_ERROR][:120]}")
    finally:
        print("\n".join(["what was done:", *timeline.entries]))
        await nc.close()
        stack.stop()


@pytest.mark.timeout(300)  # a bound on a stuck run; a run takes about a minute
async def test_a_lone_nats_server_killed_under_load_and_started_again_loses_and_doubles_nothing(
    tmp_path: Path,
) -> None:
    """One nats-server, as a small installation runs it (SQLite, one router): killed with SIGKILL
    while webhooks arrive, started again on its store a few seconds later. Meanwhile ingest holds
    the requests in hand until the server is back (or answers 503 past its wait, and the platform
    sends again); afterwards every delivery was accepted, and each accepted interaction is stored
    once and its conversation assigned once."""
    tenants = ("north", "south")
    server = EmbeddedNats(tmp_path / "nats").start()
    stack = Stack.configured(
        tmp_path / "stack",
        _config(tenants, {}),
        nats=server,
        STAYHUMAN_LOG_LEVEL="warning",
        STAYHUMAN_ROUTER_ACK_WAIT="5s",
    )
    timeline = Timeline()
    stack.start()
    timeline.note("up on one nats-server and SQLite")
    try:
        async with WebhookSender(
            lambda account: stack.url("ingest", f"/webhooks/generic/{account}"),
            {f"{tenant}-fb": _secret(tenant) for tenant in tenants},
        ) as sender:
            stop = asyncio.Event()

            def bulk(n: int) -> None:
                tenant = tenants[n % len(tenants)]
                sender.send(f"{tenant}-fb", f"b{n}", generic(f"b{n}", f"b{n}"))

            load = asyncio.create_task(paced(RATE, stop, bulk, sender.busy))

            async def accepted_at_least(count: int) -> bool:
                return len(sender.accepted()) >= count

            await eventually(lambda: accepted_at_least(300), timeout=60, what="traffic flowing")
            await asyncio.to_thread(server.kill)
            killed_at = time.monotonic()
            before = len(sender.accepted())
            timeline.note(f"nats-server killed ({before} accepted so far)")
            await asyncio.sleep(3)
            refused = sender.statuses["503"]
            await asyncio.to_thread(server.start)
            restarted_at = time.monotonic()
            timeline.note(f"nats-server started again on its store ({refused} answers of 503 meanwhile)")
            await eventually(
                lambda: accepted_at_least(before + 600), timeout=90, what="traffic flowing again"
            )
            stop.set()
            sent = await load
            await sender.drain()
            timeline.note(f"load stopped: {sent} webhooks, {len(sender.deliveries)} deliveries")
        accepted = sender.accepted()
        print(f"statuses over all attempts: {dict(sender.statuses)}")
        assert [d for d in sender.deliveries if d.interaction_id is None] == []
        waited = [d for d in accepted if d.sent_at < restarted_at and d.accepted_at > restarted_at]
        print(f"{len(waited)} deliveries sent before the restart were answered 202 after it")
        assert [d for d in accepted if killed_at + 0.5 < d.accepted_at < restarted_at] == []
        assert waited, "no delivery waited for the server: it was not down"
        ids = {d.interaction_id for d in accepted}
        threads = {conversation_id(account_id=d.account, thread_id=d.thread) for d in accepted}
        nc = await nats.connect(server.url)
        try:
            streams = (subjects.INTERACTIONS_STREAM, subjects.EVENTS_STREAM)
            await eventually(
                lambda: consumers_idle(nc, *streams), timeout=90, interval=0.5, what="consumers settled"
            )
            timeline.note("every consumer settled")
            per_interaction, owners, assigned = await _stored(stack, nc)
            dead = await read_all(nc, "sh.dlq.>")
        finally:
            await nc.close()
        print(
            f"counted: {len(accepted)} deliveries accepted ({len(ids)} interactions, {len(threads)} "
            f"conversations); {sum(per_interaction.values())} interaction rows, {len(owners)} conversations; "
            f"{sum(assigned.values())} ConversationAssigned for {len(assigned)} conversations; "
            f"{len(dead)} dead letters"
        )
        assert {i: n for i, n in per_interaction.items() if n != 1} == {}
        assert ids == set(per_interaction)
        assert set(owners) == threads and None not in owners.values()
        assert {cid: n for cid, n in assigned.items() if n != 1} == {}, "a conversation assigned twice"
        assert set(assigned) == threads
        assert dead == []
    finally:
        print("\n".join(["what was done:", *timeline.entries]))
        stack.stop()
        server.stop()
