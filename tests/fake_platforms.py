"""Local fakes of platform APIs, served over real HTTP on loopback for the poller tests."""

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from stayhuman.natsserver import free_port


@dataclass
class FakeMastodon:
    """The notifications and account-statuses endpoints, paged with `min_id` like Mastodon."""

    token: str = "fake-mastodon-token"
    own_id: str = "9001"
    port: int = field(default_factory=free_port)
    notifications: list[dict[str, Any]] = field(default_factory=list)
    statuses: list[dict[str, Any]] = field(default_factory=list)
    failures: list[tuple[int, dict[str, str]]] = field(default_factory=list)  # answered before any page
    answers: list[bytes] = field(default_factory=list)  # bodies answered (200) before any page
    requests: list[str] = field(default_factory=list)
    delay: float = 0.0
    streams: int = 0  # connections to the streaming API so far
    stream_generation: int = 0  # bump it to drop every open stream
    _server: uvicorn.Server | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def mention(self, number: int, *, text: str = "any vegan pastries today?") -> dict[str, Any]:
        created = (datetime.now(UTC) - timedelta(seconds=5)).isoformat().replace("+00:00", "Z")
        author = {"id": f"{70000 + number}", "username": f"fan{number}", "acct": f"fan{number}@fosstodon.example",
                  "display_name": f"Fan {number}", "followers_count": number}  # fmt: skip
        notification = {
            "id": str(1_000_000 + number), "type": "mention", "created_at": created, "account": author,
            "status": {"id": str(5_000_000 + number), "created_at": created, "in_reply_to_id": None,
                       "visibility": "public", "content": f"<p>@bluebird {text} #{number}</p>", "account": author,
                       "url": f"https://fosstodon.example/@fan{number}/{5_000_000 + number}"},
        }  # fmt: skip
        with self._lock:
            self.notifications.append(notification)
        return notification

    def own_reply(self, number: int, to_status: str) -> None:
        created = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        with self._lock:
            self.statuses.append(
                {
                    "id": str(9_000_000 + number),
                    "in_reply_to_id": to_status,
                    "visibility": "public",
                    "content": "<p>Yes, oat croissants!</p>",
                    "created_at": created,
                    "account": {"id": self.own_id, "acct": "bluebird"},
                }
            )

    def _page(self, items: list[dict[str, Any]], request: Request) -> Response:
        self.requests.append(str(request.url))
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return JSONResponse({"error": "The access token is invalid"}, status_code=401)
        with self._lock:
            if self.failures:
                status, headers = self.failures.pop(0)
                return JSONResponse({"error": "try later"}, status_code=status, headers=headers)
            if self.answers:
                return Response(self.answers.pop(0), media_type="application/json")
            ordered = sorted(items, key=lambda item: int(item["id"]))
        limit = int(request.query_params.get("limit", 20))
        min_id = request.query_params.get("min_id")
        if min_id is not None:
            page = [item for item in ordered if int(item["id"]) > int(min_id)][:limit]
        else:
            page = ordered[-limit:]
        return JSONResponse(list(reversed(page)))  # newest first

    def start(self) -> "FakeMastodon":
        app = FastAPI()

        @app.get("/api/v1/notifications")
        async def notifications(request: Request) -> Response:
            await asyncio.sleep(self.delay)
            return self._page(self.notifications, request)

        @app.get("/api/v1/streaming/user/notification")
        async def streaming(request: Request) -> StreamingResponse:
            if request.headers.get("authorization") != f"Bearer {self.token}":
                return JSONResponse({"error": "The access token is invalid"}, status_code=401)  # type: ignore[return-value]
            self.streams += 1
            generation = self.stream_generation

            async def events() -> AsyncIterator[bytes]:
                seen = len(self.notifications)
                yield b":)\n\n"
                while generation == self.stream_generation:
                    if len(self.notifications) > seen:
                        seen = len(self.notifications)
                        yield b"event: notification\ndata: {}\n\n"
                    await asyncio.sleep(0.05)

            return StreamingResponse(events(), media_type="text/event-stream")

        @app.get("/api/v1/accounts/{account_id}/statuses")
        async def statuses(account_id: str, request: Request) -> Response:
            return self._page(self.statuses if account_id == self.own_id else [], request)

        self._server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_config=None))
        threading.Thread(target=self._server.run, daemon=True).start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the fake Mastodon did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True


def _stamp(number: int) -> str:
    """Distinct, increasing times (the fakes' items are ordered by them)."""
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
    return (base + timedelta(milliseconds=number)).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _indexed_at(item: Any) -> str:
    """When Bluesky indexed a feed item or notification (a repost: when it was reposted)."""
    if not isinstance(item, dict):
        return ""
    reason = item.get("reason")
    if isinstance(reason, dict) and "indexedAt" in reason:
        return str(reason["indexedAt"])
    post = item.get("post")
    return str((post if isinstance(post, dict) else item).get("indexedAt", ""))


def _serve(app: FastAPI, port: int) -> uvicorn.Server:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None))
    threading.Thread(target=server.run, daemon=True).start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("a fake platform did not start")
        time.sleep(0.02)
    return server


@dataclass
class FakeBluesky:
    """createSession, listNotifications and getAuthorFeed: newest first, paged by `cursor`."""

    did: str = "did:plc:bluebirdcoffee000000000"
    app_password: str = "fake-app-password"
    port: int = field(default_factory=free_port)
    notifications: list[Any] = field(default_factory=list)
    feed: list[Any] = field(default_factory=list)
    sessions: int = 0
    calls: int = 0  # listNotifications and getAuthorFeed requests so far
    answers: list[bytes] = field(default_factory=list)  # bodies answered (200) before any page
    _server: uvicorn.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def mention(self, number: int, *, indexed_at: str | None = None) -> str:
        """A mention; `indexed_at` gives it a time of its own (several may share one)."""
        uri = f"at://did:plc:fan{number}/app.bsky.feed.post/m{number}"
        author = {
            "did": f"did:plc:fan{number}",
            "handle": f"fan{number}.bsky.social",
            "displayName": f"Fan {number}",
        }
        self.notifications.append(
            {"uri": uri, "cid": f"c{number}", "author": author, "reason": "mention", "indexedAt": indexed_at or _stamp(number),
             "record": {"$type": "app.bsky.feed.post", "createdAt": indexed_at or _stamp(number), "text": f"@bluebird.coffee open? {number}"}}
        )  # fmt: skip
        return uri

    def like(self, number: int) -> None:
        self.notifications.append(
            {"uri": f"at://x/like/{number}", "author": {"did": "did:plc:x", "handle": "x"}, "reason": "like",
             "indexedAt": _stamp(number), "record": {}}
        )  # fmt: skip

    def own_reply(self, number: int, root: str) -> None:
        self.feed.append(
            {"post": {"uri": f"at://{self.did}/app.bsky.feed.post/r{number}", "indexedAt": _stamp(number),
                      "author": {"did": self.did, "handle": "bluebird.coffee", "displayName": "Bluebird"},
                      "record": {"text": "Yes, till 6!", "createdAt": _stamp(number),
                                 "reply": {"root": {"uri": root}, "parent": {"uri": root}}}}}
        )  # fmt: skip

    def expire_sessions(self) -> None:
        self.sessions += 1  # tokens of earlier sessions stop working

    def _page(self, items: list[Any], key: str, request: Request) -> Response:
        self.calls += 1
        if request.headers.get("authorization") != f"Bearer jwt-{self.sessions}":
            return JSONResponse({"error": "ExpiredToken"}, status_code=401)
        if self.answers:
            return Response(self.answers.pop(0), media_type="application/json")
        ordered = sorted(items, key=_indexed_at, reverse=True)  # stable: equal times keep their order
        start = int(request.query_params.get("cursor", 0))
        limit = int(request.query_params.get("limit", 50))
        answer: dict[str, Any] = {key: ordered[start : start + limit]}
        if start + limit < len(ordered):
            answer["cursor"] = str(start + limit)
        return JSONResponse(answer)

    def start(self) -> "FakeBluesky":
        app = FastAPI()

        @app.post("/xrpc/com.atproto.server.createSession")
        async def session(request: Request) -> JSONResponse:
            body = await request.json()
            if body.get("identifier") != self.did or body.get("password") != self.app_password:
                return JSONResponse({"error": "AuthenticationRequired"}, status_code=401)
            return JSONResponse({"accessJwt": f"jwt-{self.sessions}", "did": self.did})

        @app.get("/xrpc/app.bsky.notification.listNotifications")
        async def notifications(request: Request) -> Response:
            return self._page(self.notifications, "notifications", request)

        @app.get("/xrpc/app.bsky.feed.getAuthorFeed")
        async def author_feed(request: Request) -> Response:
            return self._page(self.feed, "feed", request)

        self._server = _serve(app, self.port)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True


@dataclass
class FakeYouTube:
    """commentThreads.list for a channel: newest activity first, paged by `pageToken`."""

    channel: str = "UCbluebirdcoffee0000001"
    key: str = "fake-youtube-key"
    port: int = field(default_factory=free_port)
    threads: dict[str, Any] = field(default_factory=dict)
    calls: int = 0  # each one costs a unit of the daily quota
    token_on_last_page: bool = False  # as the documented page shows: a token even when nothing follows
    answers: list[bytes] = field(default_factory=list)  # bodies answered (200) before any page
    _server: uvicorn.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @staticmethod
    def _comment(comment_id: str, author: str, name: str, text: str, at: str) -> dict[str, Any]:
        return {"id": comment_id, "snippet": {"authorDisplayName": name, "authorChannelId": {"value": author},
                "videoId": "vid1", "textOriginal": text, "publishedAt": at, "updatedAt": at}}  # fmt: skip

    def comment(self, number: int, *, at: str | None = None) -> str:
        """A new thread; `at` gives it a time of its own (several may share one)."""
        thread = f"Ugthread{number:04d}"
        self.threads[thread] = {
            "id": thread,
            "snippet": {"videoId": "vid1", "topLevelComment": self._comment(thread, f"UCfan{number}", f"Fan {number}", f"Which grinder? {number}", at or _stamp(number))},
        }  # fmt: skip
        return thread

    def channel_reply(self, number: int, thread: str) -> None:
        reply = self._comment(
            f"{thread}.r{number}", self.channel, "Bluebird Coffee", "A Comandante C40!", _stamp(number)
        )
        self.threads[thread].setdefault("replies", {"comments": []})["comments"].append(reply)

    def start(self) -> "FakeYouTube":
        app = FastAPI()

        def activity(thread: Any) -> str:
            """The thread's latest update (what order=time sorts by); "" for what has none."""
            try:
                times = [thread["snippet"]["topLevelComment"]["snippet"]["updatedAt"]]
                times += [r["snippet"]["updatedAt"] for r in thread.get("replies", {}).get("comments", [])]
                return str(max(times))
            except (KeyError, TypeError, AttributeError):
                return ""

        @app.get("/youtube/v3/commentThreads")
        async def threads(request: Request) -> Response:
            self.calls += 1
            if request.query_params.get("key") != self.key:
                return JSONResponse({"error": {"code": 400, "message": "API key not valid"}}, status_code=400)
            if request.query_params.get("allThreadsRelatedToChannelId") != self.channel:
                return JSONResponse({"error": {"code": 404}}, status_code=404)
            if self.answers:
                return Response(self.answers.pop(0), media_type="application/json")
            ordered = sorted(self.threads.values(), key=activity, reverse=True)
            start = int(request.query_params.get("pageToken") or 0)
            limit = int(request.query_params.get("maxResults", 20))
            answer: dict[str, Any] = {
                "kind": "youtube#commentThreadListResponse",
                "items": ordered[start : start + limit],
            }
            if start + limit < len(ordered) or self.token_on_last_page:
                answer["nextPageToken"] = str(start + limit)
            return JSONResponse(answer)

        self._server = _serve(app, self.port)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
