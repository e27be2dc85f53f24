"""Two notify replicas on one PostgreSQL database and one NATS: each alert of each
conversation (the breach, then an escalation step) is sent exactly once, and both replicas
take part."""

import asyncio
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import httpx
import pytest

from stayhuman.natsserver import EmbeddedNats, free_port
from tests.e2e.stack import Stack, post_webhook, smtp_env
from tests.helpers import eventually, generic_body, service_ready, unique
from tests.smtp import SmtpServer

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

SECRET = "replicas-secret-0123456789"
CONVERSATIONS = 40

CONFIG = f"""
people:
  - {{id: maria, name: Maria, email: maria@example.com, capacity: 1000}}
  - {{id: lena, name: Lena Lead, email: lena@example.com}}
tenants:
  - id: acme
    name: Acme
    escalation: [{{after: 2s, notify: lead}}]
    sla_policies: [{{name: quick, first_response: 4s}}]
    teams: [{{id: care, name: Care, sla_policy: quick, lead: lena, members: [maria]}}]
    accounts: [{{id: acme-fb, platform: facebook, handle: Acme, team: care, webhook_secret: {SECRET}}}]
"""


def sent_by(port: int) -> float:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return sum(
        float(value)
        for value in re.findall(
            r'stayhuman_notify_alerts_total\{channel="email",result="sent"\} ([0-9.e+]+)', text
        )
    )


async def test_two_notify_replicas_send_each_alert_once(
    tmp_path: Path, postgres_url: str, nats_server: EmbeddedNats
) -> None:
    smtp = SmtpServer().start()
    stack = Stack.configured(
        tmp_path / "stack",
        CONFIG,
        nats=nats_server,
        STAYHUMAN_DATABASE_URL=postgres_url,
        **smtp_env(smtp.port),
        STAYHUMAN_ALERT_GROUPING="false",  # every alert counted on its own
        STAYHUMAN_LOG_LEVEL="warning",
    ).start()
    second_port = free_port()  # its operations listener: readiness and metrics
    second = subprocess.Popen(
        [sys.executable, "-m", "stayhuman", "notify"],
        env={
            **stack.env(),
            "STAYHUMAN_NOTIFY_PORT": str(free_port()),
            "STAYHUMAN_NOTIFY_OPS_PORT": str(second_port),
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        await eventually(
            lambda: service_ready(second_port), timeout=30, what="the second notify replica ready"
        )
        async with httpx.AsyncClient() as client:
            for _ in range(CONVERSATIONS):
                body = generic_body(unique("m"), thread_id=unique("t"), text="Still waiting")
                assert (await post_webhook(client, stack, "acme-fb", SECRET, body)).status_code == 202

        async def all_told() -> bool:
            return len(smtp.messages()) >= 2 * CONVERSATIONS

        await eventually(all_told, timeout=60, what=f"{2 * CONVERSATIONS} alerts")
        await asyncio.sleep(3)  # anything doubled would have come by now
        steps = Counter(
            (str(m.message["X-StayHuman-Conversation"]), str(m.message["X-StayHuman-Alert"]))
            for m in smtp.messages()
        )
        assert len(steps) == 2 * CONVERSATIONS
        assert set(steps.values()) == {1}, [key for key, n in steps.items() if n > 1][:5]
        assert Counter(step for _, step in steps) == {"breach": CONVERSATIONS, "escalation-1": CONVERSATIONS}
        shares = [sent_by(stack.ports["notify-ops"]), sent_by(second_port)]
        print(f"\nalerts sent by each notify replica: {shares}")
        assert sum(shares) == 2 * CONVERSATIONS and all(share > 0 for share in shares)
    finally:
        second.terminate()
        second.wait(timeout=30)
        stack.stop()
        smtp.stop()
