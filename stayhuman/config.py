"""`stayhuman apply -f FILE.yaml`: tenants, accounts, teams, people and SLA targets.

Validation happens completely before anything is written, and the write is one
transaction: an invalid file changes nothing. Applying the same file twice is a
no-op. Things absent from the file are left as they are.
"""

import os
import re
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    EmailStr,
    Field,
    HttpUrl,
    ValidationError,
    model_validator,
)
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from shared import ids
from shared.db.models import Account, ApiToken, Person, SlaPolicy, Team, TeamMember, Tenant
from shared.db.session import transaction
from shared.durations import parse_duration
from shared.events import Platform, utcnow
from shared.secrets import PREFIX, SecretBox
from shared.settings import CommonSettings, load_settings

Slug = Annotated[str, Field(pattern=ids.SLUG_PATTERN)]
POLLED_PLATFORMS = {Platform.mastodon, Platform.bluesky, Platform.youtube}


def _duration(value: object) -> object:
    return parse_duration(value) if isinstance(value, str) else value


DurationText = Annotated[timedelta, BeforeValidator(_duration)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PersonSpec(_Strict):
    id: Slug
    name: str = Field(min_length=1, max_length=200)
    email: EmailStr


class SlaSpec(_Strict):
    name: Slug
    first_response: DurationText
    next_response: DurationText | None = None
    warn_before: DurationText | None = None


class TeamSpec(_Strict):
    id: Slug
    name: str = Field(min_length=1, max_length=200)
    sla_policy: Slug | None = None
    members: list[Slug] = Field(default_factory=list)


class AccountSpec(_Strict):
    id: Slug
    platform: Platform
    handle: str = Field(min_length=1, max_length=200)
    team: Slug
    webhook_secret: str = Field(min_length=16, max_length=512)
    external_id: str | None = Field(
        default=None, min_length=1, max_length=128, description="The platform's id of this page or user."
    )
    api_base_url: HttpUrl | None = Field(default=None, description="Polled platforms: the API's base URL.")
    access_token: str | None = Field(
        default=None, min_length=8, max_length=4096, description="Polled platforms: write it as ${ENV_VAR}."
    )

    @model_validator(mode="after")
    def _polled_accounts_are_complete(self) -> "AccountSpec":
        if self.platform in POLLED_PLATFORMS and self.access_token is not None:
            missing = [name for name in ("api_base_url", "external_id") if getattr(self, name) is None]
            if missing:
                raise ValueError(f"a polled {self.platform.value} account needs {' and '.join(missing)} too")
        return self


class ApiTokenSpec(_Strict):
    name: Slug
    token: str = Field(min_length=24, max_length=512, description="Write it as ${ENV_VAR}.")


class TenantSpec(_Strict):
    id: Slug
    name: str = Field(min_length=1, max_length=200)
    sla_policies: list[SlaSpec] = Field(default_factory=list)
    teams: list[TeamSpec] = Field(default_factory=list)
    accounts: list[AccountSpec] = Field(default_factory=list)
    api_tokens: list[ApiTokenSpec] = Field(default_factory=list)


class ConfigDocument(_Strict):
    people: list[PersonSpec] = Field(default_factory=list)
    tenants: list[TenantSpec] = Field(default_factory=list)


class ConfigError(ValueError):
    """An invalid configuration file; each problem names the file and the path inside it."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def _path(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
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


def parse_config(text: str, *, source: str) -> ConfigDocument:
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
        document = ConfigDocument.model_validate(raw)
    except ValidationError as error:
        problems.extend(f"{source}: {_path(item['loc'])}: {item['msg']}" for item in error.errors())
        raise ConfigError(problems) from None
    if problems:
        raise ConfigError(problems)
    return document


def load_config(path: Path) -> ConfigDocument:
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError([f"{path}: cannot read: {error.strerror}"]) from None
    return parse_config(text, source=str(path))


def _duplicates(values: list[str]) -> set[str]:
    return {value for value in values if values.count(value) > 1}


def cross_check(document: ConfigDocument, *, source: str, known_people: set[str]) -> None:
    """References that must resolve: members to people, teams to policies, accounts to teams."""
    problems = []
    people = {person.id for person in document.people} | known_people
    for dup in _duplicates([p.id for p in document.people]):
        problems.append(f"{source}: people: {dup!r} is defined twice")
    for dup in _duplicates([t.id for t in document.tenants]):
        problems.append(f"{source}: tenants: {dup!r} is defined twice")
    all_accounts = [a.id for t in document.tenants for a in t.accounts]
    for dup in _duplicates(all_accounts):
        problems.append(f"{source}: tenants: account {dup!r} is defined twice")
    for ti, tenant in enumerate(document.tenants):
        policies = {policy.name for policy in tenant.sla_policies}
        teams = {team.id for team in tenant.teams}
        for mi, team in enumerate(tenant.teams):
            where = f"tenants[{ti}].teams[{mi}]"
            if team.sla_policy and team.sla_policy not in policies:
                problems.append(
                    f"{source}: {where}.sla_policy: no SLA policy {team.sla_policy!r} in tenant {tenant.id!r}"
                )
            for pi, member in enumerate(team.members):
                if member not in people:
                    problems.append(f"{source}: {where}.members[{pi}]: no person {member!r}")
        for ai, account in enumerate(tenant.accounts):
            if account.team not in teams:
                problems.append(
                    f"{source}: tenants[{ti}].accounts[{ai}].team: no team {account.team!r} in tenant {tenant.id!r}"
                )
    if problems:
        raise ConfigError(problems)


@dataclass
class Summary:
    created: dict[str, int] = field(default_factory=dict)
    updated: dict[str, int] = field(default_factory=dict)

    def count(self, kind: str, created: bool) -> None:
        target = self.created if created else self.updated
        target[kind] = target.get(kind, 0) + 1

    def __str__(self) -> str:
        def render(counts: dict[str, int]) -> str:
            return ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items())) or "nothing"

        return f"created {render(self.created)}; updated {render(self.updated)}"


async def _upsert(
    session: AsyncSession,
    model: type[SQLModel],
    key: str,
    values: dict[str, Any],
    summary: Summary,
    kind: str,
) -> None:
    row = await session.get(model, key)
    if row is None:
        session.add(model(id=key, **values))
        summary.count(kind, created=True)
        return
    changed = {k: v for k, v in values.items() if getattr(row, k) != v}
    if changed:
        for k, v in changed.items():
            setattr(row, k, v)
        if hasattr(row, "updated_at"):
            row.updated_at = utcnow()
        summary.count(kind, created=False)


def _sealed(box: SecretBox, plain: str, stored: str | None) -> str:
    """Keep the stored ciphertext when it already holds this secret (sealing again would differ)."""
    if stored is not None and stored.startswith(PREFIX) and box.open(stored) == plain:
        return stored
    return box.seal(plain)


async def apply_config(
    sessions: async_sessionmaker[AsyncSession],
    document: ConfigDocument,
    *,
    source: str,
    box: SecretBox | None = None,
) -> Summary:
    """Create or update everything in the document, in one transaction; secrets are stored sealed."""
    box = box or load_settings(CommonSettings).secret_box()
    summary = Summary()
    async with transaction(sessions) as session:
        referenced = {m for t in document.tenants for team in t.teams for m in team.members}
        stored = (await session.exec(select(Person.id).where(col(Person.id).in_(referenced)))).all()
        cross_check(document, source=source, known_people=set(stored))
        for person in document.people:
            await _upsert(
                session,
                Person,
                person.id,
                {"name": person.name, "email": str(person.email)},
                summary,
                "people",
            )
        for tenant in document.tenants:
            await _upsert(session, Tenant, tenant.id, {"name": tenant.name}, summary, "tenants")
            for policy in tenant.sla_policies:
                await _upsert(
                    session,
                    SlaPolicy,
                    ids.sla_policy_id(tenant_id=tenant.id, name=policy.name),
                    {
                        "tenant_id": tenant.id,
                        "name": policy.name,
                        "first_response_seconds": int(policy.first_response.total_seconds()),
                        "next_response_seconds": int(policy.next_response.total_seconds())
                        if policy.next_response
                        else None,
                        "warn_before_seconds": int(policy.warn_before.total_seconds())
                        if policy.warn_before
                        else None,
                    },
                    summary,
                    "SLA policies",
                )
            await session.flush()
            for team in tenant.teams:
                team_id = ids.team_id(tenant_id=tenant.id, slug=team.id)
                await _upsert(
                    session,
                    Team,
                    team_id,
                    {
                        "tenant_id": tenant.id,
                        "slug": team.id,
                        "name": team.name,
                        "sla_policy_id": ids.sla_policy_id(tenant_id=tenant.id, name=team.sla_policy)
                        if team.sla_policy
                        else None,
                    },
                    summary,
                    "teams",
                )
                await session.flush()
                current = set(
                    (
                        await session.exec(select(TeamMember.person_id).where(TeamMember.team_id == team_id))
                    ).all()
                )
                wanted = set(team.members)
                if current != wanted:
                    await session.exec(delete(TeamMember).where(col(TeamMember.team_id) == team_id))
                    session.add_all(TeamMember(team_id=team_id, person_id=p) for p in sorted(wanted))
                    summary.count("team memberships", created=not current)
            await session.flush()
            for token in tenant.api_tokens:
                await _upsert(
                    session,
                    ApiToken,
                    ids.api_token_id(tenant_id=tenant.id, name=token.name),
                    {
                        "tenant_id": tenant.id,
                        "name": token.name,
                        "token_sha256": ids.token_sha256(token.token),
                    },
                    summary,
                    "API tokens",
                )
            for account in tenant.accounts:
                existing = await session.get(Account, account.id)
                if existing is not None and existing.tenant_id != tenant.id:
                    raise ConfigError(
                        [
                            f"{source}: account {account.id!r} belongs to tenant {existing.tenant_id!r}; account ids are unique in the installation"
                        ]
                    )
                await _upsert(
                    session,
                    Account,
                    account.id,
                    {
                        "tenant_id": tenant.id,
                        "platform": account.platform.value,
                        "handle": account.handle,
                        "team_id": ids.team_id(tenant_id=tenant.id, slug=account.team),
                        "webhook_secret": _sealed(
                            box, account.webhook_secret, existing.webhook_secret if existing else None
                        ),
                        "external_id": account.external_id,
                        "api_base_url": str(account.api_base_url).rstrip("/")
                        if account.api_base_url
                        else None,
                        "credentials": _sealed(
                            box, account.access_token, existing.credentials if existing else None
                        )
                        if account.access_token
                        else None,
                    },
                    summary,
                    "accounts",
                )
    return summary
