"""`stayhuman bench`: start everything, measure each figure, print the table, write the JSON."""

import argparse
import asyncio
import dataclasses
import json
import os
import shutil
import signal
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stayhuman.bench import loadgen
from stayhuman.bench.options import DEFAULT_POSTGRES
from stayhuman.bench.phases import FULL, QUICK, Phases, Sizes, config_yaml, reference, tenants_of
from stayhuman.bench.report import Figure, document, machine_facts, table
from stayhuman.bench.stack import BenchStack, FreshPostgres, SmtpSink
from stayhuman.natsserver import EmbeddedNats


def sizes_of(args: argparse.Namespace) -> Sizes:
    sizes = QUICK if args.quick else FULL if args.full else Sizes()
    given = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(Sizes)
        if getattr(args, f.name, None) is not None
    }
    return dataclasses.replace(sizes, **given)


def nats_version(server: EmbeddedNats) -> str:
    try:
        with urllib.request.urlopen(
            f"http://{server.host}:{server.monitor_port}/varz", timeout=5
        ) as response:
            return str(json.load(response).get("version", "?"))
    except OSError:
        return "?"


def choose_loadgen(wanted: str, say: Callable[[str], None]) -> str:
    if wanted == "python":
        return "python"
    if loadgen.wrk_binary() is not None:
        return "wrk"
    if wanted == "wrk":
        say("wrk is not installed (apt-get install wrk): using the Python load generator")
    return "python"


async def _figures(phases: Phases, *, postgres: bool, full: bool) -> None:
    """Each figure in turn; one that fails is said and left out, the others still run."""

    async def attempt(what: str, step: Callable[[], Awaitable[Any]]) -> Any:
        try:
            return await step()
        except Exception as error:
            phases.say(f"  {what}: failed, left out: {type(error).__name__}: {error}")
            return None

    try:
        await attempt("webhooks", phases.webhooks)
        await attempt("batch API", phases.batch)
        one = await attempt("router", phases.router)
        await attempt("deadlines", phases.deadlines)
        await attempt("paced webhooks", phases.paced)
        if full:
            await attempt("due -> SMTP", phases.due_to_smtp)
        if postgres and one is not None:
            phases.say("  (restarting with 3 routers)")

            async def three_routers() -> Figure:
                await asyncio.to_thread(phases.stack.restart, 3)
                return await phases.router(key="routers_3", routers=3)

            three = await attempt("3 routers", three_routers)
            if three is not None:
                phases.routers_compared(one, three)
        if full:
            await attempt("memory", phases.memory)
    finally:
        await phases.close()


def run(args: argparse.Namespace) -> int:
    def say(text: str) -> None:
        print(text, flush=True)

    signal.signal(signal.SIGTERM, _interrupt)
    began = time.monotonic()
    sizes = sizes_of(args)
    mode = "quick" if args.quick else "full" if args.full else "default"
    chosen = choose_loadgen(args.loadgen, say)
    postgres_url = args.database_url or os.environ.get("STAYHUMAN_TEST_POSTGRES_URL") or DEFAULT_POSTGRES
    databases: list[tuple[str, str | None]] = []
    if args.both or not args.database_url:
        databases.append(("SQLite", None))
    if args.both or args.database_url:
        databases.append(("PostgreSQL", postgres_url))
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="stayhuman-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    json_path = args.json or Path(tempfile.gettempdir()) / f"stayhuman-bench-{stamp}.json"
    machine = machine_facts()
    tenants = tenants_of(args.tenants)
    figures: list[Figure] = []
    reference_rate: float | None = None
    smtp = SmtpSink().start()
    machine["databases"] = []
    say(
        f"StayHuman benchmark ({mode}): {machine['cpus']} CPUs ({machine['cpu_model']}), "
        f"{machine['memory_mb']:,} MB, Python {machine['python']}"
    )
    say(f"webhook load generator: {chosen}; folder {workdir}")
    try:
        for label, server_url in databases:
            server = EmbeddedNats(workdir / label.lower() / "nats").start()
            machine["nats_server"] = nats_version(server)
            fresh = FreshPostgres(server_url).create() if server_url else None
            try:
                if reference_rate is None:
                    say(f"nats-server {machine['nats_server']}: raw JetStream reference...")
                    ref = asyncio.run(reference(server.url, sizes.reference))
                    reference_rate = ref.value
                    figures.append(ref)
                    say(f"  {ref.title:<46} {ref.value:>10,.0f}/s")
                    say(f"    {ref.note}")
                database_url = (
                    fresh.url if fresh else f"sqlite+aiosqlite:///{workdir / label.lower() / 'stayhuman.db'}"
                )
                machine["databases"].append(_server_version(database_url) if fresh else label)
                stack = BenchStack(workdir / label.lower() / "stack", database_url, server, smtp)
                say(f"{label}: migrating, applying {len(tenants)} tenants, starting `stayhuman up`...")
                stack.prepare(config_yaml(tenants))
                stack.start(routers=1)
                phases = Phases(
                    stack, label, tenants, sizes, chosen, processes=args.processes,
                    connections=args.connections, say=say,
                )  # fmt: skip
                try:
                    asyncio.run(_figures(phases, postgres=fresh is not None, full=args.full))
                finally:
                    figures.extend(phases.figures)
                    stack.stop()
            finally:
                server.stop()
                if fresh is not None:
                    fresh.drop()
    finally:
        smtp.stop()
        elapsed = time.monotonic() - began
        settings: dict[str, Any] = {
            "mode": mode,
            "loadgen": chosen,
            "processes": args.processes,
            "connections": args.connections,
            "tenants": args.tenants,
            "sizes": dataclasses.asdict(sizes),
            "seconds": round(elapsed, 1),
            "finished_at": datetime.now(UTC).isoformat(),
        }
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(
            json.dumps(document(figures, reference_rate, machine, settings), indent=2) + "\n"
        )
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
        say("")
        say(table(figures, reference_rate))
        say("")
        say(f"finished in {elapsed:.0f} s; figures written to {json_path}")
    return 0


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt  # stopped from outside: stop the services, keep what was measured


def _server_version(url: str) -> str:
    import asyncpg
    from sqlalchemy.engine import make_url

    async def version() -> str:
        dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        connection = await asyncpg.connect(dsn)
        try:
            return str(await connection.fetchval("SHOW server_version"))
        finally:
            await connection.close()

    try:
        return "PostgreSQL " + asyncio.run(version())
    except Exception as error:  # the version is a nicety
        return f"version unknown: {type(error).__name__}"
