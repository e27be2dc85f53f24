"""What the API answers: one pydantic model per shape, so the OpenAPI document names every field.

Rows of the database never leave the service as they are: each view picks the fields a
person may read (no webhook secrets, no addresses, no alert errors) and says what they mean.
Times are UTC, RFC 3339 with their offset.
"""

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field


class TeamRef(BaseModel):
    slug: str
    name: str


class PersonRef(BaseModel):
    id: str
    name: str


class Author(BaseModel):
    id: str = Field(description="The platform's id of the author (per platform).")
    name: str
    handle: str


class ConversationItem(BaseModel):
    """One conversation as a list shows it."""

    id: str
    tenant: str
    account: str
    platform: str
    state: str = Field(description="open, paused, responded or resolved.")
    team: TeamRef | None = Field(description="Its team (none while it has none).")
    owner: PersonRef | None = Field(description="Who owns it (none while it waits in its team's queue).")
    topic: str | None
    priority: str
    author: Author
    last_inbound_text: str = Field(description="The customer's last message, at most 280 characters.")
    last_inbound_url: str | None = Field(description="Its link on the platform (http or https only).")
    opened_at: datetime
    awaiting_since: datetime | None = Field(description="Since when the customer waits for an answer.")
    due_at: datetime | None
    warn_at: datetime | None
    deadline_kind: str | None
    overdue: bool = Field(description="Awaiting an answer past its due time.")


class ConversationPage(BaseModel):
    items: list[ConversationItem]
    next_cursor: str | None = Field(description="Give it as `cursor` for the next page; null at the end.")


class Message(BaseModel):
    """One message of the conversation, the customer's or the brand's (the newest edit of each)."""

    id: str
    direction: str = Field(description="inbound (the customer) or outbound (the brand).")
    kind: str
    author_id: str
    author_name: str
    text: str
    url: str | None = Field(description="Its link on the platform (http or https only).")
    created_at: datetime
    edited: bool
    retracted: bool
    retracted_at: datetime | None
    sent_by: str | None = Field(
        default=None, description="The brand's reply written in the inbox: the person who wrote it."
    )


class TimelineEntry(BaseModel):
    """One thing that happened: an event the services published, in the stream's order."""

    id: str
    seq: int
    tenant: str
    conversation_id: str | None
    person_id: str | None = Field(description="Whom it is about, if anyone.")
    at: datetime
    kind: str = Field(description="The event's type, e.g. conversation.assigned.")
    actor: str = Field(description="Who did it: a person id, a token, router or notify.")
    summary: str
    detail: dict[str, Any]


class DeadlineView(BaseModel):
    version: int
    kind: str | None
    state: str
    started_at: datetime | None
    warn_at: datetime | None
    due_at: datetime | None
    acknowledged_by: str | None
    acknowledged_at: datetime | None


class AlertView(BaseModel):
    id: str
    deadline_version: int
    step: str
    channel: str
    status: str
    attempts: int
    created_at: datetime
    sent_at: datetime | None


class DeliveryView(BaseModel):
    id: str
    alert_id: str
    deadline_version: int
    step: str
    channel: str
    person: str
    status: str
    attempts: int
    created_at: datetime
    sent_at: datetime | None


class ConversationDetail(BaseModel):
    conversation: ConversationItem
    why: str = Field(description="Why its owner was chosen (or why it waits in the queue).")
    messages: list[Message]
    messages_complete: bool = Field(description="False when only the newest messages are listed.")
    timeline: list[TimelineEntry]
    timeline_complete: bool = Field(description="False when only the newest entries are listed.")
    deadline: DeadlineView | None
    alerts: list[AlertView]
    deliveries: list[DeliveryView]


class TeamOfPerson(BaseModel):
    tenant: str
    slug: str
    name: str


class PersonItem(BaseModel):
    id: str
    name: str
    active: bool
    status: str = Field(description="available, away or offline.")
    load: int = Field(description="Weighted count of conversations awaiting their answer, in every tenant.")
    capacity: int
    on_shift: bool | None = Field(description="Within their working hours now (null: hours unreadable).")
    out_of_office: bool = Field(description="Within their out-of-office period now.")
    out_of_office_until: datetime | None
    available: bool | None = Field(description="Takes new work now: active, available, on shift, not away.")
    teams: list[TeamOfPerson] = Field(description="Their teams the viewer may see.")
    open_owned: int = Field(description="Conversations they own, not resolved, that the viewer may see.")


class PeopleList(BaseModel):
    items: list[PersonItem]


class TeamItem(BaseModel):
    tenant: str
    slug: str
    name: str
    lead: PersonRef | None
    members: list[PersonRef]
    queue: int = Field(description="Open conversations nobody owns yet.")
    overdue: int = Field(description="Conversations awaiting an answer past their due time.")
    oldest_waiting: datetime | None = Field(
        description="Since when the longest-waiting conversation of its queue waits."
    )


class TeamList(BaseModel):
    items: list[TeamItem]


class CommandOutcomeView(BaseModel):
    """A command's fate: pending until the service that applies it answers, then applied or rejected."""

    command_id: str
    status: Literal["pending", "applied", "rejected"]
    outcome_url: str
    command_type: str | None = None
    code: str | None = Field(default=None, description="Why it was rejected, for machines.")
    reason: str | None = Field(default=None, description="What was done or why not, for people.")
    tenant: str | None = None
    conversation_id: str | None = None
    person_id: str | None = None
    issued_by: str | None = None
    at: datetime | None = None


class Problem(BaseModel):
    """Every error a client causes: a sentence, and the input at fault."""

    error: str
    field: str | None = None


class NotSent(BaseModel):
    error: str
    field: str
    command_id: str


class WayView(BaseModel):
    """One way a reply can go out now."""

    method: str = Field(
        description="comment_reply, private_reply, send_api, human_agent, post, dm, status or webhook."
    )
    tag: str | None = Field(description="HUMAN_AGENT for a Messenger or Instagram DM after 24 hours.")
    until: datetime | None = Field(description="When this way closes (null: no window).")
    label: str = Field(description='For people: "Messenger: 3 h 12 min left in the window".')
    max_length: int = Field(description="The most characters the platform takes this way.")


class ReplyVerdict(BaseModel):
    """What the platform's rules allow for a reply to the conversation now."""

    platform: str = Field(description='The platform as people call it: "Messenger", "Instagram", "X" ...')
    reply_to: str | None = Field(description="The message a reply answers by default: the customer's latest.")
    ways: list[WayView] = Field(
        description="The ways open now, the default first; none: not through the API."
    )
    reason: str = Field(description="A sentence saying what is possible, or why nothing is.")
    link: str | None = Field(description="Where to answer on the platform itself (http or https only).")
    max_length: int = Field(description="The most characters the default way takes.")
    may_send: bool = Field(
        description="Whether you may send a reply here (a signed-in person who may act on it)."
    )


class ReplyView(BaseModel):
    """One reply written in the inbox, and what became of it."""

    id: str = Field(description="The reply's id: the command id it was sent with.")
    state: str = Field(
        description="sending; sent (the platform has it); failed (nothing went out); in_doubt (it may "
        "have gone out: check on the platform, it is never sent again by itself)."
    )
    method: str
    tag: str | None
    person: PersonRef = Field(description="Who wrote it.")
    text: str
    reply_to: str = Field(description="The message it answers (an interaction id).")
    requested_at: datetime
    sent_at: datetime | None
    error: str = Field(description="The platform's words when it refused, or why it is in doubt.")
    platform_id: str | None = Field(description="The platform's id of the reply, once sent.")
    url: str | None = Field(
        description="The reply on the platform, or where to check on it (http or https only)."
    )
    retry: bool = Field(description="Failed, and sending it again may work.")


class ReplyList(BaseModel):
    items: list[ReplyView] = Field(description="The conversation's replies, newest last.")
    complete: bool = Field(description="False when only the newest replies are listed.")
    verdict: ReplyVerdict


class ReplyRefusal(BaseModel):
    """A reply the platform's rules do not let go out now: nothing was sent."""

    error: str
    field: Literal["text", "method"]
    link: str | None = Field(description="Where to answer on the platform itself, when known.")
