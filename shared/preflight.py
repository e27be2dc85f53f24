"""The checks a command needs before it is sent, for every sender (the CLI today, the API next).

What a person typed or clicked is checked against the database first (the
conversation, the person, the team, the deadline), so a typo is refused here with
a sentence that names it instead of being dropped by the service later. Each check
reads another service's tables only through the read paths the README lists
(conversations: the router's; deadlines: notify's), and never writes.

`tenants` scopes every lookup: a sender acting for some tenants never finds,
names or learns about another tenant's conversation, team or deadline (the API
passes the tenants of the signed-in person; the operator's CLI passes None: all).
"""

import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.commands import (
    Acknowledge,
    AnyCommand,
    Claim,
    MarkResponded,
    Pause,
    PersonStatus,
    Reassign,
    Resolve,
    Resume,
    SetStatus,
)
from shared.db.models import ConversationRow, DeadlineRow, PersonRow, TeamMemberRow, TeamRow

# "respond": mark a conversation responded (answered where StayHuman does not watch); its
# `person` is who answered (none: the owner) and its `reason` the note.
Action = Literal["status", "claim", "reassign", "pause", "resume", "resolve", "respond", "acknowledge"]

MIN_PREFIX = 6
_HEX = re.compile(r"^[0-9a-f]{1,32}$")
# It becomes a NATS header value: no spaces or line breaks.
_COMMAND_ID = re.compile(r"^[A-Za-z0-9_.:-]{8,64}$")
_OPTIONS = {"reason": "--reason", "issued_by": "--by", "command_id": "--command-id"}


class Refused(ValueError):
    """The command was not built: `str()` says why in a sentence; `field` names the input at fault."""

    def __init__(self, message: str, field: str = "command") -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Request:
    """A command as a person asked for it: names not checked yet, a conversation perhaps by prefix."""

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


AnyPreparedCommand = AnyCommand | Acknowledge


def _scoped(query: Any, tenants: Collection[str] | None) -> Any:
    return query if tenants is None else query.where(col(ConversationRow.tenant_id).in_(sorted(tenants)))


async def find_conversation(
    *, session: AsyncSession, reference: str, tenants: Collection[str] | None = None
) -> ConversationRef:
    """The conversation with this id, or the only one whose id starts with it, among `tenants`'."""
    prefix = reference.strip().lower()
    if not _HEX.fullmatch(prefix) or len(prefix) < MIN_PREFIX:
        raise Refused(
            f"{reference!r} is not a conversation id: give its 32 hex characters, or a unique prefix of "
            f"at least {MIN_PREFIX}, as `stayhuman conversations` lists them",
            "conversation",
        )
    query = _scoped(select(ConversationRow.id, ConversationRow.tenant_id), tenants)
    if len(prefix) == 32:
        query = query.where(ConversationRow.id == prefix)
    else:
        query = (
            query.where(col(ConversationRow.id).startswith(prefix)).order_by(col(ConversationRow.id)).limit(6)
        )
    rows = (await session.exec(query)).all()
    if not rows:
        raise Refused(f"no conversation {reference!r}", "conversation")
    if len(rows) > 1:
        listed = ", ".join(row[0] for row in rows[:5]) + (", …" if len(rows) > 5 else "")
        raise Refused(
            f"{reference!r} matches {'more than 5' if len(rows) > 5 else len(rows)} conversations "
            f"({listed}): give more characters",
            "conversation",
        )
    return ConversationRef(id=rows[0][0], tenant_id=rows[0][1])


async def check_person(
    *, session: AsyncSession, person_id: str, tenant_id: str | None = None, field: str = "person"
) -> None:
    """The person exists and is active, and (given a tenant) serves it in one of its teams."""
    person = await session.get(PersonRow, person_id)
    if person is None:
        raise Refused(f"no person {person_id!r}", field)
    if not person.active:
        raise Refused(f"person {person_id!r} is inactive", field)
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
        raise Refused(f"person {person_id!r} is not a member of any team of tenant {tenant_id!r}", field)


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
        raise Refused(f"no team {slug!r} in tenant {tenant_id!r}{known}", "team")


async def current_deadline(*, session: AsyncSession, conversation: ConversationRef) -> int:
    """The version of the conversation's deadline that is running now (notify's read path)."""
    row = (
        await session.exec(
            select(DeadlineRow.version, DeadlineRow.due_at).where(
                DeadlineRow.conversation_id == conversation.id,
                DeadlineRow.tenant_id == conversation.tenant_id,
            )
        )
    ).first()
    if row is None or row[1] is None:
        raise Refused(
            f"conversation {conversation.id} has no running deadline to acknowledge", "conversation"
        )
    return int(row[0])


async def prepare(
    *,
    session: AsyncSession,
    request: Request,
    tenants: Collection[str] | None = None,
    spelled: dict[str, str] | None = None,
) -> AnyPreparedCommand:
    """Check what the request names against the database and build the command to send.

    `tenants`: the tenants the sender may act on (None: every one). `spelled`: how the sender
    names each field in its messages (the CLI says `--reason` where the API says `reason`)."""
    conversation = None
    deadline_version = None
    if request.action != "status":
        if request.conversation is None:
            raise Refused("name the conversation", "conversation")
        conversation = await find_conversation(
            session=session, reference=request.conversation, tenants=tenants
        )
    if request.person is not None:
        await check_person(
            session=session,
            person_id=request.person,
            tenant_id=conversation.tenant_id if conversation else None,
        )
    if request.team is not None:
        if conversation is None:
            raise Refused("a team is named only with a conversation", "team")
        await check_team(session=session, tenant_id=conversation.tenant_id, slug=request.team)
    if request.action == "acknowledge" and conversation is not None:
        deadline_version = await current_deadline(session=session, conversation=conversation)
    return make_command(request, conversation, deadline_version=deadline_version, spelled=spelled)


def make_command(
    request: Request,
    conversation: ConversationRef | None,
    *,
    deadline_version: int | None = None,
    spelled: dict[str, str] | None = None,
) -> AnyPreparedCommand:
    """The command for a request whose names have been checked."""
    names = spelled or {}
    if request.command_id is not None and not _COMMAND_ID.fullmatch(request.command_id):
        raise Refused(
            f"{names.get('command_id', 'command_id')} {request.command_id!r}: use 8 to 64 letters, "
            "digits and . _ : -",
            "command_id",
        )
    common: dict[str, Any] = {"issued_by": request.issued_by}
    if request.command_id is not None:
        common["command_id"] = request.command_id
    try:
        if request.action == "status":
            return SetStatus(person_id=request.person, status=request.status, **common)
        if conversation is None:
            raise Refused("name the conversation", "conversation")
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
            case "respond":
                return MarkResponded(person_id=request.person, note=request.reason, **common)
            case "acknowledge":
                return Acknowledge(person_id=request.person, deadline_version=deadline_version, **common)
    except ValidationError as error:
        problems = []
        for item in error.errors():
            field = str(item["loc"][0]) if item["loc"] else "command"
            problems.append((field, f"{names.get(field, field)}: {item['msg']}"))
        raise Refused("; ".join(text for _field, text in problems), problems[0][0]) from None
    raise Refused(f"unknown command {request.action!r}", "action")
