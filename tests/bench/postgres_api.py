"""For the benchmarks that run the api as its own process against a PostgreSQL database of their own.

A benchmark makes a fresh database on the server of STAYHUMAN_TEST_POSTGRES_URL (default
postgresql://postgres@127.0.0.1:5432/postgres) with `create_database`, runs `stayhuman api`
against it with `ApiProcess` (its own ports, state directory and secret key, as in production),
reads the process's memory and CPU from /proc, and drops the database with `drop_database`.
"""

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
from sqlalchemy.engine import URL, make_url

from shared.secrets import new_key
from stayhuman.natsserver import free_ports

DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of `values`, 0 when there are none."""
    ordered = sorted(values)
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, max(0, int(len(ordered) * fraction + 0.5) - 1))]


# -- the database ----------------------------------------------------------------------------


def admin_url() -> URL:
    return make_url(os.environ.get("STAYHUMAN_TEST_POSTGRES_URL") or DEFAULT_POSTGRES)


async def admin_connect() -> asyncpg.Connection:
    base = admin_url()
    return await asyncpg.connect(
        host=base.host,
        port=base.port or 5432,
        user=base.username,
        password=base.password,
        database=base.database or "postgres",
    )


async def create_database(prefix: str) -> str:
    """A new empty database named `prefix` and a random suffix; its SQLAlchemy (asyncpg) URL."""
    name = f"{prefix}{uuid.uuid4().hex[:10]}"
    admin = await admin_connect()
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return (
        admin_url().set(drivername="postgresql+asyncpg", database=name).render_as_string(hide_password=False)
    )


async def drop_database(url: str) -> None:
    admin = await admin_connect()
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')
    finally:
        await admin.close()


# -- the api, in its own process -------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """CPU time a process has used (user and system), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class ApiProcess:
    """The api service in its own process, as `stayhuman api` runs it."""

    database_url: str
    nats_url: str
    workdir: Path
    port: int = 0
    ops: int = 0
    process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> "ApiProcess":
        self.port, self.ops = free_ports(2)
        env = {
            **os.environ,
            "STAYHUMAN_DATABASE_URL": self.database_url,
            "STAYHUMAN_NATS_URL": self.nats_url,
            "STAYHUMAN_API_PORT": str(self.port),
            "STAYHUMAN_API_OPS_PORT": str(self.ops),
            "STAYHUMAN_STATE_DIR": str(self.workdir / "state"),
            "STAYHUMAN_SECRET_KEY": new_key(),
            "STAYHUMAN_LOG_LEVEL": "warning",
        }
        log = (self.workdir / "api.log").open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "stayhuman", "api"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the api exited:\n{self.logs()}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.ops}/readyz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"the api was not ready after {timeout}s:\n{self.logs()}")

    def logs(self) -> str:
        return (self.workdir / "api.log").read_text(errors="replace")[-5000:]

    def status(self, key: str) -> int:
        """A figure of /proc/<pid>/status, in kB (VmRSS, VmHWM)."""
        assert self.process is not None
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1])
        return 0

    def rss_mb(self) -> float:
        """The process's resident memory now, in MB."""
        return self.status("VmRSS") / 1024

    def cpu_seconds(self) -> float:
        assert self.process is not None
        return cpu_seconds(self.process.pid)

    def live_sessions(self) -> int:
        """Browsers connected to the live stream, from the api's /metrics."""
        text = httpx.get(f"http://127.0.0.1:{self.ops}/metrics", timeout=5).text
        for line in text.splitlines():
            if line.startswith("stayhuman_api_live_sessions "):
                return int(float(line.split()[1]))
        return 0

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
