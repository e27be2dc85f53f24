"""The demo platform: the demo's stand-in for Meta's Graph API, which `up --demo` runs.

The demo account `kettle-fb` answers through it (its `reply:` block points here), so a newcomer
can send a reply from the inbox and watch a platform take it. It takes what StayHuman's Meta
client sends, as Meta documents it, with the Page token in `Authorization: Bearer`:

- `POST /v21.0/{comment}/comments` (`message`) -> `{"id"}`: a reply under a comment;
- `POST /v21.0/{page}/messages` (`{"recipient": {"id": PSID}, "messaging_type", "message":
  {"text"}}`) -> `{"recipient_id", "message_id"}`: a Messenger message;
- the reads the client makes to find a reply whose answer was lost: `GET /v21.0/{comment}/comments`,
  `GET /v21.0/{page}/conversations?platform=messenger&user_id=PSID`, `GET /v21.0/{conversation}/messages`,
  and `GET /v21.0/me` (is the token still good).

Like Meta, it then tells StayHuman about the Page's new message: a second later it sends the
reply to ingest as a signed generic webhook (direction outbound, under the id it gave the reply),
the platform's echo, which StayHuman counts once: it is the message outbound already recorded.
What it received is kept in the state folder and shown, newest first, on its page at `/`.
"""

import hashlib
import html
import json
import queue
import re
import secrets
import threading
import time
from base64 import b64encode
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from stayhuman.demo.feed import BRAND, post

URL_VARIABLE = "STAYHUMAN_DEMO_PLATFORM_URL"  # what the demo configuration's api_base_url is made of
VERSION = "v21.0"
PAGE_ID = "104000000000777"  # Kettle Coffee's Page: the demo account's external_id
PAGE_TOKEN = "demo-page-token-not-for-production"  # the demo account's reply.page_access_token
ECHO_AFTER = 1.0  # seconds between taking a reply and sending its echo, as Meta's webhook lags a little
MAX_BODY = 64 * 1024
LIMITS = {"comment": 8000, "messenger": 2000}  # characters Meta takes in a comment, a Messenger message
TAGS = frozenset({"HUMAN_AGENT", "ACCOUNT_UPDATE", "CONFIRMED_EVENT_UPDATE", "POST_PURCHASE_UPDATE"})
_NODE = re.compile(r"[A-Za-z0-9_.:-]{1,256}")


@dataclass
class Reply:
    """One reply the Page posted here: under a comment, or by Messenger to a person."""

    id: str
    how: str  # "comment" or "messenger"
    target: str  # the comment answered, or the person's page-scoped id
    to: str  # whom it answers, as a person reads it
    text: str
    at: str  # when it was taken, ISO 8601 UTC
    messaging_type: str = ""
    thread: str = ""
    echo: str = ""  # what became of its echo to StayHuman


@dataclass(frozen=True)
class Customer:
    """A message the demo feed wrote on this platform: its thread and its author."""

    thread: str
    author_id: str
    name: str


class GraphError(Exception):
    """An answer in Meta's error shape: `{"error": {"message", "type", "code", ...}}`."""

    def __init__(self, status: int, message: str, code: int, subcode: int | None = None) -> None:
        super().__init__(message)
        error: dict[str, Any] = {"message": message, "type": "OAuthException", "code": code}
        if subcode is not None:
            error["error_subcode"] = subcode
        error["fbtrace_id"] = "DemoPlatform"
        self.status, self.body = status, {"error": error}


@dataclass
class Store:
    """What the platform holds: the replies it took and the feed's messages (who wrote where), in
    memory and in one JSON file, written again whole at each change (it stays small)."""

    path: Path | None
    port: int = 0  # where it listened last: the demo configuration stays the same across restarts
    replies: list[Reply] = field(default_factory=list)
    messages: dict[str, Customer] = field(default_factory=dict)  # message id -> where, by whom
    people: dict[str, Customer] = field(default_factory=dict)  # author id -> their latest message
    lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def open(cls, path: Path | None) -> "Store":
        store = cls(path)
        if path is not None and path.exists():
            try:
                kept = json.loads(path.read_text())
                store.port = int(kept.get("port", 0))
                store.replies = [Reply(**item) for item in kept.get("replies", [])]
                store.messages = {k: Customer(**v) for k, v in kept.get("messages", {}).items()}
                store.people = {k: Customer(**v) for k, v in kept.get("people", {}).items()}
            except (ValueError, TypeError, AttributeError):
                pass  # a file of another version, or cut short: the demo starts afresh
        return store

    def save(self) -> None:
        if self.path is None:
            return
        with self.lock:
            document = {
                "port": self.port,
                "replies": [asdict(reply) for reply in self.replies],
                "messages": {k: asdict(v) for k, v in self.messages.items()},
                "people": {k: asdict(v) for k, v in self.people.items()},
            }
            partial = self.path.with_suffix(".partial")
            partial.write_text(json.dumps(document, indent=1))
            partial.replace(self.path)


class DemoPlatform:
    """The demo's Graph API on a loopback port (0: the one it had last time, else any free one);
    `start` and `stop` as the dev mail sink's."""

    def __init__(self, ingest_url: str, folder: Path | None = None, port: int = 0) -> None:
        self.ingest_url = ingest_url
        self.store = Store.open(folder / "demo-platform.json" if folder is not None else None)
        self._echoes: queue.Queue[tuple[float, Reply] | None] = queue.Queue()
        self._server = _listen(port or self.store.port, _handler(self))
        self.port = self.store.port = self._server.server_address[1]
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_base_url(self) -> str:
        return f"{self.url}/{VERSION}"

    def start(self) -> "DemoPlatform":
        self.store.save()  # its port, for the next start
        self._threads = [
            threading.Thread(target=self._server.serve_forever, name="demo-platform", daemon=True),
            threading.Thread(target=self._send_echoes, name="demo-platform-echo", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._echoes.put(None)
        self._server.shutdown()
        self._server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)

    # -- what the demo feed writes here ------------------------------------------------------

    def wrote(self, document: dict[str, Any]) -> None:
        """A customer's message of the demo feed, posted on this platform: replies to it (or,
        on Messenger, to its author) are addressed by name and echoed into its thread."""
        author = document.get("author")
        if document.get("direction") != "inbound" or not isinstance(author, dict):
            return
        customer = Customer(str(document["thread_id"]), str(author["id"]), str(author.get("name") or ""))
        with self.store.lock:
            self.store.messages[str(document["external_id"])] = customer
            self.store.people[customer.author_id] = customer
        self.store.save()

    # -- the Graph API -----------------------------------------------------------------------

    def comment_reply(self, comment: str, params: dict[str, Any]) -> dict[str, str]:
        if comment == PAGE_ID:
            raise GraphError(400, "(#100) Posts on the Page are not replies: answer a comment", 100)
        text = _text(params.get("message"), "message", LIMITS["comment"])
        known = self.store.messages.get(comment)
        reply = Reply(
            id=f"{PAGE_ID}_{secrets.randbelow(10**15):015d}",
            how="comment",
            target=comment,
            to=known.name if known and known.name else f"comment {comment}",
            text=text,
            at=_now(),
            thread=known.thread if known else "",
        )
        self._took(reply)
        return {"id": reply.id}

    def message(self, page: str, params: dict[str, Any]) -> dict[str, str]:
        if page != PAGE_ID:
            raise GraphError(400, f"(#100) Param id must be the Page's id ({PAGE_ID}), not {page}", 100)
        recipient = params.get("recipient")
        person = recipient.get("id") if isinstance(recipient, dict) else None
        if not isinstance(person, str) or not person:
            raise GraphError(400, "(#100) The parameter recipient is required", 100)
        messaging_type = params.get("messaging_type") or "RESPONSE"
        if messaging_type not in ("RESPONSE", "UPDATE", "MESSAGE_TAG"):
            raise GraphError(400, f"(#100) Invalid messaging_type {str(messaging_type)[:40]!r}", 100)
        if messaging_type == "MESSAGE_TAG" and params.get("tag") not in TAGS:
            raise GraphError(400, "(#100) A MESSAGE_TAG message needs a valid tag (HUMAN_AGENT)", 100)
        message = params.get("message")
        text = _text(
            message.get("text") if isinstance(message, dict) else None, "message", LIMITS["messenger"]
        )
        known = self.store.people.get(person)
        reply = Reply(
            id="m_" + secrets.token_hex(20),
            how="messenger",
            target=person,
            to=known.name if known and known.name else f"person {person}",
            text=text,
            at=_now(),
            messaging_type=messaging_type + (f" {params['tag']}" if messaging_type == "MESSAGE_TAG" else ""),
            thread=known.thread if known else "",
        )
        self._took(reply)
        return {"recipient_id": person, "message_id": reply.id}

    def comment_replies(self, comment: str) -> list[dict[str, Any]]:
        """The Page's replies under a comment, oldest first (Meta's chronological order)."""
        return [_item(r) for r in self._replies() if r.how == "comment" and r.target == comment]

    def conversation(self, person: str) -> list[dict[str, Any]]:
        """The Page's Messenger messages to a person, newest first."""
        mine = [r for r in self._replies() if r.how == "messenger" and r.target == person]
        return [_item(r) for r in reversed(mine)]

    def _replies(self) -> list[Reply]:
        with self.store.lock:
            return list(self.store.replies)

    def _took(self, reply: Reply) -> None:
        with self.store.lock:
            self.store.replies.append(reply)
        self.store.save()
        self._echoes.put((time.monotonic() + ECHO_AFTER, reply))

    # -- the echo ----------------------------------------------------------------------------

    def echo_of(self, reply: Reply) -> dict[str, Any] | None:
        """The reply as the platform tells StayHuman of it: a generic webhook of the brand's
        message with the id the platform gave it (what StayHuman already recorded as sent)."""
        document: dict[str, Any] = {
            "external_id": reply.id,
            "direction": "outbound",
            "author": {"id": PAGE_ID, "name": BRAND},
            "text": reply.text,
            "created_at": reply.at,
        }
        if reply.how == "comment":
            # A reply names the comment it answers: it joins that comment's conversation.
            return document | {
                "kind": "reply",
                "thread_id": reply.thread or reply.target,
                "parent_id": reply.target,
            }
        if not reply.thread:
            return None  # a person the feed did not write as: their thread is not known here
        return document | {"kind": "dm", "thread_id": reply.thread}

    def _send_echoes(self) -> None:
        while (due := self._echoes.get()) is not None:
            at, reply = due
            time.sleep(max(0.0, at - time.monotonic()))
            document = self.echo_of(reply)
            if document is None:
                said = "no echo: this person's conversation did not start on the demo platform"
            else:
                try:
                    post(self.ingest_url, document)
                    said = "echoed to StayHuman (the same message: counted once)"
                except Exception as error:  # the demo must never take the stack down
                    said = f"echo failed: {error}"
            with self.store.lock:
                reply.echo = said
            self.store.save()

    # -- the page ----------------------------------------------------------------------------

    def page(self) -> str:
        rows = "".join(
            "<tr>"
            f"<td><time datetime='{html.escape(r.at)}'>{html.escape(r.at[:19].replace('T', ' '))} UTC</time></td>"
            f"<td>{html.escape(r.to)}</td>"
            f"<td>{'a reply to the comment' if r.how == 'comment' else 'Messenger'}"
            f"{' (' + html.escape(r.messaging_type) + ')' if r.messaging_type else ''}</td>"
            f"<td class='text'>{html.escape(r.text)}</td>"
            f"<td><code>{html.escape(r.id)}</code></td>"
            f"<td>{html.escape(r.echo or 'echo pending')}</td>"
            "</tr>"
            for r in reversed(self._replies())
        )
        table = (
            "<table><thead><tr><th scope='col'>When</th><th scope='col'>To</th><th scope='col'>How</th>"
            "<th scope='col'>Text</th><th scope='col'>Id it got</th><th scope='col'>Echo</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>"
            if rows
            else "<p>No reply yet: answer a demo conversation in the inbox, and it shows here.</p>"
        )
        return (
            "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            "<meta http-equiv='refresh' content='5'>"
            f"<title>{BRAND} on the demo platform</title><style>{STYLE}</style></head><body><main>"
            f"<h1>{BRAND} on the demo platform: the replies it received</h1>"
            "<p>This stands in for Meta's Graph API in the demo: replies sent from the inbox to the "
            "demo's comments and Messenger conversation arrive here, and each goes back to StayHuman "
            "as the platform's echo. Newest first; the page refreshes itself.</p>"
            f"{table}</main></body></html>"
        )


STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2rem;color:#1a1a1a;background:#fff}"
    "table{border-collapse:collapse;width:100%}th,td{border-bottom:1px solid #ccc;padding:.4rem;"
    "text-align:left;vertical-align:top}.text{white-space:pre-wrap;max-width:32rem}code{font-size:.8rem}"
)
CSP = (
    "default-src 'none'; "
    f"style-src 'sha256-{b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()}'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


def _listen(port: int, handler: type[BaseHTTPRequestHandler]) -> ThreadingHTTPServer:
    """A listener on `port` on loopback; on any free port when that one is taken (or 0)."""
    try:
        return ThreadingHTTPServer(("127.0.0.1", port), handler)
    except OSError:
        if port == 0:
            raise
        return ThreadingHTTPServer(("127.0.0.1", 0), handler)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _meta_time(iso: str) -> str:
    """Meta's way of writing a time: whole seconds, `+0000`."""
    return datetime.fromisoformat(iso).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S+0000")


def _item(reply: Reply) -> dict[str, Any]:
    return {
        "id": reply.id,
        "message": reply.text,
        "from": {"id": PAGE_ID, "name": BRAND},
        "created_time": _meta_time(reply.at),
    }


def _text(value: Any, name: str, limit: int) -> str:
    if not isinstance(value, str) or not value.strip():
        raise GraphError(400, f"(#100) The parameter {name} is required", 100)
    if len(value) > limit:
        raise GraphError(400, f"(#100) The {name} is longer than {limit} characters", 100)
    return value


def _fields(items: list[dict[str, Any]], wanted: str) -> list[dict[str, Any]]:
    keys = [key for key in wanted.split(",") if key] or ["id"]
    return [{key: item[key] for key in keys if key in item} for item in items]


def _handler(platform: DemoPlatform) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "StayHumanDemoPlatform"

        def log_message(self, *_args: Any) -> None:
            pass  # `up` prints only what matters; the page shows every reply

        def do_GET(self) -> None:
            self._answer(self._get)

        def do_POST(self) -> None:
            self._answer(self._post)

        def _answer(self, handle: Callable[[list[str], dict[str, Any]], Any]) -> None:
            parts = urlsplit(self.path)
            if self.command == "GET" and parts.path == "/":
                self._send(200, platform.page().encode(), "text/html; charset=utf-8")
                return
            segments = [s for s in parts.path.split("/") if s]
            try:
                if (
                    not segments
                    or segments[0] != VERSION
                    or not all(_NODE.fullmatch(s) for s in segments[1:])
                ):
                    raise GraphError(400, "Unknown path components: " + parts.path[:100], 2500)
                params = dict(parse_qsl(parts.query)) | self._body()
                self._check_token(params)
                answer = handle(segments[1:], params)
            except GraphError as error:
                self._send(error.status, json.dumps(error.body).encode(), "application/json")
                return
            self._send(200, json.dumps(answer).encode(), "application/json")

        def _body(self) -> dict[str, Any]:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                raise GraphError(413, "(#100) The request is too large", 100)
            raw = self.rfile.read(length) if length else b""
            if not raw:
                return {}
            if (self.headers.get("Content-Type") or "").startswith("application/json"):
                try:
                    document = json.loads(raw)
                except ValueError:
                    raise GraphError(400, "(#100) The body is not JSON", 100) from None
                return document if isinstance(document, dict) else {}
            return dict(parse_qsl(raw.decode(errors="replace"), keep_blank_values=True))

        def _check_token(self, params: dict[str, Any]) -> None:
            authorization = self.headers.get("Authorization") or ""
            token = authorization.removeprefix("Bearer ") if authorization.startswith("Bearer ") else None
            token = token or params.get("access_token")
            if not token:
                raise GraphError(400, "An access token is required to request this resource.", 104)
            if not secrets.compare_digest(str(token).encode(), PAGE_TOKEN.encode()):
                raise GraphError(400, "Invalid OAuth access token - Cannot parse access token", 190)

        def _get(self, path: list[str], params: dict[str, Any]) -> Any:
            if path == ["me"]:
                return {"id": PAGE_ID, "name": BRAND}
            if len(path) != 2:
                raise GraphError(400, "(#100) Unknown request", 100)
            node, edge = path
            if edge == "comments" and node != PAGE_ID:
                return {"data": _fields(platform.comment_replies(node), params.get("fields", "id"))}
            if edge == "conversations" and node == PAGE_ID:
                if params.get("platform") != "messenger":
                    raise GraphError(400, "(#100) Invalid platform", 100)
                person = str(params.get("user_id") or "")
                messages = platform.conversation(person)
                if not messages:
                    return {"data": []}
                wanted = str(params.get("fields", ""))
                inner = (
                    wanted.removeprefix("messages{").removesuffix("}")
                    if wanted.startswith("messages{")
                    else ""
                )
                conversation: dict[str, Any] = {"id": f"t_{person}"}
                if inner:
                    conversation["messages"] = {"data": _fields(messages, inner)}
                return {"data": [conversation]}
            if edge == "messages" and node.startswith("t_"):
                messages = platform.conversation(node.removeprefix("t_"))
                return {"data": _fields(messages, params.get("fields", "id"))}
            raise GraphError(
                400, f"Unsupported get request. Object with ID '{node}' does not support {edge}", 100, 33
            )

        def _post(self, path: list[str], params: dict[str, Any]) -> Any:
            if len(path) == 2 and path[1] == "comments":
                return platform.comment_reply(path[0], params)
            if len(path) == 2 and path[1] == "messages":
                return platform.message(path[0], params)
            raise GraphError(400, "(#100) Unsupported post request", 100)

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            if content_type.startswith("text/html"):
                self.send_header("Content-Security-Policy", CSP)
            self.end_headers()
            self.wfile.write(body)

    return Handler
