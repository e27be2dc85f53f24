"""An alert that fails after its last retry is kept on the dead letter with its error;
`stayhuman dead-letters` shows it, and replaying it, once the SMTP server is back, delivers it."""

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from shared.db.core import DELIVERIES
from stayhuman.natsserver import EmbeddedNats
from tests.e2e.stack import Stack, post_webhook, smtp_env
from tests.helpers import config_yaml, eventually, generic_body, unique
from tests.smtp import SmtpServer

pytestmark = pytest.mark.e2e

SECRET = "deadletter-secret-0123456789"


async def deliveries(stack: Stack) -> list[Any]:
    return await stack.query(select(DELIVERIES))


async def test_an_undeliverable_alert_is_kept_and_replayed(tmp_path: Path, nats_server: EmbeddedNats) -> None:
    smtp = SmtpServer()  # not started: the mail server is down
    config = config_yaml(
        tenant="acme", account="acme-fb", secret=SECRET, people=["maria"], first_response="2s"
    )
    stack = Stack.configured(
        tmp_path / "stack",
        config,
        nats=nats_server,
        **smtp_env(smtp.port),
        STAYHUMAN_SMTP_TIMEOUT="2s",
        STAYHUMAN_ALERT_MAX_ATTEMPTS="2",
        STAYHUMAN_ALERT_RETRY_INITIAL="1s",
        STAYHUMAN_ALERT_RETRY_MAX="2s",
    ).start()
    try:
        async with httpx.AsyncClient() as client:
            body = generic_body(unique("m"), thread_id=unique("t"), text="Anyone there?")
            assert (await post_webhook(client, stack, "acme-fb", SECRET, body)).status_code == 202

        async def failed() -> list[Any]:
            return [d for d in await deliveries(stack) if d.status == "failed"]

        rows = await eventually(failed, timeout=40, what="the delivery failing after its last attempt")
        assert rows[0].attempts == 2 and rows[0].channel == "email"

        listed = stack.cli("dead-letters", "--json")
        entries = json.loads(listed.stdout)
        assert len(entries) == 1, listed.stdout
        assert entries[0]["subject"].endswith(".retry") and "email to maria" in entries[0]["error"]

        smtp.start()
        replayed = stack.cli("dead-letters", "replay", "--all")
        assert replayed.returncode == 0, replayed.stderr

        async def sent() -> list[Any]:
            return smtp.messages()

        mails = await eventually(sent, timeout=20, what="the email after the replay")
        assert len(mails) == 1 and "Anyone there?" in mails[0].body
        assert [(d.status, d.attempts) for d in await deliveries(stack)] == [("sent", 1)]
        assert json.loads(stack.cli("dead-letters", "--json").stdout) == []
    finally:
        stack.stop()
        smtp.stop()
