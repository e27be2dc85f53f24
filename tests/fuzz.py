"""Structure-aware fuzzing: documented payloads mutated one field at a time, and hostile corpora.

A mutation picks one place in a JSON document (an object's value, a list's item, or the
document itself) and replaces it with a hostile value, removes it, or adds a stranger
beside it. Values JSON cannot carry from Python (5,000-digit numbers, nesting deeper than
any parser goes) travel as placeholders replaced in the encoded bytes.
"""

import copy
import json
import os
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

# `make test` runs every fuzz test with 10,000 cases per parser; `make test-unit` fewer.
EXAMPLES = int(os.environ.get("STAYHUMAN_FUZZ_EXAMPLES", "10000"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)

HUGE_NUMBER = "\x1fHUGE\x1f"
DEEP = "\x1fDEEP\x1f"
_RAW = {
    json.dumps(HUGE_NUMBER): b"9" * 5000,
    json.dumps(DEEP): b"[" * 50_000 + b"]" * 50_000,
}

hostile_strings = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        [
            "",
            " ",
            "\x00",
            "a\x00b",
            "\ud800",
            "\udfff lone",
            "x" * 513,
            "9" * 65_537,
            "\u202e\u0000\uffff",
            "../../etc/passwd",
            "sha256=",
            "2026-13-45T99:99:99Z",
            "9999-12-31T23:59:59Z",
            "0001-01-01T00:00:00Z",
            "2262-04-12T00:00:00Z",
            "0001-01-01T00:30:00+05:00",
            "9999-12-31T23:59:59-05:00",
            "1e400",
            "NaN",
            "{}",
        ]
    ),
)
hostile_numbers = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -1, 2**31, 2**32 - 1, 2**63 - 1, 2**63, 2**64, 10**30]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.just(1e308),
)
hostile_values: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    hostile_numbers,
    hostile_strings,
    st.sampled_from([HUGE_NUMBER, DEEP, [], {}, [None], {"": None}, [[[[[]]]]]]),
    st.lists(st.one_of(st.none(), hostile_numbers, hostile_strings), max_size=3),
    st.dictionaries(st.text(max_size=8), st.one_of(st.none(), hostile_numbers, hostile_strings), max_size=3),
)


def paths(document: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a document, the document itself first."""
    found = [prefix]
    if isinstance(document, dict):
        for key, value in document.items():
            found += paths(value, (*prefix, key))
    elif isinstance(document, list):
        for index, value in enumerate(document):
            found += paths(value, (*prefix, index))
    return found


def encode(document: Any) -> bytes:
    raw = json.dumps(document).encode()
    for placeholder, replacement in _RAW.items():
        raw = raw.replace(placeholder.encode(), replacement)
    return raw


@st.composite
def mutated(draw: st.DrawFn, document: Any) -> bytes:
    """`document` with one place replaced, removed, or given a stranger, encoded as JSON."""
    result = copy.deepcopy(document)
    where = draw(st.sampled_from(paths(result)))
    action = draw(st.sampled_from(["replace", "replace", "remove", "add"]))
    value = draw(hostile_values)
    if not where:
        return encode(value if action == "replace" else result)
    parent = result
    for step in where[:-1]:
        parent = parent[step]
    last = where[-1]
    if action == "replace":
        parent[last] = value
    elif action == "remove":
        del parent[last]
    elif isinstance(parent[last], dict):
        parent[last][draw(st.text(max_size=12))] = value
    elif isinstance(parent[last], list):
        parent[last].append(value)
    else:
        parent[last] = value
    return encode(result)


raw_bodies = st.one_of(
    st.binary(max_size=200),
    st.sampled_from(
        [
            b"",
            b"null",
            b"[]",
            b"{}",
            b'"x"',
            b"\xff\xfe\x00",
            b"{" * 100_000,
            b"[" * 50_000 + b"]" * 50_000,
            b'{"a": ' + b"1" * 5000 + b"}",
            b'{"a": "\\ud800"}',
            b'{"a": "\\u0000"}',
            b'{"a": 1e99999}',
        ]
    ),
)
