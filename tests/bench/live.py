"""Live updates benchmark: 1,000 browsers on the live stream while 200 conversation changes a
second pass through SH_EVENTS.

On PostgreSQL (STAYHUMAN_TEST_POSTGRES_URL, default postgresql://postgres@127.0.0.1:5432/postgres)
it makes a database of its own: 20 tenants, each with 50 agents in 5 teams of 10, and 40
conversations per team, each owned by one of the team. It runs the pinned nats-server and the api
service in its own process (`stayhuman api`, as in production), signs every agent in (a session
row each) and opens one Server-Sent Events connection per agent from separate client processes,
which reconnect with Last-Event-ID as a browser does.

It then publishes conversation changes straight into SH_EVENTS on their real subjects, as the
router does: reassignments within a tenant (to another team and one of its members) and
deadline changes, spread over the tenants, each stamped with its send time (`occurred_at`). Each
client reads that stamp back from the timeline entry it receives.

It prints the raw JetStream publish rate of the same run (a scratch stream on the same server),
the changes published, the updates delivered against what the roles table lets each agent see
(their teams' conversations, before and after each change), the per-delivery latency (and the
worst session's), any session that received another tenant's update, and the api process's peak
resident memory (VmHWM). It asserts nothing about speed: `python -m tests.bench.live`.
"""

import argparse
import asyncio
import copy
import json
import random
import secrets
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import nats
from nats.js.api import StorageType, StreamConfig
from sqlalchemy.engine import make_url

from services.router.service import subject_for
from shared import ids
from shared.db.migrate import upgrade
from shared.db.models import (
    AccountRow,
    ConversationRow,
    PersonRow,
    TeamMemberRow,
    TeamRow,
    TenantRow,
    WebSessionRow,
)
from shared.events import ConversationAssigned, DeadlineChanged, DeadlineKind, Event
from shared.jetstream import publish_pipelined
from shared.messages import Outgoing
from stayhuman.natsserver import EmbeddedNats
from tests.api_world import World
from tests.bench.postgres_api import ApiProcess, cpu_seconds, create_database, drop_database, percentile

SESSION_COOKIE = "sh_session"


# -- the agency -------------------------------------------------------------------------------------


@dataclass
class Conversation:
    id: str
    tenant: str
    account: str
    team: str
    owner: str | None
    version: int = 1


@dataclass
class Agency:
    tenants: list[str] = field(default_factory=list)
    teams: dict[str, list[str]] = field(default_factory=dict)  # tenant -> team ids
    members: dict[str, list[str]] = field(default_factory=dict)  # team id -> agents
    tenant_of: dict[str, str] = field(default_factory=dict)  # agent -> tenant
    cookies: dict[str, str] = field(default_factory=dict)  # agent -> session cookie
    conversations: list[Conversation] = field(default_factory=list)


async def load(url: str, tenants: int, teams: int, per_team: int, conversations: int) -> Agency:
    """The agency written as rows: tenants, accounts, teams, agents, conversations, sessions."""
    agency = Agency()
    now = datetime.now(UTC)
    rows: list[Any] = []
    sessions: list[Any] = []
    for t in range(1, tenants + 1):
        tenant = f"brand{t:02d}"
        agency.tenants.append(tenant)
        rows.append(TenantRow(id=tenant, name=f"Brand {t}"))
        agency.teams[tenant] = []
        for k in range(1, teams + 1):
            team = ids.team_id(tenant_id=tenant, slug=f"team{k}")
            agency.teams[tenant].append(team)
            rows.append(TeamRow(id=team, tenant_id=tenant, slug=f"team{k}", name=f"Team {k}"))
            agency.members[team] = []
            for n in range(1, per_team + 1):
                agent = f"{tenant}-t{k}-a{n:02d}"
                agency.members[team].append(agent)
                agency.tenant_of[agent] = tenant
                rows.append(PersonRow(id=agent, name=agent, email=f"{agent}@example.com"))
                rows.append(TeamMemberRow(team_id=team, person_id=agent))
                cookie = secrets.token_urlsafe(32)
                agency.cookies[agent] = cookie
                sessions.append(
                    WebSessionRow(
                        id_sha256=ids.token_sha256(cookie),
                        person_id=agent,
                        csrf_token=secrets.token_urlsafe(32),
                        address="127.0.0.1",
                        created_at=now,
                        last_seen_at=now,
                        expires_at=now + timedelta(days=1),
                    )
                )
        account = f"{tenant}-fb"
        rows.append(
            AccountRow(
                id=account,
                tenant_id=tenant,
                platform="facebook",
                handle=f"Brand {t}",
                team_id=agency.teams[tenant][0],
                webhook_secret="",
            )
        )
        for team in agency.teams[tenant]:
            for c in range(conversations):
                thread = f"{team}-{c}"
                owner = agency.members[team][c % len(agency.members[team])]
                conversation = Conversation(
                    ids.conversation_id(account_id=account, thread_id=thread), tenant, account, team, owner
                )
                agency.conversations.append(conversation)
                rows.append(
                    ConversationRow(
                        id=conversation.id,
                        tenant_id=tenant,
                        account_id=account,
                        platform="facebook",
                        thread_id=thread,
                        state="open",
                        team_id=team,
                        owner_id=owner,
                        author_id=f"author-{c}",
                        author_name="Dana Reyes",
                        author_handle="@dana",
                        last_inbound_text="Where is my order?",
                        opened_at=now,
                        last_inbound_at=now,
                        awaiting_since=now,
                        assigned_at=now,
                        due_at=now + timedelta(hours=1),
                    )
                )
    async with World(url) as world:
        await world.add(*[r for r in rows if isinstance(r, TenantRow | PersonRow)])
        await world.add(*[r for r in rows if isinstance(r, TeamRow)])
        await world.add(*[r for r in rows if isinstance(r, TeamMemberRow | AccountRow)])
        await world.add(*[r for r in rows if isinstance(r, ConversationRow)])
        await world.add(*sessions)
    return agency


# -- the changes ------------------------------------------------------------------------------------


class Changes:
    """Conversation changes as the router publishes them, and who may see each (an agent sees
    their team's conversations and their own: the team before and after a change)."""

    def __init__(self, agency: Agency, seed: int = 14) -> None:
        self.agency = agency
        self.rng = random.Random(seed)
        self.expected: Counter[str] = Counter()  # agent -> updates they may see

    def next(self) -> Event:
        conversation = self.rng.choice(self.agency.conversations)
        now = datetime.now(UTC)
        before = set(self.agency.members[conversation.team])
        event: Event
        if self.rng.random() < 0.5:
            team = self.rng.choice(
                [t for t in self.agency.teams[conversation.tenant] if t != conversation.team]
            )
            owner = self.rng.choice(self.agency.members[team])
            event = ConversationAssigned(
                tenant_id=conversation.tenant,
                conversation_id=conversation.id,
                account_id=conversation.account,
                occurred_at=now,
                team_id=team,
                owner_id=owner,
                previous_owner_id=conversation.owner,
                reason="reassigned",
                assigned_at=now,
                step="reassign",
            )
            conversation.team, conversation.owner = team, owner
        else:
            conversation.version += 1
            event = DeadlineChanged(
                tenant_id=conversation.tenant,
                conversation_id=conversation.id,
                account_id=conversation.account,
                occurred_at=now,
                deadline_version=conversation.version,
                kind=DeadlineKind.first_response,
                owner_id=conversation.owner,
                started_at=now,
                warn_at=now + timedelta(minutes=30),
                due_at=now + timedelta(hours=1),
                reason="recomputed",
            )
        for agent in before | set(self.agency.members[conversation.team]):
            self.expected[agent] += 1
        return event


def outgoing(event: Event) -> Outgoing:
    return Outgoing(subject_for(event), event.model_dump_json().encode(), f"bench:{event.event_id}")


async def raw_rate(js: Any, count: int, sample: bytes) -> float:
    """Messages a second JetStream stores when published as fast as the client can, on a scratch
    stream of the same server with the same storage (file)."""
    await js.add_stream(StreamConfig(name="BENCH_RAW", subjects=["bench.raw.>"], storage=StorageType.FILE))
    try:
        started = time.monotonic()
        await publish_pipelined(js, [Outgoing("bench.raw.x", sample, f"raw:{n}") for n in range(count)])
        return count / (time.monotonic() - started)
    finally:
        await js.delete_stream("BENCH_RAW")


async def publish_changes(js: Any, changes: Changes, rate: int, seconds: float) -> tuple[int, float]:
    """`rate` changes a second for `seconds`, a batch every 50 ms; returns how many and how long."""
    tick = 0.05
    loop = asyncio.get_running_loop()
    started = loop.time()
    sent = 0
    ticks = 0
    while loop.time() - started < seconds:
        ticks += 1
        due = int(rate * tick * ticks) - sent
        if due > 0:
            await publish_pipelined(js, [outgoing(changes.next()) for _ in range(due)])
            sent += due
        await asyncio.sleep(max(0.0, started + tick * ticks - loop.time()))
    return sent, loop.time() - started


# -- the browsers (a client process) ----------------------------------------------------------------


@dataclass
class Seen:
    tenant: str
    received: int = 0
    foreign: int = 0
    connections: int = 0
    latencies: list[float] = field(default_factory=list)


async def browse(http: Any, base: str, agent: str, cookie: str, seen: Seen, ready: asyncio.Event) -> None:
    """One agent's EventSource: it reconnects with Last-Event-ID whenever the stream ends."""
    last_id: str | None = None
    while True:
        headers = {"Cookie": f"{SESSION_COOKIE}={cookie}"}
        if last_id is not None:
            headers["Last-Event-ID"] = last_id
        try:
            async with http.get(
                f"{base}/api/stream", params={"max_seconds": "300"}, headers=headers
            ) as answer:
                if answer.status != 200:
                    print(f"{agent}: {answer.status} {await answer.text()}", file=sys.stderr)
                    await asyncio.sleep(2)
                    continue
                seen.connections += 1
                ready.set()
                pending: str | None = last_id
                async for raw in answer.content:
                    line = raw.decode().rstrip("\n")
                    if line.startswith("id: "):
                        pending = line[4:]
                    elif line.startswith("data: "):
                        now = time.time()
                        data = json.loads(line[6:])
                        if "detail" in data:
                            seen.received += 1
                            if data["tenant"] != seen.tenant:
                                seen.foreign += 1
                            sent = datetime.fromisoformat(data["detail"]["occurred_at"]).timestamp()
                            seen.latencies.append(round(now - sent, 5))
                    elif line == "":
                        last_id = pending
        except (TimeoutError, OSError) as error:
            print(f"{agent}: {error!r}", file=sys.stderr)
            await asyncio.sleep(2)


async def client(base: str, assignments_file: Path) -> None:
    """The browsers of a list of agents: prints `ready` once each is connected, and on `stop`
    from stdin what each received, as one line of JSON."""
    import aiohttp

    assignments: list[list[str]] = json.loads(assignments_file.read_text())
    seen = {agent: Seen(tenant) for agent, _cookie, tenant in assignments}
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=None)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        tasks = []
        for start in range(0, len(assignments), 50):  # a browser at a time, as people sign in
            readies = []
            for agent, cookie, _tenant in assignments[start : start + 50]:
                ready = asyncio.Event()
                readies.append(ready)
                tasks.append(asyncio.create_task(browse(http, base, agent, cookie, seen[agent], ready)))
            await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), timeout=120)
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        for task in tasks:
            task.cancel()
    print(
        json.dumps(
            {
                agent: {
                    "received": s.received,
                    "foreign": s.foreign,
                    "connections": s.connections,
                    "latencies": s.latencies,
                }
                for agent, s in seen.items()
            }
        ),
        flush=True,
    )


def start_clients(base: str, agency: Agency, workdir: Path, count: int) -> list[subprocess.Popen[str]]:
    agents = sorted(agency.cookies)
    processes = []
    for n in range(count):
        mine = agents[n::count]
        path = workdir / f"client-{n}.json"
        path.write_text(json.dumps([[a, agency.cookies[a], agency.tenant_of[a]] for a in mine]))
        processes.append(
            subprocess.Popen(
                [sys.executable, "-m", "tests.bench.live", "--client", str(path), "--base", base],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                start_new_session=True,
            )
        )
    return processes


# -- the run ----------------------------------------------------------------------------------------


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tenants", type=int, default=20)
    parser.add_argument("--teams", type=int, default=5, help="teams per tenant")
    parser.add_argument("--agents", type=int, default=10, help="agents per team")
    parser.add_argument("--conversations", type=int, default=40, help="conversations per team")
    parser.add_argument("--rate", type=int, default=200, help="conversation changes a second")
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--clients", type=int, default=2, help="client processes")
    parser.add_argument("--raw", type=int, default=20_000, help="messages of the raw publish rate")
    parser.add_argument("--client", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--base", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client is not None:
        await client(args.base, args.client)
        return

    url = await create_database("sh_bench_live_")
    print(f"StayHuman live updates benchmark, PostgreSQL ({make_url(url).database})")
    clients: list[subprocess.Popen[str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        server: EmbeddedNats | None = None
        api: ApiProcess | None = None
        nc: Any = None
        try:
            await asyncio.to_thread(upgrade, url)
            agency = await load(url, args.tenants, args.teams, args.agents, args.conversations)
            print(
                f"{len(agency.tenants)} tenants, {len(agency.cookies)} agents in "
                f"{sum(len(t) for t in agency.teams.values())} teams, {len(agency.conversations)} conversations"
            )
            server = EmbeddedNats(work / "nats").start()
            api = ApiProcess(url, server.url, work).start()
            nc = await nats.connect(server.url)
            js = nc.jetstream()
            changes = Changes(agency)
            sample = outgoing(Changes(copy.deepcopy(agency)).next()).payload
            rate = await raw_rate(js, args.raw, sample)
            print(f"raw JetStream publish rate: {rate:,.0f} messages/s ({args.raw:,} of {len(sample)} bytes)")

            started = time.monotonic()
            clients = start_clients(f"http://127.0.0.1:{api.port}", agency, work, args.clients)
            for process in clients:
                assert process.stdout is not None
                line = await asyncio.to_thread(process.stdout.readline)
                if line.strip() != "ready":
                    raise RuntimeError(f"a client did not connect: {line!r}")
            print(
                f"{api.live_sessions():,} sessions connected in {time.monotonic() - started:.1f} s "
                f"({args.clients} client processes); api {api.status('VmRSS') / 1024:.0f} MB resident"
            )

            cpu = api.cpu_seconds()
            browsers_cpu = sum(cpu_seconds(p.pid) for p in clients)
            sent, elapsed = await publish_changes(js, changes, args.rate, args.seconds)
            print(f"published {sent:,} changes in {elapsed:.1f} s ({sent / elapsed:,.0f}/s)")
            await asyncio.sleep(3)  # what is in flight arrives
            cpu = api.cpu_seconds() - cpu
            browsers_cpu = sum(cpu_seconds(p.pid) for p in clients) - browsers_cpu
            peak = api.status("VmHWM")

            results: dict[str, Any] = {}
            for process in clients:
                assert process.stdin is not None and process.stdout is not None
                process.stdin.write("stop\n")
                process.stdin.flush()
                results.update(json.loads(await asyncio.to_thread(process.stdout.readline)))
            report(changes, results, cpu, elapsed, peak)
            print(f"client processes: {browsers_cpu / elapsed:.0%} of a core while publishing (all of them)")
        finally:
            if nc is not None:
                await nc.close()
            for process in clients:
                if process.poll() is None:
                    process.kill()
                    process.wait()
            if api is not None:
                api.stop()
            if server is not None:
                server.stop()
            await drop_database(url)


def report(changes: Changes, results: dict[str, Any], cpu: float, elapsed: float, peak_kb: int) -> None:
    delivered = sum(r["received"] for r in results.values())
    expected = sum(changes.expected.values())
    short = {
        a: changes.expected[a] - r["received"]
        for a, r in results.items()
        if r["received"] < changes.expected[a]
    }
    extra = sum(max(0, r["received"] - changes.expected[a]) for a, r in results.items())
    foreign = [a for a, r in results.items() if r["foreign"]]
    reconnected = sum(1 for r in results.values() if r["connections"] > 1)
    latencies = [x for r in results.values() for x in r["latencies"]]
    worst = [percentile(r["latencies"], 0.99) for r in results.values() if r["latencies"]]
    ms = 1000
    print(
        f"updates delivered: {delivered:,} of {expected:,} the agents may see ({len(short)} sessions short, {extra} extra)"
    )
    print(
        f"delivery latency, all updates: p50 {percentile(latencies, 0.5) * ms:.0f} ms, "
        f"p95 {percentile(latencies, 0.95) * ms:.0f} ms, p99 {percentile(latencies, 0.99) * ms:.0f} ms, "
        f"max {max(latencies, default=0) * ms:.0f} ms"
    )
    print(
        f"per session p99: median {percentile(worst, 0.5) * ms:.0f} ms, worst {max(worst, default=0) * ms:.0f} ms; "
        f"sessions reconnected: {reconnected}"
    )
    print(f"sessions that received another tenant's update: {len(foreign)}")
    print(
        f"api process: peak {peak_kb / 1024:.0f} MB resident (VmHWM), {cpu / elapsed:.0%} of a core while publishing"
    )


if __name__ == "__main__":
    asyncio.run(main())
