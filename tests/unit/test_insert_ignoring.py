"""`insert_ignoring`: the same INSERT ... ON CONFLICT DO NOTHING as SQLAlchemy's dialect inserts,
but compiled once and then taken from SQLAlchemy's statement cache (theirs never are)."""

from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy.dialects import postgresql, sqlite

from shared.db.core import ALERTS, DELIVERIES
from shared.db.session import dialect_insert, insert_ignoring

DIALECTS = {"sqlite": sqlite.dialect(), "postgresql": postgresql.dialect()}


def on(name: str) -> Any:
    """What `insert_ignoring` reads of a session: the name of its database's dialect."""
    return SimpleNamespace(bind=SimpleNamespace(dialect=SimpleNamespace(name=name)))


@pytest.mark.parametrize("name", DIALECTS)
def test_the_statement_is_the_dialects_own(name: str) -> None:
    session, dialect = on(name), DIALECTS[name]
    for ours, theirs in (
        (insert_ignoring(session, ALERTS).values(id="a", status="sending"),
         dialect_insert(session, ALERTS).values(id="a", status="sending").on_conflict_do_nothing()),
        (insert_ignoring(session, DELIVERIES), dialect_insert(session, DELIVERIES).on_conflict_do_nothing()),
    ):  # fmt: skip
        assert str(ours.compile(dialect=dialect)) == str(theirs.compile(dialect=dialect))
        assert str(ours.compile(dialect=dialect)).endswith("ON CONFLICT DO NOTHING")


@pytest.mark.parametrize("name", DIALECTS)
def test_it_is_cached_once_per_table_and_columns(name: str) -> None:
    session = on(name)
    one = insert_ignoring(session, ALERTS).values(id="a", status="sending")._generate_cache_key()
    same = insert_ignoring(session, ALERTS).values(id="b", status="sent")._generate_cache_key()
    other_columns = insert_ignoring(session, ALERTS).values(id="a")._generate_cache_key()
    other_table = insert_ignoring(session, DELIVERIES).values(id="a", status="sending")._generate_cache_key()
    assert one is not None and one == same
    assert one != other_columns and one != other_table
    assert (
        dialect_insert(session, ALERTS).on_conflict_do_nothing()._generate_cache_key() is None
    )  # why it exists
