"""Each figure of the benchmark: how it is driven and what it measures."""

import asyncio
import dataclasses
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import nats
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from sqlalchemy import func
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col, select

from services.ingest.generic import GenericInteraction, normalise
from shared import ids, subjects
from shared.db.models import ConversationRow
from shared.db.session import create_engine, session_factory
from shared.events import DeadlineChanged, DeadlineKind, Platform
from shared.jetstream import Outgoing, publish_pipelined
from stayhuman.bench import loadgen
from stayhuman.bench.report import Figure, Target, number, percentile
from stayhuman.bench.stack import BenchStack, cpu_seconds, rss_mb

SECRET = "bench-secret-0123456789"
REFERENCE_STREAM = "BENCH_REFERENCE"
CHUNK = 2000
BATCH_CONNECTIONS = 4


def sign(body: bytes) -> str:
    return "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()


def webhook_body(external_id: str, thread_id: str) -> bytes:
    document = {
        "external_id": external_id,
        "kind": "comment",
        "direction": "inbound",
        "thread_id": thread_id,
        "author": {"id": f"author-{thread_id}", "name": "Dana Reyes", "handle": "@dana"},
        "text": "Is the oat latte back on the menu?",
        "created_at": datetime.now(UTC).isoformat(),
    }
    return json.dumps(document).encode()


@dataclass(frozen=True)
class Tenant:
    id: str
    account: str
    token: str
    people: tuple[str, ...]


DUE_TENANT = Tenant(
    id="benchdue", account="benchdue-fb", token="bench-token-due-" + "0" * 24, people=("agentdue-0",)
)


def tenants_of(count: int, people: int = 4) -> list[Tenant]:
    return [
        Tenant(
            id=f"bench{i}",
            account=f"bench{i}-fb",
            token=f"bench-token-{i}-" + hashlib.sha256(f"bench-{i}".encode()).hexdigest()[:24],
            people=tuple(f"agent{i}-{j}" for j in range(people)),
        )
        for i in range(count)
    ]


def config_yaml(tenants: Sequence[Tenant], *, first_response: str = "8h") -> str:
    """Each tenant with one team of its own people (room for every conversation), one account and
    an API token for the batch endpoint; first responses due after `first_response`, except for
    DUE_TENANT's, due after a minute."""
    tenants = [*tenants, DUE_TENANT]
    lines = ["people:"]
    for tenant in tenants:
        for person in tenant.people:
            lines += [
                f"  - id: {person}",
                f"    name: Agent {person}",
                f"    email: {person}@example.com",
                "    capacity: 10000000",
            ]
    lines.append("tenants:")
    for tenant in tenants:
        lines += [
            f"  - id: {tenant.id}",
            f"    name: Tenant {tenant.id}",
            "    sla_policies:",
            "      - name: standard",
            f"        first_response: {'1m' if tenant is DUE_TENANT else first_response}",
            "    teams:",
            "      - id: care",
            "        name: Care",
            "        sla_policy: standard",
            f"        members: [{', '.join(tenant.people)}]",
            "    api_tokens:",
            "      - name: importer",
            f"        token: {tenant.token}",
            "    accounts:",
            f"      - id: {tenant.account}",
            "        platform: facebook",
            "        handle: Brand",
            "        team: care",
            f"        webhook_secret: {SECRET}",
        ]
    return "\n".join(lines) + "\n"


@dataclass
class Sizes:
    reference: int = 100_000
    webhooks: int = 20_000  # the Python load generator's requests
    webhook_seconds: float = 10.0  # wrk's run
    batch_seconds: float = 20.0
    batch_size: int = 500
    router: int = 20_000
    deadlines: int = 20_000
    paced_rate: float = 1000.0
    paced_seconds: float = 5.0
    armed: int = 1_000_000  # --full: deadlines armed far ahead
    due_soon: int = 2_000  # --full: of which due within the run
    open_conversations: int = 1_000_000  # --full


QUICK = Sizes(
    reference=20_000, webhooks=2_000, webhook_seconds=3, batch_seconds=5, router=3_000, deadlines=3_000,
    paced_seconds=3, armed=20_000, due_soon=200, open_conversations=20_000,
)  # fmt: skip
FULL = Sizes(batch_seconds=60)  # and the million figures: as fast as they can be


@dataclass
class Phases:
    """The figures on one database, against one running stack."""

    stack: BenchStack
    database: str  # "SQLite" or "PostgreSQL"
    tenants: list[Tenant]
    sizes: Sizes
    loadgen: str  # "python" or "wrk"
    processes: int = 2
    connections: int = 32
    say: Callable[[str], None] = print
    figures: list[Figure] = field(default_factory=list)
    _engine: AsyncEngine | None = None
    _serial: int = 0

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            self._engine = create_engine(self.stack.database_url)
        return self._engine

    async def close(self) -> None:
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None

    def unique(self, prefix: str) -> str:
        self._serial += 1
        return f"{prefix}-{self._serial}-{uuid.uuid4().hex[:8]}"

    async def assigned(self) -> int:
        async with session_factory(self.engine)() as session:
            query = (
                select(func.count())
                .select_from(ConversationRow)
                .where(col(ConversationRow.owner_id).is_not(None))
            )
            return int((await session.exec(query)).one())

    async def wait_assigned(self, target: int, timeout: float = 900) -> float:
        """Wall clock when at least `target` conversations are assigned."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if await self.assigned() >= target:
                return time.time()
            await asyncio.sleep(0.05)
        raise RuntimeError(f"only {await self.assigned()} of {target} assigned after {timeout:.0f}s")

    async def settle(self, timeout: float = 120) -> None:
        """Wait until every consumer of StayHuman's streams has nothing pending, so one figure's
        leftovers (deadlines to arm, events to index) do not weigh on the next."""
        nc = await nats.connect(self.stack.nats.url)
        try:
            js = nc.jetstream()
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                busy = 0
                for stream in (
                    subjects.INTERACTIONS_STREAM,
                    subjects.EVENTS_STREAM,
                    subjects.COMMANDS_STREAM,
                ):
                    try:
                        for info in await js.consumers_info(stream):
                            busy += (info.num_pending or 0) + (info.num_ack_pending or 0)
                    except nats.js.errors.NotFoundError:
                        continue
                if busy == 0:
                    return
                await asyncio.sleep(0.2)
            self.say(f"  (consumers still busy after {timeout:.0f}s; going on)")
        finally:
            await nc.close()

    # 1. signed webhooks -> JetStream ack, and the whole path to assigned

    def _signed(self, count: int, tag: str) -> list[tuple[Tenant, str, bytes]]:
        run = self.unique(tag)
        out = []
        for i in range(count):
            tenant = self.tenants[i % len(self.tenants)]
            out.append((tenant, f"{run}-thread-{i}", webhook_body(f"{run}-{i}", f"{run}-thread-{i}")))
        return out

    def _requests(self, signed: Sequence[tuple[Tenant, str, bytes]]) -> list[bytes]:
        port = self.stack.ports["ingest"]
        return [
            loadgen.build_post(
                "127.0.0.1",
                port,
                f"/webhooks/generic/{tenant.account}",
                body,
                {"Content-Type": "application/json", "X-Signature-256": sign(body)},
            )
            for tenant, _thread, body in signed
        ]

    async def webhooks(self) -> None:
        """Ingest's figure with only ingest running; then the whole path with everything running."""
        await self.settle()
        before = await self.assigned()
        with self.stack.alone("ingest") as paused:
            accepted, figure = await self._webhooks()
        figure.note += f"; {_paused(paused)}"
        self.figures.append(figure)
        self._show(figure)
        await self.wait_assigned(before + accepted)  # the paused router catches up
        await self.settle()
        before = await self.assigned()
        accepted, loaded = await self._webhooks()
        started = time.time() - loaded.seconds
        done_at = await self.wait_assigned(before + accepted)
        whole = Figure(
            key="webhook_to_assigned",
            title="whole path, signed webhook -> assigned",
            database=self.database,
            value=accepted / (done_at - started),
            unit="/s",
            count=accepted,
            seconds=done_at - started,
            note=f"every service running; from the first webhook sent until all {accepted} "
            f"conversations were assigned (ingest answered {loaded.value:,.0f}/s meanwhile, "
            f"p99 {loaded.p99_ms or 0:.0f} ms)",
        )
        self.figures.append(whole)
        self._show(whole)

    async def _webhooks(self) -> tuple[int, Figure]:
        if self.loadgen == "wrk":
            return await self._webhooks_wrk()
        return await self._webhooks_python()

    def _ack_targets(self) -> list[Target]:
        return [Target("value", ">=", 3000, "/s"), Target("p99", "<=", 50, "ms")]

    async def _webhooks_python(self) -> tuple[int, Figure]:
        signed = self._signed(self.sizes.webhooks, "webhook")
        requests = self._requests(signed)
        result = await asyncio.to_thread(
            loadgen.run_processes,
            "127.0.0.1",
            self.stack.ports["ingest"],
            requests,
            processes=self.processes,
            connections=self.connections,
        )
        accepted = result.statuses.get(202, 0)
        return accepted, Figure(
            key="webhook_ack",
            title="signed webhooks -> JetStream ack",
            database=self.database,
            value=result.requests / result.seconds,
            unit="/s",
            count=result.requests,
            seconds=result.seconds,
            p50_ms=result.percentile(0.5) * 1000,
            p99_ms=result.percentile(0.99) * 1000,
            targets=self._ack_targets(),
            note=f"Python load generator, {self.processes} processes x {self.connections} keep-alive "
            f"connections; answers {dict(sorted(result.statuses.items()))}",
        )

    async def _webhooks_wrk(self) -> tuple[int, Figure]:
        seconds = self.sizes.webhook_seconds
        signed = self._signed(int(10_000 * seconds) + 1000, "wrk")
        pairs = [
            (f"/webhooks/generic/{tenant.account}", sign(body), body) for tenant, _thread, body in signed
        ]
        connections = self.processes * self.connections
        result = await asyncio.to_thread(
            loadgen.run_wrk,
            self.stack.url("ingest", "/"),
            pairs,
            seconds=seconds,
            threads=self.processes,
            connections=connections,
            workdir=self.stack.workdir / "wrk",
        )
        accepted = min(result.requests - result.errors, len(pairs))
        return accepted, Figure(
            key="webhook_ack",
            title="signed webhooks -> JetStream ack",
            database=self.database,
            value=result.requests / result.seconds,
            unit="/s",
            count=result.requests,
            seconds=result.seconds,
            p50_ms=result.p50_ms,
            p99_ms=result.p99_ms,
            targets=self._ack_targets(),
            note=f"wrk, {self.processes} threads x {connections} connections, pre-signed bodies; "
            f"{result.errors} errors",
        )

    # 2. batch API -> assigned, sustained

    async def batch(self) -> None:
        await self.settle()
        seconds = self.sizes.batch_seconds
        size = self.sizes.batch_size
        # sent but not yet assigned: the most let through (two batches per connection), so the end
        # of the run does not wait long for a backlog a slow router could not clear
        window = 2 * size * BATCH_CONNECTIONS
        before = await self.assigned()
        progress = {"sent": 0, "assigned": 0, "batches": 0, "refused": 0}
        run = self.unique("batch")
        stop_at = time.monotonic() + seconds
        port = self.stack.ports["ingest"]

        async def watch() -> None:
            while True:
                progress["assigned"] = await self.assigned() - before
                await asyncio.sleep(0.1)

        async def sender(lane: int) -> None:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            number = 0
            try:
                while time.monotonic() < stop_at:
                    if progress["sent"] - progress["assigned"] >= window:
                        await asyncio.sleep(0.02)
                        continue
                    tenant = self.tenants[(lane + number) % len(self.tenants)]
                    number += 1
                    created = datetime.now(UTC).isoformat()
                    items = [
                        {
                            "account_id": tenant.account,
                            "external_id": f"{run}-{lane}-{number}-{i}",
                            "kind": "comment",
                            "direction": "inbound",
                            "thread_id": f"{run}-{lane}-{number}-{i}",
                            "author": {"id": f"a-{lane}-{i}", "name": "Dana Reyes", "handle": "@dana"},
                            "text": "Is the oat latte back on the menu?",
                            "created_at": created,
                        }
                        for i in range(size)
                    ]
                    body = json.dumps({"interactions": items}).encode()
                    request = loadgen.build_post(
                        "127.0.0.1",
                        port,
                        "/v1/interactions",
                        body,
                        {"Content-Type": "application/json", "Authorization": f"Bearer {tenant.token}"},
                    )
                    try:
                        status = await loadgen._exchange(reader, writer, request)
                    except (ConnectionError, asyncio.IncompleteReadError):
                        # idle while the backlog drained, past the server's keep-alive: again
                        writer.close()
                        reader, writer = await asyncio.open_connection("127.0.0.1", port)
                        status = await loadgen._exchange(reader, writer, request)
                    if status == 202:
                        progress["sent"] += size
                        progress["batches"] += 1
                    else:
                        progress["refused"] += 1
                        await asyncio.sleep(0.1)
            finally:
                writer.close()

        with self.stack.alone("ingest", "router") as paused:
            watcher = asyncio.create_task(watch())
            started = time.time()
            try:
                await asyncio.gather(*(sender(lane) for lane in range(BATCH_CONNECTIONS)))
            finally:
                watcher.cancel()
            sent = progress["sent"]
            done_at = await self.wait_assigned(before + sent)
        figure = Figure(
            key="batch_to_assigned",
            title=f"batch API -> assigned, sustained {seconds:.0f} s",
            database=self.database,
            value=sent / (done_at - started),
            unit="/s",
            count=sent,
            seconds=done_at - started,
            targets=[Target("value", ">=", 5000, "/s")],
            target_from_reference=0.1,
            note=f"{progress['batches']} batches of {size} over {BATCH_CONNECTIONS} connections for {seconds:.0f} s, at most "
            f"{window} waiting to be assigned; {progress['refused']} refused; {_paused(paused)}",
        )
        self.figures.append(figure)
        self._show(figure)

    # 3. and 4. the router alone, JetStream -> assigned

    def _interactions(self, count: int) -> list[Outgoing]:
        now = datetime.now(UTC)
        run = self.unique("direct")
        messages = []
        for i in range(count):
            tenant = self.tenants[i % len(self.tenants)]
            payload = GenericInteraction.model_validate_json(webhook_body(f"{run}-{i}", f"{run}-thread-{i}"))
            event = normalise(
                payload,
                tenant_id=tenant.id,
                account_id=tenant.account,
                platform=Platform.facebook,
                received_at=now,
                correlation_id="",
            )
            messages.append(
                Outgoing(
                    subjects.interaction_received(tenant_id=tenant.id, account_id=tenant.account),
                    event.model_dump_json().encode(),
                    ids.dedupe_key(
                        tenant_id=tenant.id,
                        account_id=tenant.account,
                        external_id=event.external_id,
                        edit_version=0,
                    ),
                )
            )
        return messages

    async def router(self, *, key: str = "router_alone", routers: int = 1) -> Figure:
        await self.settle()
        count = self.sizes.router
        messages = self._interactions(count)
        pids = [pid for name, pid in self.stack.service_pids().items() if name.startswith("router")]
        cpu_before = sum(cpu_seconds(pid) for pid in pids)
        nc = await nats.connect(self.stack.nats.url)
        try:
            js = nc.jetstream()
            before = await self.assigned()
            with self.stack.alone("router") as paused:
                started = time.time()
                for chunk in range(0, count, CHUNK):
                    await publish_pipelined(js, messages[chunk : chunk + CHUNK])
                done_at = await self.wait_assigned(before + count)
        finally:
            await nc.close()
        cpu = sum(cpu_seconds(pid) for pid in pids) - cpu_before
        title = "router alone, JetStream -> assigned"
        figure = Figure(
            key=key,
            title=title if routers == 1 else f"{routers} routers, JetStream -> assigned",
            database=self.database,
            value=count / (done_at - started),
            unit="/s",
            count=count,
            seconds=done_at - started,
            targets=[Target("value", ">=", 5000, "/s")] if routers == 1 and self.database == "SQLite" else [],
            note=f"{len(self.tenants)} tenants; router CPU {cpu / count * 1000:.2f} ms per interaction "
            f"({len(pids)} process{'es' if len(pids) > 1 else ''}); {_paused(paused)}",
        )
        self.figures.append(figure)
        self._show(figure)
        return figure

    def routers_compared(self, one: Figure, three: Figure) -> None:
        figure = Figure(
            key="routers_3_vs_1",
            title="3 routers vs 1 (JetStream -> assigned)",
            database=self.database,
            value=three.value / one.value,
            unit="x",
            count=3,
            targets=[Target("value", ">=", 2.0, "x")],
            note=f"{three.value:,.0f}/s with 3 routers, {one.value:,.0f}/s with one; "
            f"{len(self.tenants)} tenants",
        )
        self.figures.append(figure)
        self._show(figure)

    # 5. notify, deadline -> armed

    def _deadlines(self, count: int, *, due: datetime, spread_seconds: int, tag: str) -> list[Outgoing]:
        run = self.unique(tag)
        messages = []
        for i in range(count):
            tenant = self.tenants[i % len(self.tenants)]
            cid = uuid.uuid5(uuid.NAMESPACE_URL, f"{run}-{i}").hex
            event = DeadlineChanged(
                tenant_id=tenant.id,
                conversation_id=cid,
                account_id=tenant.account,
                deadline_version=1,
                kind=DeadlineKind.first_response,
                owner_id=tenant.people[0],
                started_at=due,
                warn_at=None,
                due_at=due + timedelta(seconds=i % max(1, spread_seconds)),
                reason="bench",
            )
            messages.append(
                Outgoing(
                    subjects.deadline(tenant_id=tenant.id, conversation_id=cid),
                    event.model_dump_json().encode(),
                    f"deadline:{cid}:1",
                )
            )
        return messages

    async def arm(self, messages: Sequence[Outgoing]) -> float:
        """Publish deadline contracts as the router does; the seconds until notify armed them all."""
        nc = await nats.connect(self.stack.nats.url)
        try:
            js = nc.jetstream()
            before = (await js.stream_info(subjects.TIMERS_STREAM)).state.messages
            started = time.monotonic()
            for chunk in range(0, len(messages), CHUNK):
                await publish_pipelined(js, messages[chunk : chunk + CHUNK])
            while True:
                if (await js.stream_info(subjects.TIMERS_STREAM)).state.messages >= before + len(messages):
                    break
                await asyncio.sleep(0.05)
            return time.monotonic() - started
        finally:
            await nc.close()

    async def deadlines(self) -> None:
        await self.settle()
        count = self.sizes.deadlines
        messages = self._deadlines(
            count, due=datetime.now(UTC) + timedelta(days=1), spread_seconds=3600, tag="deadline"
        )
        with self.stack.alone("notify") as paused:
            seconds = await self.arm(messages)
        figure = Figure(
            key="deadline_armed",
            title="notify, deadline -> armed",
            database=self.database,
            value=count / seconds,
            unit="/s",
            count=count,
            seconds=seconds,
            targets=[Target("value", ">=", 10_000, "/s")],
            note="deadline contracts published as the router does; armed = the timer is on SH_TIMERS; "
            + _paused(paused),
        )
        self.figures.append(figure)
        self._show(figure)

    # 6. p99 ingest -> assigned at a paced rate

    async def paced(self) -> None:
        await self.settle()
        rate, seconds = self.sizes.paced_rate, self.sizes.paced_seconds
        count = int(rate * seconds)
        signed = self._signed(count, "paced")
        requests = self._requests(signed)
        wanted = {
            ids.conversation_id(account_id=tenant.account, thread_id=thread): i
            for i, (tenant, thread, _body) in enumerate(signed)
        }
        seen: dict[int, float] = {}
        nc = await nats.connect(self.stack.nats.url)

        async def on_assigned(message: Msg) -> None:
            at = time.time()
            index = wanted.get(json.loads(message.data).get("conversation_id", ""))
            if index is not None and index not in seen:
                seen[index] = at

        try:
            await nc.subscribe(subjects.all_conversation_events("assigned"), cb=on_assigned)
            await nc.flush()
            result = await asyncio.to_thread(
                loadgen.run_processes,
                "127.0.0.1",
                self.stack.ports["ingest"],
                requests,
                processes=self.processes,
                connections=max(self.connections, 64),
                rate=rate,
            )
            accepted = result.statuses.get(202, 0)
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                if len(seen) >= accepted:
                    break
                await asyncio.sleep(0.1)
        finally:
            await nc.close()
        latencies = [seen[i] - result.sent_at[i] for i in seen if i in result.sent_at]
        p50, p99 = percentile(latencies, 0.5) * 1000, percentile(latencies, 0.99) * 1000
        offered = count / result.seconds if result.seconds else 0.0
        figure = Figure(
            key="paced_ingest_to_assigned_p99",
            title=f"p99 ingest -> assigned at {rate:,.0f}/s offered",
            database=self.database,
            value=p99,
            unit="ms",
            count=len(latencies),
            seconds=result.seconds,
            p50_ms=p50,
            p99_ms=p99,
            targets=[Target("p99", "<=", 50, "ms")],
            note=f"open loop, {self.processes} processes; from when each webhook was due to be sent "
            f"until its ConversationAssigned event reached a subscriber on NATS; {len(latencies)} of "
            f"{count} seen, {accepted} accepted; offered {offered:,.0f}/s; webhook answer p99 "
            f"{result.percentile(0.99) * 1000:.1f} ms",
        )
        self.figures.append(figure)
        self._show(figure)

    # 7. --full: due -> email accepted by SMTP with many deadlines armed; memory

    async def due_to_smtp(self) -> None:
        """Arm `armed` deadlines far ahead (as the router publishes them), then `due_soon` webhooks to
        the tenant whose first response is due a minute later; from each conversation's due time
        (its DeadlineChanged) until our SMTP server accepted its breach alert."""
        await self.settle()
        armed = self.sizes.armed
        self.say(f"  (arming {armed:,} deadlines due tomorrow...)")
        far = self._deadlines(
            armed, due=datetime.now(UTC) + timedelta(days=1), spread_seconds=86_400, tag="far"
        )
        seconds = await self.arm(far)
        del far
        figure = Figure(
            key="deadline_armed_bulk",
            title=f"notify, {armed:,} deadlines -> armed",
            database=self.database,
            value=armed / seconds,
            unit="/s",
            count=armed,
            seconds=seconds,
            note="the deadlines the due -> SMTP figure runs beside",
        )
        self.figures.append(figure)
        self._show(figure)
        await self.settle(timeout=600)
        tenant = DUE_TENANT
        count = self.sizes.due_soon
        run = self.unique("due")
        signed = [
            (tenant, f"{run}-thread-{i}", webhook_body(f"{run}-{i}", f"{run}-thread-{i}"))
            for i in range(count)
        ]
        wanted = {
            ids.conversation_id(account_id=tenant.account, thread_id=thread) for _t, thread, _b in signed
        }
        due: dict[str, float] = {}
        nc = await nats.connect(self.stack.nats.url)

        async def on_deadline(message: Msg) -> None:
            document = json.loads(message.data)
            cid = document.get("conversation_id", "")
            if cid in wanted and document.get("due_at") and cid not in due:
                due[cid] = datetime.fromisoformat(document["due_at"]).timestamp()

        recorder = self.stack.smtp.recorder
        mark = len(recorder.accepted)
        try:
            await nc.subscribe(subjects.all_deadlines(), cb=on_deadline)
            await nc.flush()
            result = await asyncio.to_thread(
                loadgen.run_processes,
                "127.0.0.1",
                self.stack.ports["ingest"],
                self._requests(signed),
                processes=1,
                connections=16,
                rate=max(100.0, count / 10),
            )
            accepted = result.statuses.get(202, 0)
            self.say(f"  ({accepted} conversations fall due about a minute after they came; waiting...)")
            mailed: dict[str, float] = {}
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                for at, email in recorder.accepted[mark:]:
                    cid = str(email.get("X-StayHuman-Conversation") or "")
                    if cid in wanted and cid not in mailed and email.get("X-StayHuman-Alert") == "breach":
                        mailed[cid] = at
                mark = len(recorder.accepted)
                if len(mailed) >= accepted and accepted:
                    break
                await asyncio.sleep(0.2)
        finally:
            await nc.close()
        latencies = [mailed[cid] - due[cid] for cid in mailed if cid in due]
        p50, p99 = percentile(latencies, 0.5) * 1000, percentile(latencies, 0.99) * 1000
        figure = Figure(
            key="due_to_smtp_p99",
            title=f"due -> email accepted by SMTP, {armed:,} armed",
            database=self.database,
            value=p99,
            unit="ms",
            count=len(latencies),
            p50_ms=p50,
            p99_ms=p99,
            targets=[Target("p99", "<=", 1000, "ms")],
            note=f"{len(latencies)} of {accepted} breach alerts seen; from the due_at of each conversation's "
            "DeadlineChanged until the benchmark's SMTP server (aiosmtpd) accepted the alert; alert "
            "grouping off, so each breach is an email of its own",
        )
        self.figures.append(figure)
        self._show(figure)

    async def memory(self) -> None:
        """Seed `open_conversations` open, owned conversations in bulk, restart the services so they
        start over them, route a few thousand interactions, then read each service's VmRSS."""
        await self.settle(timeout=600)
        count = self.sizes.open_conversations
        self.say(f"  (seeding {count:,} open conversations...)")
        seeded = time.monotonic()
        await seed_conversations(self.engine, self.tenants, count)
        self.say(f"  (seeded in {time.monotonic() - seeded:.0f} s; restarting the services over them)")
        await asyncio.to_thread(self.stack.restart, self.stack.routers)
        figures_before, saved, say = len(self.figures), self.sizes, self.say
        self.sizes = dataclasses.replace(saved, router=min(saved.router, 5000))
        self.say = lambda _text: None
        try:
            await self.router(key="router_after_seed")
        finally:
            self.sizes, self.say = saved, say
            del self.figures[figures_before:]  # only to have them work; not a figure of its own
        for name, pids in sorted(self.stack.processes().items()):
            sizes = [rss_mb(pid) for pid in pids]
            value = max(sizes)
            figure = Figure(
                key=f"rss_{name.replace('-', '_')}",
                title=f"RSS of {name}, {count:,} open conversations",
                database=self.database,
                value=value,
                unit="MB",
                count=len(pids),
                targets=[Target("value", "<=", 250, "MB")],
                note="VmRSS of its largest process"
                + (f"; {sum(sizes):,.0f} MB over its {len(pids)} processes" if len(pids) > 1 else ""),
            )
            self.figures.append(figure)
            self._show(figure)

    def _show(self, figure: Figure) -> None:
        extra = ""
        if figure.p99_ms is not None and figure.unit != "ms":
            extra = f"  (p50 {figure.p50_ms:.1f} ms, p99 {figure.p99_ms:.1f} ms)"
        self.say(f"  {figure.title:<46} {number(figure.value, figure.unit):>12}{extra}")
        if figure.note:
            self.say(f"    {figure.note}")


def _paused(names: Sequence[str]) -> str:
    """Which services a figure ran without (see `BenchStack.alone`)."""
    return f"{', '.join(names)} paused meanwhile" if names else "nothing else running"


async def seed_conversations(engine: AsyncEngine, tenants: Sequence[Tenant], count: int) -> None:
    """`count` open conversations, owned and awaiting an answer due tomorrow, inserted in bulk."""
    now = datetime.now(UTC)
    due = now + timedelta(days=1)
    table = ConversationRow.__table__  # type: ignore[attr-defined]
    run = uuid.uuid4().hex[:8]
    chunk = 10_000
    for start in range(0, count, chunk):
        rows = []
        for i in range(start, min(count, start + chunk)):
            tenant = tenants[i % len(tenants)]
            thread = f"seed-{run}-{i}"
            rows.append(
                {
                    "id": ids.conversation_id(account_id=tenant.account, thread_id=thread),
                    "tenant_id": tenant.id,
                    "account_id": tenant.account,
                    "platform": "facebook",
                    "thread_id": thread,
                    "state": "open",
                    "team_id": ids.team_id(tenant_id=tenant.id, slug="care"),
                    "owner_id": tenant.people[i % len(tenant.people)],
                    "assignment_reason": "seeded by the benchmark",
                    "priority": "normal",
                    "skills": "[]",
                    "no_sla": False,
                    "load_weight": 1,
                    "author_handle": "@dana",
                    "author_verified": False,
                    "author_id": f"seed-author-{i}",
                    "author_name": "Dana Reyes",
                    "last_inbound_text": "Is the oat latte back on the menu?",
                    "opened_at": now,
                    "assigned_at": now,
                    "awaiting_since": now,
                    "last_inbound_at": now,
                    "paused_business_seconds": 0.0,
                    "deadline_version": 1,
                    "deadline_kind": "first_response",
                    "due_at": due,
                    "updated_at": now,
                }
            )
        async with engine.begin() as connection:
            await connection.execute(table.insert(), rows)


async def reference(nats_url: str, count: int, *, size: int = 1024, window: int = 1024) -> Figure:
    """Raw JetStream: nats-py publish_async of `size`-byte messages, `window` acks in flight, on a
    file stream of its own on the same server."""
    nc = await nats.connect(nats_url)
    try:
        js: JetStreamContext = nc.jetstream(publish_async_max_pending=window)
        await js.add_stream(name=REFERENCE_STREAM, subjects=["bench.reference"])
        payload = b"x" * size
        futures = []
        started = time.monotonic()
        for _ in range(count):
            futures.append(await js.publish_async("bench.reference", payload))
        await js.publish_async_completed()
        seconds = time.monotonic() - started
        failed = sum(1 for future in futures if future.exception() is not None)
        await js.delete_stream(REFERENCE_STREAM)
    finally:
        await nc.close()
    return Figure(
        key="raw_jetstream",
        title="raw JetStream publish_async (reference)",
        database="-",
        value=(count - failed) / seconds,
        unit="/s",
        count=count,
        seconds=seconds,
        note=f"nats-py publish_async, {size} B payloads, {window} in flight, file stream; {failed} failed",
    )
