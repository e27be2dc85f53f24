"""A fake Bluesky PDS over real HTTP: sessions (createSession, refreshSession rotating the refresh
token), createRecord (one record per key: a second with the same rkey is refused, "Record
already exists", as documented) and getRecord."""

import base64
import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from tests.write_fakes.recorded import WriteFake

COLLECTION = "app.bsky.feed.post"
TID = re.compile(r"^[234567abcdefghij][234567abcdefghijklmnopqrstuvwxyz]{12}$")
LIMIT = 300


def _error(status: int, error: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": error, "message": message}, status_code=status, headers=headers)


@dataclass
class FakeBlueskyWrites(WriteFake):
    """Knobs beyond the shared ones: `expire_access()` (access tokens answer ExpiredToken),
    `expire_refresh()` (refresh tokens too: only a new session works)."""

    did: str = "did:plc:bluebirdcoffee000000000"
    handle: str = "bluebird.coffee"
    app_password: str = "abcd-efgh-ijkl-mnop"
    access: set[str] = field(default_factory=set)
    expired: set[str] = field(default_factory=set)
    refresh: set[str] = field(default_factory=set)
    records: dict[str, dict[str, Any]] = field(default_factory=dict)  # rkey -> {uri, cid, value}
    sessions: int = 0

    def expire_access(self) -> None:
        self.expired |= self.access
        self.access.clear()

    def expire_refresh(self) -> None:
        self.refresh.clear()

    def _jwt(self, scope: str, lifetime: timedelta) -> str:
        self.sessions += 1
        claims = {
            "scope": scope,
            "sub": self.did,
            "exp": int((datetime.now(UTC) + lifetime).timestamp()),
            "n": self.sessions,
        }

        def part(value: dict[str, Any]) -> str:
            return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

        return f"{part({'typ': 'at+jwt', 'alg': 'ES256K'})}.{part(claims)}.c2lnbmF0dXJl"

    def _session(self) -> JSONResponse:
        access = self._jwt("com.atproto.appPass", timedelta(hours=2))
        refresh = self._jwt("com.atproto.refresh", timedelta(days=90))
        self.access.add(access)
        self.refresh.add(refresh)
        return JSONResponse(
            {
                "accessJwt": access,
                "refreshJwt": refresh,
                "handle": self.handle,
                "did": self.did,
                "active": True,
            }
        )

    def _bearer(self, request: Request) -> str:
        return request.headers.get("authorization", "").removeprefix("Bearer ")

    def routes(self, app: FastAPI) -> None:
        @app.post("/xrpc/com.atproto.server.createSession")
        async def create_session(request: Request) -> Response:
            body = (await self.record(request)).json()
            if (
                body.get("identifier") not in (self.did, self.handle)
                or body.get("password") != self.app_password
            ):
                return _error(401, "AuthenticationRequired", "Invalid identifier or password")
            return self._session()

        @app.post("/xrpc/com.atproto.server.refreshSession")
        async def refresh_session(request: Request) -> Response:
            await self.record(request)
            token = self._bearer(request)
            if token not in self.refresh:
                return _error(400, "ExpiredToken", "Token has expired")
            self.refresh.discard(token)  # rotated: a refresh token works once
            return self._session()

        @app.post("/xrpc/com.atproto.repo.createRecord")
        async def create_record(request: Request) -> Response:
            body = (await self.record(request)).json()
            token = self._bearer(request)
            if token in self.expired:
                return _error(400, "ExpiredToken", "Token has expired")
            if token not in self.access:
                return _error(401, "AuthenticationRequired", "Authentication Required")
            if self.take_rate_limit():
                reset = str(int(datetime.now(UTC).timestamp()) + 20)
                return _error(429, "RateLimitExceeded", "Rate Limit Exceeded",
                              {"ratelimit-limit": "5000", "ratelimit-remaining": "0", "ratelimit-reset": reset})  # fmt: skip
            error = self.take_error()
            if error is not None:
                return _error(error, "InternalServerError", "Internal Server Error")
            if body.get("repo") not in (self.did, self.handle) or body.get("collection") != COLLECTION:
                return _error(400, "InvalidRequest", "Input/repo or collection is not this account's posts")
            rkey = str(body.get("rkey", ""))
            if not TID.match(rkey):
                return _error(400, "InvalidRequest", f"Invalid record key: {rkey!r} is not a TID")
            record = body.get("record") or {}
            if record.get("$type") != COLLECTION or len(str(record.get("text", ""))) > LIMIT:
                return _error(
                    400,
                    "InvalidRequest",
                    f"Invalid app.bsky.feed.post record: Record/text must not be longer than {LIMIT} graphemes",
                )
            reply = record.get("reply") or {}
            if not all(
                isinstance(reply.get(end), dict) and reply[end].get("uri") and reply[end].get("cid")
                for end in ("root", "parent")
            ):
                return _error(
                    400,
                    "InvalidRequest",
                    "Invalid app.bsky.feed.post record: reply must have root and parent",
                )
            if rkey in self.records:
                return _error(400, "InvalidRequest", "Record already exists")
            uri = f"at://{self.did}/{COLLECTION}/{rkey}"
            cid = "bafyrei" + hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:52]
            self.records[rkey] = {"uri": uri, "cid": cid, "value": record}
            await self.held()
            return JSONResponse(
                {
                    "uri": uri,
                    "cid": cid,
                    "commit": {"cid": "bafyreicommit", "rev": rkey},
                    "validationStatus": "valid",
                }
            )

        @app.get("/xrpc/com.atproto.repo.getRecord")
        async def get_record(request: Request) -> Response:
            await self.record(request)
            query = request.query_params
            rkey = query.get("rkey", "")
            found = self.records.get(rkey)
            if (
                query.get("repo") not in (self.did, self.handle)
                or query.get("collection") != COLLECTION
                or found is None
            ):
                return _error(
                    400,
                    "RecordNotFound",
                    f"Could not locate record: at://{query.get('repo')}/{query.get('collection')}/{rkey}",
                )
            return JSONResponse(found)
