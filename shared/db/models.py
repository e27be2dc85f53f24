"""Tables. Rows only: HTTP bodies and NATS messages have their own models."""

from datetime import datetime

from sqlalchemy import BigInteger, Column, Index, LargeBinary, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from shared.db.types import UtcDateTime
from shared.events import utcnow

SQLModel.metadata.naming_convention = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def _utc(*, nullable: bool = False, index: bool = False) -> Column:
    return Column(UtcDateTime(), nullable=nullable, index=index)


class TenantRow(SQLModel, table=True):
    __tablename__ = "tenant"

    id: str = Field(primary_key=True, max_length=63)
    name: str = Field(max_length=200)
    vip: str = Field(default="[]")  # JSON list of author ids or handles treated as VIP
    auto_resolve_seconds: int | None = None  # a responded conversation quiet this long resolves
    manager_id: str | None = Field(default=None, max_length=63)  # escalation target "manager"
    escalation: str = Field(default="[]")  # JSON escalation chain (services/notify/chain.py)
    # Bumped by every `stayhuman apply` that changes this tenant's configuration (its own
    # settings, teams, people, topics, policies, calendars, accounts); events carry it.
    config_version: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, server_default="0"))
    created_at: datetime = Field(default_factory=utcnow, sa_column=_utc())
    updated_at: datetime = Field(default_factory=utcnow, sa_column=_utc())


class PersonRow(SQLModel, table=True):
    """A human who answers: defined once per installation, serving one or more tenants."""

    __tablename__ = "person"

    id: str = Field(primary_key=True, max_length=63)
    name: str = Field(max_length=200)
    email: str = Field(max_length=320)
    last_assigned_at: datetime | None = Field(default=None, sa_column=_utc(nullable=True))
    # What they can answer: JSON lists of skill slugs and language codes (empty: anything).
    skills: str = Field(default="[]")
    languages: str = Field(default="[]")
    # Conversations awaiting their answer at once, across every tenant they serve;
    # `load` is the current weighted count, changed only by conditional updates.
    capacity: int = 20
    priority_weights: str = Field(default="{}")  # JSON {"urgent": 3, ...}; missing priorities weigh 1
    load: int = 0
    timezone: str = Field(default="UTC", max_length=64)
    working_hours: str | None = None  # JSON weekly schedule; None: always on shift
    status: str = Field(default="available", max_length=16)  # available, away, offline
    out_of_office_from: datetime | None = Field(default=None, sa_column=_utc(nullable=True))
    out_of_office_until: datetime | None = Field(default=None, sa_column=_utc(nullable=True))
    substitute_id: str | None = Field(default=None, max_length=63)
    active: bool = True
    # Which channels for which alert: JSON {"warning": ["email", "push"], ...}; missing: email.
    notify: str = Field(default="{}")
    apprise_urls: str = Field(default="[]")  # JSON list of Apprise URLs (sealed) for channel "apprise"
    quiet_hours: str | None = None  # JSON {"from": "22:00", "until": "07:00"} in their timezone
    created_at: datetime = Field(default_factory=utcnow, sa_column=_utc())
    updated_at: datetime = Field(default_factory=utcnow, sa_column=_utc())


class SlaPolicyRow(SQLModel, table=True):
    __tablename__ = "slapolicy"

    __table_args__ = (UniqueConstraint("tenant_id", "name"),)

    id: str = Field(primary_key=True, max_length=32)
    tenant_id: str = Field(foreign_key="tenant.id", index=True)
    name: str = Field(max_length=63)
    first_response_seconds: int
    next_response_seconds: int | None = None
    warn_before_seconds: int | None = None
    resolution_seconds: int | None = None
    # JSON {"urgent": {"first_response": s, "next_response": s, "resolution": s}, ...}:
    # targets per priority; a priority not named uses the columns above.
    targets: str = Field(default="{}")
    calendar_id: str | None = Field(default=None, max_length=32)
    vip_bump: int = 1  # priority levels added for a VIP author
    high_reach_followers: int | None = None  # authors with at least this many followers
    high_reach_bump: int = 1


class CalendarRow(SQLModel, table=True):
    """Business hours: when SLA clocks run."""

    __tablename__ = "calendar"

    __table_args__ = (UniqueConstraint("tenant_id", "name"),)

    id: str = Field(primary_key=True, max_length=32)
    tenant_id: str = Field(foreign_key="tenant.id", index=True)
    name: str = Field(max_length=63)
    timezone: str = Field(max_length=64)
    hours: str  # JSON {"mon": [["09:00", "18:00"]], ...}
    holidays_country: str | None = Field(default=None, max_length=8)
    holidays_subdivision: str | None = Field(default=None, max_length=16)
    closed_days: str = Field(default="[]")  # JSON list of ISO dates


class TopicRow(SQLModel, table=True):
    """A tenant's routing rule: the first topic whose rule matches an interaction names its team."""

    __tablename__ = "topic"

    __table_args__ = (UniqueConstraint("tenant_id", "name"),)

    id: str = Field(primary_key=True, max_length=32)
    tenant_id: str = Field(foreign_key="tenant.id", index=True)
    name: str = Field(max_length=63)
    position: int  # rules are tried in this order; the default topic comes last
    is_default: bool = False
    rule: str = Field(default="{}")  # JSON: what an interaction must match
    team_id: str | None = Field(default=None, max_length=32)
    priority: str = Field(default="normal", max_length=16)
    sla_policy_id: str | None = Field(default=None, max_length=32)
    no_sla: bool = False  # recorded (and assigned if a team is named), never alerted
    skills: str = Field(default="[]")  # JSON: skills an owner needs
    escalation: str | None = None  # JSON escalation chain for this topic; None: the tenant's


class ContinuityRow(SQLModel, table=True):
    """Who last answered an author on an account: they get that author's next conversation."""

    __tablename__ = "continuity"

    account_id: str = Field(primary_key=True, max_length=63)
    author_id: str = Field(primary_key=True, max_length=256)
    person_id: str = Field(max_length=63)
    answered_at: datetime = Field(sa_column=_utc())


class TeamRow(SQLModel, table=True):
    __tablename__ = "team"

    __table_args__ = (UniqueConstraint("tenant_id", "slug"),)

    id: str = Field(primary_key=True, max_length=32)
    tenant_id: str = Field(foreign_key="tenant.id", index=True)
    slug: str = Field(max_length=63)
    name: str = Field(max_length=200)
    sla_policy_id: str | None = Field(default=None, foreign_key="slapolicy.id")
    lead_id: str | None = Field(default=None, max_length=63)


class TeamMemberRow(SQLModel, table=True):
    __tablename__ = "teammember"

    team_id: str = Field(foreign_key="team.id", primary_key=True)
    person_id: str = Field(foreign_key="person.id", primary_key=True, index=True)


class AccountRow(SQLModel, table=True):
    """A brand's account on one platform; its id appears in webhook URLs."""

    __tablename__ = "account"

    __table_args__ = (UniqueConstraint("platform", "external_id"),)

    id: str = Field(primary_key=True, max_length=63)
    tenant_id: str = Field(foreign_key="tenant.id", index=True)
    platform: str = Field(max_length=32)
    handle: str = Field(max_length=200)
    team_id: str = Field(foreign_key="team.id")
    webhook_secret: str = Field(max_length=512)
    # The platform's own id of the page, Instagram account or X user: how platform
    # webhooks, which name no StayHuman account, find it.
    external_id: str | None = Field(default=None, max_length=128)
    # Polled platforms: where the account's API is, and its sealed credentials.
    api_base_url: str | None = Field(default=None, max_length=512)
    credentials: str | None = None
    # What posting replies needs (a page token, OAuth tokens, an app password, the outbound
    # webhook's URL and secret), as `apply` set it: sealed JSON; None: replies are not connected.
    reply_credentials: str | None = None
    created_at: datetime = Field(default_factory=utcnow, sa_column=_utc())
    updated_at: datetime = Field(default_factory=utcnow, sa_column=_utc())


class InteractionRow(SQLModel, table=True):
    """One platform message, kept once: platforms redeliver for far longer than NATS dedupes."""

    __tablename__ = "interaction"

    __table_args__ = (
        UniqueConstraint("tenant_id", "account_id", "external_id", "edit_version"),
        Index("ix_interaction_conversation", "conversation_id", "created_at"),
        Index("ix_interaction_account_received", "account_id", "received_at"),
    )

    id: str = Field(primary_key=True, max_length=32)
    tenant_id: str = Field(max_length=63)
    account_id: str = Field(foreign_key="account.id", max_length=63)
    external_id: str = Field(max_length=512)
    # Platforms number edits with 64-bit values (Meta's are a CRC-32 of the text).
    edit_version: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))
    kind: str = Field(max_length=16)
    direction: str = Field(max_length=16)
    thread_id: str = Field(max_length=512)
    author_id: str = Field(max_length=256)
    author_name: str = Field(default="", max_length=256)
    text: str
    url: str | None = None
    language: str | None = Field(default=None, max_length=16)
    created_at: datetime = Field(sa_column=_utc())
    received_at: datetime = Field(sa_column=_utc())
    retracted_at: datetime | None = Field(default=None, sa_column=_utc(nullable=True))
    conversation_id: str | None = Field(default=None, max_length=32)
    correlation_id: str = Field(default="", max_length=64)
    # What answering it through the platform needs (`ReplyContext` as JSON), when the platform gave it.
    reply_context: str | None = None
    sent_by: str | None = Field(default=None, max_length=63)  # the person who wrote it in the inbox


class ConversationRow(SQLModel, table=True):
    __tablename__ = "conversation"

    __table_args__ = (
        UniqueConstraint("account_id", "thread_id"),
        Index("ix_conversation_tenant_state", "tenant_id", "state"),
        Index("ix_conversation_owner_state", "owner_id", "state"),
        Index("ix_conversation_queue", "team_id", "state", "owner_id", "due_at"),
        # My work: what a person owns in due order (what they resolved has no due time: last).
        Index("ix_conversation_owner_due", "owner_id", "due_at", "id"),
        # The author card and author history: an author's conversations with a tenant, newest first.
        Index("ix_conversation_author", "tenant_id", "author_id", "opened_at"),
    )

    id: str = Field(primary_key=True, max_length=32)
    tenant_id: str = Field(foreign_key="tenant.id", max_length=63)
    account_id: str = Field(foreign_key="account.id", max_length=63)
    platform: str = Field(max_length=32)
    thread_id: str = Field(max_length=512)
    state: str = Field(max_length=16)
    team_id: str | None = Field(default=None, max_length=32)
    owner_id: str | None = Field(default=None, max_length=63)
    assignment_reason: str = Field(default="", max_length=300)
    topic: str | None = Field(default=None, max_length=63)
    priority: str = Field(default="normal", max_length=16)
    skills: str = Field(default="[]")
    sla_policy_id: str | None = Field(default=None, max_length=32)
    no_sla: bool = False
    # The weight this conversation adds to its owner's load, or 0 when it adds none
    # (not awaiting an answer, paused, or nobody owns it).
    load_weight: int = 0
    author_handle: str = Field(default="", max_length=256)
    author_followers: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    author_verified: bool = False
    author_id: str = Field(max_length=256)
    author_name: str = Field(default="", max_length=256)
    last_inbound_text: str = ""
    last_inbound_url: str | None = None
    language: str | None = Field(default=None, max_length=16)
    opened_at: datetime = Field(sa_column=_utc())
    assigned_at: datetime | None = Field(default=None, sa_column=_utc(nullable=True))
    awaiting_since: datetime | None = Field(default=None, sa_column=_utc(nullable=True))
    last_inbound_at: datetime = Field(sa_column=_utc())
    responded_at: datetime | None = Field(default=None, sa_column=_utc(nullable=True))
    paused_at: datetime | None = Field(default=None, sa_column=_utc(nullable=True))
    paused_kind: str | None = Field(default=None, max_length=32)
    paused_remaining_seconds: float | None = None  # business time left on the clock when paused
    paused_business_seconds: float = 0.0  # business time the current clock spent paused, in total
    resolved_at: datetime | None = Field(default=None, sa_column=_utc(nullable=True))
    resolve_at: datetime | None = Field(default=None, sa_column=_utc(nullable=True))
    queued_at: datetime | None = Field(default=None, sa_column=_utc(nullable=True))
    deadline_version: int = 0
    deadline_kind: str | None = Field(default=None, max_length=32)
    warn_at: datetime | None = Field(default=None, sa_column=_utc(nullable=True))
    due_at: datetime | None = Field(default=None, sa_column=_utc(nullable=True, index=True))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=_utc())


class OutboxBatchRow(SQLModel, table=True):
    """Events committed with the state that caused them, published after the commit.

    One row per routed batch holds all its messages (JSON lines of subject, id,
    payload): a crash between commit and publish only delays them, since the
    relay publishes what is left under the same deterministic `Nats-Msg-Id`s.
    """

    __tablename__ = "outboxbatch"

    id: str = Field(primary_key=True, max_length=32)
    messages: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=_utc(index=True))


class DeadlineRow(SQLModel, table=True):
    """Notify's copy of the deadline contract: the newest version of each conversation's."""

    __tablename__ = "deadline"

    __table_args__ = (Index("ix_deadline_state_due", "state", "due_at"),)

    conversation_id: str = Field(primary_key=True, max_length=32)
    tenant_id: str = Field(max_length=63)
    version: int
    kind: str | None = Field(default=None, max_length=32)
    owner_id: str | None = Field(default=None, max_length=63)
    started_at: datetime | None = Field(default=None, sa_column=_utc(nullable=True))
    warn_at: datetime | None = Field(default=None, sa_column=_utc(nullable=True))
    due_at: datetime | None = Field(default=None, sa_column=_utc(nullable=True))
    state: str = Field(max_length=16)  # armed, cleared, alerted, failed
    last_step: str | None = Field(default=None, max_length=32)  # the timeline's last alert handled
    acknowledged_at: datetime | None = Field(default=None, sa_column=_utc(nullable=True))
    acknowledged_by: str | None = Field(default=None, max_length=63)
    updated_at: datetime = Field(default_factory=utcnow, sa_column=_utc())


class AlertRow(SQLModel, table=True):
    """One alert: claimed before it is sent, so it is sent once per (conversation, version, step)."""

    __tablename__ = "alert"

    __table_args__ = (
        UniqueConstraint("conversation_id", "deadline_version", "step"),
        Index("ix_alert_status", "status"),
    )

    id: str = Field(primary_key=True, max_length=100)
    conversation_id: str = Field(max_length=32)
    deadline_version: int
    step: str = Field(max_length=32)
    tenant_id: str = Field(max_length=63)
    channel: str = Field(default="email", max_length=16)
    recipients: str = ""
    message_id: str = Field(default="", max_length=255)
    status: str = Field(max_length=16)  # sending, retrying, sent, failed
    attempts: int = 0
    lease_until: datetime | None = Field(default=None, sa_column=_utc(nullable=True))
    last_error: str = ""
    created_at: datetime = Field(default_factory=utcnow, sa_column=_utc())
    sent_at: datetime | None = Field(default=None, sa_column=_utc(nullable=True))


class ApiTokenRow(SQLModel, table=True):
    """A machine's token, scoped to one tenant and one role; only its SHA-256 is kept.

    Tokens named in the configuration (`source` "config") are written by `apply`, which
    removes those no longer named; tokens made in the API (`source` "api") are shown once,
    and only revoking them ends them."""

    __tablename__ = "apitoken"

    __table_args__ = (UniqueConstraint("tenant_id", "name"),)

    id: str = Field(primary_key=True, max_length=32)
    tenant_id: str = Field(foreign_key="tenant.id", index=True)
    name: str = Field(max_length=63)
    token_sha256: str = Field(max_length=64, unique=True)
    role: str = Field(default="tenant_admin", max_length=16)  # a role of services/api/access.py
    source: str = Field(default="config", max_length=8)  # config, api
    created_by: str = Field(default="", max_length=63)  # a person id, or "" for the configuration
    revoked_at: datetime | None = Field(default=None, sa_column=_utc(nullable=True))
    last_used_at: datetime | None = Field(default=None, sa_column=_utc(nullable=True))
    created_at: datetime = Field(default_factory=utcnow, sa_column=_utc())


class RoleGrantRow(SQLModel, table=True):
    """A role `apply` gives a person beyond what their teams make them: agency admin (every
    tenant, `tenant_id` ""), tenant admin or client viewer of one tenant. Agents and team
    leads are not granted: team membership and `lead` make them."""

    __tablename__ = "rolegrant"

    person_id: str = Field(primary_key=True, max_length=63)
    role: str = Field(primary_key=True, max_length=16)
    tenant_id: str = Field(primary_key=True, default="", max_length=63)


class LoginRow(SQLModel, table=True):
    """How a person signs in to the inbox: an argon2 hash of their password, and the count of
    failed attempts that locks the account for a while."""

    __tablename__ = "login"

    person_id: str = Field(primary_key=True, max_length=63)
    password_hash: str | None = Field(default=None, max_length=255)
    password_set_at: datetime | None = Field(default=None, sa_column=_utc(nullable=True))
    failed_attempts: int = 0
    locked_until: datetime | None = Field(default=None, sa_column=_utc(nullable=True))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=_utc())


class WebSessionRow(SQLModel, table=True):
    """A signed-in browser: only the SHA-256 of its cookie is kept, with its CSRF token."""

    __tablename__ = "websession"

    id_sha256: str = Field(primary_key=True, max_length=64)
    person_id: str = Field(index=True, max_length=63)
    csrf_token: str = Field(max_length=64)
    address: str = Field(default="", max_length=64)
    created_at: datetime = Field(default_factory=utcnow, sa_column=_utc())
    last_seen_at: datetime = Field(default_factory=utcnow, sa_column=_utc())
    expires_at: datetime = Field(sa_column=_utc(index=True))


class PasswordLinkRow(SQLModel, table=True):
    """A "set your password" link: single use, expiring; only its SHA-256 is kept."""

    __tablename__ = "passwordlink"

    token_sha256: str = Field(primary_key=True, max_length=64)
    person_id: str = Field(index=True, max_length=63)
    created_by: str = Field(default="", max_length=63)
    created_at: datetime = Field(default_factory=utcnow, sa_column=_utc())
    expires_at: datetime = Field(sa_column=_utc())
    used_at: datetime | None = Field(default=None, sa_column=_utc(nullable=True))


class LoginThrottleRow(SQLModel, table=True):
    """Failed sign-ins counted per window, per account (`person:<email>`) and per address
    (`address:<ip>`), in the database so every replica counts the same."""

    __tablename__ = "loginthrottle"

    key: str = Field(primary_key=True, max_length=400)
    window_started_at: datetime = Field(sa_column=_utc())
    attempts: int = 0


class TimelineRow(SQLModel, table=True):
    """One entry of a conversation's (or a person's) history, kept after the events stream
    forgets it: written once per event message id by the api's timeline consumer."""

    __tablename__ = "timeline"

    __table_args__ = (
        Index("ix_timeline_conversation_at", "conversation_id", "at"),
        Index("ix_timeline_tenant_at", "tenant_id", "at"),
    )

    id: str = Field(primary_key=True, max_length=200)  # the event's Nats-Msg-Id
    seq: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, index=True))  # stream order
    tenant_id: str = Field(default="", max_length=63)  # "" for a command about a person only
    conversation_id: str | None = Field(default=None, max_length=32)
    person_id: str | None = Field(default=None, max_length=63)  # whom it is about, if anyone
    at: datetime = Field(sa_column=_utc())
    kind: str = Field(max_length=40)  # the event's type, e.g. conversation.assigned
    actor: str = Field(default="", max_length=63)  # who did it: a person id, "router", "notify"
    summary: str = ""  # one sentence a person reads
    detail: str = Field(default="{}")  # the event, as JSON


class CommandOutcomeRow(SQLModel, table=True):
    """What became of each command, by its id (from `CommandApplied` and `CommandRejected`)."""

    __tablename__ = "commandoutcome"

    command_id: str = Field(primary_key=True, max_length=64)
    tenant_id: str = Field(default="", max_length=63)
    conversation_id: str | None = Field(default=None, max_length=32)
    person_id: str | None = Field(default=None, max_length=63)
    command_type: str = Field(max_length=40)
    issued_by: str = Field(max_length=63)
    outcome: str = Field(max_length=16)  # applied, rejected
    code: str = Field(default="", max_length=40)
    reason: str = ""
    at: datetime = Field(sa_column=_utc(index=True))


class PollStateRow(SQLModel, table=True):
    """Where a poller is in one feed of an account, and how that connector is doing."""

    __tablename__ = "pollstate"

    account_id: str = Field(foreign_key="account.id", primary_key=True, max_length=63)
    feed: str = Field(primary_key=True, max_length=32)  # e.g. notifications, statuses
    cursor: str | None = Field(default=None, max_length=512)
    state: str = Field(default="starting", max_length=16)  # starting, ok, failing
    consecutive_errors: int = 0
    last_error: str = ""
    last_error_at: datetime | None = Field(default=None, sa_column=_utc(nullable=True))
    last_success_at: datetime | None = Field(default=None, sa_column=_utc(nullable=True))
    last_event_at: datetime | None = Field(default=None, sa_column=_utc(nullable=True))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=_utc())


class PushSubscriptionRow(SQLModel, table=True):
    """A browser's Web Push subscription for one person (registered over HTTP with notify)."""

    __tablename__ = "pushsubscription"

    __table_args__ = (UniqueConstraint("endpoint"),)

    id: str = Field(primary_key=True, max_length=32)
    person_id: str = Field(foreign_key="person.id", index=True, max_length=63)
    endpoint: str = Field(max_length=1024)
    p256dh: str = Field(max_length=256)
    auth: str = Field(max_length=64)
    created_at: datetime = Field(default_factory=utcnow, sa_column=_utc())


class PushLinkRow(SQLModel, table=True):
    """A person's push links: each names the generation it was issued in, and `stayhuman push
    revoke` moves the generation on, so every link issued before stops working."""

    __tablename__ = "pushlink"

    person_id: str = Field(foreign_key="person.id", primary_key=True, max_length=63)
    generation: int = 0
    revoked_at: datetime | None = Field(default=None, sa_column=_utc(nullable=True))


class DeliveryRow(SQLModel, table=True):
    """The delivery log: one alert to one person on one channel (queued, sent, retrying, failed)."""

    __tablename__ = "delivery"

    __table_args__ = (Index("ix_delivery_conversation_status", "conversation_id", "status"),)

    id: str = Field(primary_key=True, max_length=200)  # <alert id>|<channel>|<person>
    alert_id: str = Field(max_length=100, index=True)
    conversation_id: str = Field(max_length=32)
    deadline_version: int
    step: str = Field(max_length=32)
    tenant_id: str = Field(max_length=63)
    channel: str = Field(max_length=16)  # email, push, apprise
    person_id: str = Field(max_length=63)
    status: str = Field(max_length=16)
    attempts: int = 0
    lease_until: datetime | None = Field(default=None, sa_column=_utc(nullable=True))
    last_error: str = ""
    detail: str = ""  # what was sent: the email's Message-ID, how many push endpoints took it
    created_at: datetime = Field(default_factory=utcnow, sa_column=_utc())
    sent_at: datetime | None = Field(default=None, sa_column=_utc(nullable=True))


class ProcessedCommandRow(SQLModel, table=True):
    """Commands the router has applied, by id: a redelivered command is applied once."""

    __tablename__ = "processedcommand"

    id: str = Field(primary_key=True, max_length=64)
    processed_at: datetime = Field(sa_column=_utc(index=True))


class NotifyOutboxRow(SQLModel, table=True):
    """Alert events notify committed with the delivery state that caused them, published after
    the commit; what a failed publish leaves here notify's relay publishes again under the same
    `Nats-Msg-Id`s."""

    __tablename__ = "notifyoutbox"

    id: str = Field(primary_key=True, max_length=64)
    messages: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=_utc(index=True))


class AppliedConfigurationRow(SQLModel, table=True):
    """The configuration file one tenant's version came from: written by `stayhuman apply` for
    each tenant whose `config_version` it moved on, and read (never changed) in the inbox.

    `yaml` is a configuration file of that one tenant, as `apply` takes it: the people its
    configuration names (as the file defined them) and the tenant's own part, every secret
    (webhook secrets, access tokens, API tokens, Apprise URLs) replaced by `<redacted>`."""

    __tablename__ = "appliedconfiguration"

    tenant_id: str = Field(primary_key=True, max_length=63)
    config_version: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    yaml: str = Field(sa_column=Column(Text, nullable=False))
    applied_at: datetime = Field(default_factory=utcnow, sa_column=_utc())


class ReplyRow(SQLModel, table=True):
    """A reply a person wrote in the inbox: recorded before it is posted, so it is posted at most
    once (`id` is its command's id, the idempotency key) and never lost without a trace."""

    __tablename__ = "reply"

    __table_args__ = (
        Index("ix_reply_conversation", "conversation_id", "requested_at"),
        Index("ix_reply_state", "state", "updated_at"),
        Index("ix_reply_platform_id", "account_id", "platform_id"),
    )

    id: str = Field(primary_key=True, max_length=64)
    tenant_id: str = Field(max_length=63)
    conversation_id: str = Field(max_length=32)
    account_id: str = Field(max_length=63)
    platform: str = Field(max_length=32)
    person_id: str = Field(max_length=63)
    text: str = Field(sa_column=Column(Text, nullable=False))
    reply_to: str = Field(max_length=32)  # the interaction it answers
    target: str = Field(max_length=512)  # the platform's id of what it answers
    thread_id: str = Field(max_length=512)  # the platform's thread it answers in
    method: str = Field(max_length=32)
    tag: str | None = Field(default=None, max_length=32)
    key: str = Field(max_length=64)  # what the platform dedupes on: Idempotency-Key, record key
    state: str = Field(max_length=16)  # sending, sent, failed, in_doubt
    attempts: int = 0
    platform_id: str | None = Field(default=None, max_length=512)
    url: str | None = Field(default=None, max_length=2048)
    error: str = Field(default="", max_length=1000)
    requested_at: datetime = Field(sa_column=_utc())
    started_at: datetime | None = Field(default=None, sa_column=_utc(nullable=True))
    sent_at: datetime | None = Field(default=None, sa_column=_utc(nullable=True))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=_utc())


class ReplyTokenRow(SQLModel, table=True):
    """Reply credentials as the outbound service last refreshed them (sealed JSON), kept while
    `apply` gives the account the same ones (`source_sha256`); `failing` says they stopped working."""

    __tablename__ = "replytoken"

    account_id: str = Field(primary_key=True, max_length=63)
    source_sha256: str = Field(max_length=64)
    credentials: str = Field(sa_column=Column(Text, nullable=False))
    expires_at: datetime | None = Field(default=None, sa_column=_utc(nullable=True))
    failing: str = Field(default="", max_length=1000)  # "": working; else what the platform said
    updated_at: datetime = Field(default_factory=utcnow, sa_column=_utc())
