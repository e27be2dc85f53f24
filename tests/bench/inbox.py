"""Inbox benchmark: how fast My work and the conversations API answer an agent on a full database.

On PostgreSQL (STAYHUMAN_TEST_POSTGRES_URL, default postgresql://postgres@127.0.0.1:5432/postgres)
it makes a database of its own: 20 tenants, ~200 people, 100,000 open conversations and twice as
many resolved ones, the messages and timeline of the conversations it opens. It runs the api
service in its own process (uvicorn, against an embedded NATS), signs one agent in (they serve in
one team of each of the 20 tenants and own ~150 open conversations; their teams hold thousands),
and times each read, one request at a time and then from a few clients at once, next to raw
figures of the same run (a `SELECT 1` round trip, the api's /healthz) so noise shows.

It prints figures and asserts nothing about speed (machines are noisy); the target is a p95
under 150 ms. `make bench` runs it.
"""

import argparse
import asyncio
import random
import secrets
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from sqlalchemy.engine import make_url
from sqlmodel import SQLModel

from services.api.auth import SESSION_COOKIE
from services.api.reads import encode_cursor
from shared import ids
from shared.db.migrate import upgrade
from shared.db.models import (
    AccountRow,
    ConversationRow,
    DeadlineRow,
    InteractionRow,
    PersonRow,
    TeamMemberRow,
    TeamRow,
    TenantRow,
    TimelineRow,
    WebSessionRow,
)
from stayhuman.natsserver import EmbeddedNats
from tests.bench.postgres_api import ApiProcess, create_database, drop_database, percentile

AGENT = "bench-agent"
TEAMS = (("care", 0.45), ("sales", 0.35), ("social", 0.20))  # slug, share of a tenant's conversations
TOPICS = ("billing", "delivery", "complaint", "returns", "product", "general")
PRIORITIES = (("normal", 0.70), ("high", 0.18), ("urgent", 0.05), ("low", 0.07))
PLATFORMS = ("facebook", "instagram", "x")
FIRST = ("Ana", "Ben", "Chloé", "Dmitri", "Eva", "Femi", "Greta", "Hugo", "Ines", "Jon", "Kemal", "Lea")
LAST = ("Moreau", "Schmidt", "Okafor", "Rossi", "Novak", "Silva", "Larsen", "Kowalski", "Yilmaz", "Haas")
WORDS = (
    "my order has not arrived yet and the tracking page still says it is being prepared "
    "I was charged twice for the same subscription please refund the second payment "
    "the app keeps logging me out whenever I open the basket why is that "
    "can you tell me when the store in the city centre opens on sunday "
    "the parcel came damaged the box was wet and the glass inside is broken "
    "thank you for the quick answer yesterday it works now but the invoice is wrong"
).split()
BATCH = 20_000
SELECT_ONE = "SELECT 1 (asyncpg)"
DEPTH = 20_000  # rows before the deep page of /api/conversations


# -- the database ----------------------------------------------------------------------------


def connect_args(url: str) -> dict[str, Any]:
    target = make_url(url)
    return {
        "host": target.host,
        "port": target.port or 5432,
        "user": target.username,
        "password": target.password,
        "database": target.database,
    }


async def connect(url: str) -> asyncpg.Connection:
    return await asyncpg.connect(**connect_args(url))


class Table:
    """A table's columns and the model's defaults, to write rows as tuples with COPY."""

    def __init__(self, model: type[SQLModel]) -> None:
        self.name = str(model.__tablename__)
        self.columns = [column.name for column in model.__table__.columns]  # type: ignore[attr-defined]
        self.defaults: dict[str, Any] = {}
        for name in self.columns:
            info = model.model_fields.get(name)
            if info is not None and not info.is_required():
                self.defaults[name] = info.get_default(call_default_factory=True)

    def row(self, values: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(values[name] if name in values else self.defaults[name] for name in self.columns)

    async def copy(self, connection: asyncpg.Connection, rows: Iterator[dict[str, Any]]) -> int:
        count = 0
        batch: list[tuple[Any, ...]] = []
        for values in rows:
            batch.append(self.row(values))
            if len(batch) >= BATCH:
                await connection.copy_records_to_table(self.name, records=batch, columns=self.columns)
                count += len(batch)
                batch = []
        if batch:
            await connection.copy_records_to_table(self.name, records=batch, columns=self.columns)
            count += len(batch)
        return count


@dataclass
class Shape:
    tenants: int = 20
    people: int = 200
    open: int = 100_000
    resolved: int = 200_000
    owned: int = 150


@dataclass
class Data:
    """What the bench needs to know of what it loaded."""

    now: datetime
    tenants: list[str] = field(default_factory=list)
    agent_teams: list[str] = field(default_factory=list)  # the agent's team ids, one per tenant
    owned: list[str] = field(default_factory=list)  # open conversations the agent owns
    visible: int = 0  # conversations the agent may see (all states)
    visible_open: int = 0
    loaded: dict[str, int] = field(default_factory=dict)


def hex_id(rng: random.Random) -> str:
    return f"{rng.getrandbits(128):032x}"


def sentence(rng: random.Random) -> str:
    start = rng.randrange(len(WORDS) - 40)
    text = " ".join(WORDS[start : start + rng.randint(6, 40)])
    return text[0].upper() + text[1:] + rng.choice(("?", ".", "!", " 🙁", ""))


def pick(rng: random.Random, weighted: Sequence[tuple[str, float]]) -> str:
    return rng.choices([name for name, _ in weighted], [weight for _, weight in weighted])[0]


async def load(url: str, shape: Shape, seed: int = 14) -> Data:
    """Write the agency with COPY: tenants, accounts, teams, people, conversations, and the
    messages, timeline and deadlines of the open ones."""
    rng = random.Random(seed)
    now = datetime.now(UTC).replace(microsecond=0)
    data = Data(now=now)
    tenants = [f"brand{n:02d}" for n in range(1, shape.tenants + 1)]
    data.tenants = tenants
    people = [f"p{n:03d}" for n in range(1, shape.people)] + [AGENT]
    teams: dict[str, list[tuple[str, str]]] = {}  # tenant -> [(team id, slug)]
    members: dict[str, list[str]] = {}  # team id -> person ids
    accounts: dict[str, list[tuple[str, str, str]]] = {}  # tenant -> [(account id, platform, team id)]
    for tenant in tenants:
        teams[tenant] = [(ids.team_id(tenant_id=tenant, slug=slug), slug) for slug, _ in TEAMS]
        for team_id, _ in teams[tenant]:
            members[team_id] = []
    others = people[:-1]
    for index, person in enumerate(others):  # each serves one to three teams
        for tenant in rng.sample(tenants, rng.choice((1, 1, 2, 3))):
            members[rng.choice(teams[tenant])[0]].append(person)
        members[teams[tenants[index % len(tenants)]][index % len(TEAMS)][0]].append(person)
    for team_id in members:
        members[team_id] = sorted(set(members[team_id])) or [rng.choice(others)]
    for tenant in tenants:
        care = teams[tenant][0][0]
        members[care].append(AGENT)
        data.agent_teams.append(care)
        accounts[tenant] = [
            (f"{tenant}-{platform[:2]}", platform, teams[tenant][n % len(TEAMS)][0])
            for n, platform in enumerate(PLATFORMS)
        ]

    connection = await connect(url)
    try:
        data.loaded["tenant"] = await Table(TenantRow).copy(
            connection,
            iter({"id": t, "name": t.title(), "created_at": now, "updated_at": now} for t in tenants),
        )
        data.loaded["person"] = await Table(PersonRow).copy(
            connection,
            iter(
                {
                    "id": p,
                    "name": f"{rng.choice(FIRST)} {rng.choice(LAST)}" if p != AGENT else "Bench Agent",
                    "email": f"{p}@agency.example",
                    "capacity": 200 if p == AGENT else 20,
                    "created_at": now,
                    "updated_at": now,
                }
                for p in people
            ),
        )
        data.loaded["team"] = await Table(TeamRow).copy(
            connection,
            iter(
                {
                    "id": team_id,
                    "tenant_id": tenant,
                    "slug": slug,
                    "name": slug.title(),
                    "lead_id": members[team_id][0] if members[team_id][0] != AGENT else None,
                }
                for tenant in tenants
                for team_id, slug in teams[tenant]
            ),
        )
        data.loaded["teammember"] = await Table(TeamMemberRow).copy(
            connection,
            iter({"team_id": t, "person_id": p} for t, people_of in members.items() for p in people_of),
        )
        data.loaded["account"] = await Table(AccountRow).copy(
            connection,
            iter(
                {
                    "id": account,
                    "tenant_id": tenant,
                    "platform": platform,
                    "handle": f"@{tenant}",
                    "team_id": team_id,
                    "webhook_secret": "",
                    "created_at": now,
                    "updated_at": now,
                }
                for tenant in tenants
                for account, platform, team_id in accounts[tenant]
            ),
        )

        # Bigger brands have more conversations: tenant weights from 1 to 3.
        tenant_weights = [1 + 2 * (n % 7) / 6 for n in range(len(tenants))]
        open_rows: list[dict[str, Any]] = []
        agent_candidates: list[int] = []

        def conversation(number: int, *, resolved: bool) -> dict[str, Any]:
            tenant = rng.choices(tenants, tenant_weights)[0]
            slot = rng.choices(range(len(TEAMS)), [share for _, share in TEAMS])[0]
            team_id = teams[tenant][slot][0]
            account, platform, _ = accounts[tenant][slot]
            first, last = rng.choice(FIRST), rng.choice(LAST)
            author = rng.randrange(60_000)
            opened = now - (
                timedelta(days=rng.uniform(3, 365)) if resolved else timedelta(minutes=rng.uniform(5, 4320))
            )
            row: dict[str, Any] = {
                "id": hex_id(rng),
                "tenant_id": tenant,
                "account_id": account,
                "platform": platform,
                "thread_id": f"thread-{number}",
                "team_id": team_id,
                "topic": rng.choice(TOPICS),
                "priority": pick(rng, PRIORITIES),
                "author_id": f"{platform}:{author}",
                "author_name": f"{first} {last}",
                "author_handle": f"@{first.lower()}{author}",
                "author_followers": rng.choice(
                    (None, rng.randrange(50, 5000), rng.randrange(10_000, 900_000))
                ),
                "last_inbound_text": sentence(rng),
                "language": rng.choice(("en", "en", "de", "fr", "es")),
                "opened_at": opened,
                "last_inbound_at": opened + timedelta(minutes=rng.uniform(0, 60)),
                "assignment_reason": "least loaded of team",
                "updated_at": now,
            }
            team_members = members[team_id]
            if resolved:
                row.update(
                    state="resolved",
                    owner_id=rng.choice(team_members),
                    responded_at=row["last_inbound_at"] + timedelta(minutes=rng.uniform(2, 240)),
                    resolved_at=row["last_inbound_at"] + timedelta(hours=rng.uniform(4, 72)),
                )
                row["assigned_at"] = opened
                return row
            state = pick(rng, (("open", 0.80), ("responded", 0.15), ("paused", 0.05)))
            queued = rng.random() < 0.3
            owner = None if queued else rng.choice([m for m in team_members if m != AGENT] or team_members)
            row.update(state=state, owner_id=owner, assigned_at=None if queued else opened)
            row["queued_at"] = opened if queued else None
            if state == "open":
                due = row["last_inbound_at"] + timedelta(minutes=rng.choice((30, 60, 120, 240, 480)))
                due += timedelta(minutes=rng.uniform(0, 2880))  # business hours stretch the clock
                row.update(
                    awaiting_since=row["last_inbound_at"],
                    deadline_kind=rng.choice(("first_response", "first_response", "next_response")),
                    deadline_version=1,
                    due_at=due,
                    warn_at=due - timedelta(minutes=15),
                    load_weight=0 if queued else 1,
                )
            elif state == "responded":
                row["responded_at"] = row["last_inbound_at"] + timedelta(minutes=rng.uniform(2, 120))
                if rng.random() < 0.5:
                    row.update(
                        deadline_kind="resolution",
                        deadline_version=2,
                        due_at=opened + timedelta(hours=rng.uniform(24, 96)),
                    )
            else:
                row.update(
                    paused_at=row["last_inbound_at"] + timedelta(minutes=5),
                    paused_kind="waiting_on_customer",
                    paused_remaining_seconds=rng.uniform(60, 3600),
                )
            if team_id in data.agent_teams and state != "paused":
                agent_candidates.append(len(open_rows))
            open_rows.append(row)
            return row

        for number in range(shape.open):
            conversation(number, resolved=False)
        for index in rng.sample(agent_candidates, min(shape.owned, len(agent_candidates))):
            open_rows[index].update(owner_id=AGENT, queued_at=None, assigned_at=open_rows[index]["opened_at"])
            if open_rows[index]["state"] == "open":
                open_rows[index]["load_weight"] = 1
            data.owned.append(open_rows[index]["id"])
        conversations = Table(ConversationRow)
        data.loaded["conversation (open)"] = await conversations.copy(connection, iter(open_rows))
        data.loaded["conversation (resolved)"] = await conversations.copy(
            connection,
            (conversation(shape.open + number, resolved=True) for number in range(shape.resolved)),
        )

        owned = set(data.owned)
        data.loaded["interaction"] = await Table(InteractionRow).copy(
            connection, (message for row in open_rows for message in messages(rng, row, row["id"] in owned))
        )
        seq = iter(range(1, 10**9))
        data.loaded["timeline"] = await Table(TimelineRow).copy(
            connection, (entry for row in open_rows for entry in history(rng, row, row["id"] in owned, seq))
        )
        data.loaded["deadline"] = await Table(DeadlineRow).copy(
            connection,
            (
                {
                    "conversation_id": row["id"],
                    "tenant_id": row["tenant_id"],
                    "version": row.get("deadline_version", 1),
                    "kind": row.get("deadline_kind"),
                    "owner_id": row["owner_id"],
                    "started_at": row.get("awaiting_since"),
                    "warn_at": row.get("warn_at"),
                    "due_at": row.get("due_at"),
                    "state": "armed",
                    "updated_at": now,
                }
                for row in open_rows
                if row.get("due_at") is not None
            ),
        )
        # A long-lived table is vacuumed and analysed by autovacuum: do it now rather than wait.
        for table in ("conversation", "interaction", "timeline", "deadline", "teammember", "team", "person"):
            await connection.execute(f"VACUUM ANALYZE {table}")
        scope = "(team_id = ANY($1::varchar[]) OR owner_id = $2)"
        data.visible = await connection.fetchval(
            f"SELECT count(*) FROM conversation WHERE {scope}", data.agent_teams, AGENT
        )
        data.visible_open = await connection.fetchval(
            f"SELECT count(*) FROM conversation WHERE {scope} AND state <> 'resolved'",
            data.agent_teams,
            AGENT,
        )
    finally:
        await connection.close()
    return data


def messages(rng: random.Random, row: dict[str, Any], thread: bool) -> Iterator[dict[str, Any]]:
    """The conversation's inbound message; a whole thread for those the agent owns (and opens)."""
    count = rng.randint(4, 12) if thread else 1
    at = row["last_inbound_at"] - timedelta(minutes=5 * (count - 1))
    for n in range(count):
        last = n == count - 1
        inbound = last or n % 2 == 0
        yield {
            "id": hex_id(rng),
            "tenant_id": row["tenant_id"],
            "account_id": row["account_id"],
            "external_id": f"{row['thread_id']}-m{n}",
            "edit_version": 0,
            "kind": "comment",
            "direction": "inbound" if inbound else "outbound",
            "thread_id": row["thread_id"],
            "author_id": row["author_id"] if inbound else f"page:{row['tenant_id']}",
            "author_name": row["author_name"] if inbound else row["tenant_id"].title(),
            "text": row["last_inbound_text"] if last else sentence(rng),
            "language": row["language"],
            "created_at": at,
            "received_at": at + timedelta(seconds=2),
            "conversation_id": row["id"],
        }
        at += timedelta(minutes=5)


def history(
    rng: random.Random, row: dict[str, Any], thread: bool, seq: Iterator[int]
) -> Iterator[dict[str, Any]]:
    """Timeline entries: opened and assigned; a longer history for those the agent owns."""
    kinds = ["conversation.opened", "conversation.assigned"]
    if thread:
        kinds += [
            "deadline.changed",
            "conversation.responded",
            "conversation.reopened",
            "deadline.changed",
        ] * 2
    at = row["opened_at"]
    for n, kind in enumerate(kinds):
        yield {
            "id": f"{kind}:{row['id']}:{n}",
            "seq": next(seq),
            "tenant_id": row["tenant_id"],
            "conversation_id": row["id"],
            "person_id": row["owner_id"] if kind == "conversation.assigned" else None,
            "at": at,
            "kind": kind,
            "actor": "router",
            "summary": f"{kind.split('.')[1].replace('_', ' ').capitalize()} ({row['topic']}, {row['priority']})",
            "detail": "{}",
        }
        at += timedelta(seconds=rng.uniform(1, 600))


async def sign_in(url: str, person_id: str) -> str:
    """A session of the person, as sign-in writes it (only the cookie's SHA-256 is kept)."""
    cookie = secrets.token_urlsafe(32)
    now = datetime.now(UTC)
    table = Table(WebSessionRow)
    connection = await connect(url)
    try:
        await table.copy(
            connection,
            iter(
                [
                    {
                        "id_sha256": ids.token_sha256(cookie),
                        "person_id": person_id,
                        "csrf_token": secrets.token_urlsafe(32),
                        "address": "127.0.0.1",
                        "created_at": now,
                        "last_seen_at": now,
                        "expires_at": now + timedelta(days=1),
                    }
                ]
            ),
        )
    finally:
        await connection.close()
    return cookie


async def deep_cursor(url: str, data: Data, depth: int) -> str:
    """The cursor of /api/conversations after its first `depth` rows, as the api makes it."""
    connection = await connect(url)
    try:
        row = await connection.fetchrow(
            "SELECT due_at, id FROM conversation WHERE team_id = ANY($1::varchar[]) OR owner_id = $2 "
            "ORDER BY due_at IS NULL, due_at, id OFFSET $3 LIMIT 1",
            data.agent_teams,
            AGENT,
            depth - 1,
        )
    finally:
        await connection.close()
    assert row is not None
    return encode_cursor("due", row["due_at"].isoformat() if row["due_at"] else None, row["id"])


# -- measuring -------------------------------------------------------------------------------


@dataclass
class Route:
    name: str
    paths: list[str]  # taken in turn
    raw: bool = False  # a raw figure, not a route of the inbox

    def path(self, n: int) -> str:
        return self.paths[n % len(self.paths)]


Timings = dict[str, list[float]]


async def timed_get(http: httpx.AsyncClient, path: str) -> float:
    started = time.perf_counter()
    response = await http.get(path)
    elapsed = time.perf_counter() - started
    if response.status_code != 200:
        raise RuntimeError(f"GET {path} answered {response.status_code}: {response.text[:300]}")
    return elapsed


async def select_one(pool: asyncpg.Pool) -> float:
    started = time.perf_counter()
    async with pool.acquire() as connection:
        await connection.fetchval("SELECT 1")
    return time.perf_counter() - started


async def ask(route: Route, n: int, http: httpx.AsyncClient, pool: asyncpg.Pool) -> float:
    """One request of the route (its n-th), in seconds."""
    if route.name == SELECT_ONE:
        return await select_one(pool)
    return await timed_get(http, route.path(n))


async def sequential(routes: list[Route], http: httpx.AsyncClient, pool: asyncpg.Pool, count: int) -> Timings:
    """Each route `count` times, one request at a time."""
    return {route.name: [await ask(route, n, http, pool) for n in range(count)] for route in routes}


async def concurrent(
    routes: list[Route], clients: list[httpx.AsyncClient], pool: asyncpg.Pool, count: int
) -> Timings:
    """Every client asks every route in turn, all at once: `count` requests per route in all."""
    timings: Timings = {route.name: [] for route in routes}

    async def client(index: int, http: httpx.AsyncClient) -> None:
        for n in range(index, count, len(clients)):
            for route in routes[index % len(routes) :] + routes[: index % len(routes)]:
                timings[route.name].append(await ask(route, n, http, pool))

    await asyncio.gather(*(client(index, http) for index, http in enumerate(clients)))
    return timings


def report(title: str, routes: list[Route], timings: Timings) -> None:
    print(f"\n{title}")
    print(f"  {'':46s} {'n':>5s} {'p50':>8s} {'p95':>8s} {'p99':>8s} {'max':>8s}   (ms)")
    for route in routes:
        values = timings[route.name]
        figures = " ".join(f"{percentile(values, f) * 1000:8.1f}" for f in (0.50, 0.95, 0.99, 1.0))
        mark = "" if route.raw else ("   over 150" if percentile(values, 0.95) > 0.150 else "")
        print(f"  {route.name:46s} {len(values):5d} {figures}{mark}")


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--open", type=int, default=100_000, help="open conversations")
    parser.add_argument("--resolved", type=int, default=200_000, help="resolved conversations")
    parser.add_argument("--tenants", type=int, default=20)
    parser.add_argument("--people", type=int, default=200)
    parser.add_argument("--owned", type=int, default=150, help="open conversations the agent owns")
    parser.add_argument("--requests", type=int, default=200, help="requests per route, one at a time")
    parser.add_argument("--clients", type=int, default=4, help="clients asking at once")
    parser.add_argument("--keep", action="store_true", help="keep the database (its URL is printed)")
    args = parser.parse_args()
    shape = Shape(
        tenants=args.tenants, people=args.people, open=args.open, resolved=args.resolved, owned=args.owned
    )

    url = await create_database("sh_bench_inbox_")
    print(f"StayHuman inbox benchmark, PostgreSQL ({make_url(url).database})")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        server: EmbeddedNats | None = None
        api: ApiProcess | None = None
        try:
            started = time.monotonic()
            await asyncio.to_thread(upgrade, url)
            data = await load(url, shape)
            loaded = ", ".join(f"{count:,} {table}" for table, count in data.loaded.items())
            print(f"loaded in {time.monotonic() - started:.0f} s: {loaded}")
            print(
                f"the agent serves {len(data.agent_teams)} teams in {len(data.tenants)} tenants, owns "
                f"{len(data.owned)} open conversations, sees {data.visible:,} "
                f"({data.visible_open:,} not resolved)"
            )
            cookie = await sign_in(url, AGENT)
            depth = min(DEPTH, max(1, data.visible // 2))
            deep = await deep_cursor(url, data, depth)
            server = EmbeddedNats(work / "nats").start()
            api = ApiProcess(url, server.url, work).start()
            base = f"http://127.0.0.1:{api.port}"
            headers = {"Cookie": f"{SESSION_COOKIE}={cookie}"}
            limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
            async with (
                httpx.AsyncClient(base_url=base, headers=headers, timeout=60, limits=limits) as http,
                asyncpg.create_pool(**connect_args(url), min_size=1, max_size=args.clients) as pool,
            ):
                first = (await http.get("/api/my-work")).json()
                second_page = first["next_cursor"]
                tenant, team = data.tenants[0], "care"
                owned = [f"/api/conversations/{cid}" for cid in data.owned]
                routes = [
                    Route(SELECT_ONE, [""], raw=True),
                    Route("GET /healthz", ["/healthz"], raw=True),
                    Route("GET /api/my-work", ["/api/my-work"]),
                    Route("GET /api/my-work (page 2)", [f"/api/my-work?cursor={second_page}"]),
                    Route("GET /api/conversations", ["/api/conversations"]),
                    Route("GET /api/conversations?tenant=", [f"/api/conversations?tenant={tenant}"]),
                    Route(
                        "GET /api/conversations?tenant=&team=",
                        [f"/api/conversations?tenant={tenant}&team={team}"],
                    ),
                    Route("GET /api/conversations?overdue=true", ["/api/conversations?overdue=true"]),
                    Route("GET /api/conversations?state=open", ["/api/conversations?state=open"]),
                    Route(
                        f"GET /api/conversations (after row {depth:,})", [f"/api/conversations?cursor={deep}"]
                    ),
                    Route("GET /api/conversations/{id} (owned)", owned),
                ]
                for name, paths in (
                    ("GET /inbox", ["/inbox"]),
                    ("GET /inbox/c/{id}", [f"/inbox/c/{cid}" for cid in data.owned]),
                ):
                    answer = await http.get(paths[0])
                    if answer.status_code == 200:
                        routes.append(Route(name, paths))
                    else:
                        print(f"{name}: answers {answer.status_code}, not measured")
                await sequential(routes, http, pool, 20)  # warm up: connections, plans, caches
                timings = await sequential(routes, http, pool, args.requests)
                report(f"one request at a time ({args.requests} per route)", routes, timings)
                clients = [
                    httpx.AsyncClient(base_url=base, headers=headers, timeout=60, limits=limits)
                    for _ in range(args.clients)
                ]
                try:
                    timings = await concurrent(routes, clients, pool, args.requests)
                finally:
                    for client in clients:
                        await client.aclose()
                report(f"{args.clients} clients at once ({args.requests} per route in all)", routes, timings)
                print(f"\napi process: {api.rss_mb():.0f} MB resident")
        finally:
            if api is not None:
                api.stop()
            if server is not None:
                server.stop()
            if args.keep:
                print(f"database kept: {url}")
            else:
                await drop_database(url)


if __name__ == "__main__":
    asyncio.run(main())
