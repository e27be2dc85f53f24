"""A real SMTP server for tests (aiosmtpd), keeping what it receives."""

import asyncio
import threading
import time
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from typing import Any

from aiosmtpd.controller import Controller

from stayhuman.natsserver import free_port


@dataclass
class Received:
    message: EmailMessage
    at: float  # time.time() when the server accepted it
    recipients: list[str]

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    @property
    def body(self) -> str:
        part = self.message.get_body(preferencelist=("plain",))
        return part.get_content() if part is not None else ""


@dataclass
class SmtpServer:
    """Runs on a fixed port, so it can be stopped and started again like an outage."""

    port: int = field(default_factory=free_port)
    received: list[Received] = field(default_factory=list)
    delay: float = 0.0  # seconds before answering DATA: a slow server
    # Like a server that commits a message only once it has told the client so: a client
    # gone before the answer leaves nothing delivered.
    discard_unanswered: bool = False
    receiving: threading.Event = field(default_factory=threading.Event)  # set when a DATA arrives
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _controller: Controller | None = None

    async def handle_DATA(self, server: Any, _session: Any, envelope: Any) -> str:
        self.receiving.set()
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.discard_unanswered and (server.transport is None or server.transport.is_closing()):
            return "451 client gone"
        message = message_from_bytes(envelope.original_content or envelope.content, policy=default)
        assert isinstance(message, EmailMessage)
        with self._lock:
            self.received.append(Received(message, time.time(), list(envelope.rcpt_tos)))
        return "250 OK"

    def start(self) -> "SmtpServer":
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def messages(self) -> list[Received]:
        with self._lock:
            return list(self.received)
