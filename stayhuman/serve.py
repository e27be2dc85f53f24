"""Run one service in this process: the form `up`, compose and Kubernetes use."""

import asyncio
from typing import Any

import uvicorn

from shared.logs import configure_logging
from shared.settings import load_settings
from shared.tracing import configure_tracing, shutdown_tracing


def _ingest() -> tuple[Any, Any, int]:
    from services.ingest.main import create_app
    from services.ingest.settings import IngestSettings

    settings = load_settings(IngestSettings)
    return settings, create_app, settings.ingest_port


def _router() -> tuple[Any, Any, int]:
    from services.router.main import create_app
    from services.router.settings import RouterSettings

    settings = load_settings(RouterSettings)
    return settings, create_app, settings.router_port


def _notify() -> tuple[Any, Any, int]:
    from services.notify.main import create_app
    from services.notify.settings import NotifySettings

    settings = load_settings(NotifySettings)
    return settings, create_app, settings.notify_port


SERVICES = {"ingest": _ingest, "router": _router, "notify": _notify}


def serve(name: str) -> None:
    settings, create_app, port = SERVICES[name]()
    configure_logging(service=name, level=settings.log_level, json_logs=settings.log_json)
    configure_tracing(service=name, endpoint=settings.otel_endpoint)
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=port,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=10,
    )
    server = uvicorn.Server(config)
    try:
        asyncio.run(server.serve())
    finally:
        shutdown_tracing()
    if not server.started:
        raise SystemExit(3)  # the lifespan failed: its error is in the log above
