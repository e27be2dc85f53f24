"""UtcDateTime's one-step SQLite text agrees with SQLAlchemy's two steps, value for value: the
router's inserts use the first, every other statement the second, and SQL compares the texts."""

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.dialects import sqlite

from shared.db.core import CONVERSATIONS, _insert_plan
from shared.db.types import UtcDateTime

DIALECT = sqlite.dialect()
TWO_STEPS = UtcDateTime().dialect_impl(DIALECT).bind_processor(DIALECT)


@given(
    st.datetimes(
        min_value=datetime(1, 1, 2),
        max_value=datetime(9999, 12, 30),
        timezones=st.sampled_from(
            [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8))]
        ),
    )
)
def test_the_one_step_text_is_the_two_steps_text(value: datetime) -> None:
    assert UtcDateTime.sqlite_text(value) == TWO_STEPS(value)


def test_none_stays_none_and_a_naive_value_is_refused_by_both() -> None:
    assert UtcDateTime.sqlite_text(None) is None is TWO_STEPS(None)
    with pytest.raises(ValueError, match="naive"):
        UtcDateTime.sqlite_text(datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="naive"):
        TWO_STEPS(datetime(2026, 1, 1))


def test_inserts_on_sqlite_convert_every_utc_column_in_one_step() -> None:
    columns = tuple(column.name for column in CONVERSATIONS.columns)
    plan = _insert_plan(CONVERSATIONS, DIALECT, columns)
    assert plan is not None
    _sql, order, steps = plan
    converted = {order[index]: convert for index, convert in steps}
    assert converted["opened_at"] is UtcDateTime.sqlite_text
    assert converted["due_at"] is UtcDateTime.sqlite_text
