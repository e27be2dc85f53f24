"""The Acknowledge command on NATS, as any client may publish it: notify's `notify-commands`
consumer applies it, the escalation stops, and the bus tells: AlertSent for each alert,
AlertAcknowledged and CommandApplied for the command, CommandRejected (outdated) for one that
names an older deadline."""

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
from sqlalchemy import select

from shared.commands import Acknowledge, msg_id_of, subject_of
from shared.db.core import CONVERSATIONS
from shared.messages import MSG_ID
from stayhuman.natsserver import EmbeddedNats
from tests.e2e.stack import Stack, post_webhook, smtp_env
from tests.helpers import eventually, generic_body, stored_on, unique
from tests.smtp import SmtpServer

pytestmark = pytest.mark.e2e

SECRET = "ack-command-secret-0123456789"
DUE, STEP = 5, 6  # the breach, seconds after the message; the lead's step, seconds after it

CONFIG = f"""
people:
  - {{id: maria, name: Maria, email: maria@example.com}}
  - {{id: lena, name: Lena Lead, email: lena@example.com}}
tenants:
  - id: acme
    name: Acme
    escalation: [{{after: {STEP}s, notify: lead}}]
    sla_policies: [{{name: quick, first_response: {DUE}s}}]
    teams: [{{id: care, name: Care, sla_policy: quick, lead: lena, members: [maria]}}]
    accounts: [{{id: acme-fb, platform: facebook, handle: Acme, team: care, webhook_secret: {SECRET}}}]
"""


@pytest.fixture
def smtp() -> Any:
    server = SmtpServer().start()
    yield server
    server.stop()


async def test_an_acknowledge_command_on_nats_stops_the_escalation_and_says_so(
    tmp_path: Path, nats_server: EmbeddedNats, smtp: SmtpServer
) -> None:
    stack = Stack.configured(tmp_path / "stack", CONFIG, nats=nats_server, **smtp_env(smtp.port)).start()
    try:
        thread = unique("thread")
        async with httpx.AsyncClient() as client:
            body = generic_body(unique("m"), thread_id=thread, text="My order never came")
            assert (await post_webhook(client, stack, "acme-fb", SECRET, body)).status_code == 202

        async def conversation() -> Any:
            found = await stack.query(select(CONVERSATIONS).where(CONVERSATIONS.c.thread_id == thread))
            return found[0] if found and found[0].due_at else None

        row = await eventually(conversation, what="the conversation with its deadline")

        def steps() -> list[str]:
            return [
                str(m.message["X-StayHuman-Alert"])
                for m in smtp.messages()
                if str(m.message["X-StayHuman-Conversation"]) == row.id
            ]

        async def breach_sent() -> bool:
            return "breach" in steps()

        await eventually(breach_sent, timeout=30, what="the breach alert")
        nc = await nats.connect(nats_server.url)
        try:
            js = nc.jetstream()
            for command in (
                Acknowledge(tenant_id="acme", conversation_id=row.id, deadline_version=row.deadline_version,
                            person_id="maria", issued_by="maria", command_id="ackcmd-current"),
                Acknowledge(tenant_id="acme", conversation_id=row.id, deadline_version=row.deadline_version + 1,
                            person_id="maria", issued_by="maria", command_id="ackcmd-other-version"),
            ):  # fmt: skip
                await js.publish(
                    subject_of(command),
                    command.model_dump_json().encode(),
                    headers={MSG_ID: msg_id_of(command)},
                )
        finally:
            await nc.close()

        async def outcomes() -> dict[str, dict[str, Any]] | None:
            found = [json.loads(m.data) for m in await stored_on(nats_server.url, "sh.result.>")]
            mine = {o["command_id"]: o for o in found if o.get("conversation_id") == row.id}
            return mine if len(mine) == 2 else None

        results = await eventually(outcomes, timeout=20, what="both commands' outcomes")
        assert results["ackcmd-current"]["type"] == "command.applied"
        assert results["ackcmd-other-version"]["type"] == "command.rejected"
        assert results["ackcmd-other-version"]["code"] == "outdated"

        # the lead's step would be due STEP seconds after the breach: it never comes
        await asyncio.sleep(max(0.0, row.due_at.timestamp() + STEP + 3 - time.time()))
        assert sorted(steps()) == ["breach"]

        alerts = [json.loads(m.data) for m in await stored_on(nats_server.url, "sh.alert.>")]
        mine = [a for a in alerts if a.get("conversation_id") == row.id]
        sent = [a for a in mine if a["type"] == "alert.sent"]
        assert [(a["step"], a["person_id"], a["channel"]) for a in sent] == [("breach", "maria", "email")]
        [acknowledged] = [a for a in mine if a["type"] == "alert.acknowledged"]
        assert acknowledged["person_id"] == "maria" and acknowledged["command_id"] == "ackcmd-current"
    finally:
        stack.stop()
