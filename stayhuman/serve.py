"""Run one service in this process: the form `up`, compose and Kubernetes use."""

import asyncio
import contextlib
import resource
import socket
from collections.abc import Callable, Iterator
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


def ops_port(settings: Any, name: str) -> int | None:
    """The port of a service's operations listener, when it has one apart from its public port."""
    return getattr(settings, f"{name}_ops_port", None)


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


def _api() -> tuple[Any, Any, int]:
    from services.api.main import create_app
    from services.api.settings import ApiSettings

    settings = load_settings(ApiSettings)
    return settings, create_app, settings.api_port


def _outbound() -> tuple[Any, Any, int]:
    from services.outbound.main import create_app
    from services.outbound.settings import OutboundSettings

    settings = load_settings(OutboundSettings)
    return settings, create_app, settings.outbound_port


SERVICES = {"ingest": _ingest, "router": _router, "notify": _notify, "api": _api, "outbound": _outbound}


def raise_open_file_limit() -> None:
    """A public listener holds a socket per client: take all the descriptors the system allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 65_536 if hard == resource.RLIM_INFINITY else min(hard, 65_536)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


class ListenerUnavailable(RuntimeError):
    """A port a service must listen on is taken (or not allowed): say which setting names it."""


def _listen(host: str, port: int, variable: str) -> socket.socket:
    """Bind the operations listener's socket before anything starts, so a taken port is a clear
    error, not a failure in the middle of the service's start."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise ListenerUnavailable(f"cannot listen on {host}:{port} ({variable}): {error.strerror}") from None
    return sock


def serve(name: str, *, check: Callable[[Any], None] | None = None) -> None:
    """Run one service until it is stopped. `check`: what must hold before it starts (its
    settings are read first, so a bad setting is named before anything else)."""
    settings, create_app, port = SERVICES[name]()
    if check is not None:
        check(settings)
    raise_open_file_limit()
    configure_logging(service=name, level=settings.log_level, json_logs=settings.log_json)
    configure_tracing(service=name, endpoint=settings.otel_endpoint)
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=port,
        log_config=None,
        access_log=False,
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        lifespan="on",
        timeout_graceful_shutdown=10,
    )
    server = uvicorn.Server(config)
    ops = getattr(app.state, "ops_app", None)
    ops_socket = None
    if ops is not None:
        ops_socket = _listen(
            settings.host, ops_port(settings, name) or 0, f"STAYHUMAN_{name.upper()}_OPS_PORT"
        )
    try:
        if ops is None or ops_socket is None:
            asyncio.run(server.serve())
        else:
            asyncio.run(_serve_both(server, ops, ops_socket))
    finally:
        shutdown_tracing()
    if not server.started:
        raise SystemExit(3)  # the lifespan failed: its error is in the log above


class _QuietServer(uvicorn.Server):
    """A second listener in the process: the first one handles the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def _serve_both(server: uvicorn.Server, ops: Any, ops_socket: socket.socket) -> None:
    """The public listener and the operations listener in one process; the public one owns the
    lifespan, and the operations one stops with it."""
    ops_server = _QuietServer(uvicorn.Config(ops, log_config=None, access_log=False, lifespan="off"))
    ops_task = asyncio.create_task(ops_server.serve(sockets=[ops_socket]))
    try:
        await server.serve()
    finally:
        ops_server.should_exit = True
        await ops_task
