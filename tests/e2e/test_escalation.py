"""The whole alert chain on real NATS with second-scale timings: a warning and the breach to
the owner, two escalation steps (the team lead, the tenant's manager), then the manager's
acknowledge link, followed over HTTP, stops the third step. Every alert arrives 0 to 2 s after
its time and never before; the test prints each one's lateness."""

import asyncio
import re
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from services.notify.acks import ack_token
from shared.db.core import ALERTS, CONVERSATIONS, DEADLINES
from shared.secrets import SECRET_KEY_FILE, LinkSigner
from stayhuman.natsserver import EmbeddedNats
from tests.e2e.stack import Stack, post_webhook, smtp_env
from tests.helpers import eventually, generic_body, unique
from tests.smtp import Received, SmtpServer

pytestmark = pytest.mark.e2e

SECRET = "escalation-secret-0123456789"
# Five seconds between alerts: an action taken a second after one alert lands well before the
# next (a `stayhuman` command takes 2 to 3.5 s from start to stored when two run on a busy machine).
WARN, DUE = 6, 11  # seconds after the message
STEPS = (5, 10, 15)  # escalation steps, seconds after the breach

CONFIG = f"""
people:
  - {{id: maria, name: Maria, email: maria@example.com}}
  - {{id: lena, name: Lena Lead, email: lena@example.com}}
  - {{id: bo, name: Bo Boss, email: bo@example.com}}
  - {{id: sam, name: Sam, email: sam@example.com}}
tenants:
  - id: acme
    name: Acme
    manager: bo
    escalation:
      - {{after: {STEPS[0]}s, notify: lead}}
      - {{after: {STEPS[1]}s, notify: manager}}
      - {{after: {STEPS[2]}s, notify: person, person: sam}}
    sla_policies: [{{name: quick, first_response: {DUE}s, warn_before: {DUE - WARN}s}}]
    teams: [{{id: care, name: Care, sla_policy: quick, lead: lena, members: [maria]}}]
    accounts: [{{id: acme-fb, platform: facebook, handle: Acme, team: care, webhook_secret: {SECRET}}}]
"""


@pytest.fixture
def smtp() -> Any:
    server = SmtpServer().start()
    yield server
    server.stop()


async def test_warning_breach_two_escalations_then_an_acknowledgement(
    tmp_path: Path, nats_server: EmbeddedNats, smtp: SmtpServer
) -> None:
    stack = Stack.configured(
        tmp_path / "stack",
        CONFIG,
        nats=nats_server,
        **smtp_env(smtp.port),
    ).start()
    try:
        thread = unique("thread")
        async with httpx.AsyncClient() as client:
            body = generic_body(unique("m"), thread_id=thread, text="My order never came")
            assert (await post_webhook(client, stack, "acme-fb", SECRET, body)).status_code == 202

        async def conversation() -> Any:
            found = await stack.query(select(CONVERSATIONS).where(CONVERSATIONS.c.thread_id == thread))
            return found[0] if found and found[0].due_at else None

        row = await eventually(conversation, what="the conversation with its deadline")
        due = row.due_at
        planned = {
            "warning": row.warn_at,
            "breach": due,
            **{f"escalation-{n}": due + timedelta(seconds=after) for n, after in enumerate(STEPS, start=1)},
        }
        expected_to = {
            "warning": "maria@example.com",
            "breach": "maria@example.com",
            "escalation-1": "lena@example.com",
            "escalation-2": "bo@example.com",
        }

        def alerts() -> dict[str, Received]:
            return {
                str(m.message["X-StayHuman-Alert"]): m
                for m in smtp.messages()
                if str(m.message["X-StayHuman-Conversation"]) == row.id
            }

        async def step_arrived(step: str) -> Received | None:
            return alerts().get(step)

        for step in expected_to:
            await eventually(lambda step=step: step_arrived(step), timeout=30, what=f"the {step} alert")
        received = alerts()
        print()
        for step, mail in received.items():
            lateness = mail.at - planned[step].timestamp()
            print(f"{step:<13} to {mail.recipients[0]:<18} lateness {lateness:+.3f} s")
            assert mail.recipients == [expected_to[step]], step
            assert 0 <= lateness <= 2, f"{step} arrived {lateness:+.3f} s from its time"

        # each alert is multipart: text and HTML, naming the tenant, platform, author and text
        manager_mail = received["escalation-2"].message
        assert manager_mail.get_body(preferencelist=("html",)) is not None
        text = received["escalation-2"].body
        assert (
            "Acme" in text and "Facebook" in text and "Dana Reyes" in text and "My order never came" in text
        )
        assert "escalation-2" in text and "Maria" in text  # who owns it, and why the manager is told

        # the manager follows the acknowledge link: a page with a button, and the button
        ack_url = re.search(r"I'm on it \(stops the escalation\): (\S+)", text)
        assert ack_url is not None, text
        async with httpx.AsyncClient() as client:
            page = await client.get(ack_url.group(1))
            assert page.status_code == 200 and "<form method='post'" in page.text
            assert (await stack.query(select(DEADLINES.c.acknowledged_at)))[0].acknowledged_at is None
            done = await client.post(ack_url.group(1))
            assert done.status_code == 200 and "Acknowledged" in done.text
            again = await client.post(ack_url.group(1))
            assert again.status_code == 200  # twice is the same acknowledgement
            forged = await client.post(ack_url.group(1)[:-4] + "AAAA")
            assert forged.status_code == 404

        # the third step (sam) would be due at breach + 9 s: it never comes
        await asyncio.sleep(max(0.0, planned["escalation-3"].timestamp() + 3 - time.time()))
        assert "escalation-3" not in alerts()
        log = {
            r.step: r.status
            for r in await stack.query(select(ALERTS).where(ALERTS.c.conversation_id == row.id))
        }
        assert log == {
            "warning": "sent",
            "breach": "sent",
            "escalation-1": "sent",
            "escalation-2": "sent",
            "ack": "acknowledged",
        }
        deadline = (await stack.query(select(DEADLINES).where(DEADLINES.c.conversation_id == row.id)))[0]
        assert deadline.acknowledged_by == "bo"
    finally:
        stack.stop()


MOMENTS = {  # seconds after the messages: each a moment between two alerts
    "before warning": WARN - 4.0,
    "after warning": WARN + 1.0,
    "after breach": DUE + 1.0,
    "after step 1": DUE + STEPS[0] + 1.0,
}
TIMELINE = ["warning", "breach", "escalation-1", "escalation-2", "escalation-3"]
ACTIONS = ("reply", "pause", "acknowledge", "resolve")


def expected_alerts(action: str, moment: str) -> list[str]:
    """What a conversation still gets when `action` happens at `moment`."""
    before = TIMELINE[: list(MOMENTS).index(moment)]
    if action == "acknowledge":  # the owner's own clock runs on: only the escalation stops
        return [step for step in TIMELINE if step in before or not step.startswith("escalation")]
    return before


async def test_what_a_reply_pause_acknowledgement_or_resolution_silences(
    tmp_path: Path, nats_server: EmbeddedNats, smtp: SmtpServer
) -> None:
    """For each action at each moment, the later alerts of that conversation stop as they
    should, and the same owner's other conversation still gets every alert."""
    stack = Stack.configured(
        tmp_path / "stack",
        CONFIG,
        nats=nats_server,
        **smtp_env(smtp.port),
        STAYHUMAN_LOG_LEVEL="warning",
        STAYHUMAN_ALERT_GROUPING="false",  # seventeen alerts to one owner at once: each counted
    ).start()
    try:
        # the links of the installation's key: the one `up` made in its state folder
        signer = LinkSigner.of_secret_key((stack.state_dir / SECRET_KEY_FILE).read_text().strip())
        threads = {(action, moment): unique("t") for action in ACTIONS for moment in MOMENTS}
        control = unique("control")
        started = time.time()
        async with httpx.AsyncClient() as client:
            for thread in [control, *threads.values()]:
                body = generic_body(unique("m"), thread_id=thread, text="Hello?")
                assert (await post_webhook(client, stack, "acme-fb", SECRET, body)).status_code == 202

        async def all_armed() -> dict[str, Any] | None:
            found = {r.thread_id: r for r in await stack.query(select(CONVERSATIONS))}
            return (
                found
                if all(found.get(t) is not None and found[t].due_at for t in [control, *threads.values()])
                else None
            )

        conversations = await eventually(all_armed, what="every conversation with its deadline")
        assert time.time() - started < MOMENTS["before warning"], "too slow to act before the warning"

        async def act(action: str, thread: str) -> None:
            row = conversations[thread]
            if action == "reply":
                body = generic_body(unique("r"), thread_id=thread, direction="outbound", text="On it!")
                async with httpx.AsyncClient() as client:
                    assert (await post_webhook(client, stack, "acme-fb", SECRET, body)).status_code == 202
            elif action == "acknowledge":
                version = (
                    await stack.query(
                        select(DEADLINES.c.version).where(DEADLINES.c.conversation_id == row.id)
                    )
                )[0].version
                token = ack_token(signer, conversation_id=row.id, version=version, who="maria")
                async with httpx.AsyncClient() as client:
                    done = await client.post(stack.url("notify", f"/ack/{token}"))
                    assert done.status_code == 200, done.text
            else:
                done = await asyncio.to_thread(stack.cli, action, row.id)
                assert done.returncode == 0, done.stderr

        for moment, after in MOMENTS.items():
            await asyncio.sleep(max(0.0, conversations[control].opened_at.timestamp() + after - time.time()))
            await asyncio.gather(*(act(action, threads[(action, moment)]) for action in ACTIONS))

        # everything that could still come has come two seconds after the last step's time
        last = conversations[control].due_at.timestamp() + STEPS[-1] + 2.5
        await asyncio.sleep(max(0.0, last - time.time()))

        def got(thread: str) -> list[str]:
            cid = conversations[thread].id
            steps = {
                str(m.message["X-StayHuman-Alert"])
                for m in smtp.messages()
                if str(m.message["X-StayHuman-Conversation"]) == cid
            }
            return [step for step in TIMELINE if step in steps]

        table = {key: got(thread) for key, thread in threads.items()}
        print()
        for (action, moment), steps in table.items():
            print(f"{action:<12} {moment:<15} -> {', '.join(steps) or '(nothing)'}")
        assert got(control) == TIMELINE  # the same owner's other conversation alerted all along
        wrong = {key: steps for key, steps in table.items() if steps != expected_alerts(*key)}
        assert not wrong, wrong
    finally:
        stack.stop()
