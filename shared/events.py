"""Events that StayHuman's services publish to each other (version 1).

Events are facts named in the past tense. Each carries its own `type` and
`version`; a consumer that meets a newer version than it knows refuses it loudly
(it goes to the dead letter) instead of misreading it.
"""

import enum
import re
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter

from shared import ids


def _aware_utc(value: datetime) -> datetime:
    if value.tzinfo is UTC:  # most of them, as the services make them
        return value
    if value.tzinfo is None:
        raise ValueError("timestamp must carry a timezone offset, e.g. 2026-11-26T10:00:00Z")
    try:
        return value.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:30:00+05:00: before the first representable instant
        raise ValueError("timestamp is outside the years 1 to 9999 in UTC") from None


AwareDatetime = Annotated[datetime, AfterValidator(_aware_utc)]


def utcnow() -> datetime:
    return datetime.now(UTC)


# What the store can hold, said once for every producer: 64-bit numbers, text without
# NUL (PostgreSQL refuses it) and without lone surrogates (no encoding can write them),
# ids without control characters and no longer than their columns.
INT64_MAX = 2**63 - 1
_SURROGATE = re.compile("[\ud800-\udfff]")
_CONTROL = re.compile("[\x00-\x1f\x7f]")


def storable_text(value: str) -> str:
    """Text as a database keeps it: NUL removed, lone surrogates replaced (U+FFFD)."""
    if "\x00" in value:
        value = value.replace("\x00", "")
    return _SURROGATE.sub("\ufffd", value)


def _platform_id(value: str) -> str:
    if _CONTROL.search(value) or _SURROGATE.search(value):
        raise ValueError("must not contain control characters")
    return value


def _display(limit: int) -> BeforeValidator:
    """A name shown to people: cut to what the column holds rather than refuse the message."""

    def cut(value: object) -> object:
        return storable_text(value)[:limit] if isinstance(value, str) else value

    return BeforeValidator(cut)


StorableText = Annotated[str, AfterValidator(storable_text)]
Int64 = Annotated[int, Field(ge=0, le=INT64_MAX)]
PlatformId = Annotated[str, Field(min_length=1, max_length=512), AfterValidator(_platform_id)]
AuthorId = Annotated[str, Field(min_length=1, max_length=256), AfterValidator(_platform_id)]
DisplayName = Annotated[str, Field(max_length=256), _display(256)]
MAX_TEXT = 65_536


class Platform(enum.StrEnum):
    facebook = "facebook"
    instagram = "instagram"
    x = "x"
    mastodon = "mastodon"
    bluesky = "bluesky"
    youtube = "youtube"
    other = "other"


class Kind(enum.StrEnum):
    mention = "mention"
    comment = "comment"
    reply = "reply"
    dm = "dm"
    review = "review"
    quote = "quote"


class Direction(enum.StrEnum):
    inbound = "inbound"
    outbound = "outbound"


class Author(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: AuthorId
    name: DisplayName = ""
    handle: DisplayName = ""
    followers: Int64 | None = None
    verified: bool = False


class Event(BaseModel):
    model_config = ConfigDict(frozen=True)

    event_id: str = Field(default_factory=ids.new_id)
    occurred_at: AwareDatetime = Field(default_factory=utcnow)
    tenant_id: str
    correlation_id: str = ""


MastodonVisibility = Literal["public", "unlisted", "private", "direct"]


class ReplyContext(BaseModel):
    """What a platform needs, beyond the message's own id, to answer it through its API.

    Only what the platform gave is set: a Bluesky post's CID and its thread's root, the
    visibility of a Mastodon status (a reply keeps it: direct stays direct), the accounts an X
    post mentions and whom it answered (X lets a brand reply only where it was mentioned or
    engaged), the conversation a DM belongs to."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cid: Annotated[str, Field(max_length=128), AfterValidator(_platform_id)] | None = None
    root_uri: PlatformId | None = None
    root_cid: Annotated[str, Field(max_length=128), AfterValidator(_platform_id)] | None = None
    visibility: MastodonVisibility | None = None
    mentions: Annotated[list[AuthorId], Field(max_length=100)] = Field(default_factory=list)
    in_reply_to_user: AuthorId | None = None
    dm_conversation_id: PlatformId | None = None


class InteractionReceived(Event):
    """A normalised message from a platform, inbound or the brand's own reply."""

    type: Literal["interaction.received"] = "interaction.received"
    version: Literal[1] = 1
    interaction_id: str
    account_id: str
    platform: Platform
    external_id: PlatformId
    edit_version: Int64 = 0
    kind: Kind
    direction: Direction
    thread_id: PlatformId
    parent_id: PlatformId | None = None
    author: Author
    text: Annotated[StorableText, Field(max_length=MAX_TEXT)]
    url: Annotated[str, Field(max_length=2048), AfterValidator(_platform_id)] | None = None
    language: Annotated[str, Field(max_length=16)] | None = None
    created_at: AwareDatetime
    received_at: AwareDatetime
    reply: ReplyContext | None = None  # what answering it through the platform's API needs
    # An outbound reply sent from the inbox: the person who wrote it (None: written elsewhere,
    # on the platform's own app, or the platform's echo of it).
    sent_by: Annotated[str, Field(max_length=63)] | None = None


class InteractionRetracted(Event):
    """The author removed a message (a deleted comment): what it would have triggered is cancelled."""

    type: Literal["interaction.retracted"] = "interaction.retracted"
    version: Literal[1] = 1
    account_id: str
    platform: Platform
    external_id: PlatformId
    thread_id: PlatformId
    retracted_at: AwareDatetime


AnyInteraction = Annotated[InteractionReceived | InteractionRetracted, Field(discriminator="type")]
interaction_adapter: TypeAdapter[AnyInteraction] = TypeAdapter(AnyInteraction)


class ConversationEvent(Event):
    conversation_id: str
    account_id: str


class ConversationOpened(ConversationEvent):
    """The first inbound message of a thread opened a conversation."""

    type: Literal["conversation.opened"] = "conversation.opened"
    version: Literal[1] = 1
    platform: Platform
    thread_id: str
    author: Author
    interaction_id: str
    opened_at: AwareDatetime
    topic: str | None = None
    priority: str = "normal"
    config_version: int = 0  # the tenant's configuration version whose rules chose topic and priority


class ConversationAssigned(ConversationEvent):
    """A conversation got a human owner; `reason` says which rule and step chose them."""

    type: Literal["conversation.assigned"] = "conversation.assigned"
    version: Literal[1] = 1
    team_id: str | None
    owner_id: str | None
    reason: str
    assigned_at: AwareDatetime
    step: str = ""  # continuity, match, any member, queue, claim, reassign, hand over, from queue
    previous_owner_id: str | None = None
    config_version: int = 0  # the tenant's configuration version whose teams and people chose


class ConversationResponded(ConversationEvent):
    """The brand replied in the thread: the clock stops."""

    type: Literal["conversation.responded"] = "conversation.responded"
    version: Literal[1] = 1
    interaction_id: str
    responded_at: AwareDatetime


class ConversationReopened(ConversationEvent):
    """The customer wrote again after the brand's reply: a next-response clock starts."""

    type: Literal["conversation.reopened"] = "conversation.reopened"
    version: Literal[1] = 1
    interaction_id: str
    reopened_at: AwareDatetime


class ConversationPaused(ConversationEvent):
    """Waiting on the customer: the SLA clock stops, the owner's capacity is freed."""

    type: Literal["conversation.paused"] = "conversation.paused"
    version: Literal[1] = 1
    reason: str
    paused_at: AwareDatetime


class ConversationResumed(ConversationEvent):
    """The clock runs again with the business time it had left."""

    type: Literal["conversation.resumed"] = "conversation.resumed"
    version: Literal[1] = 1
    resumed_at: AwareDatetime


class ConversationResolved(ConversationEvent):
    """Nothing is left to answer: resolved by a person, by quiet, or a withdrawn message."""

    type: Literal["conversation.resolved"] = "conversation.resolved"
    version: Literal[1] = 1
    reason: str
    resolved_at: AwareDatetime


class DeadlineKind(enum.StrEnum):
    first_response = "first_response"
    next_response = "next_response"
    resolution = "resolution"


class DeadlineChanged(Event):
    """The deadline contract: the router computes absolute times, notify only arms them.

    `version` only grows for a conversation. `due_at` None means no timer is armed
    any more (responded, resolved, or an interaction older than the backfill cutoff).
    A consumer acts on the highest version it has seen and ignores older ones.
    """

    type: Literal["deadline.changed"] = "deadline.changed"
    version: Literal[1] = 1
    conversation_id: str
    account_id: str
    deadline_version: int = Field(ge=1)
    kind: DeadlineKind | None
    owner_id: str | None
    started_at: AwareDatetime | None
    warn_at: AwareDatetime | None
    due_at: AwareDatetime | None
    reason: str
    priority: str = "normal"
    config_version: int = 0  # the tenant's configuration version whose SLA policy set the times


class ConnectorProblem(Event):
    """A connected account stopped delivering: an operator must look (a revoked token, silence)."""

    type: Literal["connector.problem"] = "connector.problem"
    version: Literal[1] = 1
    account_id: str
    platform: Platform
    problem: Literal["failing", "silent"]
    detail: str
    since: AwareDatetime


AnyConversationEvent = Annotated[
    ConversationOpened
    | ConversationAssigned
    | ConversationResponded
    | ConversationReopened
    | ConversationPaused
    | ConversationResumed
    | ConversationResolved,
    Field(discriminator="type"),
]
conversation_event_adapter: TypeAdapter[AnyConversationEvent] = TypeAdapter(AnyConversationEvent)


# Outcomes of commands: every command a service takes gets exactly one of these, so an
# inbox can show what became of what a person asked from events alone.


class Rejection(enum.StrEnum):
    """Why a command was not applied (the machine-readable half; `reason` is the sentence)."""

    unknown_conversation = "unknown_conversation"  # no such conversation in that tenant
    unknown_person = "unknown_person"  # no such (active) person
    unknown_team = "unknown_team"
    unknown_tenant = "unknown_tenant"
    not_a_member = "not_a_member"  # the person does not serve that team or tenant
    at_capacity = "at_capacity"
    unavailable = "unavailable"  # away, offline, off shift or out of office
    closed = "closed"  # the conversation is resolved
    not_paused = "not_paused"
    already_paused = "already_paused"
    already_done = "already_done"  # nothing to change: it is so already
    outside_window = "outside_window"  # the platform's rules do not let a reply go out now
    platform_error = "platform_error"  # the platform refused the reply (its error is the reason)
    in_doubt = "in_doubt"  # the platform's answer was lost: check on the platform before writing again
    not_connected = "not_connected"  # the account has no write credentials, or they stopped working
    outdated = "outdated"  # it names a deadline or version that has moved on
    invalid = "invalid"  # anything else a person got wrong


class CommandOutcome(Event):
    """What became of one command. `tenant_id` is "" for commands about a person, who may
    serve many tenants; `person_id` names them."""

    command_id: str
    command_type: str
    issued_by: str
    issued_at: AwareDatetime
    conversation_id: str | None = None
    person_id: str | None = None


class CommandApplied(CommandOutcome):
    """The command was applied; `summary` says what it changed, for a person to read."""

    type: Literal["command.applied"] = "command.applied"
    version: Literal[1] = 1
    summary: str = ""


class CommandRejected(CommandOutcome):
    """The command changed nothing; `reason` is the sentence a person reads ("maria is at capacity")."""

    type: Literal["command.rejected"] = "command.rejected"
    version: Literal[1] = 1
    code: Rejection
    reason: str


AnyCommandOutcome = Annotated[CommandApplied | CommandRejected, Field(discriminator="type")]
command_outcome_adapter: TypeAdapter[AnyCommandOutcome] = TypeAdapter(AnyCommandOutcome)


# What notify did: every alert, assignment notice, digest and operator alert it sent or
# failed to send, and every acknowledgement.


class AlertKind(enum.StrEnum):
    warning = "warning"
    breach = "breach"
    escalation = "escalation"
    assignment = "assignment"
    digest = "digest"
    connector = "connector"


class AlertChannel(enum.StrEnum):
    email = "email"
    push = "push"
    apprise = "apprise"


class AlertDelivery(Event):
    """One message to one person (or operator address) on one channel."""

    alert_id: str
    alert_kind: AlertKind
    step: str = ""  # the timeline step (warning, breach, escalation-1, ...) or the notice's kind
    channel: AlertChannel
    person_id: str | None = None  # None: an operator address, not a person
    conversation_id: str | None = None
    deadline_version: int | None = None


class AlertSent(AlertDelivery):
    type: Literal["alert.sent"] = "alert.sent"
    version: Literal[1] = 1
    detail: str = ""  # what was sent: the email's Message-ID, how many push endpoints took it


class AlertFailed(AlertDelivery):
    """A delivery failed; `final` says notify gave up (else it retries at `retry_at`)."""

    type: Literal["alert.failed"] = "alert.failed"
    version: Literal[1] = 1
    error: str
    final: bool
    retry_at: AwareDatetime | None = None


class AlertAcknowledged(Event):
    """A person said "I'm on it": the escalation of that deadline stops (the reply is still due)."""

    type: Literal["alert.acknowledged"] = "alert.acknowledged"
    version: Literal[1] = 1
    conversation_id: str
    deadline_version: int
    person_id: str
    acknowledged_at: AwareDatetime
    command_id: str | None = None


AnyAlertEvent = Annotated[AlertSent | AlertFailed | AlertAcknowledged, Field(discriminator="type")]
alert_event_adapter: TypeAdapter[AnyAlertEvent] = TypeAdapter(AnyAlertEvent)


# What became of a reply written in the inbox (the outbound service publishes them).


class ReplyState(enum.StrEnum):
    sending = "sending"  # recorded, being posted (or posted and its answer not yet recorded)
    sent = "sent"  # the platform has it: `platform_id` names it
    failed = "failed"  # the platform refused it, or it was never posted: nothing went out
    in_doubt = "in_doubt"  # it may have gone out and nothing could tell: a person checks on the platform


class ReplyEvent(Event):
    """One reply's state changed. `reply_id` is the command's id (its idempotency key)."""

    type: Literal["reply.changed"] = "reply.changed"
    version: Literal[1] = 1
    reply_id: str
    conversation_id: str
    account_id: str
    platform: Platform
    person_id: str
    state: ReplyState
    method: str = ""  # how it went out: comment_reply, send_api, human_agent, status, post, ...
    platform_id: str | None = None
    url: str | None = None  # the reply on the platform, or where to check on it
    error: str = ""  # the platform's words when it refused, or why it is in doubt
    retry: bool = False  # failed and safe to send again


reply_event_adapter: TypeAdapter[ReplyEvent] = TypeAdapter(ReplyEvent)
