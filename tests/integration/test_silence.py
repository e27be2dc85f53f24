"""An account that falls silent raises one operator alert (real NATS, each database)."""

from datetime import UTC, datetime, timedelta

import pytest
from nats.aio.client import Client
from sqlalchemy import insert

from services.ingest.publisher import InteractionPublisher
from services.ingest.silence import SilenceWatch, is_silent
from shared import subjects
from shared.db.core import INTERACTIONS
from shared.db.session import create_engine, session_factory, transaction
from shared.events import ConnectorProblem
from shared.jetstream import StreamSettings, ensure_streams, stream_configs
from stayhuman.config import apply_config, parse_config
from tests.helpers import config_yaml


@pytest.mark.parametrize(
    ("last_day", "previous_week", "silent"),
    [(2, 7 * 200, True), (50, 7 * 200, False), (0, 7 * 10, False), (0, 0, False)],
)
def test_silence_means_far_below_a_usual_rate_worth_watching(
    last_day: int, previous_week: int, silent: bool
) -> None:
    assert is_silent(last_day=last_day, previous_week=previous_week) is silent


async def test_a_silent_account_is_reported_once(nc: Client, database_url: str) -> None:
    js = nc.jetstream()
    await ensure_streams(js, stream_configs(StreamSettings()))
    engine = create_engine(database_url)
    sessions = session_factory(engine)
    text = config_yaml(tenant="acme", account="acme-fb", secret="s" * 20, people=["maria"])
    await apply_config(sessions, parse_config(text, source="t.yaml"), source="t.yaml")
    now = datetime(2026, 11, 26, 12, tzinfo=UTC)
    rows = []
    for hour in range(24, 24 * 8):  # 30 an hour for the week before the last day, then silence
        for n in range(30):
            at = now - timedelta(hours=hour, minutes=n + 1)
            rows.append({"id": f"{hour:04d}{n:04d}".ljust(32, "0"), "tenant_id": "acme", "account_id": "acme-fb",
                         "external_id": f"m{hour}-{n}", "edit_version": 0, "kind": "comment", "direction": "inbound",
                         "thread_id": "t", "author_id": "u", "author_name": "", "text": "hi", "created_at": at,
                         "received_at": at, "correlation_id": ""})  # fmt: skip
    async with transaction(sessions) as session:
        connection = await session.connection()
        await connection.execute(insert(INTERACTIONS), rows)
    watch = SilenceWatch(sessions, InteractionPublisher(js, timeout=5))
    assert await watch.check(now) == ["acme-fb"]
    assert await watch.check(now) == ["acme-fb"]  # still silent: no second alert
    sub = await js.pull_subscribe(subjects.all_connector_problems(), durable="check")
    messages = await sub.fetch(10, timeout=2)
    await sub.unsubscribe()
    await engine.dispose()
    (problem,) = [ConnectorProblem.model_validate_json(m.data) for m in messages]
    assert problem.problem == "silent" and problem.account_id == "acme-fb"
    assert "0 interactions in the last day" in problem.detail
