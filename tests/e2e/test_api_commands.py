"""The inbox API acting on the whole stack (`stayhuman up`: NATS, ingest, router, notify and the
api as separate processes): a team lead signs in with a real password, asks for a claim the
router refuses because the agent is full, and hears why within two seconds, in the answer, on
the event stream, at the command's URL and in the conversation's timeline; a pause is applied;
and no password, session cookie or API token reaches the services' logs."""

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from shared.db.core import CONVERSATIONS
from stayhuman.invite import set_password
from stayhuman.natsserver import EmbeddedNats
from tests.e2e.stack import Stack, post_webhook
from tests.helpers import eventually, generic_body, unique

pytestmark = pytest.mark.e2e

SECRET = "api-commands-secret-0123456789"
ANSWER_WITHIN = 2.0  # seconds: the product's promise for an action's outcome

# lena leads care and takes no conversations herself; kai is care's one agent, with room for one;
# theo is acme's admin (the one who may make API tokens).
CONFIG = f"""
people:
  - {{id: lena, name: Lena Lead, email: lena@example.com}}
  - {{id: kai, name: Kai, email: kai@example.com, capacity: 1}}
  - {{id: theo, name: Theo Admin, email: theo@example.com}}
tenants:
  - id: acme
    name: Acme
    admins: [theo]
    sla_policies: [{{name: standard, first_response: 30m}}]
    teams: [{{id: care, name: Care, sla_policy: standard, lead: lena, members: [kai]}}]
    accounts: [{{id: acme-fb, platform: facebook, handle: Acme, team: care, webhook_secret: {SECRET}}}]
"""


@pytest.fixture
def stack(tmp_path: Path, nats_server: EmbeddedNats, empty_database_url: str) -> Any:
    stack = Stack.configured(
        tmp_path / "stack", CONFIG, nats=nats_server, STAYHUMAN_DATABASE_URL=empty_database_url
    ).start()
    yield stack
    stack.stop()


async def conversation_of(stack: Stack, thread: str, **wanted: Any) -> Any:
    """The thread's conversation once the router has it as `wanted`."""

    async def check() -> Any:
        found = await stack.query(select(CONVERSATIONS).where(CONVERSATIONS.c.thread_id == thread))
        row = found[0] if found else None
        return row if row is not None and all(getattr(row, k) == v for k, v in wanted.items()) else None

    return await eventually(check, what=f"{thread} with {wanted}", timeout=20)


async def webhook(client: httpx.AsyncClient, stack: Stack, thread: str) -> None:
    body = generic_body(unique("m"), thread_id=thread, text="Where is my order?")
    answer = await post_webhook(client, stack, "acme-fb", SECRET, body)
    assert answer.status_code == 202, answer.text


async def sign_in(client: httpx.AsyncClient, email: str, password: str) -> str:
    """Sign in; the client keeps the session cookie. Returns the CSRF token."""
    answer = await client.post("/api/session", json={"email": email, "password": password})
    assert answer.status_code == 200, answer.text
    token: str = answer.json()["csrf_token"]
    assert token and client.cookies.get("sh_session")
    return token


async def read_stream(client: httpx.AsyncClient, events: list[dict[str, Any]], opened: asyncio.Event) -> None:
    """Server-Sent Events of /api/stream, each kept as {event, id, data} (data parsed)."""
    async with client.stream("GET", "/api/stream", params={"max_seconds": 60}) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        current: dict[str, Any] = {}
        async for line in response.aiter_lines():
            opened.set()
            if line == "":
                if "data" in current:
                    events.append({**current, "data": json.loads(current["data"])})
                current = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(": ")
                current[name] = value


async def test_a_refused_claim_is_answered_in_time_everywhere_and_no_secret_is_logged(stack: Stack) -> None:
    passwords = {person: f"{person}-{unique('pw')}-long enough" for person in ("lena", "kai", "theo")}
    for person, password in passwords.items():
        await set_password(stack.database_url, person, password)

    # kai gets the first conversation and is full; the second waits in care's queue
    mine, waiting = unique("t-kai"), unique("t-queue")
    async with httpx.AsyncClient(timeout=10) as hooks:
        await webhook(hooks, stack, mine)
        kais = await conversation_of(stack, mine, owner_id="kai")
        await webhook(hooks, stack, waiting)
    queued = await conversation_of(stack, waiting, owner_id=None, team_id=kais.team_id)
    assert queued.queued_at is not None, queued.assignment_reason

    api = stack.url("api", "")
    async with (
        httpx.AsyncClient(base_url=api, timeout=10) as lead,
        httpx.AsyncClient(base_url=api, timeout=10) as admin,
    ):
        csrf = await sign_in(lead, "lena@example.com", passwords["lena"])
        cookie = lead.cookies["sh_session"]
        events: list[dict[str, Any]] = []
        opened = asyncio.Event()
        reader = asyncio.create_task(read_stream(lead, events, opened))
        try:
            waiter = asyncio.create_task(opened.wait())
            await asyncio.wait({reader, waiter}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            assert opened.is_set(), reader.result() if reader.done() else "the stream did not open"

            # the lead gives the waiting conversation to kai: the router refuses, kai is full
            started = time.monotonic()
            refused = await lead.post(
                f"/api/conversations/{queued.id}/claim",
                params={"wait": ANSWER_WITHIN},
                json={"person": "kai"},
                headers={"X-CSRF-Token": csrf},
            )
            elapsed = time.monotonic() - started
            assert refused.status_code == 200, refused.text
            outcome = refused.json()
            assert (outcome["status"], outcome["code"]) == ("rejected", "at_capacity"), outcome
            assert "kai" in outcome["reason"] and "capacity" in outcome["reason"], outcome
            assert outcome["conversation_id"] == queued.id and outcome["issued_by"] == "lena"
            assert elapsed < ANSWER_WITHIN, f"the outcome took {elapsed:.3f}s"
            command_id = outcome["command_id"]

            # the stream tells the same outcome
            async def streamed() -> dict[str, Any] | None:
                return next(
                    (
                        e["data"]
                        for e in events
                        if e.get("event") == "outcome" and e["data"]["command_id"] == command_id
                    ),
                    None,
                )

            told = await eventually(streamed, timeout=5, what="the outcome on the stream")
            assert told is not None
            assert (told["status"], told["code"], told["reason"]) == (
                "rejected",
                "at_capacity",
                outcome["reason"],
            )

            # and so does the command's URL, and the conversation's timeline, naming the lead
            kept = await lead.get(f"/api/commands/{command_id}")
            assert kept.status_code == 200, kept.text
            assert kept.json() == outcome
            detail = await lead.get(f"/api/conversations/{queued.id}")
            assert detail.status_code == 200, detail.text
            rejected = [e for e in detail.json()["timeline"] if e["kind"] == "command.rejected"]
            assert [(e["actor"], e["detail"].get("command_id")) for e in rejected] == [
                ("lena", command_id)
            ], rejected
            assert "kai is at capacity" in rejected[0]["summary"]
            assert detail.json()["conversation"]["owner"] is None

            # an action the router takes: the lead pauses kai's conversation
            paused = await lead.post(
                f"/api/conversations/{kais.id}/pause",
                params={"wait": ANSWER_WITHIN},
                json={"reason": "waiting for the order number"},
                headers={"X-CSRF-Token": csrf},
            )
            assert paused.status_code == 200, paused.text
            assert paused.json()["status"] == "applied", paused.json()
            after = await lead.get(f"/api/conversations/{kais.id}")
            assert after.json()["conversation"]["state"] == "paused"

            # the admin makes an API token, which then works
            admin_csrf = await sign_in(admin, "theo@example.com", passwords["theo"])
            made = await admin.post(
                "/api/tenants/acme/tokens",
                json={"name": "importer"},
                headers={"X-CSRF-Token": admin_csrf},
            )
            assert made.status_code == 201, made.text
            token = made.json()["token"]
            async with httpx.AsyncClient(base_url=api, timeout=10) as machine:
                listed = await machine.get("/api/conversations", headers={"Authorization": f"Bearer {token}"})
                assert listed.status_code == 200, listed.text
                assert {c["id"] for c in listed.json()["items"]} == {kais.id, queued.id}
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        secrets = {
            "lead's cookie": cookie,
            "admin's cookie": admin.cookies["sh_session"],
            "API token": token,
            **{f"{person}'s password": password for person, password in passwords.items()},
        }

    stack.stop()  # every service has written all it will
    logs = stack.logs()
    assert '"service": "api"' in logs and '"msg": "API token made"' in logs  # the api's log is here
    leaked = [name for name, secret in secrets.items() if secret in logs]
    assert leaked == [], f"{leaked} in {stack.log_path}"
