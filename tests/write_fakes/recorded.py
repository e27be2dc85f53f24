"""What the write fakes share: each request recorded exactly as received, the knobs every
platform has (rate limits, errors, a held answer), and serving over real HTTP on loopback."""

import asyncio
import json
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Self
from urllib.parse import parse_qsl

import uvicorn
from fastapi import FastAPI, Request

from stayhuman.natsserver import free_port


@dataclass(frozen=True)
class Received:
    """One request as the fake received it: header names in lower case, the body as sent."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def form(self) -> dict[str, str]:
        return dict(parse_qsl(self.body.decode(), keep_blank_values=True))


@dataclass
class WriteFake:
    """Knobs: `rate_limited` answers the next N writes 429; `errors` answers the next writes with
    these statuses (nothing stored); `hold` stores a write, then answers it after that many
    seconds (`math.inf`: never, until the fake stops)."""

    port: int = field(default_factory=free_port)
    received: list[Received] = field(default_factory=list)
    rate_limited: int = 0
    errors: list[int] = field(default_factory=list)
    hold: float | None = None
    _server: uvicorn.Server | None = None
    _stopped: threading.Event = field(default_factory=threading.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def requests(self, method: str | None = None, path: str | None = None) -> list[Received]:
        """The requests received, those with this method and path when given."""
        return [
            r
            for r in list(self.received)
            if (method is None or r.method == method) and (path is None or r.path == path)
        ]

    async def record(self, request: Request) -> Received:
        received = Received(
            method=request.method,
            path=request.url.path,
            query=dict(request.query_params),
            headers={name.lower(): value for name, value in request.headers.items()},
            body=await request.body(),
        )
        self.received.append(received)
        return received

    def take_rate_limit(self) -> bool:
        if self.rate_limited > 0:
            self.rate_limited -= 1
            return True
        return False

    def take_error(self) -> int | None:
        return self.errors.pop(0) if self.errors else None

    async def held(self) -> None:
        """Wait as long as `hold` says (a write is stored before this, answered after)."""
        if self.hold is None:
            return
        # Stopping the fake ends the wait (a thread waits: the event is set from the test's thread).
        await asyncio.to_thread(self._stopped.wait, self.hold if math.isfinite(self.hold) else None)

    def routes(self, app: FastAPI) -> None:
        raise NotImplementedError

    def start(self) -> Self:
        app = FastAPI()
        self.routes(app)
        self._server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_config=None))
        threading.Thread(target=self._server.run, daemon=True).start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the fake {type(self).__name__} did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self._stopped.set()
        if self._server is not None:
            self._server.should_exit = True
