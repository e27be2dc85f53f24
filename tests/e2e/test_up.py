"""`stayhuman up` as an operator meets it."""

import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from sqlmodel import select

from shared.db.models import LoginRow
from stayhuman.demo import ROLES, demo_password
from tests.e2e.stack import Stack
from tests.helpers import installation_keys

pytestmark = pytest.mark.e2e


def test_bad_settings_stop_with_the_variable_named(tmp_path: Path) -> None:
    stack = Stack(
        tmp_path,
        env_overrides={"STAYHUMAN_ROUTER_MAX_DELIVER": "1", "STAYHUMAN_NATS_URL": "nats://127.0.0.1:1"},
    )
    result = stack.cli("router", check=False)
    assert result.returncode == 2
    assert "STAYHUMAN_ROUTER_MAX_DELIVER" in result.stderr


def test_sigterm_stops_every_process(tmp_path: Path) -> None:
    stack = Stack(tmp_path / "stack").start()
    pids = [stack.service_pid(service) for service in ("ingest", "router", "notify", "api", "outbound")]
    stack.stop()
    assert stack.process is not None and stack.process.returncode == 0
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert "stayhuman up: stopped" in stack.logs()
    # the embedded nats-server, started with the state folder in its arguments, is gone too
    leftovers = [
        proc
        for proc in Path("/proc").iterdir()
        if proc.name.isdigit() and str(stack.state_dir) in _cmdline(proc)
    ]
    assert leftovers == []


def _cmdline(proc: Path) -> str:
    try:
        return (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _hold_port(port: int) -> socket.socket:
    """A listener on the port a service wants: its start fails as with any port already taken."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", port))
    holder.listen()
    return holder


def test_a_service_that_fails_its_first_start_is_restarted(tmp_path: Path) -> None:
    stack = Stack(tmp_path / "stack")
    stack.env()  # chooses the ports
    holder = _hold_port(stack.ports["router"])

    def free_after_first_exit() -> None:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and "router exited" not in _read(stack.log_path):
            time.sleep(0.05)
        holder.close()

    releaser = threading.Thread(target=free_after_first_exit, daemon=True)
    releaser.start()
    try:
        stack.start(timeout=120)
        assert re.search(r"router exited \(-?\d+\) during start-up; restarting in 0\.5s", stack.logs())
        assert httpx.get(stack.url("router", "/readyz"), timeout=5).status_code == 200
    finally:
        holder.close()
        stack.stop()
    assert stack.process is not None and stack.process.returncode == 0


def test_up_gives_up_on_a_service_that_keeps_exiting_while_starting(tmp_path: Path) -> None:
    stack = Stack(tmp_path / "stack")
    env = stack.env()
    holder = _hold_port(stack.ports["router"])
    try:
        (tmp_path / "stack").mkdir(parents=True)
        result = subprocess.run(
            [sys.executable, "-m", "stayhuman", "up"], env=env, capture_output=True, text=True, timeout=180
        )
    finally:
        holder.close()
    assert result.returncode == 1
    assert len(re.findall(r"router exited \(-?\d+\) during start-up; restarting in", result.stdout)) == 4
    assert "restarting in 4.0s" in result.stdout  # 0.5, 1, 2, 4: the same growing delay as later
    assert re.search(
        r"stayhuman up: error: router exited 5 times in a row during start-up \(last exit code -?\d+\); "
        "see its log above",
        result.stderr,
    )
    assert "stayhuman up: stopped" in result.stderr


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


async def test_the_embedded_nats_lets_in_only_its_users_and_commands_find_it(stack: Stack) -> None:
    """`up`'s own NATS has the cluster's users and permissions; the command line finds it in the
    state folder; the state folder and the database are readable by their owner only."""
    import json
    import stat

    import nats
    from nats.errors import Error as NatsError

    running = json.loads((stack.state_dir / "nats" / "running.json").read_text())
    with pytest.raises((NatsError, OSError)):
        await nats.connect(running["url"], max_reconnect_attempts=0, allow_reconnect=False, connect_timeout=3)
    users = json.loads((stack.state_dir / "nats" / "users.json").read_text())
    ingest = await nats.connect(running["url"], user="ingest", password=users["ingest"])
    errors: list[Exception] = []
    try:
        js = ingest.jetstream()
        with pytest.raises(NatsError):  # ingest may not write a conversation's events
            await js.publish("sh.conv.acme.x.opened", b"{}", timeout=2)
    finally:
        await ingest.close()
    assert errors == []
    env = {k: v for k, v in stack.env().items() if k != "STAYHUMAN_NATS_URL"}
    listed = subprocess.run(
        [sys.executable, "-m", "stayhuman", "dead-letters"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    for path in (stack.state_dir, stack.state_dir / "nats"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, path
    for path in (stack.state_dir / "stayhuman.db", stack.state_dir / "nats" / "users.json"):
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path


def test_a_taken_operations_port_is_named(stack: Stack) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "stayhuman", "ingest"],
            env={
                **stack.env(),
                **installation_keys(),
                "STAYHUMAN_NATS_URL": "nats://127.0.0.1:1",  # it stops on the port before it connects
                "STAYHUMAN_INGEST_PORT": "0",
                "STAYHUMAN_INGEST_OPS_PORT": str(taken.getsockname()[1]),
            },
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        taken.close()
    assert result.returncode == 2
    assert "cannot listen on 127.0.0.1:" in result.stderr and "(STAYHUMAN_INGEST_OPS_PORT)" in result.stderr


# What each demo person may do, as the API says after they sign in: the lead of care is an agent
# of it too; the admins and the viewer are in no team, so the demo routes nothing to them.
DEMO_ROLES = {
    "ada": {"agency_admin": []},
    "theo": {"tenant_admin": ["kettle"]},
    "rosa": {"team_lead": ["kettle"], "agent": ["kettle"]},
    "kai": {"agent": ["kettle"]},
    "cleo": {"client_viewer": ["kettle"]},
}


def test_up_demo_prints_a_login_for_each_role_and_each_signs_in_with_it(tmp_path: Path) -> None:
    stack = Stack(tmp_path / "demo").start("--demo")
    try:
        logs = stack.logs()
        api = f"http://127.0.0.1:{stack.ports['api']}"
        assert f"  api       {api}  (operations: http://127.0.0.1:{stack.ports['api-ops']})\n" in logs
        assert f"  inbox     {api}/inbox\n" in logs
        assert f"  demo logins (sign in at {api}/login):\n" in logs
        printed = re.findall(r"^    ([a-z]+(?: [a-z]+)?) +(\S+@\S+) +(\S+)$", logs, re.MULTILINE)
        assert [(role, password) for role, _email, password in printed] == [
            (role, demo_password(person)) for role, person in ROLES
        ]
        for (_role, person), (_, email, password) in zip(ROLES, printed, strict=True):
            with httpx.Client(base_url=api, timeout=10) as client:
                signed_in = client.post("/api/session", json={"email": email, "password": password})
                assert signed_in.status_code == 200, signed_in.text
                me = client.get("/api/me").json()
                assert (me["person"]["id"], me["person"]["email"]) == (person, email)
                assert me["roles"] == DEMO_ROLES[person]
                wrong = client.post("/api/session", json={"email": email, "password": password + "x"})
                assert wrong.status_code == 401
    finally:
        stack.stop()


async def test_up_without_the_demo_sets_no_password(stack: Stack) -> None:
    assert await stack.query(select(LoginRow.person_id)) == []
