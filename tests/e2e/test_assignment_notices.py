"""Someone who asked to hear of new assignments hears of them (here through Apprise to an
ntfy receiver), once each; someone who did not ask hears nothing."""

import asyncio
import json
from pathlib import Path

import httpx
import pytest

from stayhuman.natsserver import EmbeddedNats
from tests.e2e.stack import Stack, post_webhook
from tests.e2e.test_alert_channels import Receiver
from tests.helpers import eventually, generic_body, unique

pytestmark = pytest.mark.e2e

SECRET = "notices-secret-0123456789"


async def test_an_assignment_is_told_to_who_asked(tmp_path: Path, nats_server: EmbeddedNats) -> None:
    ntfy = Receiver(status=200)
    config = f"""
people:
  - id: maria
    name: Maria
    email: maria@example.com
    notify: {{assigned: [apprise]}}
    apprise: ["ntfy://127.0.0.1:{ntfy.port}/maria-new"]
  - {{id: li, name: Li, email: li@example.com}}
tenants:
  - id: acme
    name: Acme
    sla_policies: [{{name: slow, first_response: 2h}}]
    teams: [{{id: care, name: Care, sla_policy: slow, members: [maria, li]}}]
    accounts: [{{id: acme-fb, platform: facebook, handle: Acme, team: care, webhook_secret: {SECRET}}}]
"""
    stack = Stack.configured(tmp_path / "stack", config, nats=nats_server).start()
    try:
        async with httpx.AsyncClient() as client:
            for n in range(2):  # one conversation each for maria and li (least loaded)
                body = generic_body(unique("m"), thread_id=unique("t"), text=f"Hello number {n}")
                assert (await post_webhook(client, stack, "acme-fb", SECRET, body)).status_code == 202

        async def told() -> list[dict[str, str]]:
            return [json.loads(post[2]) for post in ntfy.posts]

        notices = await eventually(told, timeout=20, what="maria's notice")
        await asyncio.sleep(2)
        assert len(ntfy.posts) == 1  # maria's only: li did not ask
        notice = notices[0]
        assert notice["topic"] == "maria-new"
        assert notice["title"].startswith("[Acme] New on Facebook for you: Dana Reyes")
        assert "Hello number" in notice["message"] and "Why you:" in notice["message"]
    finally:
        stack.stop()
        ntfy.stop()
