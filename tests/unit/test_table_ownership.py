"""Each table has one owner (shared/db/ownership.py); the source of every part must agree.

Read from the code itself: every insert, update, delete and added row of a part is
checked against the owner of its table, and every other table it names against
its read paths. Shared library code (`shared/`) writes only for its callers.
"""

import ast
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import Table

from shared.db import core, models
from shared.db.ownership import OWNER, READS, ROUTER_PERSON_COLUMNS, SHARED_WRITES, Part

ROOT = Path(__file__).resolve().parents[2]
PARTS: dict[Part, list[str]] = {
    "router": ["services/router"],
    "notify": ["services/notify"],
    "ingest": ["services/ingest"],
    "api": ["services/api"],
    "outbound": ["services/outbound"],
    "configuration": ["stayhuman", "shared/preflight.py"],
}
WRITERS = {"insert", "update", "delete", "pg_insert", "sqlite_insert"}


def _tables_by_name() -> dict[str, str]:
    """Every name the code uses for a table: the Core constants and the Row classes."""
    names = {name: value.name for name, value in vars(core).items() if isinstance(value, Table)}
    for name, value in vars(models).items():
        if isinstance(value, type) and name.endswith("Row") and hasattr(value, "__tablename__"):
            names[name] = str(value.__tablename__)
    return names


TABLES = _tables_by_name()


@dataclass(frozen=True)
class Use:
    table: str
    write: bool
    where: str
    columns: frozenset[str] = frozenset()


def _files(part: Part) -> Iterator[Path]:
    for entry in PARTS[part]:
        path = ROOT / entry
        yield from sorted(path.rglob("*.py")) if path.is_dir() else [path]


def _table_of(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return TABLES.get(node.id)
    if isinstance(node, ast.Attribute):
        return TABLES.get(node.attr)
    return None


def _called(node: ast.Call) -> str:
    func = node.func
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""


def _innermost_writer(node: ast.AST) -> ast.Call | None:
    """`update(PEOPLE).where(...).values(...)`: the update(...) call at the root of the chain."""
    while isinstance(node, ast.Call | ast.Attribute):
        if isinstance(node, ast.Call) and _called(node) in WRITERS:
            return node
        node = node.func if isinstance(node, ast.Call) else node.value
    return None


@functools.cache
def uses(part: Part) -> list[Use]:
    found: list[Use] = []
    for path in _files(part):
        tree = ast.parse(path.read_text(), str(path))
        written: set[int] = set()
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            name = _called(node)
            if name in WRITERS and node.args and (table := _table_of(node.args[0])):
                written.add(id(node.args[0]))
                found.append(Use(table, True, where))
            elif name in {"add", "add_all", "_upsert"}:
                for arg in ast.walk(node):
                    if isinstance(arg, ast.Call) and (table := _table_of(arg.func)):
                        written.add(id(arg.func))
                        found.append(Use(table, True, where))
                    elif name == "_upsert" and (table := _table_of(arg)):
                        written.add(id(arg))
                        found.append(Use(table, True, where))
            elif name == "values" and (root := _innermost_writer(node.func)) and root.args:
                table = _table_of(root.args[0])
                if table:
                    keys = {k.arg for k in node.keywords if k.arg}
                    for arg in node.args:
                        if isinstance(arg, ast.Dict):
                            keys |= {k.value for k in arg.keys if isinstance(k, ast.Constant)}
                    found.append(Use(table, True, where, frozenset(keys)))
        for node in ast.walk(tree):
            if isinstance(node, ast.Name | ast.Attribute) and id(node) not in written:
                table = _table_of(node)
                if table and not (isinstance(node, ast.Name) and node.id in {"ix", "t"}):
                    found.append(Use(table, False, f"{path.relative_to(ROOT)}:{node.lineno}"))
    return found


@pytest.mark.parametrize("part", list(PARTS))
def test_a_part_writes_only_the_tables_it_owns(part: Part) -> None:
    wrong = [
        f"{use.where}: writes {use.table} (owned by {OWNER[use.table]})"
        for use in uses(part)
        if use.write and OWNER[use.table] != part and (part, use.table) not in SHARED_WRITES
    ]
    assert wrong == []


@pytest.mark.parametrize("part", list(PARTS))
def test_a_part_reads_another_parts_tables_only_along_its_read_paths(part: Part) -> None:
    wrong = [
        f"{use.where}: reads {use.table} (owned by {OWNER[use.table]}), not a read path of {part}"
        for use in uses(part)
        if not use.write and OWNER[use.table] != part and use.table not in READS[part]
    ]
    assert wrong == []


def test_the_router_writes_only_its_own_columns_of_a_person() -> None:
    columns = {
        column for use in uses("router") if use.write and use.table == "person" for column in use.columns
    }
    assert columns and columns <= ROUTER_PERSON_COLUMNS, columns


def test_every_table_has_an_owner() -> None:
    assert set(OWNER) == {str(table.name) for table in models.SQLModel.metadata.sorted_tables}


def test_the_scan_sees_what_it_checks() -> None:
    """A scan that found nothing would pass everything: it must see each part's own writes."""
    for part, table in (("router", "conversation"), ("notify", "deadline"), ("configuration", "tenant")):
        assert any(use.write and use.table == table for use in uses(part)), (part, table)  # type: ignore[arg-type]
    assert any(not use.write and use.table == "conversation" for use in uses("notify"))
