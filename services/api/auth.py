"""Signing in: passwords, sessions, CSRF, throttling, set-password links and API tokens."""

from dataclasses import dataclass

from fastapi import Request
from sqlmodel.ext.asyncio.session import AsyncSession


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


async def authenticate(request: Request, session: AsyncSession) -> Principal | None:
    raise NotImplementedError


def check_csrf(request: Request, principal: Principal) -> None:
    raise NotImplementedError
