"""JSON logs with a correlation id that follows one interaction across the services."""

import contextvars
import json
import logging
import sys
import time
from datetime import UTC, datetime

correlation_id: contextvars.ContextVar[str] = contextvars.ContextVar("correlation_id", default="")
CORRELATION_HEADER = "X-Correlation-Id"

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName", "color_message"}


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        cid = correlation_id.get()
        if cid:
            entry["correlation_id"] = cid
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class PlainFormatter(logging.Formatter):
    """One readable line, with the same fields as the JSON lines appended as key=value."""

    def __init__(self, service: str) -> None:
        super().__init__(f"%(asctime)s {service} %(levelname)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}
        cid = correlation_id.get()
        if cid:
            extras["correlation_id"] = cid
        return line + "".join(f" {k}={v}" for k, v in extras.items())


def configure_logging(*, service: str, level: str, json_logs: bool) -> None:
    """Send every log line, ours and the libraries', to stderr in one format."""
    handler = logging.StreamHandler(sys.stderr)
    if json_logs:
        handler.setFormatter(JsonFormatter(service))
    else:
        handler.setFormatter(PlainFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Per-message framework logs would dominate a hot path; ours say what matters.
    for noisy in ("faststream", "uvicorn.access", "nats", "aiosqlite", "sqlalchemy"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


class Episodes:
    """One warning per episode of an expected, passing trouble (a NATS stream leader election,
    a reconnection), instead of one per retry: the first occurrence of a kind is a warning
    without traceback, the next ones within `every` seconds are debug lines, and the next
    warning says how many there were (`repeated`)."""

    def __init__(self, every: float = 30.0) -> None:
        self.every = every
        self._warned: dict[str, float] = {}
        self._repeated: dict[str, int] = {}

    def warn(self, logger: logging.Logger, kind: str, message: str, **extra: object) -> None:
        now = time.monotonic()
        if now - self._warned.get(kind, -self.every) < self.every:
            self._repeated[kind] = self._repeated.get(kind, 0) + 1
            logger.debug(message, extra=extra)
            return
        self._warned[kind] = now
        if repeated := self._repeated.pop(kind, 0):
            extra["repeated"] = repeated
        logger.warning(message, extra=extra)


# Shared by the JetStream plumbing and the NATS connection of one process.
transient_trouble = Episodes()
