"""Signing in: passwords, sessions, CSRF, throttling, set-password links and API tokens.

A person signs in with their email and password (`POST /api/session`) and gets a session
cookie, `sh_session`: a random value of which only the SHA-256 is stored (`WebSessionRow`),
HttpOnly, SameSite=Lax, Secure unless the API is reached over plain http on loopback. With
it comes a CSRF token that every write made with the cookie sends back as `X-CSRF-Token`.
A session ends when it has not been used for `session_idle`, `session_lifetime` after
sign-in, at sign-out, or when the person's password is set again.

A machine sends `Authorization: Bearer <token>`; only the token's SHA-256 is stored, with
the one tenant and role it was made with (`ApiTokenRow`), and a revoked token is refused.

Failed sign-ins are counted in the database, so every replica counts the same: per account
(an email that names nobody is counted the same way, so the answers tell no one which
emails exist) and per client address. Passwords, cookies, tokens and set-password links
are never logged.
"""

import asyncio
import functools
import hmac
import logging
import math
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Annotated, Any

import aiosmtplib
from fastapi import APIRouter, Depends, HTTPException, Path, Request, Response
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from sqlalchemy import delete, func, update
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.api.access import TOKEN_ROLES, Action, Viewer
from services.api.passwords import (
    MAX_LENGTH,
    hash_password,
    needs_rehash,
    password_problem,
    verify_password,
)
from services.api.settings import ApiSettings
from shared import ids
from shared.db.core import execute
from shared.db.models import (
    ApiTokenRow,
    LoginRow,
    LoginThrottleRow,
    PasswordLinkRow,
    PersonRow,
    TenantRow,
    WebSessionRow,
)
from shared.db.session import dialect_insert
from shared.events import utcnow

log = logging.getLogger(__name__)

SESSION_COOKIE = "sh_session"
CSRF_HEADER = "X-CSRF-Token"
WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# A session's last use and a token's are written at most this often: a page polling every
# few seconds does not write on every request.
STAMP_EVERY = timedelta(minutes=1)
MAX_SECRET = 256  # a cookie or bearer value longer than this is none of ours
WRONG = {"error": "wrong email or password", "field": "password"}


@dataclass(frozen=True)
class Principal:
    """Who a request authenticated as: a person through a session, or a machine's token."""

    person_id: str | None
    session_id: str | None = None  # the session row's id (SHA-256 of the cookie), if a session
    csrf_token: str | None = None
    token_id: str | None = None
    token_name: str = ""
    tenant_id: str | None = None  # a token's tenant
    role: str = ""  # a token's role


def clock_of(request: Request) -> Callable[[], datetime]:
    """The app's clock (`app.state.clock`, which tests move by hand), else the wall clock."""
    clock: Callable[[], datetime] | None = getattr(request.app.state, "clock", None)
    return clock or utcnow


def settings_of(request: Request) -> ApiSettings:
    settings: ApiSettings = request.app.state.settings
    return settings


def address_of(request: Request) -> str:
    """The client's address as the server saw it (behind a proxy: the proxy's, unless uvicorn
    is told to trust its forwarded headers)."""
    return (request.client.host if request.client else "")[:64] or "unknown"


def digest(secret: str) -> str:
    """What is stored of a cookie, token or link: its SHA-256, enough to recognise it."""
    return ids.token_sha256(secret)


# -- who is asking ----------------------------------------------------------------------------


async def authenticate(request: Request, session: AsyncSession) -> Principal | None:
    """The principal of a request: its bearer token, else its session cookie; None if neither
    is valid. An `Authorization` header of another scheme (a proxy's Basic) is not ours."""
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        return await _token_principal(request, session, credentials.strip())
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        return await _session_principal(request, session, cookie)
    return None


async def _token_principal(request: Request, session: AsyncSession, token: str) -> Principal | None:
    if not token or len(token) > MAX_SECRET:
        return None
    row = (await session.exec(select(ApiTokenRow).where(ApiTokenRow.token_sha256 == digest(token)))).first()
    if row is None or row.revoked_at is not None or row.role not in TOKEN_ROLES:
        return None
    now = clock_of(request)()
    if row.last_used_at is None or now - row.last_used_at >= STAMP_EVERY:
        await execute(
            session, update(ApiTokenRow).where(col(ApiTokenRow.id) == row.id).values(last_used_at=now)
        )
        await session.commit()
    return Principal(
        person_id=None, token_id=row.id, token_name=row.name, tenant_id=row.tenant_id, role=row.role
    )


async def _session_principal(request: Request, session: AsyncSession, cookie: str) -> Principal | None:
    if len(cookie) > MAX_SECRET:
        return None
    session_id = digest(cookie)
    row = await session.get(WebSessionRow, session_id)
    if row is None:
        return None
    settings = settings_of(request)
    now = clock_of(request)()
    ends = min(row.expires_at, row.created_at + settings.session_lifetime)
    if now >= ends or now - row.last_seen_at > settings.session_idle:
        await execute(session, delete(WebSessionRow).where(col(WebSessionRow.id_sha256) == session_id))
        await session.commit()
        return None
    person = await session.get(PersonRow, row.person_id)
    if person is None or not person.active:
        return None
    if now - row.last_seen_at >= STAMP_EVERY:
        await execute(
            session,
            update(WebSessionRow).where(col(WebSessionRow.id_sha256) == session_id).values(last_seen_at=now),
        )
        await session.commit()
    return Principal(person_id=row.person_id, session_id=session_id, csrf_token=row.csrf_token)


def check_csrf(request: Request, principal: Principal) -> None:
    """A write made with a session cookie must send the session's CSRF token in `X-CSRF-Token`
    (a page of another site can make the browser send the cookie, but cannot read the token).
    Token requests carry no cookie and need none."""
    if request.method not in WRITES or principal.session_id is None:
        return
    sent = request.headers.get(CSRF_HEADER, "")
    expected = principal.csrf_token or ""
    if not sent or not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
        raise HTTPException(
            403,
            {
                "error": f"CSRF token missing or wrong: send the header {CSRF_HEADER} with the csrf_token "
                "that sign-in (or GET /api/me) gave",
                "field": "csrf",
            },
        )


def roles_of(viewer: Viewer) -> dict[str, list[str]]:
    """The viewer's roles, each with the tenants it holds it in (an agency admin's: none named)."""
    return {role.value: sorted(tenants) for role, tenants in sorted(viewer.roles().items())}


# -- counting failed sign-ins -----------------------------------------------------------------
#
# An account and an address are counted alike: failures add up while each comes within
# `login_lockout` of the one before; the `login_max_failures`-th (per address
# `login_max_per_address`) locks them for `login_lockout` from then; a quiet `login_lockout`
# starts the count over. An account's count is its `LoginRow` (what `stayhuman invite` and a
# new password clear); an email that names nobody is counted in `LoginThrottleRow`
# "person:<email>" the same way, an address in "address:<ip>". Each step is one atomic
# statement, so replicas signing in at once count every failure.


def _throttle_key(kind: str, value: str) -> str:
    key = f"{kind}:{value}"
    return key if len(key) <= 400 else f"{kind}:sha256:{digest(value)}"


async def _throttled_until(
    session: AsyncSession, key: str, limit: int, now: datetime, window: timedelta
) -> datetime | None:
    row = await session.get(LoginThrottleRow, key)
    if row is None or row.attempts < limit:
        return None
    until = row.window_started_at + window
    return until if now < until else None


async def _count_throttle(session: AsyncSession, key: str, now: datetime, window: timedelta) -> None:
    table = LoginThrottleRow.__table__  # type: ignore[attr-defined]
    await execute(
        session,
        dialect_insert(session, table)
        .values(key=key, window_started_at=now, attempts=0)
        .on_conflict_do_nothing(index_elements=["key"]),
    )
    await execute(
        session,
        update(LoginThrottleRow)
        .where(col(LoginThrottleRow.key) == key, col(LoginThrottleRow.window_started_at) <= now - window)
        .values(attempts=0),
    )
    await execute(
        session,
        update(LoginThrottleRow)
        .where(col(LoginThrottleRow.key) == key)
        .values(attempts=col(LoginThrottleRow.attempts) + 1, window_started_at=now),
    )


async def _count_account(session: AsyncSession, person_id: str, now: datetime, settings: ApiSettings) -> None:
    table = LoginRow.__table__  # type: ignore[attr-defined]
    await execute(
        session,
        dialect_insert(session, table)
        .values(person_id=person_id, failed_attempts=0, updated_at=now)
        .on_conflict_do_nothing(index_elements=["person_id"]),
    )
    mine = col(LoginRow.person_id) == person_id
    await execute(
        session,
        update(LoginRow)
        .where(mine, col(LoginRow.updated_at) <= now - settings.login_lockout)
        .values(failed_attempts=0, locked_until=None),
    )
    await execute(
        session,
        update(LoginRow)
        .where(mine)
        .values(failed_attempts=col(LoginRow.failed_attempts) + 1, updated_at=now),
    )
    await execute(
        session,
        update(LoginRow)
        .where(mine, col(LoginRow.failed_attempts) >= settings.login_max_failures)
        .values(locked_until=now + settings.login_lockout),
    )


async def _forget_old_throttles(session: AsyncSession, now: datetime, settings: ApiSettings) -> None:
    """Throttle rows whose last failure is older than the window count nothing any more."""
    await execute(
        session,
        delete(LoginThrottleRow).where(
            col(LoginThrottleRow.window_started_at) < now - settings.login_lockout
        ),
    )


def _stamp(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _too_many(message: str, until: datetime, now: datetime, field: str) -> HTTPException:
    wait = max(1, math.ceil((until - now).total_seconds()))
    return HTTPException(429, {"error": message, "field": field}, headers={"Retry-After": str(wait)})


@functools.cache
def _dummy_hash() -> str:
    """A hash to verify against when there is none, so a wrong email takes as long as a wrong password."""
    return hash_password(secrets.token_urlsafe(16))


# -- request and answer bodies ----------------------------------------------------------------


def _text(value: str) -> str:
    """One line of text a database keeps: no control characters, no lone surrogates."""
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F or 0xD800 <= ord(ch) <= 0xDFFF for ch in value):
        raise ValueError("must be plain text, without control characters")
    return value


def _encodable(value: str) -> str:
    if any(0xD800 <= ord(ch) <= 0xDFFF for ch in value):
        raise ValueError("must be text (it has a lone surrogate)")
    return value


Email = Annotated[str, Field(min_length=1, max_length=320), AfterValidator(_text)]
Password = Annotated[str, Field(min_length=1, max_length=MAX_LENGTH), AfterValidator(_encodable)]
LinkToken = Annotated[str, Field(min_length=16, max_length=200, pattern=r"^[A-Za-z0-9_-]+$")]
PersonId = Annotated[str, Path(pattern=ids.SLUG_PATTERN, max_length=63)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SignInBody(_Body):
    email: Email
    password: Password


class SignedInAnswer(BaseModel):
    person_id: str
    name: str
    csrf_token: str = Field(description=f"Send it as {CSRF_HEADER} on every write made with the cookie.")
    roles: dict[str, list[str]] = Field(description="Each role held, with the tenants it is held in.")


class EndedAnswer(BaseModel):
    ended: int = Field(description="How many sessions ended.")


class PersonAnswer(BaseModel):
    id: str
    name: str
    email: str


class TokenAnswer(BaseModel):
    name: str
    tenant_id: str
    role: str


class TenantAnswer(BaseModel):
    id: str
    name: str


class MeAnswer(BaseModel):
    person: PersonAnswer | None = Field(description="The signed-in person; null for an API token.")
    token: TokenAnswer | None = Field(description="The API token asking; null for a person.")
    roles: dict[str, list[str]]
    tenants: list[TenantAnswer] = Field(description="Every tenant the asker has a role in.")
    csrf_token: str | None = Field(description="The session's CSRF token; null for an API token.")


class SetPasswordBody(_Body):
    token: LinkToken = Field(description="The part of the set-password link after '#'.")
    password: Password


class PasswordSetAnswer(BaseModel):
    person_id: str


class LinkSentAnswer(BaseModel):
    sent_to: str


class Problem(BaseModel):
    error: str
    field: str | None = None


def problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The error answers of a route, for the OpenAPI document."""
    return {code: {"model": Problem} for code in codes}


# -- the router -------------------------------------------------------------------------------


def _cookie_options(settings: ApiSettings) -> dict[str, Any]:
    return {"path": "/", "secure": settings.secure_cookies(), "httponly": True, "samesite": "lax"}


def auth_router(settings: ApiSettings) -> APIRouter:
    """Sign-in, sign-out, who am I, passwords and set-password links, and API tokens.

    Each route reads the settings of the app it serves (`app.state.settings`); `settings`
    is what the composition root built it with."""
    from services.api.scope import Access, access, load_viewer
    from services.api.tokens import tokens_router

    router = APIRouter(tags=["sign-in"])

    def current(request: Request) -> ApiSettings:
        found: ApiSettings | None = getattr(request.app.state, "settings", None)
        return found or settings

    @router.post(
        "/api/session",
        response_model=SignedInAnswer,
        responses=problems(400, 401, 429),
        summary="Sign in with email and password; sets the session cookie sh_session",
    )
    async def sign_in(body: SignInBody, request: Request, response: Response) -> SignedInAnswer:
        settings = current(request)
        now = clock_of(request)()
        address = address_of(request)
        email = body.email.strip()
        sessions: async_sessionmaker[AsyncSession] = request.app.state.sessions
        async with sessions() as session:
            address_key = _throttle_key("address", address)
            if until := await _throttled_until(
                session, address_key, settings.login_max_per_address, now, settings.login_lockout
            ):
                raise _too_many(
                    f"too many failed sign-ins from this address: try again after {_stamp(until)}",
                    until,
                    now,
                    "address",
                )
            people = (
                await session.exec(
                    select(PersonRow)
                    .where(func.lower(PersonRow.email) == func.lower(email))
                    .order_by(col(PersonRow.id))
                )
            ).all()
            logins = {person.id: await session.get(LoginRow, person.id) for person in people}
            account_key = _throttle_key("person", email.lower())
            locked = [
                login.locked_until
                for login in logins.values()
                if login is not None and login.locked_until is not None and login.locked_until > now
            ]
            if not people and (
                until := await _throttled_until(
                    session, account_key, settings.login_max_failures, now, settings.login_lockout
                )
            ):
                locked.append(until)
            if locked:
                raise _too_many(
                    f"too many failed sign-ins: this account is locked until {_stamp(max(locked))}",
                    max(locked),
                    now,
                    "email",
                )
            person = await _matching(people, logins, body.password)
            if person is None:
                for someone in people:
                    await _count_account(session, someone.id, now, settings)
                if not people:
                    await _count_throttle(session, account_key, now, settings.login_lockout)
                await _count_throttle(session, address_key, now, settings.login_lockout)
                await _forget_old_throttles(session, now, settings)
                await session.commit()
                log.info("sign-in refused: wrong email or password", extra={"address": address})
                raise HTTPException(401, WRONG)
            cookie = secrets.token_urlsafe(32)
            csrf_token = secrets.token_urlsafe(32)
            session.add(
                WebSessionRow(
                    id_sha256=digest(cookie),
                    person_id=person.id,
                    csrf_token=csrf_token,
                    address=address,
                    created_at=now,
                    last_seen_at=now,
                    expires_at=now + settings.session_lifetime,
                )
            )
            login = logins[person.id]
            assert login is not None and login.password_hash is not None
            login.failed_attempts = 0
            login.locked_until = None
            login.updated_at = now
            if needs_rehash(login.password_hash):  # the hasher's parameters moved on since
                login.password_hash = await asyncio.to_thread(hash_password, body.password)
            await session.commit()
            viewer = await load_viewer(session, Principal(person_id=person.id))
        response.set_cookie(
            SESSION_COOKIE,
            cookie,
            max_age=int(settings.session_lifetime.total_seconds()),
            **_cookie_options(settings),
        )
        log.info("signed in", extra={"person": person.id, "address": address})
        return SignedInAnswer(
            person_id=person.id, name=person.name, csrf_token=csrf_token, roles=roles_of(viewer)
        )

    @router.delete(
        "/api/session",
        status_code=204,
        response_class=Response,
        responses=problems(400, 401, 403),
        summary="Sign out: ends this session and clears its cookie",
    )
    async def sign_out(request: Request, asking: Annotated[Access, Depends(access)]) -> Response:
        session_id = _session_id(asking)
        await execute(asking.session, delete(WebSessionRow).where(col(WebSessionRow.id_sha256) == session_id))
        await asking.session.commit()
        log.info("signed out", extra={"person": asking.principal.person_id})
        response = Response(status_code=204)
        response.delete_cookie(SESSION_COOKIE, **_cookie_options(current(request)))
        return response

    @router.post(
        "/api/session/logout-everywhere",
        response_model=EndedAnswer,
        responses=problems(400, 401, 403),
        summary="Sign out everywhere: ends every session of the signed-in person",
    )
    async def sign_out_everywhere(
        request: Request, response: Response, asking: Annotated[Access, Depends(access)]
    ) -> EndedAnswer:
        _session_id(asking)
        person_id = asking.principal.person_id
        ended = await _end_sessions(asking.session, person_id or "")
        await asking.session.commit()
        log.info("signed out everywhere", extra={"person": person_id, "sessions": ended})
        response.delete_cookie(SESSION_COOKIE, **_cookie_options(current(request)))
        return EndedAnswer(ended=ended)

    @router.get(
        "/api/me",
        response_model=MeAnswer,
        responses=problems(401),
        summary="Who is asking: the person or token, their roles and tenants, the CSRF token",
    )
    async def me(asking: Annotated[Access, Depends(access)]) -> MeAnswer:
        principal = asking.principal
        person_answer = None
        if principal.person_id is not None:
            person = await asking.session.get(PersonRow, principal.person_id)
            assert person is not None  # authenticate found them
            person_answer = PersonAnswer(id=person.id, name=person.name, email=person.email)
        visible = asking.viewer.tenants()
        query = select(TenantRow.id, TenantRow.name).order_by(col(TenantRow.id))
        if visible is not None:
            query = query.where(col(TenantRow.id).in_(sorted(visible)))
        tenants = [TenantAnswer(id=id, name=name) for id, name in (await asking.session.exec(query)).all()]
        token = (
            TokenAnswer(name=principal.token_name, tenant_id=principal.tenant_id or "", role=principal.role)
            if principal.token_id is not None
            else None
        )
        return MeAnswer(
            person=person_answer,
            token=token,
            roles=roles_of(asking.viewer),
            tenants=tenants,
            csrf_token=principal.csrf_token,
        )

    @router.post(
        "/api/password",
        response_model=PasswordSetAnswer,
        responses=problems(400, 410),
        summary="Set a password with a set-password link (once); ends the person's sessions",
    )
    async def set_password(body: SetPasswordBody, request: Request) -> PasswordSetAnswer:
        now = clock_of(request)()
        sessions: async_sessionmaker[AsyncSession] = request.app.state.sessions
        async with sessions() as session:
            link = await session.get(PasswordLinkRow, digest(body.token))
            person = await session.get(PersonRow, link.person_id) if link is not None else None
            if link is None or person is None or not person.active:
                raise HTTPException(
                    400, {"error": "this link is not valid: ask for a new one", "field": "token"}
                )
            if link.used_at is not None:
                raise HTTPException(
                    410, {"error": "this link was already used: ask for a new one", "field": "token"}
                )
            if now >= link.expires_at:
                raise HTTPException(
                    410, {"error": "this link has expired: ask for a new one", "field": "token"}
                )
            if problem := password_problem(body.password):
                raise HTTPException(400, {"error": problem, "field": "password"})
            used = await execute(
                session,
                update(PasswordLinkRow)
                .where(
                    col(PasswordLinkRow.token_sha256) == link.token_sha256,
                    col(PasswordLinkRow.used_at).is_(None),
                )
                .values(used_at=now),
            )
            if used.rowcount != 1:  # another request took it a moment ago
                raise HTTPException(
                    410, {"error": "this link was already used: ask for a new one", "field": "token"}
                )
            password_hash = await asyncio.to_thread(hash_password, body.password)
            await store_password(session, person.id, password_hash, now)
            ended = await _end_sessions(session, person.id)
            await session.commit()
        log.info("password set with a link", extra={"person": person.id, "sessions_ended": ended})
        return PasswordSetAnswer(person_id=person.id)

    @router.post(
        "/api/people/{person_id}/password-link",
        status_code=202,
        response_model=LinkSentAnswer,
        responses=problems(400, 401, 403, 404, 409, 502),
        summary="Email a person a set-password link (the link is never returned)",
    )
    async def send_password_link(
        person_id: PersonId, request: Request, asking: Annotated[Access, Depends(access)]
    ) -> LinkSentAnswer:
        settings = current(request)
        person = await asking.person(person_id, Action.manage)
        if not person.active:
            raise HTTPException(
                409, {"error": f"{person.id} is deactivated: a link would not work", "field": "person"}
            )
        if not settings.smtp_host:
            raise HTTPException(
                409,
                {
                    "error": "no SMTP server is set (STAYHUMAN_SMTP_HOST), so no link can be emailed; "
                    "the operator can make one with `stayhuman invite`",
                    "field": "smtp",
                },
            )
        now = clock_of(request)()
        url = await make_link(
            asking.session,
            person.id,
            created_by=who(asking),
            public_url=settings.public_url(),
            now=now,
            lifetime=settings.password_link_lifetime,
        )
        await asking.session.commit()
        try:
            await _send_link(settings, person, url)
        except (aiosmtplib.SMTPException, OSError) as error:
            log.warning(
                "set-password link not sent", extra={"person": person.id, "error": type(error).__name__}
            )
            raise HTTPException(
                502,
                {
                    "error": f"the SMTP server did not take the message ({type(error).__name__})",
                    "field": "smtp",
                },
            ) from None
        log.info("set-password link sent", extra={"person": person.id, "by": who(asking)})
        return LinkSentAnswer(sent_to=person.email)

    router.include_router(tokens_router())
    return router


async def _matching(
    people: Sequence[PersonRow], logins: dict[str, LoginRow | None], password: str
) -> PersonRow | None:
    """The active person among `people` whose password this is. Every candidate is verified (a
    dummy hash when none is set), so an unknown email takes as long as a wrong password."""
    found: PersonRow | None = None
    for person in people:
        login = logins[person.id]
        stored = login.password_hash if login is not None else None
        matches = await asyncio.to_thread(verify_password, stored or _dummy_hash(), password)
        if matches and stored and person.active and found is None:
            found = person
    if not people:
        await asyncio.to_thread(verify_password, _dummy_hash(), password)
    return found


def _session_id(asking: Any) -> str:
    """The asking session's id; signing out is for a session, not a token."""
    session_id: str | None = asking.principal.session_id
    if session_id is None:
        raise HTTPException(
            400, {"error": "an API token has no session to end: revoke the token instead", "field": "auth"}
        )
    return session_id


async def _end_sessions(session: AsyncSession, person_id: str) -> int:
    result = await execute(session, delete(WebSessionRow).where(col(WebSessionRow.person_id) == person_id))
    return int(result.rowcount or 0)


def who(asking: Any) -> str:
    """How a row names who made it: a person's id, or "token:<name>"."""
    principal: Principal = asking.principal
    return (principal.person_id or f"token:{principal.token_name}")[:63]


async def store_password(session: AsyncSession, person_id: str, password_hash: str, now: datetime) -> None:
    """The person's new password hash; their count of failures and any lock are cleared."""
    login = await session.get(LoginRow, person_id)
    if login is None:
        login = LoginRow(person_id=person_id)
        session.add(login)
    login.password_hash = password_hash
    login.password_set_at = now
    login.failed_attempts = 0
    login.locked_until = None
    login.updated_at = now


async def make_link(
    session: AsyncSession,
    person_id: str,
    *,
    created_by: str,
    public_url: str,
    now: datetime,
    lifetime: timedelta,
) -> str:
    """A new set-password link for the person: only its SHA-256 is stored. The token is in the
    URL's fragment, which a browser never sends, so it reaches no server's log."""
    token = secrets.token_urlsafe(32)
    session.add(
        PasswordLinkRow(
            token_sha256=digest(token),
            person_id=person_id,
            created_by=created_by[:63],
            created_at=now,
            expires_at=now + lifetime,
        )
    )
    return f"{public_url.rstrip('/')}/set-password#{token}"


def _lifetime_text(lifetime: timedelta) -> str:
    hours = lifetime.total_seconds() / 3600
    if hours >= 48 and hours % 24 == 0:
        return f"{int(hours // 24)} days"
    if hours >= 1 and hours == int(hours):
        return f"{int(hours)} hour{'s' * (hours != 1)}"
    minutes = max(1, int(lifetime.total_seconds() // 60))
    return f"{minutes} minute{'s' * (minutes != 1)}"


def link_message(settings: ApiSettings, person: PersonRow, url: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = settings.smtp_from
    message["To"] = person.email
    message["Subject"] = "Set your StayHuman password"
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid(domain=settings.smtp_from.rpartition("@")[2].strip("> ") or None)
    message.set_content(
        f"Hello {person.name},\n\n"
        f"Set your password for StayHuman here:\n\n{url}\n\n"
        f"The link works once, for {_lifetime_text(settings.password_link_lifetime)}. "
        "If you did not expect it, ignore this email: nothing changes until the link is used.\n"
    )
    return message


async def _send_link(settings: ApiSettings, person: PersonRow, url: str) -> None:
    await aiosmtplib.send(
        link_message(settings, person, url),
        hostname=settings.smtp_host,
        port=settings.smtp_port,
        username=settings.smtp_username,
        password=settings.smtp_password.get_secret_value() if settings.smtp_password else None,
        use_tls=settings.smtp_security == "tls",
        start_tls=settings.smtp_security == "starttls",
        timeout=settings.smtp_timeout.total_seconds(),
    )
