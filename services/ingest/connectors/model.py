"""What every connector produces: drafts of interactions, before the account is known."""

import hashlib
import hmac
import json
import zlib
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from services.ingest.connectors.language import detect_language
from shared.events import (
    Author,
    Direction,
    InteractionReceived,
    InteractionRetracted,
    Kind,
    Platform,
    ReplyContext,
    storable_text,
)
from shared.ids import interaction_id


@dataclass(frozen=True)
class Draft:
    """One interaction as the platform described it, addressed by the platform's account id."""

    platform: Platform
    platform_account_id: str  # the page, Instagram account or X user it was sent to
    external_id: str
    kind: Kind
    direction: Direction
    thread_id: str
    author: Author
    text: str
    created_at: datetime
    edit_version: int = 0
    parent_id: str | None = None
    url: str | None = None
    language: str | None = None
    retracted: bool = False  # the author removed it
    where: str = ""  # where in the delivery it came from, e.g. entry[2].changes[0]
    reply: ReplyContext | None = None  # what answering it through the platform's API needs


@dataclass(frozen=True)
class Rejected:
    """One entry of a delivery that cannot become an interaction: kept on the dead letter with
    its problem, while the rest of the delivery is stored."""

    where: str  # e.g. entry[3].changes[0]
    problem: str
    raw: bytes  # the entry as received (JSON), for a person to read


@dataclass
class Parsed:
    drafts: list[Draft] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # what was well-formed but not routed, and why
    rejected: list[Rejected] = field(default_factory=list)

    def mark(self, since: int, where: str) -> None:
        """Say where in the delivery the drafts made since `since` came from."""
        self.drafts[since:] = [replace(draft, where=where) for draft in self.drafts[since:]]

    def reject(self, where: str, error: BaseException, entry: object) -> None:
        if len(self.rejected) >= MAX_REJECTED:
            raise MalformedPayload(f"more than {MAX_REJECTED} entries are not in the documented shape")
        self.rejected.append(Rejected(where, problem_of(error), raw_of(entry)))


class MalformedPayload(ValueError):
    """The body is JSON but not in the platform's documented shape; the message says where."""


# What one hostile or broken entry can raise while it is read: it is rejected alone.
ENTRY_ERRORS = (KeyError, TypeError, ValueError, AttributeError, OverflowError, IndexError)


def problem_of(error: BaseException) -> str:
    """A short, one-line description of why an entry was refused."""
    if isinstance(error, ValidationError):
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "value"
        text = f"{where}: {first['msg']}"
    else:
        text = f"{type(error).__name__}: {error}"
    # it quotes what the sender sent: keep it one short line that any encoder can write
    return storable_text(" ".join(text.split()))[:500]


def raw_of(entry: object) -> bytes:
    """An entry as a person can read it on the dead letter, whatever it holds."""
    for render in (lambda: json.dumps(entry, ensure_ascii=False, default=str), lambda: repr(entry)):
        try:
            return render().encode("utf-8", "replace")
        except (TypeError, ValueError, RecursionError):  # 4,300+ digit numbers, deep nesting
            continue
    return f"<a {type(entry).__name__} too large or too deep to show>".encode()


def load_json(body: bytes) -> Any:
    """A request body as JSON, or MalformedPayload naming why not (bad UTF-8, bad JSON, numbers
    longer than Python converts, nesting deeper than the parser goes)."""
    try:
        return json.loads(body)
    except RecursionError:
        raise MalformedPayload("body is not JSON we accept: it nests too deeply") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise MalformedPayload(f"body is not JSON: {error}") from None
    except ValueError as error:  # e.g. an integer of more than 4,300 digits
        raise MalformedPayload(f"body is not JSON we accept: {error}") from None


def platform_id(value: object, what: str) -> str:
    """An id as platforms send them (a string, or a number in older APIs), as a string."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f"{what}: expected an id, got {type(value).__name__}")
    return str(value)


def items(value: object, what: str) -> list[Any]:
    """A list the platform documents (absent means empty)."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError(f"{what}: expected a list, got {type(value).__name__}")
    return value


def mapping(value: object, what: str) -> dict[str, Any]:
    """An object the platform documents (absent means empty)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{what}: expected an object, got {type(value).__name__}")
    return value


# More rejected entries than a platform ever batches is not a delivery with a few bad
# entries but a body that is not the platform's at all.
MAX_REJECTED = 100


def signature_matches(expected: str, given: str) -> bool:
    """Constant-time comparison of a signature we computed with one a sender gave, whatever
    bytes the sender put in the header."""
    return hmac.compare_digest(expected.encode(), given.encode("utf-8", "surrogateescape"))


# A message from further ahead than any clock drift explains is refused: a due time
# computed from it would lie beyond what anything can schedule.
MAX_CLOCK_AHEAD = timedelta(hours=1)


class TooFarAhead(ValueError):
    pass


def check_created_at(created_at: datetime, *, received_at: datetime) -> None:
    if created_at.tzinfo is None:
        raise ValueError(f"created_at {created_at.isoformat()} has no timezone offset")
    if created_at > received_at + MAX_CLOCK_AHEAD:
        raise TooFarAhead(
            f"created_at {created_at.isoformat()} is more than an hour after it was received "
            f"({received_at.isoformat()})"
        )


def hmac_sha256(secret: str, data: bytes) -> bytes:
    return hmac.new(secret.encode(), data, hashlib.sha256).digest()


def from_epoch(value: float | str, *, milliseconds: bool) -> datetime:
    """A platform's epoch time; ValueError for what no calendar holds."""
    try:
        seconds = float(value) / (1000 if milliseconds else 1)
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, TypeError, ValueError) as error:
        raise ValueError(f"not a time: {str(value)[:40]!r}") from error


def reply_context(**given: object) -> ReplyContext | None:
    """What answering a message needs, of what the platform gave (`ReplyContext`'s fields by
    name; None or [] for what it did not give). A value not in the documented shape is left
    out, and an id in a list that is not one is dropped from it: the message is stored all the
    same, only answering it through the API may then be refused. None when nothing is left."""
    kept: dict[str, object] = {}
    for name, value in given.items():
        if name not in ReplyContext.model_fields:
            raise TypeError(f"ReplyContext has no field {name!r}")
        if isinstance(value, list):
            value = [item for item in value if _fits(name, [item])]
        if value is None or value == [] or not _fits(name, value):
            continue
        kept[name] = value
    return ReplyContext.model_validate(kept) if kept else None


def _fits(name: str, value: object) -> bool:
    try:
        ReplyContext.model_validate({name: value})
    except ValidationError:
        return False
    return True


def edit_version_of(text: str) -> int:
    """Platforms send an edit under the same id with no counter: the new text tells edits apart."""
    return zlib.crc32(text.encode()) or 1


def to_event(
    draft: Draft, *, tenant_id: str, account_id: str, received_at: datetime, correlation_id: str
) -> InteractionReceived | InteractionRetracted:
    """The event a draft becomes once its StayHuman account is known."""
    if draft.retracted:
        return InteractionRetracted(
            tenant_id=tenant_id,
            correlation_id=correlation_id,
            account_id=account_id,
            platform=draft.platform,
            external_id=draft.external_id,
            thread_id=draft.thread_id,
            retracted_at=draft.created_at,
        )
    return to_received(
        draft,
        tenant_id=tenant_id,
        account_id=account_id,
        received_at=received_at,
        correlation_id=correlation_id,
    )


def to_events(
    drafts: Iterable[Draft],
    account_of: Callable[[Draft], tuple[str, str] | None],
    *,
    received_at: datetime,
    correlation_id: str,
) -> tuple[list[InteractionReceived | InteractionRetracted], list[Rejected], set[str]]:
    """Events of the drafts whose account is known (`account_of` gives its tenant and id),
    the drafts that cannot be stored (rejected with their problem), and the platform account
    ids nobody configured."""
    events: list[InteractionReceived | InteractionRetracted] = []
    rejected: list[Rejected] = []
    unknown: set[str] = set()
    for index, draft in enumerate(drafts):
        found = account_of(draft)
        if found is None:
            unknown.add(draft.platform_account_id)
            continue
        tenant_id, account_id = found
        try:
            events.append(
                to_event(
                    draft,
                    tenant_id=tenant_id,
                    account_id=account_id,
                    received_at=received_at,
                    correlation_id=correlation_id,
                )
            )
        except ValueError as error:  # ValidationError, TooFarAhead
            where = draft.where or f"interaction[{index}]"
            rejected.append(Rejected(where, problem_of(error), raw_of(asdict(draft))))
    return events, rejected, unknown


def to_received(
    draft: Draft, *, tenant_id: str, account_id: str, received_at: datetime, correlation_id: str
) -> InteractionReceived:
    """The event of an inbound or outbound message; ValueError (ValidationError, TooFarAhead)
    for what the store cannot hold or the clock cannot place."""
    check_created_at(draft.created_at, received_at=received_at)
    return InteractionReceived(
        tenant_id=tenant_id,
        correlation_id=correlation_id,
        interaction_id=interaction_id(
            tenant_id=tenant_id,
            account_id=account_id,
            external_id=draft.external_id,
            edit_version=draft.edit_version,
        ),
        account_id=account_id,
        platform=draft.platform,
        external_id=draft.external_id,
        edit_version=draft.edit_version,
        kind=draft.kind,
        direction=draft.direction,
        thread_id=draft.thread_id,
        parent_id=draft.parent_id,
        author=draft.author,
        text=draft.text,
        url=draft.url,
        language=draft.language or detect_language(draft.text),
        created_at=draft.created_at,
        received_at=received_at,
        reply=draft.reply,
    )
