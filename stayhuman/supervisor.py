"""`stayhuman up`: NATS, the schema and the four services as separate processes.

Each service runs as `python -m stayhuman <service>`, exactly as compose and
Kubernetes run them. A service that dies is restarted with a growing delay; Ctrl-C
or SIGTERM stops everything in order.
"""

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import Field

from shared.db.migrate import upgrade
from shared.settings import CommonSettings
from stayhuman import localnats
from stayhuman.demo import ROLES, DemoLogin, demo_password
from stayhuman.demo.feed import play_in_background
from stayhuman.demo.platform import URL_VARIABLE, DemoPlatform
from stayhuman.devmail import DevMailSink
from stayhuman.natsserver import EmbeddedNats

SERVICES = ("ingest", "router", "notify", "api", "outbound")
RESTART_DELAY_MAX = 30.0  # seconds between restarts of a service that keeps exiting
START_ATTEMPTS = 5  # starts of one service, in a row, before `up` gives up while starting


class UpSettings(CommonSettings):
    embedded_nats_port: int = Field(default=0, description="Port of the embedded NATS (0: any free).")
    smtp_host: str | None = None
    ingest_port: int = 8080
    ingest_ops_port: int = 9080
    router_port: int = 8081
    notify_port: int = 8082
    notify_ops_port: int = 9082
    api_port: int = 8083
    api_ops_port: int = 9083
    outbound_port: int = 8085
    api_public_url: str | None = None


@dataclass
class Child:
    name: str
    index: int
    port: int
    env: dict[str, str]
    ops_port: int | None = None  # where its readiness is, when apart from its public port
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: float = 0.0
    next_start: float = 0.0

    @property
    def label(self) -> str:
        return self.name if self.index == 0 else f"{self.name}-{self.index}"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "stayhuman", self.name], env=self.env, stdin=subprocess.DEVNULL
        )
        self.started_at = time.monotonic()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


DEMO_CONFIG = Path(__file__).parent / "demo" / "config.yaml"


def apply_demo(database_url: str) -> str:
    """Apply the demo configuration (idempotent); returns what changed."""
    from shared.db.session import create_engine, session_factory
    from stayhuman.config import apply_config, load_config

    async def run() -> str:
        engine = create_engine(database_url)
        try:
            document = load_config(DEMO_CONFIG)
            return str(await apply_config(session_factory(engine), document, source=str(DEMO_CONFIG)))
        finally:
            await engine.dispose()

    return asyncio.run(run())


def set_demo_passwords(database_url: str) -> list[DemoLogin]:
    """Give each demo person of a role their fixed demo password, every time (so the printed
    one works), and say who they are. Only `up --demo` sets passwords."""
    from stayhuman.config import load_config
    from stayhuman.invite import set_password

    emails = {person.id: str(person.email) for person in load_config(DEMO_CONFIG).people}
    logins = [DemoLogin(role, person, emails[person], demo_password(person)) for role, person in ROLES]

    async def run() -> None:
        for login in logins:
            await set_password(database_url, login.person_id, login.password)

    asyncio.run(run())
    return logins


def _reachable(host: str) -> str:
    """Where a browser on this machine reaches a listener bound to `host`."""
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host


@dataclass
class Supervisor:
    settings: UpSettings
    routers: int = 1
    demo: bool = False
    say: Callable[[str], None] = field(default=lambda text: print(text, flush=True))
    nats: EmbeddedNats | None = None
    mail_sink: DevMailSink | None = None
    demo_platform: DemoPlatform | None = None
    children: list[Child] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        state = self.settings.state_dir.resolve()
        # Every tenant's messages are in here (the SQLite file, the NATS store, the mailbox):
        # whatever `up` and its children create is readable by its owner only.
        os.umask(0o077)
        state.mkdir(parents=True, exist_ok=True, mode=0o700)
        state.chmod(0o700)
        for database in state.glob("stayhuman.db*"):  # made by an earlier version, or by hand
            database.chmod(0o600)
        nats_url = self.settings.nats_url
        users: dict[str, str] = {}
        if not nats_url:
            users = localnats.passwords(state)
            self.nats = EmbeddedNats(
                state / "nats",
                port=self.settings.embedded_nats_port,
                config_file=localnats.server_config(state),
                env=localnats.server_environment(users),
            ).start()
            nats_url = self.nats.url
            localnats.announce(state, nats_url, users)
        database_url = self.settings.sqlalchemy_url
        upgrade(database_url)
        # The keys not set: made once in the state folder, the same for every child (and `apply`).
        keys = self.settings.development_keys()
        logins: list[DemoLogin] = []
        host = self.settings.host
        ingest_url = f"http://{_reachable(host)}:{self.settings.ingest_port}"
        if self.demo:
            # The demo account's replies go to the demo platform: its address is in the demo
            # configuration as ${STAYHUMAN_DEMO_PLATFORM_URL}, so it runs before that is applied.
            self.demo_platform = DemoPlatform(ingest_url, state).start()
            os.environ[URL_VARIABLE] = self.demo_platform.url
            self.say(f"demo configuration: {apply_demo(database_url)}")
            logins = set_demo_passwords(database_url)
        env = {
            **os.environ,
            **keys,
            "STAYHUMAN_NATS_URL": nats_url,
            "STAYHUMAN_DATABASE_URL": database_url,
            "STAYHUMAN_STATE_DIR": str(state),
        }
        if not self.settings.smtp_host:
            self.mail_sink = DevMailSink(state / "mailbox").start()
            env.update(
                STAYHUMAN_SMTP_HOST="127.0.0.1",
                STAYHUMAN_SMTP_PORT=str(self.mail_sink.port),
                STAYHUMAN_SMTP_SECURITY="none",
                STAYHUMAN_DEV_MAILBOX_DIR=str(self.mail_sink.folder),
            )
        ports = {
            "ingest": self.settings.ingest_port,
            "router": self.settings.router_port,
            "notify": self.settings.notify_port,
            "api": self.settings.api_port,
            "outbound": self.settings.outbound_port,
        }
        api_url = (self.settings.api_public_url or f"http://{_reachable(host)}:{ports['api']}").rstrip("/")
        env["STAYHUMAN_API_PUBLIC_URL"] = api_url  # set-password links and the cookies' Secure flag
        for name in SERVICES:
            for index in range(self.routers if name == "router" else 1):
                port = ports[name] + index * 10
                child_env = {**env, f"STAYHUMAN_{name.upper()}_PORT": str(port)}
                if users:  # the embedded server: each service as its own user, as in a cluster
                    child_env.update(STAYHUMAN_NATS_USER=name, STAYHUMAN_NATS_PASSWORD=users[name])
                ops = getattr(self.settings, f"{name}_ops_port", None)
                if ops is not None:
                    child_env[f"STAYHUMAN_{name.upper()}_OPS_PORT"] = str(ops + index * 10)
                    ops += index * 10
                self.children.append(Child(name, index, port, child_env, ops))
        for child in self.children:
            child.start()
        self._wait_ready(timeout=60)
        self.say("StayHuman is up")
        self.say(f"  NATS      {nats_url}" + (" (embedded)" if self.nats else ""))
        self.say(f"  database  {_redact(database_url)}")
        for child in self.children:
            ops = f"  (operations: http://{host}:{child.ops_port})" if child.ops_port else ""
            self.say(f"  {child.label:<9} http://{host}:{child.port}{ops}")
        self.say(f"  inbox     {api_url}/inbox")
        self.say(f"  webhooks  http://{host}:{ports['ingest']}/webhooks/generic/<account_id>")
        if self.mail_sink is not None:
            self.say(
                f"  mailbox   http://{host}:{ports['notify']}/mailbox  (no SMTP server set: mail stays here)"
            )
        if self.demo_platform is not None:
            self.say(f"  platform  {self.demo_platform.url}/  (demo: the replies it received)")
        if logins:
            self.say(f"  demo logins (sign in at {api_url}/login):")
            width = max(len(login.email) for login in logins)
            for login in logins:
                self.say(f"    {login.role:<14} {login.email:<{width}}  {login.password}")
        self.say("Ctrl-C stops everything.")
        if self.demo_platform is not None:
            play_in_background(ingest_url, database_url, self.say, wrote=self.demo_platform.wrote)

    def _wait_ready(self, timeout: float) -> None:
        """Wait until every service answers /readyz. One that exits meanwhile is restarted as it
        would be later; `up` gives up on a service that exited START_ATTEMPTS times in a row, or
        that runs but is not ready `timeout` seconds after its last start."""
        pending = list(self.children)
        while pending:
            if self._stop.is_set():
                raise RuntimeError("stopped before every service was ready")
            now = time.monotonic()
            for child in self.children:
                if child.alive():
                    continue
                if child not in pending:
                    pending.append(child)  # it was ready, and must be again before `up` says so
                self._restart(child, now, starting=True)
            for child in [c for c in pending if c.alive()]:
                if now - child.started_at > timeout:
                    raise RuntimeError(
                        f"{child.label} not ready {timeout:.0f} s after it started; see its log above"
                    )
                try:
                    url = f"http://{self.settings.host}:{child.ops_port or child.port}/readyz"
                    with urllib.request.urlopen(url, timeout=1) as response:
                        if response.status == 200:
                            pending.remove(child)
                except OSError:
                    pass
            time.sleep(0.1)

    def watch(self) -> None:
        """Restart services that die, until asked to stop."""
        while not self._stop.wait(0.2):
            now = time.monotonic()
            for child in self.children:
                if child.alive():
                    if now - child.started_at > 60:
                        child.restarts = 0
                    continue
                self._restart(child, now, starting=False)

    def _restart(self, child: Child, now: float, *, starting: bool) -> None:
        """A service that exited starts again after a growing delay: 0.5 s, 1 s, 2 s... up to
        RESTART_DELAY_MAX. While `up` starts, the START_ATTEMPTS-th exit in a row is fatal."""
        if child.next_start == 0.0:
            code = child.process.returncode if child.process else None
            if starting and child.restarts + 1 >= START_ATTEMPTS:
                raise RuntimeError(
                    f"{child.label} exited {START_ATTEMPTS} times in a row during start-up "
                    f"(last exit code {code}); see its log above"
                )
            delay = min(RESTART_DELAY_MAX, 0.5 * 2**child.restarts)
            during = " during start-up" if starting else ""
            self.say(f"stayhuman up: {child.label} exited ({code}){during}; restarting in {delay:.1f}s")
            child.next_start = now + delay
        elif now >= child.next_start:
            child.restarts += 1
            child.next_start = 0.0
            child.start()

    def request_stop(self, *_args: object) -> None:
        self._stop.set()

    def stop(self) -> None:
        for child in self.children:
            if child.alive() and child.process is not None:
                child.process.send_signal(signal.SIGTERM)
        for child in self.children:
            if child.process is None:
                continue
            try:
                child.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()
        if self.mail_sink is not None:
            self.mail_sink.stop()
        if self.demo_platform is not None:
            self.demo_platform.stop()
        if self.nats is not None:
            localnats.withdraw(self.settings.state_dir.resolve())
            self.nats.stop()


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def run_up(settings: UpSettings, *, routers: int, demo: bool = False) -> int:
    supervisor = Supervisor(settings, routers=routers, demo=demo)
    signal.signal(signal.SIGTERM, supervisor.request_stop)
    signal.signal(signal.SIGINT, supervisor.request_stop)
    try:
        supervisor.start()
        supervisor.watch()
    except RuntimeError as error:
        print(f"stayhuman up: error: {error}", file=sys.stderr)
        return 1
    finally:
        supervisor.stop()
        print("stayhuman up: stopped", file=sys.stderr)
    return 0
