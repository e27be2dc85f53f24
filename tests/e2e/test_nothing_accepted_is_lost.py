"""202 means stored or dead-lettered, never nowhere: through the running stack (real NATS, the
services as processes, SQLite and PostgreSQL), what ingest accepts is counted in the database
and on the dead letters, for values at the limits of what the store holds and for fuzzed input."""

import asyncio
import hashlib
import hmac
import json
import uuid
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from services.ingest.connectors import meta
from services.ingest.connectors.model import to_events
from shared import subjects
from shared.db.core import CONVERSATIONS, INTERACTIONS
from shared.events import INT64_MAX, InteractionReceived
from stayhuman.natsserver import EmbeddedNats
from tests.e2e.stack import Stack
from tests.fuzz import mutated, raw_bodies
from tests.helpers import config_yaml, eventually, sign, stored_on

pytestmark = pytest.mark.e2e

SECRET = "lost-secret-0123456789"
META_SECRET = "nothing-lost-meta-secret"
PAGE = "104857600000001"
FIXTURES = Path(__file__).parents[1] / "fixtures" / "platforms"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def stack(request: pytest.FixtureRequest, tmp_path: Path, nats_server: EmbeddedNats) -> Iterator[Stack]:
    env: dict[str, str] = {"STAYHUMAN_META_APP_SECRET": META_SECRET, "STAYHUMAN_LOG_LEVEL": "warning"}
    if request.param == "postgres":
        env["STAYHUMAN_DATABASE_URL"] = request.getfixturevalue("postgres_url")
    config = config_yaml(
        tenant="acme", account="acme-fb", secret=SECRET, people=["maria"],
        platform_accounts=(("acme-page", "facebook", PAGE),),
    )  # fmt: skip
    running = Stack.configured(tmp_path / "stack", config, nats=nats_server, **env).start()
    yield running
    running.stop()


def _body(external_id: str, **fields: Any) -> bytes:
    document = {
        "external_id": external_id,
        "kind": "comment",
        "direction": "inbound",
        "thread_id": f"t-{external_id}",
        "author": {"id": "u-1", "name": "Dana"},
        "text": "Where is my order?",
        "created_at": datetime.now(UTC).isoformat(),
        **fields,
    }
    return json.dumps(document).encode()


def _meta_comment(comment_id: str, verb: str, text: str) -> bytes:
    value = {
        "item": "comment", "verb": verb, "post_id": f"{PAGE}_1", "comment_id": comment_id,
        "from": {"id": "7200000000000042", "name": "Dana"}, "message": text,
        "created_time": int(datetime.now(UTC).timestamp()),
    }  # fmt: skip
    return json.dumps(
        {"object": "page", "entry": [{"id": PAGE, "time": 1, "changes": [{"field": "feed", "value": value}]}]}
    ).encode()


def _meta_headers(body: bytes) -> dict[str, str]:
    digest = hmac.new(META_SECRET.encode(), body, hashlib.sha256).hexdigest()
    return {"Content-Type": "application/json", "X-Hub-Signature-256": f"sha256={digest}"}


async def _settled(nats_url: str) -> None:
    """Wait until the router has taken and settled everything ingest stored."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()

        async def idle() -> bool:
            consumers = await js.consumers_info(subjects.INTERACTIONS_STREAM)
            return bool(consumers) and all(c.num_pending == 0 and c.num_ack_pending == 0 for c in consumers)

        await eventually(idle, timeout=120, interval=0.2, what="the router to settle every interaction")
    finally:
        await nc.close()


async def test_values_at_the_limits_of_the_store_are_stored(stack: Stack, nats_server: EmbeddedNats) -> None:
    """What platforms really send: 64-bit numbers, Meta's CRC-32 edit versions (half of them
    above 2^31), a NUL in a text, a message from long ago; and what no clock explains refused."""
    text_over_2_31 = next(t for t in (f"edited {n}" for n in range(100)) if zlib.crc32(t.encode()) > 2**31)
    accepted: list[str] = []
    refused: list[tuple[int, Any]] = []
    async with httpx.AsyncClient(timeout=30) as client:

        async def generic(body: bytes) -> None:
            response = await client.post(
                stack.url("ingest", "/webhooks/generic/acme-fb"),
                content=body,
                headers={"Content-Type": "application/json", "X-Signature-256": sign(SECRET, body)},
            )
            if response.status_code == 202:
                accepted.append(response.json()["interaction_id"])
            else:
                refused.append((response.status_code, response.json()))

        await generic(_body("v-edit", edit_version=2**32 + 5))
        await generic(_body("v-edit-max", edit_version=INT64_MAX))
        await generic(_body("v-followers", author={"id": "u-2", "followers": INT64_MAX, "verified": True}))
        await generic(_body("v-nul", text="before\x00after"))
        await generic(_body("v-ancient", created_at="0001-01-01T00:00:00Z"))
        await generic(_body("v-long", text="\x01" * 65_536))
        await generic(_body("v-ahead", created_at=(datetime.now(UTC) + timedelta(hours=2)).isoformat()))
        await generic(_body("v-too-big", edit_version=2**63))
        for verb, text in (("add", "first words"), ("edited", text_over_2_31)):
            body = _meta_comment(f"{PAGE}_77", verb, text)
            response = await client.post(
                stack.url("ingest", "/webhooks/meta"), content=body, headers=_meta_headers(body)
            )
            assert response.status_code == 200 and response.json()["accepted"] == 1, response.text
    assert [status for status, _ in refused] == [400, 400], refused
    await _settled(nats_server.url)
    rows = await stack.query(
        select(INTERACTIONS.c.external_id, INTERACTIONS.c.edit_version, INTERACTIONS.c.text)
    )
    stored = {(row.external_id, row.edit_version): row.text for row in rows}
    assert stored[("v-edit", 2**32 + 5)] and stored[("v-edit-max", INT64_MAX)]
    assert stored[("v-nul", 0)] == "beforeafter"
    assert (f"{PAGE}_77", zlib.crc32(text_over_2_31.encode())) in stored
    assert ("v-ancient", 0) in stored and ("v-followers", 0) in stored and ("v-long", 0) in stored
    followers = await stack.query(
        select(CONVERSATIONS.c.author_followers).where(CONVERSATIONS.c.author_id == "u-2")
    )
    assert [row.author_followers for row in followers] == [INT64_MAX]
    ancient = await stack.query(
        select(CONVERSATIONS.c.due_at, CONVERSATIONS.c.owner_id).where(
            CONVERSATIONS.c.thread_id == "t-v-ancient"
        )
    )
    assert [(row.due_at, row.owner_id) for row in ancient] == [(None, "maria")]  # assigned, never alerted
    assert await stored_on(nats_server.url, "sh.dlq.>") == []
    assert len(accepted) + 2 == len(stored)  # the comment and its edit came through Meta


def test_fuzzed_deliveries_through_the_stack_are_stored_or_dead_lettered(
    stack: Stack, nats_server: EmbeddedNats
) -> None:
    """About 1,000 fuzzed deliveries, signed: every interaction ingest accepts is in the database
    or on a dead letter, with its error; every entry it rejects is on ingest's dead letter."""
    base = json.loads(_body("fuzz"))
    fixture = json.loads((FIXTURES / "signed_requests.json").read_text())["meta_page_comment"]["body"]
    accepted: set[str] = set()
    entries = {"accepted": 0, "rejected": 0}
    statuses: dict[int, int] = {}
    sent: set[bytes] = set()
    meta_ids: set[str] = set()
    client = httpx.Client(timeout=30)

    # valid deliveries with the hardest values a store meets, beside mutated and hostile ones
    hard = st.builds(
        lambda text, name, version, followers, days: _body(
            "fuzz", text=text, edit_version=version,
            author={"id": "u-3", "name": name, "followers": followers},
            created_at=(datetime.now(UTC) - timedelta(days=days)).isoformat(),
        ),
        st.text(max_size=300), st.text(max_size=300), st.integers(0, INT64_MAX),
        st.integers(0, INT64_MAX), st.integers(0, 700_000),
    )  # fmt: skip

    @settings(max_examples=500, deadline=None, database=None)
    @given(body=st.one_of(hard, mutated(base), raw_bodies()))
    def generic(body: bytes) -> None:
        unique = uuid.uuid4().hex[:12]
        body = body.replace(b'"fuzz"', f'"fuzz-{unique}"'.encode()).replace(
            b'"t-fuzz"', f'"t-{unique}"'.encode()
        )
        response = client.post(
            stack.url("ingest", "/webhooks/generic/acme-fb"),
            content=body,
            headers={"Content-Type": "application/json", "X-Signature-256": sign(SECRET, body)},
        )
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        assert response.status_code in (202, 400, 413), response.text
        if response.status_code == 202:
            accepted.add(response.json()["interaction_id"])

    @settings(max_examples=500, deadline=None, database=None)
    @given(body=st.one_of(mutated(json.loads(fixture))))
    def platform(body: bytes) -> None:
        unique = str(uuid.uuid4().int)[:15]
        body = body.replace(b"800000000000001", unique.encode())  # a new comment each time
        response = client.post(
            stack.url("ingest", "/webhooks/meta"), content=body, headers=_meta_headers(body)
        )
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        assert response.status_code in (200, 400), response.text
        if body in sent:  # the same delivery again is a platform's retry: nothing is kept twice
            return
        sent.add(body)
        if response.status_code == 200:
            entries["accepted"] += response.json()["accepted"]
            entries["rejected"] += len(response.json()["rejected"])
            # which interactions those are (the same comment may come in several deliveries)
            events, _, _ = to_events(
                meta.parse(body).drafts,
                lambda draft: ("acme", "acme-page") if draft.platform_account_id == PAGE else None,
                received_at=datetime.now(UTC),
                correlation_id="",
            )
            assert len(events) == response.json()["accepted"]
            meta_ids.update(e.interaction_id for e in events if isinstance(e, InteractionReceived))

    try:
        generic()
        platform()
    finally:
        client.close()
    asyncio.run(_settled(nats_server.url))
    kept = asyncio.run(stored_on(nats_server.url, "sh.dlq.>"))
    by_router = [m for m in kept if m.subject.startswith("sh.dlq.sh_interactions.")]
    by_ingest = [m for m in kept if m.subject == "sh.dlq.ingest.meta"]
    assert all((m.headers or {}).get("Sh-Error") for m in kept)
    rows = asyncio.run(stack.query(select(INTERACTIONS.c.id, INTERACTIONS.c.account_id)))
    generic_stored = {row.id for row in rows if row.account_id == "acme-fb"}
    dead_ids = {json.loads(m.data).get("interaction_id") for m in by_router}
    assert accepted == (generic_stored & accepted) | (dead_ids & accepted), (
        "an accepted interaction is nowhere"
    )
    meta_stored = {row.id for row in rows if row.account_id == "acme-page"}
    assert meta_ids <= meta_stored | dead_ids, "an accepted platform entry is nowhere"
    assert len(by_ingest) == entries["rejected"]
    print(f"statuses {dict(sorted(statuses.items()))}; generic accepted {len(accepted)}; "
          f"meta entries accepted {entries['accepted']}, rejected {entries['rejected']}; "
          f"router dead letters {len(by_router)}")  # fmt: skip
