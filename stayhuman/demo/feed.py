"""The demo feed: a few signed webhooks through ingest, one of them answered in time.

Played by `stayhuman up --demo` once the services are ready, so that within about
two minutes a newcomer sees assignments, a conversation answered in time (no
email) and overdue emails in the dev mailbox.
"""

import asyncio
import hashlib
import hmac
import json
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

TENANT = "kettle"
ACCOUNT = "kettle-fb"
BRAND = "Kettle Coffee"
SECRET = "demo-secret-not-for-production"


@dataclass(frozen=True)
class DemoMessage:
    author: str
    thread: str
    kind: str
    text: str
    answered_after: float | None = None  # seconds until the brand replies; None: nobody does


FEED = (
    DemoMessage("Dana Reyes", "post-oat-latte", "comment", "Is the oat latte back on the menu?", 15.0),
    DemoMessage("Sam Carter", "dm-order-4411", "dm", "My order #4411 never arrived. Can someone help?"),
    DemoMessage("Priya Nair", "post-winter-blend", "comment", "Does the winter blend come decaf too?"),
)


def signed_request(ingest_url: str, document: dict[str, object]) -> urllib.request.Request:
    body = json.dumps(document).encode()
    signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    return urllib.request.Request(
        f"{ingest_url}/webhooks/generic/{ACCOUNT}",
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "X-Signature-256": signature},
    )


def post(ingest_url: str, document: dict[str, object]) -> None:
    with urllib.request.urlopen(signed_request(ingest_url, document), timeout=10) as response:
        if response.status != 202:
            raise RuntimeError(f"ingest answered {response.status}")


def show_assignments(database_url: str, threads: set[str], say: Callable[[str], None]) -> None:
    """Say who got each demo conversation, once the router has assigned them."""
    from stayhuman.inspect import list_conversations

    shown: set[str] = set()
    deadline = time.monotonic() + 30
    while shown != threads and time.monotonic() < deadline:
        rows = asyncio.run(list_conversations(database_url, tenant=TENANT, state=None, limit=200))
        for row in rows:
            if row["thread"] in threads and row["thread"] not in shown and row["owner_name"]:
                shown.add(row["thread"])
                say(f"demo: {row['author']}'s conversation is assigned to {row['owner_name']} ({row['why']})")
        time.sleep(0.2)


def play(
    ingest_url: str,
    database_url: str,
    say: Callable[[str], None],
    run_id: str | None = None,
    wrote: Callable[[dict[str, object]], None] = lambda _document: None,
) -> None:
    """Send the feed, say who got what, then send the brand's replies when they are due.
    `wrote` hears each customer's message first (the demo platform, where they wrote it)."""
    run = run_id or datetime.now(UTC).strftime("%H%M%S")
    started = time.monotonic()
    for index, message in enumerate(FEED):
        document: dict[str, object] = {
            "external_id": f"demo-{run}-{index}",
            "kind": message.kind,
            "direction": "inbound",
            "thread_id": f"{message.thread}-{run}",
            "author": {"id": f"demo-author-{index}", "name": message.author},
            "text": message.text,
            "created_at": datetime.now(UTC).isoformat(),
            "url": f"https://www.facebook.example/{TENANT}/{message.thread}-{run}",
        }
        wrote(document)
        post(ingest_url, document)
        say(f"demo: {message.author} wrote {message.text!r} (signed webhook accepted)")
    show_assignments(database_url, {f"{m.thread}-{run}" for m in FEED}, say)
    say("demo: unanswered conversations become overdue emails after 45 seconds")
    for index, message in enumerate(FEED):
        if message.answered_after is None:
            continue
        time.sleep(max(0.0, started + message.answered_after - time.monotonic()))
        post(
            ingest_url,
            {
                "external_id": f"demo-{run}-{index}-reply",
                "kind": "reply",
                "direction": "outbound",
                "thread_id": f"{message.thread}-{run}",
                "author": {"id": TENANT, "name": BRAND},
                "text": "Yes! It's back from today.",
                "created_at": datetime.now(UTC).isoformat(),
            },
        )
        say(f"demo: {BRAND} answered {message.author} in time: no alert for that one")


def play_in_background(
    ingest_url: str,
    database_url: str,
    say: Callable[[str], None],
    wrote: Callable[[dict[str, object]], None] = lambda _document: None,
) -> threading.Thread:
    def run() -> None:
        try:
            play(ingest_url, database_url, say, wrote=wrote)
        except Exception as error:  # the demo must never take the stack down
            say(f"demo: feed stopped: {error}")

    thread = threading.Thread(target=run, name="demo-feed", daemon=True)
    thread.start()
    return thread
