"""The api service's composition root: the inbox's HTTP API over the database and NATS.

It reads the database (conversations, people, teams: other parts' tables along the read
paths of shared/db/ownership.py), writes only its own tables (sign-in, sessions, the
timeline, command outcomes), and changes nothing else except by publishing commands,
which the router and notify apply and answer with their outcome.
"""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from services.api.actions import JetStreamCommands, actions_router
from services.api.auth import auth_router
from services.api.config_reads import configuration_router
from services.api.live import LiveHub, live_router
from services.api.pages import mount_static, pages_router
from services.api.reads import reads_router
from services.api.replies import replies_router
from services.api.report_reads import reports_router
from services.api.security import install_security_headers
from services.api.settings import ApiSettings
from services.api.timeline import TIMELINE_CONSUMER, TimelineConsumer
from shared import subjects
from shared.jetstream import BatchConsumer, work_consumer
from shared.metrics import every, observe_consumers
from shared.runtime import Runtime, install_error_handlers, liveness_router, ops_app


def document_invalid_requests(app: FastAPI) -> None:
    """The OpenAPI document says what an invalid request gets: 400 with the problems named
    (shared.runtime's handler), not FastAPI's default 422, which this API never answers."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = build()
            for path in document.get("paths", {}).values():
                for operation in path.values():
                    answers = operation.get("responses", {})
                    if "422" in answers:
                        invalid = answers.pop("422")
                        answers.setdefault(
                            "400", {**invalid, "description": "Invalid request: each problem names its field"}
                        )
            schemas = document.get("components", {}).get("schemas", {})
            schemas.pop("HTTPValidationError", None)
            if "#/components/schemas/ValidationError" not in str(document):
                schemas.pop("ValidationError", None)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(settings: ApiSettings) -> FastAPI:
    runtime = Runtime("api", settings, required_streams=(subjects.EVENTS_STREAM, subjects.COMMANDS_STREAM))
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        app.state.sessions = runtime.sessions
        app.state.commands = JetStreamCommands(runtime.js)
        timeline = BatchConsumer(
            js=runtime.js,
            stream=subjects.EVENTS_STREAM,
            config=work_consumer(
                durable=TIMELINE_CONSUMER,
                filter_subject="sh.>",
                ack_wait=settings.api_ack_wait,
                max_deliver=settings.api_max_deliver,
            ),
            handler=TimelineConsumer(
                runtime.js, runtime.sessions, max_deliver=settings.api_max_deliver
            ).handle_batch,
            batch_size=500,
        )
        await timeline.start()
        state["timeline"] = timeline
        live = LiveHub(runtime.js, runtime.sessions)
        await live.start()
        app.state.live = live
        watch = asyncio.create_task(
            every(5, lambda: observe_consumers(runtime.js, [(subjects.EVENTS_STREAM, TIMELINE_CONSUMER)]))
        )
        try:
            yield
        finally:
            watch.cancel()
            await live.stop()
            await timeline.stop()
            await runtime.stop()

    async def consuming() -> dict[str, str]:
        timeline = state.get("timeline")
        live = getattr(app.state, "live", None)
        return {
            "consumers": "ok" if timeline is not None and timeline.running else "stopped",
            "live": "ok" if live is not None and live.running else "stopped",
        }

    app = FastAPI(
        title="StayHuman API",
        version="1",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,  # the document and /docs are on the operations listener, like every service's
        description="The inbox's API: conversations, people, teams, actions as commands, and sign-in.",
    )
    app.state.settings = settings
    install_error_handlers(app)
    install_security_headers(app)
    app.include_router(liveness_router(runtime))
    app.state.ops_app = ops_app(runtime, app, extra=consuming)
    app.include_router(auth_router(settings))
    app.include_router(reads_router())
    app.include_router(live_router())
    app.include_router(actions_router())
    app.include_router(replies_router())
    app.include_router(configuration_router())
    app.include_router(reports_router())
    app.include_router(pages_router())
    mount_static(app)
    document_invalid_requests(app)
    return app
