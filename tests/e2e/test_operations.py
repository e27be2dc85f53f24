"""The README's operations commands, run where this machine can."""

import asyncio
import os
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import make_url
from sqlmodel import select

from shared.db.models import ConversationRow
from shared.db.session import create_engine, session_factory
from stayhuman.natsserver import EmbeddedNats
from tests.e2e.stack import Stack, post_webhook
from tests.helpers import config_yaml, eventually, generic_body
from tests.smtp import SmtpServer

pytestmark = pytest.mark.e2e
SECRET = "operations-secret-0123456789"


def readme_block(command: str) -> str:
    """The README's shell snippet that runs `command`."""
    blocks = re.findall(r"```sh\n(.*?)```", (Path(__file__).parents[2] / "README.md").read_text(), re.DOTALL)
    return next(block for block in blocks if block.lstrip().startswith(command))


def libpq(url: str) -> str:
    """The plain URL that pg_dump and psql take."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.mark.postgres
async def test_postgres_backup_and_restore_as_documented(tmp_path: Path, postgres_url: str) -> None:
    stack = Stack(tmp_path, env_overrides={"STAYHUMAN_DATABASE_URL": postgres_url})
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "acme.yaml").write_text(
        config_yaml(tenant="acme", account="acme-fb", secret=SECRET, people=["maria"])
    )
    stack.cli("migrate")
    stack.cli("apply", "-f", str(tmp_path / "acme.yaml"))
    backup, restore = readme_block("pg_dump"), readme_block("pg_restore")
    env = {**os.environ, "DATABASE_URL": libpq(postgres_url)}
    subprocess.run(["bash", "-euo", "pipefail", "-c", backup], cwd=tmp_path, env=env, check=True)
    # a disaster: the tables are gone
    subprocess.run(["psql", "-q", libpq(postgres_url), "-c", "DROP TABLE account CASCADE"], check=True)
    subprocess.run(["bash", "-euo", "pipefail", "-c", restore], cwd=tmp_path, env=env, check=True)
    listing = stack.cli("apply", "-f", str(tmp_path / "acme.yaml"))
    assert "created nothing; updated nothing" in listing.stdout  # everything came back


async def test_a_lost_nats_store_is_rebuilt_from_the_database(tmp_path: Path) -> None:
    """Disaster recovery: NATS comes back empty; notify re-arms every open deadline from the database."""
    smtp = SmtpServer().start()
    nats = EmbeddedNats(tmp_path / "nats").start()
    stack = Stack.configured(
        tmp_path / "stack",
        config_yaml(tenant="acme", account="acme-fb", secret=SECRET, people=["maria"], first_response="20s"),
        nats=nats,
        STAYHUMAN_SMTP_HOST="127.0.0.1",
        STAYHUMAN_SMTP_PORT=str(smtp.port),
        STAYHUMAN_SMTP_SECURITY="none",
    )
    try:
        stack.start()
        async with httpx.AsyncClient() as client:
            response = await post_webhook(
                client, stack, "acme-fb", SECRET, generic_body("dr-1", thread_id="dr")
            )
        assert response.status_code == 202
        engine = create_engine(stack.database_url)

        async def armed() -> ConversationRow | None:
            async with session_factory(engine)() as session:
                return (
                    await session.exec(select(ConversationRow).where(ConversationRow.thread_id == "dr"))
                ).first()

        conversation = await eventually(armed, what="the conversation")
        await engine.dispose()
        await asyncio.sleep(1)  # notify has stored and armed the deadline
        stack.stop()
        nats.stop()
        shutil.rmtree(tmp_path / "nats")  # the whole JetStream store is lost
        nats.start()
        stack.start()
        assert conversation.due_at is not None

        async def mailed() -> bool:
            return any(conversation.id in m.body for m in smtp.messages())

        await eventually(mailed, timeout=40, what="the email of the rebuilt timer")
        received = next(m for m in smtp.messages() if conversation.id in m.body)
        assert received.at >= conversation.due_at.timestamp()
        assert "timers reconciled" in stack.logs()
    finally:
        stack.stop()
        nats.stop()
        smtp.stop()
