"""Two ingest processes on one installation, as compose and Kubernetes run them: each polled
account is polled by one of them, and when that one is killed the other goes on, with no gap
and nothing stored twice. NATS runs with the documented permissions file."""

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import nats
import pytest

from services.ingest.leases import BUCKET
from shared import subjects
from shared.secrets import new_key
from stayhuman.natsserver import EmbeddedNats, free_port, free_ports
from tests.fake_platforms import FakeMastodon
from tests.helpers import config_yaml, eventually

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).parents[2]
PASSWORD = "ingest-pw-123"
LEASE = 15.0  # ingest's lease time


@pytest.fixture
def secured_nats(tmp_path: Path) -> Iterator[EmbeddedNats]:
    folder = tmp_path / "nats"
    folder.mkdir()
    permissions = ROOT / "deploy" / "k8s" / "base" / "nats" / "permissions.conf"
    shutil.copy(permissions, folder / "permissions.conf")
    (folder / "nats.conf").write_text("include permissions.conf\n")
    for variable in set(re.findall(r"\$(NATS_\w+_PASSWORD)", permissions.read_text())):
        os.environ.setdefault(variable, f"{variable.lower()}-123")
    os.environ["NATS_INGEST_PASSWORD"] = PASSWORD
    server = EmbeddedNats(folder / "store", extra_args=["-c", str(folder / "nats.conf")])
    yield server.start()
    server.stop()


async def test_one_of_two_ingest_replicas_polls_and_the_other_goes_on_when_it_is_killed(
    tmp_path: Path, secured_nats: EmbeddedNats
) -> None:
    masto = FakeMastodon().start()
    env = {
        **os.environ,
        "STAYHUMAN_NATS_URL": secured_nats.url,
        "STAYHUMAN_NATS_USER": "ingest",
        "STAYHUMAN_NATS_PASSWORD": PASSWORD,
        "STAYHUMAN_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'stayhuman.db'}",
        "STAYHUMAN_SECRET_KEY": new_key(),
        "STAYHUMAN_POLL_INTERVAL": "1s",
        "STAYHUMAN_LOG_JSON": "true",
        # one process per replica, so that the lease holder is the replica's own process (each
        # worker of a replica holds leases the same way)
        "STAYHUMAN_INGEST_WORKERS": "1",
    }
    text = config_yaml(tenant="bluebird", account="bluebird-fb", secret="s" * 24, people=["maria"])
    text += (
        f"      - id: masto\n        platform: mastodon\n        handle: Bluebird\n        team: care\n"
        f"        external_id: '{masto.own_id}'\n        api_base_url: {masto.url}\n"
        f"        access_token: {masto.token}\n"
    )
    (tmp_path / "config.yaml").write_text(text)
    for command in (["migrate"], ["apply", "-f", str(tmp_path / "config.yaml")]):
        subprocess.run(
            [sys.executable, "-m", "stayhuman", *command], env=env, check=True, capture_output=True
        )
    ops = free_ports(2)
    logs = [tmp_path / "ingest-0.log", tmp_path / "ingest-1.log"]
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "stayhuman", "ingest"],
            env={**env, "STAYHUMAN_INGEST_PORT": str(free_port()), "STAYHUMAN_INGEST_OPS_PORT": str(port)},
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        for port, log in zip(ops, logs, strict=True)
    ]
    nc = await nats.connect(secured_nats.url, user="ingest", password=PASSWORD)
    feeding: asyncio.Task[None] | None = None
    try:
        async with httpx.AsyncClient() as client:

            async def ready() -> bool:
                try:
                    answers = [await client.get(f"http://127.0.0.1:{port}/readyz") for port in ops]
                except httpx.HTTPError:
                    return False
                return all(answer.status_code == 200 for answer in answers)

            await eventually(ready, timeout=60, interval=0.2, what="both ingest replicas")
        js = nc.jetstream()

        async def holder() -> int:
            try:
                entry = await (await js.key_value(BUCKET)).get("masto")
            except Exception:
                return 0
            return int((entry.value or b"").decode().split(":")[1])

        pid = await eventually(holder, timeout=30, what="a replica taking the account's lease")
        index = [process.pid for process in processes].index(pid)
        survivor = processes[1 - index]

        async def stored() -> int:
            return (await js.stream_info(subjects.INTERACTIONS_STREAM)).state.messages

        async def feed() -> None:
            for number in range(80):
                masto.mention(number)
                await asyncio.sleep(0.25)

        feeding = asyncio.create_task(feed())
        await eventually(lambda: _at_least(stored, 5), timeout=30, what="the first mentions")
        assert _polling(logs[index]) and not _polling(logs[1 - index])  # only the holder polls
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()

        async def taken_over() -> bool:
            return await holder() == survivor.pid

        await eventually(taken_over, timeout=LEASE * 2, interval=0.2, what="the other replica taking over")
        assert time.monotonic() - killed < LEASE + LEASE / 3 + 2
        await feeding
        await eventually(lambda: _at_least(stored, 80), timeout=30, what="every mention")
        assert await stored() == 80  # no gap, nothing stored twice
        messages = await _statuses(js)
        assert sorted(messages) == sorted(str(5_000_000 + n) for n in range(80))
    finally:
        if feeding is not None:
            feeding.cancel()
        await nc.close()
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            process.wait(timeout=30)
        masto.stop()


async def _at_least(probe: object, count: int) -> bool:
    return await probe() >= count  # type: ignore[operator]


def _polling(log: Path) -> bool:
    for line in log.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("msg") == "polling the account" and record.get("account_id") == "masto":
            return True
    return False


async def _statuses(js: nats.js.JetStreamContext) -> list[str]:
    sub = await js.pull_subscribe(subjects.all_interactions(), durable=None)
    found: list[str] = []
    while len(found) < 80:
        for message in await sub.fetch(80, timeout=5):
            found.append(json.loads(message.data)["external_id"])
    await sub.unsubscribe()
    return found
