"""The demo platform as StayHuman's Meta client meets it: a comment reply and a Messenger message
posted, read back when an answer was lost, the token checked, each reply echoed to ingest as a
signed generic webhook in the thread the demo feed wrote, and all of it on its page and in the
state folder."""

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from services.ingest.generic import GenericInteraction, signature_valid
from services.outbound.platforms.base import Credentials, CredentialsFailed, Outgoing, Refused, Target
from services.outbound.platforms.meta import MetaClient
from shared.commands import ReplyMethod
from shared.events import Kind, Platform
from stayhuman.demo.feed import ACCOUNT, SECRET
from stayhuman.demo.platform import PAGE_ID, PAGE_TOKEN, DemoPlatform
from tests.receiver import Receiver


@pytest.fixture
def ingest() -> Iterator[Receiver]:
    receiver = Receiver(status=202)
    yield receiver
    receiver.stop()


@pytest.fixture
def platform(ingest: Receiver, tmp_path: Path) -> Iterator[DemoPlatform]:
    running = DemoPlatform(f"http://127.0.0.1:{ingest.port}", tmp_path).start()
    yield running
    running.stop()


def outgoing(kind: Kind, method: ReplyMethod, answered: str, author: str, text: str) -> Outgoing:
    target = Target(
        platform=Platform.facebook, kind=kind, account_external_id=PAGE_ID, account_handle="Kettle Coffee",
        thread_id="t", external_id=answered, parent_id=None, author_id=author, author_handle="",
        created_at=datetime.now(UTC),
    )  # fmt: skip
    return Outgoing(
        reply_id="r1", key="r1", text=text, method=method, tag=None, target=target, person_id="kai"
    )


def feed_message(index: int, kind: str, thread: str, author: str, name: str) -> dict[str, object]:
    return {"external_id": f"demo-1-{index}", "kind": kind, "direction": "inbound", "thread_id": thread,
            "author": {"id": author, "name": name}, "text": "hello", "created_at": datetime.now(UTC).isoformat()}  # fmt: skip


def echoes(ingest: Receiver, count: int) -> list[GenericInteraction]:
    deadline = time.monotonic() + 10
    while len(ingest.posts) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(ingest.posts) == count, ingest.posts
    found = []
    for path, headers, body in ingest.posts:
        assert path == f"/webhooks/generic/{ACCOUNT}"
        assert signature_valid(secret=SECRET, body=body, header=headers["x-signature-256"])
        found.append(GenericInteraction.model_validate_json(body))
    return found


async def test_replies_are_taken_as_graph_takes_them_found_again_and_echoed(
    platform: DemoPlatform, ingest: Receiver, tmp_path: Path
) -> None:
    platform.wrote(feed_message(0, "comment", "post-oat-latte-1", "demo-author-0", "Dana Reyes"))
    platform.wrote(feed_message(1, "dm", "dm-order-4411-1", "demo-author-1", "Sam Carter"))
    credentials = Credentials({"page_access_token": PAGE_TOKEN, "api_base_url": platform.api_base_url})
    client = MetaClient(Platform.facebook)
    since = datetime.now(UTC) - timedelta(seconds=1)
    try:
        comment = outgoing(
            Kind.comment, ReplyMethod.comment_reply, "demo-1-0", "demo-author-0", "Yes, from today!"
        )
        dm = outgoing(
            Kind.dm, ReplyMethod.send_api, "demo-1-1", "demo-author-1", "Sorry Sam: a new one is on its way"
        )
        posted_comment = await client.post(comment, credentials)
        posted_dm = await client.post(dm, credentials)
        assert posted_comment.platform_id.startswith(f"{PAGE_ID}_")
        assert posted_dm.platform_id.startswith("m_")
        # What outbound reads when an answer was lost: each is there, once.
        assert (await client.find(comment, credentials, since)) is not None
        assert (await client.find(comment, credentials, since)).platform_id == posted_comment.platform_id  # type: ignore[union-attr]
        assert (await client.find(dm, credentials, since)).platform_id == posted_dm.platform_id  # type: ignore[union-attr]
        other = outgoing(
            Kind.dm, ReplyMethod.send_api, "x", "someone-else", "Sorry Sam: a new one is on its way"
        )
        assert await client.find(other, credentials, since) is None
        assert await client.refresh(credentials) is credentials

        wrong = Credentials(
            {"page_access_token": "not-the-page-token", "api_base_url": platform.api_base_url}
        )
        with pytest.raises(Refused) as refused:
            await client.post(comment, wrong)
        assert refused.value.expired and "Invalid OAuth access token" in refused.value.error
        with pytest.raises(CredentialsFailed):
            await client.refresh(wrong)
        with pytest.raises(Refused, match="is longer than 2000"):
            await client.post(
                outgoing(Kind.dm, ReplyMethod.send_api, "d", "demo-author-1", "x" * 2001), credentials
            )
    finally:
        await client.aclose()

    by_id = {echo.external_id: echo for echo in echoes(ingest, 2)}
    reply = by_id[posted_comment.platform_id]
    assert (reply.kind, reply.direction, reply.thread_id, reply.parent_id) == (
        Kind.reply, "outbound", "post-oat-latte-1", "demo-1-0",
    )  # fmt: skip
    assert reply.author.id == PAGE_ID and reply.text == "Yes, from today!"
    message = by_id[posted_dm.platform_id]
    assert (message.kind, message.direction, message.thread_id) == (Kind.dm, "outbound", "dm-order-4411-1")

    page = httpx.get(platform.url + "/")
    assert page.status_code == 200 and "default-src 'none'" in page.headers["content-security-policy"]
    assert "Kettle Coffee on the demo platform: the replies it received" in page.text
    newest_first = [page.text.index("a new one is on its way"), page.text.index("Yes, from today!")]
    assert newest_first == sorted(newest_first)
    assert "Sam Carter" in page.text and "Dana Reyes" in page.text and "RESPONSE" in page.text

    # Kept in the state folder: a restarted platform still lists them (and sends no echo again).
    kept = json.loads((tmp_path / "demo-platform.json").read_text())
    assert {r["id"] for r in kept["replies"]} == {posted_comment.platform_id, posted_dm.platform_id}
    platform.stop()
    again = DemoPlatform(f"http://127.0.0.1:{ingest.port}", tmp_path).start()
    try:
        assert again.url == platform.url  # the same address: the demo configuration is unchanged
        assert "a new one is on its way" in httpx.get(again.url + "/").text
    finally:
        again.stop()
    assert len(ingest.posts) == 2
