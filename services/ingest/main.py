"""The ingest service's composition root."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from services.ingest.accounts import AccountDirectory, TokenDirectory
from services.ingest.batch import router as batch_api
from services.ingest.connectors.language import warm_up
from services.ingest.guard import RequestGuard
from services.ingest.leases import Leases
from services.ingest.platforms import router as platform_webhooks
from services.ingest.pollers import PollerSupervisor
from services.ingest.publisher import InteractionPublisher
from services.ingest.settings import IngestSettings
from services.ingest.silence import SilenceWatch
from services.ingest.webhooks import generic_account, generic_endpoint
from services.ingest.webhooks import router as webhooks
from shared import subjects
from shared.runtime import Runtime, install_error_handlers, liveness_router, ops_app


def polling_units(settings: IngestSettings) -> int:
    """The daily YouTube units the pollers may spend: the quota less what replies keep (at least one)."""
    return max(1, settings.youtube_daily_quota - settings.youtube_reply_units)


class IngestApp(FastAPI):
    """FastAPI, with the generic webhook answered ahead of it when `generic` is set: the
    route every platform without a connector posts to, at the highest rate, skips the
    middleware, routing and parameter resolution that cost about a third of its CPU."""

    generic: Any = None  # the generic webhook behind the request guard, or None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            self.generic is not None
            and scope["type"] == "http"
            and scope["method"] == "POST"
            and not scope.get("root_path")
            and generic_account(scope["path"]) is not None
        ):
            await self.generic(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def create_app(settings: IngestSettings, *, metrics_dir: Path | None = None) -> FastAPI:
    """The ingest app. `metrics_dir`: the folder where each of several worker processes writes
    its metrics (Prometheus multiprocess mode): `/metrics` serves them added up."""
    runtime = Runtime("ingest", settings, required_streams=(subjects.INTERACTIONS_STREAM,))
    if metrics_dir is not None:
        warm_up()  # several workers: the language model is loaded once, here, and shared when they fork

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        warm_up()
        await runtime.start()
        app.state.publisher = InteractionPublisher(
            runtime.js, timeout=settings.publish_timeout.total_seconds()
        )
        pollers = PollerSupervisor(
            runtime.sessions,
            app.state.publisher,
            box,
            interval=settings.poll_interval.total_seconds(),
            youtube_daily_quota=polling_units(settings),
            mastodon_streaming=settings.mastodon_streaming,
            leases=Leases(runtime.js, replicas=settings.nats_replicas),
        )
        pollers.start()
        silence = asyncio.create_task(SilenceWatch(runtime.sessions, app.state.publisher).run())
        try:
            yield
        finally:
            silence.cancel()
            await pollers.stop()
            await runtime.stop()

    # The public listener serves webhooks (and liveness) only: readiness, metrics and the API's
    # documentation are on the operations listener (STAYHUMAN_INGEST_OPS_PORT).
    app = IngestApp(
        title="StayHuman ingest",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        # FastAPI's own OpenTelemetry looks up its providers on every request; only spans can be
        # configured here (STAYHUMAN_OTEL_ENDPOINT), so only they are looked for, and only then.
        telemetry={"tracing": bool(settings.otel_endpoint), "metrics": False, "logs": False},
    )
    app.state.settings = settings
    box = settings.service_secret_box()  # never made here: every replica opens what apply sealed
    app.state.accounts = AccountDirectory(
        runtime.sessions, ttl_seconds=settings.account_cache_ttl.total_seconds(), box=box
    )
    app.state.tokens = TokenDirectory(
        runtime.sessions, ttl_seconds=settings.account_cache_ttl.total_seconds()
    )
    install_error_handlers(app)
    app.include_router(liveness_router(runtime))
    app.include_router(webhooks)
    app.include_router(platform_webhooks)
    app.include_router(batch_api)
    # One guard for every route, the generic webhook's fast path included: one cap on the work.
    guard = RequestGuard(
        generic_endpoint(app.state),
        body_limit=lambda path: (
            settings.max_batch_bytes if path == "/v1/interactions" else settings.max_body_bytes
        ),
        read_timeout=settings.body_read_timeout.total_seconds(),
        max_concurrent=settings.max_concurrent_requests,
    )
    app.add_middleware(guard.around)
    if not settings.otel_endpoint:
        # With tracing on, FastAPI's own server span of each request is kept: the route answers.
        app.generic = guard
    app.state.ops_app = ops_app(runtime, app, metrics_dir=metrics_dir)
    return app
