"""Load generators that are not themselves the bottleneck.

The Python one is a lean HTTP/1.1 keep-alive client: requests are built in full
beforehand; each connection writes one and reads its response (status line, headers,
Content-Length body) before the next; several processes share the requests, so one
interpreter's CPU does not cap the rate. `wrk` (Debian's package) is used instead when it
is installed and asked for: it replays pre-signed requests through a Lua script.
"""

import asyncio
import json
import multiprocessing
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stayhuman.bench.report import percentile


@dataclass
class LoadResult:
    statuses: dict[int, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)  # seconds
    seconds: float = 0.0
    started: float = 0.0  # wall clock (time.time) of the first request
    sent_at: dict[int, float] = field(default_factory=dict)  # request index -> wall clock sent

    def percentile(self, fraction: float) -> float:
        return percentile(self.latencies, fraction)

    @property
    def requests(self) -> int:
        return sum(self.statuses.values())

    def merge(self, other: "LoadResult") -> None:
        for status, count in other.statuses.items():
            self.statuses[status] = self.statuses.get(status, 0) + count
        self.latencies.extend(other.latencies)
        self.sent_at.update(other.sent_at)


def build_post(host: str, port: int, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
    writer.write(request)
    status_line = await reader.readline()
    length = 0
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if length:
        await reader.readexactly(length)
    if not status_line:
        raise ConnectionResetError("the server closed the connection")
    return int(status_line.split()[1])


async def _connection(host: str, port: int, requests: list[bytes], result: LoadResult) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while requests:
            request = requests.pop()
            started = time.perf_counter()
            status = await _exchange(reader, writer, request)
            result.statuses[status] = result.statuses.get(status, 0) + 1
            result.latencies.append(time.perf_counter() - started)
    finally:
        writer.close()


async def run_load(host: str, port: int, requests: list[bytes], *, connections: int) -> LoadResult:
    """Send every request over `connections` keep-alive connections, as fast as answered."""
    result = LoadResult(started=time.time())
    queue = list(reversed(requests))
    started = time.perf_counter()
    await asyncio.gather(*(_connection(host, port, queue, result) for _ in range(connections)))
    result.seconds = time.perf_counter() - started
    return result


async def run_paced(
    host: str, port: int, requests: list[tuple[int, bytes]], *, rate: float, start_at: float, connections: int
) -> LoadResult:
    """Open loop: request i is due at `start_at + i / rate` (wall clock), whatever the answers.
    Its latency and `sent_at` count from when it was due, so a slow answer that delays the
    next send is not hidden (no coordinated omission)."""
    result = LoadResult(started=start_at)
    queue: asyncio.Queue[tuple[float, int, bytes]] = asyncio.Queue()
    for position, (index, request) in enumerate(requests):
        queue.put_nowait((start_at + position / rate, index, request))

    async def connection() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while not queue.empty():
                due, index, request = queue.get_nowait()
                wait = due - time.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                status = await _exchange(reader, writer, request)
                result.statuses[status] = result.statuses.get(status, 0) + 1
                result.latencies.append(time.time() - due)
                result.sent_at[index] = due
        finally:
            writer.close()

    began = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(connections)))
    result.seconds = time.perf_counter() - began
    return result


def _worker(
    host: str,
    port: int,
    requests: list[tuple[int, bytes]],
    connections: int,
    rate: float | None,
    ready: Any,
    go: Any,
    results: Any,
) -> None:
    ready.put(True)
    go.wait()
    if rate is None:
        result = asyncio.run(run_load(host, port, [r for _, r in requests], connections=connections))
    else:
        start_at = time.time() + 0.2
        result = asyncio.run(
            run_paced(host, port, requests, rate=rate, start_at=start_at, connections=connections)
        )
    results.put((result.statuses, result.latencies, result.sent_at, result.started, result.seconds))


def run_processes(
    host: str,
    port: int,
    requests: list[bytes],
    *,
    processes: int,
    connections: int,
    rate: float | None = None,
) -> LoadResult:
    """Share `requests` between `processes` processes of `connections` connections each, as fast
    as answered or, with `rate`, paced open-loop at `rate` per second in all. Request i's send
    time is `sent_at[i]` when paced."""
    context = multiprocessing.get_context("spawn")
    ready, results, go = context.Queue(), context.Queue(), context.Event()
    indexed = list(enumerate(requests))
    shares = [indexed[i::processes] for i in range(processes)]
    workers = [
        context.Process(
            target=_worker,
            args=(
                host,
                port,
                share,
                connections,
                None if rate is None else rate / processes,
                ready,
                go,
                results,
            ),
            daemon=True,
        )
        for share in shares
        if share
    ]
    for worker in workers:
        worker.start()
    for _ in workers:
        ready.get(timeout=120)
    began = time.perf_counter()
    go.set()
    merged = LoadResult(started=time.time())
    for _ in workers:
        statuses, latencies, sent_at, _started, _seconds = results.get(timeout=3600)
        merged.merge(LoadResult(statuses=statuses, latencies=latencies, sent_at=sent_at))
    merged.seconds = time.perf_counter() - began
    for worker in workers:
        worker.join(timeout=10)
    return merged


WRK_SCRIPT = """
local requests = {}
local threads = {}
local file = io.open(os.getenv("BENCH_REQUESTS"), "r")
local all = file:read("*a")
file:close()
for line in all:gmatch("[^\\n]+") do
  local path, signature, body = line:match("^(%S+) (%S+) (.*)$")
  requests[#requests + 1] = {path, signature, body}
end
local count = tonumber(os.getenv("BENCH_THREADS"))

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  position = id + 1
end

function request()
  local item = requests[position]
  if item == nil then
    item = requests[1]
  end
  position = position + count
  return wrk.format("POST", item[1],
    {["Content-Type"] = "application/json", ["X-Signature-256"] = item[2]}, item[3])
end

function done(summary, latency, requests)
  local out = io.open(os.getenv("BENCH_OUT"), "w")
  out:write(string.format(
    '{"requests": %d, "duration_us": %d, "non2xx": %d, "connect": %d, "read": %d, "write": %d,'
    .. ' "timeout": %d, "p50_us": %d, "p99_us": %d}',
    summary.requests, summary.duration, summary.errors.status, summary.errors.connect,
    summary.errors.read, summary.errors.write, summary.errors.timeout,
    latency:percentile(50), latency:percentile(99)))
  out:close()
end
"""


def wrk_binary() -> str | None:
    return shutil.which("wrk")


@dataclass
class WrkResult:
    requests: int
    seconds: float
    errors: int
    p50_ms: float
    p99_ms: float


def run_wrk(
    base_url: str,
    signed: list[tuple[str, str, bytes]],
    *,
    seconds: float,
    threads: int,
    connections: int,
    workdir: Path,
) -> WrkResult:
    """`wrk` for `seconds` against `base_url`, replaying (path, signature, body) requests, each once
    while they last (bodies are single-line JSON). Past the last one it repeats the first: give it
    more than it sends."""
    binary = wrk_binary()
    if binary is None:
        raise RuntimeError("wrk is not installed")
    workdir.mkdir(parents=True, exist_ok=True)
    script, bodies, out = workdir / "bench.lua", workdir / "requests.txt", workdir / "wrk.json"
    script.write_text(WRK_SCRIPT)
    with bodies.open("wb") as file:
        for path, signature, body in signed:
            file.write(f"{path} {signature} ".encode() + body + b"\n")
    env = {
        "BENCH_REQUESTS": str(bodies),
        "BENCH_THREADS": str(threads),
        "BENCH_OUT": str(out),
        "PATH": "/usr/bin:/bin:/usr/local/bin",
    }
    subprocess.run(
        [binary, f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s", "-s", str(script), base_url],
        env=env, check=True, capture_output=True, timeout=seconds + 120,
    )  # fmt: skip
    found = json.loads(out.read_text())
    errors = sum(found[k] for k in ("non2xx", "connect", "read", "write", "timeout"))
    return WrkResult(
        requests=found["requests"],
        seconds=found["duration_us"] / 1e6,
        errors=errors,
        p50_ms=found["p50_us"] / 1000,
        p99_ms=found["p99_us"] / 1000,
    )
