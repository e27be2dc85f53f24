"""Routing end to end, driven only through webhooks and the `stayhuman` commands: topics pick
the team, capacity sends the rest to the queue, a pause or a status change moves work at once
(no sweep), a brand reply (or a person marking one sent elsewhere) stops the clock and the
router's own timer resolves a quiet conversation."""

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from shared.db.core import CONVERSATIONS, PEOPLE
from stayhuman.natsserver import EmbeddedNats
from tests.e2e.stack import Stack, post_webhook
from tests.helpers import eventually, generic_body, unique

pytestmark = pytest.mark.e2e

SECRET = "routing-secret-0123456789"

CONFIG = f"""
people:
  - {{id: maria, name: Maria, email: maria@example.com, capacity: 2, languages: [en, es]}}
  - {{id: li, name: Li, email: li@example.com, capacity: 2}}
  - {{id: sam, name: Sam, email: sam@example.com, capacity: 5, skills: [billing]}}
tenants:
  - id: acme
    name: Acme
    auto_resolve_after: 3s
    sla_policies:
      - {{name: standard, first_response: 30m, next_response: 1h}}
    teams:
      - {{id: care, name: Care, sla_policy: standard, members: [maria, li]}}
      - {{id: billing, name: Billing, sla_policy: standard, members: [sam]}}
    topics:
      - name: refunds
        match: {{keywords: [refund, money back]}}
        team: billing
        priority: high
        skills: [billing]
      - {{name: spam, match: {{patterns: ['https?://\\S+\\.xyz']}}, no_sla: true}}
      - {{name: general, default: true, team: care}}
    accounts:
      - {{id: acme-fb, platform: facebook, handle: Acme, team: care, webhook_secret: {SECRET}}}
"""


async def conversation(stack: Stack, thread: str) -> Any:
    found = await stack.query(select(CONVERSATIONS).where(CONVERSATIONS.c.thread_id == thread))
    return found[0] if found else None


async def loads(stack: Stack) -> dict[str, int]:
    return {row.id: row.load for row in await stack.query(select(PEOPLE.c.id, PEOPLE.c.load))}


@pytest.fixture
def stack(tmp_path: Path, nats_server: EmbeddedNats, empty_database_url: str) -> Any:
    """On SQLite (one router) and on PostgreSQL (three routers sharing the work)."""
    postgres = not empty_database_url.startswith("sqlite")
    stack = Stack.configured(
        tmp_path / "stack", CONFIG, nats=nats_server, STAYHUMAN_DATABASE_URL=empty_database_url
    ).start(*(["--routers", "3"] if postgres else []))
    yield stack
    stack.stop()


async def post(
    stack: Stack, thread: str, text: str, *, direction: str = "inbound", author: str = "a1"
) -> None:
    body = json.loads(generic_body(unique("m"), thread_id=thread, text=text, direction=direction))
    body["author"] = {"id": author, "name": f"Author {author}", "handle": f"@{author}"}
    async with httpx.AsyncClient() as client:
        response = await post_webhook(client, stack, "acme-fb", SECRET, json.dumps(body).encode())
    assert response.status_code == 202, response.text


async def status_is(stack: Stack, **wanted: str) -> None:
    """Commands are applied asynchronously: wait until the router has applied these."""

    async def check() -> bool:
        found = {row.id: row.status for row in await stack.query(select(PEOPLE.c.id, PEOPLE.c.status))}
        return all(found.get(person) == status for person, status in wanted.items())

    await eventually(check, what=f"status {wanted}", timeout=20)


async def settled(stack: Stack, thread: str, **wanted: Any) -> Any:
    async def check() -> Any:
        row = await conversation(stack, thread)
        return row if row is not None and all(getattr(row, k) == v for k, v in wanted.items()) else None

    return await eventually(check, what=f"{thread} with {wanted}", timeout=20)


async def test_topics_capacity_queue_and_commands(stack: Stack) -> None:
    # a refund question goes to billing, to the one person with the skill, at high priority
    await post(stack, "t-refund", "I want my money  back please", author="r1")
    refund = await settled(stack, "t-refund", owner_id="sam")
    assert refund.topic == "refunds" and refund.priority == "high"
    assert "skills billing" in refund.assignment_reason

    # spam needs no answer: recorded, resolved, nobody's load
    await post(stack, "t-spam", "cheap followers at http://buy.xyz", author="s1")
    spam = await settled(stack, "t-spam", state="resolved")
    assert spam.owner_id is None and spam.due_at is None

    # care: two people with room for two each; the fifth conversation waits in the queue
    for n in range(5):
        await post(stack, f"t-care-{n}", "Where is my order?", author=f"c{n}")
    care = [await settled(stack, f"t-care-{n}", topic="general") for n in range(5)]
    owners = [c.owner_id for c in care]
    assert sorted(o for o in owners if o) == ["li", "li", "maria", "maria"]
    queued = care[owners.index(None)]
    assert "queue" in queued.assignment_reason and queued.queued_at is not None
    assert (await loads(stack))["maria"] == 2 and (await loads(stack))["li"] == 2

    # maria pauses one of hers (waiting on the customer): her capacity frees and the
    # queued conversation is hers at once
    paused = next(c for c in care if c.owner_id == "maria")
    done = stack.cli("pause", paused.id, "--reason", "asked for the order number")
    assert done.returncode == 0, done.stderr
    await settled(stack, paused.thread_id, state="paused", due_at=None)
    taken = await settled(stack, queued.thread_id, owner_id="maria")
    assert "from the queue" in taken.assignment_reason
    assert (await loads(stack))["maria"] == 2

    # li goes offline: what she owns is handed over; maria is full, so it queues
    assert stack.cli("status", "li", "offline").returncode == 0
    for c in care:
        if c.owner_id == "li":
            moved = await settled(stack, c.thread_id, owner_id=None)
            assert "li went offline" in moved.assignment_reason
    assert (await loads(stack))["li"] == 0

    # li is back: the queue drains to her
    assert stack.cli("status", "li", "available").returncode == 0
    for c in care:
        if c.owner_id == "li":
            await settled(stack, c.thread_id, owner_id="li")

    # the customer answers the paused one: it is open again with a fresh next-response clock;
    # maria is full, so the clock runs while it waits for someone
    await post(stack, paused.thread_id, "It is 4711", author=paused.author_id)
    reopened = await settled(stack, paused.thread_id, state="open", deadline_kind="next_response")
    assert reopened.due_at is not None

    # a reassignment to billing by an operator, and a claim by sam
    assert stack.cli("reassign", reopened.id, "--team", "billing").returncode == 0
    await settled(stack, reopened.thread_id, owner_id="sam")

    # the brand answers the refund: responded, continuity recorded, and after the tenant's
    # three quiet seconds the router's own timer resolves it
    await post(stack, "t-refund", "Refund is on its way", direction="outbound", author="acme")
    await settled(stack, "t-refund", state="responded")
    await settled(stack, "t-refund", state="resolved")
    assert (await loads(stack))["sam"] == 1  # only the reassigned one is left open

    # the same author writes again in a new thread: sam answered them last, so sam gets it
    await post(stack, "t-refund-2", "Got it, thanks! One more refund question", author="r1")
    again = await settled(stack, "t-refund-2", owner_id="sam")
    assert "continuity" in again.assignment_reason

    # bad commands are refused with a clear message and nothing sent
    bad = stack.cli("claim", "0" * 32, "--person", "sam", check=False)
    assert bad.returncode == 2 and "conversation" in bad.stderr

    # with --wait the command line waits for what the router did with the command: applied,
    # or rejected with the reason a person reads
    resolved = await conversation(stack, "t-refund")
    refused = stack.cli("claim", resolved.id, "--person", "sam", "--wait", "30", check=False)
    assert refused.returncode == 2, refused.stderr
    assert refused.stdout.splitlines()[-1] == "rejected (closed): the conversation is resolved"
    done = stack.cli("pause", reopened.id, "--wait", "30", "--json")
    shown = json.loads(done.stdout)
    assert shown["outcome"]["type"] == "command.applied"
    assert shown["outcome"]["command_id"] == shown["command"]["command_id"]
    again = stack.cli("pause", reopened.id, "--wait", "30", "--command-id", shown["command"]["command_id"])
    assert "a repeat: stored once" in again.stdout and again.stdout.splitlines()[-1].startswith("applied")

    # li answered one of hers by phone: maria marks it responded, the clock stops as for a reply
    # in the thread (and the tenant's quiet time resolves it), li is credited; a second mark
    # finds nothing waiting
    rows = [await conversation(stack, f"t-care-{n}") for n in range(5)]
    called = next(c for c in rows if c.owner_id == "li" and c.state == "open")
    marked = stack.cli("mark-responded", called.id, "--by", "maria", "--note", "called them", "--wait", "30")
    assert marked.stdout.splitlines()[-1] == (
        f"applied: {called.id[:8]}… marked responded by maria (answered by li): called them"
    )
    answered = await conversation(stack, called.thread_id)
    assert answered.responded_at is not None and answered.due_at is None
    assert answered.state in ("responded", "resolved") and answered.owner_id == "li"
    twice = stack.cli("mark-responded", called.id, "--wait", "30", check=False)
    assert twice.returncode == 2
    assert twice.stdout.splitlines()[-1] in (
        "rejected (already_done): nothing is waiting for an answer",
        "rejected (closed): the conversation is resolved",  # the quiet time passed in between
    )


async def test_an_absence_starts_on_a_router_timer_and_hands_over_to_the_substitute(
    tmp_path: Path, nats_server: EmbeddedNats
) -> None:
    """Shifts and absences are JetStream schedules the router arms for itself, not a sweep:
    when maria's absence begins, what would fall due while she is away goes to her substitute.
    The absence arrives by `apply` while the services run: no restart."""
    config = """
people:
  - {{id: maria, name: Maria, email: maria@example.com{absence}}}
  - {{id: li, name: Li, email: li@example.com}}
  - {{id: sam, name: Sam, email: sam@example.com}}
tenants:
  - id: acme
    name: Acme
    sla_policies: [{{name: quick, first_response: 40s}}, {{name: slow, first_response: 2h}}]
    teams: [{{id: care, name: Care, sla_policy: quick, members: [maria, li, sam]}}]
    topics:
      - {{name: later, match: {{keywords: [whenever]}}, team: care, sla_policy: slow}}
      - {{name: general, default: true, team: care}}
    accounts: [{{id: acme-fb, platform: facebook, handle: Acme, team: care, webhook_secret: {secret}}}]
"""
    stack = Stack.configured(tmp_path / "stack", config.format(absence="", secret=SECRET), nats=nats_server)
    stack.start()
    try:
        # li and sam are away, so maria gets both: one due in 40 s (inside her coming absence),
        # one due in 2 h (after it)
        assert stack.cli("status", "li", "away").returncode == 0
        assert stack.cli("status", "sam", "away").returncode == 0
        await status_is(stack, li="away", sam="away")
        await post(stack, "t-soon", "Where is my order?", author="x1")
        await post(stack, "t-later", "whenever you have time", author="x2")
        await settled(stack, "t-soon", owner_id="maria")
        await settled(stack, "t-later", owner_id="maria")
        assert stack.cli("status", "li", "available").returncode == 0
        await status_is(stack, li="available")

        start = datetime.now(UTC) + timedelta(seconds=10)
        end = start + timedelta(minutes=5)
        absence = (
            f', out_of_office: {{from: "{start.isoformat()}", until: "{end.isoformat()}", substitute: li}}'
        )
        (stack.workdir / "config.yaml").write_text(config.format(absence=absence, secret=SECRET))
        applied = stack.cli("apply", "-f", str(stack.workdir / "config.yaml"))
        assert "queued 1 command" in applied.stdout, applied.stdout

        moved = await settled(stack, "t-soon", owner_id="li")
        assert datetime.now(UTC) >= start  # not before her absence began
        assert "maria is out of office" in moved.assignment_reason, moved.assignment_reason
        assert "li substitutes" in moved.assignment_reason, moved.assignment_reason
        later = await conversation(stack, "t-later")
        assert later.owner_id == "maria"  # due after she is back: hers to answer
    finally:
        stack.stop()
