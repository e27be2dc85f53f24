"""`stayhuman apply -f FILE.yaml`: tenants, accounts, teams, people and roles, SLA targets, routing, alerts.

Validation happens completely before anything is written, and the write is one
transaction: an invalid file changes nothing. Applying the same file twice is a
no-op. Things absent from the file are left as they are, unless `prune` asks to
remove what a tenant of the file no longer has. What the router must act on (an
owner removed or deactivated, a person whose availability changed, deadlines to
recompute) is queued as commands in the outbox, in the same transaction.

Each tenant whose configuration version an apply moves on keeps the file it came from
(`AppliedConfigurationRow`): a configuration file of that one tenant, with the people its
configuration names, every secret replaced by `<redacted>`. The inbox shows it read-only.
"""

import json
import os
import re
import uuid
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    EmailStr,
    Field,
    HttpUrl,
    PrivateAttr,
    ValidationError,
    model_validator,
)
from sqlalchemy import delete, update
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.notify.chain import Chain, ChainError, Target
from services.router.topics import PRIORITIES, Rule, RuleError
from shared import ids
from shared.businesstime import BusinessCalendar, CalendarError
from shared.commands import AnyCommand, CheckAvailability, HandOver, Recompute
from shared.db.models import (
    AccountRow,
    ApiTokenRow,
    AppliedConfigurationRow,
    CalendarRow,
    ContinuityRow,
    ConversationRow,
    InteractionRow,
    PersonRow,
    PollStateRow,
    RoleGrantRow,
    SlaPolicyRow,
    TeamMemberRow,
    TeamRow,
    TenantRow,
    TopicRow,
)
from shared.db.session import transaction
from shared.durations import parse_duration
from shared.events import Platform, utcnow
from shared.outbox import add_outbox, command_outgoing
from shared.secrets import PREFIX, SecretBox
from shared.settings import CommonSettings, load_settings

Slug = Annotated[str, Field(pattern=ids.SLUG_PATTERN)]
LanguageCode = Annotated[str, Field(pattern=r"^[A-Za-z]{2,8}([-_][A-Za-z0-9]{1,8})*$")]
POLLED_PLATFORMS = {Platform.mastodon, Platform.bluesky, Platform.youtube}


def _duration(value: object) -> object:
    return parse_duration(value) if isinstance(value, str) else value


def _priority(value: str) -> str:
    if value not in PRIORITIES:
        raise ValueError(f"{value!r} is not a priority; use one of {', '.join(PRIORITIES)}")
    return value


DurationText = Annotated[timedelta, BeforeValidator(_duration)]
Priority = Annotated[str, AfterValidator(_priority)]

ALERT_KINDS = ("assigned", "warning", "breach", "escalation")
CHANNELS = ("email", "push", "apprise")
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S+")
_CLOCK = re.compile(r"(\d{1,2}):([0-5]\d)")


def _alert_kind(value: str) -> str:
    if value not in ALERT_KINDS:
        raise ValueError(f"{value!r} is not an alert kind; use one of {', '.join(ALERT_KINDS)}")
    return value


def _channel(value: str) -> str:
    if value not in CHANNELS:
        raise ValueError(f"{value!r} is not a channel; use one of {', '.join(CHANNELS)}")
    return value


def _channels(value: list[str]) -> list[str]:
    if not value:
        raise ValueError(f"name at least one of {', '.join(CHANNELS)} (leave the kind out for email)")
    if twice := _duplicates(value):
        raise ValueError(f"{twice[0]!r} is named twice")
    return value


def _apprise_url(value: str) -> str:
    # Never echo the value: it usually holds a token, often from the environment.
    if not _URL.fullmatch(value):
        raise ValueError("not an Apprise URL such as ntfy://ntfy.sh/topic (scheme://...)")
    return value


def _clock(value: object) -> str:
    """An "HH:MM" time of day, as a calendar's hours are written; stored as HH:MM."""
    if isinstance(value, int) and not isinstance(value, bool):
        # YAML 1.1 reads an unquoted 22:00 as the number 1320.
        hours, minutes = divmod(value, 60)
        raise ValueError(f"{value!r} is not a time HH:MM (quote times in YAML: '{hours:02d}:{minutes:02d}')")
    match = _CLOCK.fullmatch(value) if isinstance(value, str) else None
    if match is None or int(match[1]) > 23:
        raise ValueError(f"{value!r} is not a time HH:MM")
    return f"{int(match[1]):02d}:{match[2]}"


AlertKind = Annotated[str, AfterValidator(_alert_kind)]
Channels = Annotated[list[Annotated[str, AfterValidator(_channel)]], AfterValidator(_channels)]
AppriseUrl = Annotated[str, Field(max_length=4096), AfterValidator(_apprise_url)]
Clock = Annotated[str, BeforeValidator(_clock)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OutOfOfficeSpec(_Strict):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    starts: AwareDatetime = Field(alias="from", description="With its UTC offset: 2026-12-20T00:00:00+01:00.")
    until: AwareDatetime
    substitute: Slug | None = Field(default=None, description="Who takes their conversations meanwhile.")

    @model_validator(mode="after")
    def _ends_after_it_starts(self) -> "OutOfOfficeSpec":
        if self.until <= self.starts:
            raise ValueError("until must be later than from")
        return self


class QuietHoursSpec(_Strict):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    starts: Clock = Field(alias="from", description="HH:MM in the person's timezone, quoted.")
    until: Clock = Field(description="May be earlier than from: the quiet hours wrap midnight.")

    @model_validator(mode="after")
    def _not_empty(self) -> "QuietHoursSpec":
        if self.starts == self.until:
            raise ValueError("from and until are the same time")
        return self


class PersonSpec(_Strict):
    id: Slug
    name: str = Field(min_length=1, max_length=200)
    email: EmailStr
    skills: list[Slug] = Field(default_factory=list)
    languages: list[LanguageCode] = Field(default_factory=list)
    capacity: int = Field(default=20, ge=1, description="Conversations awaiting their answer at once.")
    priority_weights: dict[Priority, Annotated[int, Field(ge=1)]] = Field(default_factory=dict)
    timezone: str = Field(default="UTC", min_length=1, max_length=64)
    working_hours: dict[str, Any] | None = Field(default=None, description="Absent: always on shift.")
    out_of_office: OutOfOfficeSpec | None = None
    active: bool = True
    notify: dict[AlertKind, Channels] = Field(
        default_factory=dict, description="Channels per alert kind; a kind left out: email."
    )
    apprise: list[AppriseUrl] = Field(
        default_factory=list, description="Apprise URLs for channel apprise; write secret ones as ${ENV_VAR}."
    )
    quiet_hours: QuietHoursSpec | None = Field(
        default=None, description="Alerts meanwhile go to the next person of the chain."
    )


class TargetsSpec(_Strict):
    first_response: DurationText | None = None
    next_response: DurationText | None = None
    resolution: DurationText | None = None

    @model_validator(mode="after")
    def _names_a_target(self) -> "TargetsSpec":
        if self.first_response is None and self.next_response is None and self.resolution is None:
            raise ValueError("name at least one of first_response, next_response, resolution")
        return self


class HighReachSpec(_Strict):
    followers: int = Field(ge=1)
    bump: int = Field(default=1, ge=0, le=3)


class SlaSpec(_Strict):
    name: Slug
    first_response: DurationText
    next_response: DurationText | None = None
    resolution: DurationText | None = None
    warn_before: DurationText | None = None
    calendar: Slug | None = Field(default=None, description="Absent: the clock runs around the clock.")
    priorities: dict[Priority, TargetsSpec] = Field(default_factory=dict)
    vip_bump: int = Field(default=1, ge=0, le=3)
    high_reach: HighReachSpec | None = None


class HolidaysSpec(_Strict):
    country: str = Field(min_length=2, max_length=8)
    subdivision: str | None = Field(default=None, min_length=1, max_length=16)


class CalendarSpec(_Strict):
    name: Slug
    timezone: str = Field(min_length=1, max_length=64)
    hours: dict[str, Any] | None = Field(default=None, description="Absent: open around the clock.")
    holidays: HolidaysSpec | None = None
    closed_days: list[date] = Field(default_factory=list)


class TeamSpec(_Strict):
    id: Slug
    name: str = Field(min_length=1, max_length=200)
    sla_policy: Slug | None = None
    lead: Slug | None = None
    members: list[Slug] = Field(default_factory=list)


class TopicSpec(_Strict):
    name: Slug
    default: bool = False
    match: dict[str, Any] | None = Field(default=None, description="Absent: matches everything.")
    team: Slug | None = None
    priority: Priority = "normal"
    sla_policy: Slug | None = Field(default=None, description="Absent: the team's policy applies.")
    no_sla: bool = False
    skills: list[Slug] = Field(default_factory=list)
    escalation: Any = Field(default=None, description="A list of steps; absent: the tenant's chain.")


def _http_url(value: str) -> str:
    # Never echo the value: a URL may carry a token, often from the environment.
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 (a port that is no number raises here)
    except ValueError:
        raise ValueError("not an http or https URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in value):
        raise ValueError("not an http or https URL")
    return value


ReplyToken = Annotated[str, Field(min_length=8, max_length=4096)]
ReplyUrl = Annotated[str, Field(max_length=2048), AfterValidator(_http_url)]
# Kept without a trailing slash, as an account's api_base_url is: the clients append paths.
BaseUrl = Annotated[ReplyUrl, AfterValidator(lambda url: url.rstrip("/"))]
# What the inbox posts with, per platform: the keys its reply block needs, then those it may have.
REPLY_KEYS: dict[Platform, tuple[tuple[str, ...], tuple[str, ...]]] = {
    Platform.facebook: (("page_access_token",), ("api_base_url",)),
    Platform.instagram: (("page_access_token",), ("api_base_url",)),
    Platform.x: (
        ("access_token", "refresh_token", "client_id"),
        ("client_secret", "api_base_url", "token_url"),
    ),
    Platform.youtube: (
        ("access_token", "refresh_token", "client_id", "client_secret"),
        ("api_base_url", "token_url"),
    ),
    Platform.mastodon: (("access_token",), ("api_base_url",)),
    Platform.bluesky: (("identifier", "app_password"), ("api_base_url",)),
    Platform.other: (("url", "secret"), ()),
}
# Redacted in the file kept per tenant; the rest (ids, a handle, URLs without credentials) is not.
REPLY_SECRETS = (
    "page_access_token",
    "access_token",
    "refresh_token",
    "client_secret",
    "app_password",
    "secret",
)
REPLY_URLS = ("api_base_url", "token_url", "url")


class ReplySpec(_Strict):
    """What posting an account's replies takes; which keys depends on its platform (REPLY_KEYS).
    Write the secrets as ${ENV_VAR}."""

    page_access_token: ReplyToken | None = Field(default=None, description="facebook, instagram: the Page's.")
    access_token: ReplyToken | None = Field(default=None, description="x, youtube: OAuth 2.0; mastodon.")
    refresh_token: ReplyToken | None = Field(default=None, description="x, youtube: OAuth 2.0.")
    client_id: str | None = Field(default=None, min_length=1, max_length=512, description="x, youtube.")
    client_secret: ReplyToken | None = Field(
        default=None, description="youtube; x for a confidential client."
    )
    identifier: str | None = Field(
        default=None, min_length=1, max_length=2048, description="bluesky: the handle or DID."
    )
    app_password: ReplyToken | None = Field(default=None, description="bluesky.")
    url: ReplyUrl | None = Field(default=None, description="other: the endpoint the replies are posted to.")
    secret: str | None = Field(
        default=None, min_length=16, max_length=512, description="other: signs what is posted to url."
    )
    api_base_url: BaseUrl | None = Field(default=None, description="Absent: the platform's own.")
    token_url: ReplyUrl | None = Field(default=None, description="x, youtube: absent, the platform's own.")

    def given(self) -> dict[str, str]:
        """The keys the block gives, with their values (variables substituted)."""
        given: dict[str, str] = self.model_dump(exclude_none=True)
        return given


def _takes(platform: Platform) -> str:
    required, optional = REPLY_KEYS[platform]
    takes = " and ".join(", ".join(required).rsplit(", ", 1))
    return f"{takes} (optionally {', '.join(optional)})" if optional else takes


class AccountSpec(_Strict):
    id: Slug
    platform: Platform
    handle: str = Field(min_length=1, max_length=200)
    team: Slug
    webhook_secret: str | None = Field(
        default=None,
        min_length=16,
        max_length=512,
        description="Signs the generic webhook; without one the account takes none (platform other needs one).",
    )
    external_id: str | None = Field(
        default=None, min_length=1, max_length=128, description="The platform's id of this page or user."
    )
    api_base_url: HttpUrl | None = Field(default=None, description="Polled platforms: the API's base URL.")
    access_token: str | None = Field(
        default=None, min_length=8, max_length=4096, description="Polled platforms: write it as ${ENV_VAR}."
    )
    reply: ReplySpec | None = Field(
        default=None,
        description="What answering from the inbox posts with; absent: replies are not connected.",
    )

    @model_validator(mode="after")
    def _generic_accounts_have_a_secret(self) -> "AccountSpec":
        if self.platform is Platform.other and self.webhook_secret is None:
            raise ValueError(
                "a platform: other account receives the generic webhook: give it a webhook_secret "
                "(16 characters or more, written as ${ENV_VAR})"
            )
        return self

    @model_validator(mode="after")
    def _polled_accounts_are_complete(self) -> "AccountSpec":
        if self.platform in POLLED_PLATFORMS and self.access_token is not None:
            missing = [name for name in ("api_base_url", "external_id") if getattr(self, name) is None]
            if missing:
                raise ValueError(f"a polled {self.platform.value} account needs {' and '.join(missing)} too")
        return self

    def reply_problems(self) -> list[str]:
        """What the reply block lacks or has that this platform does not use, each as
        `reply.<key>: problem` (never a value: they are secrets)."""
        if self.reply is None:
            return []
        required, optional = REPLY_KEYS[self.platform]
        given = self.reply.given()
        account = f"a platform: {self.platform.value} account"
        problems = []
        for key in ReplySpec.model_fields:
            if key in given and key not in (*required, *optional):
                problems.append(
                    f"reply.{key}: {account} does not use {key}; its replies take {_takes(self.platform)}"
                )
            elif key in required and key not in given:
                problems.append(f"reply.{key}: missing; {account} replies with {_takes(self.platform)}")
        if (
            self.platform is Platform.mastodon
            and self.reply.api_base_url is None
            and self.api_base_url is None
        ):
            problems.append(
                f"reply.api_base_url: missing; {account} replies on its instance: give the instance's URL"
                " here or as the account's api_base_url"
            )
        return problems


class ApiTokenSpec(_Strict):
    name: Slug
    token: str = Field(min_length=24, max_length=512, description="Write it as ${ENV_VAR}.")
    role: Literal["tenant_admin", "client_viewer"] = Field(
        default="tenant_admin",
        description="tenant_admin: everything a tenant admin may do in the tenant; client_viewer: reports.",
    )


class TenantSpec(_Strict):
    id: Slug
    name: str = Field(min_length=1, max_length=200)
    vip: list[Annotated[str, Field(min_length=1, max_length=256)]] = Field(
        default_factory=list, description="Author ids or handles whose conversations rank higher."
    )
    auto_resolve_after: DurationText | None = Field(
        default=None, description="A responded conversation quiet this long resolves; absent: never."
    )
    manager: Slug | None = Field(default=None, description="A person: the escalation target manager.")
    escalation: Any = Field(
        default=None, description="Steps: who is alerted after a breach (services/notify/chain.py)."
    )
    calendars: list[CalendarSpec] = Field(default_factory=list)
    sla_policies: list[SlaSpec] = Field(default_factory=list)
    teams: list[TeamSpec] = Field(default_factory=list)
    topics: list[TopicSpec] = Field(default_factory=list)
    accounts: list[AccountSpec] = Field(default_factory=list)
    api_tokens: list[ApiTokenSpec] = Field(default_factory=list)
    admins: list[Slug] = Field(
        default_factory=list,
        description="People who administer this tenant in the inbox. Given, the list is the whole of "
        "them: an admin it no longer names stops being one; left out, they stay (--prune: none).",
    )
    viewers: list[Slug] = Field(
        default_factory=list,
        description="Client viewers: people who see this tenant's reports, never its conversations. "
        "Given or left out like admins.",
    )


class ConfigDocument(_Strict):
    # The mapping the file was read into (variables substituted), in the file's order: what
    # is kept of each tenant. None for a document made in code: its own dump is kept instead.
    _source: dict[str, Any] | None = PrivateAttr(default=None)

    agency_admins: list[Slug] = Field(
        default_factory=list,
        description="People who administer every tenant. Given, the list is the whole of them; "
        "left out (a file of one tenant), the agency admins stay as they are, even with --prune.",
    )
    people: list[PersonSpec] = Field(default_factory=list)
    tenants: list[TenantSpec] = Field(default_factory=list)

    @classmethod
    def read(cls, raw: dict[str, Any]) -> "ConfigDocument":
        """The document of a file's mapping, remembering the mapping as it was written."""
        document = cls.model_validate(raw)
        document._source = raw
        return document

    def source(self) -> dict[str, Any]:
        """The mapping as the file gave it (or, made in code, as the document dumps)."""
        if self._source is not None:
            return self._source
        dumped: dict[str, Any] = self.model_dump(mode="json", by_alias=True, exclude_unset=True)
        return dumped


class ConfigError(ValueError):
    """An invalid configuration file; each problem names the file and the path inside it."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def _path(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        if part == "[key]":  # pydantic's marker for a bad mapping key: the key itself names the place
            continue
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _expand(node: Any, loc: tuple[int | str, ...], problems: list[str], source: str) -> Any:
    """Replace `${NAME}` with the environment variable, so secrets stay out of the file."""
    if isinstance(node, dict):
        return {k: _expand(v, (*loc, k), problems, source) for k, v in node.items()}
    if isinstance(node, list):
        return [_expand(v, (*loc, i), problems, source) for i, v in enumerate(node)]
    if isinstance(node, str):

        def substitute(match: re.Match[str]) -> str:
            value = os.environ.get(match.group(1))
            if value is None:
                problems.append(f"{source}: {_path(loc)}: environment variable {match.group(1)} is not set")
                return ""
            return value

        return _ENV.sub(substitute, node)
    return node


# The largest configuration file apply takes: one file of a large agency is far smaller.
MAX_CONFIG_BYTES = 4 * 1024 * 1024


def _too_large(source: str, size: int) -> ConfigError:
    return ConfigError(
        [
            f"{source}: (top level): the file has {size} bytes, more than the {MAX_CONFIG_BYTES} "
            "a configuration may have; split it into files of fewer tenants"
        ]
    )


def parse_config(text: str, *, source: str) -> ConfigDocument:
    if (size := len(text.encode(errors="replace"))) > MAX_CONFIG_BYTES:
        raise _too_large(source, size)
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError([f"{source}: not valid YAML: {error}"]) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError([f"{source}: (top level): expected a mapping with people and tenants"])
    problems: list[str] = []
    raw = _expand(raw, (), problems, source)
    try:
        document = ConfigDocument.read(raw)
    except ValidationError as error:
        problems.extend(
            f"{source}: {_path(item['loc'])}: {item['msg'].removeprefix('Value error, ')}"
            for item in error.errors()
        )
        raise ConfigError(problems) from None
    if problems:
        raise ConfigError(problems)
    return document


def load_config(path: Path) -> ConfigDocument:
    try:
        if (size := path.stat().st_size) > MAX_CONFIG_BYTES:
            raise _too_large(str(path), size)
        text = path.read_text()
    except OSError as error:
        raise ConfigError([f"{path}: cannot read: {error.strerror}"]) from None
    return parse_config(text, source=str(path))


def _duplicates(values: list[str]) -> list[str]:
    return sorted({value for value in values if values.count(value) > 1})


# CalendarError messages start with the parameter at fault; these are its names in the file.
_CALENDAR_KEYS = {"holidays_country": "holidays.country", "holidays_subdivision": "holidays.subdivision"}


def _calendar_problem(where: str, error: CalendarError, *, hours_key: str) -> str:
    """`where.key...: problem`, with the calendar's parameter names translated to the file's."""
    message = str(error)
    keys = {**_CALENDAR_KEYS, "hours": hours_key}
    for key, written in keys.items():
        if message.startswith((f"{key}:", f"{key}.", f"{key}[")):
            return f"{where}.{written}{message.removeprefix(key)}"
    if message.startswith(("timezone:", "closed_days")):
        return f"{where}.{message}"
    return f"{where}: {message}"


def _parse_calendar(
    where: str,
    problems: list[str],
    *,
    timezone: str,
    hours: dict[str, Any] | None,
    hours_key: str,
    holidays: HolidaysSpec | None = None,
    closed_days: list[date] | None = None,
) -> None:
    try:
        calendar = BusinessCalendar.parse(
            timezone=timezone,
            hours=hours,
            holidays_country=holidays.country if holidays else None,
            holidays_subdivision=holidays.subdivision if holidays else None,
            closed_days=closed_days or (),
        )
    except CalendarError as error:
        problems.append(_calendar_problem(where, error, hours_key=hours_key))
        return
    if not any(calendar.hours):
        problems.append(f"{where}.{hours_key}: no weekday has hours, so it would never be open")


def _check_people(document: ConfigDocument, source: str, people: set[str], problems: list[str]) -> None:
    for pi, person in enumerate(document.people):
        where = f"{source}: people[{pi}]"
        _parse_calendar(
            where, problems, timezone=person.timezone, hours=person.working_hours, hours_key="working_hours"
        )
        substitute = person.out_of_office.substitute if person.out_of_office else None
        if substitute == person.id:
            problems.append(
                f"{where}.out_of_office.substitute: {person.id!r} cannot substitute for themselves"
            )
        elif substitute is not None and substitute not in people:
            problems.append(f"{where}.out_of_office.substitute: no person {substitute!r}")
        if not person.apprise:
            for kind, channels in person.notify.items():
                if "apprise" in channels:
                    problems.append(f"{where}.notify.{kind}: channel apprise needs a URL under apprise")


def _check_topics(
    tenant: TenantSpec, where: str, *, teams: set[str], policies: set[str], problems: list[str]
) -> None:
    defaults = [i for i, topic in enumerate(tenant.topics) if topic.default]
    if len(defaults) > 1:
        listed = ", ".join(f"topics[{i}]" for i in defaults)
        problems.append(f"{where}.topics: only one topic may be the default; {listed} all say default: true")
    for dup in _duplicates([topic.name for topic in tenant.topics]):
        problems.append(f"{where}.topics: {dup!r} is defined twice")
    for i, topic in enumerate(tenant.topics):
        at = f"{where}.topics[{i}]"
        if topic.default and topic.match is not None:
            problems.append(f"{at}.match: the default topic takes what no other topic matched; remove match")
        elif topic.match is not None:
            try:
                Rule.parse(topic.match)
            except RuleError as error:
                problems.append(f"{at}.match.{error}")
        if topic.team is None and not topic.no_sla:
            problems.append(f"{at}.team: a topic needs a team (only a no_sla topic may go without one)")
        elif topic.team is not None and topic.team not in teams:
            problems.append(f"{at}.team: no team {topic.team!r} in tenant {tenant.id!r}")
        if topic.sla_policy is not None and topic.no_sla:
            problems.append(f"{at}.sla_policy: a no_sla topic has no SLA; remove sla_policy or no_sla")
        elif topic.sla_policy is not None and topic.sla_policy not in policies:
            problems.append(f"{at}.sla_policy: no SLA policy {topic.sla_policy!r} in tenant {tenant.id!r}")


def _check_tenant(tenant: TenantSpec, where: str, people: set[str], problems: list[str]) -> None:
    for kind, names in (
        ("calendars", [c.name for c in tenant.calendars]),
        ("sla_policies", [p.name for p in tenant.sla_policies]),
        ("teams", [t.id for t in tenant.teams]),
        ("api_tokens", [t.name for t in tenant.api_tokens]),
    ):
        for dup in _duplicates(names):
            problems.append(f"{where}.{kind}: {dup!r} is defined twice")
    calendars = {calendar.name for calendar in tenant.calendars}
    policies = {policy.name for policy in tenant.sla_policies}
    teams = {team.id for team in tenant.teams}
    for ci, calendar in enumerate(tenant.calendars):
        _parse_calendar(
            f"{where}.calendars[{ci}]",
            problems,
            timezone=calendar.timezone,
            hours=calendar.hours,
            hours_key="hours",
            holidays=calendar.holidays,
            closed_days=calendar.closed_days,
        )
    for si, policy in enumerate(tenant.sla_policies):
        if policy.calendar is not None and policy.calendar not in calendars:
            problems.append(
                f"{where}.sla_policies[{si}].calendar: no calendar {policy.calendar!r} in tenant {tenant.id!r}"
            )
    for mi, team in enumerate(tenant.teams):
        at = f"{where}.teams[{mi}]"
        if team.sla_policy and team.sla_policy not in policies:
            problems.append(f"{at}.sla_policy: no SLA policy {team.sla_policy!r} in tenant {tenant.id!r}")
        # A lead need not be a member: a supervisor who takes no conversations may lead.
        if team.lead is not None and team.lead not in people:
            problems.append(f"{at}.lead: no person {team.lead!r}")
        for pi, member in enumerate(team.members):
            if member not in people:
                problems.append(f"{at}.members[{pi}]: no person {member!r}")
    _check_topics(tenant, where, teams=teams, policies=policies, problems=problems)
    for kind, named in (("admins", tenant.admins), ("viewers", tenant.viewers)):
        _check_named(f"{where}.{kind}", named, people, problems)
    for ai, account in enumerate(tenant.accounts):
        if account.team not in teams:
            problems.append(f"{where}.accounts[{ai}].team: no team {account.team!r} in tenant {tenant.id!r}")
        problems.extend(f"{where}.accounts[{ai}].{problem}" for problem in account.reply_problems())


def _check_named(where: str, named: list[str], people: set[str], problems: list[str]) -> None:
    """A list of people a role is granted to: each one exists, and is named once."""
    for dup in _duplicates(named):
        problems.append(f"{where}: {dup!r} is named twice")
    for pi, person_id in enumerate(named):
        if person_id not in people:
            problems.append(f"{where}[{pi}]: no person {person_id!r}")


def _check_token_values(document: ConfigDocument, source: str, problems: list[str]) -> None:
    """Every token of the file has its own value (only its SHA-256 is stored, and identifies it)."""
    first: dict[str, str] = {}
    for ti, tenant in enumerate(document.tenants):
        for ki, token in enumerate(tenant.api_tokens):
            where = f"tenants[{ti}].api_tokens[{ki}]"
            if token.token in first:
                problems.append(
                    f"{source}: {where}.token: the same value as {first[token.token]}; every token needs its own"
                )
            else:
                first[token.token] = where


def _parse_chain(raw: Any, path: str, source: str, problems: list[str]) -> Chain:
    try:
        return Chain.parse(raw, where=path)
    except ChainError as error:
        problems.append(f"{source}: {error}")
        return Chain()


def _check_escalation(
    tenant: TenantSpec, path: str, source: str, people: set[str], problems: list[str]
) -> None:
    """The tenant's chain and its topics' own: valid, and the people they name exist."""
    if tenant.manager is not None and tenant.manager not in people:
        problems.append(f"{source}: {path}.manager: no person {tenant.manager!r}")
    chains = [(f"{path}.escalation", tenant.escalation)]
    chains += [(f"{path}.topics[{i}].escalation", topic.escalation) for i, topic in enumerate(tenant.topics)]
    for where, raw in chains:
        for si, step in enumerate(_parse_chain(raw, where, source, problems).steps):
            if step.notify is Target.person and step.person_id not in people:
                problems.append(f"{source}: {where}[{si}].person: no person {step.person_id!r}")
            if step.notify is Target.manager and tenant.manager is None:
                problems.append(
                    f"{source}: {where}[{si}].notify: tenant {tenant.id!r} names no manager to notify"
                )


def _chain_people(tenant: TenantSpec) -> list[str | None]:
    """The people a tenant's chains name, of those that parse (cross_check reports the rest)."""
    named: list[str | None] = [tenant.manager]
    for raw in [tenant.escalation, *(topic.escalation for topic in tenant.topics)]:
        named += [step.person_id for step in _parse_chain(raw, "", "", []).steps]
    return named


def cross_check(document: ConfigDocument, *, source: str, known_people: set[str]) -> None:
    """What the schema alone cannot tell: references resolve, names are unique, calendars and
    topic rules are usable. Raises one ConfigError listing every problem."""
    problems: list[str] = []
    people = {person.id for person in document.people} | known_people
    for dup in _duplicates([p.id for p in document.people]):
        problems.append(f"{source}: people: {dup!r} is defined twice")
    for dup in _duplicates([t.id for t in document.tenants]):
        problems.append(f"{source}: tenants: {dup!r} is defined twice")
    all_accounts = [a.id for t in document.tenants for a in t.accounts]
    for dup in _duplicates(all_accounts):
        problems.append(f"{source}: tenants: account {dup!r} is defined twice")
    _check_people(document, source, people, problems)
    _check_named(f"{source}: agency_admins", document.agency_admins, people, problems)
    for ti, tenant in enumerate(document.tenants):
        _check_tenant(tenant, f"{source}: tenants[{ti}]", people, problems)
        _check_escalation(tenant, f"tenants[{ti}]", source, people, problems)
    _check_token_values(document, source, problems)
    if problems:
        raise ConfigError(problems)


@dataclass
class Summary:
    created: dict[str, int] = field(default_factory=dict)
    updated: dict[str, int] = field(default_factory=dict)
    removed: dict[str, int] = field(default_factory=dict)
    kept: dict[str, int] = field(default_factory=dict)  # absent from the file, left because not pruning
    commands: int = 0  # queued for the router
    versions: dict[str, int] = field(default_factory=dict)  # tenants whose configuration changed, now at

    def count(self, kind: str, created: bool, n: int = 1) -> None:
        target = self.created if created else self.updated
        target[kind] = target.get(kind, 0) + n

    def __str__(self) -> str:
        def render(counts: dict[str, int]) -> str:
            return ", ".join(f"{n} {_kind(kind, n)}" for kind, n in sorted(counts.items())) or "nothing"

        parts = [f"created {render(self.created)}", f"updated {render(self.updated)}"]
        if self.removed:
            parts.append(f"removed {render(self.removed)}")
        if self.commands:
            parts.append(f"queued {self.commands} command{'s' * (self.commands != 1)} for the router")
        if self.kept:
            parts.append(f"kept {render(self.kept)} that the file no longer has (--prune removes them)")
        if self.versions:
            now_at = ", ".join(f"{tenant} {version}" for tenant, version in sorted(self.versions.items()))
            parts.append(f"configuration version {now_at}")
        return "; ".join(parts)

    def changes(self) -> tuple[dict[str, int], ...]:
        """What was written so far (kept rows write nothing): compared before and after a tenant."""
        return dict(self.created), dict(self.updated), dict(self.removed)


# What the summary counts, in the plural (its keys) and in the singular.
_SINGULAR = {
    "API tokens": "API token",
    "SLA policies": "SLA policy",
    "accounts": "account",
    "calendars": "calendar",
    "people": "person",
    "role grants": "role grant",
    "team memberships": "team membership",
    "teams": "team",
    "tenants": "tenant",
    "topics": "topic",
}


def _kind(kind: str, n: int) -> str:
    return _SINGULAR.get(kind, kind) if n == 1 else kind


# A change to any of these may put a person on or off duty, or let them take more or other work.
AVAILABILITY_FIELDS = frozenset(
    {
        "skills",
        "languages",
        "capacity",
        "priority_weights",
        "timezone",
        "working_hours",
        "out_of_office_from",
        "out_of_office_until",
        "substitute_id",
        "active",
    }
)


class _Commands:
    """What the router must do about this apply, each asked once.

    Command ids are new for every apply, not derived from the change: a second
    hand-over of the same person within the stream's duplicate window would
    otherwise be dropped, while a redundant one is harmless (the router re-reads)."""

    def __init__(self) -> None:
        self.correlation_id = f"apply-{uuid.uuid4().hex[:16]}"
        self._pending: dict[tuple[str, ...], AnyCommand] = {}

    def _add(self, key: tuple[str, ...], command: AnyCommand) -> None:
        self._pending.setdefault(key, command)

    def hand_over(self, person_id: str, reason: str) -> None:
        self._add(
            ("hand_over", person_id, reason),
            HandOver(person_id=person_id, reason=reason, **self._common()),
        )

    def check_availability(self, person_id: str) -> None:
        self._add(("check", person_id), CheckAvailability(person_id=person_id, **self._common()))

    def recompute(self, tenant_id: str) -> None:
        self._add(("recompute", tenant_id), Recompute(tenant_id=tenant_id, **self._common()))

    def _common(self) -> dict[str, str]:
        return {"issued_by": "stayhuman apply", "correlation_id": self.correlation_id}

    def __len__(self) -> int:
        return len(self._pending)

    def all(self) -> list[AnyCommand]:
        return list(self._pending.values())


async def _upsert(
    session: AsyncSession,
    model: type[SQLModel],
    key: str,
    values: dict[str, Any],
    summary: Summary,
    kind: str,
) -> set[str]:
    """Create or update one row; returns the fields that changed (all of them for a new row)."""
    row = await session.get(model, key)
    if row is None:
        session.add(model(id=key, **values))
        summary.count(kind, created=True)
        return set(values)
    changed = {k: v for k, v in values.items() if getattr(row, k) != v}
    if changed:
        for k, v in changed.items():
            setattr(row, k, v)
        if hasattr(row, "updated_at"):
            row.updated_at = utcnow()
        summary.count(kind, created=False)
    return set(changed)


def _sealed(box: SecretBox, plain: str, stored: str | None) -> str:
    """Keep the stored ciphertext when it already holds this secret (sealing again would differ)."""
    if stored is not None and stored.startswith(PREFIX) and box.open(stored) == plain:
        return stored
    return box.seal(plain)


def _seconds(value: timedelta | None) -> int | None:
    return int(value.total_seconds()) if value is not None else None


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _chain_json(raw: Any) -> str:
    return _json(Chain.parse(raw).to_json())


def _person_values(person: PersonSpec, *, box: SecretBox, stored: PersonRow | None) -> dict[str, Any]:
    absence = person.out_of_office
    quiet = person.quiet_hours
    return {
        "name": person.name,
        "email": str(person.email),
        "skills": _json(person.skills),
        "languages": _json(person.languages),
        "capacity": person.capacity,
        "priority_weights": _json(person.priority_weights),
        "timezone": person.timezone,
        "working_hours": _json(person.working_hours) if person.working_hours is not None else None,
        "out_of_office_from": absence.starts if absence else None,
        "out_of_office_until": absence.until if absence else None,
        "substitute_id": absence.substitute if absence else None,
        "active": person.active,
        "notify": _json(person.notify),
        # The list is sealed whole; no URLs: the plain "[]" (box.open reads both).
        "apprise_urls": _sealed(box, _json(person.apprise), stored.apprise_urls if stored else None)
        if person.apprise
        else "[]",
        "quiet_hours": _json({"from": quiet.starts, "until": quiet.until}) if quiet else None,
    }


def _policy_values(tenant_id: str, policy: SlaSpec) -> dict[str, Any]:
    targets = {
        priority: {
            name: _seconds(value)
            for name, value in (
                ("first_response", given.first_response),
                ("next_response", given.next_response),
                ("resolution", given.resolution),
            )
            if value is not None
        }
        for priority, given in policy.priorities.items()
    }
    return {
        "tenant_id": tenant_id,
        "name": policy.name,
        "first_response_seconds": _seconds(policy.first_response),
        "next_response_seconds": _seconds(policy.next_response),
        "warn_before_seconds": _seconds(policy.warn_before),
        "resolution_seconds": _seconds(policy.resolution),
        "targets": _json(targets),
        "calendar_id": ids.calendar_id(tenant_id=tenant_id, name=policy.calendar)
        if policy.calendar
        else None,
        "vip_bump": policy.vip_bump,
        "high_reach_followers": policy.high_reach.followers if policy.high_reach else None,
        "high_reach_bump": policy.high_reach.bump if policy.high_reach else 1,
    }


def _topic_values(tenant_id: str, position: int, topic: TopicSpec) -> dict[str, Any]:
    rule = {} if topic.default or topic.match is None else Rule.parse(topic.match).to_json()
    return {
        "tenant_id": tenant_id,
        "name": topic.name,
        "position": position,
        "is_default": topic.default,
        "rule": _json(rule),
        "team_id": ids.team_id(tenant_id=tenant_id, slug=topic.team) if topic.team else None,
        "priority": topic.priority,
        "sla_policy_id": ids.sla_policy_id(tenant_id=tenant_id, name=topic.sla_policy)
        if topic.sla_policy
        else None,
        "no_sla": topic.no_sla,
        "skills": _json(topic.skills),
        "escalation": _chain_json(topic.escalation) if topic.escalation is not None else None,
    }


async def _apply_people(
    *,
    session: AsyncSession,
    people: list[PersonSpec],
    box: SecretBox,
    summary: Summary,
    commands: _Commands,
) -> set[str]:
    """Create or update each person; returns who changed."""
    changed_people = set()
    for person in people:
        before = await session.get(PersonRow, person.id)
        was_active = before.active if before is not None else None
        values = _person_values(person, box=box, stored=before)
        changed = await _upsert(session, PersonRow, person.id, values, summary, "people")
        if changed:
            changed_people.add(person.id)
        if was_active and not person.active:
            commands.hand_over(person.id, "deactivated")
        if changed & AVAILABILITY_FIELDS:
            commands.check_availability(person.id)
    return changed_people


async def _tenants_served_by(session: AsyncSession, people: set[str]) -> set[str]:
    """The tenants whose rules name these people: their teams, or as the manager alerts go to."""
    if not people:
        return set()
    members = await session.exec(
        select(TeamRow.tenant_id)
        .join(TeamMemberRow, col(TeamMemberRow.team_id) == col(TeamRow.id))
        .where(col(TeamMemberRow.person_id).in_(people))
    )
    managed = await session.exec(select(TenantRow.id).where(col(TenantRow.manager_id).in_(people)))
    return set(members.all()) | set(managed.all())


async def _bump_versions(session: AsyncSession, tenants: set[str]) -> dict[str, int]:
    """Each changed tenant's configuration version moves on by one; returns where each now is."""
    if not tenants:
        return {}
    await session.exec(
        update(TenantRow)
        .where(col(TenantRow.id).in_(tenants))
        .values(config_version=col(TenantRow.config_version) + 1)
    )
    rows = await session.exec(
        select(TenantRow.id, TenantRow.config_version).where(col(TenantRow.id).in_(tenants))
    )
    return {tenant: int(version) for tenant, version in rows.all()}


async def _apply_team(
    *, session: AsyncSession, tenant_id: str, team: TeamSpec, summary: Summary, commands: _Commands
) -> None:
    team_id = ids.team_id(tenant_id=tenant_id, slug=team.id)
    await _upsert(
        session,
        TeamRow,
        team_id,
        {
            "tenant_id": tenant_id,
            "slug": team.id,
            "name": team.name,
            "sla_policy_id": ids.sla_policy_id(tenant_id=tenant_id, name=team.sla_policy)
            if team.sla_policy
            else None,
            "lead_id": team.lead,
        },
        summary,
        "teams",
    )
    await session.flush()
    current = set(
        (await session.exec(select(TeamMemberRow.person_id).where(TeamMemberRow.team_id == team_id))).all()
    )
    wanted = set(team.members)
    if current == wanted:
        return
    gone, added = current - wanted, wanted - current
    if gone:
        await session.exec(
            delete(TeamMemberRow).where(
                col(TeamMemberRow.team_id) == team_id, col(TeamMemberRow.person_id).in_(gone)
            )
        )
        summary.removed["team memberships"] = summary.removed.get("team memberships", 0) + len(gone)
    session.add_all(TeamMemberRow(team_id=team_id, person_id=p) for p in sorted(added))
    if added:
        summary.count("team memberships", created=True, n=len(added))
    for person_id in sorted(current - wanted):
        commands.hand_over(person_id, f"removed from team {team.id}")
    for person_id in sorted(wanted - current):
        commands.check_availability(person_id)  # a new member may take what the team has queued


async def _apply_account(
    *,
    session: AsyncSession,
    tenant_id: str,
    account: AccountSpec,
    box: SecretBox,
    summary: Summary,
    source: str,
    problems: list[str],
) -> None:
    existing = await session.get(AccountRow, account.id)
    if existing is not None and existing.tenant_id != tenant_id:
        problems.append(
            f"{source}: account {account.id!r} belongs to tenant {existing.tenant_id!r};"
            " account ids are unique in the installation"
        )
        return
    await _upsert(
        session,
        AccountRow,
        account.id,
        {
            "tenant_id": tenant_id,
            "platform": account.platform.value,
            "handle": account.handle,
            "team_id": ids.team_id(tenant_id=tenant_id, slug=account.team),
            # "": no secret, so the generic webhook answers as for an unknown account.
            "webhook_secret": _sealed(
                box, account.webhook_secret, existing.webhook_secret if existing else None
            )
            if account.webhook_secret
            else "",
            "external_id": account.external_id,
            "api_base_url": str(account.api_base_url).rstrip("/") if account.api_base_url else None,
            "credentials": _sealed(box, account.access_token, existing.credentials if existing else None)
            if account.access_token
            else None,
            # The block's keys as JSON (sorted, so the same block seals once); None: not connected.
            "reply_credentials": _sealed(
                box, _json(account.reply.given()), existing.reply_credentials if existing else None
            )
            if account.reply
            else None,
        },
        summary,
        "accounts",
    )


async def _apply_token(
    *,
    session: AsyncSession,
    tenant_id: str,
    token: ApiTokenSpec,
    summary: Summary,
    where: str,
    problems: list[str],
) -> None:
    """A token of the file (`source` "config"). A token revoked in the API stays revoked while
    the file gives it the same value; a new value is a new token, active at once."""
    token_id = ids.api_token_id(tenant_id=tenant_id, name=token.name)
    stored = await session.get(ApiTokenRow, token_id)
    if stored is not None and stored.source != "config":
        problems.append(
            f"{where}.name: tenant {tenant_id!r} has a token {token.name!r} made in the API;"
            " give the file's token another name"
        )
        return
    value = ids.token_sha256(token.token)
    values: dict[str, Any] = {
        "tenant_id": tenant_id,
        "name": token.name,
        "token_sha256": value,
        "role": token.role,
        "source": "config",
    }
    if stored is not None and stored.token_sha256 != value:
        values["revoked_at"] = None
    await _upsert(session, ApiTokenRow, token_id, values, summary, "API tokens")


async def _apply_grants(
    *,
    session: AsyncSession,
    role: str,
    tenant_id: str,
    named: list[str],
    whole: bool,
    summary: Summary,
) -> None:
    """The people granted `role` in a tenant ("" for agency admin) are those `named`. When the
    list is `whole`, a grant it no longer names is removed; otherwise it is kept and counted so."""
    current = set(
        (
            await session.exec(
                select(RoleGrantRow.person_id).where(
                    RoleGrantRow.role == role, RoleGrantRow.tenant_id == tenant_id
                )
            )
        ).all()
    )
    wanted = set(named)
    added, gone = wanted - current, current - wanted
    session.add_all(RoleGrantRow(person_id=p, role=role, tenant_id=tenant_id) for p in sorted(added))
    if added:
        summary.count("role grants", created=True, n=len(added))
    if not gone:
        return
    if not whole:
        summary.kept["role grants"] = summary.kept.get("role grants", 0) + len(gone)
        return
    await session.exec(
        delete(RoleGrantRow).where(
            col(RoleGrantRow.role) == role,
            col(RoleGrantRow.tenant_id) == tenant_id,
            col(RoleGrantRow.person_id).in_(gone),
        )
    )
    summary.removed["role grants"] = summary.removed.get("role grants", 0) + len(gone)


async def _apply_tenant_grants(
    *, session: AsyncSession, tenant: TenantSpec, prune: bool, summary: Summary
) -> None:
    """A tenant's admins and client viewers: a list the file gives is the whole of them; a list
    it leaves out keeps them, unless `prune` makes the tenant exactly what the file says."""
    for role, kind in (("tenant_admin", "admins"), ("client_viewer", "viewers")):
        await _apply_grants(
            session=session,
            role=role,
            tenant_id=tenant.id,
            named=getattr(tenant, kind),
            whole=prune or kind in tenant.model_fields_set,
            summary=summary,
        )


async def _apply_tenant(
    *,
    session: AsyncSession,
    tenant: TenantSpec,
    index: int,
    box: SecretBox,
    summary: Summary,
    commands: _Commands,
    source: str,
    problems: list[str],
) -> None:
    await _upsert(
        session,
        TenantRow,
        tenant.id,
        {
            "name": tenant.name,
            "vip": _json(tenant.vip),
            "auto_resolve_seconds": _seconds(tenant.auto_resolve_after),
            "manager_id": tenant.manager,
            "escalation": _chain_json(tenant.escalation),
        },
        summary,
        "tenants",
    )
    for calendar in tenant.calendars:
        await _upsert(
            session,
            CalendarRow,
            ids.calendar_id(tenant_id=tenant.id, name=calendar.name),
            {
                "tenant_id": tenant.id,
                "name": calendar.name,
                "timezone": calendar.timezone,
                "hours": json.dumps(calendar.hours),  # null: open around the clock
                "holidays_country": calendar.holidays.country if calendar.holidays else None,
                "holidays_subdivision": calendar.holidays.subdivision if calendar.holidays else None,
                "closed_days": _json(sorted({day.isoformat() for day in calendar.closed_days})),
            },
            summary,
            "calendars",
        )
    for policy in tenant.sla_policies:
        await _upsert(
            session,
            SlaPolicyRow,
            ids.sla_policy_id(tenant_id=tenant.id, name=policy.name),
            _policy_values(tenant.id, policy),
            summary,
            "SLA policies",
        )
    await session.flush()
    for team in tenant.teams:
        await _apply_team(session=session, tenant_id=tenant.id, team=team, summary=summary, commands=commands)
    await session.flush()
    for position, topic in enumerate(tenant.topics):
        await _upsert(
            session,
            TopicRow,
            ids.topic_id(tenant_id=tenant.id, name=topic.name),
            _topic_values(tenant.id, position, topic),
            summary,
            "topics",
        )
    for ki, token in enumerate(tenant.api_tokens):
        await _apply_token(
            session=session,
            tenant_id=tenant.id,
            token=token,
            summary=summary,
            where=f"{source}: tenants[{index}].api_tokens[{ki}]",
            problems=problems,
        )
    for account in tenant.accounts:
        await _apply_account(
            session=session,
            tenant_id=tenant.id,
            account=account,
            box=box,
            summary=summary,
            source=source,
            problems=problems,
        )
    await session.flush()


async def _absent(session: AsyncSession, model: Any, tenant_id: str, keep: set[str]) -> list[Any]:
    """A tenant's stored rows of one kind whose ids the file does not have."""
    rows = (await session.exec(select(model).where(model.tenant_id == tenant_id))).all()
    return sorted((row for row in rows if row.id not in keep), key=lambda row: row.id)


async def _account_in_use(session: AsyncSession, account_id: str) -> str | None:
    """What keeps an account from being deleted: its conversations or interactions."""
    for model, what in ((ConversationRow, "conversations"), (InteractionRow, "interactions")):
        query = select(model.id).where(model.account_id == account_id).limit(1)
        if (await session.exec(query)).first() is not None:
            return what
    return None


async def _remove_absent(
    *,
    session: AsyncSession,
    tenant: TenantSpec,
    where: str,
    prune: bool,
    summary: Summary,
    commands: _Commands,
    problems: list[str],
) -> None:
    """Prune what a tenant of the file no longer has, or count it as kept."""
    t = tenant.id
    absent = {
        "accounts": await _absent(session, AccountRow, t, {a.id for a in tenant.accounts}),
        "teams": await _absent(
            session, TeamRow, t, {ids.team_id(tenant_id=t, slug=m.id) for m in tenant.teams}
        ),
        "topics": await _absent(
            session, TopicRow, t, {ids.topic_id(tenant_id=t, name=x.name) for x in tenant.topics}
        ),
        "SLA policies": await _absent(
            session,
            SlaPolicyRow,
            t,
            {ids.sla_policy_id(tenant_id=t, name=p.name) for p in tenant.sla_policies},
        ),
        "calendars": await _absent(
            session, CalendarRow, t, {ids.calendar_id(tenant_id=t, name=c.name) for c in tenant.calendars}
        ),
        # Only the file's own tokens: those made in the API are ended by revoking them there.
        "API tokens": [
            token
            for token in await _absent(
                session,
                ApiTokenRow,
                t,
                {ids.api_token_id(tenant_id=t, name=k.name) for k in tenant.api_tokens},
            )
            if token.source == "config"
        ],
    }
    for kind, rows in absent.items():
        if rows:
            (summary.removed if prune else summary.kept)[kind] = len(rows)
    if not prune:
        return
    for account in absent["accounts"]:
        if used := await _account_in_use(session, account.id):
            problems.append(
                f"{where}: account {account.id!r} has {used}; remove it from routing"
                " by moving it to another team instead"
            )
    if problems:
        return
    account_ids = [a.id for a in absent["accounts"]]
    team_ids = [team.id for team in absent["teams"]]
    members = (
        await session.exec(select(TeamMemberRow).where(col(TeamMemberRow.team_id).in_(team_ids)))
    ).all()
    slugs = {team.id: team.slug for team in absent["teams"]}
    for member in sorted(members, key=lambda m: (m.team_id, m.person_id)):
        commands.hand_over(member.person_id, f"removed from team {slugs[member.team_id]}")
    if members:
        summary.removed["team memberships"] = summary.removed.get("team memberships", 0) + len(members)
    # Children before parents: the foreign keys point from accounts to teams to policies.
    await session.exec(delete(PollStateRow).where(col(PollStateRow.account_id).in_(account_ids)))
    await session.exec(delete(ContinuityRow).where(col(ContinuityRow.account_id).in_(account_ids)))
    await session.exec(delete(AccountRow).where(col(AccountRow.id).in_(account_ids)))
    await session.exec(delete(TeamMemberRow).where(col(TeamMemberRow.team_id).in_(team_ids)))
    for kind in ("teams", "topics", "SLA policies", "calendars", "API tokens"):
        for row in absent[kind]:
            await session.delete(row)
        await session.flush()


# -- the file each tenant's version came from -----------------------------------------------

REDACTED = "<redacted>"
# The longest text kept for one tenant: its part of a file and the people it names.
MAX_KEPT_BYTES = 2 * MAX_CONFIG_BYTES
_SHORTEST_SECRET = 8  # shorter secrets are redacted where they are written, not searched for


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _strings(value: Any) -> list[str]:
    return [item for item in value if isinstance(item, str)] if isinstance(value, list) else []


def people_named(tenant: dict[str, Any]) -> list[str]:
    """The people a tenant's part of a file names, each once: its manager, its teams' leads and
    members, its admins and client viewers, and the people its escalation chains alert."""
    named: list[Any] = [tenant.get("manager")]
    for team in _dicts(tenant.get("teams")):
        named += [team.get("lead"), *_strings(team.get("members"))]
    named += [*_strings(tenant.get("admins")), *_strings(tenant.get("viewers"))]
    chains = [tenant.get("escalation"), *(topic.get("escalation") for topic in _dicts(tenant.get("topics")))]
    for chain in chains:
        named += [step.get("person") for step in _dicts(chain)]
    return list(dict.fromkeys(person for person in named if isinstance(person, str)))


def _url_has_credentials(value: Any) -> bool:
    try:
        parts = urlsplit(value) if isinstance(value, str) else None
    except ValueError:
        return True
    return parts is not None and (parts.username is not None or parts.password is not None)


def _url_password(value: str | None) -> str | None:
    """The password a URL carries (user:password@host), if any."""
    try:
        return urlsplit(value).password if value else None
    except ValueError:
        return None


def _redact_person(person: dict[str, Any]) -> dict[str, Any]:
    """A person as written, their Apprise URLs (which hold tokens) each `<redacted>`."""
    urls = person.get("apprise")
    if urls is None:
        return dict(person)
    return {**person, "apprise": [REDACTED for _ in urls] if isinstance(urls, list) else REDACTED}


def _redact_account(account: dict[str, Any]) -> dict[str, Any]:
    redacted = dict(account)
    for key in ("webhook_secret", "access_token"):
        if redacted.get(key) is not None:
            redacted[key] = REDACTED
    if _url_has_credentials(redacted.get("api_base_url")):
        redacted["api_base_url"] = REDACTED
    if isinstance(reply := account.get("reply"), dict):
        redacted["reply"] = {
            key: REDACTED
            if (key in REPLY_SECRETS and value is not None)
            or (key in REPLY_URLS and _url_has_credentials(value))
            else value
            for key, value in reply.items()
        }
    return redacted


def _redact_tenant(tenant: dict[str, Any]) -> dict[str, Any]:
    """A tenant's part as written, with its accounts' secrets (webhook secrets, access tokens,
    those of reply blocks) and API tokens `<redacted>` (an API token keeps its name and role)."""
    redacted = dict(tenant)
    if isinstance(tenant.get("accounts"), list):
        redacted["accounts"] = [_redact_account(account) for account in _dicts(tenant["accounts"])]
    if isinstance(tenant.get("api_tokens"), list):
        redacted["api_tokens"] = [
            {**token, "token": REDACTED} if "token" in token else token
            for token in _dicts(tenant["api_tokens"])
        ]
    return redacted


def redact(raw: dict[str, Any]) -> dict[str, Any]:
    """A file's mapping with each secret the schema has `<redacted>` where it is written: Apprise
    URLs, accounts' webhook secrets, access tokens and the secrets of their reply blocks (and
    any of their URLs carrying credentials), API tokens. The rest is as written; agency_admins
    is left out (it is no tenant's)."""
    return {
        "people": [_redact_person(person) for person in _dicts(raw.get("people"))],
        "tenants": [_redact_tenant(tenant) for tenant in _dicts(raw.get("tenants"))],
    }


def secret_values(document: ConfigDocument) -> set[str]:
    """Every secret of the document, as applied (variables substituted)."""
    values = {url for person in document.people for url in person.apprise}
    for tenant in document.tenants:
        values |= {token.token for token in tenant.api_tokens}
        for account in tenant.accounts:
            values |= {value for value in (account.webhook_secret, account.access_token) if value}
            if account.api_base_url is not None and account.api_base_url.password:
                values.add(account.api_base_url.password)
            if account.reply is not None:
                given = account.reply.given()
                values |= {given[key] for key in REPLY_SECRETS if key in given}
                values |= {password for key in REPLY_URLS if (password := _url_password(given.get(key)))}
    return {value for value in values if len(value) >= _SHORTEST_SECRET}


def scrub(node: Any, secrets: set[str]) -> Any:
    """A copy of `node` in which any text holding one of `secrets` is `<redacted>`, wherever it
    was written (a secret pasted into a topic's keywords too)."""
    if isinstance(node, dict):
        return {key: scrub(value, secrets) for key, value in node.items()}
    if isinstance(node, list):
        return [scrub(value, secrets) for value in node]
    if isinstance(node, str) and any(secret in node for secret in secrets):
        return REDACTED
    return node


def kept_file(
    *,
    tenant: dict[str, Any] | None,
    people: list[dict[str, Any]],
    previous: dict[str, Any] | None,
) -> dict[str, Any] | None:
    """The configuration file one tenant's new version came from: a file of that one tenant,
    with the people its part names. Pure; its inputs are redacted already.

    `tenant`: its part of the file applied (None: the file changed only people it names);
    `people`: the people that file defines; `previous`: the tenant's file kept before. A
    person the tenant names whom the file does not define is kept as the previous file had
    them. None: nothing to keep (the file has no part of the tenant and none was kept before)."""
    given = tenant is not None
    if tenant is None:
        kept_tenants = _dicts(previous.get("tenants")) if previous else []
        if not kept_tenants:
            return None
        tenant = kept_tenants[0]
    named = set(people_named(tenant))
    defined = {person["id"]: person for person in people if person.get("id") in named}
    before = _dicts(previous.get("people")) if previous else []
    earlier = {person["id"]: person for person in before if person.get("id") in named}
    # In the order of the file that gave the tenant's part: this one, or the one kept before.
    order = dict.fromkeys([*defined, *earlier] if given else [*earlier, *defined])
    return {
        "people": [defined[key] if key in defined else earlier[key] for key in order],
        "tenants": [tenant],
    }


def render_yaml(document: dict[str, Any]) -> str:
    """YAML as the inbox shows it: keys in the order written, non-ASCII names as they are."""
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True, default_flow_style=False, width=100)


async def _kept_before(session: AsyncSession, tenant_id: str) -> dict[str, Any] | None:
    text = (
        await session.exec(
            select(AppliedConfigurationRow.yaml)
            .where(AppliedConfigurationRow.tenant_id == tenant_id)
            .order_by(col(AppliedConfigurationRow.config_version).desc())
            .limit(1)
        )
    ).first()
    kept = yaml.safe_load(text) if text else None
    return kept if isinstance(kept, dict) else None


async def _keep_files(
    session: AsyncSession, document: ConfigDocument, versions: dict[str, int], *, source: str
) -> None:
    """For each tenant at a new version, the file (secrets redacted) it came from."""
    if not versions:
        return
    redacted = scrub(redact(document.source()), secret_values(document))
    people = redacted["people"]
    parts = {tenant.id: part for tenant, part in zip(document.tenants, redacted["tenants"], strict=True)}
    problems: list[str] = []
    now = utcnow()
    for tenant_id, version in sorted(versions.items()):
        kept = kept_file(
            tenant=parts.get(tenant_id), people=people, previous=await _kept_before(session, tenant_id)
        )
        if kept is None:
            continue
        text = render_yaml(kept)
        if (size := len(text.encode())) > MAX_KEPT_BYTES:
            problems.append(
                f"{source}: tenant {tenant_id!r}: its part of the file and the people it names come to "
                f"{size} bytes, more than the {MAX_KEPT_BYTES} kept of one tenant"
            )
            continue
        session.add(
            AppliedConfigurationRow(tenant_id=tenant_id, config_version=version, yaml=text, applied_at=now)
        )
    if problems:
        raise ConfigError(problems)


async def apply_config(
    sessions: async_sessionmaker[AsyncSession],
    document: ConfigDocument,
    *,
    source: str,
    box: SecretBox | None = None,
    prune: bool = False,
    recompute: bool = False,
) -> Summary:
    """Create or update everything in the document, in one transaction; secrets are stored sealed.
    Each tenant it moves to a new configuration version keeps the file it came from, redacted.

    `prune`: also remove what each tenant of the document no longer has (people stay:
    they are deactivated with `active: false`). `recompute`: ask the router to recompute
    the open deadlines of each tenant of the document under its SLA policies now."""
    box = box or load_settings(CommonSettings).secret_box()
    summary = Summary()
    commands = _Commands()
    problems: list[str] = []
    async with transaction(sessions) as session:
        referenced = {
            person_id
            for person_id in [
                *(m for t in document.tenants for team in t.teams for m in [*team.members, team.lead]),
                *(p.out_of_office.substitute for p in document.people if p.out_of_office),
                *(named for t in document.tenants for named in _chain_people(t)),
                *document.agency_admins,
                *(named for t in document.tenants for named in [*t.admins, *t.viewers]),
            ]
            if person_id is not None
        }
        stored = (await session.exec(select(PersonRow.id).where(col(PersonRow.id).in_(referenced)))).all()
        cross_check(document, source=source, known_people=set(stored))
        changed_people = await _apply_people(
            session=session, people=document.people, box=box, summary=summary, commands=commands
        )
        if "agency_admins" in document.model_fields_set:  # installation-wide: changes no tenant
            await _apply_grants(
                session=session,
                role="agency_admin",
                tenant_id="",
                named=document.agency_admins,
                whole=True,
                summary=summary,
            )
        await session.flush()
        changed_tenants: set[str] = set()
        for ti, tenant in enumerate(document.tenants):
            before = summary.changes()
            await _apply_tenant(
                session=session,
                tenant=tenant,
                index=ti,
                box=box,
                summary=summary,
                commands=commands,
                source=source,
                problems=problems,
            )
            await _apply_tenant_grants(session=session, tenant=tenant, prune=prune, summary=summary)
            await _remove_absent(
                session=session,
                tenant=tenant,
                where=f"{source}: tenants[{ti}]",
                prune=prune,
                summary=summary,
                commands=commands,
                problems=problems,
            )
            if summary.changes() != before:
                changed_tenants.add(tenant.id)
        if problems:
            raise ConfigError(problems)  # leaving the transaction rolls everything back
        await session.flush()
        changed_tenants |= await _tenants_served_by(session, changed_people)
        summary.versions = await _bump_versions(session, changed_tenants)
        await _keep_files(session, document, summary.versions, source=source)
        if recompute:
            for tenant in document.tenants:
                commands.recompute(tenant.id)
        await add_outbox(
            session=session, messages=[command_outgoing(c) for c in commands.all()], relay_only=True
        )
        summary.commands = len(commands)
    return summary
