"""A fake Mastodon instance over real HTTP: posting statuses (honouring `Idempotency-Key` as
Mastodon does: the same key answers the same status, no second one) and a status's context."""

import html
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from tests.write_fakes.recorded import WriteFake

LIMIT = 500
_MENTION = re.compile(r"@([\w.-]+)@([\w-]+(?:\.[\w-]+)+)|@([\w.-]+)")


def _stamp(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class FakeMastodonWrites(WriteFake):
    """Knobs beyond the shared ones: `expire()` (the token is refused, 401)."""

    token: str = "mastodon-token"
    own_id: str = "9001"
    acct: str = "bluebird"
    host: str = "social.example"
    statuses: dict[str, dict[str, Any]] = field(default_factory=dict)
    by_key: dict[str, str] = field(default_factory=dict)  # Idempotency-Key -> the status made with it
    _next_id: int = 110_000_000_000_000_000

    def expire(self) -> None:
        self.token = "revoked"

    def status(self, acct: str, *, account_id: str = "7001", visibility: str = "public") -> str:
        """A status by someone else, to reply to; its id."""
        return self._store(f"@{self.acct} open on Sunday?", account_id, acct, None, visibility)

    def own_statuses(self) -> list[dict[str, Any]]:
        return [s for s in self.statuses.values() if s["account"]["id"] == self.own_id]

    def _content(self, text: str) -> str:
        """The status's HTML, as Mastodon renders it: a mention shows its user name only."""
        parts: list[str] = []
        last = 0
        for match in _MENTION.finditer(text):
            user = match.group(1) or match.group(3)
            host = match.group(2) or self.host
            parts.append(html.escape(text[last : match.start()]))
            parts.append(
                f'<span class="h-card" translate="no"><a href="https://{host}/@{user}" '
                f'class="u-url mention">@<span>{html.escape(user)}</span></a></span>'
            )
            last = match.end()
        parts.append(html.escape(text[last:]))
        return "<p>" + "".join(parts).replace("\n", "<br />") + "</p>"

    def _store(self, text: str, account_id: str, acct: str, in_reply_to: str | None, visibility: str) -> str:
        self._next_id += 1
        status_id = str(self._next_id)
        self.statuses[status_id] = {
            "id": status_id, "created_at": _stamp(datetime.now(UTC)), "in_reply_to_id": in_reply_to,
            "visibility": visibility, "content": self._content(text), "text": text,
            "url": f"https://{self.host}/@{acct}/{status_id}", "account": {"id": account_id, "acct": acct},
        }  # fmt: skip
        return status_id

    def _public(self, status: dict[str, Any]) -> dict[str, Any]:
        return {key: value for key, value in status.items() if key != "text"}

    def routes(self, app: FastAPI) -> None:
        @app.post("/api/v1/statuses")
        async def create(request: Request) -> Response:
            received = await self.record(request)
            if request.headers.get("authorization") != f"Bearer {self.token}":
                return JSONResponse({"error": "The access token is invalid"}, status_code=401)
            if self.take_rate_limit():
                reset = _stamp(datetime.now(UTC) + timedelta(seconds=40))
                return JSONResponse({"error": "Too many requests"}, status_code=429,
                                    headers={"x-ratelimit-limit": "300", "x-ratelimit-remaining": "0", "x-ratelimit-reset": reset})  # fmt: skip
            error = self.take_error()
            if error is not None:
                return JSONResponse(
                    {"error": "We're sorry, but something went wrong on our end."}, status_code=error
                )
            key = request.headers.get("idempotency-key")
            if key is not None and key in self.by_key:
                return JSONResponse(self._public(self.statuses[self.by_key[key]]))
            body = received.json() if "json" in request.headers.get("content-type", "") else received.form()
            text = str(body.get("status", ""))
            if len(text) > LIMIT:
                return JSONResponse(
                    {"error": f"Validation failed: Text character limit of {LIMIT} exceeded"}, status_code=422
                )
            if not text.strip():
                return JSONResponse({"error": "Validation failed: Text can't be blank"}, status_code=422)
            answered = body.get("in_reply_to_id")
            if answered is not None and answered not in self.statuses:
                return JSONResponse({"error": "Record not found"}, status_code=404)
            status_id = self._store(
                text, self.own_id, self.acct, answered, str(body.get("visibility") or "public")
            )
            if key is not None:
                self.by_key[key] = status_id
            await self.held()
            return JSONResponse(self._public(self.statuses[status_id]))

        @app.get("/api/v1/statuses/{status_id}/context")
        async def context(status_id: str, request: Request) -> Response:
            await self.record(request)
            if status_id not in self.statuses:
                return JSONResponse({"error": "Record not found"}, status_code=404)
            descendants: list[dict[str, Any]] = []
            parents = {status_id}
            for status in sorted(self.statuses.values(), key=lambda s: int(s["id"])):
                if status["in_reply_to_id"] in parents:
                    parents.add(status["id"])
                    descendants.append(self._public(status))
            ancestors: list[dict[str, Any]] = []
            parent = self.statuses[status_id]["in_reply_to_id"]
            while parent in self.statuses:
                ancestors.insert(0, self._public(self.statuses[parent]))
                parent = self.statuses[parent]["in_reply_to_id"]
            return JSONResponse({"ancestors": ancestors, "descendants": descendants})
