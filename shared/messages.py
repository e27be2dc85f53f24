"""A message to publish, described without a connection: what outboxes keep and services return.

Kept apart from `shared.jetstream` so that code deciding what to publish (the
router's application service, the outbox) needs no NATS client to say it.
"""

from dataclasses import dataclass, field
from datetime import UTC, datetime

from shared.commands import Acknowledge, AnyCommand, SendReply, msg_id_of, subject_of
from shared.logs import CORRELATION_HEADER

MSG_ID = "Nats-Msg-Id"


@dataclass(frozen=True)
class Outgoing:
    subject: str
    payload: bytes
    msg_id: str
    correlation_id: str = ""
    headers: dict[str, str] = field(default_factory=dict)

    def all_headers(self) -> dict[str, str]:
        result = {MSG_ID: self.msg_id, **self.headers}
        if self.correlation_id:
            result[CORRELATION_HEADER] = self.correlation_id
        return result


def at_header(moment: datetime) -> str:
    """`Nats-Schedule` wants an absolute RFC 3339 time with an offset (to the microsecond)."""
    return "@at " + moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def command_outgoing(command: AnyCommand | Acknowledge | SendReply) -> Outgoing:
    """A command, as published on its own subject under its own id (a retry does it once)."""
    return Outgoing(
        subject_of(command), command.model_dump_json().encode(), msg_id_of(command), command.correlation_id
    )
