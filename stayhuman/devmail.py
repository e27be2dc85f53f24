"""The dev SMTP sink `stayhuman up` runs when no SMTP server is configured."""

import mailbox
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

from stayhuman.natsserver import free_port


class _MaildirHandler:
    def __init__(self, folder: Path) -> None:
        self._box = mailbox.Maildir(folder, create=True)

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
        self._box.add(envelope.original_content or envelope.content)
        return "250 Message accepted for delivery"


class DevMailSink:
    """A local SMTP server that keeps every message in a Maildir."""

    def __init__(self, folder: Path, port: int = 0) -> None:
        self.folder = folder
        self.port = port or free_port()
        self._controller = Controller(_MaildirHandler(folder), hostname="127.0.0.1", port=self.port)

    def start(self) -> "DevMailSink":
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()
