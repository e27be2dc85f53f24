"""What a command needs of the database: there, reachable, and at the schema of this version.

`up` and `migrate` create and migrate it, and `apply` migrates the SQLite file of the state
folder (the default, on one machine) itself. Every other command only reads: it never
creates a database, and a missing, unreachable or unmigrated one is an error that says
what to run, with nothing left behind.
"""

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

import asyncpg
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from shared.db.migrate import alembic_config, current_revision, head_revision, upgrade
from shared.db.session import create_engine, ping, sqlite_path
from shared.settings import CommonSettings

WHERE = "STAYHUMAN_STATE_DIR or STAYHUMAN_DATABASE_URL says where it is"


class DatabaseNotReady(RuntimeError):
    """The command cannot use the database; the message says what to do. `code` 2: run
    something first; 1: the database did not answer, try again."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def shown(url: str) -> str:
    """The URL without its password, for messages."""
    return make_url(url).render_as_string(hide_password=True)


def _reason(error: BaseException) -> str:
    cause = getattr(error, "orig", None) or error
    text = str(cause).strip().splitlines()
    return text[0] if text else type(cause).__name__


@contextmanager
def reaching(url: str) -> Iterator[None]:
    """Turn a database that does not answer (or refuses us) into DatabaseNotReady."""
    try:
        yield
    except (SQLAlchemyError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
        raise DatabaseNotReady(f"cannot use the database at {shown(url)}: {_reason(error)}", code=1) from None


def is_local_default(settings: CommonSettings) -> bool:
    """The SQLite file in the state folder, used when STAYHUMAN_DATABASE_URL is unset."""
    return settings.database_url is None


def exists(url: str) -> bool:
    """False only for a SQLite file that is not there (a server database may always exist)."""
    path = sqlite_path(url)
    return path is None or path.is_file()


def check_schema(url: str) -> None:
    """The database exists and has the schema this version needs (or a newer one: during an
    upgrade the running version keeps working on the migrated schema). Creates nothing."""
    path = sqlite_path(url)
    if path is not None and not path.is_file():
        raise DatabaseNotReady(
            f"no database at {path} ({WHERE}): `stayhuman up` creates it, or run `stayhuman migrate`"
        )
    with reaching(url):
        revision = asyncio.run(current_revision(url))
    head = head_revision()
    if revision == head:
        return
    if revision is None:
        raise DatabaseNotReady(
            f"the database at {shown(url)} has no StayHuman tables yet: run `stayhuman migrate` first"
        )
    try:
        ScriptDirectory.from_config(alembic_config(url)).get_revision(revision)
    except CommandError:
        return  # a newer version migrated it: migrations only add, so this one keeps working
    raise DatabaseNotReady(
        f"the database at {shown(url)} is at schema revision {revision}, this version needs {head}: "
        "run `stayhuman migrate` first"
    )


def migrate(url: str) -> None:
    """Bring the schema to this version's revision (creating a SQLite file)."""
    with reaching(url):
        upgrade(url)


def check_reachable(url: str) -> None:
    """A server database answers (a SQLite file is created when needed: nothing to check)."""
    if sqlite_path(url) is not None:
        return

    async def run() -> None:
        engine = create_engine(url)
        try:
            await ping(engine)
        finally:
            await engine.dispose()

    with reaching(url):
        asyncio.run(run())
