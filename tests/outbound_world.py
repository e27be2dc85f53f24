"""The outbound service as an operator runs it, for end-to-end tests: one platform's write fake
over real HTTP, the rows a reply needs in a migrated database (a tenant, Kai signed in, an
account whose sealed reply credentials point at the fake, a conversation and the message it
answers), and `python -m stayhuman outbound` as a process that a test starts and kills.

Each `Flavour` is one way of answering on one platform (a Facebook comment reply, a Messenger
message, an X DM...) and says what the fake holds afterwards: the platform ids of the brand's
replies, and how many writes and reads the fake received."""

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from shared import ids
from shared.db.models import AccountRow
from shared.events import ReplyContext
from shared.secrets import SecretBox
from stayhuman.natsserver import free_port
from tests.api_world import World
from tests.helpers import eventually, service_ready
from tests.write_fakes.bluesky import FakeBlueskyWrites
from tests.write_fakes.mastodon import FakeMastodonWrites
from tests.write_fakes.meta import FakeMeta
from tests.write_fakes.recorded import WriteFake
from tests.write_fakes.webhook import FakeReceiver
from tests.write_fakes.x import FakeX
from tests.write_fakes.youtube import FakeYouTube

ACCOUNT = "acme-social"
PSID = "24000000000000001"  # the customer on Messenger
IGSID = "17840000000000002"  # the customer on Instagram
FB_COMMENT = "1220000000000001_3300000000000001"
IG_COMMENT = "17900000000000003"
YT_THREAD = "UgzThreadAbCdEf0001"
X_FAN = "4242"
BSKY_POST = "at://did:plc:fan1/app.bsky.feed.post/3kparent"


@dataclass
class Flavour:
    """One way of answering on one platform: the fake it posts to, the message answered, and
    what the fake holds of the brand's replies."""

    name: str
    fake: WriteFake
    platform: str
    kind: str
    external_id: str  # the platform's id of the message answered
    thread_id: str
    author_id: str
    author_handle: str
    account_external_id: str | None
    credentials: dict[str, str]
    context: ReplyContext | None
    replies: Callable[[], list[str]]  # the platform ids of the brand's replies, as the fake keeps them
    write_path: Callable[[str], bool]  # whether a POST to this path posts the reply
    idempotent: bool = False  # the platform dedupes on our key: posting again is how it is settled

    def writes(self) -> int:
        """The reply's posts the fake received (not token refreshes or sessions)."""
        return sum(1 for r in self.fake.requests("POST") if self.write_path(r.path))

    def reads(self) -> int:
        return len(self.fake.requests("GET"))


def facebook_comment() -> Flavour:
    meta = FakeMeta().start()
    meta.add_comment(FB_COMMENT, platform="facebook", author="6100000000001")
    return _meta("facebook comment", meta, "facebook", "comment", FB_COMMENT, f"comment:{FB_COMMENT}",
                 "6100000000001", meta.page_id)  # fmt: skip


def messenger() -> Flavour:
    meta = FakeMeta().start()
    return _meta("messenger", meta, "facebook", "dm", "m_incoming0001", f"dm:{PSID}", PSID, meta.page_id)


def instagram_comment() -> Flavour:
    meta = FakeMeta().start()
    meta.add_comment(IG_COMMENT, platform="instagram", author=IGSID)
    return _meta("instagram comment", meta, "instagram", "comment", IG_COMMENT, f"comment:{IG_COMMENT}",
                 IGSID, meta.ig_user_id)  # fmt: skip


def instagram_dm() -> Flavour:
    meta = FakeMeta().start()
    return _meta("instagram dm", meta, "instagram", "dm", "aWdfZAm1incoming", f"dm:{IGSID}", IGSID,
                 meta.ig_user_id)  # fmt: skip


def _meta(
    name: str, meta: FakeMeta, platform: str, kind: str, external_id: str, thread: str, author: str, own: str
) -> Flavour:
    return Flavour(
        name=name, fake=meta, platform=platform, kind=kind, external_id=external_id, thread_id=thread,
        author_id=author, author_handle="fan", account_external_id=own, credentials=meta.credentials(),
        context=None, replies=lambda: [item["id"] for item in meta.stored()],
        write_path=lambda path: path.endswith(("/comments", "/replies", "/messages")),
    )  # fmt: skip


def _x_credentials(x: FakeX) -> dict[str, str]:
    return {"access_token": "x-access-0", "refresh_token": x.refresh_token, "client_id": x.client_id,
            "api_base_url": x.url, "token_url": f"{x.url}/2/oauth2/token"}  # fmt: skip


def x_reply() -> Flavour:
    x = FakeX().start()
    tweet = x.tweet(X_FAN, "fan")
    return Flavour(
        name="x reply", fake=x, platform="x", kind="mention", external_id=tweet, thread_id=f"tweet:{tweet}",
        author_id=X_FAN, author_handle="fan", account_external_id=x.own_id, credentials=_x_credentials(x),
        context=ReplyContext(mentions=[x.own_id]), replies=lambda: [t["id"] for t in x.own_posts()],
        write_path=lambda path: path == "/2/tweets",
    )  # fmt: skip


def x_dm() -> Flavour:
    x = FakeX().start()
    conversation = f"{X_FAN}-{x.own_id}"
    return Flavour(
        name="x dm", fake=x, platform="x", kind="dm", external_id="1890000000000000001",
        thread_id=f"dm:{X_FAN}", author_id=X_FAN, author_handle="fan", account_external_id=x.own_id,
        credentials=_x_credentials(x), context=ReplyContext(dm_conversation_id=conversation),
        replies=lambda: [e["id"] for e in x.dm_events if e["sender_id"] == x.own_id],
        write_path=lambda path: path == f"/2/dm_conversations/{conversation}/messages",
    )  # fmt: skip


def mastodon() -> Flavour:
    fake = FakeMastodonWrites().start()
    status = fake.status("fan@elsewhere.example", visibility="public")
    return Flavour(
        name="mastodon", fake=fake, platform="mastodon", kind="mention", external_id=status,
        thread_id=f"status:{status}", author_id="7001", author_handle="fan@elsewhere.example",
        account_external_id=fake.own_id, credentials={"access_token": fake.token, "api_base_url": fake.url},
        context=ReplyContext(visibility="public"), replies=lambda: [s["id"] for s in fake.own_statuses()],
        write_path=lambda path: path == "/api/v1/statuses",
        idempotent=True,
    )  # fmt: skip


def bluesky() -> Flavour:
    fake = FakeBlueskyWrites().start()
    return Flavour(
        name="bluesky", fake=fake, platform="bluesky", kind="mention", external_id=BSKY_POST,
        thread_id=f"post:{BSKY_POST}", author_id="did:plc:fan1", author_handle="fan1.bsky.social",
        account_external_id=fake.did,
        credentials={"identifier": fake.handle, "app_password": fake.app_password, "api_base_url": fake.url},
        context=ReplyContext(cid="bafyreiparent"), replies=lambda: [r["uri"] for r in fake.records.values()],
        write_path=lambda path: path == "/xrpc/com.atproto.repo.createRecord",
        idempotent=True,
    )  # fmt: skip


def youtube() -> Flavour:
    fake = FakeYouTube().start()
    fake.add_thread(YT_THREAD, video="vidBluebird1")
    return Flavour(
        name="youtube", fake=fake, platform="youtube", kind="comment", external_id=YT_THREAD,
        thread_id=f"thread:{YT_THREAD}", author_id="UCfan000000000000000001", author_handle="fan",
        account_external_id=fake.channel, credentials=fake.credentials(), context=None,
        replies=lambda: [c["id"] for c in fake.stored()],
        write_path=lambda path: path == "/youtube/v3/comments",
    )  # fmt: skip


def webhook() -> Flavour:
    fake = FakeReceiver().start()
    return Flavour(
        name="webhook", fake=fake, platform="other", kind="comment", external_id="msg-9",
        thread_id="ticket-42", author_id="cust-1", author_handle="cust-1", account_external_id=None,
        credentials={"url": fake.endpoint, "secret": fake.secret}, context=None,
        replies=lambda: [fake.answered[delivery] for delivery in fake.deliveries],
        write_path=lambda path: path == fake.path,
        idempotent=True,
    )  # fmt: skip


FLAVOURS: dict[str, Callable[[], Flavour]] = {
    "facebook_comment": facebook_comment,
    "messenger": messenger,
    "instagram_comment": instagram_comment,
    "instagram_dm": instagram_dm,
    "x_reply": x_reply,
    "x_dm": x_dm,
    "mastodon": mastodon,
    "bluesky": bluesky,
    "youtube": youtube,
    "webhook": webhook,
}


@dataclass(frozen=True)
class Answerable:
    """The rows written: the conversation to answer and the SHA-256 of Kai's live session."""

    conversation_id: str
    session: str


async def answerable(database_url: str, flavour: Flavour, box: SecretBox) -> Answerable:
    """Tenant `acme`, Kai in team `care`, the account with its reply credentials sealed with the
    service's key, a conversation Kai owns with the customer's message, and Kai signed in."""
    async with World(database_url) as world:
        await world.tenant("acme")
        await world.person("kai", name="Kai Moreno")
        team = await world.team("acme", "care", members=["kai"])
        await world.add(
            AccountRow(
                id=ACCOUNT, tenant_id="acme", platform=flavour.platform, handle="Bluebird", team_id=team,
                webhook_secret="", external_id=flavour.account_external_id,
                reply_credentials=box.seal(json.dumps(flavour.credentials, sort_keys=True)),
            )
        )  # fmt: skip
        conversation_id = await world.conversation(
            "acme", ACCOUNT, team_id=team, owner_id="kai", platform=flavour.platform,
            thread_id=flavour.thread_id, author_id=flavour.author_id, author_handle=flavour.author_handle,
        )  # fmt: skip
        await world.interaction(
            conversation_id, external_id=flavour.external_id, kind=flavour.kind, author_id=flavour.author_id,
            text="Are you open on Sunday?",
            reply_context=flavour.context.model_dump_json() if flavour.context else None,
        )  # fmt: skip
        signed_in = await world.session_for("kai")
    return Answerable(conversation_id, ids.token_sha256(signed_in.cookie))


@dataclass
class OutboundProcess:
    """`python -m stayhuman outbound` with this environment; its output goes to `log`."""

    env: dict[str, str]
    log: Path
    port: int
    process: subprocess.Popen[bytes] | None = None

    @classmethod
    def configured(cls, workdir: Path, **env: str) -> "OutboundProcess":
        port = free_port()
        full = {**os.environ, **env, "STAYHUMAN_OUTBOUND_PORT": str(port)}
        return cls(env=full, log=workdir / "outbound.log", port=port)

    async def start(self) -> "OutboundProcess":
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "stayhuman", "outbound"],
                env=self.env,
                cwd=self.log.parent,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        await eventually(self._ready, timeout=60, interval=0.1, what=f"outbound ready (log: {self.log})")
        return self

    async def _ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"outbound exited with {self.process.returncode}:\n{self.tail()}")
        return await service_ready(self.port)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no ack, nothing more written."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def tail(self, lines: int = 40) -> str:
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
