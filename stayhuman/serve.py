"""Run one service in this process: the form `up`, compose and Kubernetes use."""

import asyncio
import contextlib
import gc
import resource
import shutil
import socket
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import uvicorn

from shared.logs import configure_logging
from shared.settings import load_settings
from shared.tracing import configure_tracing, shutdown_tracing


def _ingest() -> tuple[Any, Any, int]:
    from services.ingest.settings import IngestSettings

    def create_app(settings: IngestSettings, **options: Any) -> Any:
        # Imported only here: with several workers, prometheus_client must first be imported
        # after the parent set up the workers' metrics folder.
        from services.ingest.main import create_app

        return create_app(settings, **options)

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
    settings are read first, so a bad setting is named before anything else). A service whose
    settings have `worker_count()` (ingest) runs that many worker processes when it is over 1."""
    settings, create_app, port = SERVICES[name]()
    if check is not None:
        check(settings)
    raise_open_file_limit()
    configure_logging(service=name, level=settings.log_level, json_logs=settings.log_json)
    workers = settings.worker_count() if hasattr(settings, "worker_count") else 1
    if workers > 1:
        code = _serve_workers(name, settings, create_app, port, workers)
        if code:
            raise SystemExit(code)
        return
    configure_tracing(service=name, endpoint=settings.otel_endpoint)
    app = create_app(settings)
    server = uvicorn.Server(_config(app, settings, port))
    ops = getattr(app.state, "ops_app", None)
    ops_socket = None
    if ops is not None:
        ops_socket = _listen(
            settings.host, ops_port(settings, name) or 0, f"STAYHUMAN_{name.upper()}_OPS_PORT"
        )
    try:
        if ops is None or ops_socket is None:
            run(server.serve())
        else:
            run(_serve_both(server, ops, ops_socket))
    finally:
        shutdown_tracing()
    if not server.started:
        raise SystemExit(3)  # the lifespan failed: its error is in the log above


def _config(app: Any, settings: Any, port: int) -> uvicorn.Config:
    return uvicorn.Config(
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


def _serve_workers(name: str, settings: Any, create_app: Any, port: int, workers: int) -> int:
    """`workers` processes sharing the public and operations sockets, bound here first so that
    a taken port is named before any worker starts. The app is made here too, so that a bad
    setting stops the service as it does with one process; each worker runs its own copy
    (nothing in it is connected or running before the worker starts it)."""
    from stayhuman.workers import START_FAILED, WorkerPool, metrics_folder

    public = _listen(settings.host, port, f"STAYHUMAN_{name.upper()}_PORT")
    public.listen(2048)  # connections wait in the queue while a worker starts again
    ops_socket = _listen(settings.host, ops_port(settings, name) or 0, f"STAYHUMAN_{name.upper()}_OPS_PORT")
    metrics_dir = metrics_folder(name)
    try:
        app = create_app(settings, metrics_dir=metrics_dir)

        def work(_index: int) -> int:
            configure_tracing(service=name, endpoint=settings.otel_endpoint)
            server = uvicorn.Server(_config(app, settings, port))
            try:
                run(_serve_both(server, app.state.ops_app, ops_socket, public=public))
            finally:
                shutdown_tracing()
            return 0 if server.started else START_FAILED

        # frozen before the fork, what the workers inherit is never traced by their collections,
        # so its pages stay shared with this process instead of being copied into each worker
        tune_gc()
        return WorkerPool(name, workers, work, metrics_dir=metrics_dir).run()
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
        public.close()
        ops_socket.close()


# The garbage collector's youngest generation is collected once this many more container
# objects are alive than at its last collection (CPython's default: 700). A unit of work keeps
# its batch's objects alive until it commits, about a hundred per interaction; with the default,
# each was traced by one collection after another on its way to the oldest generation, and the
# full collections traced the whole heap: a third of the router's CPU. Nearly all of them are
# freed by reference counting when the unit ends, so collections this rare still find the few
# cycles, holding at most this many objects more between collections.
GC_THRESHOLDS = (50_000, 20, 100)


def tune_gc() -> None:
    """Collect what starting left behind, then freeze the rest (modules, schemas, settings: kept
    for the life of the process, never traced again) and collect the young less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def run(main: Coroutine[Any, Any, None]) -> None:
    """Run a service's main coroutine on uvloop when it is installed (a compiled event loop),
    else on asyncio's, with the collector tuned for a long-running service (`tune_gc`)."""
    try:
        import uvloop
    except ImportError:
        factory = None
    else:
        factory = uvloop.new_event_loop
    tune_gc()
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main)


class _QuietServer(uvicorn.Server):
    """A second listener in the process: the first one handles the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def _serve_both(
    server: uvicorn.Server, ops: Any, ops_socket: socket.socket, *, public: socket.socket | None = None
) -> None:
    """The public listener and the operations listener in one process; the public one owns the
    lifespan, and the operations one stops with it. `public`: a socket already bound (a worker's,
    shared with the others), else the public server binds its own."""
    ops_server = _QuietServer(uvicorn.Config(ops, log_config=None, access_log=False, lifespan="off"))
    ops_task = asyncio.create_task(ops_server.serve(sockets=[ops_socket]))
    try:
        await server.serve(sockets=[public] if public is not None else None)
    finally:
        ops_server.should_exit = True
        await ops_task
