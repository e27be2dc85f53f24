"""Several worker processes of one service sharing its listening sockets.

The parent binds the public and operations sockets, then forks the workers, which
inherit them: the kernel hands each new connection to a worker that accepts it (an
idle one first), so the workers share the load without a proxy in front. The parent
serves nothing and starts no event loop: it starts the workers, restarts one that dies
(with a growing delay), and stops them all on SIGTERM or SIGINT, waiting until each
has answered what it accepted and drained its NATS connection.

A worker whose start fails (exit 3: NATS, the streams or the configuration are not
there) stops the whole service with that exit code: all workers would fail alike, and
the supervisor above (`up`, compose, Kubernetes) restarts the service and says so.

Metrics are in Prometheus multiprocess mode: each worker writes its own into a
private folder made empty at start and removed at exit, and `/metrics`, whichever
worker answers it, adds up every worker's (those that died included).
"""

import contextlib
import ctypes
import logging
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

START_FAILED = 3  # a worker's lifespan failed: the service cannot start
RESTART_DELAY_MAX = 30.0
STEADY_AFTER = 60.0  # a worker that lived this long starts again at once when it dies
_PR_SET_PDEATHSIG = 1


def metrics_folder(service: str) -> Path:
    """A new, empty, private folder for the workers' metrics (the caller removes it at exit).
    prometheus_client reads PROMETHEUS_MULTIPROC_DIR when it is first imported, so this runs
    before the service's modules are imported."""
    folder = Path(tempfile.mkdtemp(prefix=f"stayhuman-{service}-metrics-"))
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)
    return folder


def _die_with(parent: int) -> None:
    """A worker gets SIGTERM (and stops gracefully) when its parent dies, however it dies."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:  # it died before the line above
        os._exit(1)


@dataclass
class Worker:
    index: int
    pid: int = 0
    started_at: float = 0.0
    restarts: int = 0
    next_start: float = 0.0


@dataclass
class WorkerPool:
    """`count` forked workers, each running `work(index)` (which returns its exit code)."""

    service: str
    count: int
    work: Callable[[int], int]
    metrics_dir: Path | None = None
    workers: dict[int, Worker] = field(default_factory=dict)  # by index
    _stopping: bool = False
    _exit_code: int = 0

    def run(self) -> int:
        """Run the workers until asked to stop; returns the service's exit code."""
        previous = {sig: signal.signal(sig, self._request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            for index in range(self.count):
                if not self._stopping:
                    self._start(Worker(index))
            log.info("workers started", extra={"service": self.service, "workers": self.count})
            while self.workers:
                self._reap()
                now = time.monotonic()
                for worker in list(self.workers.values()):
                    if worker.pid == 0 and not self._stopping and now >= worker.next_start:
                        self._start(worker)
                    elif worker.pid == 0 and self._stopping:
                        del self.workers[worker.index]
                time.sleep(0.05)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return self._exit_code

    def _start(self, worker: Worker) -> None:
        parent = os.getpid()
        # Signals wait until the worker has its own handlers and the parent knows its pid: a
        # SIGTERM in between is neither handled by the parent's handler in the worker nor missed.
        stopping = {signal.SIGTERM, signal.SIGINT}
        signal.pthread_sigmask(signal.SIG_BLOCK, stopping)
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                for sig in stopping:
                    signal.signal(sig, signal.SIG_DFL)
                signal.pthread_sigmask(signal.SIG_UNBLOCK, stopping)
                os.setpgid(0, 0)  # a terminal's Ctrl-C reaches the parent, which stops each worker once
                _die_with(parent)
                code = self.work(worker.index)
            except SystemExit as stop:  # uvicorn exits 3 when the lifespan failed: the start failed
                code = stop.code if isinstance(stop.code, int) else 1
            except BaseException:
                log.exception("worker failed", extra={"service": self.service, "worker": worker.index})
            finally:
                logging.shutdown()
                with contextlib.suppress(Exception):
                    sys.stdout.flush()
                    sys.stderr.flush()
                os._exit(code)
        worker.pid = pid
        worker.started_at = time.monotonic()
        self.workers[worker.index] = worker
        signal.pthread_sigmask(signal.SIG_UNBLOCK, stopping)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            worker = next((w for w in self.workers.values() if w.pid == pid), None)
            if worker is None:
                continue
            self._exited(worker, os.waitstatus_to_exitcode(status))

    def _exited(self, worker: Worker, code: int) -> None:
        if self.metrics_dir is not None:  # its gauges no longer count; its counters do
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(worker.pid, str(self.metrics_dir))
        worker.pid = 0
        if self._stopping:
            return
        if code == START_FAILED:
            log.error(
                "a worker could not start; stopping the service",
                extra={"service": self.service, "worker": worker.index},
            )
            self._exit_code = START_FAILED
            self._request_stop()
            return
        now = time.monotonic()
        if now - worker.started_at > STEADY_AFTER:
            worker.restarts = 0
        delay = 0.0 if worker.restarts == 0 else min(RESTART_DELAY_MAX, 0.5 * 2 ** (worker.restarts - 1))
        worker.restarts += 1
        worker.next_start = now + delay
        log.error(
            "a worker exited; starting it again",
            extra={"service": self.service, "worker": worker.index, "exit_code": code, "delay": delay},
        )

    def _request_stop(self, *_args: object) -> None:
        if self._stopping:
            return
        self._stopping = True
        for worker in self.workers.values():
            if worker.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, signal.SIGTERM)
