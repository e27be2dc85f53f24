"""What the timeline keeps of each event, and the outcome of each command. Pure, no I/O.

SH_EVENTS forgets after seven days; the api's timeline consumer keeps every event about a
conversation (or a person) for good, as one `TimelineEntry`: whom it is about, when it
happened, who did it, one sentence a person reads, and the event itself as JSON. Command
outcomes are also kept by command id (`CommandOutcomeEntry`), so whoever sent a command
can ask what became of it.

The sentence is built from the event alone. For the router's events that a person's command
caused (a pause, a resume, a resolve, a reply marked by hand), the event does not say who
asked: the command's outcome does. `caused_by` reads the command id from the router's message
id, and `entry_of(..., issued_by=...)` then names the person ("Paused by kai: waiting on the
customer"); the consumer looks the outcome up.
"""

import json
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from hashlib import sha256
from typing import Annotated

from pydantic import Field, TypeAdapter
from sqlmodel import SQLModel

from shared.db.models import CommandOutcomeRow, TimelineRow
from shared.events import (
    AlertAcknowledged,
    AlertDelivery,
    AlertFailed,
    AlertKind,
    AlertSent,
    CommandApplied,
    CommandOutcome,
    CommandRejected,
    ConnectorProblem,
    ConversationAssigned,
    ConversationOpened,
    ConversationPaused,
    ConversationReopened,
    ConversationResolved,
    ConversationResponded,
    ConversationResumed,
    DeadlineChanged,
    Event,
    Kind,
    ReplyEvent,
    ReplyState,
    storable_text,
)
from shared.reply_rules import platform_name

SH_EVENT = (
    ConversationOpened
    | ConversationAssigned
    | ConversationResponded
    | ConversationReopened
    | ConversationPaused
    | ConversationResumed
    | ConversationResolved
    | DeadlineChanged
    | ConnectorProblem
    | CommandApplied
    | CommandRejected
    | AlertSent
    | AlertFailed
    | AlertAcknowledged
    | ReplyEvent
)
AnyShEvent = Annotated[SH_EVENT, Field(discriminator="type")]
sh_event_adapter: TypeAdapter[AnyShEvent] = TypeAdapter(AnyShEvent)

SUMMARY_MAX = 500
TIMELINE = str(TimelineRow.__tablename__)
COMMAND_OUTCOME = str(CommandOutcomeRow.__tablename__)
ROUTER = "router"
NOTIFY = "notify"
# The router's events that a person's command causes directly, named after who asked.
ATTRIBUTED = frozenset(
    {"conversation.paused", "conversation.resumed", "conversation.resolved", "conversation.responded"}
)


def decode(data: bytes) -> AnyShEvent:
    """One message of SH_EVENTS; raises ValueError (pydantic's ValidationError) if it is not one."""
    return sh_event_adapter.validate_json(data)


@dataclass(frozen=True)
class TimelineEntry:
    """One row of `timeline` (`TimelineRow`), as the consumer writes it."""

    id: str  # the event's Nats-Msg-Id (hashed when longer than the column)
    seq: int
    tenant_id: str
    conversation_id: str | None
    person_id: str | None
    at: datetime
    kind: str
    actor: str
    summary: str
    detail: str


@dataclass(frozen=True)
class CommandOutcomeEntry:
    """One row of `commandoutcome` (`CommandOutcomeRow`): what became of one command."""

    command_id: str
    tenant_id: str
    conversation_id: str | None
    person_id: str | None
    command_type: str
    issued_by: str
    outcome: str  # applied, rejected
    code: str  # why not, for a machine ("" when applied)
    reason: str  # why not, for a person; what it changed when applied
    at: datetime


def entry_of(
    event: Event, *, message_id: str, seq: int, issued_by: str | None = None
) -> TimelineEntry | None:
    """The timeline entry of one event; None for what is no part of a timeline (a connector's
    trouble is the operator's). `issued_by`: who sent the command that caused the event, when
    known (see `caused_by`)."""
    by = issued_by if issued_by and issued_by != ROUTER and event_type(event) in ATTRIBUTED else None
    described = _describe(event, by)
    if described is None:
        return None
    at, actor, person_id, sentence = described
    return TimelineEntry(
        id=row_id(message_id),
        seq=seq,
        tenant_id=event.tenant_id,
        conversation_id=getattr(event, "conversation_id", None),
        person_id=person_id,
        at=at,
        kind=event_type(event),
        actor=actor,
        summary=summary(sentence),
        detail=detail_of(event),
    )


def outcome_of(event: Event) -> CommandOutcomeEntry | None:
    """What became of a command, from its `CommandApplied` or `CommandRejected`; None otherwise."""
    if not isinstance(event, CommandApplied | CommandRejected):
        return None
    applied = isinstance(event, CommandApplied)
    return CommandOutcomeEntry(
        command_id=event.command_id,
        tenant_id=event.tenant_id,
        conversation_id=event.conversation_id,
        person_id=event.person_id,
        command_type=event.command_type,
        issued_by=event.issued_by,
        outcome="applied" if applied else "rejected",
        code="" if isinstance(event, CommandApplied) else event.code.value,
        reason=storable_text(event.summary if isinstance(event, CommandApplied) else event.reason),
        at=event.occurred_at,
    )


def caused_by(message_id: str) -> str | None:
    """The command whose application published an event, read from the router's message id
    (`paused:<conversation>:cmd-<command id>`); None for an event no command caused."""
    for part in message_id.split(":")[2:]:
        if part.startswith("cmd-") and len(part) > 4:
            return part[4:]
    return None


def row_id(message_id: str) -> str:
    """The timeline row's id: the message id, or its SHA-256 when longer than the column keeps
    (still one row per message id)."""
    if len(message_id) <= _length(TIMELINE, "id"):
        return message_id
    return "sha256:" + sha256(message_id.encode("utf-8", "surrogatepass")).hexdigest()


def unstorable(entry: TimelineEntry | CommandOutcomeEntry) -> str | None:
    """Why a row cannot be stored as it is (an id longer than its column, or with a NUL, which
    PostgreSQL refuses), or None. Such an event goes to the dead letter, not into retries."""
    table = TIMELINE if isinstance(entry, TimelineEntry) else COMMAND_OUTCOME
    for name in ("tenant_id", "conversation_id", "person_id", "kind", "actor", "command_id", "command_type",
                 "issued_by", "code"):  # fmt: skip
        value = getattr(entry, name, None)
        if not isinstance(value, str):
            continue
        limit = _length(table, name)
        if len(value) > limit:
            return f"{name} of {len(value)} characters is longer than the {limit} the {table} keeps"
        if "\x00" in value or value != storable_text(value):
            return f"{name} holds a character no database keeps (NUL or a lone surrogate)"
    return None


def event_type(event: Event) -> str:
    return str(getattr(event, "type", type(event).__name__))


def detail_of(event: Event) -> str:
    """The event as JSON (as published); text no encoding can write is escaped."""
    try:
        return event.model_dump_json()
    except ValueError:  # a lone surrogate: only an event built in process can hold one
        return json.dumps(event.model_dump(mode="json"), separators=(",", ":"))


def summary(sentence: str) -> str:
    """One line a person reads: control characters and line breaks become spaces, and text a
    platform provided is cut so the whole is at most SUMMARY_MAX characters."""
    text = storable_text(sentence)
    text = "".join(" " if unicodedata.category(c) in ("Cc", "Zl", "Zp") else c for c in text)
    text = " ".join(text.split())
    if len(text) > SUMMARY_MAX:
        text = text[: SUMMARY_MAX - 1].rstrip() + "…"
    return text


Described = tuple[datetime, str, str | None, str]  # at, actor, whom it is about, the sentence


def _describe(event: Event, by: str | None) -> Described | None:
    match event:
        case ConversationOpened():
            return event.opened_at, ROUTER, None, _opened(event)
        case ConversationAssigned():
            return event.assigned_at, ROUTER, event.owner_id, _assigned(event)
        case ConversationResponded():
            if event.interaction_id:
                return event.responded_at, ROUTER, None, "The brand replied in the thread"
            return event.responded_at, by or ROUTER, None, f"Marked responded{_by(by)}"
        case ConversationReopened():
            return event.reopened_at, ROUTER, None, "Reopened: the customer wrote again"
        case ConversationPaused():
            return event.paused_at, by or ROUTER, None, f"Paused{_by(by)}: {event.reason}"
        case ConversationResumed():
            return event.resumed_at, by or ROUTER, None, f"Resumed{_by(by)}: the clock runs again"
        case ConversationResolved():
            return event.resolved_at, by or ROUTER, None, _resolved(event.reason, by)
        case DeadlineChanged():
            return event.occurred_at, ROUTER, event.owner_id, _deadline(event)
        case CommandApplied() | CommandRejected():
            return event.occurred_at, event.issued_by, event.person_id, _command(event)
        case AlertSent() | AlertFailed():
            return event.occurred_at, NOTIFY, event.person_id, _alert(event)
        case AlertAcknowledged():
            sentence = f"{event.person_id} acknowledged the alert: escalation stopped"
            return event.acknowledged_at, event.person_id, event.person_id, sentence
        case ReplyEvent():
            return event.occurred_at, event.person_id, event.person_id, _reply(event)
    return None


def _by(person: str | None) -> str:
    return f" by {person}" if person else ""


def _opened(event: ConversationOpened) -> str:
    author = event.author
    handle = author.handle if not author.handle or author.handle.startswith("@") else f"@{author.handle}"
    if author.name and handle:
        who = f"{author.name} ({handle})"
    else:
        who = author.name or handle or "an author"
    sentence = f"Opened on {event.platform.value} by {who}"
    if event.topic:
        sentence += f", topic {event.topic}"
    if event.priority and event.priority != "normal":
        sentence += f", priority {event.priority}"
    return sentence


def _assigned(event: ConversationAssigned) -> str:
    why = f" ({event.reason})" if event.reason else ""
    if event.owner_id is None:
        return (
            f"Unassigned from {event.previous_owner_id}{why}"
            if event.previous_owner_id
            else f"Not assigned{why}"
        )
    if event.previous_owner_id and event.previous_owner_id != event.owner_id:
        return f"Assigned to {event.owner_id}, from {event.previous_owner_id}{why}"
    return f"Assigned to {event.owner_id}{why}"


def _resolved(reason: str, by: str | None) -> str:
    said = reason.strip()
    if by:
        if said.lower() in ("", "resolved", f"resolved by {by}".lower()):
            return f"Resolved by {by}"
        return f"Resolved by {by}: {said}"
    if said.lower() in ("", "resolved"):
        return "Resolved"
    if said.lower().startswith("resolved "):  # "resolved by kai"
        return said[:1].upper() + said[1:]
    return f"Resolved: {said}"


def _clock(moment: datetime, *, beside: datetime) -> str:
    """A time as "14:05", with its date when it falls on another day (UTC) than `beside`."""
    if moment.date() == beside.date():
        return moment.strftime("%H:%M")
    return moment.strftime("%Y-%m-%d %H:%M")


def _deadline(event: DeadlineChanged) -> str:
    trivial = ("", event.kind.value if event.kind else "", "cleared")
    why = "" if event.reason in trivial else event.reason
    if event.due_at is None:
        return f"Deadline cleared: {why}" if why else "Deadline cleared"
    what = event.kind.value.replace("_", " ") if event.kind else "reply"
    sentence = f"Deadline: {what} due {_clock(event.due_at, beside=event.occurred_at)} UTC"
    if event.warn_at is not None:
        sentence += f" (warning {_clock(event.warn_at, beside=event.due_at)})"
    return f"{sentence}; {why}" if why else sentence


def _verb(command_type: str) -> str:
    """`conversation.mark_responded` as people say it: "mark responded"."""
    return command_type.rsplit(".", 1)[-1].replace("_", " ")


def _command(event: CommandOutcome) -> str:
    asked = f"{_verb(event.command_type)} by {event.issued_by or 'someone'}"
    if isinstance(event, CommandRejected):
        return (
            f"{asked} rejected: {event.reason}" if event.reason else f"{asked} rejected ({event.code.value})"
        )
    said = event.summary if isinstance(event, CommandApplied) else ""
    return f"{asked} applied: {said}" if said else f"{asked} applied"


# The kind of message each method answers, for the platform's name ("Messenger" is Facebook's DMs).
_REPLY_KINDS = {"send_api": Kind.dm, "human_agent": Kind.dm, "private_reply": Kind.dm, "dm": Kind.dm}


def _reply(event: ReplyEvent) -> str:
    where = platform_name(event.platform, _REPLY_KINDS.get(event.method, Kind.comment))
    match event.state:
        case ReplyState.sending:
            return f"Sending {event.person_id}'s reply"
        case ReplyState.sent:
            return f"Reply sent by {event.person_id} on {where}"
        case ReplyState.failed:
            error = event.error.strip()
            return f"Reply failed: {error}" if error else f"Reply by {event.person_id} failed on {where}"
    return f"Reply in doubt: check on {where}"


_ALERTS = {
    AlertKind.warning: "Warning",
    AlertKind.breach: "Breach alert",
    AlertKind.escalation: "Escalation alert",
    AlertKind.assignment: "Assignment notice",
    AlertKind.digest: "Digest",
    AlertKind.connector: "Connector alert",
}
_CHANNELS = {"email": "email", "push": "Web Push", "apprise": "Apprise"}


def _alert(event: AlertDelivery) -> str:
    what = _ALERTS.get(event.alert_kind, str(event.alert_kind.value))
    if event.alert_kind is AlertKind.escalation and event.step:
        what += f" ({event.step})"
    to = event.person_id or "the operator"
    channel = _CHANNELS.get(event.channel.value, event.channel.value)
    if isinstance(event, AlertFailed):
        error = f": {event.error}" if event.error else ""
        if event.final:
            then = "; given up"
        elif event.retry_at is not None:
            then = f"; retrying at {_clock(event.retry_at, beside=event.occurred_at)} UTC"
        else:
            then = "; it will be retried"
        return f"{what} to {to} by {channel} failed{error}{then}"
    return f"{what} sent to {to} by {channel}"


def _length(table: str, column: str) -> int:
    """The length a column of our tables keeps (its VARCHAR size), from the schema itself."""
    length = getattr(SQLModel.metadata.tables[table].c[column].type, "length", None)
    return int(length) if length else 2**31
