"""A fake of Meta's Graph API write side, over real HTTP on loopback: Facebook comment replies,
Instagram comment replies, Messenger and Instagram DMs (with private replies), and reading
them back, with the errors Meta documents.

Every request is recorded exactly as received (`received`), before anything is decided, so a
test asserts what the client sent. Knobs, beyond the shared ones (`hold`, `errors`,
`rate_limited`: see WriteFake): `expire_token`, `close_window`, `rate_limit` (Meta's codes and
usage header), `refuse_duplicates`, `fail` (an answer of Meta's, before or after the write is
stored) and `drop` (store, then close the connection unanswered). With `hold` set a write is
stored and its answer waits: the post is there, the client does not hear of it.
"""

import hashlib
import json
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from tests.write_fakes.recorded import Received, WriteFake

WINDOW = "(#10) This message is sent outside of allowed window. Learn more about the new policy here: https://developers.facebook.com/docs/messenger-platform/policy-overview"


@dataclass
class Failure:
    """An answer given instead of the usual one; `after_store`: the write is stored first."""

    status: int
    body: dict[str, Any]
    after_store: bool = False


def meta_time(moment: datetime) -> str:
    """Meta's way of writing a time: whole seconds, `+0000`."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S+0000")


def graph_error(
    message: str, code: int, subcode: int | None = None, kind: str = "OAuthException"
) -> dict[str, Any]:
    error: dict[str, Any] = {"message": message, "type": kind, "code": code, "fbtrace_id": "AbCdEfGhIjK"}
    if subcode is not None:
        error["error_subcode"] = subcode
    return {"error": error}


@dataclass
class FakeMeta(WriteFake):
    """The Graph API of one Facebook Page and its Instagram account, under `/{version}`.

    `add_comment` makes a customer's comment that can be answered (Facebook: `/comments`;
    Instagram: `/replies` and one private reply). Messages go to the Page (Messenger) or the
    Instagram account, into the conversation with the recipient. `replies` and
    `conversations` hold what was stored, oldest first."""

    token: str = "fake-page-token"
    page_id: str = "104000000000001"
    page_name: str = "Bluebird Coffee"
    ig_user_id: str = "17841400000000001"
    ig_username: str = "bluebird.coffee"
    version: str = "v21.0"
    page_size: int = 25  # Meta's default page of an edge
    comments: dict[str, dict[str, str]] = field(default_factory=dict)  # id -> platform, author
    replies: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # comment id -> replies
    conversations: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    expired: bool = False
    closed: dict[str, bool] = field(default_factory=dict)  # recipient -> the HUMAN_AGENT tag closed too
    rate_limit_code: int = 32
    regain_minutes: int = 2
    refuse_duplicates: bool = False
    waiting: int = 0  # writes stored whose answer is being held
    _drop: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _counter: int = 0

    @property
    def api_base_url(self) -> str:
        return f"{self.url}/{self.version}"

    def credentials(self) -> dict[str, str]:
        """An account's reply credentials pointing at this fake."""
        return {"page_access_token": self.token, "api_base_url": self.api_base_url}

    # --- knobs -------------------------------------------------------------------------------

    def add_comment(
        self, comment_id: str, *, platform: str = "facebook", author: str = "6100000000001"
    ) -> str:
        with self._lock:
            self.comments[comment_id] = {"platform": platform, "author": author}
            self.replies.setdefault(comment_id, [])
        return comment_id

    def expire_token(self) -> None:
        """The Page token stops working (expired, revoked, the password changed)."""
        self.expired = True

    def close_window(self, recipient: str, *, tag_too: bool = False) -> None:
        """24 hours have passed since the person's last message; `tag_too`: 7 days have."""
        self.closed[recipient] = tag_too

    def rate_limit(self, calls: int, *, code: int = 32, regain_minutes: int = 2) -> None:
        """The next `calls` requests are refused: over the Page's (32), app's (4) or API's (613) limit."""
        self.rate_limited, self.rate_limit_code, self.regain_minutes = calls, code, regain_minutes

    def fail(self, status: int, body: dict[str, Any] | None = None, *, after_store: bool = False) -> None:
        """Answer the next request with `status` and Meta's `body` (a write is stored first when
        `after_store`: it went out, the answer says otherwise)."""
        self.failures.append(
            Failure(
                status,
                body or graph_error("An unexpected error has occurred.", 2, kind="OAuthException"),
                after_store,
            )
        )

    def drop(self) -> None:
        """The next write is stored, then its connection closes with no answer."""
        self._drop += 1

    def seed_reply(self, comment_id: str, text: str, at: datetime, *, by_brand: bool = True) -> str:
        """A reply already under a comment (the brand's by default), written at `at`."""
        platform = self.comments[comment_id]["platform"]
        author = self._brand(platform) if by_brand else {"id": "6100000000999", "name": "Someone Else"}
        return self._store_reply(comment_id, text, platform, author, at)["id"]

    def seed_message(self, owner: str, user: str, text: str, at: datetime, *, from_brand: bool = True) -> str:
        """A message already in the conversation of `owner` (Page or Instagram account) with `user`."""
        platform = "instagram" if owner == self.ig_user_id else "facebook"
        author = self._brand(platform) if from_brand else {"id": user}
        return self._store_message(owner, user, text, author, at)["id"]

    def stored(self) -> list[dict[str, Any]]:
        """Every reply and message stored by the brand, oldest first."""
        with self._lock:
            mine = {self.page_id, self.ig_user_id}
            items = [r for rs in self.replies.values() for r in rs] + [
                m for ms in self.conversations.values() for m in ms
            ]
        return sorted((i for i in items if i["from"]["id"] in mine), key=lambda i: i["created_time"])

    # --- the Graph API ---------------------------------------------------------------------------

    def _next_id(self) -> int:
        with self._lock:
            self._counter += 1
            return self._counter

    def _brand(self, platform: str) -> dict[str, str]:
        if platform == "instagram":
            return {"id": self.ig_user_id, "username": self.ig_username}
        return {"id": self.page_id, "name": self.page_name}

    def _store_reply(
        self, comment_id: str, text: str, platform: str, author: dict[str, str], at: datetime | None = None
    ) -> dict[str, Any]:
        number = self._next_id()
        created = meta_time(at or datetime.now(UTC))
        if platform == "instagram":
            reply = {"id": f"179{number:014d}", "text": text, "username": author.get("username", ""),
                     "from": author, "timestamp": created, "created_time": created}  # fmt: skip
        else:
            post = comment_id.split("_")[0]
            reply = {
                "id": f"{post}_{900000 + number}",
                "message": text,
                "from": author,
                "created_time": created,
            }
        with self._lock:
            self.replies.setdefault(comment_id, []).append(reply)
        return reply

    def _store_message(
        self, owner: str, user: str, text: str, author: dict[str, str], at: datetime | None = None
    ) -> dict[str, Any]:
        number = self._next_id()
        message = {"id": f"m_{hashlib.sha256(f'{owner}/{user}/{number}'.encode()).hexdigest()[:40]}",
                   "message": text, "from": author, "created_time": meta_time(at or datetime.now(UTC))}  # fmt: skip
        with self._lock:
            self.conversations.setdefault((owner, user), []).append(message)
        return message

    def _conversation_id(self, owner: str, user: str) -> str:
        return "t_" + hashlib.sha256(f"{owner}/{user}".encode()).hexdigest()[:24]

    def _token_of(self, received: Received) -> str | None:
        """Where Meta takes the token from: the Authorization header, the query or the body."""
        authorization = received.headers.get("authorization", "")
        for scheme in ("Bearer ", "OAuth "):
            if authorization.startswith(scheme):
                return authorization.removeprefix(scheme)
        if "access_token" in received.query:
            return received.query["access_token"]
        return self._params(received).get("access_token")

    @staticmethod
    def _params(received: Received) -> dict[str, Any]:
        if not received.body:
            return {}
        if received.headers.get("content-type", "").startswith("application/json"):
            try:
                document = received.json()
            except ValueError:
                return {}
            return document if isinstance(document, dict) else {}
        return received.form()

    def _refusal(self, received: Received) -> Response | None:
        """The answers given before the request is looked at: a failure, the token, the limit."""
        with self._lock:
            failure = self.failures[0] if self.failures else None
            if failure is not None and not (failure.after_store and received.method == "POST"):
                self.failures.pop(0)
                return JSONResponse(failure.body, status_code=failure.status)
        status = self.take_error()
        if status is not None:
            return JSONResponse(graph_error("An unexpected error has occurred. Please retry your request later.", 2), status_code=status)  # fmt: skip
        token = self._token_of(received)
        if not token:
            return JSONResponse(
                graph_error("An access token is required to request this resource.", 104), status_code=400
            )
        if token != self.token:
            return JSONResponse(
                graph_error("Invalid OAuth access token - Cannot parse access token", 190), status_code=400
            )
        if self.expired:
            return JSONResponse(
                graph_error("Error validating access token: Session has expired on Tuesday, 01-Dec-26 09:00:00 PST. The current time is Tuesday, 01-Dec-26 10:00:00 PST.", 190, 463),
                status_code=400,
            )  # fmt: skip
        with self._lock:
            if self.take_rate_limit():
                usage = {self.page_id: [{"type": "pages", "call_count": 100, "total_cputime": 10, "total_time": 10,
                                         "estimated_time_to_regain_access": self.regain_minutes}]}  # fmt: skip
                messages = {4: "(#4) Application request limit reached", 32: "(#32) Page request limit reached",
                            613: "(#613) Calls to this api have exceeded the rate limit."}  # fmt: skip
                return JSONResponse(
                    graph_error(
                        messages.get(self.rate_limit_code, "(#17) User request limit reached"),
                        self.rate_limit_code,
                    ),
                    status_code=400,
                    headers={"X-Business-Use-Case-Usage": json.dumps(usage)},
                )
        return None

    async def _answer(self, status: int, body: dict[str, Any]) -> Response:
        """The answer to a stored write: failed after storing, dropped, held, or given."""
        with self._lock:
            failure = self.failures.pop(0) if self.failures and self.failures[0].after_store else None
            drop = self._drop > 0
            self._drop -= int(drop)
        if failure is not None:
            return JSONResponse(failure.body, status_code=failure.status)
        if drop:
            return StreamingResponse(broken_body(), media_type="application/json")
        if self.hold is not None:
            with self._lock:
                self.waiting += 1
            try:
                await self.held()
            finally:
                with self._lock:
                    self.waiting -= 1
        return JSONResponse(body, status_code=status)

    def _duplicate(self, earlier: list[dict[str, Any]], text: str, key: str) -> bool:
        mine = {self.page_id, self.ig_user_id}
        return self.refuse_duplicates and any(
            item["from"]["id"] in mine and item.get(key) == text for item in earlier
        )

    async def _comment_reply(self, comment_id: str, edge: str, received: Received) -> Response:
        comment = self.comments.get(comment_id)
        wanted = "replies" if comment is not None and comment["platform"] == "instagram" else "comments"
        if comment is None or edge != wanted:
            return JSONResponse(
                graph_error(f"Unsupported post request. Object with ID '{comment_id}' does not exist, cannot be loaded due to missing permissions, or does not support this operation. Please read the Graph API documentation at https://developers.facebook.com/docs/graph-api", 100, 33, "GraphMethodException"),
                status_code=400,
            )  # fmt: skip
        text = self._params(received).get("message")
        if not isinstance(text, str) or not text.strip():
            return JSONResponse(graph_error("(#100) The parameter message is required", 100), status_code=400)
        key = "text" if comment["platform"] == "instagram" else "message"
        if self._duplicate(self.replies.get(comment_id, []), text, key):
            return JSONResponse(graph_error("(#506) Duplicate status message", 506), status_code=400)
        reply = self._store_reply(comment_id, text, comment["platform"], self._brand(comment["platform"]))
        return await self._answer(200, {"id": reply["id"]})

    async def _send_message(self, owner: str, received: Received) -> Response:
        if owner not in (self.page_id, self.ig_user_id):
            return JSONResponse(
                graph_error(f"(#100) Param id must be a Page or an Instagram account: {owner}", 100),
                status_code=400,
            )
        instagram = owner == self.ig_user_id
        body = self._params(received)
        recipient: dict[str, Any] = body["recipient"] if isinstance(body.get("recipient"), dict) else {}
        message: dict[str, Any] = body["message"] if isinstance(body.get("message"), dict) else {}
        text = message.get("text")
        if not isinstance(text, str) or not text:
            return JSONResponse(
                graph_error("(#100) The parameter message[text] is required", 100), status_code=400
            )
        if len(text) > (1000 if instagram else 2000):
            return JSONResponse(graph_error(f"(#100) Length of param message[text] must be less than or equal to {1000 if instagram else 2000}", 100), status_code=400)  # fmt: skip
        if "comment_id" in recipient:  # a private reply: into the commenter's conversation
            comment = self.comments.get(str(recipient["comment_id"]))
            if comment is None or comment["platform"] != ("instagram" if instagram else "facebook"):
                return JSONResponse(graph_error("(#100) No matching comment was found", 100), status_code=400)
            user = comment["author"]
        elif "id" in recipient:
            user = str(recipient["id"])
            messaging_type = body.get("messaging_type")
            if not instagram and messaging_type not in ("RESPONSE", "UPDATE", "MESSAGE_TAG"):
                return JSONResponse(graph_error("(#100) param messaging_type must be one of {RESPONSE, UPDATE, MESSAGE_TAG}", 100), status_code=400)  # fmt: skip
            tagged = messaging_type == "MESSAGE_TAG" and body.get("tag") == "HUMAN_AGENT"
            if messaging_type == "MESSAGE_TAG" and not tagged:
                return JSONResponse(graph_error("(#100) Invalid tag", 100), status_code=400)
            if user in self.closed and (self.closed[user] or not tagged):
                if instagram:
                    return JSONResponse(graph_error("This message is sent outside of allowed window.", 10, 2534022), status_code=400)  # fmt: skip
                return JSONResponse(graph_error(WINDOW, 10, 2018278), status_code=400)
        else:
            return JSONResponse(
                graph_error("(#100) The parameter recipient is required", 100), status_code=400
            )
        if self._duplicate(self.conversations.get((owner, user), []), text, "message"):
            return JSONResponse(graph_error("(#506) Duplicate status message", 506), status_code=400)
        stored = self._store_message(owner, user, text, self._brand("instagram" if instagram else "facebook"))
        return await self._answer(200, {"recipient_id": user, "message_id": stored["id"]})

    def _page(
        self, items: list[dict[str, Any]], query: dict[str, str], fields: list[str], path: str
    ) -> dict[str, Any]:
        """One page of an edge with Meta's cursors (and its `next`, which carries the token)."""
        start = int(query.get("after") or 0)
        limit = min(int(query.get("limit") or self.page_size), self.page_size)
        chosen = [{key: item[key] for key in fields if key in item} for item in items[start : start + limit]]
        page: dict[str, Any] = {"data": chosen}
        if chosen:
            page["paging"] = {"cursors": {"before": str(start), "after": str(start + limit)}}
            if start + limit < len(items):
                fields_list = ",".join(fields)
                page["paging"]["next"] = f"{self.api_base_url}/{path}?access_token={self.token}&fields={fields_list}&limit={limit}&after={start + limit}"  # fmt: skip
        return page

    def _read_edge(self, node: str, edge: str, received: Received) -> Response:
        fields = [f for f in received.query.get("fields", "id").split(",") if f]
        if edge in ("comments", "replies") and node in self.comments:
            replies = list(self.replies.get(node, []))  # oldest first
            return JSONResponse(self._page(replies, received.query, fields, f"{node}/{edge}"))
        if edge == "conversations" and node in (self.page_id, self.ig_user_id):
            platform = received.query.get("platform")
            if platform != ("instagram" if node == self.ig_user_id else "messenger"):
                return JSONResponse(graph_error("(#100) Invalid platform", 100), status_code=400)
            user = received.query.get("user_id", "")
            messages = list(reversed(self.conversations.get((node, user), [])))  # newest first
            if not messages:
                return JSONResponse({"data": []})
            conversation: dict[str, Any] = {"id": self._conversation_id(node, user)}
            if received.query.get("fields", "").startswith("messages{"):
                inner = received.query["fields"].removeprefix("messages{").removesuffix("}").split(",")
                conversation["messages"] = self._page(messages, {}, inner, f"{conversation['id']}/messages")
            return JSONResponse({"data": [conversation]})
        if edge == "messages":
            for (owner, user), messages in self.conversations.items():
                if self._conversation_id(owner, user) == node:
                    return JSONResponse(
                        self._page(list(reversed(messages)), received.query, fields, f"{node}/messages")
                    )
        return JSONResponse(
            graph_error(f"Unsupported get request. Object with ID '{node}' does not exist, cannot be loaded due to missing permissions, or does not support this operation.", 100, 33, "GraphMethodException"),
            status_code=400,
        )  # fmt: skip

    def routes(self, app: FastAPI) -> None:
        prefix = f"/{self.version}"

        @app.get(prefix + "/me")
        async def me(request: Request) -> Response:
            received = await self.record(request)
            return self._refusal(received) or JSONResponse({"id": self.page_id, "name": self.page_name})

        @app.api_route(prefix + "/{node}/{edge}", methods=["GET", "POST"])
        async def edge(node: str, edge: str, request: Request) -> Response:
            received = await self.record(request)
            refused = self._refusal(received)
            if refused is not None:
                return refused
            if request.method == "GET":
                return self._read_edge(node, edge, received)
            if edge in ("comments", "replies"):
                return await self._comment_reply(node, edge, received)
            if edge == "messages":
                return await self._send_message(node, received)
            return JSONResponse(graph_error(f"(#100) Unknown edge {edge}", 100), status_code=400)


async def broken_body() -> Any:
    """A body that never comes: the connection closes after the status line."""
    raise ConnectionResetError("the fake drops this connection")
    yield b""  # pragma: no cover
