"""`POST /v1/interactions`: up to 1,000 normalised interactions per request, for importers,
integrations and load tests. Authenticated by a tenant's API token; all or nothing."""

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse
from nats.errors import Error as NatsError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.ingest.accounts import AccountDirectory, TokenDirectory
from services.ingest.generic import GenericInteraction, normalise
from services.ingest.publisher import InteractionPublisher, RawPayload
from services.ingest.webhooks import RECEIVED, problems_of, request_correlation_id, unavailable
from shared.events import utcnow
from shared.jetstream import MessageTooLarge
from shared.logs import CORRELATION_HEADER, correlation_id

log = logging.getLogger(__name__)
router = APIRouter()
MAX_BATCH = 1000


class BatchItem(GenericInteraction):
    account_id: str = Field(min_length=1, max_length=63, description="The StayHuman account it came to.")


class Batch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    interactions: list[BatchItem] = Field(min_length=1, max_length=MAX_BATCH)


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
    correlation_id.set(request_correlation_id(request))
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    tenant = await tokens.tenant_of(token.strip()) if scheme.lower() == "bearer" and token.strip() else None
    if tenant is None:
        raise HTTPException(401, {"error": "missing or unknown API token (Authorization: Bearer <token>)"})
    body = await request.body()
    try:
        batch = Batch.model_validate_json(body)
    except ValidationError as error:
        raise HTTPException(400, {"error": "invalid batch", "problems": problems_of(error)}) from None
    received_at = utcnow()
    events = []
    for index, item in enumerate(batch.interactions):
        account = await accounts.get(item.account_id)
        if account is None or account.tenant_id != tenant:
            # Another tenant's account is as unknown to this token as one that does not exist.
            raise HTTPException(
                404, {"error": f"interactions[{index}].account_id: unknown account {item.account_id!r}"}
            )
        try:
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
        except ValidationError as error:
            problems = [{**p, "field": f"interactions.{index}.{p['field']}"} for p in problems_of(error)]
            raise HTTPException(400, {"error": "invalid batch", "problems": problems}) from None
        except ValueError as error:
            problems = [{"field": f"interactions.{index}.created_at", "problem": str(error)}]
            raise HTTPException(400, {"error": "invalid batch", "problems": problems}) from None
    try:
        await publisher.publish_many(events, raw=RawPayload("batch", body), all_or_nothing=True)
    except MessageTooLarge as error:
        raise HTTPException(413, {"error": str(error)}) from None
    except (NatsError, TimeoutError) as error:
        raise unavailable(error) from None
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
