"""The generic signed webhook: its documented body, its signature, its normalisation.

Pure functions: no I/O, so tests and replays call exactly what the service runs.
"""

import hashlib
import hmac
import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

from services.ingest.connectors.model import Draft, to_received
from shared.events import (
    INT64_MAX,
    Author,
    AwareDatetime,
    Direction,
    InteractionReceived,
    Kind,
    Platform,
)

SIGNATURE_HEADER = "X-Signature-256"
_SIGNATURE = re.compile(r"^sha256=([0-9a-fA-F]{64})$")
_PLATFORM_ID = re.compile(r"^[^\x00-\x1f\x7f\s]+$")


class GenericInteraction(BaseModel):
    """The body of `POST /webhooks/generic/{account_id}`."""

    model_config = ConfigDict(extra="forbid")

    external_id: str = Field(min_length=1, max_length=512, description="The platform's message id.")
    kind: Kind
    direction: Direction
    thread_id: str = Field(min_length=1, max_length=512, description="The platform thread.")
    author: Author
    text: str = Field(max_length=65_536)
    created_at: AwareDatetime = Field(description="When the person wrote it (RFC 3339 with offset).")
    edit_version: int = Field(default=0, ge=0, le=INT64_MAX, description="0 for the original, 1.. for edits.")
    parent_id: str | None = Field(default=None, max_length=512)
    url: str | None = Field(default=None, max_length=2048)
    language: str | None = Field(default=None, max_length=16)

    @field_validator("external_id", "thread_id")
    @classmethod
    def _printable(cls, value: str) -> str:
        if not _PLATFORM_ID.fullmatch(value):
            raise ValueError("must not contain spaces or control characters")
        return value


def sign(secret: str, body: bytes) -> str:
    """The header value a sender puts in `X-Signature-256`."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def signature_valid(*, secret: str, body: bytes, header: str | None) -> bool:
    """Check `sha256=<hex HMAC-SHA256 of the raw body>` in constant time."""
    match = _SIGNATURE.fullmatch(header.strip()) if header else None
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return match is not None and hmac.compare_digest(expected, match.group(1).lower())


def normalise(
    body: GenericInteraction,
    *,
    tenant_id: str,
    account_id: str,
    platform: Platform,
    received_at: AwareDatetime,
    correlation_id: str,
) -> InteractionReceived:
    draft = Draft(
        platform=platform,
        platform_account_id=account_id,
        external_id=body.external_id,
        edit_version=body.edit_version,
        kind=body.kind,
        direction=body.direction,
        thread_id=body.thread_id,
        parent_id=body.parent_id,
        author=body.author,
        text=body.text,
        url=body.url,
        language=body.language,
        created_at=body.created_at,
    )
    return to_received(
        draft,
        tenant_id=tenant_id,
        account_id=account_id,
        received_at=received_at,
        correlation_id=correlation_id,
    )
