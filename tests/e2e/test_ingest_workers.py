"""`stayhuman ingest` with several worker processes (STAYHUMAN_INGEST_WORKERS) on a real
nats-server: the workers share the public port, every accepted webhook is stored once on
JetStream, `/metrics` adds up every worker's counts, a worker killed with SIGKILL is
started again and loses nothing it answered 202, and SIGTERM stops them all."""

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from shared import subjects
from shared.events import InteractionReceived
from stayhuman.natsserver import EmbeddedNats
from tests.e2e.stack import Stack
from tests.helpers import config_yaml, eventually, generic_body, sign, stored_on

pytestmark = pytest.mark.e2e

SECRET = "workers-secret-0123456789"
WORKERS = 3


class Ingest:
    """`stayhuman ingest` alone, as compose and Kubernetes run it, with its workers."""

    def __init__(self, stack: Stack, tmp: Path) -> None:
        self.stack = stack
        self.tmp = tmp
        self.log = (stack.workdir / "ingest.log").open("ab")
        env = {**stack.env(), "STAYHUMAN_INGEST_WORKERS": str(WORKERS), "TMPDIR": str(tmp)}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "stayhuman", "ingest"],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def logs(self) -> str:
        return (self.stack.workdir / "ingest.log").read_text(errors="replace")

    def workers(self) -> set[int]:
        """The worker processes now running under the service's process."""
        found = set()
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                except OSError:
                    continue
                fields = stat.rsplit(")", 1)[1].split()
                if int(fields[1]) == self.process.pid and fields[0] != "Z":
                    found.add(int(entry.name))
        return found

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()
        return self.process.returncode


@pytest.fixture
def ingest(tmp_path: Path, nats_server: EmbeddedNats) -> Iterator[Ingest]:
    config = config_yaml(tenant="acme", account="acme-fb", secret=SECRET, people=["maria"])
    stack = Stack.configured(
        tmp_path / "stack",
        config,
        nats=nats_server,
        STAYHUMAN_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'stayhuman.db'}",  # keys as an operator sets them
        STAYHUMAN_LOG_LEVEL="warning",
    )
    (tmp_path / "tmp").mkdir()
    service = Ingest(stack, tmp_path / "tmp")
    try:
        yield service
    finally:
        service.stop()


async def _ready(ingest: Ingest) -> bool:
    assert ingest.process.poll() is None, ingest.logs()[-3000:]
    try:
        async with httpx.AsyncClient() as client:
            return (await client.get(ingest.stack.url("ingest-ops", "/readyz"))).status_code == 200
    except httpx.TransportError:
        return False


async def _send(ingest: Ingest, ids: list[str], accepted: list[str], *, connections: int = 12) -> None:
    """Post a signed webhook for each id over `connections` connections; keep the ids answered 202."""
    queue = list(ids)

    async def connection() -> None:
        async with httpx.AsyncClient(timeout=30) as client:
            while queue:
                external_id = queue.pop()
                body = generic_body(external_id, thread_id=f"t-{external_id}")
                headers = {"Content-Type": "application/json", "X-Signature-256": sign(SECRET, body)}
                try:
                    response = await client.post(
                        ingest.stack.url("ingest", "/webhooks/generic/acme-fb"), content=body, headers=headers
                    )
                except httpx.TransportError:
                    continue  # its worker was killed: not accepted, so nothing is owed
                if response.status_code == 202:
                    accepted.append(external_id)

    await asyncio.gather(*(connection() for _ in range(connections)))


async def _answering_pids(ingest: Ingest) -> set[int]:
    """The workers that answer `/healthz` over new connections."""
    pids = set()
    for _ in range(30):
        async with httpx.AsyncClient() as client:
            pids.add((await client.get(ingest.stack.url("ingest", "/healthz"))).json()["pid"])
    return pids


def _accepted_total(metrics: str) -> float:
    pattern = r'^stayhuman_ingest_interactions_total\{(?=[^}]*result="accepted")(?=[^}]*tenant="acme")[^}]*\} (\S+)$'
    return sum(float(value) for value in re.findall(pattern, metrics, re.MULTILINE))


async def _stored(ingest: Ingest) -> list[str]:
    """The external ids of the interactions on JetStream, one per message."""
    assert ingest.stack.nats is not None
    messages = await stored_on(ingest.stack.nats.url, subjects.all_interactions())
    return [InteractionReceived.model_validate_json(m.data).external_id for m in messages]


async def _archived(ingest: Ingest) -> list[str]:
    """The external ids of the webhook bodies in the archive, one per message."""
    assert ingest.stack.nats is not None
    messages = await stored_on(ingest.stack.nats.url, subjects.archive(source="generic"))
    return [json.loads(m.data)["external_id"] for m in messages]


async def test_workers_share_the_port_store_each_webhook_once_and_count_together(ingest: Ingest) -> None:
    await eventually(lambda: _ready(ingest), timeout=60, interval=0.2, what="ingest ready")
    first = ingest.workers()
    assert len(first) == WORKERS, ingest.logs()[-3000:]

    # several workers answer on the one public port
    pids: set[int] = set()

    async def several_answer() -> bool:
        pids.update(await _answering_pids(ingest))
        return len(pids) >= 2

    await eventually(several_answer, timeout=30, what="two workers answering on the public port")
    assert pids <= first

    # every webhook accepted is stored once; /metrics counts all of them, whichever worker answers
    ids = [f"w-{n}" for n in range(300)]
    accepted: list[str] = []
    await _send(ingest, ids, accepted)
    assert sorted(accepted) == sorted(ids)
    assert sorted(await _stored(ingest)) == sorted(ids)
    assert sorted(await _archived(ingest)) == sorted(ids)
    async with httpx.AsyncClient() as client:
        for _ in range(5):
            metrics = (await client.get(ingest.stack.url("ingest-ops", "/metrics"))).text
            assert _accepted_total(metrics) == len(ids)

    # a worker killed in the middle of a load: what it answered 202 is stored, once; it is
    # started again, and its counts stay in the total
    more = [f"k-{n}" for n in range(1500)]
    after_kill: list[str] = []
    load = asyncio.create_task(_send(ingest, more, after_kill))
    await eventually(lambda: asyncio.sleep(0, result=len(after_kill) >= 100), timeout=60, what="load")
    victim = sorted(first)[0]
    os.kill(victim, signal.SIGKILL)
    await load
    assert len(after_kill) >= 100
    await eventually(
        lambda: asyncio.sleep(0, result=len(ingest.workers()) == WORKERS and victim not in ingest.workers()),
        timeout=30,
        what="the killed worker started again",
    )
    await eventually(lambda: _ready(ingest), timeout=60, interval=0.2, what="ingest ready again")
    stored = await _stored(ingest)
    assert len(stored) == len(set(stored)), "an interaction stored twice"
    assert set(after_kill) <= set(stored), "a webhook answered 202 is not stored"
    archived = await _archived(ingest)
    assert len(archived) == len(set(archived)) and set(after_kill) <= set(archived)
    assert set(stored) <= set(ids) | set(more)
    async with httpx.AsyncClient() as client:
        metrics = (await client.get(ingest.stack.url("ingest-ops", "/metrics"))).text
    assert len(ids) + len(after_kill) <= _accepted_total(metrics) <= len(stored)
    assert "a worker exited; starting it again" in ingest.logs()

    # SIGTERM stops every worker and the service; the metrics folder goes with them
    workers = ingest.workers()
    assert ingest.stop() == 0, ingest.logs()[-3000:]
    assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()]
    assert not list(ingest.tmp.glob("stayhuman-ingest-metrics-*"))
