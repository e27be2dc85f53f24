"""A fake of X's write API over real HTTP: reply posts, DMs, the OAuth 2.0 refresh (which rotates
the refresh token), and the reads a lost post is looked for in (the brand's timeline, recent
search, a DM conversation's events)."""

import base64
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from tests.write_fakes.recorded import WriteFake

NOT_MENTIONED = (
    "Reply to this conversation is not allowed because you have not been mentioned or otherwise "
    "engaged by the author of the post you are replying to."
)
DUPLICATE = "You are not allowed to create a Tweet with duplicate content."


def _problem(status: int, title: str, detail: str) -> JSONResponse:
    return JSONResponse(
        {"title": title, "type": "about:blank", "status": status, "detail": detail}, status_code=status
    )


def _stamp(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class FakeX(WriteFake):
    """Knobs beyond the shared ones: `expire()` (the access tokens stop working), `not_mentioned`
    (replies to these post ids are refused as X refuses them), a duplicate text is refused as X
    does; `client_secret` makes the token endpoint require HTTP Basic auth."""

    own_id: str = "1500000000000000001"
    handle: str = "bluebirdcoffee"
    client_id: str = "stayhuman-x-client"
    client_secret: str | None = None
    access_tokens: set[str] = field(default_factory=lambda: {"x-access-0"})
    refresh_token: str = "x-refresh-0"
    not_mentioned: set[str] = field(default_factory=set)
    tweets: list[dict[str, Any]] = field(default_factory=list)
    dm_events: list[dict[str, Any]] = field(default_factory=list)
    issued: int = 0
    _next_id: int = 1_900_000_000_000_000_000

    def _id(self) -> str:
        self._next_id += 1
        return str(self._next_id)

    def expire(self) -> None:
        self.access_tokens.clear()

    def tweet(self, author_id: str, handle: str, *, text: str = "@bluebirdcoffee open late?") -> str:
        """A post by someone else, to reply to; its id."""
        tweet_id = self._id()
        self.tweets.append(
            {"id": tweet_id, "text": text, "author_id": author_id, "handle": handle, "conversation_id": tweet_id,
             "created_at": datetime.now(UTC), "referenced_tweets": []}
        )  # fmt: skip
        return tweet_id

    def own_posts(self) -> list[dict[str, Any]]:
        return [tweet for tweet in self.tweets if tweet["author_id"] == self.own_id]

    def _authorized(self, request: Request) -> bool:
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        return token in self.access_tokens

    def _write_refusal(self, request: Request) -> Response | None:
        if not self._authorized(request):
            return _problem(401, "Unauthorized", "Unauthorized")
        if self.take_rate_limit():
            reset = int(datetime.now(UTC).timestamp()) + 30
            response = _problem(429, "Too Many Requests", "Too Many Requests")
            response.headers.update(
                {"x-rate-limit-limit": "100", "x-rate-limit-remaining": "0", "x-rate-limit-reset": str(reset)}
            )
            return response
        error = self.take_error()
        if error is not None:
            return _problem(error, "Service Unavailable", "Service Unavailable")
        return None

    @staticmethod
    def _fields(item: dict[str, Any], wanted: str, always: tuple[str, ...]) -> dict[str, Any]:
        names = set(always) | {name for name in wanted.split(",") if name}
        shown = {key: value for key, value in item.items() if key in names}
        if "created_at" in shown:
            shown["created_at"] = _stamp(shown["created_at"])
        if not shown.get("referenced_tweets"):
            shown.pop("referenced_tweets", None)
        return shown

    @staticmethod
    def _page(items: list[dict[str, Any]], request: Request) -> dict[str, Any]:
        start = int(request.query_params.get("pagination_token") or 0)
        size = int(request.query_params.get("max_results", 10))
        page = items[start : start + size]
        meta: dict[str, Any] = {"result_count": len(page)}
        if start + size < len(items):
            meta["next_token"] = str(start + size)
        return {"data": page, "meta": meta} if page else {"meta": meta}

    def _timeline(self, author: str, request: Request) -> list[dict[str, Any]]:
        start = request.query_params.get("start_time")
        since = datetime.fromisoformat(start.replace("Z", "+00:00")) if start else None
        chosen = [
            t for t in self.tweets if t["author_id"] == author and (since is None or t["created_at"] >= since)
        ]
        wanted = request.query_params.get("tweet.fields", "")
        return [
            self._fields(t, wanted, ("id", "text"))
            for t in sorted(chosen, key=lambda t: int(t["id"]), reverse=True)
        ]

    def routes(self, app: FastAPI) -> None:
        @app.post("/2/tweets")
        async def create(request: Request) -> Response:
            await self.record(request)
            refusal = self._write_refusal(request)
            if refusal is not None:
                return refusal
            body = await request.json()
            answered = str(body.get("reply", {}).get("in_reply_to_tweet_id", ""))
            if answered in self.not_mentioned:
                return _problem(403, "Forbidden", NOT_MENTIONED)
            if any(t.get("written") == body["text"] for t in self.own_posts()):
                return _problem(403, "Forbidden", DUPLICATE)
            parent = next((t for t in self.tweets if t["id"] == answered), None)
            tweet_id = self._id()
            # X shows a reply with the handle it answers in front of the text written.
            shown = f"@{parent['handle']} {body['text']}" if parent else body["text"]
            self.tweets.append(
                {"id": tweet_id, "text": shown, "written": body["text"], "author_id": self.own_id, "handle": self.handle,
                 "conversation_id": parent["conversation_id"] if parent else answered or tweet_id,
                 "in_reply_to_user_id": parent["author_id"] if parent else None,
                 "created_at": datetime.now(UTC),
                 "referenced_tweets": [{"type": "replied_to", "id": answered}] if answered else []}
            )  # fmt: skip
            await self.held()
            return JSONResponse(
                {"data": {"id": tweet_id, "text": body["text"], "edit_history_tweet_ids": [tweet_id]}},
                status_code=201,
            )

        @app.post("/2/dm_conversations/{conversation}/messages")
        async def message(conversation: str, request: Request) -> Response:
            await self.record(request)
            refusal = self._write_refusal(request)
            if refusal is not None:
                return refusal
            body = await request.json()
            event_id = self._id()
            self.dm_events.append(
                {"id": event_id, "event_type": "MessageCreate", "text": body["text"], "sender_id": self.own_id,
                 "dm_conversation_id": conversation, "created_at": datetime.now(UTC)}
            )  # fmt: skip
            await self.held()
            return JSONResponse(
                {"data": {"dm_conversation_id": conversation, "dm_event_id": event_id}}, status_code=201
            )

        @app.get("/2/users/{author}/tweets")
        async def timeline(author: str, request: Request) -> Response:
            await self.record(request)
            if not self._authorized(request):
                return _problem(401, "Unauthorized", "Unauthorized")
            return JSONResponse(self._page(self._timeline(author, request), request))

        @app.get("/2/tweets/search/recent")
        async def search(request: Request) -> Response:
            await self.record(request)
            if not self._authorized(request):
                return _problem(401, "Unauthorized", "Unauthorized")
            terms = dict(
                term.split(":", 1) for term in request.query_params.get("query", "").split() if ":" in term
            )
            found = self._timeline(terms.get("from", ""), request)
            if "conversation_id" in terms:
                ids = {t["id"] for t in self.tweets if t["conversation_id"] == terms["conversation_id"]}
                found = [t for t in found if t["id"] in ids]
            return JSONResponse(self._page(found, request))

        @app.get("/2/dm_conversations/{conversation}/dm_events")
        async def events(conversation: str, request: Request) -> Response:
            await self.record(request)
            if not self._authorized(request):
                return _problem(401, "Unauthorized", "Unauthorized")
            wanted = request.query_params.get("dm_event.fields", "")
            chosen = [e for e in reversed(self.dm_events) if e["dm_conversation_id"] == conversation]
            return JSONResponse(
                self._page([self._fields(e, wanted, ("id", "event_type")) for e in chosen], request)
            )

        @app.post("/2/oauth2/token")
        async def token(request: Request) -> Response:
            received = await self.record(request)
            form = received.form()
            invalid = JSONResponse(
                {"error": "invalid_request", "error_description": "Value passed for the token was invalid."},
                status_code=400,
            )
            if self.client_secret is not None:
                expected = base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()
                if request.headers.get("authorization") != f"Basic {expected}":
                    return JSONResponse(
                        {
                            "error": "unauthorized_client",
                            "error_description": "Missing valid authorization header",
                        },
                        status_code=401,
                    )
            if form.get("grant_type") != "refresh_token" or form.get("client_id") != self.client_id:
                return invalid
            if form.get("refresh_token") != self.refresh_token:
                return invalid
            self.issued += 1
            access = f"x-access-{self.issued}"
            self.access_tokens.add(access)
            self.refresh_token = f"x-refresh-{self.issued}"  # rotated: the old one stops working
            return JSONResponse(
                {"token_type": "bearer", "expires_in": 7200, "access_token": access,
                 "scope": "tweet.read tweet.write users.read dm.read dm.write offline.access",
                 "refresh_token": self.refresh_token}
            )  # fmt: skip
