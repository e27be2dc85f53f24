"""A signed webhook travels ingest -> JetStream -> router, three processes, real NATS."""

import json
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlmodel import select

from shared.db.models import ConversationRow, InteractionRow
from shared.db.session import create_engine, session_factory
from tests.e2e.conftest import SECRET
from tests.e2e.stack import Stack, post_webhook
from tests.helpers import eventually, generic_body, sign, unique

pytestmark = pytest.mark.e2e


async def conversation_of(stack: Stack, thread_id: str) -> ConversationRow | None:
    engine = create_engine(stack.database_url)
    try:
        async with session_factory(engine)() as session:
            return (
                await session.exec(select(ConversationRow).where(ConversationRow.thread_id == thread_id))
            ).first()
    finally:
        await engine.dispose()


async def interactions_of(stack: Stack, thread_id: str) -> list[InteractionRow]:
    engine = create_engine(stack.database_url)
    try:
        async with session_factory(engine)() as session:
            return list(
                (
                    await session.exec(select(InteractionRow).where(InteractionRow.thread_id == thread_id))
                ).all()
            )
    finally:
        await engine.dispose()


async def test_every_service_is_ready(stack: Stack) -> None:
    async with httpx.AsyncClient() as client:
        for service in ("ingest-ops", "router", "notify-ops"):
            response = await client.get(stack.url(service, "/readyz"))
            assert response.status_code == 200, response.text
            assert response.json()["checks"]["streams"] == "ok"


async def test_signed_webhook_ends_assigned_to_a_person(stack: Stack) -> None:
    thread = unique("post")
    cid = unique("corr")
    async with httpx.AsyncClient() as client:
        response = await post_webhook(
            client,
            stack,
            "acme-fb",
            SECRET,
            generic_body(unique("m"), thread_id=thread),
            **{"X-Correlation-Id": cid},
        )
    assert response.status_code == 202, response.text
    assert response.json()["duplicate"] is False
    conversation = await eventually(lambda: conversation_of(stack, thread), what="the conversation")
    assert conversation.owner_id in {"maria", "li"}
    assert conversation.state == "open"
    assert "least loaded" in conversation.assignment_reason
    assert conversation.due_at is not None and conversation.due_at > datetime.now(UTC) + timedelta(minutes=29)
    # the correlation id follows the interaction through both services' JSON logs
    lines = [json.loads(line) for line in stack.logs().splitlines() if line.startswith("{")]
    services = {line["service"] for line in lines if line.get("correlation_id") == cid}
    assert {"ingest", "router"} <= services
    listing = stack.cli("conversations", "--tenant", "acme", "--json")
    rows = {row["id"]: row for row in json.loads(listing.stdout)}
    assert rows[conversation.id]["owner_name"] in {"Person maria", "Person li"}


async def test_the_brands_reply_marks_it_responded(stack: Stack) -> None:
    thread = unique("post")
    asked = datetime.now(UTC) - timedelta(minutes=2)
    async with httpx.AsyncClient() as client:
        first = await post_webhook(
            client, stack, "acme-fb", SECRET, generic_body(unique("m"), thread_id=thread, created_at=asked)
        )
        assert first.status_code == 202
        await eventually(lambda: conversation_of(stack, thread), what="the conversation")
        reply = generic_body(
            unique("r"), thread_id=thread, direction="outbound", created_at=asked + timedelta(minutes=1)
        )
        assert (await post_webhook(client, stack, "acme-fb", SECRET, reply)).status_code == 202

    async def responded() -> ConversationRow | None:
        conversation = await conversation_of(stack, thread)
        return conversation if conversation and conversation.state == "responded" else None

    conversation = await eventually(responded, what="the responded state")
    assert conversation.due_at is None and conversation.responded_at == asked + timedelta(minutes=1)


async def test_the_same_webhook_twice_is_one_interaction(stack: Stack) -> None:
    thread = unique("post")
    body = generic_body(unique("m"), thread_id=thread)
    async with httpx.AsyncClient() as client:
        first = await post_webhook(client, stack, "acme-fb", SECRET, body)
        second = await post_webhook(client, stack, "acme-fb", SECRET, body)
    assert first.status_code == second.status_code == 202
    assert first.json()["interaction_id"] == second.json()["interaction_id"]
    assert second.json()["duplicate"] is True
    await eventually(lambda: conversation_of(stack, thread), what="the conversation")
    assert len(await interactions_of(stack, thread)) == 1


async def test_errors_answer_json_naming_the_problem(stack: Stack) -> None:
    body = generic_body(unique("m"))
    url = stack.url("ingest", "/webhooks/generic/acme-fb")
    async with httpx.AsyncClient() as client:
        missing = await client.post(url, content=body)
        bad = await client.post(
            url, content=body, headers={"X-Signature-256": sign("wrong-secret-xxxxxxxx", body)}
        )
        unknown = await post_webhook(client, stack, "nobody-fb", SECRET, body)
        not_json = await post_webhook(client, stack, "acme-fb", SECRET, b"{not json")
        no_kind = json.loads(body)
        del no_kind["kind"]
        malformed = await post_webhook(client, stack, "acme-fb", SECRET, json.dumps(no_kind).encode())
        naive = await post_webhook(
            client,
            stack,
            "acme-fb",
            SECRET,
            json.dumps({**json.loads(body), "created_at": "2026-11-26T10:00:00"}).encode(),
        )
        huge = await post_webhook(
            client, stack, "acme-fb", SECRET, generic_body(unique("m"), text="x" * 2_000_000)
        )
    assert (missing.status_code, missing.json()) == (401, {"error": "missing signature in X-Signature-256"})
    assert (bad.status_code, bad.json()) == (401, {"error": "bad signature in X-Signature-256"})
    # an unknown account is answered exactly like a bad signature: nothing tells which accounts exist
    assert (unknown.status_code, unknown.json()) == (bad.status_code, bad.json())
    assert not_json.status_code == 400 and not_json.json()["error"].startswith("body is not JSON")
    assert malformed.status_code == 400
    assert malformed.json()["problems"] == [{"field": "kind", "problem": "Field required"}]
    assert naive.status_code == 400 and naive.json()["problems"][0]["field"] == "created_at"
    assert (huge.status_code, huge.json()) == (413, {"error": "body larger than 1048576 bytes"})


async def test_slow_clients_do_not_hold_back_a_signed_webhook(stack: Stack) -> None:
    """1,500 clients sending their bodies a byte at a time hold nothing but sockets: a signed
    delivery is still answered at once, and the slow ones are cut off after the body timeout."""
    import asyncio
    import time

    port = stack.ports["ingest"]
    slow: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    for _ in range(1500):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /webhooks/generic/acme-fb HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"X-Signature-256: sha256=" + b"0" * 64 + b"\r\nContent-Length: 100000\r\n\r\n{"
        )
        slow.append((reader, writer))
    await asyncio.gather(*(writer.drain() for _, writer in slow))
    started = time.monotonic()
    try:
        async with httpx.AsyncClient() as client:
            body = generic_body(unique("m"), thread_id=unique("t"))
            response = await post_webhook(client, stack, "acme-fb", SECRET, body)
        answered_in = time.monotonic() - started
        assert response.status_code == 202, response.text
        assert answered_in < 1.0, f"answered in {answered_in:.2f} s with 1,500 slow clients held"
        print(f"signed webhook answered in {answered_in * 1000:.0f} ms with 1,500 slow clients held")

        async def answer(reader: asyncio.StreamReader) -> bytes:
            try:
                return await asyncio.wait_for(reader.readline(), timeout=20)
            except (TimeoutError, ConnectionError):
                return b""

        lines = await asyncio.gather(*(answer(reader) for reader, _ in slow[:100]))
        assert all(line.startswith(b"HTTP/1.1 408") for line in lines), set(lines)
    finally:
        for _, writer in slow:
            writer.close()
