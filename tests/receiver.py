"""A tiny HTTP server that keeps what is POSTed to it: a push service, an ntfy server."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Receiver:
    """Keeps each POST (path, headers, body) and answers `status` (or `status_for[path]`)."""

    def __init__(self, status_for: dict[str, int] | None = None, *, status: int = 201) -> None:
        self.posts: list[tuple[str, dict[str, str], bytes]] = []
        statuses = status_for or {}
        posts = self.posts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                posts.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(statuses.get(self.path, status))
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def messages(self) -> list[Any]:
        """The JSON bodies received (what an ntfy server publishes)."""
        return [json.loads(body) for _path, _headers, body in self.posts]

    def stop(self) -> None:
        self.server.shutdown()
