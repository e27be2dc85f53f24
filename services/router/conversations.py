"""The life of a conversation: what an interaction or a command does to it, and which events say so.

Pure: the caller loads a `World` (the conversations, people and rules a batch
touches, locked), calls the operations below, and stores what changed. Every
event gets a deterministic message id, so replaying the same input (a redelivery
after a crash) can never publish a second, different fact. A command that cannot
be done returns a `Refusal` (a `Rejection` code and a sentence) and changes nothing.

States: open (the customer waits for the brand), paused (the brand waits for the
customer: the clock stops), responded, resolved. Only open conversations count
against their owner's capacity.
"""

import enum
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from services.router import deadlines
from services.router.assignment import Choice, Need, Person, choose_owner, fit_reason
from services.router.deadlines import DueTimes, Sla
from services.router.topics import Facts, Topic, bump_priority, choose_topic, is_vip
from shared import ids
from shared.commands import AnyCommand, AutoResolve, CheckAvailability
from shared.events import (
    ConversationAssigned,
    ConversationOpened,
    ConversationPaused,
    ConversationReopened,
    ConversationResolved,
    ConversationResponded,
    ConversationResumed,
    DeadlineChanged,
    DeadlineKind,
    Direction,
    Event,
    InteractionReceived,
    InteractionRetracted,
    Rejection,
)


class State(enum.StrEnum):
    open = "open"  # waiting for the brand's answer
    paused = "paused"  # waiting on the customer
    responded = "responded"
    resolved = "resolved"  # nothing left to answer


@dataclass(slots=True)
class Conversation:
    """A conversation as the router reasons about it: one row of the `conversation` table."""

    id: str
    tenant_id: str
    account_id: str
    platform: str
    thread_id: str
    state: str
    author_id: str
    opened_at: datetime
    last_inbound_at: datetime
    updated_at: datetime
    team_id: str | None = None
    owner_id: str | None = None
    assignment_reason: str = ""
    topic: str | None = None
    priority: str = "normal"
    skills: str = "[]"
    sla_policy_id: str | None = None
    no_sla: bool = False
    load_weight: int = 0
    author_name: str = ""
    author_handle: str = ""
    author_followers: int | None = None
    author_verified: bool = False
    last_inbound_text: str = ""
    last_inbound_url: str | None = None
    language: str | None = None
    assigned_at: datetime | None = None
    awaiting_since: datetime | None = None
    responded_at: datetime | None = None
    paused_at: datetime | None = None
    paused_kind: str | None = None
    paused_remaining_seconds: float | None = None
    paused_business_seconds: float = 0.0
    resolved_at: datetime | None = None
    resolve_at: datetime | None = None
    queued_at: datetime | None = None
    deadline_version: int = 0
    deadline_kind: str | None = None
    warn_at: datetime | None = None
    due_at: datetime | None = None

    def needs(self) -> Need:
        return Need(skills=_skills(self.skills), language=self.language, priority=self.priority)


def _skills(text: str) -> frozenset[str]:
    return frozenset(json.loads(text or "[]"))


@dataclass
class Team:
    id: str
    tenant_id: str
    slug: str
    members: list[str]
    sla_policy_id: str | None = None
    lead_id: str | None = None


@dataclass
class TenantRules:
    id: str
    topics: list[Topic] = field(default_factory=list)
    policies: dict[str, Sla] = field(default_factory=dict)
    vip: frozenset[str] = frozenset()
    auto_resolve: timedelta | None = None
    config_version: int = 0  # bumped by each `stayhuman apply` that changes the tenant


@dataclass(frozen=True)
class AccountRoute:
    id: str
    tenant_id: str
    team_id: str


@dataclass(frozen=True)
class Emitted:
    msg_id: str
    event: Event


def superseded(events: list[Emitted]) -> set[int]:
    """Which of a transaction's events need not be published: a deadline contract replaced by a
    newer one of the same conversation in the same transaction. Published, a past-due deadline
    that the same batch then cleared (a message and its reply together) could fire before its
    clearing arrived; notify needs only the newest version."""
    last: dict[str, int] = {}
    for index, emitted in enumerate(events):
        if isinstance(emitted.event, DeadlineChanged):
            last[emitted.event.conversation_id] = index
    return {
        index
        for index, emitted in enumerate(events)
        if isinstance(emitted.event, DeadlineChanged) and last[emitted.event.conversation_id] != index
    }


@dataclass(frozen=True)
class Reply:
    """One of the brand's replies, as the router keeps it: a customer's message written before it
    but routed after it (platforms deliver out of order, and so may two routers) is answered."""

    interaction_id: str
    thread_id: str
    created_at: datetime
    correlation_id: str = ""
    edit_version: int = 0
    sent_by: str | None = None  # who wrote it in the inbox (None: written elsewhere, or not known yet)

    @classmethod
    def of(cls, ix: InteractionReceived) -> "Reply":
        return cls(
            ix.interaction_id, ix.thread_id, ix.created_at, ix.correlation_id, ix.edit_version, ix.sent_by
        )


@dataclass(frozen=True)
class Timer:
    """One of the router's own timers: `command` comes back to the router at `at`."""

    key: str  # person.<id> or conv.<tenant>.<conversation>
    at: datetime
    command: AnyCommand


def random_id() -> str:
    return ids.new_id()


@dataclass(frozen=True)
class Refusal:
    """Why a command changed nothing: a code for machines, a sentence for people."""

    code: Rejection
    reason: str


def short(conversation_id: str) -> str:
    """A conversation id as people read it in a sentence."""
    return f"{conversation_id[:8]}…"


@dataclass
class World:
    """What one transaction holds: the state it may change, and what changed."""

    now: datetime
    backfill_cutoff: timedelta = timedelta(hours=24)
    conversations: dict[str, Conversation] = field(default_factory=dict)
    people: dict[str, Person] = field(default_factory=dict)
    teams: dict[str, Team] = field(default_factory=dict)
    tenants: dict[str, TenantRules] = field(default_factory=dict)
    accounts: dict[str, AccountRoute] = field(default_factory=dict)
    continuity: dict[tuple[str, str], str] = field(default_factory=dict)
    # what changed
    events: list[Emitted] = field(default_factory=list)
    created: set[str] = field(default_factory=set)
    changed: set[str] = field(default_factory=set)
    load_deltas: dict[str, int] = field(default_factory=dict)
    assigned_people: set[str] = field(default_factory=set)
    answered: dict[tuple[str, str], str] = field(default_factory=dict)
    timers: list[Timer] = field(default_factory=list)
    freed: set[str] = field(default_factory=set)  # people who may take queued work now
    statuses: dict[str, str] = field(default_factory=dict)  # people whose status was set
    # Where event ids come from: random in the service, given in tests and replays.
    new_id: Callable[[], str] = field(default=random_id)
    # The brand's replies by where they are kept: their conversation, or while it is not known
    # yet, their waiting key (see `waiting_key`); and replies that joined a conversation since.
    replies: dict[str, list[Reply]] = field(default_factory=dict)
    adopted: dict[str, str] = field(default_factory=dict)

    def sla_of(self, conversation: Conversation) -> Sla | None:
        if conversation.no_sla or conversation.sla_policy_id is None:
            return None
        tenant = self.tenants.get(conversation.tenant_id)
        return tenant.policies.get(conversation.sla_policy_id) if tenant else None

    def touch(self, conversation: Conversation) -> None:
        conversation.updated_at = self.now
        if conversation.id not in self.created:
            self.changed.add(conversation.id)

    def emit(self, msg_id: str, event: Event) -> None:
        self.events.append(Emitted(msg_id, event))

    def config_version(self, tenant_id: str) -> int:
        tenant = self.tenants.get(tenant_id)
        return tenant.config_version if tenant else 0

    def serves(self, person_id: str, tenant_id: str) -> bool:
        """Whether someone is a member of any team of the tenant (its teams are loaded with it)."""
        return any(person_id in t.members for t in self.teams.values() if t.tenant_id == tenant_id)

    def members(self, team_id: str | None) -> list[Person]:
        team = self.teams.get(team_id or "")
        return [self.people[p] for p in team.members if p in self.people] if team else []


def teams_in_reach(world: World, interactions: list[InteractionReceived], cids: dict[str, str]) -> set[str]:
    """The teams whose people routing these interactions may assign: the teams of the
    conversations loaded, and the team each customer message that opens a conversation goes to
    (its topic's, or its account's), chosen as `_open` chooses it. Only their people need be
    locked; the tenants' other teams are left to other units of work."""
    reach = {c.team_id for c in world.conversations.values() if c.team_id}
    for ix in interactions:
        if ix.direction is not Direction.inbound or cids.get(ix.interaction_id) in world.conversations:
            continue
        account = world.accounts.get(ix.account_id)
        tenant = world.tenants.get(account.tenant_id) if account else None
        if account is None or tenant is None:
            continue
        topic = (
            choose_topic(tenant.topics, Facts.of(ix, vip=is_vip(ix.author, tenant.vip)))
            if tenant.topics
            else None
        )
        team_id = account.team_id if topic is None else topic.team_id
        if team_id:
            reach.add(team_id)
    return reach


# -- interactions ----------------------------------------------------------------------------


def waiting_key(ix: InteractionReceived, conversation_id: str) -> str:
    """Where a reply that finds no conversation is kept until the message it answers comes: under
    that message when it names one (whose conversation may be its parent's), else under its
    thread's conversation. Stored in the interaction's conversation id, which names no
    conversation until then."""
    return _answering(ix.account_id, ix.parent_id) if ix.parent_id else conversation_id


def reply_keys(ix: InteractionReceived, conversation_id: str) -> list[str]:
    """Where replies that may answer the customer's message `ix` are kept: in its conversation,
    waiting in its thread, waiting for it, or waiting for the message it answers itself."""
    keys = [
        conversation_id,
        ids.conversation_id(account_id=ix.account_id, thread_id=ix.thread_id),
        _answering(ix.account_id, ix.external_id),
    ]
    if ix.parent_id:
        keys.append(_answering(ix.account_id, ix.parent_id))
    return list(dict.fromkeys(keys))


def _answering(account_id: str, external_id: str) -> str:
    # Ids never hold control characters: no thread is named like this.
    return ids.conversation_id(account_id=account_id, thread_id=f"\x1fanswers\x1f{external_id}")


def receive(world: World, ix: InteractionReceived, conversation_id: str) -> Conversation | None:
    """Apply one new interaction to its conversation; returns the conversation (None: only recorded)."""
    conversation = world.conversations.get(conversation_id)
    if ix.direction is Direction.outbound:
        reply = Reply.of(ix)
        if conversation is None:
            # Nothing to answer yet: kept for the message it answers (see `_answered_already`).
            world.replies.setdefault(waiting_key(ix, conversation_id), []).append(reply)
        else:
            world.replies.setdefault(conversation.id, []).append(reply)
            _reply(world, conversation, reply, ix.interaction_id)
        return conversation
    if conversation is None:
        return _open(world, ix, conversation_id)
    if ix.edit_version > 0:
        return conversation  # an edit is not a new message: no clock moves
    conversation.last_inbound_at = max(conversation.last_inbound_at, ix.created_at)
    conversation.last_inbound_text = ix.text
    conversation.last_inbound_url = ix.url
    world.touch(conversation)
    if conversation.state == State.open:
        answer = _answered_already(world, conversation, ix, since=conversation.awaiting_since)
        if answer is not None:
            _reply(world, conversation, answer, f"{answer.interaction_id}:{ix.interaction_id}")
        return conversation
    if conversation.team_id is None:
        return conversation  # recorded only (a topic with no team needs no answer): nothing reopens
    # The customer wrote again: after a reply or a resolution the conversation reopens,
    # and a paused one resumes; either way the next-response clock starts now.
    previous = conversation.state
    conversation.state = State.open
    conversation.awaiting_since = ix.created_at
    conversation.resolve_at = None
    conversation.paused_at = None
    conversation.paused_remaining_seconds = None
    if previous == State.resolved:
        # A new cycle: the resolution target counts from this message, not the first opening.
        conversation.opened_at = ix.created_at
        conversation.resolved_at = None
    key = ix.interaction_id
    if previous == State.paused:
        world.emit(
            f"resumed:{conversation.id}:{key}",
            ConversationResumed(**_envelope(world, conversation, ix.correlation_id), resumed_at=world.now),
        )
    else:
        world.emit(
            f"reopened:{conversation.id}:{key}",
            ConversationReopened(
                **_envelope(world, conversation, ix.correlation_id),
                interaction_id=ix.interaction_id,
                reopened_at=ix.created_at,
            ),
        )
    owner = world.people.get(conversation.owner_id or "")
    _assign(world, conversation, key, ix.correlation_id, preferred=owner, why="owns this conversation")
    _clock_unless_answered(world, conversation, ix, DeadlineKind.next_response)
    return conversation


def _clock_unless_answered(
    world: World, conversation: Conversation, ix: InteractionReceived, kind: DeadlineKind
) -> None:
    """Start the clock of the customer's message `ix`, unless a reply the router already has
    answers it: then it is applied (no deadline is set only to be cleared at once)."""
    answer = _answered_already(world, conversation, ix, since=ix.created_at)
    if answer is None:
        _start_clock(world, conversation, kind, ix.created_at, ix.interaction_id, ix.correlation_id)
    else:
        _reply(world, conversation, answer, f"{answer.interaction_id}:{ix.interaction_id}")


def _answered_already(
    world: World, conversation: Conversation, ix: InteractionReceived, *, since: datetime | None
) -> Reply | None:
    """Replies that were waiting for `ix` (or in its thread) join its conversation; returns the
    earliest reply written at or after `since` (an original, not an edit), which answers it."""
    answers: list[Reply] = []
    sibling = _answering(ix.account_id, ix.parent_id) if ix.parent_id else None
    for key in reply_keys(ix, conversation.id):
        kept = world.replies.get(key, [])
        if key != conversation.id:
            # Replies to the same parent join only from the same thread: a brand's own comment
            # on its post is no answer to a customer's comment there.
            joining = [r for r in kept if key != sibling or r.thread_id == ix.thread_id]
            if not joining:
                continue
            world.replies[key] = [r for r in kept if r not in joining]
            world.replies.setdefault(conversation.id, []).extend(joining)
            world.adopted.update((r.interaction_id, conversation.id) for r in joining)
            kept = joining
        answers += [r for r in kept if r.edit_version == 0 and since is not None and r.created_at >= since]
    return min(answers, key=lambda r: (r.created_at, r.interaction_id), default=None)


def _open(world: World, ix: InteractionReceived, conversation_id: str) -> Conversation | None:
    account = world.accounts.get(ix.account_id)
    tenant = world.tenants.get(account.tenant_id) if account else None
    if account is None or tenant is None:
        return None
    vip = is_vip(ix.author, tenant.vip)
    topic = choose_topic(tenant.topics, Facts.of(ix, vip=vip)) if tenant.topics else None
    team_id: str | None
    if topic is None:
        team_id = account.team_id
        team = world.teams.get(team_id)
        skills: frozenset[str] = frozenset()
        policy_id, priority, no_sla = (team.sla_policy_id if team else None), "normal", False
    else:
        team_id = topic.team_id
        team = world.teams.get(team_id or "")
        policy_id = topic.sla_policy_id or (team.sla_policy_id if team else None)
        priority, no_sla, skills = topic.priority, topic.no_sla, topic.skills
    sla = tenant.policies.get(policy_id or "")
    if sla is not None:
        if vip:
            priority = bump_priority(priority, sla.vip_bump)
        followers = ix.author.followers or 0
        if sla.high_reach_followers is not None and followers >= sla.high_reach_followers:
            priority = bump_priority(priority, sla.high_reach_bump)
    conversation = Conversation(
        id=conversation_id,
        tenant_id=ix.tenant_id,
        account_id=ix.account_id,
        platform=ix.platform.value,
        thread_id=ix.thread_id,
        state=State.open,
        team_id=team_id,
        topic=topic.name if topic else None,
        priority=priority,
        skills=json.dumps(sorted(skills)),
        sla_policy_id=policy_id,
        no_sla=no_sla,
        author_id=ix.author.id,
        author_name=ix.author.name or ix.author.handle,
        author_handle=ix.author.handle,
        author_followers=ix.author.followers,
        author_verified=ix.author.verified,
        last_inbound_text=ix.text,
        last_inbound_url=ix.url,
        language=ix.language,
        opened_at=ix.created_at,
        awaiting_since=ix.created_at,
        last_inbound_at=ix.created_at,
        updated_at=world.now,
    )
    world.conversations[conversation_id] = conversation
    world.created.add(conversation_id)
    key = ix.interaction_id
    world.emit(
        f"opened:{conversation_id}:{key}",
        ConversationOpened(
            **_envelope(world, conversation, ix.correlation_id),
            platform=ix.platform,
            thread_id=ix.thread_id,
            author=ix.author,
            interaction_id=ix.interaction_id,
            opened_at=ix.created_at,
            topic=conversation.topic,
            priority=priority,
            config_version=world.config_version(conversation.tenant_id),
        ),
    )
    if team_id is None:
        # A topic that needs no answer and names no team: recorded, nothing waits.
        conversation.state = State.resolved
        conversation.awaiting_since = None
        conversation.resolved_at = world.now
        world.emit(
            f"resolved:{conversation_id}:{key}",
            ConversationResolved(
                **_envelope(world, conversation, ix.correlation_id),
                reason=f"topic {conversation.topic}: recorded, no answer needed",
                resolved_at=world.now,
            ),
        )
        _answered_already(world, conversation, ix, since=None)  # its replies join it, nothing to answer
        return conversation
    previous = world.continuity.get((ix.account_id, ix.author.id))
    preferred = world.people.get(previous) if previous else None
    why, passed_over = "answered this author last", ""
    if previous and team is not None and previous not in team.members:
        preferred, passed_over = None, f"{previous} ({why}) is not in team {team.slug}"
    _assign(
        world,
        conversation,
        key,
        ix.correlation_id,
        preferred=preferred,
        why=why,
        because=f"topic {topic.name}" if topic else "",
        passed_over=passed_over,
    )
    _clock_unless_answered(world, conversation, ix, DeadlineKind.first_response)
    return conversation


def _answers(conversation: Conversation, reply: Reply) -> bool:
    """Whether a reply answers what waits: a reply written before the customer's latest message
    does not answer it (platforms deliver out of order), and an edit of a reply is not a new one."""
    return (
        conversation.state in (State.open, State.paused)
        and reply.edit_version == 0
        and (conversation.awaiting_since is None or reply.created_at >= conversation.awaiting_since)
    )


def _reply(
    world: World, conversation: Conversation, reply: Reply, key: str, *, answered_by: str | None = None
) -> None:
    """The brand answered: the clock stops, the owner's load is released, whoever answered
    (`answered_by`, else who wrote the reply in the inbox, else the owner) is who the author goes
    to next time, the resolution target runs and the auto-resolve timer is armed."""
    if not _answers(conversation, reply):
        return
    conversation.state = State.responded
    conversation.responded_at = reply.created_at
    conversation.awaiting_since = None
    conversation.paused_at = None
    conversation.paused_remaining_seconds = None
    answerer = answered_by or _sender(world, conversation, reply) or conversation.owner_id
    if answerer is not None:
        _remember_answerer(world, conversation, answerer)
    _settle_load(world, conversation)
    world.touch(conversation)
    world.emit(
        f"responded:{conversation.id}:{key}",
        ConversationResponded(
            **_envelope(world, conversation, reply.correlation_id),
            interaction_id=reply.interaction_id,
            responded_at=reply.created_at,
        ),
    )
    _set_deadline(
        world, conversation, _resolution(world, conversation), reply.correlation_id, reason="responded"
    )
    _arm_auto_resolve(world, conversation, reply.created_at)


def _sender(world: World, conversation: Conversation, reply: Reply) -> str | None:
    """Who wrote a reply in the inbox, when they are an active person serving the conversation's
    tenant (someone removed or moved away since is not who the author goes to next)."""
    person = world.people.get(reply.sent_by or "")
    if person is None or not person.active or not world.serves(person.id, conversation.tenant_id):
        return None
    return person.id


def _remember_answerer(world: World, conversation: Conversation, person_id: str) -> None:
    world.answered[(conversation.account_id, conversation.author_id)] = person_id
    world.continuity[(conversation.account_id, conversation.author_id)] = person_id


def credit_sender(world: World, conversation: Conversation, reply: Reply) -> None:
    """Who wrote a reply in the inbox became known after the reply was routed (the platform's echo
    of it came first, naming nobody): when it is the reply that answered the conversation last,
    the author goes to its writer next time rather than to the owner it was credited to. Nothing
    else moves: the conversation was answered once, by that reply."""
    if conversation.responded_at != reply.created_at or reply.edit_version != 0:
        return
    sender = _sender(world, conversation, reply)
    if sender is not None:
        _remember_answerer(world, conversation, sender)


def _resolution(world: World, conversation: Conversation) -> DueTimes | None:
    """The resolution deadline after a reply; none for a conversation whose clock never ran because
    it was older than the backfill cutoff (its resolution target would only be long past)."""
    return deadlines.plan_resolution(
        opened_at=conversation.opened_at,
        sla=world.sla_of(conversation),
        priority=conversation.priority,
        now=world.now,
        backfill_cutoff=timedelta.max if conversation.deadline_version else world.backfill_cutoff,
    )


def _arm_auto_resolve(world: World, conversation: Conversation, since: datetime) -> None:
    tenant = world.tenants.get(conversation.tenant_id)
    if tenant is None or tenant.auto_resolve is None:
        return
    try:
        conversation.resolve_at = since + tenant.auto_resolve
    except OverflowError:
        conversation.resolve_at = None
        return
    at = conversation.resolve_at
    _arm(
        world,
        f"conv.{conversation.tenant_id}.{conversation.id}",
        at,
        AutoResolve(
            command_id=f"autoresolve-{conversation.id}-{int(at.timestamp())}",
            tenant_id=conversation.tenant_id,
            conversation_id=conversation.id,
            issued_by="router",
            issued_at=world.now,
        ),
    )


def _arm(world: World, key: str, at: datetime, command: AnyCommand) -> None:
    """Arm one of the router's timers: one already due fires at once; one after what a NATS
    schedule can hold is not armed (nothing would come of it before 2262)."""
    if at > deadlines.SCHEDULABLE[1]:
        return
    world.timers.append(Timer(key, max(at, world.now), command))


def retract(
    world: World, retraction: InteractionRetracted, conversation_id: str, *, still_waiting: int
) -> None:
    """A withdrawn message. When nothing else waits for an answer, the conversation is resolved
    and its clock stops; otherwise the wait goes on from the earlier message."""
    conversation = world.conversations.get(conversation_id)
    if conversation is None or conversation.state != State.open or still_waiting > 0:
        return
    _resolve(
        world,
        conversation,
        f"retracted:{retraction.external_id}",
        retraction.correlation_id,
        reason="the message waiting for an answer was withdrawn by its author",
        at=retraction.retracted_at,
    )


# -- commands --------------------------------------------------------------------------------


def claim(world: World, conversation: Conversation, person_id: str, key: str, *, by: str) -> Refusal | None:
    """A person takes a conversation (given by someone else when `by` differs); refused when they
    are inactive, serve none of its tenant's teams, or it would put them over capacity. Away or
    off shift, one may still take it."""
    person = world.people.get(person_id)
    if person is None or not person.active:
        return Refusal(Rejection.unknown_person, f"{person_id} is not an active person")
    if conversation.state == State.resolved:
        return Refusal(Rejection.closed, "the conversation is resolved")
    if not world.serves(person_id, conversation.tenant_id):
        return Refusal(Rejection.not_a_member, f"{person_id} does not serve tenant {conversation.tenant_id}")
    if conversation.owner_id == person_id:
        return Refusal(Rejection.already_done, f"{person_id} owns it already")
    weight = person.weight(conversation.priority) if conversation.state == State.open else 0
    if not person.has_room(weight):
        return Refusal(Rejection.at_capacity, f"{person_id} is at capacity ({person.load}/{person.capacity})")
    verb = "claimed it" if by == person_id else f"was given it by {by}"
    _set_owner(world, conversation, Choice(person_id, f"{person_id} {verb}", "claim"), key, "")
    return None


def reassign(
    world: World, conversation: Conversation, key: str, *, person_id: str | None, team_id: str | None, by: str
) -> Refusal | None:
    if conversation.state == State.resolved:
        return Refusal(Rejection.closed, "the conversation is resolved")
    if person_id is not None:
        return claim(world, conversation, person_id, key, by=by)
    team = world.teams.get(team_id or "")
    if team is None or team.tenant_id != conversation.tenant_id:
        return Refusal(Rejection.unknown_team, f"no such team in tenant {conversation.tenant_id}")
    if conversation.team_id == team_id and conversation.owner_id is None:
        return Refusal(Rejection.already_done, f"it waits in the queue of team {team.slug} already")
    conversation.team_id = team_id
    world.touch(conversation)
    # The owner stays until the team has chosen, so the events name who gave it up and notify
    # stops alerting them even when the conversation only goes to the queue.
    _assign(world, conversation, key, "", preferred=None, why="")
    return None


def pause(world: World, conversation: Conversation, key: str, *, reason: str) -> Refusal | None:
    if conversation.state == State.paused:
        return Refusal(Rejection.already_paused, "the conversation is paused already")
    if conversation.state != State.open:
        return Refusal(Rejection.invalid, "only an open conversation can wait on the customer")
    sla = world.sla_of(conversation)
    conversation.state = State.paused
    conversation.paused_at = world.now
    conversation.paused_kind = conversation.deadline_kind
    conversation.paused_remaining_seconds = (
        deadlines.remaining(sla, now=world.now, due_at=conversation.due_at).total_seconds()
        if conversation.due_at is not None
        else None
    )
    _settle_load(world, conversation)
    world.touch(conversation)
    world.emit(
        f"paused:{conversation.id}:{key}",
        ConversationPaused(
            **_envelope(world, conversation, ""),
            reason=reason or "waiting on the customer",
            paused_at=world.now,
        ),
    )
    _set_deadline(world, conversation, None, "", reason="paused")
    return None


def resume(world: World, conversation: Conversation, key: str) -> Refusal | None:
    if conversation.state != State.paused:
        return Refusal(Rejection.not_paused, "the conversation is not paused")
    conversation.state = State.open
    left = conversation.paused_remaining_seconds
    kind = DeadlineKind(conversation.paused_kind) if conversation.paused_kind else None
    sla = world.sla_of(conversation)
    if sla is not None and conversation.paused_at is not None:
        # kept so that a recomputed deadline gives the pause back too
        conversation.paused_business_seconds += sla.calendar.elapsed(
            conversation.paused_at, world.now
        ).total_seconds()
    conversation.paused_at = None
    conversation.paused_remaining_seconds = None
    world.touch(conversation)
    world.emit(
        f"resumed:{conversation.id}:{key}",
        ConversationResumed(**_envelope(world, conversation, ""), resumed_at=world.now),
    )
    owner = world.people.get(conversation.owner_id or "")
    _assign(world, conversation, key, "", preferred=owner, why="owns this conversation")
    if sla is not None and left is not None and kind is not None:
        deadline = deadlines.resume(sla, kind=kind, now=world.now, left=timedelta(seconds=left))
        _set_deadline(world, conversation, deadline, "", reason="resumed")
    return None


def resolve(world: World, conversation: Conversation, key: str, *, reason: str) -> Refusal | None:
    if conversation.state == State.resolved:
        return Refusal(Rejection.already_done, "the conversation is resolved already")
    _resolve(world, conversation, key, "", reason=reason or "resolved", at=world.now)
    return None


def mark_responded(
    world: World,
    conversation: Conversation,
    key: str,
    *,
    person_id: str | None,
    at: datetime,
    correlation_id: str = "",
) -> Refusal | None:
    """Someone says the brand answered where no reply can be seen (a phone call, the platform's own
    app): the same as the brand's reply arriving in the thread, written at `at` (never later than
    now), answered by `person_id` (None: the owner). Its `ConversationResponded` names no
    interaction (`interaction_id` ""): the command's outcome says who said so and who answered.

    A paused conversation is answered as a reply answers it. Refused when the conversation is
    resolved, when nothing waits for an answer, when the customer wrote again after `at`, and
    when the named person is not an active person serving the tenant."""
    if person_id is not None:
        person = world.people.get(person_id)
        if person is None or not person.active:
            return Refusal(Rejection.unknown_person, f"{person_id} is not an active person")
    if conversation.state == State.resolved:
        return Refusal(Rejection.closed, "the conversation is resolved")
    if person_id is not None and not world.serves(person_id, conversation.tenant_id):
        return Refusal(Rejection.not_a_member, f"{person_id} does not serve tenant {conversation.tenant_id}")
    if conversation.state not in (State.open, State.paused):
        return Refusal(Rejection.already_done, "nothing is waiting for an answer")
    reply = Reply("", conversation.thread_id, min(at, world.now), correlation_id)
    if not _answers(conversation, reply):
        return Refusal(Rejection.outdated, "the customer wrote again after it was marked responded")
    _reply(world, conversation, reply, key, answered_by=person_id)
    return None


def auto_resolve(world: World, conversation: Conversation, key: str) -> Refusal | None:
    """A responded conversation that stayed quiet long enough resolves itself."""
    if (
        conversation.state != State.responded
        or conversation.resolve_at is None
        or conversation.resolve_at > world.now + timedelta(seconds=1)
    ):
        # an old timer: the customer wrote again since, or someone resolved it
        return Refusal(Rejection.outdated, "the conversation changed since this timer was armed")
    tenant = world.tenants.get(conversation.tenant_id)
    quiet = tenant.auto_resolve if tenant and tenant.auto_resolve else None
    _resolve(
        world,
        conversation,
        key,
        "",
        reason=f"no new message for {quiet} after the reply" if quiet else "quiet after the reply",
        at=world.now,
    )
    return None


def _resolve(
    world: World, conversation: Conversation, key: str, correlation_id: str, *, reason: str, at: datetime
) -> None:
    conversation.state = State.resolved
    conversation.awaiting_since = None
    conversation.resolved_at = at
    conversation.resolve_at = None
    conversation.paused_at = None
    conversation.paused_remaining_seconds = None
    _settle_load(world, conversation)
    world.touch(conversation)
    world.emit(
        f"resolved:{conversation.id}:{key}",
        ConversationResolved(**_envelope(world, conversation, correlation_id), reason=reason, resolved_at=at),
    )
    _set_deadline(world, conversation, None, correlation_id, reason="resolved")


def recompute(world: World, conversation: Conversation, key: str) -> None:
    """Deadlines again under the current SLA policy (after `apply --recompute`)."""
    sla = world.sla_of(conversation)
    if conversation.state == State.open and conversation.awaiting_since is not None:
        kind = DeadlineKind.next_response if conversation.responded_at else DeadlineKind.first_response
        deadline = deadlines.plan_deadline(
            kind=kind,
            started_at=conversation.awaiting_since,
            opened_at=conversation.opened_at,
            sla=sla,
            priority=conversation.priority,
            now=world.now,
            # a clock already running is not a backfill; one that never ran (no policy then,
            # or an old message) starts only if the message is recent
            backfill_cutoff=timedelta.max if conversation.due_at else world.backfill_cutoff,
            paused=timedelta(seconds=conversation.paused_business_seconds),
        )
    elif conversation.state == State.responded:
        deadline = _resolution(world, conversation)
    else:
        return
    if _differs(conversation, deadline):
        _set_deadline(world, conversation, deadline, "", reason="recomputed")


# -- people ----------------------------------------------------------------------------------


def set_status(world: World, person_id: str, status: str) -> Refusal | None:
    person = world.people.get(person_id)
    if person is None:
        return Refusal(Rejection.unknown_person, f"no person {person_id}")
    person.status = status
    world.statuses[person_id] = status
    return check_availability(world, person_id)


def check_availability(world: World, person_id: str) -> Refusal | None:
    """Act on someone's availability now: hand over what would fall due while they are gone,
    or take queued work when they can; then arm the timer of their next shift change."""
    person = world.people.get(person_id)
    if person is None:
        return Refusal(Rejection.unknown_person, f"no person {person_id}")
    if not person.present(world.now):
        back = person.back_at(world.now)
        hand_over(world, person_id, until=back, reason=_absence(person, world.now))
    if person.available(world.now):
        world.freed.add(person_id)
    change = person.next_change(world.now)
    if change is not None and person.active:
        _arm(
            world,
            f"person.{person_id}",
            change,
            CheckAvailability(
                command_id=f"avail-{person_id}-{int(change.timestamp())}",
                person_id=person_id,
                issued_by="router",
                issued_at=world.now,
            ),
        )
    return None


def _absence(person: Person, now: datetime) -> str:
    if not person.active:
        return f"{person.id} is deactivated"
    if person.status == "offline":
        return f"{person.id} went offline"
    if person.out_of_office_at(now):
        return f"{person.id} is out of office"
    return f"{person.id}'s shift ended"


def hand_over(
    world: World,
    person_id: str,
    *,
    until: datetime | None,
    reason: str,
    key: str = "",
    only_gone: bool = False,
) -> None:
    """Give someone's conversations that would fall due before `until` (None: all) to others.

    Conversations in teams they no longer belong to, or all when they are deactivated, go in
    any case; `only_gone` hands over only those (a configuration change, not an absence)."""
    person = world.people.get(person_id)
    key = key or f"handover-{person_id}-{int(world.now.timestamp() * 1000)}"
    for conversation in sorted(
        world.conversations.values(), key=lambda c: (c.due_at is None, c.due_at, c.id)
    ):
        if conversation.owner_id != person_id or conversation.state not in (State.open, State.paused):
            continue
        member = (
            conversation.team_id in world.teams and person_id in world.teams[conversation.team_id].members
        )
        gone = person is None or not person.active or not member
        if not gone:
            if only_gone or conversation.state != State.open:
                continue
            if until is not None and (conversation.due_at is None or conversation.due_at >= until):
                continue
        _assign(
            world,
            conversation,
            key,
            "",
            preferred=person,
            why="owned it",
            excluded=frozenset({person_id}),
            prefix=f"handed over ({reason})",
        )


def fill_from_queue(world: World, person_id: str, queued: list[Conversation]) -> None:
    """Someone freed capacity or became available: they take queued conversations, earliest due first."""
    person = world.people.get(person_id)
    if person is None or not person.available(world.now):
        return
    for conversation in sorted(queued, key=_queue_order):
        if conversation.owner_id is not None or conversation.state != State.open:
            continue
        if (
            conversation.team_id not in world.teams
            or person_id not in world.teams[conversation.team_id].members
        ):
            continue
        need = conversation.needs()
        if not person.has_room(person.weight(need.priority)):
            break
        team_members = world.members(conversation.team_id)
        qualified = any(p.can_do(need.skills) and p.speaks(need.language) for p in team_members if p.active)
        if qualified and not (person.can_do(need.skills) and person.speaks(need.language)):
            continue
        slug = world.teams[conversation.team_id].slug
        _set_owner(
            world,
            conversation,
            Choice(person_id, f"team {slug}: from the queue, {person_id} could take it", "from queue"),
            f"dequeued-{person_id}-{int(world.now.timestamp() * 1000)}",
            "",
        )


def _queue_order(conversation: Conversation) -> tuple[Any, ...]:
    """Earliest due first, then longest queued; a missing time sorts last by the flag before it,
    so None is never compared with a datetime."""
    c = conversation
    return (c.due_at is None, c.due_at, c.queued_at is None, c.queued_at, c.id)


# -- shared steps ----------------------------------------------------------------------------


def _assign(
    world: World,
    conversation: Conversation,
    key: str,
    correlation_id: str,
    *,
    preferred: Person | None,
    why: str,
    excluded: frozenset[str] = frozenset(),
    prefix: str = "",
    because: str = "",
    passed_over: str = "",
) -> None:
    team = world.teams.get(conversation.team_id or "")
    if team is None:
        return
    if (
        preferred is not None
        and preferred.id == conversation.owner_id
        and preferred.id not in excluded
        and conversation.load_weight > 0
    ):
        return  # already theirs, and counted
    _uncount(world, conversation)  # what it weighed on its owner is not theirs to keep while choosing
    choice = choose_owner(
        world.members(team.id),
        conversation.needs(),
        team=team.slug,
        now=world.now,
        preferred=preferred,
        preferred_why=why,
        excluded=excluded,
        passed_over=passed_over,
    )
    if prefix:
        choice = Choice(choice.person_id, f"{prefix}; {choice.reason}", f"hand over, {choice.step}")
    if because:  # the rule that chose the team
        choice = Choice(choice.person_id, f"{because}: {choice.reason}", choice.step)
    _set_owner(world, conversation, choice, key, correlation_id)


def _set_owner(
    world: World, conversation: Conversation, choice: Choice, key: str, correlation_id: str
) -> None:
    """Move the conversation to `choice` (nobody: the team queue), keeping every owner's load exact."""
    choice = Choice(choice.person_id, fit_reason(choice.reason), choice.step)
    previous = conversation.owner_id
    _uncount(world, conversation)
    conversation.owner_id = choice.person_id
    _settle_load(world, conversation)
    world.touch(conversation)
    conversation.assignment_reason = choice.reason
    if choice.person_id is not None:
        conversation.assigned_at = world.now
        conversation.queued_at = None
        world.assigned_people.add(choice.person_id)
        person = world.people.get(choice.person_id)
        if person is not None:
            person.last_assigned_at = world.now
    elif conversation.state == State.open and conversation.team_id is not None:
        conversation.queued_at = conversation.queued_at or world.now
    world.emit(
        f"assigned:{conversation.id}:{key}:{choice.step}:{choice.person_id or '-'}",
        ConversationAssigned(
            **_envelope(world, conversation, correlation_id),
            team_id=conversation.team_id,
            owner_id=choice.person_id,
            reason=choice.reason,
            assigned_at=world.now,
            step=choice.step,
            previous_owner_id=previous,
            config_version=world.config_version(conversation.tenant_id),
        ),
    )
    if choice.person_id != previous and conversation.due_at is not None:
        # notify alerts the owner: tell it who that is now (same times)
        _republish_deadline(world, conversation, correlation_id, reason="owner changed")


def _uncount(world: World, conversation: Conversation) -> None:
    if conversation.load_weight and conversation.owner_id:
        _add_load(world, conversation.owner_id, -conversation.load_weight)
        world.freed.add(conversation.owner_id)
    conversation.load_weight = 0


def _settle_load(world: World, conversation: Conversation) -> None:
    """An open conversation weighs on its owner; any other weighs on nobody."""
    owner = world.people.get(conversation.owner_id or "")
    wanted = owner.weight(conversation.priority) if owner and conversation.state == State.open else 0
    if conversation.load_weight == wanted:
        return
    _uncount(world, conversation)
    if wanted and owner is not None:
        _add_load(world, owner.id, wanted)
        conversation.load_weight = wanted


def _add_load(world: World, person_id: str, delta: int) -> None:
    person = world.people.get(person_id)
    if person is not None:
        person.load += delta
    world.load_deltas[person_id] = world.load_deltas.get(person_id, 0) + delta


def _start_clock(
    world: World,
    conversation: Conversation,
    kind: DeadlineKind,
    started_at: datetime,
    key: str,
    correlation_id: str,
) -> None:
    conversation.paused_business_seconds = 0.0  # a new clock
    deadline = deadlines.plan_deadline(
        kind=kind,
        started_at=started_at,
        opened_at=conversation.opened_at,
        sla=world.sla_of(conversation),
        priority=conversation.priority,
        now=world.now,
        backfill_cutoff=world.backfill_cutoff,
    )
    if deadline is not None or conversation.due_at is not None:
        _set_deadline(world, conversation, deadline, correlation_id)


def _differs(conversation: Conversation, deadline: DueTimes | None) -> bool:
    if deadline is None:
        return conversation.due_at is not None
    return (conversation.deadline_kind, conversation.warn_at, conversation.due_at) != (
        deadline.kind.value,
        deadline.warn_at,
        deadline.due_at,
    )


def _envelope(world: World, conversation: Conversation, correlation_id: str) -> dict[str, Any]:
    """What every event about a conversation says first (its id from the world's ids, so that the
    same input with the same ids says the same thing)."""
    return {
        "event_id": world.new_id(),
        "tenant_id": conversation.tenant_id,
        "correlation_id": correlation_id,
        "occurred_at": world.now,
        "conversation_id": conversation.id,
        "account_id": conversation.account_id,
    }


def _set_deadline(
    world: World,
    conversation: Conversation,
    deadline: DueTimes | None,
    correlation_id: str,
    *,
    reason: str = "",
) -> None:
    if deadline is None and conversation.due_at is None:
        return
    conversation.deadline_kind = deadline.kind.value if deadline else None
    conversation.warn_at = deadline.warn_at if deadline else None
    conversation.due_at = deadline.due_at if deadline else None
    started_at = deadline.started_at if deadline else None
    _publish_deadline(
        world,
        conversation,
        started_at,
        correlation_id,
        reason or (deadline.kind.value if deadline else "cleared"),
    )


def _republish_deadline(
    world: World, conversation: Conversation, correlation_id: str, *, reason: str
) -> None:
    # The same clock: a resolution target runs from the opening, a response target from the message.
    started_at = (
        conversation.opened_at
        if conversation.deadline_kind == DeadlineKind.resolution
        else conversation.awaiting_since
    )
    _publish_deadline(world, conversation, started_at, correlation_id, reason)


def _publish_deadline(
    world: World, conversation: Conversation, started_at: datetime | None, correlation_id: str, reason: str
) -> None:
    conversation.deadline_version += 1
    world.touch(conversation)
    world.emit(
        f"deadline:{conversation.id}:{conversation.deadline_version}",
        DeadlineChanged(
            **_envelope(world, conversation, correlation_id),
            deadline_version=conversation.deadline_version,
            kind=DeadlineKind(conversation.deadline_kind) if conversation.deadline_kind else None,
            owner_id=conversation.owner_id,
            started_at=started_at if conversation.due_at else None,
            warn_at=conversation.warn_at,
            due_at=conversation.due_at,
            reason=reason,
            priority=conversation.priority,
            config_version=world.config_version(conversation.tenant_id),
        ),
    )
