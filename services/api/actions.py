"""Actions: what people ask of a conversation or a person, sent as the commands the CLI sends.

The API changes nothing itself. Each action loads its target through `Access` (404 for what
the viewer may not see, 403 for what their role may not do), checks what the request names
with `shared.preflight` (400 with the sentence and the field at fault), and publishes the
command on SH_COMMANDS once JetStream has stored it. The router or notify applies it and
publishes its outcome, which the timeline consumer keeps: the answer is 202 with the URL
of that outcome, or, with `?wait=`, the outcome itself when it comes in time.

A client may give its own `command_id`: sending the same command again after a lost answer
then does it once (it is the message's `Nats-Msg-Id`).
"""

import asyncio
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Annotated, Any, Protocol

import nats.errors
from fastapi import APIRouter, Body, Depends, HTTPException, Path, Query, Request, Response
from nats.js import JetStreamContext
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.api.access import Action
from services.api.reads import CONVERSATION_ID_PATTERN, ERRORS, NOT_FOUND, outcome_view
from services.api.scope import Access, access, forbidden
from services.api.views import CommandOutcomeView, NotSent
from shared.commands import PersonStatus, SendReply
from shared.db.models import CommandOutcomeRow, ConversationRow, TeamRow
from shared.ids import SLUG_PATTERN
from shared.jetstream import publish_retrying
from shared.messages import command_outgoing
from shared.preflight import Action as Verb
from shared.preflight import AnyPreparedCommand, Refused, prepare
from shared.preflight import Request as Asked

PUBLISH_TIMEOUT = 5.0  # seconds to get JetStream's ack, transient failures retried
OUTCOME_POLL = 0.1  # seconds between two looks for the outcome while waiting


class CommandNotSent(Exception):
    """NATS did not store the command: nothing was sent, nothing changes."""


# What the api sends: the router's and notify's commands (checked by preflight), and replies
# to the outbound service (checked by shared.reply_rules, services/api/replies.py).
Sendable = AnyPreparedCommand | SendReply


class CommandSender(Protocol):
    async def send(self, command: Sendable) -> None:
        """Return once the command is stored; raise CommandNotSent when it could not be."""
        ...


class JetStreamCommands:
    """Publishes each command on its subject under its id, and waits for JetStream's ack."""

    def __init__(self, js: JetStreamContext, *, timeout: float = PUBLISH_TIMEOUT) -> None:
        self.js = js
        self.timeout = timeout

    async def send(self, command: Sendable) -> None:
        outgoing = command_outgoing(command)  # subject_of(command), its JSON, Nats-Msg-Id msg_id_of(command)
        try:
            await publish_retrying(
                self.js,
                outgoing.subject,
                outgoing.payload,
                headers=outgoing.all_headers(),
                timeout=self.timeout,
            )
        except (nats.errors.Error, OSError) as error:  # TimeoutError is an OSError
            raise CommandNotSent(f"NATS did not store it ({type(error).__name__})") from error


@dataclass
class KeptCommands:
    """A sender that keeps what it is given (tests, and a service without NATS); `failing`
    makes it refuse as an unreachable NATS would."""

    sent: list[Sendable] = field(default_factory=list)
    failing: bool = False

    async def send(self, command: Sendable) -> None:
        if self.failing:
            raise CommandNotSent("NATS does not answer")
        self.sent.append(command)


# Free text a person writes (a reason, a note): no control characters but tab and line breaks,
# which PostgreSQL (a NUL) and every log downstream would choke on.
TEXT_PATTERN = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"


# -- request bodies --------------------------------------------------------------------------


class ActionBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    command_id: str | None = Field(
        default=None,
        max_length=64,
        description="Your id for this command (8 to 64 letters, digits and . _ : -): sending it again "
        "with the same id does it once.",
    )


class ClaimBody(ActionBody):
    person: str | None = Field(
        default=None,
        pattern=SLUG_PATTERN,
        description="Who takes it (default: you; another person: reassign).",
    )


class ReassignBody(ActionBody):
    person: str | None = Field(default=None, pattern=SLUG_PATTERN, description="Give it to this person ...")
    team: str | None = Field(default=None, pattern=SLUG_PATTERN, description="... or to this team's queue.")
    reason: str = Field(default="", max_length=200, pattern=TEXT_PATTERN)


class ReasonBody(ActionBody):
    reason: str = Field(default="", max_length=200, pattern=TEXT_PATTERN)


class RespondBody(ActionBody):
    person: str | None = Field(
        default=None, pattern=SLUG_PATTERN, description="Who answered (default: the conversation's owner)."
    )
    note: str = Field(
        default="", max_length=200, pattern=TEXT_PATTERN, description="How it was answered, for the record."
    )


class StatusBody(ActionBody):
    status: PersonStatus


# -- sending ---------------------------------------------------------------------------------


async def build(access: Access, asked: Asked, tenants: Collection[str]) -> AnyPreparedCommand:
    """The command, checked by preflight within `tenants`; 400 naming the field it refuses."""
    try:
        return await prepare(session=access.session, request=asked, tenants=tenants)
    except Refused as refused:
        raise HTTPException(400, {"error": str(refused), "field": refused.field}) from None


def issuer(access: Access) -> str:
    """Who the command says asked: the person's id, or the token's label."""
    return access.viewer.label[:63]


async def await_outcome(
    sessions: async_sessionmaker[AsyncSession], command_id: str, seconds: float
) -> CommandOutcomeRow | None:
    """The command's outcome once the timeline consumer has kept it, or None after `seconds`."""
    clock = asyncio.get_running_loop().time
    end = clock() + seconds
    while True:
        async with sessions() as session:
            row = await session.get(CommandOutcomeRow, command_id)
        if row is not None or clock() >= end:
            return row
        await asyncio.sleep(max(0.0, min(OUTCOME_POLL, end - clock())))


async def dispatch(
    request: Request, response: Response, access: Access, command: Sendable, wait: float
) -> CommandOutcomeView:
    """Send the command; answer 202 pending, or 200 with its outcome if it comes within `wait`."""
    # The checks are done: the database connection goes back to the pool while NATS and the
    # outcome are awaited.
    await access.session.close()
    sender: CommandSender = request.app.state.commands
    try:
        await sender.send(command)
    except CommandNotSent as error:
        raise HTTPException(
            503,
            {
                "error": f"the command was not sent: {error}. Nothing changed; send it again "
                f"(with command_id {command.command_id} it is done once)",
                "field": "nats",
                "command_id": command.command_id,
            },
            headers={"Retry-After": "5"},
        ) from None
    response.status_code = 202
    if wait > 0:
        row = await await_outcome(request.app.state.sessions, command.command_id, wait)
        if row is not None:
            response.status_code = 200
            return outcome_view(command.command_id, row)
    return outcome_view(command.command_id, None)


async def may_give_to_person(access: Access, person_id: str) -> None:
    """403 unless the viewer may hand work to this person (a lead: someone of their teams).
    Preflight has found the person serving the conversation's tenant, so 404 is no answer."""
    try:
        await access.person(person_id, Action.reassign)
    except HTTPException as error:
        if error.status_code == 404:
            raise forbidden(Action.reassign, f"to person {person_id}") from None
        raise


async def may_give_to_team(access: Access, conversation: ConversationRow, slug: str) -> None:
    """403 unless the viewer may hand work to this team of the conversation's tenant (a lead:
    one they lead)."""
    reachable = (
        await access.session.exec(
            select(TeamRow.id).where(
                TeamRow.tenant_id == conversation.tenant_id,
                TeamRow.slug == slug,
                access.teams(Action.reassign),
            )
        )
    ).first()
    if reachable is None:
        raise forbidden(Action.reassign, f"to team {slug}")


def person_only(access: Access, what: str) -> str:
    me = access.viewer.person_id
    if me is None:
        raise HTTPException(
            403, {"error": f"{what} is what a signed-in person does: a token is no person", "field": "auth"}
        )
    return me


# -- routes ----------------------------------------------------------------------------------

ConversationId = Annotated[str, Path(pattern=CONVERSATION_ID_PATTERN, description="32 hex characters.")]
Wait = Annotated[
    float,
    Query(
        ge=0,
        le=10,
        description="Seconds to wait for the outcome: 200 with it if it comes in time, else 202 pending.",
    ),
]
ANSWERS: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    **NOT_FOUND,
    200: {"model": CommandOutcomeView, "description": "The outcome came within `wait`."},
    202: {"model": CommandOutcomeView, "description": "Sent; its outcome will be at `outcome_url`."},
    503: {"model": NotSent, "description": "NATS did not store the command: nothing was sent."},
}


def actions_router() -> APIRouter:
    router = APIRouter(prefix="/api", tags=["act"])

    def post(path: str) -> Any:
        return router.post(
            path,
            status_code=202,
            response_model=CommandOutcomeView,
            response_model_exclude_none=True,
            responses=ANSWERS,
        )

    @post("/conversations/{conversation_id}/claim")
    async def claim(
        conversation_id: ConversationId,
        request: Request,
        response: Response,
        access: Annotated[Access, Depends(access)],
        body: Annotated[ClaimBody | None, Body()] = None,
        wait: Wait = 0,
    ) -> CommandOutcomeView:
        """Take a conversation (yourself, from your queue), or give it to someone (reassign's right)."""
        body = body or ClaimBody()
        me = access.viewer.person_id
        person = body.person or me
        if person is None:
            raise HTTPException(400, {"error": "name the person who takes it", "field": "person"})
        conversation = await access.conversation(
            conversation_id, Action.act if person == me else Action.reassign
        )
        command = await build(
            access,
            Asked(
                action="claim",
                conversation=conversation.id,
                person=person,
                issued_by=issuer(access),
                command_id=body.command_id,
            ),
            [conversation.tenant_id],
        )
        if person != me:
            await may_give_to_person(access, person)
        return await dispatch(request, response, access, command, wait)

    @post("/conversations/{conversation_id}/reassign")
    async def reassign(
        conversation_id: ConversationId,
        body: ReassignBody,
        request: Request,
        response: Response,
        access: Annotated[Access, Depends(access)],
        wait: Wait = 0,
    ) -> CommandOutcomeView:
        """Give a conversation to a person, or back to a team's queue. A team lead gives only
        within the teams they lead."""
        if body.person is None and body.team is None:
            raise HTTPException(
                400, {"error": "name the person or the team to give it to", "field": "person"}
            )
        conversation = await access.conversation(conversation_id, Action.reassign)
        command = await build(
            access,
            Asked(
                action="reassign",
                conversation=conversation.id,
                person=body.person,
                team=body.team,
                reason=body.reason,
                issued_by=issuer(access),
                command_id=body.command_id,
            ),
            [conversation.tenant_id],
        )
        if body.person is not None:
            await may_give_to_person(access, body.person)
        if body.team is not None:
            await may_give_to_team(access, conversation, body.team)
        return await dispatch(request, response, access, command, wait)

    async def simple(
        action: Verb,
        conversation_id: str,
        request: Request,
        response: Response,
        access: Access,
        wait: float,
        body: ActionBody,
        **asked: Any,
    ) -> CommandOutcomeView:
        conversation = await access.conversation(conversation_id, Action.act)
        command = await build(
            access,
            Asked(
                action=action,
                conversation=conversation.id,
                issued_by=issuer(access),
                command_id=body.command_id,
                **asked,
            ),
            [conversation.tenant_id],
        )
        return await dispatch(request, response, access, command, wait)

    @post("/conversations/{conversation_id}/pause")
    async def pause(
        conversation_id: ConversationId,
        request: Request,
        response: Response,
        access: Annotated[Access, Depends(access)],
        body: Annotated[ReasonBody | None, Body()] = None,
        wait: Wait = 0,
    ) -> CommandOutcomeView:
        """Waiting on the customer: the clock stops until they write or someone resumes it."""
        body = body or ReasonBody()
        return await simple(
            "pause", conversation_id, request, response, access, wait, body, reason=body.reason
        )

    @post("/conversations/{conversation_id}/resume")
    async def resume(
        conversation_id: ConversationId,
        request: Request,
        response: Response,
        access: Annotated[Access, Depends(access)],
        body: Annotated[ActionBody | None, Body()] = None,
        wait: Wait = 0,
    ) -> CommandOutcomeView:
        """The clock of a paused conversation runs again."""
        return await simple("resume", conversation_id, request, response, access, wait, body or ActionBody())

    @post("/conversations/{conversation_id}/resolve")
    async def resolve(
        conversation_id: ConversationId,
        request: Request,
        response: Response,
        access: Annotated[Access, Depends(access)],
        body: Annotated[ReasonBody | None, Body()] = None,
        wait: Wait = 0,
    ) -> CommandOutcomeView:
        """Nothing is left to answer."""
        body = body or ReasonBody()
        return await simple(
            "resolve", conversation_id, request, response, access, wait, body, reason=body.reason
        )

    @post("/conversations/{conversation_id}/mark-responded")
    async def mark_responded(
        conversation_id: ConversationId,
        request: Request,
        response: Response,
        access: Annotated[Access, Depends(access)],
        body: Annotated[RespondBody | None, Body()] = None,
        wait: Wait = 0,
    ) -> CommandOutcomeView:
        """It was answered where StayHuman does not watch (a call, the platform's own app): its
        clock stops as if the reply had come in the thread."""
        body = body or RespondBody()
        return await simple(
            "respond",
            conversation_id,
            request,
            response,
            access,
            wait,
            body,
            person=body.person,
            reason=body.note,
        )

    @post("/conversations/{conversation_id}/acknowledge")
    async def acknowledge(
        conversation_id: ConversationId,
        request: Request,
        response: Response,
        access: Annotated[Access, Depends(access)],
        body: Annotated[ActionBody | None, Body()] = None,
        wait: Wait = 0,
    ) -> CommandOutcomeView:
        """Say "I'm on it": the escalation of the conversation's current deadline stops."""
        me = person_only(access, "acknowledging")
        return await simple(
            "acknowledge", conversation_id, request, response, access, wait, body or ActionBody(), person=me
        )

    @post("/people/{person_id}/status")
    async def set_status(
        person_id: Annotated[str, Path(pattern=SLUG_PATTERN)],
        body: StatusBody,
        request: Request,
        response: Response,
        access: Annotated[Access, Depends(access)],
        wait: Wait = 0,
    ) -> CommandOutcomeView:
        """Whether a person takes work now: available, away (keeps what they own), offline (hands
        over what would fall due while gone)."""
        person = await access.person(person_id, Action.set_status)
        command = await build(
            access,
            Asked(
                action="status",
                person=person.id,
                status=body.status,
                issued_by=issuer(access),
                command_id=body.command_id,
            ),
            (),  # a status names no conversation, so no tenant's
        )
        return await dispatch(request, response, access, command, wait)

    return router
