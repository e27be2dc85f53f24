"""A fake of the YouTube Data API's comment writes and Google's token endpoint, over real HTTP
on loopback: `comments.insert` (a reply in a thread), `comments.list` by parentId, and the
refresh-token grant, with the errors Google documents and the daily quota counted in units
(50 an insert, 1 a list).

Every request is recorded exactly as received (`received`). Knobs, beyond the shared ones
(`hold`: store, then answer late or never; `errors`; `rate_limited`: see WriteFake):
`expire_token`, `revoke`, `rotate_refresh_tokens`, `disable_comments`, `daily_quota`, `fail`
(before or after storing) and `drop`.
"""

import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from tests.write_fakes.meta import Failure, broken_body
from tests.write_fakes.recorded import Received, WriteFake

INSERT_UNITS = 50
LIST_UNITS = 1
SCOPE = "https://www.googleapis.com/auth/youtube.force-ssl"


def google_error(
    status: int, message: str, reason: str, domain: str = "youtube.commentThread"
) -> dict[str, Any]:
    return {
        "error": {
            "code": status,
            "message": message,
            "errors": [{"message": message, "domain": domain, "reason": reason}],
        }
    }


def youtube_time(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass
class FakeYouTube(WriteFake):
    """One channel's comment threads (`add_thread`), the OAuth client it replies with, and
    the Google project's quota. `threads` holds each thread's replies, oldest first."""

    channel: str = "UCbluebirdcoffee0000001"
    channel_name: str = "Bluebird Coffee"
    client_id: str = "fake-client.apps.googleusercontent.com"
    client_secret: str = "fake-client-secret"
    refresh_token: str = "1//fake-refresh-token"
    access_token: str = "ya29.fake-access-0"
    daily_quota: int = 10_000
    units_used: int = 0
    page_size: int = 20  # comments.list's default maxResults
    rotate_refresh_tokens: bool = False  # the token endpoint sends a new refresh token too
    threads: dict[str, dict[str, Any]] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    expired: set[str] = field(default_factory=set)  # access tokens past their hour
    revoked: bool = False
    refreshes: int = 0
    waiting: int = 0  # inserts stored whose answer is being held
    _drop: int = 0
    _counter: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def api_base_url(self) -> str:
        return f"{self.url}/youtube/v3"

    @property
    def token_url(self) -> str:
        return f"{self.url}/token"

    @property
    def units_left(self) -> int:
        return self.daily_quota - self.units_used

    def credentials(self) -> dict[str, str]:
        """An account's reply credentials pointing at this fake."""
        return {"access_token": self.access_token, "refresh_token": self.refresh_token,
                "client_id": self.client_id, "client_secret": self.client_secret,
                "api_base_url": self.api_base_url, "token_url": self.token_url}  # fmt: skip

    # --- knobs -------------------------------------------------------------------------------

    def add_thread(self, thread_id: str, *, video: str = "vid00000001") -> str:
        """A customer's top-level comment on a video of the channel: a thread to reply in."""
        with self._lock:
            self.threads[thread_id] = {"video": video, "replies": [], "disabled": False}
        return thread_id

    def disable_comments(self, thread_id: str) -> None:
        self.threads[thread_id]["disabled"] = True

    def expire_token(self) -> None:
        """The access token's hour is over: it is refused until a refresh gives a new one."""
        self.expired.add(self.access_token)

    def revoke(self) -> None:
        """The person revoked the app's access: the refresh token no longer works."""
        self.revoked = True

    def fail(self, status: int, reason: str = "backendError", *, after_store: bool = False) -> None:
        """Answer the next API request with `status` (an insert is stored first when `after_store`)."""
        body = google_error(status, "Backend Error" if status >= 500 else reason, reason, "global")
        self.failures.append(Failure(status, body, after_store))

    def drop(self) -> None:
        self._drop += 1

    def seed_reply(self, thread_id: str, text: str, at: datetime, *, by_channel: bool = True) -> str:
        author = (
            (self.channel, self.channel_name) if by_channel else ("UCsomeoneelse000000001", "Someone Else")
        )
        return self._store(thread_id, text, author, at)["id"]

    def stored(self) -> list[dict[str, Any]]:
        """Every reply of the channel's, oldest first."""
        with self._lock:
            replies = [r for t in self.threads.values() for r in t["replies"]]
        return [r for r in replies if r["snippet"]["authorChannelId"]["value"] == self.channel]

    # --- the API -------------------------------------------------------------------------------

    def _store(
        self, thread_id: str, text: str, author: tuple[str, str], at: datetime | None = None
    ) -> dict[str, Any]:
        with self._lock:
            self._counter += 1
            created = youtube_time(at or datetime.now(UTC))
            thread = self.threads[thread_id]
            comment = {
                "kind": "youtube#comment",
                "etag": f"etag{self._counter}",
                "id": f"{thread_id}.AbCdEf{self._counter:06d}",
                "snippet": {
                    "channelId": self.channel,
                    "videoId": thread["video"],
                    "textDisplay": text,
                    "textOriginal": text,
                    "parentId": thread_id,
                    "authorDisplayName": author[1],
                    "authorChannelUrl": f"http://www.youtube.com/channel/{author[0]}",
                    "authorChannelId": {"value": author[0]},
                    "canRate": True,
                    "viewerRating": "none",
                    "likeCount": 0,
                    "publishedAt": created,
                    "updatedAt": created,
                },
            }
            thread["replies"].append(comment)
        return comment

    def _refusal(self, received: Received, units: int) -> Response | None:
        """The answers given before the request is looked at: a failure, the token, quota, limits."""
        with self._lock:
            failure = self.failures[0] if self.failures else None
            if failure is not None and not (failure.after_store and received.method == "POST"):
                self.failures.pop(0)
                return JSONResponse(failure.body, status_code=failure.status)
        status = self.take_error()
        if status is not None:
            return JSONResponse(
                google_error(status, "Backend Error", "backendError", "global"), status_code=status
            )
        token = received.headers.get("authorization", "").removeprefix("Bearer ")
        if token != self.access_token or token in self.expired:
            body = google_error(401, "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.", "authError", "global")  # fmt: skip
            body["error"]["status"] = "UNAUTHENTICATED"
            return JSONResponse(
                body,
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/"'},
            )
        with self._lock:
            if self.units_used + units > self.daily_quota:
                return JSONResponse(
                    google_error(403, 'The request cannot be completed because you have exceeded your <a href="/youtube/v3/getting-started#quota">quota</a>.', "quotaExceeded", "youtube.quota"),
                    status_code=403,
                )  # fmt: skip
            self.units_used += units
            if self.take_rate_limit():
                return JSONResponse(
                    google_error(
                        429, "Resource has been exhausted (e.g. check quota).", "rateLimitExceeded", "global"
                    ),
                    status_code=429,
                    headers={"Retry-After": "30"},
                )
        return None

    async def _answer(self, body: dict[str, Any]) -> Response:
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
        return JSONResponse(body)

    async def _insert(self, received: Received) -> Response:
        if received.query.get("part") != "snippet":
            return JSONResponse(
                google_error(400, "'part' must be snippet", "invalidPart", "global"), status_code=400
            )
        try:
            snippet = received.json()["snippet"]
            parent, text = snippet["parentId"], snippet["textOriginal"]
        except (ValueError, KeyError, TypeError):
            return JSONResponse(google_error(400, "The comment's parentId and textOriginal are required.", "parentIdMissing", "youtube.comment"), status_code=400)  # fmt: skip
        thread = self.threads.get(parent)
        if thread is None:
            return JSONResponse(google_error(404, "The specified parent comment could not be found.", "parentCommentNotFound", "youtube.comment"), status_code=404)  # fmt: skip
        if thread["disabled"]:
            return JSONResponse(google_error(403, "The video identified by the videoId parameter has disabled comments.", "commentsDisabled"), status_code=403)  # fmt: skip
        if not isinstance(text, str) or not text.strip() or len(text) > 10_000:
            return JSONResponse(google_error(400, "The comment's text is empty or too long.", "commentTextTooLong", "youtube.comment"), status_code=400)  # fmt: skip
        return await self._answer(self._store(parent, text, (self.channel, self.channel_name)))

    def _list(self, received: Received) -> Response:
        parent = received.query.get("parentId", "")
        if received.query.get("part") != "snippet" or parent not in self.threads:
            return JSONResponse(google_error(404, "The comment identified by the parentId parameter could not be found.", "commentNotFound", "youtube.comment"), status_code=404)  # fmt: skip
        replies = list(self.threads[parent]["replies"])
        start = int(received.query.get("pageToken") or 0)
        limit = min(int(received.query.get("maxResults") or self.page_size), 100, self.page_size)
        page: dict[str, Any] = {
            "kind": "youtube#commentListResponse",
            "items": replies[start : start + limit],
        }
        if start + limit < len(replies):
            page["nextPageToken"] = str(start + limit)
        return JSONResponse(page)

    async def _token(self, received: Received) -> Response:
        form = received.form()
        if form.get("client_id") != self.client_id or form.get("client_secret") != self.client_secret:
            return JSONResponse(
                {"error": "invalid_client", "error_description": "Unauthorized"}, status_code=401
            )
        if form.get("grant_type") != "refresh_token":
            return JSONResponse({"error": "unsupported_grant_type", "error_description": "Invalid grant_type"}, status_code=400)  # fmt: skip
        if self.revoked or form.get("refresh_token") != self.refresh_token:
            return JSONResponse({"error": "invalid_grant", "error_description": "Token has been expired or revoked."}, status_code=400)  # fmt: skip
        with self._lock:
            self.refreshes += 1
            self.access_token = f"ya29.fake-access-{self.refreshes}"
            answer: dict[str, Any] = {"access_token": self.access_token, "expires_in": 3599, "scope": SCOPE, "token_type": "Bearer"}  # fmt: skip
            if self.rotate_refresh_tokens:
                self.refresh_token = f"1//fake-refresh-token-{self.refreshes}"
                answer["refresh_token"] = self.refresh_token
        return JSONResponse(answer)

    def routes(self, app: FastAPI) -> None:
        @app.post("/youtube/v3/comments")
        async def insert(request: Request) -> Response:
            received = await self.record(request)
            return self._refusal(received, INSERT_UNITS) or await self._insert(received)

        @app.get("/youtube/v3/comments")
        async def listing(request: Request) -> Response:
            received = await self.record(request)
            return self._refusal(received, LIST_UNITS) or self._list(received)

        @app.post("/token")
        async def token(request: Request) -> Response:
            return await self._token(await self.record(request))
