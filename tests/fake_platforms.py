"""Local fakes of platform APIs, served over real HTTP on loopback for the poller tests."""

import asyncio
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

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
    requests: list[str] = field(default_factory=list)
    delay: float = 0.0
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

    def _page(self, items: list[dict[str, Any]], request: Request) -> JSONResponse:
        self.requests.append(str(request.url))
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return JSONResponse({"error": "The access token is invalid"}, status_code=401)
        with self._lock:
            if self.failures:
                status, headers = self.failures.pop(0)
                return JSONResponse({"error": "try later"}, status_code=status, headers=headers)
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
        async def notifications(request: Request) -> JSONResponse:
            await asyncio.sleep(self.delay)
            return self._page(self.notifications, request)

        @app.get("/api/v1/accounts/{account_id}/statuses")
        async def statuses(account_id: str, request: Request) -> JSONResponse:
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
