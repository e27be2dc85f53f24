"""The notify service's composition root."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from services.notify.settings import NotifySettings
from shared import subjects
from shared.metrics import metrics_router
from shared.runtime import Runtime, health_router, install_error_handlers


def create_app(settings: NotifySettings) -> FastAPI:
    runtime = Runtime("notify", settings, required_streams=(subjects.EVENTS_STREAM, subjects.TIMERS_STREAM))

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    app = FastAPI(title="StayHuman notify", lifespan=lifespan)
    install_error_handlers(app)
    app.include_router(health_router(runtime))
    app.include_router(metrics_router())
    return app
