"""notify's keys are the installation's, the same on every replica: two notify processes with
their own state folders (as two containers have) on one database follow each other's
acknowledge links and both open the Apprise URLs that `apply` sealed. A notify without its keys
stops at once, naming the variable, and writes no key of its own."""

import asyncio
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from shared.db.core import DELIVERIES
from shared.secrets import SECRET_KEY_FILE, VAPID_KEY_FILE, new_key
from stayhuman.natsserver import EmbeddedNats, free_port, free_ports
from tests.e2e.stack import Stack, post_webhook, smtp_env
from tests.helpers import eventually, generic_body, service_ready, unique
from tests.receiver import Receiver
from tests.smtp import SmtpServer

pytestmark = pytest.mark.e2e

SECRET = "keys-secret-0123456789"
CONVERSATIONS = 12
ACK_LINK = re.compile(r"I'm on it \(stops the escalation\): (http://127\.0\.0\.1:(\d+)/ack/(\S+))")


def config(ntfy_port: int) -> str:
    return f"""
people:
  - id: maria
    name: Maria
    email: maria@example.com
    capacity: 1000
    notify: {{breach: [email, apprise]}}
    apprise: ["ntfy://127.0.0.1:{ntfy_port}/maria-alerts"]
  - {{id: lena, name: Lena Lead, email: lena@example.com}}
tenants:
  - id: acme
    name: Acme
    escalation: [{{after: 4s, notify: lead}}]
    sla_policies: [{{name: quick, first_response: 3s}}]
    teams: [{{id: care, name: Care, sla_policy: quick, lead: lena, members: [maria]}}]
    accounts: [{{id: acme-fb, platform: facebook, handle: Acme, team: care, webhook_secret: {SECRET}}}]
"""


async def test_two_replicas_follow_each_others_links_and_open_what_apply_sealed(
    tmp_path: Path, nats_server: EmbeddedNats
) -> None:
    smtp, ntfy = SmtpServer().start(), Receiver(status=200)
    # one database that is not a state folder's own: the installation's keys are set, as in compose
    stack = Stack.configured(
        tmp_path / "stack",
        config(ntfy.port),
        nats=nats_server,
        STAYHUMAN_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}",
        **smtp_env(smtp.port),
        STAYHUMAN_ALERT_GROUPING="false",
        STAYHUMAN_LOG_LEVEL="warning",
    ).start()
    second_port, second_ops = free_ports(2)
    second = subprocess.Popen(
        [sys.executable, "-m", "stayhuman", "notify"],
        env={
            **stack.env(),  # the same keys...
            "STAYHUMAN_STATE_DIR": str(tmp_path / "second-replica"),  # ...and a state folder of its own
            "STAYHUMAN_NOTIFY_PORT": str(second_port),
            "STAYHUMAN_NOTIFY_OPS_PORT": str(second_ops),
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    ports = {stack.ports["notify"], second_port}
    try:
        await eventually(lambda: service_ready(second_ops), timeout=30, what="the second notify replica")
        async with httpx.AsyncClient() as client:
            for _ in range(CONVERSATIONS):
                body = generic_body(unique("m"), thread_id=unique("t"), text="Still waiting")
                assert (await post_webhook(client, stack, "acme-fb", SECRET, body)).status_code == 202

        async def breaches() -> list[Any]:
            found = [m for m in smtp.messages() if str(m.message["X-StayHuman-Alert"]) == "breach"]
            return found if len(found) == CONVERSATIONS else []

        mails = await eventually(breaches, timeout=40, what="every breach")
        links = [ACK_LINK.search(m.body) for m in mails]
        assert all(links)
        made_by = {int(link[2]) for link in links if link}
        print(f"\nacknowledge links made by the replicas on ports {sorted(made_by)} of {sorted(ports)}")
        async with httpx.AsyncClient() as client:
            # every link opens on both replicas, whichever made it
            for link in links:
                assert link is not None
                for port in ports:
                    page = await client.get(f"http://127.0.0.1:{port}/ack/{link[3]}")
                    assert page.status_code == 200 and "Acknowledge this alert?" in page.text, (
                        port,
                        page.text,
                    )
            # and is acknowledged on the replica that did not make it
            first = links[0]
            assert first is not None
            other = (ports - {int(first[2])}).pop()
            done = await client.post(f"http://127.0.0.1:{other}/ack/{first[3]}")
            assert done.status_code == 200 and "Acknowledged" in done.text
        acknowledged = str(mails[0].message["X-StayHuman-Conversation"])

        async def escalations() -> list[Any]:
            found = [m for m in smtp.messages() if str(m.message["X-StayHuman-Alert"]) == "escalation-1"]
            return found if len(found) == CONVERSATIONS - 1 else []

        escalated = await eventually(escalations, timeout=40, what="the other conversations' escalations")
        await asyncio.sleep(2)
        assert acknowledged not in {
            str(m.message["X-StayHuman-Conversation"]) for m in smtp.messages()[len(mails) :]
        }
        assert len(escalated) == CONVERSATIONS - 1
        # the Apprise URLs that `apply` sealed opened on whichever replica sent the breach
        assert len(ntfy.messages) == CONVERSATIONS
        log = [
            (r.channel, r.status, r.last_error)
            for r in await stack.query(select(DELIVERIES).where(DELIVERIES.c.step == "breach"))
        ]
        assert sorted(log) == sorted([("apprise", "sent", ""), ("email", "sent", "")] * CONVERSATIONS), log
        assert not (tmp_path / "second-replica" / SECRET_KEY_FILE).exists()  # it made no key of its own
    finally:
        second.terminate()
        second.wait(timeout=30)
        stack.stop()
        smtp.stop()
        ntfy.stop()


@pytest.mark.parametrize(
    ("given", "missing"),
    [
        ({}, "STAYHUMAN_SECRET_KEY"),
        ({"STAYHUMAN_SECRET_KEY": new_key()}, "STAYHUMAN_VAPID_PRIVATE_KEY"),
        (
            {"STAYHUMAN_SECRET_KEY": new_key(), "STAYHUMAN_VAPID_PRIVATE_KEY": "not a key"},
            "STAYHUMAN_VAPID_PRIVATE_KEY",
        ),
        ({"STAYHUMAN_SECRET_KEY": "short"}, "STAYHUMAN_SECRET_KEY"),
    ],
)
def test_notify_without_its_keys_stops_naming_the_variable(
    tmp_path: Path, given: dict[str, str], missing: str
) -> None:
    import os

    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("STAYHUMAN_SECRET_KEY", "STAYHUMAN_VAPID_PRIVATE_KEY", "STAYHUMAN_LINK_KEY")
    }
    env.update(
        STAYHUMAN_STATE_DIR=str(tmp_path / "state"),
        STAYHUMAN_DATABASE_URL="postgresql://stayhuman:x@db.invalid/stayhuman",
        STAYHUMAN_NATS_URL="nats://127.0.0.1:1",
        STAYHUMAN_SMTP_HOST="smtp.invalid",
        STAYHUMAN_NOTIFY_PORT=str(free_port()),
        STAYHUMAN_LOG_JSON="false",
        **given,
    )
    result = subprocess.run(
        [sys.executable, "-m", "stayhuman", "notify"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert missing in result.stderr, result.stderr[-2000:]
    state = tmp_path / "state"
    assert not (state / SECRET_KEY_FILE).exists() and not (state / VAPID_KEY_FILE).exists()
