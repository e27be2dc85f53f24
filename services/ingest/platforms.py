"""Platform webhooks (Meta, X): verify the platform's signature, normalise, publish.

A platform retries what it does not get a 2xx for, so: 401 for a bad signature,
400 for a body that is not the documented shape, 200 for well-formed events we do
not route (counted and logged, never retried forever), 503 only when JetStream did
not store everything (the platform's retry then finds duplicates, not gaps).
"""

import logging
from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from nats.errors import Error as NatsError
from prometheus_client import Counter

from services.ingest.accounts import AccountDirectory, AccountView
from services.ingest.connectors import meta, x
from services.ingest.connectors.model import Draft, MalformedPayload, Parsed, to_events
from services.ingest.publisher import InteractionPublisher, RawPayload
from services.ingest.settings import IngestSettings
from services.ingest.webhooks import RECEIVED, request_correlation_id, unavailable
from shared.events import Platform, utcnow
from shared.logs import CORRELATION_HEADER, correlation_id

log = logging.getLogger(__name__)
router = APIRouter()

IGNORED = Counter("stayhuman_ingest_ignored_total", "Well-formed platform events not routed", ["platform"])
REJECTED_ENTRIES = Counter(
    "stayhuman_ingest_dead_lettered_total",
    "Platform entries that cannot be stored, kept on the dead letter",
    ["platform"],
)


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
        raise HTTPException(
            403,
            {
                "error": "hub.verify_token does not match, or not a subscribe request with a numeric hub.challenge"
            },
        )
    return answer


@router.post("/webhooks/meta")
async def meta_events(
    request: Request, settings: Settings, accounts: Accounts, publisher: Publisher
) -> JSONResponse:
    secret = _secret(settings.meta_app_secret, "STAYHUMAN_META_APP_SECRET", "Meta")
    return await _receive(
        request, accounts, publisher,
        verify=lambda body: meta.signature_valid(
            secret=secret, body=body, header=request.headers.get(meta.SIGNATURE_HEADER)
        ),
        header=meta.SIGNATURE_HEADER, parse=meta.parse, platform="meta",
    )  # fmt: skip


@router.get("/webhooks/x")
async def x_crc(request: Request, settings: Settings) -> dict[str, str]:
    secret = _secret(settings.x_consumer_secret, "STAYHUMAN_X_CONSUMER_SECRET", "X")
    try:
        return x.crc_response(secret=secret, token=request.query_params.get("crc_token", ""))
    except x.BadCrcToken as error:
        raise HTTPException(400, {"error": str(error)}) from None


@router.post("/webhooks/x")
async def x_events(
    request: Request, settings: Settings, accounts: Accounts, publisher: Publisher
) -> JSONResponse:
    secret = _secret(settings.x_consumer_secret, "STAYHUMAN_X_CONSUMER_SECRET", "X")
    return await _receive(
        request, accounts, publisher,
        verify=lambda body: x.signature_valid(secret=secret, body=body, header=request.headers.get(x.SIGNATURE_HEADER)),
        header=x.SIGNATURE_HEADER, parse=x.parse, platform="x",
    )  # fmt: skip


async def _receive(
    request: Request,
    accounts: AccountDirectory,
    publisher: InteractionPublisher,
    *,
    verify: Callable[[bytes], bool],
    header: str,
    parse: Callable[[bytes], Parsed],
    platform: str,
) -> JSONResponse:
    """A platform's delivery: every entry stored, ignored (well-formed, not routed) or rejected
    (kept on the dead letter with its problem), then 200 so the platform does not retry."""
    correlation_id.set(request_correlation_id(request))
    body = await request.body()
    if not verify(body):
        problem = "missing" if not request.headers.get(header) else "bad"
        raise HTTPException(401, {"error": f"{problem} signature in {header}"})
    try:
        parsed = parse(body)
    except MalformedPayload as error:
        raise HTTPException(400, {"error": str(error)}) from None
    found: dict[tuple[Platform, str], AccountView | None] = {}
    for draft in parsed.drafts:
        key = (draft.platform, draft.platform_account_id)
        if key not in found:
            found[key] = await accounts.by_platform_id(*key)

    def account_of(draft: Draft) -> tuple[str, str] | None:
        view = found[(draft.platform, draft.platform_account_id)]
        return (view.tenant_id, view.id) if view is not None else None

    events, rejected, unknown = to_events(
        parsed.drafts, account_of, received_at=utcnow(), correlation_id=correlation_id.get()
    )
    ignored = [*parsed.ignored, *(f"no account for {platform} id {ref[:64]}" for ref in sorted(unknown))]
    if ignored:
        IGNORED.labels(platform).inc(len(ignored))
        log.info("platform events not routed", extra={"platform": platform, "ignored": ignored[:20]})
    rejected = [*parsed.rejected, *rejected]
    try:
        kept = await publisher.publish_many(events, raw=RawPayload(platform, body), rejected=rejected)
    except (NatsError, TimeoutError) as error:
        raise unavailable(error) from None
    too_large = len(kept) - len(rejected)
    rejected = kept
    if rejected:
        REJECTED_ENTRIES.labels(platform).inc(len(rejected))
        log.warning(
            "platform entries kept on the dead letter",
            extra={"platform": platform, "rejected": [f"{r.where}: {r.problem}" for r in rejected[:20]]},
        )
    for event in events:
        RECEIVED.labels(event.tenant_id, "accepted").inc()
    return JSONResponse(
        {
            "status": "accepted",
            "accepted": len(events) - too_large,
            "ignored": len(ignored),
            "rejected": [{"where": r.where, "problem": r.problem} for r in rejected],
        },
        headers={CORRELATION_HEADER: correlation_id.get()},
    )
