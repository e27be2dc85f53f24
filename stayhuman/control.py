"""Operators' commands: `stayhuman status`, `claim`, `reassign`, `pause`, `resume`, `resolve`,
`mark-responded`, `acknowledge`.

What the operator typed is checked against the database first by the checks every
sender shares (`shared/preflight.py`), so a typo fails here with a message that
names it instead of being dropped by a service later. The command is then
published on the SH_COMMANDS stream and sent only once JetStream acknowledges it. Its `command_id`
is its `Nats-Msg-Id`: sending it again with the same id (`--command-id`) stores
it once, so a script may retry a send that timed out.
"""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, PubAck
from nats.js.errors import APIError, NoStreamResponseError, NotFoundError, ServiceUnavailableError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel.ext.asyncio.session import AsyncSession

from shared import subjects
from shared.commands import Acknowledge, Claim, ConversationCommand, MarkResponded, Reassign, SetStatus
from shared.db.session import create_engine, session_factory, sqlite_path
from shared.events import AnyCommandOutcome, CommandApplied, command_outcome_adapter
from shared.messages import command_outgoing
from shared.preflight import AnyPreparedCommand, Refused, Request, prepare
from shared.settings import CommonSettings
from stayhuman.localnats import with_local_nats

PUBLISH_TIMEOUT = 10.0  # covers a stream leader election (about 5 s on a cluster)
DUPLICATE_LOOKBACK = timedelta(minutes=2)  # the commands stream's duplicate window
# How the command line names the fields of a command in its messages.
OPTIONS = {
    "reason": "--reason",
    "note": "--note",
    "issued_by": "--by",
    "command_id": "--command-id",
    "person_id": "--person",
}

__all__ = ["ControlError", "Request", "Sent", "send"]


class ControlError(RuntimeError):
    """The command was not sent; the message says why. `code` 2: fix the request; 1: try again later."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Sent:
    command: AnyPreparedCommand
    ack: PubAck
    outcome: AnyCommandOutcome | None = None

    def describe(self) -> str:
        """One line for the operator, e.g. `sent conversation.pause 3f2a… (command 9b1c…)`."""
        command = self.command
        match command:
            case SetStatus():
                what = f"{command.person_id} {command.status}"
            case Claim():
                what = f"{command.conversation_id} for {command.person_id}"
            case Acknowledge():
                what = f"{command.conversation_id} deadline {command.deadline_version} by {command.person_id}"
            case MarkResponded():
                by = f" answered by {command.person_id}" if command.person_id else ""
                what = f"{command.conversation_id}{by}"
            case Reassign():
                target = command.person_id or f"team {command.team}"
                what = f"{command.conversation_id} to {target}"
            case ConversationCommand():
                what = command.conversation_id
            case _:
                what = ""
        verb = "already sent" if self.ack.duplicate else "sent"
        again = ", a repeat: stored once" if self.ack.duplicate else ""
        line = f"{verb} {command.type} {what} (command {command.command_id}{again})"
        match self.outcome:
            case None:
                return line
            case CommandApplied():
                return f"{line}\napplied{': ' + self.outcome.summary if self.outcome.summary else ''}"
            case _:
                return f"{line}\nrejected ({self.outcome.code}): {self.outcome.reason}"

    @property
    def rejected(self) -> bool:
        return self.outcome is not None and not isinstance(self.outcome, CommandApplied)


@asynccontextmanager
async def database_session(url: str) -> AsyncIterator[AsyncSession]:
    """A session on the configured database; never creates one (a missing file is an error)."""
    path = sqlite_path(url)
    if path is not None and not path.is_file():
        raise ControlError(
            f"no database at {path} (STAYHUMAN_DATABASE_URL or STAYHUMAN_STATE_DIR): "
            "run `stayhuman migrate` and `stayhuman apply` first"
        )
    engine = create_engine(url)
    try:
        async with session_factory(engine)() as session:
            yield session
    except SQLAlchemyError as error:
        where = make_url(url).render_as_string(hide_password=True)
        raise ControlError(f"cannot read the database at {where}: {getattr(error, 'orig', error)}") from None
    finally:
        await engine.dispose()


# NATS --------------------------------------------------------------------------------------


def _shown(servers: list[str]) -> str:
    """The server URLs without any password in them, for messages."""
    return ", ".join(
        url.replace(urlsplit(url).netloc, urlsplit(url).netloc.rpartition("@")[2]) for url in servers
    )


@asynccontextmanager
async def nats_connection(
    settings: CommonSettings, *, outcome: str = "nothing was sent"
) -> AsyncIterator[Client]:
    """A connection with the services' credentials and TLS, or ControlError within the connect timeout.

    `outcome`: what the error message tells the operator was (not) done."""
    from shared.runtime import nats_connect_options

    servers = settings.nats_servers
    timeout = settings.nats_connect_timeout.total_seconds()
    last_error: list[Exception] = []

    async def remember(error: Exception) -> None:
        last_error[:] = [error]  # a one-shot command reports it instead of logging it

    nc = Client()
    try:
        await asyncio.wait_for(
            nc.connect(
                servers,
                name="stayhuman-cli",
                error_cb=remember,
                max_reconnect_attempts=-1,  # until the timeout: the server may be starting
                reconnect_time_wait=0.5,  # type: ignore[arg-type]  # nats-py takes seconds as a float
                **nats_connect_options(settings),
            ),
            timeout=timeout,
        )
    except TimeoutError:
        await nc.close()
        cause = f"; last error: {last_error[0]!r}" if last_error else ""
        raise ControlError(
            f"could not connect to NATS at {_shown(servers)} within {timeout:g} s "
            f"(STAYHUMAN_NATS_URL, STAYHUMAN_NATS_CONNECT_TIMEOUT){cause}; {outcome}",
            code=1,
        ) from None
    try:
        yield nc
    finally:
        await nc.close()


async def publish_command(js: JetStreamContext, command: AnyPreparedCommand, *, where: str) -> PubAck:
    """Publish a command on SH_COMMANDS and wait for JetStream to store it."""
    stream = subjects.COMMANDS_STREAM
    try:
        await js.stream_info(stream)
    except NotFoundError:
        raise ControlError(
            f"NATS at {where} has no stream {stream}: the router creates it when it first starts "
            "(`stayhuman up` or `stayhuman router`); nothing was sent",
            code=1,
        ) from None
    except (NoRespondersError, ServiceUnavailableError, NatsTimeoutError):
        raise ControlError(
            f"JetStream does not answer at {where} (is it enabled?); nothing was sent", code=1
        ) from None
    outgoing = command_outgoing(command)
    try:
        return await js.publish(
            outgoing.subject,
            outgoing.payload,
            headers=outgoing.all_headers(),
            stream=stream,
            timeout=PUBLISH_TIMEOUT,
        )
    except (NatsTimeoutError, NoStreamResponseError):
        raise ControlError(
            f"stream {stream} at {where} did not acknowledge the command within {PUBLISH_TIMEOUT:g} s; it "
            f"may or may not be stored: send it again with --command-id {command.command_id} "
            "(JetStream keeps one copy)",
            code=1,
        ) from None
    except APIError as error:
        raise ControlError(f"stream {stream} at {where} refused the command: {error.description}") from None


def outcome_subject(command: AnyPreparedCommand) -> str:
    """Where the outcome of this command will be published, applied or rejected."""
    tenant_id = getattr(command, "tenant_id", "")
    person_id = getattr(command, "person_id", None)
    return (
        subjects.command_outcome(tenant_id=tenant_id, person_id=person_id, outcome="applied").rpartition(".")[
            0
        ]
        + ".*"
    )


async def await_outcome(
    js: JetStreamContext, command: AnyPreparedCommand, *, since: datetime, timeout: float
) -> AnyCommandOutcome | None:
    """The outcome of the command, read from SH_EVENTS from `since` on, or None after `timeout`.

    A pull consumer of its own without acks: the operator's NATS user may read, not acknowledge."""
    config = ConsumerConfig(
        deliver_policy=DeliverPolicy.BY_START_TIME,
        opt_start_time=since.astimezone(UTC),
        ack_policy=AckPolicy.NONE,
        inactive_threshold=60.0,
    )
    subscription = await js.pull_subscribe(
        outcome_subject(command), stream=subjects.EVENTS_STREAM, config=config
    )
    deadline = asyncio.get_running_loop().time() + timeout
    try:
        while (left := deadline - asyncio.get_running_loop().time()) > 0:
            try:
                messages = await subscription.fetch(100, timeout=min(left, 1.0))
            except NatsTimeoutError:
                continue
            for message in messages:
                outcome = command_outcome_adapter.validate_json(message.data)
                if outcome.command_id == command.command_id:
                    return outcome
    finally:
        await subscription.unsubscribe()
    return None


async def send(settings: CommonSettings, request: Request, *, wait: float | None = None) -> Sent:
    """Check the request against the database, then publish its command and wait for the ack;
    with `wait`, also for its outcome (at most that many seconds)."""
    settings = with_local_nats(settings)
    where = _shown(settings.nats_servers)  # an unset STAYHUMAN_NATS_URL fails before any work
    async with database_session(settings.sqlalchemy_url) as session:
        try:
            command = await prepare(session=session, request=request, spelled=OPTIONS)
        except Refused as refused:
            raise ControlError(str(refused)) from None
    async with nats_connection(settings) as nc:
        js = nc.jetstream()
        # A repeat of a command stored before has its outcome already: look back as far as
        # JetStream remembers a command id.
        since = datetime.now(UTC) - DUPLICATE_LOOKBACK
        ack = await publish_command(js, command, where=where)
        if wait is None:
            return Sent(command=command, ack=ack)
        outcome = await await_outcome(js, command, since=since, timeout=wait)
    if outcome is None:
        raise ControlError(
            f"sent {command.type} (command {command.command_id}), but no outcome within {wait:g} s: "
            "is the service that applies it running?",
            code=1,
        )
    return Sent(command=command, ack=ack, outcome=outcome)
