"""A service and its NATS connection: a connection the server closes for good stops the service."""

import asyncio
from pathlib import Path

import httpx
from fastapi import FastAPI

from shared.runtime import Runtime, liveness_router
from shared.settings import CommonSettings
from stayhuman.natsserver import EmbeddedNats
from tests.helpers import eventually


async def test_a_connection_closed_for_good_fails_liveness_and_stops_the_service(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    """nats-py does not reconnect after a protocol error from the server (here the one it sends
    for a message over max_payload): the service says so on /healthz and stops itself."""
    lost = asyncio.Event()
    settings = CommonSettings(
        nats_url=nats_server.url, database_url=f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"
    )
    runtime = Runtime("test", settings, on_lost=lost.set)
    await runtime.start()
    app = FastAPI()
    app.include_router(liveness_router(runtime))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        assert (await client.get("/healthz")).status_code == 200
        # headers are not counted by the client's own check: the server closes the connection
        await runtime.nc.publish("sh.x", b"x", headers={"Sh-Pad": "p" * (runtime.nc.max_payload + 10)})
        await asyncio.wait_for(lost.wait(), timeout=10)
        answer = await client.get("/healthz")
    assert answer.status_code == 503 and answer.json()["nats"] == "closed"
    await eventually(lambda: _true(runtime.nats_closed), timeout=5, what="the connection closed")
    await runtime.stop()


async def _true(value: bool) -> bool:
    return value
