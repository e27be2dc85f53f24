"""The whole stack as a user runs it: `stayhuman up` in its own process group."""

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from shared.db.core import fetch_rows
from shared.db.session import create_engine, session_factory, sqlite_path
from shared.secrets import new_key, new_vapid_pem
from stayhuman.natsserver import EmbeddedNats, free_ports
from tests.helpers import sign


@dataclass
class Stack:
    workdir: Path
    env_overrides: dict[str, str] = field(default_factory=dict)
    nats: EmbeddedNats | None = None
    process: subprocess.Popen[bytes] | None = None
    ports: dict[str, int] = field(default_factory=dict)

    @property
    def state_dir(self) -> Path:
        return self.workdir / "state"

    @property
    def log_path(self) -> Path:
        return self.workdir / "up.log"

    @property
    def database_url(self) -> str:
        return self.env_overrides.get(
            "STAYHUMAN_DATABASE_URL", f"sqlite+aiosqlite:///{self.state_dir / 'stayhuman.db'}"
        )

    def env(self) -> dict[str, str]:
        if not self.ports:
            names = ("ingest", "ingest-ops", "router", "notify", "notify-ops", "api", "api-ops", "outbound")
            self.ports = dict(zip(names, free_ports(len(names)), strict=True))
        env = {
            **os.environ,
            "STAYHUMAN_STATE_DIR": str(self.state_dir),
            "STAYHUMAN_DATABASE_URL": self.database_url,
            "STAYHUMAN_INGEST_PORT": str(self.ports["ingest"]),
            "STAYHUMAN_INGEST_OPS_PORT": str(self.ports["ingest-ops"]),
            "STAYHUMAN_ROUTER_PORT": str(self.ports["router"]),
            "STAYHUMAN_NOTIFY_PORT": str(self.ports["notify"]),
            "STAYHUMAN_NOTIFY_OPS_PORT": str(self.ports["notify-ops"]),
            "STAYHUMAN_API_PORT": str(self.ports["api"]),
            "STAYHUMAN_API_OPS_PORT": str(self.ports["api-ops"]),
            "STAYHUMAN_OUTBOUND_PORT": str(self.ports["outbound"]),
            "STAYHUMAN_LOG_JSON": "true",
            **self.env_overrides,
        }
        if self.nats is not None:
            env["STAYHUMAN_NATS_URL"] = self.nats.url
        if not self.development_database:
            # As an operator does: the keys set once for every process. (A stack on the state
            # folder's own SQLite file is a development one: `up` makes its keys there.)
            for name, make in (
                ("STAYHUMAN_SECRET_KEY", new_key),
                ("STAYHUMAN_VAPID_PRIVATE_KEY", new_vapid_pem),
            ):
                if not env.get(name):
                    env[name] = self.env_overrides[name] = make()
        return env

    @property
    def development_database(self) -> bool:
        path = sqlite_path(self.database_url)
        return path is not None and path.resolve().is_relative_to(self.state_dir.resolve())

    @classmethod
    def configured(
        cls, workdir: Path, config: str, *, nats: EmbeddedNats | None = None, **env: str
    ) -> "Stack":
        """A stack whose database is migrated and holds `config` (a YAML text); not started yet."""
        stack = cls(workdir, env_overrides=env, nats=nats)
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "config.yaml").write_text(config)
        stack.cli("migrate")
        stack.cli("apply", "-f", str(workdir / "config.yaml"))
        return stack

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "stayhuman", *args],
            env=self.env(),
            capture_output=True,
            text=True,
            check=check,
            timeout=120,
        )

    def start(self, *args: str, timeout: float = 60) -> "Stack":
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "stayhuman", "up", *args],
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
            if "StayHuman is up" in self.log_path.read_text(errors="replace"):
                return self
            time.sleep(0.1)
        raise RuntimeError(f"stayhuman up not ready:\n{self.log_path.read_text()[-5000:]}")

    def url(self, service: str, path: str) -> str:
        """`service` is ingest, router, notify, api or outbound, or `ingest-ops`, `notify-ops` or
        `api-ops` for their operations listeners (readiness, metrics)."""
        return f"http://127.0.0.1:{self.ports[service]}{path}"

    def service_pid(self, service: str) -> int:
        return int(httpx.get(self.url(service, "/healthz"), timeout=5).json()["pid"])

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def query(self, statement: Any) -> list[Any]:
        """Rows of a SQLAlchemy Core query against the stack's database."""
        engine = create_engine(self.database_url)
        try:
            async with session_factory(engine)() as session:
                return list(await fetch_rows(session, statement))
        finally:
            await engine.dispose()


def smtp_env(port: int) -> dict[str, str]:
    """Settings that send the stack's alerts to a test's SMTP server."""
    return {
        "STAYHUMAN_SMTP_HOST": "127.0.0.1",
        "STAYHUMAN_SMTP_PORT": str(port),
        "STAYHUMAN_SMTP_SECURITY": "none",
    }


async def post_webhook(
    client: httpx.AsyncClient, stack: Stack, account: str, secret: str, body: bytes, **headers: str
) -> httpx.Response:
    all_headers: dict[str, Any] = {
        "Content-Type": "application/json",
        "X-Signature-256": sign(secret, body),
        **headers,
    }
    return await client.post(
        stack.url("ingest", f"/webhooks/generic/{account}"), content=body, headers=all_headers
    )
