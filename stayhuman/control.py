"""Operators' commands to the router: `stayhuman status`, `claim`, `reassign`, `pause`, `resume`, `resolve`.

What the operator typed is checked against the database first (the conversation,
the person, the team), so a typo fails here with a message that names it instead
of being dropped by the router later. The command is then published on the
SH_COMMANDS stream and sent only once JetStream acknowledges it. Its `command_id`
is its `Nats-Msg-Id`: sending it again with the same id (`--command-id`) stores
it once, so a script may retry a send that timed out.
"""

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import PubAck
from nats.js.errors import APIError, NoStreamResponseError, NotFoundError, ServiceUnavailableError
from pydantic import ValidationError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from shared import subjects
from shared.commands import (
    AnyCommand,
    Claim,
    ConversationCommand,
    Pause,
    PersonStatus,
    Reassign,
    Resolve,
    Resume,
    SetStatus,
)
from shared.db.models import ConversationRow, PersonRow, TeamMemberRow, TeamRow
from shared.db.session import create_engine, session_factory, sqlite_path
from shared.outbox import command_outgoing
from shared.settings import CommonSettings
from stayhuman.localnats import with_local_nats

Action = Literal["status", "claim", "reassign", "pause", "resume", "resolve"]

MIN_PREFIX = 6
PUBLISH_TIMEOUT = 10.0  # covers a stream leader election (about 5 s on a cluster)
_HEX = re.compile(r"^[0-9a-f]{1,32}$")
# It becomes a NATS header value: no spaces or line breaks.
_COMMAND_ID = re.compile(r"^[A-Za-z0-9_.:-]{8,64}$")
_OPTIONS = {"reason": "--reason", "issued_by": "--by", "command_id": "--command-id"}


class ControlError(RuntimeError):
    """The command was not sent; the message says why. `code` 2: fix the request; 1: try again later."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Request:
    """A command as the operator typed it: names not checked yet, a conversation perhaps by prefix."""

    action: Action
    conversation: str | None = None
    person: str | None = None
    team: str | None = None
    status: PersonStatus | None = None
    reason: str = ""
    issued_by: str = "operator"
    command_id: str | None = None


@dataclass(frozen=True)
class ConversationRef:
    id: str
    tenant_id: str


@dataclass(frozen=True)
class Sent:
    command: AnyCommand
    ack: PubAck

    def describe(self) -> str:
        """One line for the operator, e.g. `sent conversation.pause 3f2a… (command 9b1c…)`."""
        command = self.command
        match command:
            case SetStatus():
                what = f"{command.person_id} {command.status}"
            case Claim():
                what = f"{command.conversation_id} for {command.person_id}"
            case Reassign():
                target = command.person_id or f"team {command.team}"
                what = f"{command.conversation_id} to {target}"
            case ConversationCommand():
                what = command.conversation_id
            case _:
                what = ""
        verb = "already sent" if self.ack.duplicate else "sent"
        again = ", a repeat: stored once" if self.ack.duplicate else ""
        return f"{verb} {command.type} {what} (command {command.command_id}{again})"


# The database ------------------------------------------------------------------------------


async def find_conversation(*, session: AsyncSession, reference: str) -> ConversationRef:
    """The conversation with this id, or the only one whose id starts with it."""
    prefix = reference.strip().lower()
    if not _HEX.fullmatch(prefix) or len(prefix) < MIN_PREFIX:
        raise ControlError(
            f"{reference!r} is not a conversation id: give its 32 hex characters, or a unique prefix of "
            f"at least {MIN_PREFIX}, as `stayhuman conversations` lists them"
        )
    query = select(ConversationRow.id, ConversationRow.tenant_id)
    if len(prefix) == 32:
        query = query.where(ConversationRow.id == prefix)
    else:
        query = (
            query.where(col(ConversationRow.id).startswith(prefix)).order_by(col(ConversationRow.id)).limit(6)
        )
    rows = (await session.exec(query)).all()
    if not rows:
        raise ControlError(f"no conversation {reference!r}")
    if len(rows) > 1:
        listed = ", ".join(row[0] for row in rows[:5]) + (", …" if len(rows) > 5 else "")
        raise ControlError(
            f"{reference!r} matches {'more than 5' if len(rows) > 5 else len(rows)} conversations "
            f"({listed}): give more characters"
        )
    return ConversationRef(id=rows[0][0], tenant_id=rows[0][1])


async def check_person(*, session: AsyncSession, person_id: str, tenant_id: str | None = None) -> None:
    """The person exists and is active, and (given a tenant) serves it in one of its teams."""
    person = await session.get(PersonRow, person_id)
    if person is None:
        raise ControlError(f"no person {person_id!r}")
    if not person.active:
        raise ControlError(f"person {person_id!r} is inactive")
    if tenant_id is None:
        return
    membership = (
        await session.exec(
            select(TeamMemberRow.team_id)
            .join(TeamRow, col(TeamRow.id) == col(TeamMemberRow.team_id))
            .where(TeamMemberRow.person_id == person_id, TeamRow.tenant_id == tenant_id)
            .limit(1)
        )
    ).first()
    if membership is None:
        raise ControlError(f"person {person_id!r} is not a member of any team of tenant {tenant_id!r}")


async def check_team(*, session: AsyncSession, tenant_id: str, slug: str) -> None:
    found = (
        await session.exec(select(TeamRow.id).where(TeamRow.tenant_id == tenant_id, TeamRow.slug == slug))
    ).first()
    if found is None:
        teams = (
            await session.exec(
                select(TeamRow.slug).where(TeamRow.tenant_id == tenant_id).order_by(col(TeamRow.slug))
            )
        ).all()
        known = f" (its teams: {', '.join(teams)})" if teams else " (it has no teams)"
        raise ControlError(f"no team {slug!r} in tenant {tenant_id!r}{known}")


async def prepare(*, session: AsyncSession, request: Request) -> AnyCommand:
    """Check what the request names against the database and build the command to send."""
    conversation = None
    if request.action != "status":
        assert request.conversation is not None
        conversation = await find_conversation(session=session, reference=request.conversation)
    if request.person is not None:
        await check_person(
            session=session,
            person_id=request.person,
            tenant_id=conversation.tenant_id if conversation else None,
        )
    if request.team is not None:
        assert conversation is not None
        await check_team(session=session, tenant_id=conversation.tenant_id, slug=request.team)
    return make_command(request, conversation)


def make_command(request: Request, conversation: ConversationRef | None) -> AnyCommand:
    """The command for a request whose names have been checked."""
    if request.command_id is not None and not _COMMAND_ID.fullmatch(request.command_id):
        raise ControlError(f"--command-id {request.command_id!r}: use 8 to 64 letters, digits and . _ : -")
    common: dict[str, Any] = {"issued_by": request.issued_by}
    if request.command_id is not None:
        common["command_id"] = request.command_id
    try:
        if request.action == "status":
            return SetStatus(person_id=request.person, status=request.status, **common)
        assert conversation is not None
        common |= {"tenant_id": conversation.tenant_id, "conversation_id": conversation.id}
        match request.action:
            case "claim":
                return Claim(person_id=request.person, **common)
            case "reassign":
                return Reassign(person_id=request.person, team=request.team, reason=request.reason, **common)
            case "pause":
                return Pause(reason=request.reason, **common)
            case "resume":
                return Resume(**common)
            case "resolve":
                return Resolve(reason=request.reason, **common)
    except ValidationError as error:
        problems = [
            f"{_OPTIONS.get(str(item['loc'][0]), item['loc'][0]) if item['loc'] else 'command'}: {item['msg']}"
            for item in error.errors()
        ]
        raise ControlError("; ".join(problems)) from None
    raise ControlError(f"unknown command {request.action!r}")


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


async def publish_command(js: JetStreamContext, command: AnyCommand, *, where: str) -> PubAck:
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


async def send(settings: CommonSettings, request: Request) -> Sent:
    """Check the request against the database, then publish its command and wait for the ack."""
    settings = with_local_nats(settings)
    where = _shown(settings.nats_servers)  # an unset STAYHUMAN_NATS_URL fails before any work
    async with database_session(settings.sqlalchemy_url) as session:
        command = await prepare(session=session, request=request)
    async with nats_connection(settings) as nc:
        ack = await publish_command(nc.jetstream(), command, where=where)
    return Sent(command=command, ack=ack)
