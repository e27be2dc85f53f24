"""Structure-aware fuzzing, one library for every parser's tests: documented payloads changed in
one to three places, every place changed alone (a sweep), and hostile corpora.

A change picks a place in a document (the document itself, an object's value or a list's
item) and replaces it with a hostile value, taints a string (a hostile suffix), removes it,
doubles it or puts a stranger beside it. Documents go to in-process parsers as they are, and
to endpoints encoded as bytes: values that JSON cannot carry from Python (more than 4,300
digits, nesting deeper than any parser) become the raw text a sender would write.
"""

import json
import os
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

# `make test` runs every fuzz test with 4,000 cases per parser (STAYHUMAN_FUZZ_EXAMPLES for more);
# `make test-unit` fewer.
EXAMPLES = int(os.environ.get("STAYHUMAN_FUZZ_EXAMPLES", "4000"))


def properties(examples: int) -> settings:
    """A property test's settings: its own number of examples, halved in the fast lane (fewer
    than 1,000 fuzz cases asked for); `make test` runs them all."""
    return settings(
        max_examples=examples if EXAMPLES >= 1000 else examples // 2, deadline=None, database=None
    )


FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


def deep(levels: int) -> Any:
    value: Any = None
    for _ in range(levels):
        value = [value]
    return value


DEEP = deep(5_000)  # deeper than Python's recursion limit
TIMESTAMPS = [
    "2025-13-45T99:99:99Z", "9999-12-31T23:59:59Z", "0001-01-01T00:00:00+01:00", "2025-11-26T00:00:00",
    "2025-11-26", "yesterday", "", "2025-11-26T00:00:00.000Z\x00", "2027-01-01T00:00:00Z", "1970-01-01T00:00:00Z",
    "2025-11-26T00:00:00+14:00", "2025-11-26T00:00:00.123456789Z", "+002025-11-26T00:00:00Z",
    "2262-04-12T00:00:00Z", "0001-01-01T00:30:00+05:00", "9999-12-31T23:59:59-05:00", "0001-01-01T00:00:00Z",
]  # fmt: skip
HOSTILE_VALUES: list[Any] = [
    None, True, False, 0, -1, 1.5, float("nan"), float("inf"), -float("inf"), 2**31, 2**32 - 1, 2**63 - 1,
    2**63, 2**64, -(2**63) - 1, 10**30, 1e308,
    10**4400, -(10**5000),  # more digits than Python writes as text
    "", " ", "\x00", "a\x00b", "\ud800", "x\udfff", "x" * 65_536, "9" * 513, "x" * 1025, "<" * 20_000,
    "</p><p" * 3_000, "<script>alert(1)</script>", "@" * 1_000, "\u202e\ufeff", "../../etc/passwd", "sha256=",
    "1e400", "NaN", "{}", "javascript:alert(1)", "https://[::1]/", "http://169.254.169.254/",
    {}, [], [None], {"": None}, {"id": {}}, [[[]]], DEEP, deep(200), {"$type": "x", "uri": 5},
    *TIMESTAMPS,
]  # fmt: skip
SUFFIXES = ["\x00", "\ud800", " \t\n", "x" * 65_536, "<", "Z"]


def hostile(*domain: Any) -> st.SearchStrategy[Any]:
    """Hostile values, with values of the domain under test (ids, URLs, keys it knows)."""
    return st.one_of(
        st.sampled_from([*HOSTILE_VALUES, *domain]),
        st.sampled_from(SUFFIXES),
        st.text(st.characters(codec=None, categories=["Cs", "Cc", "Zs", "Lu", "Nd", "Po"]), max_size=8),
        st.text(max_size=40),
        st.integers(),
        st.floats(),
        st.lists(st.one_of(st.none(), st.integers(), st.text(max_size=8)), max_size=3),
        st.dictionaries(
            st.text(max_size=8), st.one_of(st.none(), st.integers(), st.text(max_size=8)), max_size=3
        ),
    )


def places(document: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a document: the document itself, each object's values, each list's items."""
    found = [path]
    if isinstance(document, dict):
        for key, value in document.items():
            found += places(value, (*path, key))
    elif isinstance(document, list):
        for index, value in enumerate(document):
            found += places(value, (*path, index))
    return found


OPERATIONS = ["replace", "replace", "taint", "remove", "double", "insert"]


def changed(node: Any, place: tuple[Any, ...], operation: str, value: Any) -> Any:
    """A copy of `node` with one place changed. Only the containers on the way are copied: the
    documented payloads and the hostile values are shared between cases and never changed."""
    if not place:
        return value if operation == "replace" else node
    step, rest = place[0], place[1:]
    if isinstance(node, dict) and step in node:
        copied: Any = dict(node)
    elif isinstance(node, list) and isinstance(step, int) and step < len(node):
        copied = list(node)
    else:
        return node  # an earlier change took this place away
    if rest:
        copied[step] = changed(node[step], rest, operation, value)
    elif operation == "replace":
        copied[step] = value
    elif operation == "taint":  # a string that keeps its look but carries something hostile
        copied[step] = node[step] + value if isinstance(node[step], str) and isinstance(value, str) else value
    elif operation == "remove":
        del copied[step]
    elif operation == "double":
        if isinstance(copied, list):
            copied.insert(step, node[step])
        else:
            copied[step] = [node[step], node[step]]
    elif isinstance(copied, list):
        copied.insert(step, value)
    else:
        copied[f"{step}_"] = value
    return copied


def mutated_document(document: Any, *domain: Any) -> st.SearchStrategy[Any]:
    """A documented payload changed in one to three places. Each draw costs, so one number
    picks the place, the change, and whether another change follows."""
    where = places(document)
    choices = len(where) * len(OPERATIONS)
    values = hostile(*domain)

    @st.composite
    def payload(draw: st.DrawFn) -> Any:
        result = document
        for _ in range(3):
            choice = draw(st.integers(0, 2 * choices - 1))
            place = where[choice % choices // len(OPERATIONS)]
            operation = OPERATIONS[choice % len(OPERATIONS)]
            value = draw(values) if operation in ("replace", "taint", "insert") else None
            result = changed(result, place, operation, value)
            if choice < choices:
                break
        return result

    return payload()


def mutated(document: Any, *domain: Any) -> st.SearchStrategy[bytes]:
    """The same, encoded as the body a sender would send."""
    return mutated_document(document, *domain).map(encode)


def sweep(document: Any) -> list[Any]:
    """The documented payload changed field by field: every place replaced by every hostile
    value, removed, and every string given every hostile suffix."""
    payloads = []
    for place in places(document):
        payloads += [changed(document, place, "replace", value) for value in HOSTILE_VALUES]
        payloads.append(changed(document, place, "remove", None))
        if isinstance(_at(document, place), str):
            payloads += [changed(document, place, "taint", suffix) for suffix in SUFFIXES]
    return payloads


def _at(document: Any, place: tuple[Any, ...]) -> Any:
    for step in place:
        document = document[step]
    return document


_HUGE, _DEEP = "\x1fHUGE\x1f", "\x1fDEEP\x1f"


def _writable(value: Any, depth: int = 0) -> Any:
    if depth > 300:
        return _DEEP
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 13_000:
        return _HUGE
    if isinstance(value, list):
        return [_writable(item, depth + 1) for item in value]
    if isinstance(value, dict):
        return {key: _writable(item, depth + 1) for key, item in value.items()}
    return value


def encode(document: Any) -> bytes:
    """JSON as a sender writes it (\\ud800 escapes, NaN), with 5,000-digit numbers and 10,000-deep
    nesting written out where Python's encoder would refuse them."""
    raw = json.dumps(_writable(document)).encode()
    return raw.replace(json.dumps(_HUGE).encode(), b"9" * 5000).replace(
        json.dumps(_DEEP).encode(), b"[" * 10_000 + b"]" * 10_000
    )


def raw_bodies(*domain: bytes) -> st.SearchStrategy[bytes]:
    """Whole bodies no documented payload looks like (with some of the domain's own)."""
    return st.one_of(
        st.binary(max_size=300),
        st.sampled_from(
            [
                b"",
                b" ",
                b"null",
                b"0",
                b"[]",
                b"{}",
                b'"x"',
                b"true",
                b"NaN",
                b"[NaN, Infinity]",
                b"\xff\xfe\x00",
                b"\xef\xbb\xbf{}",
                b"\xc3\x28",
                b"\x00" * 1000,
                b"<html><body>502 Bad Gateway</body></html>",
                b"{" * 100_000,
                b"[" * 4000 + b"]" * 4000,
                b"[" * 50_000 + b"]" * 50_000,
                b'{"a":' * 20_000,
                b'{"a": ' + b"1" * 5000 + b"}",
                b'{"a": "\\ud800"}',
                b'{"a": "\\u0000"}',
                b'{"a": 1e99999}',
                b'{"a": 1} garbage',
                b"A" * 70_000,
                *domain,
            ]
        ),
    )
