"""Platform webhooks (Meta, X): verify the platform's signature, normalise, publish.

A platform retries what it does not get a 2xx for, so: 401 for a bad signature,
400 for a body that is not the documented shape, 200 for well-formed events we do
not route (counted and logged, never retried forever), 503 only when JetStream did
not store everything (the platform's retry then finds duplicates, not gaps).
"""

import logging
import uuid
from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from nats.errors import Error as NatsError
from prometheus_client import Counter

from services.ingest.accounts import AccountDirectory
from services.ingest.connectors import meta, x
from services.ingest.connectors.model import Draft, MalformedPayload, Parsed, to_event
from services.ingest.publisher import InteractionPublisher, RawPayload
from services.ingest.settings import IngestSettings
from services.ingest.webhooks import RECEIVED, read_body
from shared.events import InteractionReceived, InteractionRetracted, utcnow
from shared.logs import CORRELATION_HEADER, correlation_id

log = logging.getLogger(__name__)
router = APIRouter()

IGNORED = Counter("stayhuman_ingest_ignored_total", "Well-formed platform events not routed", ["platform"])


async def _settings(request: Request) -> IngestSettings:
    return request.app.state.settings


async def _directory(request: Request) -> AccountDirectory:
    return request.app.state.accounts


async def _publisher(request: Request) -> InteractionPublisher:
    return request.app.state.publisher


Settings = Annotated[IngestSettings, Depends(_settings)]
Accounts = Annotated[AccountDirectory, Depends(_directory)]
Publisher = Annotated[InteractionPublisher, Depends(_publisher)]


def _secret(value: object, variable: str, platform: str) -> str:
    if value is None:
        raise HTTPException(
            404, {"error": f"the {platform} webhook is not configured ({variable} is not set)"}
        )
    return value.get_secret_value()  # type: ignore[attr-defined]


@router.get("/webhooks/meta", response_class=PlainTextResponse)
async def meta_subscription(request: Request, settings: Settings) -> str:
    token = _secret(settings.meta_verify_token, "STAYHUMAN_META_VERIFY_TOKEN", "Meta")
    answer = meta.challenge(request.query_params, verify_token=token)
    if answer is None:
        raise HTTPException(403, {"error": "hub.verify_token does not match, or not a subscribe request"})
    return answer


@router.post("/webhooks/meta")
async def meta_events(
    request: Request, settings: Settings, accounts: Accounts, publisher: Publisher
) -> JSONResponse:
    secret = _secret(settings.meta_app_secret, "STAYHUMAN_META_APP_SECRET", "Meta")
    return await _receive(
        request, settings, accounts, publisher,
        verify=lambda body: meta.signature_valid(
            secret=secret, body=body, header=request.headers.get(meta.SIGNATURE_HEADER)
        ),
        header=meta.SIGNATURE_HEADER, parse=meta.parse, platform="meta",
    )  # fmt: skip


@router.get("/webhooks/x")
async def x_crc(settings: Settings, crc_token: Annotated[str, Query(min_length=1)]) -> dict[str, str]:
    secret = _secret(settings.x_consumer_secret, "STAYHUMAN_X_CONSUMER_SECRET", "X")
    return x.crc_response(secret=secret, token=crc_token)


@router.post("/webhooks/x")
async def x_events(
    request: Request, settings: Settings, accounts: Accounts, publisher: Publisher
) -> JSONResponse:
    secret = _secret(settings.x_consumer_secret, "STAYHUMAN_X_CONSUMER_SECRET", "X")
    return await _receive(
        request, settings, accounts, publisher,
        verify=lambda body: x.signature_valid(secret=secret, body=body, header=request.headers.get(x.SIGNATURE_HEADER)),
        header=x.SIGNATURE_HEADER, parse=x.parse, platform="x",
    )  # fmt: skip


async def _receive(
    request: Request,
    settings: IngestSettings,
    accounts: AccountDirectory,
    publisher: InteractionPublisher,
    *,
    verify: Callable[[bytes], bool],
    header: str,
    parse: Callable[[bytes], Parsed],
    platform: str,
) -> JSONResponse:
    correlation_id.set((request.headers.get(CORRELATION_HEADER) or uuid.uuid4().hex)[:64])
    body = await read_body(request, settings.max_body_bytes)
    if not verify(body):
        problem = "missing" if not request.headers.get(header) else "bad"
        raise HTTPException(401, {"error": f"{problem} signature in {header}"})
    try:
        parsed = parse(body)
    except MalformedPayload as error:
        raise HTTPException(400, {"error": str(error)}) from None
    events, unknown = await _events(parsed.drafts, accounts)
    ignored = [*parsed.ignored, *(f"no account for {platform} id {ref}" for ref in sorted(unknown))]
    if ignored:
        IGNORED.labels(platform).inc(len(ignored))
        log.info("platform events not routed", extra={"platform": platform, "ignored": ignored[:20]})
    try:
        await publisher.publish_many(events, raw=RawPayload(platform, body))
    except (NatsError, TimeoutError) as error:
        log.warning("publish not acknowledged", extra={"error": repr(error)})
        raise HTTPException(
            503,
            {"error": "interactions not stored, retry later", "reason": type(error).__name__},
            headers={"Retry-After": "5"},
        ) from None
    for event in events:
        RECEIVED.labels(event.tenant_id, "accepted").inc()
    return JSONResponse(
        {"status": "accepted", "accepted": len(events), "ignored": len(ignored)},
        headers={CORRELATION_HEADER: correlation_id.get()},
    )


async def _events(
    drafts: list[Draft], accounts: AccountDirectory
) -> tuple[list[InteractionReceived | InteractionRetracted], set[str]]:
    events: list[InteractionReceived | InteractionRetracted] = []
    unknown: set[str] = set()
    received_at = utcnow()
    for draft in drafts:
        account = await accounts.by_platform_id(draft.platform, draft.platform_account_id)
        if account is None:
            unknown.add(draft.platform_account_id)
            continue
        events.append(
            to_event(
                draft,
                tenant_id=account.tenant_id,
                account_id=account.id,
                received_at=received_at,
                correlation_id=correlation_id.get(),
            )
        )
    return events, unknown
