"""The options of `stayhuman bench` (light: the command line reads them before anything runs)."""

import argparse
from pathlib import Path

DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="small sizes: a sanity run of about a minute")
    size.add_argument(
        "--full", action="store_true", help="bigger sizes, 60 s of batches, 1,000,000 deadlines and memory"
    )
    parser.add_argument(
        "--database-url",
        help="a PostgreSQL server (e.g. postgresql://postgres@127.0.0.1:5432/postgres): the benchmark "
        "creates a database of its own there and drops it afterwards (default: SQLite)",
    )
    parser.add_argument(
        "--both", action="store_true", help="SQLite, then PostgreSQL (--database-url, else the local server)"
    )
    parser.add_argument(
        "--loadgen",
        choices=("auto", "python", "wrk"),
        default="auto",
        help="webhook load generator: wrk when installed (auto), or the Python one",
    )
    parser.add_argument("--json", type=Path, help="where to write the figures (default: the temp folder)")
    parser.add_argument("--workdir", type=Path, help="keep the run's folder (logs, stores) here")
    parser.add_argument("--tenants", type=int, default=8, help="tenants (each an account and a team)")
    parser.add_argument("--processes", type=int, default=2, help="load generator processes (wrk: threads)")
    parser.add_argument("--connections", type=int, default=32, help="connections per load generator process")
    for name, kind, text in (
        ("reference", int, "messages of the raw JetStream reference"),
        ("webhooks", int, "webhooks (Python load generator)"),
        ("webhook-seconds", float, "seconds of webhooks (wrk)"),
        ("batch-seconds", float, "seconds of batches sent"),
        ("router", int, "interactions fed to the router"),
        ("deadlines", int, "deadlines armed"),
        ("paced-rate", float, "webhooks per second offered for the latency figure"),
        ("paced-seconds", float, "seconds of paced webhooks"),
        ("armed", int, "--full: deadlines armed far ahead"),
        ("due-soon", int, "--full: deadlines falling due during the run"),
        ("open-conversations", int, "--full: open conversations for the memory figure"),
    ):
        parser.add_argument(f"--{name}", type=kind, help=text)
