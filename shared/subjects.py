"""NATS subjects and stream names, one builder per subject family.

Subjects carry only tenant ids and internal ids (slugs and hex UUIDs). Raw platform
ids contain dots, slashes and URIs, so they never appear in a subject.
"""

import functools
from typing import Literal

from shared.ids import is_slug

INTERACTIONS_STREAM = "SH_INTERACTIONS"
EVENTS_STREAM = "SH_EVENTS"
TIMERS_STREAM = "SH_TIMERS"
DEAD_LETTER_STREAM = "SH_DEADLETTER"
ARCHIVE_STREAM = "SH_ARCHIVE"
COMMANDS_STREAM = "SH_COMMANDS"

ConversationEvent = Literal["opened", "assigned", "responded", "reopened", "paused", "resumed", "resolved"]


@functools.lru_cache(maxsize=16384)  # the router names each tenant and conversation several times a batch
def _token(value: str) -> str:
    if not is_slug(value) and not _is_hex_id(value):
        raise ValueError(f"{value!r} cannot be used in a subject")
    return value


def _is_hex_id(value: str) -> bool:
    return len(value) == 32 and all(c in "0123456789abcdef" for c in value)


def interaction_received(*, tenant_id: str, account_id: str) -> str:
    """Where ingest publishes every normalised interaction (inbound and the brand's own)."""
    return f"sh.ix.{_token(tenant_id)}.{_token(account_id)}"


def all_interactions() -> str:
    return "sh.ix.>"


# The interactions stream stores each tenant's interactions in one of LANES lanes
# (`sh.ix.<lane>.<tenant>.<account>`, the lane a hash of the tenant, set by the
# stream's subject transform), and the router consumes each lane on its own: a
# tenant with a backlog fills its lane only, the others keep flowing.
LANES = 8
LANE_SOURCE = "sh.ix.*.*"
LANE_DESTINATION = f"sh.ix.{{{{partition({LANES},1)}}}}.{{{{wildcard(1)}}}}.{{{{wildcard(2)}}}}"


def interaction_lane(lane: int) -> str:
    """The interactions of the tenants in one lane, as stored."""
    if not 0 <= lane < LANES:
        raise ValueError(f"lane {lane} is not in 0..{LANES - 1}")
    return f"sh.ix.{lane}.>"


def conversation_event(*, tenant_id: str, conversation_id: str, event: ConversationEvent) -> str:
    """Lifecycle events of one conversation, published by the router."""
    return f"sh.conv.{_token(tenant_id)}.{_token(conversation_id)}.{event}"


def all_conversation_events(event: ConversationEvent | Literal["*"] = "*") -> str:
    return f"sh.conv.*.*.{event}"


def deadline(*, tenant_id: str, conversation_id: str) -> str:
    """The deadline contract of one conversation: the router sets it, notify arms it."""
    return f"sh.deadline.{_token(tenant_id)}.{_token(conversation_id)}"


def all_deadlines() -> str:
    return "sh.deadline.>"


def timer_schedule(*, tenant_id: str, conversation_id: str) -> str:
    """The one schedule subject per conversation that holds its next timer."""
    return f"sh.timer.sched.{_token(tenant_id)}.{_token(conversation_id)}"


def timer_schedule_all() -> str:
    return "sh.timer.sched.>"


def retry_schedule(*, tenant_id: str, conversation_id: str) -> str:
    """The one schedule per conversation that retries its deliveries still owed."""
    return f"sh.timer.retry.{_token(tenant_id)}.{_token(conversation_id)}"


def retry_fired(*, tenant_id: str, conversation_id: str) -> str:
    return f"sh.timer.fired.{_token(tenant_id)}.{_token(conversation_id)}.retry"


def group_schedule(*, person_id: str, channel: str) -> str:
    """The timer that sends one person the alerts held back during a burst, as one message."""
    return f"sh.timer.group.{_token(person_id)}.{_token(channel)}"


def group_fired(*, person_id: str, channel: str) -> str:
    return f"sh.timer.fired.group.{_token(person_id)}.{_token(channel)}"


def timer_fired(*, tenant_id: str, conversation_id: str) -> str:
    """Where the server writes a schedule's message when it comes due."""
    return f"sh.timer.fired.{_token(tenant_id)}.{_token(conversation_id)}"


def all_timers_fired() -> str:
    return "sh.timer.fired.>"


def dead_letter(*, stream: str, consumer: str) -> str:
    """Poison messages of one consumer, kept with their error."""
    return f"sh.dlq.{stream.lower()}.{consumer}"


def archive(*, source: str) -> str:
    """Raw payloads as received (a webhook body, a batch), kept for audit and replay."""
    return f"sh.archive.{_token(source)}"


def connector_problem(*, tenant_id: str, account_id: str) -> str:
    """Operator alerts about a connected account (ingest reports, notify tells the operator)."""
    return f"sh.ops.{_token(tenant_id)}.{_token(account_id)}"


def all_connector_problems() -> str:
    return "sh.ops.>"


def person_command(*, person_id: str, verb: str) -> str:
    """Commands about one person (status, hand over, availability), consumed by the router."""
    return f"sh.cmd.person.{_token(person_id)}.{_token(verb)}"


def conversation_command(*, tenant_id: str, conversation_id: str, verb: str) -> str:
    """Commands about one conversation (claim, reassign, pause, resume, resolve)."""
    return f"sh.cmd.conv.{_token(tenant_id)}.{_token(conversation_id)}.{_token(verb)}"


def tenant_command(*, tenant_id: str, verb: str) -> str:
    return f"sh.cmd.tenant.{_token(tenant_id)}.{_token(verb)}"


def all_commands() -> str:
    """The router's commands (notify's have a family of their own, below)."""
    return "sh.cmd.>"


def notify_command(*, tenant_id: str, conversation_id: str, verb: str) -> str:
    """Commands notify applies (acknowledge an alert), kept apart so the router never takes them."""
    return f"sh.ncmd.{_token(tenant_id)}.{_token(conversation_id)}.{_token(verb)}"


def all_notify_commands() -> str:
    return "sh.ncmd.>"


CommandOutcome = Literal["applied", "rejected"]


def command_outcome(*, tenant_id: str, person_id: str | None, outcome: CommandOutcome) -> str:
    """What became of a command: per tenant, or per person for commands about a person."""
    if tenant_id:
        return f"sh.result.tenant.{_token(tenant_id)}.{outcome}"
    if person_id is None:
        raise ValueError("a command outcome names a tenant or a person")
    return f"sh.result.person.{_token(person_id)}.{outcome}"


def all_command_outcomes() -> str:
    return "sh.result.>"


def outbound_command(*, tenant_id: str, conversation_id: str, verb: str) -> str:
    """Commands the outbound service applies (send a reply): only a person's session asks them."""
    return f"sh.out.{_token(tenant_id)}.{_token(conversation_id)}.{_token(verb)}"


def all_outbound_commands() -> str:
    return "sh.out.>"


def reply_event(*, tenant_id: str, conversation_id: str) -> str:
    """What became of the replies of one conversation (sending, sent, failed, in doubt)."""
    return f"sh.reply.{_token(tenant_id)}.{_token(conversation_id)}"


def all_reply_events() -> str:
    return "sh.reply.>"


AlertOutcome = Literal["sent", "failed", "acknowledged"]


def alert_event(*, tenant_id: str, outcome: AlertOutcome) -> str:
    """What notify sent, failed to send, and what people acknowledged, per tenant."""
    return f"sh.alert.{_token(tenant_id)}.{outcome}"


def all_alert_events() -> str:
    return "sh.alert.>"


def router_timer_schedule(*, key: str) -> str:
    """The router's own timers (shift changes, auto-resolve), apart from notify's.

    `key` is dotted tokens: `person.<person>` or `conv.<tenant>.<conversation>`."""
    return f"sh.timer.rsched.{'.'.join(_token(part) for part in key.split('.'))}"


def router_timer_fired(*, key: str) -> str:
    return f"sh.timer.rfired.{'.'.join(_token(part) for part in key.split('.'))}"


def all_router_timers_fired() -> str:
    return "sh.timer.rfired.>"
