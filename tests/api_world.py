"""The api service in a test, without NATS: its routers over a migrated database, rows written
straight into that database, and the ways a test signs in.

`build_api` makes the app the way `services/api/main.py` does, less the runtime: the routers
of services/api (each one that exists yet), the error handlers and the security headers, and
`app.state.sessions`, `.settings`, `.commands` and `.clock` set by hand. `client(app)` talks
to it over httpx's ASGI transport at http://127.0.0.1:8083 (plain http on loopback, so
session cookies are not Secure and httpx sends them back).

`World` writes tenants, teams, people, grants, accounts, conversations, interactions and
deadlines as rows. `sign_in` goes through the real `POST /api/session`; `World.session_for`
and `World.token_for` write a session or a token directly, for tests not about signing in.
"""

import functools
import importlib
import itertools
import secrets
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlmodel import SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from services.api.passwords import hash_password
from services.api.settings import ApiSettings
from shared import ids
from shared.db.models import (
    AccountRow,
    ApiTokenRow,
    ConversationRow,
    DeadlineRow,
    InteractionRow,
    LoginRow,
    PersonRow,
    RoleGrantRow,
    TeamMemberRow,
    TeamRow,
    TenantRow,
    WebSessionRow,
)
from shared.db.session import create_engine, session_factory, transaction
from shared.events import utcnow
from shared.runtime import install_error_handlers

BASE_URL = "http://127.0.0.1:8083"
SESSION_COOKIE = "sh_session"
CSRF_HEADER = "X-CSRF-Token"

# The routers of services/api, by module and factory; the auth router takes the settings.
ROUTERS = (
    ("services.api.auth", "auth_router"),
    ("services.api.reads", "reads_router"),
    ("services.api.live", "live_router"),
    ("services.api.actions", "actions_router"),
    ("services.api.replies", "replies_router"),
    ("services.api.config_reads", "configuration_router"),
    ("services.api.report_reads", "reports_router"),
    ("services.api.pages", "pages_router"),
)


@dataclass
class Clock:
    """A clock a test moves by hand: `app.state.clock` reads it instead of the wall clock."""

    now: datetime = field(default_factory=utcnow)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, by: timedelta) -> datetime:
        self.now += by
        return self.now


def api_settings(database_url: str, **overrides: Any) -> ApiSettings:
    """The api's settings for a test: its database, a loopback public URL, no SMTP server."""
    values: dict[str, Any] = {
        "database_url": database_url,
        "api_public_url": BASE_URL,
        "smtp_host": None,
        "log_json": False,
        **overrides,
    }
    return ApiSettings(**values)


def build_api(
    database_url: str,
    settings: ApiSettings | None = None,
    commands: Any = None,
    *,
    clock: Callable[[], datetime] | None = None,
) -> FastAPI:
    """The api's app over the database, without NATS (close it with `close_api`, or use `client`).

    Routers whose module does not exist yet are left out, so a test of one part runs before
    the others are written; a module that exists but fails to import fails the test."""
    from services.api.security import install_security_headers

    settings = settings or api_settings(database_url)
    app = FastAPI(title="StayHuman API", version="1", docs_url=None, redoc_url=None)
    engine = create_engine(database_url)
    app.state.engine = engine
    app.state.sessions = session_factory(engine)
    app.state.settings = settings
    app.state.commands = commands
    if clock is not None:
        app.state.clock = clock
    install_error_handlers(app)
    install_security_headers(app)
    for module_name, factory in ROUTERS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name == module_name:
                continue
            raise
        make = getattr(module, factory, None)
        if make is not None:
            app.include_router(make(settings) if factory == "auth_router" else make())
    from services.api.pages import mount_static

    mount_static(app)
    return app


async def close_api(app: FastAPI) -> None:
    engine: AsyncEngine = app.state.engine
    await engine.dispose()


@asynccontextmanager
async def client(app: FastAPI, *, address: str = "127.0.0.1") -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of the app, as if from `address`; disposes the app's engine at the end."""
    transport = httpx.ASGITransport(app=app, client=(address, 50000))
    try:
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as http:
            yield http
    finally:
        await close_api(app)


@dataclass(frozen=True)
class SignedIn:
    """A signed-in browser: its session cookie's value and its CSRF token."""

    person_id: str
    cookie: str
    csrf_token: str

    @property
    def headers(self) -> dict[str, str]:
        """What a page sends on every request, writes included."""
        return {"Cookie": f"{SESSION_COOKIE}={self.cookie}", CSRF_HEADER: self.csrf_token}

    @property
    def cookie_only(self) -> dict[str, str]:
        """The cookie without the CSRF token (what a cross-site form would send)."""
        return {"Cookie": f"{SESSION_COOKIE}={self.cookie}"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def sign_in(http: httpx.AsyncClient, email: str, password: str) -> SignedIn:
    """Sign in through `POST /api/session`, as the sign-in page does."""
    response = await http.post("/api/session", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    cookie = response.cookies.get(SESSION_COOKIE)
    assert cookie, response.headers.get("set-cookie")
    body = response.json()
    return SignedIn(person_id=body["person_id"], cookie=cookie, csrf_token=body["csrf_token"])


@functools.cache
def hashed(password: str) -> str:
    """The argon2 hash of a password, made once per test run (each costs a fifth of a second)."""
    return hash_password(password)


class World:
    """Rows written straight into a migrated database (use as `async with World(url) as world`).

    Builders return the id they wrote; defaults make a readable row, and keywords change it."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.engine = create_engine(database_url)
        self.sessions: async_sessionmaker[AsyncSession] = session_factory(engine=self.engine)
        self._numbers = itertools.count(1)

    async def __aenter__(self) -> "World":
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.engine.dispose()

    async def add(self, *rows: SQLModel) -> None:
        """Write rows in one transaction."""
        async with transaction(self.sessions) as session:
            session.add_all(rows)

    def _next(self) -> int:
        return next(self._numbers)

    # -- configuration ---------------------------------------------------------------------

    async def tenant(self, tenant_id: str, *, name: str | None = None, **extra: Any) -> str:
        await self.add(TenantRow(id=tenant_id, name=name or f"Tenant {tenant_id}", **extra))
        return tenant_id

    async def person(
        self,
        person_id: str,
        *,
        name: str | None = None,
        email: str | None = None,
        active: bool = True,
        password: str | None = None,
        **extra: Any,
    ) -> str:
        """A person; with `password`, one who can sign in with it (argon2, as the API stores it)."""
        rows: list[SQLModel] = [
            PersonRow(
                id=person_id,
                name=name or f"Person {person_id}",
                email=email or f"{person_id}@example.com",
                active=active,
                **extra,
            )
        ]
        if password is not None:
            rows.append(
                LoginRow(person_id=person_id, password_hash=hashed(password), password_set_at=utcnow())
            )
        await self.add(*rows)
        return person_id

    async def team(
        self,
        tenant_id: str,
        slug: str,
        *,
        lead: str | None = None,
        members: Iterable[str] = (),
        name: str | None = None,
    ) -> str:
        """A team of the tenant with its lead and members (people written before); returns its id."""
        team_id = ids.team_id(tenant_id=tenant_id, slug=slug)
        await self.add(
            TeamRow(id=team_id, tenant_id=tenant_id, slug=slug, name=name or slug.title(), lead_id=lead),
        )
        await self.add(*(TeamMemberRow(team_id=team_id, person_id=person) for person in members))
        return team_id

    async def grant(self, person_id: str, role: str, tenant_id: str = "") -> None:
        """A role the configuration grants: agency_admin (no tenant), tenant_admin, client_viewer."""
        await self.add(RoleGrantRow(person_id=person_id, role=role, tenant_id=tenant_id))

    async def account(
        self,
        tenant_id: str,
        team_id: str,
        *,
        account_id: str | None = None,
        platform: str = "facebook",
        handle: str = "Kettle & Co",
    ) -> str:
        account_id = account_id or f"{tenant_id}-{platform}-{self._next()}"
        await self.add(
            AccountRow(
                id=account_id,
                tenant_id=tenant_id,
                platform=platform,
                handle=handle,
                team_id=team_id,
                webhook_secret="",
            )
        )
        return account_id

    # -- what the router and notify write -------------------------------------------------

    async def conversation(
        self,
        tenant_id: str,
        account_id: str,
        *,
        team_id: str | None = None,
        owner_id: str | None = None,
        state: str = "open",
        text: str = "Is the oat latte back on the menu?",
        opened_at: datetime | None = None,
        due_at: datetime | None = None,
        **extra: Any,
    ) -> str:
        """A conversation on the account, as the router writes it; returns its id."""
        thread_id = extra.pop("thread_id", f"thread-{self._next()}")
        conversation_id = ids.conversation_id(account_id=account_id, thread_id=thread_id)
        opened = opened_at or utcnow()
        values: dict[str, Any] = {
            "id": conversation_id,
            "tenant_id": tenant_id,
            "account_id": account_id,
            "platform": "facebook",
            "thread_id": thread_id,
            "state": state,
            "team_id": team_id,
            "owner_id": owner_id,
            "author_id": "author-1",
            "author_name": "Dana Reyes",
            "author_handle": "@dana",
            "last_inbound_text": text,
            "opened_at": opened,
            "last_inbound_at": opened,
            "awaiting_since": opened if state == "open" else None,
            "assigned_at": opened if owner_id else None,
            "due_at": due_at,
            **extra,
        }
        await self.add(ConversationRow(**values))
        return conversation_id

    async def interaction(
        self,
        conversation_id: str,
        *,
        text: str = "Is the oat latte back on the menu?",
        direction: str = "inbound",
        created_at: datetime | None = None,
        **extra: Any,
    ) -> str:
        """One message of a conversation (the conversation's tenant, account and thread)."""
        async with self.sessions() as session:
            conversation = await session.get(ConversationRow, conversation_id)
        assert conversation is not None, f"no conversation {conversation_id}"
        external_id = extra.pop("external_id", f"msg-{self._next()}")
        at = created_at or utcnow()
        interaction_id = ids.interaction_id(
            tenant_id=conversation.tenant_id,
            account_id=conversation.account_id,
            external_id=external_id,
            edit_version=0,
        )
        values: dict[str, Any] = {
            "id": interaction_id,
            "tenant_id": conversation.tenant_id,
            "account_id": conversation.account_id,
            "external_id": external_id,
            "kind": "comment",
            "direction": direction,
            "thread_id": conversation.thread_id,
            "author_id": "author-1" if direction == "inbound" else conversation.account_id,
            "author_name": "Dana Reyes" if direction == "inbound" else "",
            "text": text,
            "created_at": at,
            "received_at": at,
            "conversation_id": conversation_id,
            **extra,
        }
        await self.add(InteractionRow(**values))
        return interaction_id

    async def deadline(
        self,
        conversation_id: str,
        *,
        due_at: datetime,
        owner_id: str | None = None,
        state: str = "armed",
        kind: str = "first_response",
        version: int = 1,
        **extra: Any,
    ) -> None:
        """Notify's copy of a conversation's deadline."""
        async with self.sessions() as session:
            conversation = await session.get(ConversationRow, conversation_id)
        assert conversation is not None, f"no conversation {conversation_id}"
        await self.add(
            DeadlineRow(
                conversation_id=conversation_id,
                tenant_id=conversation.tenant_id,
                version=version,
                kind=kind,
                owner_id=owner_id if owner_id is not None else conversation.owner_id,
                started_at=conversation.opened_at,
                due_at=due_at,
                state=state,
                **extra,
            )
        )

    # -- signed in without the sign-in page -----------------------------------------------

    async def session_for(
        self,
        person_id: str,
        *,
        created_at: datetime | None = None,
        lifetime: timedelta = timedelta(days=14),
        address: str = "127.0.0.1",
    ) -> SignedIn:
        """A session of the person, as sign-in writes it (only the cookie's SHA-256 is stored)."""
        cookie = secrets.token_urlsafe(32)
        csrf_token = secrets.token_urlsafe(32)
        at = created_at or utcnow()
        await self.add(
            WebSessionRow(
                id_sha256=ids.token_sha256(cookie),
                person_id=person_id,
                csrf_token=csrf_token,
                address=address,
                created_at=at,
                last_seen_at=at,
                expires_at=at + lifetime,
            )
        )
        return SignedIn(person_id=person_id, cookie=cookie, csrf_token=csrf_token)

    async def token_for(
        self,
        tenant_id: str,
        role: str = "tenant_admin",
        *,
        name: str | None = None,
        source: str = "api",
        revoked: bool = False,
    ) -> str:
        """A machine's API token of the tenant with that role; returns the token itself."""
        name = name or f"{role.replace('_', '-')}-{self._next()}"
        token = "sh_" + secrets.token_urlsafe(32)
        await self.add(
            ApiTokenRow(
                id=ids.api_token_id(tenant_id=tenant_id, name=name),
                tenant_id=tenant_id,
                name=name,
                token_sha256=ids.token_sha256(token),
                role=role,
                source=source,
                revoked_at=utcnow() if revoked else None,
            )
        )
        return token


async def session_for(database_url: str, person_id: str, **options: Any) -> SignedIn:
    """A session of the person written straight into the database (see `World.session_for`)."""
    async with World(database_url) as world:
        return await world.session_for(person_id, **options)


async def token_for(database_url: str, tenant_id: str, role: str = "tenant_admin", **options: Any) -> str:
    """An API token of the tenant written straight into the database (see `World.token_for`)."""
    async with World(database_url) as world:
        return await world.token_for(tenant_id, role, **options)


def at(text: str) -> datetime:
    """A UTC time from ISO text, for tests that write times."""
    return datetime.fromisoformat(text).astimezone(UTC)
