"""What the polled feeds share: reading a page, rejecting one item alone, and the high-water
mark of the feeds that answer newest first with no "since" (Bluesky, YouTube).

A page is one answer of a platform's API. Its items are read one by one: an item that is
not in the documented shape is rejected alone (it goes to ingest's dead letter with its
problem) and the rest of the page is kept, so a poller is never stuck behind one bad item.
"""

import base64
import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from services.ingest.connectors.model import ENTRY_ERRORS, MAX_CLOCK_AHEAD, MalformedPayload, Parsed

# What reading one hostile item can raise besides ENTRY_ERRORS (a value nested deeper than
# Python's recursion limit when it is written down).
ITEM_ERRORS = (*ENTRY_ERRORS, RecursionError)

# Values nested deeper than this are not part of any documented page; they are read as null
# so that one such item does not make the whole page unreadable.
MAX_DEPTH = 100
# A whole string (possessive: linear however long), a bracket, or a quote that opens a
# string never closed.
_TOKEN = re.compile(r'"(?:[^"\\]++|\\.)*+"|[\[\]{}]|"', re.DOTALL)


def load_page(body: bytes) -> Any:
    """A platform's answer as JSON, or MalformedPayload naming why not (bad UTF-8, bad JSON).

    One item does not sink the page: a number of more digits than Python converts becomes a
    float (inf), which no documented integer field accepts, and a value nested deeper than
    MAX_DEPTH becomes null; the item holding it is then rejected alone, or kept without it.
    """
    try:
        text = body.decode(json.detect_encoding(body))
    except UnicodeDecodeError as error:
        raise MalformedPayload(f"body is not JSON: {error}") from None
    try:
        return _loads(text)
    except RecursionError:
        pass
    try:
        return _loads(_cut_deep_values(text))
    except RecursionError:
        raise MalformedPayload("body is not JSON we accept: it nests too deeply") from None


def _loads(text: str) -> Any:
    try:
        return json.loads(text, parse_int=_integer)
    except json.JSONDecodeError as error:
        raise MalformedPayload(f"body is not JSON: {error}") from None
    except ValueError as error:
        raise MalformedPayload(f"body is not JSON we accept: {error}") from None


def _integer(digits: str) -> int | float:
    try:
        return int(digits)
    except ValueError:  # more digits than Python converts (4,300)
        return float(digits)


def _cut_deep_values(text: str) -> str:
    """The JSON text with every value deeper than MAX_DEPTH replaced by null (in one pass)."""
    parts: list[str] = []
    depth, kept_until, cut_from = 0, 0, -1
    for token in _TOKEN.finditer(text):
        symbol = token.group()
        if symbol == '"':
            raise MalformedPayload("body is not JSON: a string is never closed")
        if symbol[0] == '"':
            continue
        if symbol in "[{":
            depth += 1
            if depth == MAX_DEPTH + 1:
                cut_from = token.start()
        else:
            depth -= 1
            if depth == MAX_DEPTH and cut_from >= 0:
                parts += [text[kept_until:cut_from], "null"]
                kept_until, cut_from = token.end(), -1
    parts.append(text[kept_until:])
    return "".join(parts)


def text_of(value: object, what: str) -> str:
    """A string the platform documents; absent (null) is empty."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"{what}: expected a string, got {type(value).__name__}")
    return value


def id_of(value: object, what: str) -> str:
    """A required id: a non-empty string."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what}: expected an id, got {type(value).__name__}")
    return value


def optional_id(value: object, what: str) -> str | None:
    return None if value is None else id_of(value, what)


def count_of(value: object) -> int | None:
    """An optional count shown to people (followers): kept when it is one, else left out."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63:
        return value
    return None


# Characters no link holds: controls, spaces, and lone surrogates (no encoding can write them,
# so the event could not be published).
_NOT_IN_LINKS = re.compile("[\x00-\x20\x7f\ud800-\udfff]")


def url_of(value: object) -> str | None:
    """An optional link: kept when it is one a link column holds."""
    if isinstance(value, str) and 0 < len(value) <= 2048 and not _NOT_IN_LINKS.search(value):
        return value
    return None


def time_of(value: object, what: str) -> datetime:
    """A platform timestamp (RFC 3339, with an offset), in UTC."""
    if not isinstance(value, str) or len(value) > 64:
        raise ValueError(f"{what}: expected a timestamp, got {type(value).__name__}")
    moment = datetime.fromisoformat(value)  # ValueError for what is not one
    if moment.tzinfo is None:
        raise ValueError(f"{what}: the timestamp has no offset")
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00
        raise ValueError(f"{what}: the timestamp is out of range") from None


def time_or_none(value: object) -> datetime | None:
    try:
        return time_of(value, "time")
    except ValueError:
        return None


def reject(parsed: Parsed, where: str, error: BaseException, item: object) -> None:
    """Keep one item that cannot be read, with its problem, on the dead letter."""
    try:
        parsed.reject(where, error, item)
    except MalformedPayload:
        raise
    except (ValueError, RecursionError):  # the item cannot even be written down
        parsed.reject(where, error, "(the item nests too deeply or holds too long a number to write down)")


def key_of(item: object) -> str:
    """A stable name for an item whose id cannot be read (to recognise it on the next poll)."""
    try:
        text = json.dumps(item, sort_keys=True, ensure_ascii=True, default=repr)
    except (TypeError, ValueError, RecursionError):
        return "(unreadable)"
    return "#" + hashlib.sha256(text.encode()).hexdigest()


# ---------------------------------------------------------------------------------------
# High-water marks of newest-first feeds

# The cursor column holds 512 characters: the time (at most 32) and a space leave room for
# 59 digests of 8 characters; 56 keeps a margin.
MAX_SEEN = 56


def digest_of(key: str) -> str:
    """48 bits of SHA-256 of an item's key, base64url (8 characters): two different items
    of one mark share one with a chance of about one in 10^14."""
    raw = hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()[:6]
    return base64.urlsafe_b64encode(raw).decode()


@dataclass(frozen=True)
class Mark:
    """How far a newest-first feed is stored: the newest time stored, and which items at
    exactly that time (or without a usable time) are stored already.

    Several items can share a time (to the millisecond on Bluesky, to the second on
    YouTube), so a time alone would either store the newest items again on every poll
    or skip a new item that shares it. Kept in poll_state.cursor as
    `<time> <digest><digest>...`; a bare time (the older form) is read with no digests.
    """

    at: datetime | None = None
    seen: frozenset[str] = frozenset()

    @classmethod
    def load(cls, cursor: str | None) -> "Mark | None":
        if not cursor:
            return None
        moment, _, digests = cursor.partition(" ")
        at = time_or_none(moment) if moment != "-" else None
        return cls(at, frozenset(digests[i : i + 8] for i in range(0, len(digests), 8)))

    def dump(self) -> str:
        moment = self.at.isoformat() if self.at is not None else "-"
        return f"{moment} {''.join(sorted(self.seen))}".rstrip()


@dataclass
class Walk:
    """One poll's way back through a newest-first feed, page by page, to its mark.

    A parser asks, for each item in page order, whether it lies before the mark (then the
    walk has reached what is stored and ends) and whether it is new (only new items are
    read). What it met makes the next mark.
    """

    mark: Mark | None
    now: datetime
    reached: bool = False
    at_mark: bool = False  # met an item at exactly the mark's time
    newest: datetime | None = None
    _at_newest: set[str] = field(default_factory=set)
    _timeless: set[str] = field(default_factory=set)

    @property
    def first(self) -> bool:
        """No mark yet: the poll takes only the newest page (history is not imported)."""
        return self.mark is None or self.mark.at is None

    def usable(self, when: datetime | None) -> datetime | None:
        """A time the mark may use: one further ahead than any clock drift explains would
        hold the mark above every real item to come, and is treated as no time."""
        return when if when is not None and when <= self.now + MAX_CLOCK_AHEAD else None

    def before_mark(self, when: datetime | None) -> bool:
        usable = self.usable(when)
        return (
            usable is not None
            and self.mark is not None
            and self.mark.at is not None
            and usable < self.mark.at
        )

    def is_new(self, key: str, when: datetime | None) -> bool:
        """Note an item at or after the mark (or without a time); whether it is not stored yet."""
        usable, digest = self.usable(when), digest_of(key)
        if usable is None:
            self._timeless.add(digest)
        else:
            if self.newest is None or usable > self.newest:
                self.newest, self._at_newest = usable, set()
            if usable == self.newest:
                self._at_newest.add(digest)
        mark = self.mark
        if mark is None or mark.at is None:
            return digest not in (mark.seen if mark else ())
        if usable is not None and usable > mark.at:
            return True
        self.at_mark = self.at_mark or usable == mark.at
        return digest not in mark.seen

    def reach(self) -> None:
        self.reached = True

    def next_mark(self) -> Mark:
        """The mark once everything met is stored: the newest time, with the items at it and
        those without a usable time (the ones at the time first, if they do not all fit)."""
        old = self.mark or Mark()
        if self.newest is None or (old.at is not None and self.newest < old.at):
            at, at_time = old.at, set(old.seen)
        else:
            at, at_time = self.newest, self._at_newest
        seen = sorted(at_time)[:MAX_SEEN]
        seen += sorted(self._timeless - at_time)[: MAX_SEEN - len(seen)]
        return Mark(at, frozenset(seen))
