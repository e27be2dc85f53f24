"""One busy tenant must not hold up the routing of the others: each tenant's interactions
travel in a lane of their own consumer, and the router takes turns between lanes."""

import time
from pathlib import Path

import nats
import pytest
from sqlalchemy import func, select

from shared import subjects
from shared.db.core import CONVERSATIONS, fetch_rows
from shared.db.session import create_engine, session_factory
from shared.jetstream import publish_pipelined
from stayhuman.natsserver import EmbeddedNats
from tests.e2e.stack import Stack
from tests.e2e.test_router_replicas import interaction
from tests.helpers import eventually

pytestmark = pytest.mark.e2e

BACKLOG = 4000
CALM = 40

CONFIG = """
people:
  - {id: bo, name: Bo, email: bo@example.com, capacity: 100000}
  - {id: cy, name: Cy, email: cy@example.com, capacity: 100000}
tenants:
  - id: busy
    name: Busy
    teams: [{id: care, name: Care, members: [bo]}]
    accounts: [{id: busy-fb, platform: facebook, handle: Busy, team: care, webhook_secret: busy-secret-0123456789}]
  - id: calm
    name: Calm
    teams: [{id: care, name: Care, members: [cy]}]
    accounts: [{id: calm-fb, platform: facebook, handle: Calm, team: care, webhook_secret: calm-secret-0123456789}]
"""


async def counts(url: str) -> dict[str, int]:
    engine = create_engine(url)
    try:
        async with session_factory(engine)() as session:
            rows = await fetch_rows(
                session,
                select(CONVERSATIONS.c.tenant_id, func.count()).group_by(CONVERSATIONS.c.tenant_id),
            )
            return {row[0]: int(row[1]) for row in rows}
    finally:
        await engine.dispose()


async def test_a_backlog_of_one_tenant_does_not_delay_another(
    tmp_path: Path, nats_server: EmbeddedNats
) -> None:
    stack = Stack.configured(tmp_path / "stack", CONFIG, nats=nats_server, STAYHUMAN_LOG_LEVEL="warning")
    stack.start()
    try:
        nc = await nats.connect(nats_server.url)
        js = nc.jetstream()
        # the busy tenant's whole backlog is in the stream before the calm tenant writes
        backlog = [interaction("busy", "busy-fb", f"b{n}", f"b-{n}") for n in range(BACKLOG)]
        for first in range(0, BACKLOG, 500):
            await publish_pipelined(js, backlog[first : first + 500])
        calm_sent = time.monotonic()
        await publish_pipelined(js, [interaction("calm", "calm-fb", f"c{n}", f"c-{n}") for n in range(CALM)])
        stored = (
            await js.stream_info(subjects.INTERACTIONS_STREAM, subjects_filter=">")
        ).state.subjects or {}
        lanes = {subject.split(".")[3]: subject.split(".")[2] for subject in stored}
        assert lanes["busy"] != lanes["calm"], lanes  # the two tenants are in different lanes

        async def calm_done() -> dict[str, int] | None:
            found = await counts(stack.database_url)
            return found if found.get("calm", 0) == CALM else None

        when_calm_done = await eventually(
            calm_done, timeout=120, interval=0.05, what="the calm tenant routed"
        )
        waited = time.monotonic() - calm_sent
        busy_then = when_calm_done.get("busy", 0)
        print(f"\ncalm tenant routed {waited:.2f} s after writing, with {busy_then} of {BACKLOG} busy routed")
        assert busy_then < BACKLOG * 0.75, "the calm tenant waited behind most of the busy backlog"

        async def busy_done() -> bool:
            return (await counts(stack.database_url)).get("busy", 0) == BACKLOG

        await eventually(busy_done, timeout=240, what="the busy backlog routed")
        await nc.close()
    finally:
        stack.stop()
