"""Commands: what people and operators ask the router to do (version 1).

Commands are requests named in the imperative, published on NATS by the
`stayhuman` CLI today and by the API later, the very same messages. The router
applies the commands about conversations, people and tenants (`sh.cmd.>`);
notify applies acknowledgements (`sh.ncmd.>`). Whoever applies a command
publishes its outcome, `CommandApplied` or `CommandRejected` with its reason.
Each command has a `command_id`, used as its `Nats-Msg-Id`: sending the same
command twice (a retry) does it once.
"""

import enum
import uuid
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter

from shared import subjects
from shared.events import AwareDatetime, utcnow
from shared.ids import SLUG_PATTERN


def _printable(value: str) -> str:
    if any((ord(c) < 32 and c not in "\t\n\r") or c == "\x7f" for c in value):
        raise ValueError("control characters are not allowed")
    return value


# What a person writes on a command (a reason, a note): a line or a few, no control characters
# (PostgreSQL stores no NUL, and nothing downstream should have to carry one).
Words = Annotated[str, Field(max_length=200), AfterValidator(_printable)]


class PersonStatus(enum.StrEnum):
    available = "available"  # takes new conversations
    away = "away"  # keeps what they own, takes nothing new
    offline = "offline"  # hands over what would fall due while gone


class Command(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    command_id: str = Field(default_factory=lambda: uuid.uuid4().hex, min_length=8, max_length=64)
    issued_at: AwareDatetime = Field(default_factory=utcnow)
    issued_by: str = Field(default="operator", max_length=63)  # a person id, or who else asked
    correlation_id: str = Field(default="", max_length=64)


class SetStatus(Command):
    """An owner says whether they take work now."""

    type: Literal["person.set_status"] = "person.set_status"
    version: Literal[1] = 1
    person_id: str = Field(pattern=SLUG_PATTERN)
    status: PersonStatus


class HandOver(Command):
    """Give the open conversations of someone who can no longer answer them to others (a person
    removed from the configuration or deactivated)."""

    type: Literal["person.hand_over"] = "person.hand_over"
    version: Literal[1] = 1
    person_id: str = Field(pattern=SLUG_PATTERN)
    reason: Words = ""


class CheckAvailability(Command):
    """A shift or an absence begins or ends (a timer the router arms for itself), or the
    configuration of a person changed: take or hand over work as their availability says."""

    type: Literal["person.check_availability"] = "person.check_availability"
    version: Literal[1] = 1
    person_id: str = Field(pattern=SLUG_PATTERN)


class ConversationCommand(Command):
    tenant_id: str = Field(pattern=SLUG_PATTERN)
    conversation_id: str = Field(pattern=r"^[0-9a-f]{32}$")


class Claim(ConversationCommand):
    """A person takes a conversation for themselves."""

    type: Literal["conversation.claim"] = "conversation.claim"
    version: Literal[1] = 1
    person_id: str = Field(pattern=SLUG_PATTERN)


class Reassign(ConversationCommand):
    """Give a conversation to a named person, or back to a team (its queue picks the owner)."""

    type: Literal["conversation.reassign"] = "conversation.reassign"
    version: Literal[1] = 1
    person_id: str | None = Field(default=None, pattern=SLUG_PATTERN)
    team: str | None = Field(default=None, pattern=SLUG_PATTERN)
    reason: Words = ""


class Pause(ConversationCommand):
    """Waiting on the customer: the SLA clock stops until they write or someone resumes."""

    type: Literal["conversation.pause"] = "conversation.pause"
    version: Literal[1] = 1
    reason: Words = ""


class Resume(ConversationCommand):
    type: Literal["conversation.resume"] = "conversation.resume"
    version: Literal[1] = 1


class Resolve(ConversationCommand):
    """Nothing is left to answer."""

    type: Literal["conversation.resolve"] = "conversation.resolve"
    version: Literal[1] = 1
    reason: Words = ""


class MarkResponded(ConversationCommand):
    """The brand answered where StayHuman does not watch (a phone call, the platform's own app for
    an account not connected for replies): the clock stops as if the reply had come in the thread.

    `person_id` answered and is who the author goes to next time (None: the conversation's owner);
    `issued_by` says who recorded it; `note` says how, for the record ("called them")."""

    type: Literal["conversation.mark_responded"] = "conversation.mark_responded"
    version: Literal[1] = 1
    person_id: str | None = Field(default=None, pattern=SLUG_PATTERN)
    note: Words = ""


class AutoResolve(ConversationCommand):
    """A responded conversation stayed quiet for the tenant's auto-resolve time (a router timer)."""

    type: Literal["conversation.auto_resolve"] = "conversation.auto_resolve"
    version: Literal[1] = 1


class Recompute(Command):
    """Recompute the deadlines of a tenant's open conversations under its current SLA policies."""

    type: Literal["tenant.recompute"] = "tenant.recompute"
    version: Literal[1] = 1
    tenant_id: str = Field(pattern=SLUG_PATTERN)


AnyCommand = Annotated[
    SetStatus
    | HandOver
    | CheckAvailability
    | Claim
    | Reassign
    | Pause
    | Resume
    | Resolve
    | MarkResponded
    | AutoResolve
    | Recompute,
    Field(discriminator="type"),
]
command_adapter: TypeAdapter[AnyCommand] = TypeAdapter(AnyCommand)

PersonCommand = SetStatus | HandOver | CheckAvailability


class Acknowledge(ConversationCommand):
    """A person says "I'm on it" for one deadline of a conversation: its escalation stops."""

    type: Literal["alert.acknowledge"] = "alert.acknowledge"
    version: Literal[1] = 1
    deadline_version: int = Field(ge=1)
    person_id: str = Field(pattern=SLUG_PATTERN)


AnyNotifyCommand = Annotated[Acknowledge, Field(discriminator="type")]
notify_command_adapter: TypeAdapter[AnyNotifyCommand] = TypeAdapter(AnyNotifyCommand)


def _reply_text(value: str) -> str:
    if not value.strip():
        raise ValueError("write something to send")
    return _printable(value)


MAX_REPLY = 10_000  # the longest any platform takes (a YouTube comment); each has its own limit too


class ReplyMethod(enum.StrEnum):
    """How a reply goes out; `shared.reply_rules` says which a conversation allows now."""

    comment_reply = "comment_reply"  # an answer under the comment (Facebook, Instagram, YouTube)
    private_reply = "private_reply"  # Instagram: one DM answering a comment, within 7 days
    send_api = "send_api"  # Messenger, Instagram DM: within 24 hours of the person's last message
    human_agent = "human_agent"  # the same with the HUMAN_AGENT tag: up to 7 days, a person only
    post = "post"  # X: a reply post; Bluesky: a post with reply references
    dm = "dm"  # X: a message in the DM conversation
    status = "status"  # Mastodon: a status in reply, mentioning the author
    webhook = "webhook"  # generic and batch accounts: a signed request to the operator's URL


class SendReply(ConversationCommand):
    """A person sends a reply they wrote to the conversation's platform, as an answer to one of
    its messages (`reply_to`, an interaction id; None: the customer's latest message).

    Only the inbox sends it, for a signed-in person: `session` is the SHA-256 its session is kept
    under, which the outbound service checks is live and that person's before anything is posted.
    `command_id` is the reply's idempotency key: it is recorded before it is posted, once."""

    type: Literal["conversation.reply"] = "conversation.reply"
    version: Literal[1] = 1
    person_id: str = Field(pattern=SLUG_PATTERN)
    session: str = Field(pattern=r"^[0-9a-f]{64}$")
    text: Annotated[str, Field(min_length=1, max_length=MAX_REPLY), AfterValidator(_reply_text)]
    reply_to: str | None = Field(default=None, pattern=r"^[0-9a-f]{32}$")
    method: ReplyMethod | None = None  # None: what the rules choose; else the one the person chose


AnyOutboundCommand = Annotated[SendReply, Field(discriminator="type")]
outbound_command_adapter: TypeAdapter[AnyOutboundCommand] = TypeAdapter(AnyOutboundCommand)


def subject_of(command: AnyCommand | Acknowledge | SendReply) -> str:
    """Where a command is published: per person, per conversation, or per tenant."""
    verb = command.type.split(".", 1)[1]
    match command:
        case SendReply():
            return subjects.outbound_command(
                tenant_id=command.tenant_id, conversation_id=command.conversation_id, verb=verb
            )
        case Acknowledge():
            return subjects.notify_command(
                tenant_id=command.tenant_id, conversation_id=command.conversation_id, verb=verb
            )
        case SetStatus() | HandOver() | CheckAvailability():
            return subjects.person_command(person_id=command.person_id, verb=verb)
        case ConversationCommand():
            return subjects.conversation_command(
                tenant_id=command.tenant_id, conversation_id=command.conversation_id, verb=verb
            )
        case Recompute():
            return subjects.tenant_command(tenant_id=command.tenant_id, verb=verb)
    raise TypeError(f"no subject for {type(command).__name__}")


def msg_id_of(command: AnyCommand | Acknowledge | SendReply) -> str:
    return f"cmd:{command.command_id}"
