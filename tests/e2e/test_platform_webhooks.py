"""Meta and X webhooks, as the platforms send them (tests/fixtures), end to end."""

import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
from sqlmodel import select

from shared.db.models import ConversationRow, InteractionRow
from shared.db.session import create_engine, session_factory
from stayhuman.natsserver import EmbeddedNats
from tests.e2e.stack import Stack
from tests.helpers import config_yaml, eventually, generic_body, sign, stored_on

pytestmark = pytest.mark.e2e
FIXTURES = Path(__file__).parents[1] / "fixtures" / "platforms"
SIGNED: dict[str, Any] = json.loads((FIXTURES / "signed_requests.json").read_text())
TOKEN = "importer-token-0123456789abcdef"
ACCOUNTS = (
    ("bluebird-page", "facebook", "104857600000001"),
    ("bluebird-ig", "instagram", "17841400000000001"),
    ("bluebird-x", "x", "1500000000000000001"),
)


@pytest.fixture(scope="module")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = EmbeddedNats(tmp_path_factory.mktemp("nats")).start()
    yield server.url
    server.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, nats_url: str) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("platforms")
    running = Stack(
        workdir,
        env_overrides={
            "STAYHUMAN_NATS_URL": nats_url,
            "STAYHUMAN_ARCHIVE_RETENTION": "3d",
            "STAYHUMAN_META_APP_SECRET": SIGNED["meta_page_comment"]["secret"],
            "STAYHUMAN_META_VERIFY_TOKEN": SIGNED["meta_subscribe"]["query"]["hub.verify_token"],
            "STAYHUMAN_X_CONSUMER_SECRET": SIGNED["x_mention"]["secret"],
        },
    )
    config = workdir / "bluebird.yaml"
    config.write_text(
        config_yaml(
            tenant="bluebird",
            account="bluebird-fb",
            secret="generic-secret-0123456789",
            people=["maria", "li"],
            platform_accounts=ACCOUNTS,
            api_token=TOKEN,
        )
    )
    running.cli("migrate")
    running.cli("apply", "-f", str(config))
    running.start()
    yield running
    running.stop()


async def deliver(stack: Stack, platform: str, name: str) -> httpx.Response:
    request = SIGNED[name]
    async with httpx.AsyncClient() as client:
        return await client.post(
            stack.url("ingest", f"/webhooks/{platform}"),
            content=request["body"].encode(),
            headers=request["headers"],
        )


async def conversation(stack: Stack, account: str, thread: str) -> ConversationRow | None:
    engine = create_engine(stack.database_url)
    try:
        async with session_factory(engine)() as session:
            query = select(ConversationRow).where(
                ConversationRow.account_id == account, ConversationRow.thread_id == thread
            )
            return (await session.exec(query)).first()
    finally:
        await engine.dispose()


async def stored(stack: Stack, external_id: str) -> list[InteractionRow]:
    engine = create_engine(stack.database_url)
    try:
        async with session_factory(engine)() as session:
            return list(
                (
                    await session.exec(
                        select(InteractionRow).where(InteractionRow.external_id == external_id)
                    )
                ).all()
            )
    finally:
        await engine.dispose()


async def responded(stack: Stack, account: str, thread: str) -> ConversationRow | None:
    found = await conversation(stack, account, thread)
    return found if found is not None and found.state == "responded" else None


@pytest.mark.parametrize(
    ("platform", "inbound", "reply", "account", "thread"),
    [
        (
            "meta",
            "meta_page_comment",
            "meta_page_own_reply",
            "bluebird-page",
            "comment:900000000000001_800000000000001",
        ),
        ("meta", "meta_messenger_message", "meta_messenger_echo", "bluebird-page", "dm:7200000000000001"),
        ("x", "x_dm", "x_dm_own_reply", "bluebird-x", "dm:1500000000000000777"),
    ],
)
async def test_a_platform_message_is_assigned_and_the_brands_reply_responds(
    stack: Stack, platform: str, inbound: str, reply: str, account: str, thread: str
) -> None:
    first = await deliver(stack, platform, inbound)
    assert first.status_code == 200 and first.json()["accepted"] == 1, first.text
    opened = await eventually(lambda: conversation(stack, account, thread), what="the conversation")
    assert opened.owner_id in {"maria", "li"} and opened.state == "open"
    assert (await deliver(stack, platform, reply)).status_code == 200
    await eventually(lambda: responded(stack, account, thread), what="the responded state")


async def test_instagram_comment_and_x_mention_are_assigned(stack: Stack) -> None:
    assert (await deliver(stack, "meta", "instagram_comment")).status_code == 200
    assert (await deliver(stack, "x", "x_mention")).status_code == 200
    ig = await eventually(
        lambda: conversation(stack, "bluebird-ig", "comment:17900000000000001"), what="instagram"
    )
    mention = await eventually(
        lambda: conversation(stack, "bluebird-x", "tweet:1860000000000000555"), what="x"
    )
    assert ig.author_id == "17850000000000001" and mention.author_name == "Priya N"


async def test_a_replayed_delivery_is_stored_once(stack: Stack) -> None:
    for _ in range(3):
        assert (await deliver(stack, "meta", "meta_page_comment")).status_code == 200
    await eventually(lambda: conversation(stack, "bluebird-page", "comment:900000000000001_800000000000001"))
    assert len(await stored(stack, "900000000000001_800000000000001")) == 1


async def test_subscription_checks(stack: Stack) -> None:
    meta_query = SIGNED["meta_subscribe"]["query"]
    async with httpx.AsyncClient() as client:
        ok = await client.get(stack.url("ingest", "/webhooks/meta"), params=meta_query)
        wrong = await client.get(
            stack.url("ingest", "/webhooks/meta"), params={**meta_query, "hub.verify_token": "x"}
        )
        crc = await client.get(stack.url("ingest", "/webhooks/x"), params=SIGNED["x_crc"]["query"])
        no_token = await client.get(stack.url("ingest", "/webhooks/x"))
    assert (ok.status_code, ok.text) == (200, "1158201444")
    assert wrong.status_code == 403 and "verify_token" in wrong.json()["error"]
    assert crc.json() == {"response_token": SIGNED["x_crc"]["expected_response_token"]}
    assert no_token.status_code == 400


async def test_bad_signatures_malformed_and_unrouted_bodies(stack: Stack) -> None:
    request = SIGNED["meta_page_comment"]
    async with httpx.AsyncClient() as client:
        url = stack.url("ingest", "/webhooks/meta")
        tampered = await client.post(url, content=request["body"].encode() + b" ", headers=request["headers"])
        unsigned = await client.post(url, content=request["body"].encode())
        secret = request["secret"]

        def signed(body: bytes) -> dict[str, str]:
            return {
                "X-Hub-Signature-256": "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
            }

        garbage = b'{"object": "page", "entry": "nope"}'
        malformed = await client.post(url, content=garbage, headers=signed(garbage))
        other = b'{"object": "page", "entry": [{"id": "104857600000001", "time": 1, "changes": [{"field": "ratings", "value": {}}]}]}'
        unrouted = await client.post(url, content=other, headers=signed(other))
    assert (tampered.status_code, tampered.json()) == (401, {"error": "bad signature in X-Hub-Signature-256"})
    assert unsigned.status_code == 401
    assert malformed.status_code == 400 and "entry" in malformed.json()["error"]
    assert unrouted.status_code == 200 and unrouted.json() == {
        "status": "accepted",
        "accepted": 0,
        "ignored": 1,
        "rejected": [],
    }


async def test_the_batch_api_takes_a_thousand_interactions_at_once(stack: Stack) -> None:
    items = [
        {**json.loads(generic_body(f"batch-{i}", thread_id=f"batch-thread-{i}")), "account_id": "bluebird-fb"}
        for i in range(1000)
    ]
    url = stack.url("ingest", "/v1/interactions")
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(timeout=30) as client:
        accepted = await client.post(url, json={"interactions": items}, headers=auth)
        again = await client.post(url, json={"interactions": items[:10]}, headers=auth)
        no_token = await client.post(url, json={"interactions": items[:1]})
        wrong_token = await client.post(
            url, json={"interactions": items[:1]}, headers={"Authorization": "Bearer nope"}
        )
        too_many = await client.post(url, json={"interactions": items + items[:1]}, headers=auth)
        bad_item = await client.post(
            url, json={"interactions": [items[0], {**items[1], "kind": "tweet"}]}, headers=auth
        )
        foreign = await client.post(
            url, json={"interactions": [{**items[0], "account_id": "someone-else"}]}, headers=auth
        )
    assert accepted.status_code == 202 and accepted.json()["accepted"] == 1000, accepted.text
    assert again.status_code == 202  # a replay is accepted and stored once
    assert no_token.status_code == wrong_token.status_code == 401
    assert too_many.status_code == 400 and too_many.json()["problems"][0]["field"] == "interactions"
    assert bad_item.status_code == 400 and bad_item.json()["problems"][0]["field"] == "interactions.1.kind"
    assert foreign.status_code == 404 and "interactions[0].account_id" in foreign.json()["error"]

    async def all_routed() -> bool:
        engine = create_engine(stack.database_url)
        try:
            async with session_factory(engine)() as session:
                rows = (
                    await session.exec(
                        select(InteractionRow.id).where(InteractionRow.account_id == "bluebird-fb")
                    )
                ).all()
                return len(rows) >= 1000
        finally:
            await engine.dispose()

    await eventually(all_routed, timeout=60, what="the batch routed")
    assert len(await stored(stack, "batch-5")) == 1


async def test_raw_payloads_are_archived_byte_for_byte(stack: Stack, nats_url: str) -> None:
    request = SIGNED["meta_messenger_message"]
    assert (await deliver(stack, "meta", "meta_messenger_message")).status_code == 200
    nc = await nats.connect(nats_url)
    info = await nc.jetstream().stream_info("SH_ARCHIVE")
    await nc.close()
    assert info.config.max_age == 3 * 86400  # STAYHUMAN_ARCHIVE_RETENTION
    bodies = [m.data for m in await stored_on(nats_url, "sh.archive.meta")]
    assert request["body"].encode() in bodies


async def test_a_removed_comment_withdraws_what_it_would_have_triggered(stack: Stack) -> None:
    secret = SIGNED["meta_page_comment"]["secret"]

    def feed(verb: str) -> bytes:
        value = {
            "from": {"id": "6100000000000099", "name": "Ana Ruiz"}, "item": "comment", "verb": verb,
            "post_id": "104857600000001_9", "parent_id": "104857600000001_9", "comment_id": "9_123",
            "message": "Wrong shop, sorry!" if verb == "add" else "", "created_time": int(time.time()),
        }  # fmt: skip
        return json.dumps(
            {
                "object": "page",
                "entry": [
                    {"id": "104857600000001", "time": 1, "changes": [{"field": "feed", "value": value}]}
                ],
            }
        ).encode()

    async with httpx.AsyncClient() as client:
        for verb in ("add", "remove"):
            body = feed(verb)
            signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
            response = await client.post(
                stack.url("ingest", "/webhooks/meta"),
                content=body,
                headers={"X-Hub-Signature-256": signature},
            )
            assert response.status_code == 200 and response.json()["accepted"] == 1
            if verb == "add":
                opened = await eventually(lambda: conversation(stack, "bluebird-page", "comment:9_123"))
                assert opened.due_at is not None  # a fresh comment: the clock runs

    async def resolved() -> ConversationRow | None:
        found = await conversation(stack, "bluebird-page", "comment:9_123")
        return found if found is not None and found.state == "resolved" else None

    closed = await eventually(resolved, what="the resolved conversation")
    assert closed.due_at is None and closed.deadline_version == 2
    (row,) = await stored(stack, "9_123")
    assert row.retracted_at is not None


def _meta_signed(body: bytes) -> dict[str, str]:
    secret = SIGNED["meta_page_comment"]["secret"]
    return {
        "Content-Type": "application/json",
        "X-Hub-Signature-256": "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest(),
    }


async def test_a_delivery_with_bad_entries_stores_the_good_and_dead_letters_the_bad(
    stack: Stack, nats_url: str
) -> None:
    """Meta retries a delivery it gets no 200 for for 36 hours: one bad entry must not hold back
    the good ones on every retry, nor be lost."""
    page = "104857600000001"

    def comment(comment_id: str, **value: Any) -> dict[str, Any]:
        return {
            "field": "feed",
            "value": {
                "item": "comment", "verb": "add", "post_id": f"{page}_1", "comment_id": comment_id,
                "from": {"id": "7200000000000042", "name": "Dana"}, "message": "Hello?",
                "created_time": int(time.time()), **value,
            },
        }  # fmt: skip

    document = {
        "object": "page",
        "entry": [
            {
                "id": page,
                "time": 1,
                "changes": [comment(f"{page}_good1"), comment(f"{page}_bad1", created_time="soon")],
            },
            {"id": page, "time": 1, "changes": [comment(f"{page}_good2"), comment("9" * 600)]},
            {"time": 1},
        ],
    }
    body = json.dumps(document).encode()
    async with httpx.AsyncClient() as client:
        response = await client.post(
            stack.url("ingest", "/webhooks/meta"), content=body, headers=_meta_signed(body)
        )
        again = await client.post(
            stack.url("ingest", "/webhooks/meta"), content=body, headers=_meta_signed(body)
        )
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["accepted"] == 2
    assert [r["where"] for r in answer["rejected"]] == [
        "entry[0].changes[1]",
        "entry[2]",
        "entry[1].changes[1]",
    ]
    assert again.status_code == 200  # the platform's retry finds duplicates, not gaps
    await eventually(lambda: stored(stack, f"{page}_good1"), timeout=20, what="the first good comment stored")
    await eventually(
        lambda: stored(stack, f"{page}_good2"), timeout=20, what="the second good comment stored"
    )

    kept = await stored_on(nats_url, "sh.dlq.ingest.meta")
    errors = sorted((m.headers or {}).get("Sh-Error", "") for m in kept)
    assert len(kept) == 3, errors  # the retry kept nothing twice
    assert any(e.startswith("entry[0].changes[1]: ValueError: not a time") for e in errors), errors
    assert any(e.startswith("entry[2]: ValueError: expected an object with an 'id'") for e in errors), errors
    assert any("external_id" in e and "512" in e for e in errors), errors


async def test_the_x_crc_does_not_sign_a_forged_delivery(stack: Stack) -> None:
    """The CRC answer is the HMAC of the token with the consumer secret: exactly the signature a
    POST with the token as its body needs. A token that is a delivery is refused."""
    forged = json.dumps(
        {"for_user_id": "1500000000000000001", "tweet_create_events": [
            {"id_str": "666", "text": "forged", "timestamp_ms": str(int(time.time() * 1000)),
             "user": {"id_str": "13", "screen_name": "mallory", "followers_count": 10_000_000}}]}
    )  # fmt: skip
    async with httpx.AsyncClient() as client:
        oracle = await client.get(stack.url("ingest", "/webhooks/x"), params={"crc_token": forged})
        assert oracle.status_code == 400 and "crc_token" in oracle.json()["error"]
        attempt = await client.post(
            stack.url("ingest", "/webhooks/x"),
            content=forged.encode(),
            headers={"x-twitter-webhooks-signature": "sha256=" + "A" * 43 + "="},
        )
    assert attempt.status_code == 401
    assert await stored(stack, "666") == []


async def test_bodies_at_the_size_limits_are_stored_and_keep_ingest_connected(
    stack: Stack, nats_url: str
) -> None:
    """A body just under 1 MiB (JSON allows any amount of white space) and a 16 MiB batch are
    larger than one NATS message may be once headers are added: they are archived in parts,
    and ingest stays connected to NATS (the server closes a connection that sends more)."""
    secret = "generic-secret-0123456789"
    body = generic_body("near-limit", thread_id="near-limit-thread")
    body = body[:-1] + b" " * (1_048_576 - len(body)) + b"}"
    assert len(body) == 1_048_576
    items = [
        {
            **json.loads(generic_body(f"big-batch-{i}", thread_id=f"big-batch-{i}", text="ü" * 8000)),
            "account_id": "bluebird-fb",
        }
        for i in range(1000)
    ]
    batch = json.dumps({"interactions": items}, ensure_ascii=False).encode()
    assert 15_000_000 < len(batch) <= 16_777_216
    async with httpx.AsyncClient(timeout=60) as client:
        headers = {"Content-Type": "application/json", "X-Signature-256": sign(secret, body)}
        near = await client.post(
            stack.url("ingest", "/webhooks/generic/bluebird-fb"), content=body, headers=headers
        )
        big = await client.post(
            stack.url("ingest", "/v1/interactions"),
            content=batch,
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        after = generic_body("after-the-big-ones", thread_id="after-thread")
        later = await client.post(
            stack.url("ingest", "/webhooks/generic/bluebird-fb"),
            content=after,
            headers={"Content-Type": "application/json", "X-Signature-256": sign(secret, after)},
        )
        health = await client.get(stack.url("ingest-ops", "/readyz"))
    assert near.status_code == 202, near.text
    assert big.status_code == 202 and big.json()["accepted"] == 1000, big.text
    assert later.status_code == 202 and health.status_code == 200
    await eventually(lambda: stored(stack, "big-batch-999"), timeout=60, what="the big batch routed")
    parts = [
        m for m in await stored_on(nats_url, "sh.archive.batch") if m.headers and m.headers.get("Sh-Part")
    ]
    digest = hashlib.sha256(batch).hexdigest()
    mine = [m for m in parts if m.headers and m.headers.get("Sh-Digest") == digest]
    mine.sort(key=lambda m: int((m.headers or {})["Sh-Part"].split("/")[0]))
    assert len(mine) > 1 and b"".join(m.data for m in mine) == batch  # the parts make the body again
