"""What every connector produces: drafts of interactions, before the account is known."""

import hashlib
import hmac
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime

from services.ingest.connectors.language import detect_language
from shared.events import Author, Direction, InteractionReceived, InteractionRetracted, Kind, Platform
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


@dataclass
class Parsed:
    drafts: list[Draft] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # what was well-formed but not routed, and why


class MalformedPayload(ValueError):
    """The body is JSON but not in the platform's documented shape; the message says where."""


def hmac_sha256(secret: str, data: bytes) -> bytes:
    return hmac.new(secret.encode(), data, hashlib.sha256).digest()


def from_epoch(value: float | str, *, milliseconds: bool) -> datetime:
    seconds = float(value) / (1000 if milliseconds else 1)
    return datetime.fromtimestamp(seconds, UTC)


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


def to_received(
    draft: Draft, *, tenant_id: str, account_id: str, received_at: datetime, correlation_id: str
) -> InteractionReceived:
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
    )
