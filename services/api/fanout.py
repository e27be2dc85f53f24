"""Who sees each event live, and what their browser is sent. Pure, no I/O.

The api's live stream (services/api/live.py) takes every event of SH_EVENTS once per process
and hands it to the sessions allowed to see it, deciding as every read decides (the roles table
of services/api/access.py, through `Scope.covers`):

- an event about a conversation (a reply's fate too: sending, sent, failed, in doubt) is seen by
  whoever sees the conversation just before it or just after it, so a conversation given to
  another team or person leaves the old owner's list live too (it disappears there instead of
  lingering);
- an event about a person alone (their status, an alert sent to them) by whoever sees that
  person: their teams' and tenants' people;
- an event about a whole tenant (a recompute after `apply`) by whoever reads its configuration;
- a command's outcome also by the person who gave the command, wherever it landed.

What a browser receives is Server-Sent Events: `event: timeline` with a `TimelineEntry` (the
same JSON a conversation's page lists) and, for a command's outcome, `event: outcome` with a
`CommandOutcomeView` (the same JSON as `/api/commands/{id}`). Each event's `id` is its sequence
in SH_EVENTS, the position a browser resumes from (`Last-Event-ID`).
"""

import re
from dataclasses import dataclass, replace

from services.api.access import Action, Scope, Target, Team, Viewer
from services.api.history import CommandOutcomeEntry, entry_of, outcome_of
from services.api.reads import timeline_entry
from services.api.views import CommandOutcomeView, TimelineEntry
from shared.events import (
    AlertFailed,
    AlertSent,
    CommandApplied,
    CommandRejected,
    ConversationAssigned,
    DeadlineChanged,
    Event,
)

LAST_EVENT_ID = "Last-Event-ID"
MAX_SEQUENCE = 2**63 - 1  # JetStream's sequences are unsigned 64-bit; no stream gets near this
_SEQUENCE = re.compile(r"[0-9]{1,19}")


@dataclass(frozen=True, slots=True)
class Facts:
    """What decides who sees a conversation: its tenant, its team and its owner."""

    tenant_id: str
    team_id: str | None = None
    owner_id: str | None = None

    def target(self) -> Target:
        return Target(tenant_id=self.tenant_id, team_id=self.team_id, owner_id=self.owner_id)


@dataclass(frozen=True, slots=True)
class PersonFacts:
    """What decides who sees a person: the teams they serve in, and the tenants whose
    configuration gives them a role (an admin or a client viewer in no team)."""

    teams: frozenset[Team] = frozenset()
    tenants: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Audience:
    """Who may see one event: a conversation as it was before and after it, or a person, or a
    whole tenant; and, for a command's outcome, who gave the command."""

    tenant_id: str
    conversation: tuple[Facts, ...] = ()  # before and after (one when the event changed nothing)
    person_id: str | None = None  # an event about a person alone
    person: PersonFacts = PersonFacts()
    issued_by: str | None = None

    @property
    def tenants(self) -> frozenset[str]:
        """The tenants a viewer must hold some role in to see it (beyond the people named)."""
        if self.conversation or self.person_id is None:
            return frozenset({self.tenant_id}) if self.tenant_id else frozenset()
        found = {team.tenant_id for team in self.person.teams} | self.person.tenants
        return frozenset(found | ({self.tenant_id} if self.tenant_id else set()))

    @property
    def people(self) -> frozenset[str]:
        """People who may see it through no tenant role: its owners, the person, the issuer."""
        named = {facts.owner_id for facts in self.conversation} | {self.person_id, self.issued_by}
        return frozenset(person for person in named if person)


@dataclass(frozen=True, slots=True)
class Sight:
    """What one connected viewer may see, worked out once when they connect."""

    person_id: str | None
    see: Scope  # conversations and people (Action.see)
    config: Scope  # whole tenants (Action.read_config)
    tenants: frozenset[str] | None  # where they hold any role (None: everywhere, an agency admin)

    @classmethod
    def of(cls, viewer: Viewer) -> "Sight":
        return cls(
            person_id=viewer.person_id,
            see=viewer.scope(Action.see),
            config=viewer.scope(Action.read_config),
            tenants=viewer.tenants(),
        )


def conversation_of(event: Event) -> str | None:
    """The conversation an event is about, if any."""
    conversation = getattr(event, "conversation_id", None)
    return conversation if isinstance(conversation, str) and conversation else None


def facts_after(event: Event, before: Facts | None) -> Facts | None:
    """What is known of the event's conversation once it happened: an assignment moves its team
    and owner, a deadline names its owner, anything else changes neither. None: nothing known."""
    if conversation_of(event) is None:
        return None
    known = before if before is not None and before.tenant_id == event.tenant_id else None
    if isinstance(event, ConversationAssigned):
        return Facts(event.tenant_id, event.team_id, event.owner_id)
    if isinstance(event, DeadlineChanged):
        return Facts(event.tenant_id, known.team_id if known else None, event.owner_id)
    return known


def audience_of(event: Event, before: Facts | None, person: PersonFacts | None = None) -> Audience:
    """Who may see `event`, given what was known of its conversation before it (`before`, None
    when nothing is) or of the person it is about (`person`)."""
    issued_by = event.issued_by if isinstance(event, CommandApplied | CommandRejected) else None
    if conversation_of(event) is not None:
        known = before if before is not None and before.tenant_id == event.tenant_id else None
        if isinstance(event, ConversationAssigned):  # the event says who had it before
            if known is not None:
                known = replace(known, owner_id=event.previous_owner_id)
            elif event.previous_owner_id:
                known = Facts(event.tenant_id, None, event.previous_owner_id)
        after = facts_after(event, known)
        seen = tuple(dict.fromkeys(facts for facts in (known, after) if facts is not None))
        return Audience(event.tenant_id, conversation=seen or (Facts(event.tenant_id),), issued_by=issued_by)
    about = person_of(event)
    if about is not None:
        return Audience(event.tenant_id, person_id=about, person=person or PersonFacts(), issued_by=issued_by)
    return Audience(event.tenant_id, issued_by=issued_by)


def person_of(event: Event) -> str | None:
    """The person an event is about when it is about no conversation: a status, an alert."""
    if isinstance(event, CommandApplied | CommandRejected | AlertSent | AlertFailed):
        return event.person_id or None
    return None


def may_see(sight: Sight, audience: Audience) -> bool:
    """Whether the viewer may see an event: the same rules as every read (`Scope.covers`)."""
    if audience.issued_by is not None and sight.person_id == audience.issued_by:
        return True
    if audience.conversation:
        return any(sight.see.covers(facts.target()) for facts in audience.conversation)
    if audience.person_id is not None:
        target = Target(
            person_id=audience.person_id,
            person_teams=audience.person.teams,
            person_tenants=audience.person.tenants,
        )
        # Anyone who owns conversations sees themselves, as the people listing shows them.
        return sight.see.covers(target) or sight.see.owner == audience.person_id
    return sight.config.covers(Target(tenant_id=audience.tenant_id))


# -- what the browser is sent -------------------------------------------------------------------


def sequence_of(text: str) -> int | None:
    """A `Last-Event-ID` as a stream sequence (a whole number, 0 or more), or None if it is none."""
    if not _SEQUENCE.fullmatch(text):
        return None
    value = int(text)
    return value if value <= MAX_SEQUENCE else None


def timeline_view(event: Event, *, seq: int, message_id: str) -> TimelineEntry | None:
    """The event's timeline entry as the API shows it; None for what is no part of a timeline."""
    entry = entry_of(event, message_id=message_id, seq=seq)
    return None if entry is None else timeline_entry(entry)


def outcome_view(outcome: CommandOutcomeEntry) -> CommandOutcomeView:
    """A command's outcome as `/api/commands/{id}` answers it."""
    return CommandOutcomeView(
        command_id=outcome.command_id,
        status="applied" if outcome.outcome == "applied" else "rejected",
        outcome_url=f"/api/commands/{outcome.command_id}",
        command_type=outcome.command_type,
        code=outcome.code or None,
        reason=outcome.reason,
        tenant=outcome.tenant_id or None,
        conversation_id=outcome.conversation_id,
        person_id=outcome.person_id,
        issued_by=outcome.issued_by,
        at=outcome.at,
    )


def payload_of(event: Event, *, seq: int, message_id: str) -> bytes | None:
    """The Server-Sent Events one event becomes, or None when it is nothing a person reads.

    A command's outcome is two events written together, its timeline entry then its outcome; the
    id is on the second, so a browser cut between the two resumes before both (it may see the
    entry twice, never miss the outcome)."""
    entry = timeline_view(event, seq=seq, message_id=message_id)
    outcome = outcome_of(event)
    parts: list[str] = []
    if entry is not None:
        parts.append(sse("timeline", entry.model_dump_json(), ident=None if outcome else seq))
    if outcome is not None:
        parts.append(sse("outcome", outcome_view(outcome).model_dump_json(), ident=seq))
    return "".join(parts).encode() if parts else None


def sse(event: str, data: str, *, ident: int | None) -> str:
    """One Server-Sent Event; `data` is one line of JSON."""
    head = f"id: {ident}\n" if ident is not None else ""
    return f"{head}event: {event}\ndata: {data}\n\n"


def position(seq: int) -> bytes:
    """A block that moves the browser's Last-Event-ID on without an event: everything up to `seq`
    the viewer may see was sent."""
    return f"id: {seq}\n\n".encode()
