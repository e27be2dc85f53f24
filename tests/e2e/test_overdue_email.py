"""A conversation nobody answers becomes an email to its owner; a reply silences it."""

import asyncio
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest
from sqlmodel import select

from shared import subjects
from shared.db.models import ConversationRow
from shared.db.session import create_engine, session_factory
from tests.e2e.stack import Stack, post_webhook
from tests.helpers import config_yaml, eventually, generic_body, unique
from tests.smtp import Received, SmtpServer

pytestmark = pytest.mark.e2e
SECRET = "overdue-secret-0123456789"
SLA_SECONDS = 3


@pytest.fixture(scope="module")
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, smtp: SmtpServer) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("overdue")
    running = Stack(
        workdir,
        env_overrides={
            "STAYHUMAN_SMTP_HOST": "127.0.0.1",
            "STAYHUMAN_SMTP_PORT": str(smtp.port),
            "STAYHUMAN_SMTP_SECURITY": "none",
            "STAYHUMAN_ALERT_RETRY_INITIAL": "2s",
            "STAYHUMAN_ALERT_RETRY_MAX": "8s",
            "STAYHUMAN_ALERT_GROUPING": "false",  # each test counts its own emails
        },
    )
    config = workdir / "acme.yaml"
    config.write_text(
        config_yaml(
            tenant="acme",
            account="acme-fb",
            secret=SECRET,
            people=["maria"],
            first_response=f"{SLA_SECONDS}s",
        )
    )
    running.cli("migrate")
    running.cli("apply", "-f", str(config))
    running.start()
    yield running
    running.stop()


async def conversation_of(stack: Stack, thread: str) -> ConversationRow | None:
    engine = create_engine(stack.database_url)
    try:
        async with session_factory(engine)() as session:
            return (
                await session.exec(select(ConversationRow).where(ConversationRow.thread_id == thread))
            ).first()
    finally:
        await engine.dispose()


def mails_about(smtp: SmtpServer, conversation_id: str) -> list[Received]:
    return [m for m in smtp.messages() if conversation_id in m.body]


async def send(stack: Stack, body: bytes, **headers: str) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        response = await post_webhook(client, stack, "acme-fb", SECRET, body, **headers)
    assert response.status_code == 202, response.text
    return response


async def test_unanswered_conversation_emails_its_owner_on_time(stack: Stack, smtp: SmtpServer) -> None:
    thread, text, cid = unique("post"), "Where is my order #4411?", unique("corr")
    await send(stack, generic_body(unique("m"), thread_id=thread, text=text), **{"X-Correlation-Id": cid})
    conversation = await eventually(lambda: conversation_of(stack, thread), what="the conversation")
    assert conversation.due_at is not None

    async def mail() -> list[Received]:
        return mails_about(smtp, conversation.id)

    received = await eventually(mail, timeout=SLA_SECONDS + 10, what="the overdue email")
    lateness = received[0].at - conversation.due_at.timestamp()
    print(f"overdue email arrived {lateness * 1000:.0f} ms after the due time")
    assert 0 <= lateness <= 2
    assert received[0].recipients == ["maria@example.com"]
    assert received[0].subject.startswith("[Tenant acme] Overdue on Facebook: Dana Reyes has waited")
    assert f"> {text}" in received[0].body
    # the correlation id followed this interaction through all three services
    lines = [json.loads(line) for line in stack.logs().splitlines() if line.startswith("{")]
    assert {"ingest", "router", "notify"} <= {
        line["service"] for line in lines if line.get("correlation_id") == cid
    }
    await asyncio.sleep(1)
    assert len(mails_about(smtp, conversation.id)) == 1


async def test_a_reply_before_the_deadline_means_no_email(stack: Stack, smtp: SmtpServer) -> None:
    thread = unique("post")
    await send(stack, generic_body(unique("m"), thread_id=thread))
    conversation = await eventually(lambda: conversation_of(stack, thread), what="the conversation")
    await send(stack, generic_body(unique("r"), thread_id=thread, direction="outbound"))
    assert conversation.due_at is not None
    await asyncio.sleep(max(0.0, conversation.due_at.timestamp() - time.time()) + 3)
    assert mails_about(smtp, conversation.id) == []
    answered = await conversation_of(stack, thread)
    assert answered is not None and answered.state == "responded"


async def test_the_same_webhook_twice_is_one_email(stack: Stack, smtp: SmtpServer) -> None:
    thread = unique("post")
    body = generic_body(unique("m"), thread_id=thread, created_at=datetime.now(UTC))
    await send(stack, body)
    await send(stack, body)
    conversation = await eventually(lambda: conversation_of(stack, thread), what="the conversation")

    async def mail() -> list[Received]:
        return mails_about(smtp, conversation.id)

    await eventually(mail, timeout=SLA_SECONDS + 10, what="the overdue email")
    await asyncio.sleep(2)
    assert len(mails_about(smtp, conversation.id)) == 1


async def test_smtp_down_for_20_seconds_ends_in_exactly_one_email(stack: Stack, smtp: SmtpServer) -> None:
    thread = unique("post")
    smtp.stop()
    try:
        await send(stack, generic_body(unique("m"), thread_id=thread))
        conversation = await eventually(lambda: conversation_of(stack, thread), what="the conversation")
        await asyncio.sleep(20)
        assert mails_about(smtp, conversation.id) == []
    finally:
        smtp.start()

    async def mail() -> list[Received]:
        return mails_about(smtp, conversation.id)

    received = await eventually(mail, timeout=30, what="the email after the outage")
    await asyncio.sleep(3)
    assert len(mails_about(smtp, conversation.id)) == 1
    assert received[0].recipients == ["maria@example.com"]


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in a Prometheus exposition; -1 when absent."""
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        sample, _, value = line.rpartition(" ")
        if sample.split("{")[0] == name and all(f'{k}="{v}"' in sample for k, v in labels.items()):
            return float(value)
    return -1.0


async def test_every_service_reports_its_metrics(stack: Stack, smtp: SmtpServer) -> None:
    """After the traffic above: what an operator's dashboard reads."""
    async with httpx.AsyncClient() as client:

        async def scrape(service: str) -> str:
            return (await client.get(stack.url(service, "/metrics"))).text

        ingest = await scrape("ingest-ops")
        assert metric(ingest, "stayhuman_ingest_interactions_total", tenant="acme", result="accepted") >= 4
        assert metric(ingest, "stayhuman_ingest_interactions_total", tenant="acme", result="duplicate") >= 1
        assert metric(ingest, "stayhuman_ingest_publish_seconds_count") >= 4

        async def router_gauges() -> str:
            text = await scrape("router")
            return (
                text
                if metric(text, "stayhuman_team_open_conversations", tenant="acme", team="care") >= 0
                else ""
            )

        router = await eventually(router_gauges, timeout=15, what="the router's queue gauges")
        assert metric(router, "stayhuman_router_assignments_total") >= 4
        assert metric(router, "stayhuman_router_latency_seconds_count") >= 4
        for lane in ["", *(f"-{n}" for n in range(subjects.LANES))]:  # every lane drained
            assert metric(router, "stayhuman_consumer_pending", consumer=f"router-interactions{lane}") == 0
        notify = await scrape("notify-ops")
        assert metric(notify, "stayhuman_notify_breaches_total") >= 3
        assert metric(notify, "stayhuman_notify_alerts_total", channel="email", result="sent") >= 3
        assert (
            metric(notify, "stayhuman_notify_alerts_total", channel="email", result="failed") >= 1
        )  # the outage
        assert metric(notify, "stayhuman_notify_timers_armed_total") >= 4
        assert metric(notify, "stayhuman_notify_timer_stream_bytes") > 0

        async def timers_acknowledged() -> str:
            # a gauge sampled every few seconds: a timer may have been in hand at the last sample
            text = await scrape("notify-ops")
            return (
                text if metric(text, "stayhuman_consumer_ack_pending", consumer="notify-timers") == 0 else ""
            )

        await eventually(timers_acknowledged, timeout=30, what="notify's timers all acknowledged")
