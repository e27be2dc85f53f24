"""A lean HTTP/1.1 keep-alive load generator, so the benchmark measures StayHuman, not the client.

Requests are built in full beforehand; each connection writes one and reads its
response (status line, headers, Content-Length body) before the next.
"""

import asyncio
import time
from dataclasses import dataclass, field


@dataclass
class LoadResult:
    statuses: dict[int, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    seconds: float = 0.0

    def percentile(self, fraction: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))] if ordered else 0.0


def build_post(host: str, port: int, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _connection(host: str, port: int, requests: list[bytes], result: LoadResult) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while requests:
            request = requests.pop()
            started = time.perf_counter()
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
            status = int(status_line.split()[1])
            result.statuses[status] = result.statuses.get(status, 0) + 1
            result.latencies.append(time.perf_counter() - started)
    finally:
        writer.close()


async def run_load(host: str, port: int, requests: list[bytes], *, connections: int) -> LoadResult:
    """Send every request over `connections` keep-alive connections; count statuses."""
    result = LoadResult()
    queue = list(reversed(requests))
    started = time.perf_counter()
    await asyncio.gather(*(_connection(host, port, queue, result) for _ in range(connections)))
    result.seconds = time.perf_counter() - started
    return result
