"""Bluesky: a post with reply references, written under a record key chosen before it is sent.

`com.atproto.repo.createRecord` with `rkey = outgoing.key` (a TID the outbound service derives
from the reply's id with `tid_for`): the repository holds one record per key, so sending again
after a lost answer is answered "Record already exists", and that record (read with getRecord)
is the reply, posted once. Sessions come from the app password (createSession) and are kept in
the credentials (`accessJwt`, `refreshJwt`, `did`); an expired one is renewed with
refreshSession, or a new session when the refresh token has expired too.
"""

import base64
import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from services.outbound.platforms.base import (
    TIMEOUT,
    Credentials,
    CredentialsFailed,
    Lost,
    Outgoing,
    Posted,
    Refused,
    Unreadable,
)
from services.outbound.platforms.wire import body_of, mapping, parse_time, read, seconds_until, send, words
from shared.commands import ReplyMethod
from shared.events import Platform

API = "https://bsky.social"
COLLECTION = "app.bsky.feed.post"
_SORTABLE = "234567abcdefghijklmnopqrstuvwxyz"  # base32-sortable, the TID alphabet
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SESSION_ERRORS = frozenset({"ExpiredToken", "InvalidToken", "AuthenticationRequired", "AuthMissing"})


def tid_for(reply_id: str, at: datetime) -> str:
    """A record key in Bluesky's TID form for a reply: 13 characters of base32-sortable, of a
    64-bit number whose top bit is 0, then microseconds since 1970 (53 bits), then a 10-bit
    "clock id" (here from a hash of the reply's id). The same inputs give the same key, so every
    attempt at one reply writes the same record; keys sort by `at` like the ones Bluesky makes."""
    if at.tzinfo is None:
        raise ValueError("a TID's time must be timezone-aware")
    micros = (at - _EPOCH) // timedelta(microseconds=1)
    if not 0 <= micros < 1 << 53:
        raise ValueError("a TID's time must be after 1970 and within 53 bits of microseconds")
    clock = int.from_bytes(hashlib.sha256(reply_id.encode()).digest()[:2], "big") & 0x3FF
    value = micros << 10 | clock
    return "".join(_SORTABLE[value >> shift & 31] for shift in range(60, -1, -5))


def _expiry(jwt: str) -> datetime | None:
    """When an access token expires, from its `exp` claim (read, not verified: the PDS checks it)."""
    try:
        payload = jwt.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return datetime.fromtimestamp(float(claims["exp"]), UTC)
    except (IndexError, ValueError, KeyError, TypeError, OverflowError):
        return None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class BlueskyClient:
    platform = Platform.bluesky
    idempotent = True

    def __init__(self, *, timeout: httpx.Timeout = TIMEOUT) -> None:
        self.timeout = timeout

    def _http(self, credentials: Credentials) -> httpx.AsyncClient:
        base = str(credentials.values.get("api_base_url") or API).rstrip("/")
        return httpx.AsyncClient(base_url=base, timeout=self.timeout)

    @staticmethod
    def _repo(outgoing: Outgoing, credentials: Credentials) -> str:
        did = credentials.values.get("did") or outgoing.target.account_external_id
        if not isinstance(did, str) or not did:
            raise CredentialsFailed("the Bluesky account's DID is not known")
        return did

    def _posted(self, did: str, rkey: str, document: dict[str, Any]) -> Posted | None:
        uri = document.get("uri")
        if not isinstance(uri, str) or not uri:
            return None
        created = parse_time(mapping(document.get("value")).get("createdAt"))
        return Posted(platform_id=uri, url=f"https://bsky.app/profile/{did}/post/{rkey}", created_at=created)

    async def post(self, outgoing: Outgoing, credentials: Credentials) -> Posted:
        if outgoing.method is not ReplyMethod.post:
            raise Refused(f"Bluesky replies are posts, not {outgoing.method.value}")
        jwt = credentials.values.get("accessJwt")
        if not isinstance(jwt, str) or not jwt:
            raise Refused("no Bluesky session yet", expired=True)
        target = outgoing.target
        context = target.context
        if context is None or not context.cid:
            raise Refused("the post answered has no CID: Bluesky cannot reference it")
        parent = {"uri": target.external_id, "cid": context.cid}
        root = (
            {"uri": context.root_uri, "cid": context.root_cid}
            if context.root_uri and context.root_cid
            else parent
        )
        did = self._repo(outgoing, credentials)
        record = {
            "$type": COLLECTION,
            "text": outgoing.text,
            "createdAt": _now(),
            "reply": {"root": root, "parent": parent},
        }
        body = {"repo": did, "collection": COLLECTION, "rkey": outgoing.key, "record": record}
        async with self._http(credentials) as http:
            request = http.build_request(
                "POST",
                "/xrpc/com.atproto.repo.createRecord",
                json=body,
                headers={"authorization": f"Bearer {jwt}"},
            )
            response = await send(http, request, platform="Bluesky")
            answer = mapping(body_of(response))
            if response.is_success:
                posted = self._posted(did, outgoing.key, {**answer, "value": record})
                if posted is None:
                    raise Lost(f"Bluesky answered {response.status_code} without the record's uri")
                return posted
            if response.status_code == 400 and "already exists" in str(answer.get("message", "")).lower():
                return await self._existing(http, outgoing, did)
        status = response.status_code
        if status >= 500:
            raise Lost(f"Bluesky answered {status}: the post may have gone out")
        said = words(response, "message", "error")
        if answer.get("error") in _SESSION_ERRORS:
            raise Refused(said, expired=True, status=status)
        if status == 429:
            reset = seconds_until(response.headers.get("ratelimit-reset"))
            raise Refused(said, retry=True, retry_after=reset, status=status)
        raise Refused(said, status=status)

    async def _existing(self, http: httpx.AsyncClient, outgoing: Outgoing, did: str) -> Posted:
        """The record already under this key: this reply, sent before and taken then."""
        request = http.build_request(
            "GET",
            "/xrpc/com.atproto.repo.getRecord",
            params={"repo": did, "collection": COLLECTION, "rkey": outgoing.key},
        )
        try:
            response = await read(http, request, platform="Bluesky")
        except Unreadable as error:
            raise Lost(f"the post is on Bluesky (its key is taken) and could not be read: {error}") from None
        document = mapping(body_of(response))
        posted = self._posted(did, outgoing.key, document) if response.is_success else None
        if posted is None:
            raise Lost(
                f"the post is on Bluesky (its key is taken) and reading it answered {response.status_code}"
            )
        parent = mapping(mapping(mapping(document.get("value")).get("reply")).get("parent")).get("uri")
        if parent != outgoing.target.external_id:
            raise Refused(f"the record key {outgoing.key} is taken by another post ({posted.platform_id})")
        return posted

    async def find(self, outgoing: Outgoing, credentials: Credentials, since: datetime) -> Posted | None:
        """The record under the reply's key (getRecord): there or not, whenever it was written."""
        did = self._repo(outgoing, credentials)
        async with self._http(credentials) as http:
            request = http.build_request(
                "GET",
                "/xrpc/com.atproto.repo.getRecord",
                params={"repo": did, "collection": COLLECTION, "rkey": outgoing.key},
            )
            response = await read(http, request, platform="Bluesky")
        document = mapping(body_of(response))
        if response.is_success:
            posted = self._posted(did, outgoing.key, document)
            if posted is None:
                raise Unreadable("Bluesky answered a record without its uri")
            return posted
        if response.status_code in (400, 404) and (
            document.get("error") == "RecordNotFound"
            or "could not locate record" in str(document.get("message", "")).lower()
        ):
            return None
        raise Unreadable(f"Bluesky answered {response.status_code}: {words(response, 'message', 'error')}")

    async def refresh(self, credentials: Credentials) -> Credentials:
        """A renewed session (refreshSession), or a new one from the app password (createSession)
        when there is none or its refresh token has expired too."""
        async with self._http(credentials) as http:
            refresh_jwt = credentials.values.get("refreshJwt")
            if isinstance(refresh_jwt, str) and refresh_jwt:
                request = http.build_request(
                    "POST",
                    "/xrpc/com.atproto.server.refreshSession",
                    headers={"authorization": f"Bearer {refresh_jwt}"},
                )
                response = await self._session_call(http, request)
                if response.is_success:
                    return self._session(credentials, response)
                if response.status_code not in (400, 401):
                    raise self._unavailable(response)
            request = http.build_request(
                "POST",
                "/xrpc/com.atproto.server.createSession",
                json={
                    "identifier": credentials.get("identifier"),
                    "password": credentials.get("app_password"),
                },
            )
            response = await self._session_call(http, request)
        if response.is_success:
            return self._session(credentials, response)
        if response.status_code in (400, 401, 403):
            raise CredentialsFailed(
                f"Bluesky refused the app password: {words(response, 'message', 'error')}"
            )
        raise self._unavailable(response)

    @staticmethod
    async def _session_call(http: httpx.AsyncClient, request: httpx.Request) -> httpx.Response:
        try:
            return await send(http, request, platform="Bluesky")
        except Lost as lost:
            raise Refused(f"Bluesky's session endpoint did not answer: {lost}", retry=True) from None

    @staticmethod
    def _unavailable(response: httpx.Response) -> Refused:
        return Refused(
            f"Bluesky's session endpoint answered {response.status_code}: {words(response, 'message', 'error')}",
            retry=True,
            retry_after=seconds_until(response.headers.get("ratelimit-reset")),
            status=response.status_code,
        )

    @staticmethod
    def _session(credentials: Credentials, response: httpx.Response) -> Credentials:
        document = mapping(body_of(response))
        session = {key: document.get(key) for key in ("accessJwt", "refreshJwt", "did")}
        if not all(isinstance(value, str) and value for value in session.values()):
            raise CredentialsFailed("Bluesky answered a session without accessJwt, refreshJwt and did")
        return Credentials(
            values={**credentials.values, **session}, expires_at=_expiry(str(session["accessJwt"]))
        )
