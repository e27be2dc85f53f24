"""What the benchmark runs against: its own nats-server, database, SMTP sink and `stayhuman up`,
on free ports in a folder of its own."""

import asyncio
import contextlib
import email
import email.policy
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from sqlalchemy.engine import make_url

from shared.secrets import new_key, new_vapid_pem
from stayhuman.natsserver import EmbeddedNats, free_port, free_ports

SERVICE_PORTS = ("ingest", "ingest-ops", "router", "notify", "notify-ops", "api", "api-ops", "outbound")


class _Recorder:
    """Accepts every message and notes when, with its headers."""

    def __init__(self) -> None:
        self.accepted: list[tuple[float, Any]] = []

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
        content = envelope.original_content or envelope.content
        message = email.message_from_bytes(content, policy=email.policy.default)
        self.accepted.append((time.time(), message))
        return "250 Message accepted for delivery"


class SmtpSink:
    """A real SMTP server (aiosmtpd, as the project's dev mailbox) that records when it accepted
    each message."""

    def __init__(self) -> None:
        self.port = free_port()
        self.recorder = _Recorder()
        self._controller = Controller(self.recorder, hostname="127.0.0.1", port=self.port)

    def start(self) -> "SmtpSink":
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()


def _asyncpg_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _admin(url: str, statement: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(_asyncpg_dsn(url))
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


@dataclass
class FreshPostgres:
    """A new database on the server `server_url` names, dropped afterwards."""

    server_url: str
    name: str = field(default_factory=lambda: f"stayhuman_bench_{uuid.uuid4().hex[:10]}")

    @property
    def url(self) -> str:
        return make_url(self.server_url).set(database=self.name).render_as_string(hide_password=False)

    def create(self) -> "FreshPostgres":
        asyncio.run(_admin(self.server_url, f'CREATE DATABASE "{self.name}"'))
        return self

    def drop(self) -> None:
        asyncio.run(_admin(self.server_url, f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))


@dataclass
class BenchStack:
    """`stayhuman up` against our nats-server and database, its mail to our SMTP sink."""

    workdir: Path
    database_url: str
    nats: EmbeddedNats
    smtp: SmtpSink
    process: subprocess.Popen[bytes] | None = None
    ports: dict[str, int] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)
    routers: int = 1

    def env(self) -> dict[str, str]:
        if not self.ports:
            self.ports = dict(zip(SERVICE_PORTS, free_ports(len(SERVICE_PORTS)), strict=True))
        if not self.keys:
            self.keys = {"STAYHUMAN_SECRET_KEY": new_key(), "STAYHUMAN_VAPID_PRIVATE_KEY": new_vapid_pem()}
        return {
            **os.environ,
            **self.keys,
            "STAYHUMAN_STATE_DIR": str(self.workdir / "state"),
            "STAYHUMAN_DATABASE_URL": self.database_url,
            "STAYHUMAN_NATS_URL": self.nats.url,
            "STAYHUMAN_INGEST_PORT": str(self.ports["ingest"]),
            "STAYHUMAN_INGEST_OPS_PORT": str(self.ports["ingest-ops"]),
            "STAYHUMAN_ROUTER_PORT": str(self.ports["router"]),
            "STAYHUMAN_NOTIFY_PORT": str(self.ports["notify"]),
            "STAYHUMAN_NOTIFY_OPS_PORT": str(self.ports["notify-ops"]),
            "STAYHUMAN_API_PORT": str(self.ports["api"]),
            "STAYHUMAN_API_OPS_PORT": str(self.ports["api-ops"]),
            "STAYHUMAN_OUTBOUND_PORT": str(self.ports["outbound"]),
            "STAYHUMAN_SMTP_HOST": "127.0.0.1",
            "STAYHUMAN_SMTP_PORT": str(self.smtp.port),
            "STAYHUMAN_SMTP_SECURITY": "none",
            "STAYHUMAN_LOG_LEVEL": "warning",
            # each breach its own email, so each has its own time from due to accepted (grouping
            # would hold a person's burst for its window on purpose)
            "STAYHUMAN_ALERT_GROUPING": "false",
            "STAYHUMAN_LOG_JSON": "true",
        }

    @property
    def log_path(self) -> Path:
        return self.workdir / "up.log"

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "stayhuman", *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=300,
        )
        if done.returncode != 0:
            raise RuntimeError(f"stayhuman {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def prepare(self, config: str) -> None:
        """Migrate the database and apply `config` (YAML)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "config.yaml").write_text(config)
        self.cli("migrate")
        self.cli("apply", "-f", str(self.workdir / "config.yaml"))

    def start(self, routers: int = 1, timeout: float = 120) -> None:
        self.routers = routers
        log = self.log_path.open("ab")
        offset = log.tell()  # an earlier start's log is above: only what follows counts
        self.process = subprocess.Popen(
            [sys.executable, "-m", "stayhuman", "up", "--routers", str(routers)],
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"stayhuman up exited:\n{self.log_path.read_text()[-5000:]}")
            if b"StayHuman is up" in self.log_path.read_bytes()[offset:]:
                return
            time.sleep(0.1)
        raise RuntimeError(f"stayhuman up not ready:\n{self.log_path.read_text()[-5000:]}")

    def restart(self, routers: int, attempts: int = 2) -> None:
        """Stop and start again with `routers` routers; on a busy machine a service may miss
        `up`'s readiness limit once, so it is tried `attempts` times."""
        for attempt in range(attempts):
            self.stop()
            try:
                self.start(routers)
                return
            except RuntimeError:
                if attempt + 1 == attempts:
                    raise

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process = None

    def url(self, service: str, path: str = "") -> str:
        return f"http://127.0.0.1:{self.ports[service]}{path}"

    def processes(self) -> dict[str, list[int]]:
        """Each service's processes (routers as router, router-1...)."""
        if self.process is None:
            return {}
        return service_processes(self.process.pid)

    @contextlib.contextmanager
    def alone(self, *services: str) -> Iterator[list[str]]:
        """Only `services` run (routers are router, router-1...; "router" keeps them all): every
        other service is stopped (SIGSTOP) until the block ends and then continued, so that the
        figure of one part is not shared with the rest of the pipeline on a machine of few cores.
        Yields the names of the services paused. Their messages wait on their streams meanwhile."""
        paused: list[str] = []
        stopped: list[int] = []
        try:
            for name, family in sorted(self.processes().items()):
                if any(name == wanted or name.startswith(f"{wanted}-") for wanted in services):
                    continue
                for pid in family:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGSTOP)
                        stopped.append(pid)
                paused.append(name)
            yield paused
        finally:
            for pid in stopped:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)

    def service_pids(self) -> dict[str, int]:
        """The process id of each service (routers as router, router-1...)."""
        import json

        found = {}
        named = [("ingest", self.ports["ingest"]), ("notify", self.ports["notify"]),
                 ("api", self.ports["api"]), ("outbound", self.ports["outbound"])]  # fmt: skip
        named += [
            ("router" if i == 0 else f"router-{i}", self.ports["router"] + 10 * i)
            for i in range(self.routers)
        ]
        for name, port in named:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
                found[name] = int(json.load(response)["pid"])
        return found


def service_processes(root: int) -> dict[str, list[int]]:
    """The processes under `root` (`stayhuman up`) by the service they run (`python -m stayhuman
    router`...), their own children (e.g. worker processes) counted with them."""
    parents: dict[int, int] = {}
    commands: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            commands[int(entry.name)] = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        parents[int(entry.name)] = int(stat.rpartition(")")[2].split()[1])
    found: dict[str, list[int]] = {}
    for pid, parent in parents.items():
        if parent != root:
            continue
        command = commands.get(pid, [])
        if "stayhuman" not in command:
            continue
        name = (
            command[command.index("stayhuman") + 1] if command.index("stayhuman") + 1 < len(command) else "?"
        )
        family = [pid] + [p for p, up in parents.items() if up == pid]
        label = name if name not in found else f"{name}-{len([k for k in found if k.startswith(name)])}"
        found[label] = family
    return found


def rss_mb(pid: int) -> float:
    """Resident memory of a process (VmRSS), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
