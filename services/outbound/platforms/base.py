"""What every platform's write client offers the outbound service, and what it answers.

A client posts one reply through the platform's own API and says, in one of three ways, what
came of it: `Posted` (the platform has it, under this id), `Refused` (the platform said no:
nothing went out) or `Lost` (the request may have reached the platform and its answer did not
come back: it may have gone out). Nothing else escapes a client: a timeout after the request
was sent is `Lost`, a connection refused before anything was sent is `Refused` with `retry`.

Platforms that dedupe on a key we choose (Mastodon's `Idempotency-Key`, Bluesky's record key,
the outbound webhook's delivery id) are `idempotent`: posting again with the same key is safe.
For the others (Meta, X, YouTube) a `Lost` post is never posted again before `find` has read
the thread to see whether it went out.
"""

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import httpx

from shared.commands import ReplyMethod
from shared.events import Kind, Platform, ReplyContext

TIMEOUT = httpx.Timeout(15.0, connect=5.0)


@dataclass(frozen=True)
class Target:
    """The message a reply answers, as ingest stored it, and the brand account answering."""

    platform: Platform
    kind: Kind
    account_external_id: str | None  # the page, Instagram account, X user, channel, DID
    account_handle: str
    thread_id: str
    external_id: str  # the platform's id of the message answered
    parent_id: str | None
    author_id: str  # the customer: a PSID, IGSID, X user id, Mastodon account id, DID, channel
    author_handle: str
    created_at: datetime
    context: ReplyContext | None = None
    url: str | None = None


@dataclass(frozen=True)
class Outgoing:
    """One reply to post: `key` is what the platform dedupes on where it can (an Idempotency-Key,
    a Bluesky record key, the webhook's delivery id), the same on every attempt."""

    reply_id: str
    key: str
    text: str
    method: ReplyMethod
    tag: str | None  # HUMAN_AGENT for Messenger and Instagram DMs after 24 hours
    target: Target
    person_id: str  # who wrote it (the generic webhook carries it; platforms do not)
    person_name: str = ""
    conversation_id: str = ""
    account_id: str = ""


@dataclass(frozen=True)
class Posted:
    platform_id: str  # the platform's id of the reply: how its echo is matched
    url: str | None = None
    created_at: datetime | None = None


class Refused(Exception):
    """The platform said no and nothing went out. `retry` says sending again may work (a rate
    limit, a connection never made, a 5xx the platform documents as not applied); `expired`
    says the token needs refreshing first; `window` says the platform's window is closed."""

    def __init__(
        self,
        error: str,
        *,
        retry: bool = False,
        retry_after: float | None = None,
        expired: bool = False,
        window: bool = False,
        status: int | None = None,
    ) -> None:
        super().__init__(error)
        self.error = error
        self.retry = retry
        self.retry_after = retry_after
        self.expired = expired
        self.window = window
        self.status = status


class Lost(Exception):
    """The request may have reached the platform and no answer says whether it was taken."""


class Unreadable(Exception):
    """`find` could not tell whether the reply went out (the thread could not be read)."""


class CredentialsFailed(Exception):
    """The credentials cannot be used or refreshed (revoked, wrong password): the connector is failing."""


@dataclass
class Credentials:
    """An account's reply credentials as `apply` set them (and as refreshed since): a JSON object
    of the platform's own fields (page_access_token; access_token, refresh_token, client_id,
    client_secret; identifier, app_password; url, secret). `api_base_url` and `token_url`
    point at the platform (the defaults are the platforms' own)."""

    values: dict[str, Any] = field(default_factory=dict)
    expires_at: datetime | None = None

    def get(self, name: str) -> str:
        value = self.values.get(name)
        if not isinstance(value, str) or not value:
            raise CredentialsFailed(f"the account's reply credentials have no {name}")
        return value


class Health(enum.StrEnum):
    ok = "ok"
    failing = "failing"


class PlatformClient(Protocol):
    platform: Platform
    idempotent: bool  # posting again with the same `key` cannot make a second reply

    async def post(self, outgoing: Outgoing, credentials: Credentials) -> Posted:
        """Post the reply; raise Refused or Lost (never anything else for what the platform did)."""
        ...

    async def find(self, outgoing: Outgoing, credentials: Credentials, since: datetime) -> Posted | None:
        """Read the thread for this reply, posted at or after `since` by the brand: the reply if it
        is there, None if it surely is not; raise Unreadable when that cannot be told."""
        ...

    async def refresh(self, credentials: Credentials) -> Credentials:
        """New credentials after the platform said the token expired (OAuth refresh, a new
        session); raise CredentialsFailed when they cannot be refreshed."""
        ...
