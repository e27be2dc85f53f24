"""`stayhuman accounts` and `stayhuman conversations` as an operator reads them, on each database."""

import asyncio
import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import insert

from shared.db.core import CONVERSATIONS
from shared.db.models import InteractionRow
from shared.db.session import create_engine, session_factory, transaction
from shared.secrets import SecretBox, new_key
from stayhuman.cli import build_parser, main
from stayhuman.config import apply_config, parse_config
from tests.helpers import config_yaml

RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?[+-]\d\d:\d\d$")
NOW = datetime.now(UTC).replace(microsecond=0)
CONFIG = config_yaml(
    tenant="acme",
    account="acme-busy",
    secret="s" * 20,
    people=["maria", "li"],
    platform_accounts=(("acme-new", "facebook", "100"), ("acme-quiet", "facebook", "200")),
)


def interaction(account: str, received_at: datetime) -> InteractionRow:
    return InteractionRow(
        id=uuid.uuid4().hex,
        tenant_id="acme",
        account_id=account,
        external_id=uuid.uuid4().hex,
        kind="comment",
        direction="inbound",
        thread_id="t-1",
        author_id="a-1",
        text="hello",
        created_at=received_at,
        received_at=received_at,
    )


def conversation(opened_at: datetime, due_at: datetime | None) -> dict[str, object]:
    return {
        "id": uuid.uuid4().hex,
        "tenant_id": "acme",
        "account_id": "acme-busy",
        "platform": "facebook",
        "thread_id": f"thread-{uuid.uuid4().hex[:6]}",
        "state": "open",
        "skills": "[]",
        "author_id": "author-1",
        "author_name": "Dana Reyes",
        "last_inbound_text": "Is the oat latte back?",
        "opened_at": opened_at,
        "last_inbound_at": opened_at,
        "due_at": due_at,
        "updated_at": opened_at,
    }


@pytest.fixture
async def cli(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):  # type: ignore[no-untyped-def]
    """Tenant acme: acme-busy heard today, acme-quiet heard only last week, acme-new never; three
    conversations, the newest due tomorrow."""
    monkeypatch.setenv("STAYHUMAN_DATABASE_URL", database_url)
    monkeypatch.setenv("STAYHUMAN_STATE_DIR", str(tmp_path / "state"))
    engine = create_engine(database_url)
    sessions = session_factory(engine)
    await apply_config(
        sessions, parse_config(CONFIG, source="a.yaml"), source="a.yaml", box=SecretBox(new_key())
    )
    async with transaction(sessions) as session:
        session.add_all(interaction("acme-busy", NOW - timedelta(minutes=m)) for m in (3, 70))
        session.add_all(interaction("acme-quiet", NOW - timedelta(days=3, minutes=m)) for m in range(200))
        connection = await session.connection()
        for hours, due in ((3, None), (2, NOW - timedelta(hours=1)), (1, NOW + timedelta(days=1))):
            await connection.execute(
                insert(CONVERSATIONS).values(**conversation(NOW - timedelta(hours=hours), due))
            )
    await engine.dispose()

    async def run(*argv: str) -> str:
        capsys.readouterr()
        code = await asyncio.to_thread(main, list(argv))
        out, err = capsys.readouterr()
        assert (code, err) == (0, ""), err
        return out

    return run


async def test_webhook_accounts_show_their_last_event_and_a_state(cli) -> None:  # type: ignore[no-untyped-def]
    rows = {row["id"]: row for row in json.loads(await cli("accounts", "--json"))}
    busy, quiet, new = rows["acme-busy"], rows["acme-quiet"], rows["acme-new"]
    assert (busy["mode"], busy["state"]) == ("webhook", "ok")
    assert busy["last_event_at"] == (NOW - timedelta(minutes=3)).isoformat()
    assert RFC3339.match(busy["last_event_at"])
    assert (quiet["state"], quiet["last_event_at"]) == ("silent", (NOW - timedelta(days=3)).isoformat())
    assert (new["state"], new["last_event_at"]) == ("waiting", None)
    table = await cli("accounts")
    assert "LAST EVENT (UTC)" in table
    busy_line = next(line for line in table.splitlines() if line.startswith("acme-busy"))
    assert (NOW - timedelta(minutes=3)).strftime("%Y-%m-%d %H:%M:%S") in busy_line and " ok " in busy_line


async def test_conversations_show_dates_rfc3339_and_their_limit(cli) -> None:  # type: ignore[no-untyped-def]
    table = await cli("conversations")
    header, newest, *_ = table.splitlines()
    assert "OPENED (UTC)" in header and "DUE (UTC)" in header
    tomorrow = NOW + timedelta(days=1)
    assert f"{tomorrow:%Y-%m-%d %H:%M:%S}" in newest
    rows = json.loads(await cli("conversations", "--json"))
    assert len(rows) == 3 and rows[0]["due_at"] == tomorrow.isoformat()
    for row in rows:
        assert RFC3339.match(row["opened_at"])
        assert row["due_at"] is None or RFC3339.match(row["due_at"])
        assert set(row) == {
            "id", "tenant", "account", "platform", "thread", "state", "topic", "priority", "owner",
            "owner_name", "author", "opened_at", "warn_at", "due_at", "why", "text",
        }  # fmt: skip
    limited = (await cli("conversations", "--limit", "2")).splitlines()
    assert len(limited) == 4 and limited[-1] == "(the newest 2; --limit N shows more)"
    assert "(the newest" not in await cli("conversations", "--limit", "3")


def test_the_default_limit_is_told() -> None:
    help_text = build_parser()._subparsers._group_actions[0].choices["conversations"].format_help()  # type: ignore[union-attr]
    assert "--limit N" in help_text and "(default: 50)" in help_text
