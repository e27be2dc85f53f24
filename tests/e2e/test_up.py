"""`stayhuman up` as an operator meets it."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.stack import Stack

pytestmark = pytest.mark.e2e


def test_a_second_router_is_refused_on_sqlite(stack: Stack) -> None:
    second = subprocess.run(
        [sys.executable, "-m", "stayhuman", "router"],
        env={**stack.env(), "STAYHUMAN_ROUTER_PORT": "0", "STAYHUMAN_NATS_URL": "nats://127.0.0.1:1"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode == 2
    assert "a router is already running against this SQLite database" in second.stderr
    assert "PostgreSQL" in second.stderr


def test_up_refuses_several_routers_on_sqlite(tmp_path: Path) -> None:
    result = Stack(tmp_path).cli("up", "--routers", "2", check=False)
    assert result.returncode != 0
    assert "more than one router needs PostgreSQL" in result.stderr


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
    pids = [stack.service_pid(service) for service in ("ingest", "router", "notify")]
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
