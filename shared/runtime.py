"""What every service process has: a NATS connection, a database, health endpoints.

A service's composition root builds one `Runtime`, starts it in its FastAPI
lifespan and stops it on shutdown (draining NATS so no acknowledgement is lost).
"""

import asyncio
import logging
import os
import signal
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.responses import JSONResponse
from faststream.nats import NatsBroker
from faststream.nats.security import parse_security
from faststream.security import BaseSecurity, SASLPlaintext
from nats.aio.client import Client
from nats.errors import ConnectionClosedError
from nats.js import JetStreamContext
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.db.session import create_engine, ping, session_factory
from shared.jetstream import (
    TRANSIENT,
    StreamSettings,
    check_server_version,
    ensure_streams,
    stream_configs,
    streams_present,
)
from shared.logs import transient_trouble
from shared.settings import CommonSettings

log = logging.getLogger(__name__)


class NatsUnreachable(RuntimeError):
    pass


def nats_security(settings: CommonSettings) -> dict[str, Any]:
    """Connection options for the configured credentials and TLS."""
    options: dict[str, Any] = {}
    context = None
    if settings.nats_tls_ca or settings.nats_tls_cert:
        context = ssl.create_default_context(
            cafile=str(settings.nats_tls_ca) if settings.nats_tls_ca else None
        )
        if settings.nats_tls_cert and settings.nats_tls_key:
            context.load_cert_chain(str(settings.nats_tls_cert), str(settings.nats_tls_key))
    if settings.nats_user and settings.nats_password:
        options["security"] = SASLPlaintext(
            username=settings.nats_user,
            password=settings.nats_password.get_secret_value(),
            ssl_context=context,
        )
    elif context is not None:
        options["security"] = BaseSecurity(ssl_context=context)
    if settings.nats_creds:
        options["user_credentials"] = str(settings.nats_creds)
    if settings.nats_nkey_seed:
        options["nkeys_seed"] = str(settings.nats_nkey_seed)
    return options


def nats_connect_options(settings: CommonSettings) -> dict[str, Any]:
    """The credentials and TLS of `nats_security`, as keyword arguments of plain `nats.connect`
    (for one-shot clients such as the CLI, which need no broker)."""
    options = nats_security(settings)
    return {**parse_security(options.pop("security", None)), **options}


@dataclass
class Runtime:
    service: str
    settings: CommonSettings
    broker: NatsBroker = field(init=False)
    engine: AsyncEngine = field(init=False)
    sessions: async_sessionmaker[AsyncSession] = field(init=False)
    required_streams: tuple[str, ...] = ()
    stream_settings: StreamSettings = field(default_factory=StreamSettings)
    # What to do when NATS is gone for good: stop this process, so that it is started again.
    on_lost: Callable[[], None] = field(default=lambda: os.kill(os.getpid(), signal.SIGTERM))
    # SQLite: each transaction holds the write lock from its start (see `create_engine`).
    exclusive_writes: bool = False

    def __post_init__(self) -> None:
        self.stream_settings = StreamSettings(
            replicas=self.settings.nats_replicas, archive_max_age=self.settings.archive_retention
        )
        self.broker = NatsBroker(
            self.settings.nats_servers,
            name=f"stayhuman-{self.service}",
            max_reconnect_attempts=-1,
            reconnect_time_wait=1,
            # Per-message framework logging costs more than the work on a hot path.
            log_level=logging.DEBUG,
            error_cb=self._nats_error,
            closed_cb=self._nats_closed,
            **nats_security(self.settings),
        )
        self._last_nats_error: Exception | None = None
        self._stopping = False
        self.engine = create_engine(self.settings.sqlalchemy_url, exclusive_writes=self.exclusive_writes)
        self.sessions = session_factory(self.engine)

    @property
    def nc(self) -> Client:
        return self.broker.config.connection_state.connection

    @property
    def js(self) -> JetStreamContext:
        return self.broker.config.connection_state.stream

    async def _nats_error(self, error: Exception) -> None:
        self._last_nats_error = error
        # A reconnection tries every server in turn: one warning per episode, not per attempt.
        transient_trouble.warn(
            log, "connection", "NATS connection error", error=f"{type(error).__name__}: {error}"
        )

    async def _nats_closed(self) -> None:
        """The client gave up on NATS for good (a server closes a connection on a protocol error,
        and nats-py does not reconnect then). A service without NATS can do nothing: it stops,
        so that its supervisor (`up`, Kubernetes, compose) starts it again; meanwhile /healthz
        says so."""
        if self._stopping:
            return
        log.error(
            "NATS connection closed for good; stopping so that this service is started again",
            extra={"error": repr(self._last_nats_error)},
        )
        self.on_lost()

    @property
    def nats_closed(self) -> bool:
        try:
            return bool(self.nc is not None and self.nc.is_closed)
        except Exception:
            return False

    async def start(self) -> None:
        timeout = self.settings.nats_connect_timeout.total_seconds()
        try:
            await asyncio.wait_for(self.broker.connect(), timeout=timeout)
        except TimeoutError:
            raise NatsUnreachable(
                f"could not connect to NATS at {', '.join(self.settings.nats_servers)} within {timeout:.0f} s "
                f"(STAYHUMAN_NATS_URL); last error: {self._last_nats_error!r}"
            ) from None
        check_server_version(
            self.nc._server_info.get("version", "0"),
            where=self.nc.connected_url.netloc if self.nc.connected_url else "?",
        )
        await self._declare_streams()
        await self.broker.start()
        log.info(
            "connected", extra={"nats": str(self.nc.connected_url.netloc if self.nc.connected_url else "")}
        )

    async def _declare_streams(self, patience: float = 60.0) -> None:
        """Declare the streams, waiting out a cluster that is still electing its leaders."""
        deadline = time.monotonic() + patience
        delay = 0.5
        while True:
            try:
                await ensure_streams(self.js, stream_configs(self.stream_settings))
                return
            except TRANSIENT as error:
                if time.monotonic() + delay > deadline:
                    raise
                log.warning("JetStream not ready; retrying", extra={"error": repr(error)})
            await asyncio.sleep(delay)
            delay = min(5.0, delay * 2)

    async def stop(self) -> None:
        self._stopping = True
        try:
            await self.broker.stop()
        except ConnectionClosedError:  # NATS gone for good already: nothing left to drain
            pass
        await self.engine.dispose()

    async def readiness(self) -> dict[str, Any]:
        """What /readyz reports: NATS connected, database reachable, streams present."""
        checks: dict[str, Any] = {}
        try:
            connected = self.nc is not None and self.nc.is_connected
        except Exception:
            connected = False
        checks["nats"] = "ok" if connected else "disconnected"
        try:
            await ping(self.engine)
            checks["database"] = "ok"
        except Exception as error:
            checks["database"] = f"unreachable: {type(error).__name__}"
        if connected:
            try:
                missing = await streams_present(self.js, self.required_streams)
                checks["streams"] = "ok" if not missing else f"missing: {', '.join(missing)}"
            except Exception as error:
                checks["streams"] = f"unknown: {type(error).__name__}"
        else:
            checks["streams"] = "unknown"
        return checks


def liveness_router(runtime: Runtime) -> APIRouter:
    """`/healthz`: the process is alive and not cut off from NATS for good (then 503: restart it)."""
    router = APIRouter(tags=["operations"])

    @router.get("/healthz")
    async def healthz() -> JSONResponse:
        if runtime.nats_closed:
            return JSONResponse({"status": "failing", "service": runtime.service, "nats": "closed"}, 503)
        return JSONResponse({"status": "ok", "service": runtime.service, "pid": os.getpid()})

    return router


def health_router(runtime: Runtime, extra: Any = None) -> APIRouter:
    """`/healthz` (the process is alive) and `/readyz` (it can do its work)."""
    router = APIRouter(tags=["operations"])
    router.include_router(liveness_router(runtime))

    @router.get("/readyz")
    async def readyz() -> JSONResponse:
        checks = await runtime.readiness()
        if extra is not None:
            checks.update(await extra())
        ready = all(value == "ok" for value in checks.values())
        return JSONResponse(
            {"status": "ready" if ready else "not ready", "checks": checks},
            status_code=200 if ready else 503,
        )

    return router


def install_error_handlers(app: FastAPI) -> None:
    """Every error answers JSON that names the problem."""
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException as StarletteHTTPException
    from starlette.requests import Request

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, error: StarletteHTTPException) -> JSONResponse:
        detail = error.detail
        body = detail if isinstance(detail, dict) else {"error": str(detail)}
        return JSONResponse(body, status_code=error.status_code, headers=error.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, error: RequestValidationError) -> JSONResponse:
        problems = [
            {"field": ".".join(str(p) for p in item["loc"][1:]), "problem": item["msg"]}
            for item in error.errors()
        ]
        return JSONResponse({"error": "invalid request", "problems": problems}, status_code=400)


def ops_app(
    runtime: Runtime, public: FastAPI, extra: Any = None, *, metrics_dir: Path | None = None
) -> FastAPI:
    """The operations listener of a service with a public port: health, readiness, metrics and
    the public API's documentation, which name tenants, teams and internals and so are not
    served next to what the internet reaches. `metrics_dir`: where the service's worker
    processes write their metrics (Prometheus multiprocess mode), to serve them added up."""
    from fastapi.openapi.docs import get_swagger_ui_html

    from shared.metrics import metrics_router

    ops = FastAPI(
        title=f"StayHuman {runtime.service} operations", docs_url=None, redoc_url=None, openapi_url=None
    )
    ops.include_router(health_router(runtime, extra=extra))
    ops.include_router(metrics_router(metrics_dir))

    @ops.get("/openapi.json", include_in_schema=False)
    async def openapi() -> JSONResponse:
        return JSONResponse(public.openapi())

    @ops.get("/docs", include_in_schema=False)
    async def docs() -> Any:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{public.title}: API")

    return ops
