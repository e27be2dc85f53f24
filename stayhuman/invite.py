"""`stayhuman invite PERSON`: a set-password link for a person, made at the command line.

The operator hands the link over (it is printed, never emailed from here): the first
password of an installation's first admin, or a person locked out without an SMTP server.
The link works once, for `lifetime`; only its SHA-256 is stored, and its token sits in the
URL's fragment, which a browser never sends to a server. `set_password` sets a password
outright, for `up --demo`'s demo people.
"""

from datetime import timedelta

from services.api.auth import make_link, store_password
from services.api.passwords import hash_password, password_problem
from shared.events import utcnow
from shared.preflight import Refused, check_person
from stayhuman.control import database_session


class InviteError(ValueError):
    """Nothing was made; the message says why (an unknown or inactive person, a weak password)."""


async def invite(database_url: str, person_id: str, *, public_url: str, lifetime: timedelta) -> str:
    """A new set-password link for an active person; returns its URL. Links made before keep
    working until they are used or expire."""
    async with database_session(database_url) as session:
        try:
            await check_person(session=session, person_id=person_id)
        except Refused as refused:
            raise InviteError(str(refused)) from None
        url = await make_link(
            session,
            person_id,
            created_by="stayhuman invite",
            public_url=public_url,
            now=utcnow(),
            lifetime=lifetime,
        )
        await session.commit()
    return url


async def set_password(database_url: str, person_id: str, password: str) -> None:
    """Set an active person's password (and lift any lock on their sign-in)."""
    if problem := password_problem(password):
        raise InviteError(problem)
    password_hash = hash_password(password)
    async with database_session(database_url) as session:
        try:
            await check_person(session=session, person_id=person_id)
        except Refused as refused:
            raise InviteError(str(refused)) from None
        await store_password(session, person_id, password_hash, utcnow())
        await session.commit()
