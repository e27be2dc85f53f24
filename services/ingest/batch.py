"""`POST /v1/interactions`: up to 1,000 normalised interactions per request, for importers,
integrations and load tests. Authenticated by a tenant's API token; all or nothing."""

import logging
import time
import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse
from nats.errors import Error as NatsError
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.ingest.accounts import AccountDirectory
from services.ingest.generic import GenericInteraction, normalise
from services.ingest.publisher import InteractionPublisher, RawPayload
from services.ingest.webhooks import RECEIVED, read_body
from shared.db.models import ApiToken
from shared.events import utcnow
from shared.ids import token_sha256
from shared.logs import CORRELATION_HEADER, correlation_id

log = logging.getLogger(__name__)
router = APIRouter()
MAX_BATCH = 1000


class BatchItem(GenericInteraction):
    account_id: str = Field(min_length=1, max_length=63, description="The StayHuman account it came to.")


class Batch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    interactions: list[BatchItem] = Field(min_length=1, max_length=MAX_BATCH)


class TokenDirectory:
    """Which tenant a bearer token belongs to, cached briefly (only digests are stored)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], *, ttl_seconds: float) -> None:
        self._sessions = sessions
        self._ttl = ttl_seconds
        self._cache: dict[str, tuple[float, str | None]] = {}

    async def tenant_of(self, token: str) -> str | None:
        digest = token_sha256(token)
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and now - cached[0] < self._ttl:
            return cached[1]
        async with self._sessions() as session:
            tenant = (
                await session.exec(select(ApiToken.tenant_id).where(ApiToken.token_sha256 == digest))
            ).first()
        if len(self._cache) >= 10_000:
            self._cache.clear()
        self._cache[digest] = (now, tenant)
        return tenant


async def _tokens(request: Request) -> TokenDirectory:
    return request.app.state.tokens


async def _accounts(request: Request) -> AccountDirectory:
    return request.app.state.accounts


async def _publisher(request: Request) -> InteractionPublisher:
    return request.app.state.publisher


@router.post("/v1/interactions", status_code=202)
async def post_interactions(
    request: Request,
    tokens: Annotated[TokenDirectory, Depends(_tokens)],
    accounts: Annotated[AccountDirectory, Depends(_accounts)],
    publisher: Annotated[InteractionPublisher, Depends(_publisher)],
) -> JSONResponse:
    correlation_id.set((request.headers.get(CORRELATION_HEADER) or uuid.uuid4().hex)[:64])
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    tenant = await tokens.tenant_of(token.strip()) if scheme.lower() == "bearer" and token.strip() else None
    if tenant is None:
        raise HTTPException(401, {"error": "missing or unknown API token (Authorization: Bearer <token>)"})
    body = await read_body(request, request.app.state.settings.max_batch_bytes)
    try:
        batch = Batch.model_validate_json(body)
    except ValidationError as error:
        problems = [
            {"field": ".".join(str(p) for p in item["loc"]) or "body", "problem": item["msg"]}
            for item in error.errors()
        ]
        raise HTTPException(400, {"error": "invalid batch", "problems": problems[:50]}) from None
    received_at = utcnow()
    events = []
    for index, item in enumerate(batch.interactions):
        account = await accounts.get(item.account_id)
        if account is None or account.tenant_id != tenant:
            # Another tenant's account is as unknown to this token as one that does not exist.
            raise HTTPException(
                404, {"error": f"interactions[{index}].account_id: unknown account {item.account_id!r}"}
            )
        events.append(
            normalise(
                item,
                tenant_id=tenant,
                account_id=account.id,
                platform=account.platform,
                received_at=received_at,
                correlation_id=correlation_id.get(),
            )
        )
    try:
        await publisher.publish_many(events, raw=RawPayload("batch", body))
    except (NatsError, TimeoutError) as error:
        raise HTTPException(
            503,
            {"error": "interactions not stored, retry later", "reason": type(error).__name__},
            headers={"Retry-After": "5"},
        ) from None
    RECEIVED.labels(tenant, "accepted").inc(len(events))
    log.info("batch accepted", extra={"tenant": tenant, "count": len(events)})
    return JSONResponse(
        {
            "status": "accepted",
            "accepted": len(events),
            "interaction_ids": [e.interaction_id for e in events],
        },
        status_code=202,
        headers={CORRELATION_HEADER: correlation_id.get()},
    )
