"""What one command does to a loaded world, and what to tell whoever sent it.

Pure, like `conversations`: the service loads the world, calls `apply_command` for
each command, and turns each verdict into a `CommandApplied` or `CommandRejected`.
A refusal changes nothing, so a rejected command leaves no half-done work behind.
"""

from dataclasses import dataclass

from services.router import conversations
from services.router.conversations import Refusal, World, short
from shared import ids
from shared.commands import (
    AnyCommand,
    AutoResolve,
    CheckAvailability,
    Claim,
    HandOver,
    MarkResponded,
    Pause,
    Reassign,
    Recompute,
    Resolve,
    Resume,
    SetStatus,
)
from shared.events import Rejection


@dataclass(frozen=True)
class Applied:
    summary: str  # what changed, for a person to read
    person_id: str | None = None  # the person the outcome names, when the command left it implied


Verdict = Applied | Refusal


def apply_command(world: World, command: AnyCommand) -> Verdict:
    """One command on a loaded world (the same call in the service, tests and replays)."""
    key = f"cmd-{command.command_id}"
    if isinstance(command, SetStatus):
        status = command.status.value
        return _verdict(
            conversations.set_status(world, command.person_id, status), f"{command.person_id} is {status}"
        )
    if isinstance(command, CheckAvailability):
        refusal = conversations.check_availability(world, command.person_id)
        return _verdict(refusal, f"the availability of {command.person_id} was checked")
    if isinstance(command, HandOver):
        conversations.hand_over(
            world,
            command.person_id,
            until=None,
            reason=command.reason or "handed over",
            key=key,
            only_gone=True,
        )
        return Applied(f"what {command.person_id} can no longer answer was handed over")
    if isinstance(command, Recompute):
        if command.tenant_id not in world.tenants:
            return Refusal(Rejection.unknown_tenant, f"no tenant {command.tenant_id}")
        mine = [c for c in world.conversations.values() if c.tenant_id == command.tenant_id]
        for each in mine:
            conversations.recompute(world, each, key)
        return Applied(
            f"the deadlines of {len(mine)} conversations of tenant {command.tenant_id} were recomputed"
        )
    conversation = world.conversations.get(command.conversation_id)
    if conversation is None or conversation.tenant_id != command.tenant_id:
        return Refusal(
            Rejection.unknown_conversation,
            f"no conversation {short(command.conversation_id)} in tenant {command.tenant_id}",
        )
    what = short(conversation.id)
    match command:
        case Claim():
            refusal = conversations.claim(world, conversation, command.person_id, key, by=command.issued_by)
            return _verdict(refusal, f"{command.person_id} owns {what}")
        case Reassign():
            return _reassign(world, command, key)
        case Pause():
            return _verdict(
                conversations.pause(world, conversation, key, reason=command.reason),
                f"{what} waits on the customer",
            )
        case Resume():
            return _verdict(conversations.resume(world, conversation, key), f"{what} is open again")
        case Resolve():
            reason = command.reason or f"resolved by {command.issued_by}"
            return _verdict(
                conversations.resolve(world, conversation, key, reason=reason), f"{what} is resolved"
            )
        case MarkResponded():
            return _mark_responded(world, command, key)
        case AutoResolve():
            return _verdict(conversations.auto_resolve(world, conversation, key), f"{what} resolved itself")
    raise TypeError(f"no rule for {type(command).__name__}")


def _reassign(world: World, command: Reassign, key: str) -> Verdict:
    conversation = world.conversations[command.conversation_id]
    what = short(conversation.id)
    team_id = ids.team_id(tenant_id=command.tenant_id, slug=command.team) if command.team else None
    team = world.teams.get(team_id or "")
    if command.team is not None and team is None:
        return Refusal(Rejection.unknown_team, f"no team {command.team} in tenant {command.tenant_id}")
    if command.person_id is not None and team is not None and command.person_id not in team.members:
        return Refusal(Rejection.not_a_member, f"{command.person_id} does not serve team {team.slug}")
    if (
        team is not None
        and command.person_id is None
        and conversation.team_id == team_id
        and conversation.assigned_at is not None
        and conversation.assigned_at >= command.issued_at
    ):
        return Refusal(Rejection.already_done, f"{what} went to team {team.slug} already")
    refusal = conversations.reassign(
        world, conversation, key, person_id=command.person_id, team_id=team_id, by=command.issued_by
    )
    if command.person_id is not None:
        return _verdict(refusal, f"{command.person_id} owns {what}")
    owner = conversation.owner_id
    where = f"{owner} in team {command.team}" if owner else f"the queue of team {command.team}"
    return _verdict(refusal, f"{what} went to {where}")


def _mark_responded(world: World, command: MarkResponded, key: str) -> Verdict:
    """The reply went out where StayHuman does not watch: credited to the person named, else the owner."""
    conversation = world.conversations[command.conversation_id]
    answerer = command.person_id or conversation.owner_id
    refusal = conversations.mark_responded(
        world,
        conversation,
        key,
        person_id=command.person_id,
        at=command.issued_at,
        correlation_id=command.correlation_id,
    )
    if refusal is not None:
        return refusal
    credit = f"answered by {answerer}" if answerer else "nobody owns it to credit"
    note = f": {command.note}" if command.note else ""
    summary = f"{short(conversation.id)} marked responded by {command.issued_by} ({credit}){note}"
    return Applied(summary, person_id=answerer)


def _verdict(refusal: Refusal | None, summary: str) -> Verdict:
    return refusal if refusal is not None else Applied(summary)
