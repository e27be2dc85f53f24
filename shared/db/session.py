"""Engines and sessions: SQLAlchemy asyncio on SQLite (WAL) or PostgreSQL."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.dialects.postgresql import dml as postgresql_dml
from sqlalchemy.dialects.sqlite import dml as sqlite_dml
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession

_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
}


def async_url(url: str) -> str:
    """Accept plain `sqlite:///` and `postgresql://` URLs and pick the asyncio driver."""
    parsed = make_url(url)
    driver = _DRIVERS.get(parsed.drivername)
    if driver:
        parsed = parsed.set(drivername=driver)
    return parsed.render_as_string(hide_password=False)


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def sqlite_path(url: str) -> Path | None:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database)


# SQLite's write-ahead log is copied into the database (a checkpoint) once it holds this many
# pages of 4 KB. The default, 1,000, is less than one routing unit of work writes once the
# tables outgrow memory: ids are hashes, so each row lands on a page of its own in each index.
WAL_CHECKPOINT_PAGES = 10_000
# The page cache of each connection of a writer (the router), in KiB: its indexes' pages stay
# in memory instead of being read again for every unit of work. SQLite's default is 2 MB.
WRITER_CACHE_KIB = 32_768


def create_engine(url: str, *, exclusive_writes: bool = False, **kwargs: Any) -> AsyncEngine:
    """An engine with the pragmas that make SQLite safe under concurrent processes.

    `exclusive_writes` (SQLite): every transaction takes the database's write lock when it
    begins (BEGIN IMMEDIATE), so the units of work of several processes run one after the
    other, each seeing what the one before it committed, as if they held every row lock of
    PostgreSQL; a process waits for the lock (busy timeout) instead of failing to upgrade a
    read into a write."""
    url = async_url(url)
    if is_sqlite(url):
        path = sqlite_path(url)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 30}, **kwargs)

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            # A checkpoint when the log holds 40 MB rather than 4: a page written by one unit of
            # work after another is copied into the database once, not once per unit.
            cursor.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}")
            if exclusive_writes:
                cursor.execute(f"PRAGMA cache_size=-{WRITER_CACHE_KIB}")
            cursor.close()
            if exclusive_writes:
                dbapi_connection.isolation_level = None  # the driver leaves BEGIN to the listener

        if exclusive_writes:

            @event.listens_for(engine.sync_engine, "begin")
            def _begin_immediate(connection: Any) -> None:
                connection.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("pool_pre_ping", True)
    # A host that does not answer at all fails in 10 s, not asyncpg's 60: readiness says so
    # and a command stops, instead of hanging.
    connect_args = {"timeout": 10, **kwargs.pop("connect_args", {})}
    # Each statement planned with the values it is called with, on the tables as they are.
    # asyncpg prepares a statement once per connection, and after five calls PostgreSQL may keep
    # one generic plan for it, costed on the table sizes of that moment and kept as they grow
    # (until the next ANALYZE; never, without autovacuum). notify's escalation chains' lookup,
    # planned while `conversation` held 5,000 rows, kept a sequential scan of it: at 65,000 rows
    # each batch of 500 deadlines cost PostgreSQL 1 to 2 s of CPU, and notify armed 450 to 900
    # a second instead of thousands. Planning every call costs 5 to 15 µs of PostgreSQL CPU a
    # statement. Set when a connection opens: no round trip of its own.
    connect_args["server_settings"] = {
        "plan_cache_mode": "force_custom_plan",
        **connect_args.get("server_settings", {}),
    }
    return create_async_engine(url, connect_args=connect_args, **kwargs)


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)


@asynccontextmanager
async def transaction(factory: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """One unit of work: commits on success, rolls back on any error."""
    async with factory() as session, session.begin():
        yield session


async def ping(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))


def dialect_insert(session: AsyncSession, table: Any) -> Any:
    """An INSERT with the ON CONFLICT clauses of the session's database (SQLite or PostgreSQL)."""
    name = session.bind.dialect.name if session.bind is not None else "sqlite"
    if name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table)
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table)


# SQLAlchemy's own SQLite and PostgreSQL inserts do not take part in its statement cache (their
# ON CONFLICT clauses have no cache key): each is compiled again on every execution, and that
# on every alert. The inserts below are the same statements, with a clause of one form only (DO
# NOTHING on any conflict, no target) whose cache key is its class: compiled once per table and
# set of columns, like a plain INSERT.


class _SqliteDoNothing(sqlite_dml.OnConflictDoNothing):
    inherit_cache = True
    _traverse_internals: Any = []


class _SqliteInsertIgnoring(sqlite_dml.Insert):
    inherit_cache = True


class _PostgresDoNothing(postgresql_dml.OnConflictDoNothing):
    inherit_cache = True
    _traverse_internals: Any = []


class _PostgresInsertIgnoring(postgresql_dml.Insert):
    inherit_cache = True


def insert_ignoring(session: AsyncSession, table: Any) -> Any:
    """`INSERT ... ON CONFLICT DO NOTHING` (a row that conflicts on any unique key is left as it
    is) for the session's database, compiled once and then taken from SQLAlchemy's cache."""
    name = session.bind.dialect.name if session.bind is not None else "sqlite"
    if name == "postgresql":
        statement: Any = _PostgresInsertIgnoring(table)
        statement._post_values_clause = _PostgresDoNothing()
    else:
        statement = _SqliteInsertIgnoring(table)
        statement._post_values_clause = _SqliteDoNothing()
    return statement
