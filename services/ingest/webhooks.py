"""HTTP entry points for platform webhooks. Thin: verify, convert, publish."""

import json
import logging
import time
import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse
from nats.errors import Error as NatsError
from opentelemetry.trace import SpanKind
from prometheus_client import Counter, Histogram
from pydantic import ValidationError

from services.ingest.accounts import AccountDirectory, AccountView
from services.ingest.generic import SIGNATURE_HEADER, GenericInteraction, normalise, signature_valid
from services.ingest.publisher import InteractionPublisher, RawPayload
from shared.events import utcnow
from shared.logs import CORRELATION_HEADER, correlation_id
from shared.tracing import span

log = logging.getLogger(__name__)
router = APIRouter()

RECEIVED = Counter(
    "stayhuman_ingest_interactions_total", "Webhook interactions by outcome", ["tenant", "result"]
)
REJECTED = Counter("stayhuman_ingest_rejected_total", "Webhook requests refused", ["status"])
PUBLISH_SECONDS = Histogram(
    "stayhuman_ingest_publish_seconds",
    "From a webhook's arrival to JetStream's ack",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5),
)


async def _directory(request: Request) -> AccountDirectory:
    return request.app.state.accounts


async def _publisher(request: Request) -> InteractionPublisher:
    return request.app.state.publisher


Accounts = Annotated[AccountDirectory, Depends(_directory)]
Publisher = Annotated[InteractionPublisher, Depends(_publisher)]


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, refusing with 413 as soon as it grows past `limit`."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, {"error": f"body larger than {limit} bytes"})
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, {"error": f"body larger than {limit} bytes"})
        chunks.append(chunk)
    return b"".join(chunks)


def _problems(error: ValidationError) -> list[dict[str, str]]:
    return [
        {"field": ".".join(str(p) for p in item["loc"]) or "body", "problem": item["msg"]}
        for item in error.errors()
    ]


@router.post("/webhooks/generic/{account_id}", status_code=202)
async def generic_webhook(
    account_id: str, request: Request, accounts: Accounts, publisher: Publisher
) -> JSONResponse:
    """Accept one interaction signed with the account's secret; 202 once JetStream stored it."""
    started = time.perf_counter()
    try:
        with span(
            "receive webhook",
            parent=request.headers,
            kind=SpanKind.SERVER,
            attributes={"stayhuman.account_id": account_id},
        ):
            return await _accept(account_id, request, accounts, publisher, started)
    except HTTPException as error:
        REJECTED.labels(str(error.status_code)).inc()
        raise


async def _accept(
    account_id: str,
    request: Request,
    accounts: AccountDirectory,
    publisher: InteractionPublisher,
    started: float,
) -> JSONResponse:
    cid = request.headers.get(CORRELATION_HEADER) or uuid.uuid4().hex
    correlation_id.set(cid[:64])
    account: AccountView | None = await accounts.get(account_id)
    if account is None:
        raise HTTPException(404, {"error": f"unknown account {account_id!r}"})
    body = await read_body(request, request.app.state.settings.max_body_bytes)
    if not signature_valid(
        secret=account.webhook_secret, body=body, header=request.headers.get(SIGNATURE_HEADER)
    ):
        problem = "missing" if not request.headers.get(SIGNATURE_HEADER) else "bad"
        raise HTTPException(401, {"error": f"{problem} signature in {SIGNATURE_HEADER}"})
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise HTTPException(400, {"error": f"body is not JSON: {error}"}) from None
    try:
        payload = GenericInteraction.model_validate(document)
    except ValidationError as error:
        raise HTTPException(400, {"error": "invalid interaction", "problems": _problems(error)}) from None
    event = normalise(
        payload,
        tenant_id=account.tenant_id,
        account_id=account.id,
        platform=account.platform,
        received_at=utcnow(),
        correlation_id=correlation_id.get(),
    )
    try:
        duplicate = await publisher.publish(event, raw=RawPayload("generic", body, account.id))
    except (NatsError, TimeoutError) as error:
        log.warning("publish not acknowledged", extra={"error": repr(error)})
        raise HTTPException(
            503,
            {"error": "interaction not stored, retry later", "reason": type(error).__name__},
            headers={"Retry-After": "5"},
        ) from None
    RECEIVED.labels(account.tenant_id, "duplicate" if duplicate else "accepted").inc()
    PUBLISH_SECONDS.observe(time.perf_counter() - started)
    log.info(
        "interaction accepted",
        extra={"interaction_id": event.interaction_id, "account_id": account.id, "duplicate": duplicate},
    )
    return JSONResponse(
        {"status": "accepted", "interaction_id": event.interaction_id, "duplicate": duplicate},
        status_code=202,
        headers={CORRELATION_HEADER: correlation_id.get()},
    )
