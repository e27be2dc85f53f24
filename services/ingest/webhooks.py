"""HTTP entry points for platform webhooks. Thin: verify, convert, publish."""

import logging
import time

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse
from nats.errors import Error as NatsError
from opentelemetry.trace import SpanKind
from prometheus_client import Counter, Histogram
from pydantic import ValidationError

from services.ingest.accounts import AccountDirectory, AccountView
from services.ingest.connectors.model import MalformedPayload, load_json
from services.ingest.generic import SIGNATURE_HEADER, GenericInteraction, normalise, signature_valid
from services.ingest.publisher import InteractionPublisher, RawPayload
from shared.events import storable_text, utcnow
from shared.ids import new_id
from shared.jetstream import MessageTooLarge
from shared.logs import CORRELATION_HEADER, correlation_id
from shared.tracing import span

log = logging.getLogger(__name__)
router = APIRouter()

RECEIVED = Counter(
    "stayhuman_ingest_interactions_total", "Webhook interactions by outcome", ["tenant", "result"]
)
PUBLISH_SECONDS = Histogram(
    "stayhuman_ingest_publish_seconds",
    "From a webhook's arrival to JetStream's ack",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5),
)
# Verifying against this when the account does not exist costs what a real check costs,
# and answers the same 401: a caller learns nothing about which accounts exist.
_NO_SECRET = "no account has this secret: it only makes the unknown look like the known"


def _directory(request: Request) -> AccountDirectory:
    return request.app.state.accounts


def _publisher(request: Request) -> InteractionPublisher:
    return request.app.state.publisher


def problems_of(error: ValidationError) -> list[dict[str, str]]:
    """What was wrong, field by field (names a sender chose are cut and made printable)."""
    return [
        {
            "field": storable_text(".".join(str(p) for p in item["loc"]) or "body")[:200],
            "problem": storable_text(item["msg"])[:500],
        }
        for item in error.errors()[:50]
    ]


def unavailable(error: Exception, what: str = "interactions") -> HTTPException:
    """JetStream did not store it: the sender should retry (its retry finds duplicates, not gaps)."""
    log.warning("publish not acknowledged", extra={"error": repr(error)})
    return HTTPException(
        503,
        {"error": f"{what} not stored, retry later", "reason": type(error).__name__},
        headers={"Retry-After": "5"},
    )


@router.post("/webhooks/generic/{account_id}", status_code=202)
async def generic_webhook(account_id: str, request: Request) -> JSONResponse:
    """Accept one interaction signed with the account's secret; 202 once JetStream stored it."""
    # The directory and the publisher are taken from the app, not declared as dependencies:
    # FastAPI's resolution of two dependencies cost about a sixth of this route's CPU.
    started = time.perf_counter()
    accounts, publisher = _directory(request), _publisher(request)
    with span(
        "receive webhook",
        parent=request.headers,
        kind=SpanKind.SERVER,
        attributes={"stayhuman.account_id": account_id[:63]},
    ):
        return await _accept(account_id, request, accounts, publisher, started)


async def _accept(
    account_id: str,
    request: Request,
    accounts: AccountDirectory,
    publisher: InteractionPublisher,
    started: float,
) -> JSONResponse:
    correlation_id.set(request_correlation_id(request))
    header = request.headers.get(SIGNATURE_HEADER)
    if not header:
        raise HTTPException(401, {"error": f"missing signature in {SIGNATURE_HEADER}"})
    body = await request.body()
    account: AccountView | None = await accounts.get(account_id)
    secret = accounts.webhook_secret(account) if account is not None else None
    if not signature_valid(secret=secret or _NO_SECRET, body=body, header=header) or secret is None:
        raise HTTPException(401, {"error": f"bad signature in {SIGNATURE_HEADER}"})
    assert account is not None
    try:
        document = load_json(body)
    except MalformedPayload as error:
        raise HTTPException(400, {"error": str(error)}) from None
    try:
        payload = GenericInteraction.model_validate(document)
        event = normalise(
            payload,
            tenant_id=account.tenant_id,
            account_id=account.id,
            platform=account.platform,
            received_at=utcnow(),
            correlation_id=correlation_id.get(),
        )
    except ValidationError as error:
        raise HTTPException(400, {"error": "invalid interaction", "problems": problems_of(error)}) from None
    except ValueError as error:  # e.g. from further ahead than clocks drift
        raise HTTPException(
            400,
            {"error": "invalid interaction", "problems": [{"field": "created_at", "problem": str(error)}]},
        ) from None
    try:
        duplicate = await publisher.publish(event, raw=RawPayload("generic", body, account.id))
    except MessageTooLarge as error:
        raise HTTPException(413, {"error": str(error)}) from None
    except (NatsError, TimeoutError) as error:
        raise unavailable(error, "interaction") from None
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


def request_correlation_id(request: Request) -> str:
    """The sender's correlation id when it is a sane one, else a new one."""
    given = request.headers.get(CORRELATION_HEADER, "")
    if given and len(given) <= 64 and given.isascii() and given.isprintable():
        return given
    return new_id()
