"""An operator's endpoint receiving StayHuman's replies, as one should be written: it checks the
signature (HMAC-SHA256 of `timestamp.body` with the shared secret, a recent timestamp) and
takes each delivery once (the same `X-StayHuman-Delivery` answers the same id again)."""

import hashlib
import hmac
import time
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from tests.write_fakes.recorded import Received, WriteFake

TOLERANCE = 300  # seconds a signed timestamp may be old


def signed(secret: str, received: Received) -> bool:
    """The request carries a valid, recent signature of its own body."""
    timestamp = received.headers.get("x-stayhuman-timestamp", "")
    given = received.headers.get("x-stayhuman-signature", "")
    if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > TOLERANCE:
        return False
    expected = hmac.new(
        secret.encode(), timestamp.encode() + b"." + received.body, hashlib.sha256
    ).hexdigest()
    return hmac.compare_digest(given, f"sha256={expected}")


@dataclass
class FakeReceiver(WriteFake):
    """Knobs beyond the shared ones: `give_ids` (answer `{"id": ...}`, else an empty 204) and
    `refuse` (answer this 4xx status with an error, nothing taken)."""

    secret: str = "webhook-secret"
    path: str = "/stayhuman/replies"
    give_ids: bool = True
    refuse: int | None = None
    deliveries: dict[str, dict[str, Any]] = field(default_factory=dict)  # delivery id -> body taken
    answered: dict[str, str] = field(default_factory=dict)  # delivery id -> the id answered
    bad_signatures: int = 0

    @property
    def endpoint(self) -> str:
        return self.url + self.path

    def routes(self, app: FastAPI) -> None:
        @app.post(self.path)
        async def receive(request: Request) -> Response:
            received = await self.record(request)
            if not signed(self.secret, received):
                self.bad_signatures += 1
                return JSONResponse({"error": "bad signature"}, status_code=401)
            if self.take_rate_limit():
                return JSONResponse({"error": "slow down"}, status_code=429, headers={"retry-after": "7"})
            error = self.take_error()
            if error is not None:
                return JSONResponse({"error": "the receiver failed"}, status_code=error)
            if self.refuse is not None:
                return JSONResponse({"error": "this conversation is closed here"}, status_code=self.refuse)
            delivery = received.headers.get("x-stayhuman-delivery", "")
            if delivery not in self.deliveries:
                self.deliveries[delivery] = received.json()
                self.answered[delivery] = f"ticket-{len(self.deliveries)}"
            await self.held()
            if not self.give_ids:
                return Response(status_code=204)
            return JSONResponse({"id": self.answered[delivery]}, status_code=201)
