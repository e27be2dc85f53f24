"""Replies written in the inbox: what the platform's rules allow now, and sending one.

A reply is what a person writes: only a signed-in person's session sends one, never a token,
and only on a conversation they may act on. The api decides nothing about the platform itself:
it gathers the facts of the message answered (the conversation's platform, the message, what
answering it needs, whether the account is connected for replies and its connection works,
whether Instagram's one private reply was used, YouTube's quota) and asks `shared.reply_rules`,
as the outbound service asks again just before posting. A reply the rules refuse is 409 with
their sentence; else it is published as `SendReply` on SH_COMMANDS, with the SHA-256 of the
person's session, and answered as every action is: 202 with where its outcome will be, or the
outcome itself with `?wait=`.

The `reply` table (the outbound service records each reply there before posting it) says what
became of each: `GET .../replies` lists them with the rules' verdict for the conversation now.
"""

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.api.access import Action, Target
from services.api.actions import ANSWERS, ConversationId, Wait, dispatch
from services.api.auth import settings_of
from services.api.reads import COMMAND_ID_PATTERN, ERRORS, NOT_FOUND, now_of
from services.api.scope import Access, access
from services.api.security import safe_url
from services.api.views import (
    CommandOutcomeView,
    PersonRef,
    ReplyList,
    ReplyRefusal,
    ReplyVerdict,
    ReplyView,
    WayView,
)
from shared import reply_rules
from shared.commands import MAX_REPLY, ReplyMethod, SendReply
from shared.db.models import (
    AccountRow,
    ConversationRow,
    InteractionRow,
    PersonRow,
    ReplyRow,
    ReplyTokenRow,
    TimelineRow,
)
from shared.events import Kind, Platform, ReplyState

REPLY_LIMIT = 200  # the newest replies a conversation lists


def _writable(text: str) -> str:
    """What a platform can carry: no control characters but tab and line breaks, no lone surrogate."""
    for ch in text:
        if (ord(ch) < 32 and ch not in "\t\n\r") or ch == "\x7f" or 0xD800 <= ord(ch) <= 0xDFFF:
            raise ValueError("holds a character no platform takes (a control character or a lone surrogate)")
    return text


class ReplyBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: Annotated[str, Field(min_length=1, max_length=MAX_REPLY), AfterValidator(_writable)] = Field(
        description="What to send, as written (each platform has its own limit, the verdict's max_length)."
    )
    reply_to: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{32}$",
        description="The customer's message it answers (an interaction id); default: their latest.",
    )
    method: ReplyMethod | None = Field(
        default=None, description="One of the verdict's ways; default: its first."
    )
    command_id: str | None = Field(
        default=None,
        pattern=COMMAND_ID_PATTERN,
        description="Your id for this reply (8 to 64 letters, digits and . _ : -): sending it again with "
        "the same id posts it once.",
    )


# -- the facts the rules decide on -------------------------------------------------------------


@dataclass(frozen=True)
class Answering:
    """The message a reply answers, and the facts `reply_rules` decides on."""

    interaction: InteractionRow
    situation: reply_rules.Situation

    @property
    def platform_name(self) -> str:
        return reply_rules.platform_name(self.situation.platform, self.situation.kind)


async def answered(
    session: AsyncSession, conversation: ConversationRow, reply_to: str | None
) -> InteractionRow | None:
    """The customer's message a reply answers: `reply_to` (400 when it is none of this
    conversation's), or their latest one not deleted; None when there is none."""
    query = select(InteractionRow).where(
        InteractionRow.conversation_id == conversation.id,
        InteractionRow.tenant_id == conversation.tenant_id,
        InteractionRow.direction == "inbound",
    )
    if reply_to is not None:
        found = (await session.exec(query.where(InteractionRow.id == reply_to))).first()
        if found is None:
            raise HTTPException(
                400,
                {"error": f"no message of the customer {reply_to} in this conversation", "field": "reply_to"},
            )
        return found
    return (
        await session.exec(
            query.where(col(InteractionRow.retracted_at).is_(None))
            .order_by(
                col(InteractionRow.created_at).desc(),
                col(InteractionRow.received_at).desc(),
                col(InteractionRow.id).desc(),
            )
            .limit(1)
        )
    ).first()


async def youtube_units_left(session: AsyncSession, units: int, now: datetime) -> int:
    """What is left today (a UTC day) of the YouTube quota units replies may take, as the outbound
    service counts them: 50 for each reply posted, or being posted, since the day began."""
    posted = (
        await session.exec(
            select(func.count()).where(
                ReplyRow.platform == Platform.youtube.value,
                col(ReplyRow.started_at).is_not(None) | (ReplyRow.state == ReplyState.sent.value),
                col(ReplyRow.requested_at) >= reply_rules.utc_day(now),
            )
        )
    ).one()
    return reply_rules.youtube_units_left(units, int(posted or 0))


async def answering(
    session: AsyncSession,
    conversation: ConversationRow,
    reply_to: str | None,
    *,
    now: datetime,
    youtube_units: int,
) -> Answering | None:
    """The facts of answering this conversation now; None when it holds no customer's message."""
    interaction = await answered(session, conversation, reply_to)
    if interaction is None:
        return None
    account = await session.get(AccountRow, conversation.account_id)
    credentials = account.reply_credentials if account is not None else None
    token = await session.get(ReplyTokenRow, conversation.account_id) if credentials else None
    failing = reply_rules.failing_of(
        credentials, token.source_sha256 if token else None, token.failing if token else ""
    )
    known = True
    try:
        platform = Platform(conversation.platform)
        kind = Kind(interaction.kind)
    except ValueError:  # a value no version of ingest writes: not answered from here
        platform, kind, known = Platform.other, Kind.comment, False
    private_used = False
    if platform is Platform.instagram:
        private_used = (
            await session.exec(
                select(ReplyRow.id)
                .where(
                    ReplyRow.account_id == conversation.account_id,
                    ReplyRow.target == interaction.external_id,
                    ReplyRow.method == ReplyMethod.private_reply.value,
                    col(ReplyRow.state).in_([ReplyState.sending, ReplyState.sent, ReplyState.in_doubt]),
                )
                .limit(1)
            )
        ).first() is not None
    units = await youtube_units_left(session, youtube_units, now) if platform is Platform.youtube else None
    situation = reply_rules.Situation(
        platform=platform,
        kind=kind,
        answered_at=interaction.created_at,
        last_inbound_at=conversation.last_inbound_at,
        context=reply_rules.context_of(interaction.reply_context),
        account_external_id=account.external_id if account else None,
        connected=bool(credentials) and known,
        failing=failing,
        private_reply_used=private_used,
        youtube_units_left=units,
        link=safe_url(interaction.url) or safe_url(conversation.last_inbound_url),
    )
    return Answering(interaction, situation)


def may_send(access: Access, conversation: ConversationRow) -> bool:
    """Whether the viewer may send a reply here: a signed-in person who may act on it."""
    target = Target(
        tenant_id=conversation.tenant_id, team_id=conversation.team_id, owner_id=conversation.owner_id
    )
    return access.session_sha256 is not None and access.viewer.may(Action.act, target)


def verdict_view(
    found: Answering | None, conversation: ConversationRow, now: datetime, sends: bool
) -> ReplyVerdict:
    """The rules' verdict on answering the conversation now, as the API shows it."""
    if found is None:
        return ReplyVerdict(
            platform=conversation.platform,
            reply_to=None,
            ways=[],
            reason="Nothing to answer: the customer's messages are not here (or were all deleted).",
            link=safe_url(conversation.last_inbound_url),
            max_length=0,
            may_send=sends,
        )
    situation = found.situation
    verdict = reply_rules.verdict(situation, now)
    return ReplyVerdict(
        platform=found.platform_name,
        reply_to=found.interaction.id,
        ways=[
            WayView(
                method=way.method.value,
                tag=way.tag,
                until=way.until,
                label=way.label,
                max_length=reply_rules.LIMITS.get((situation.platform, way.method), verdict.max_length),
            )
            for way in verdict.ways
        ],
        reason=verdict.reason,
        link=safe_url(verdict.link),
        max_length=verdict.max_length,
        may_send=sends,
    )


# -- what became of the replies -----------------------------------------------------------------


def retries_of(entries: Sequence[tuple[int, str]]) -> dict[str, bool]:
    """Whether each reply may be sent again, from its newest reply event kept in the timeline
    (`(seq, detail)` of `reply.changed` entries)."""
    retry: dict[str, tuple[int, bool]] = {}
    for seq, detail in entries:
        try:
            said = json.loads(detail)
        except ValueError:
            continue
        if not isinstance(said, dict) or not isinstance(said.get("reply_id"), str):
            continue
        reply_id = said["reply_id"]
        if reply_id not in retry or retry[reply_id][0] < seq:
            retry[reply_id] = (seq, said.get("retry") is True)
    return {reply_id: again for reply_id, (_, again) in retry.items()}


async def replies_of(access: Access, conversation: ConversationRow) -> tuple[list[ReplyView], bool]:
    """The conversation's replies, newest last, and whether the list is complete."""
    session = access.session
    found = (
        await session.exec(
            select(ReplyRow, PersonRow.name)
            .join(PersonRow, col(PersonRow.id) == col(ReplyRow.person_id), isouter=True)
            .where(ReplyRow.conversation_id == conversation.id, ReplyRow.tenant_id == conversation.tenant_id)
            .order_by(col(ReplyRow.requested_at).desc(), col(ReplyRow.id).desc())
            .limit(REPLY_LIMIT + 1)
        )
    ).all()
    rows = list(reversed(found[:REPLY_LIMIT]))
    failed = [row.id for row, _ in rows if row.state == ReplyState.failed.value]
    retry: dict[str, bool] = {}
    if failed:
        events = (
            await session.exec(
                select(TimelineRow.seq, TimelineRow.detail).where(
                    TimelineRow.conversation_id == conversation.id,
                    TimelineRow.tenant_id == conversation.tenant_id,
                    TimelineRow.kind == "reply.changed",
                )
            )
        ).all()
        retry = retries_of([(seq, detail) for seq, detail in events])
    views = [
        ReplyView(
            id=row.id,
            state=row.state,
            method=row.method,
            tag=row.tag,
            person=PersonRef(id=row.person_id, name=name or row.person_id),
            text=row.text,
            reply_to=row.reply_to,
            requested_at=row.requested_at,
            sent_at=row.sent_at,
            error=row.error,
            platform_id=row.platform_id,
            url=safe_url(row.url),
            retry=row.state == ReplyState.failed.value and retry.get(row.id, True),
        )
        for row, name in rows
    ]
    return views, len(found) <= REPLY_LIMIT


async def reply_list(
    access: Access, conversation: ConversationRow, now: datetime, youtube_units: int
) -> ReplyList:
    """The conversation's replies and what the rules allow now (`access.conversation` gave it)."""
    items, complete = await replies_of(access, conversation)
    found = await answering(access.session, conversation, None, now=now, youtube_units=youtube_units)
    return ReplyList(
        items=items,
        complete=complete,
        verdict=verdict_view(found, conversation, now, may_send(access, conversation)),
    )


# -- sending ---------------------------------------------------------------------------------


def writer(access: Access) -> tuple[str, str]:
    """The person writing and their session's SHA-256; 403 for a token, which is no person."""
    me, session = access.viewer.person_id, access.session_sha256
    if me is None or session is None:
        raise HTTPException(
            403,
            {
                "error": "a reply is written by a person: sign in to the inbox to send one (an API token "
                "cannot)",
                "field": "auth",
            },
        )
    return me, session


def refusal(found: Answering, body: ReplyBody, sentence: str, now: datetime) -> HTTPException:
    """409 with the rules' sentence: `method` when no way (or not the one asked) is open, else `text`."""
    verdict = reply_rules.verdict(found.situation, now)
    open_ways = {way.method for way in verdict.ways}
    field = (
        "method" if not open_ways or (body.method is not None and body.method not in open_ways) else "text"
    )
    return HTTPException(409, {"error": sentence, "field": field, "link": safe_url(verdict.link)})


def replies_router() -> APIRouter:
    router = APIRouter(prefix="/api", tags=["replies"])

    @router.post(
        "/conversations/{conversation_id}/replies",
        status_code=202,
        response_model=CommandOutcomeView,
        response_model_exclude_none=True,
        responses={
            **ANSWERS,
            409: {
                "model": ReplyRefusal,
                "description": "The platform's rules do not let this reply go out now: nothing was sent.",
            },
        },
    )
    async def send_reply(
        conversation_id: ConversationId,
        body: ReplyBody,
        request: Request,
        response: Response,
        access: Annotated[Access, Depends(access)],
        wait: Wait = 0,
    ) -> CommandOutcomeView:
        """Send a reply you wrote to the conversation's platform, as an answer to the customer's
        message (`reply_to`, default their latest), the way the platform's rules allow now. It is
        posted once: the outcome says whether the platform took it, and the conversation's
        replies (`GET` here) what became of it."""
        me, session = writer(access)
        conversation = await access.conversation(conversation_id, Action.act)
        now = now_of(request)
        found = await answering(
            access.session,
            conversation,
            body.reply_to,
            now=now,
            youtube_units=settings_of(request).youtube_units_for_replies(),
        )
        if found is None:
            raise HTTPException(
                409,
                {
                    "error": "nothing to answer: the customer's messages are not here",
                    "field": "text",
                    "link": None,
                },
            )
        way = reply_rules.choose(found.situation, now, body.method, body.text)
        if isinstance(way, str):
            raise refusal(found, body, way, now)
        extra: dict[str, Any] = {"command_id": body.command_id} if body.command_id else {}
        try:
            command = SendReply(
                tenant_id=conversation.tenant_id,
                conversation_id=conversation.id,
                person_id=me,
                session=session,
                text=body.text,
                reply_to=found.interaction.id,
                method=way.method,
                issued_by=me[:63],
                **extra,
            )
        except ValidationError as error:  # what the body allowed and the command does not: say which
            problem = error.errors()[0]
            field = str(problem["loc"][0]) if problem["loc"] else "text"
            raise HTTPException(400, {"error": f"{field}: {problem['msg']}", "field": field}) from None
        return await dispatch(request, response, access, command, wait)

    @router.get(
        "/conversations/{conversation_id}/replies",
        response_model=ReplyList,
        responses={**ERRORS, **NOT_FOUND},
    )
    async def list_replies(
        conversation_id: ConversationId, request: Request, access: Annotated[Access, Depends(access)]
    ) -> ReplyList:
        """The replies written in the inbox for this conversation, newest last, with what became
        of each; and what the platform's rules allow for a reply now (shown before typing)."""
        conversation = await access.conversation(conversation_id)
        return await reply_list(
            access, conversation, now_of(request), settings_of(request).youtube_units_for_replies()
        )

    return router
