"""HTTP entry points for platform webhooks. Thin: verify, convert, publish."""

import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse
from nats.errors import Error as NatsError
from opentelemetry.trace import SpanKind
from prometheus_client import Counter, Histogram
from pydantic import ValidationError
from starlette.datastructures import Headers, State
from starlette.types import Receive, Scope, Send

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


GENERIC_PREFIX = "/webhooks/generic/"


@dataclass(frozen=True, slots=True)
class Answer:
    """What the generic webhook answers: a status, a JSON body and extra headers."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] | None = None

    @classmethod
    def of(cls, error: HTTPException) -> "Answer":
        """What the error handlers answer for `error` (shared.runtime.install_error_handlers)."""
        detail = error.detail
        body = detail if isinstance(detail, dict) else {"error": str(detail)}
        return cls(error.status_code, body, dict(error.headers) if error.headers else None)

    def error(self) -> HTTPException:
        return HTTPException(self.status, self.body, headers=self.headers)

    def response(self) -> JSONResponse:
        return JSONResponse(self.body, status_code=self.status, headers=self.headers)

    def rendered(self) -> tuple[bytes, list[tuple[bytes, bytes]]]:
        """The body and headers exactly as JSONResponse renders them."""
        payload = json.dumps(
            self.body, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
        ).encode()
        raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (self.headers or {}).items()]
        raw += [(b"content-length", str(len(payload)).encode()), (b"content-type", b"application/json")]
        return payload, raw


@router.post("/webhooks/generic/{account_id}", status_code=202)
async def generic_webhook(account_id: str, request: Request) -> JSONResponse:
    """Accept one interaction signed with the account's secret; 202 once JetStream stored it.

    With tracing off, ingest's app answers this route with `generic_endpoint` before FastAPI
    routes anything (the same answers from the same code); this route serves it otherwise, and
    documents it."""
    # The directory and the publisher are taken from the app, not declared as dependencies:
    # FastAPI's resolution of two dependencies cost about a sixth of this route's CPU.
    started = time.perf_counter()
    body = await request.body()
    answer = await accept_generic(
        account_id, request.headers, body, _directory(request), _publisher(request), started
    )
    if answer.status >= 400:
        raise answer.error()  # FastAPI's telemetry sees the refusal, its error handler answers it
    return answer.response()


def generic_account(path: str) -> str | None:
    """The account id in a generic webhook's path (what `{account_id}` matches), else None."""
    if not path.startswith(GENERIC_PREFIX):
        return None
    account_id = path[len(GENERIC_PREFIX) :]
    return account_id if account_id and "/" not in account_id else None


def generic_endpoint(state: State) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """`POST /webhooks/generic/{account_id}` as a plain ASGI app, for requests whose method and
    path `generic_account` has checked: what the route answers, without the cost of FastAPI's
    middleware, routing and parameter resolution (about a third of a webhook's CPU). The
    directory and the publisher are taken from `state` at each request, as the route does."""

    async def endpoint(scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        sent = False
        try:
            chunks = []
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    break
            account_id = scope["path"][len(GENERIC_PREFIX) :]
            answer = await accept_generic(
                account_id,
                Headers(scope=scope),
                b"".join(chunks) if len(chunks) != 1 else chunks[0],
                state.accounts,
                state.publisher,
                started,
            )
            payload, headers = answer.rendered()
            sent = True
            await send({"type": "http.response.start", "status": answer.status, "headers": headers})
            await send({"type": "http.response.body", "body": payload})
        except Exception:
            # What Starlette's outermost middleware does: a plain 500 if nothing was sent, and
            # the error raised on to the server, which logs it.
            if not sent:
                await send(
                    {
                        "type": "http.response.start",
                        "status": 500,
                        "headers": [
                            (b"content-length", b"21"),
                            (b"content-type", b"text/plain; charset=utf-8"),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": b"Internal Server Error"})
            raise

    return endpoint


async def accept_generic(
    account_id: str,
    headers: Mapping[str, str],
    body: bytes,
    accounts: AccountDirectory,
    publisher: InteractionPublisher,
    started: float,
) -> Answer:
    """The generic webhook's answer to a request (its headers and whole body)."""
    try:
        with span(
            "receive webhook",
            parent=headers,
            kind=SpanKind.SERVER,
            attributes={"stayhuman.account_id": account_id[:63]},
        ):
            answer = await _accept(account_id, headers, body, accounts, publisher, started)
            if answer.status >= 400:
                raise answer.error()  # the span records the refusal as an error, with its detail
    except HTTPException as error:
        return Answer.of(error)
    return answer


async def _accept(
    account_id: str,
    headers: Mapping[str, str],
    body: bytes,
    accounts: AccountDirectory,
    publisher: InteractionPublisher,
    started: float,
) -> Answer:
    correlation_id.set(correlation_id_of(headers))
    header = headers.get(SIGNATURE_HEADER)
    if not header:
        return Answer(401, {"error": f"missing signature in {SIGNATURE_HEADER}"})
    account: AccountView | None = await accounts.get(account_id)
    secret = accounts.webhook_secret(account) if account is not None else None
    if not signature_valid(secret=secret or _NO_SECRET, body=body, header=header) or secret is None:
        return Answer(401, {"error": f"bad signature in {SIGNATURE_HEADER}"})
    assert account is not None
    try:
        document = load_json(body)
    except MalformedPayload as error:
        return Answer(400, {"error": str(error)})
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
        return Answer(400, {"error": "invalid interaction", "problems": problems_of(error)})
    except ValueError as error:  # e.g. from further ahead than clocks drift
        return Answer(
            400,
            {"error": "invalid interaction", "problems": [{"field": "created_at", "problem": str(error)}]},
        )
    try:
        duplicate = await publisher.publish(event, raw=RawPayload("generic", body, account.id))
    except MessageTooLarge as error:
        return Answer(413, {"error": str(error)})
    except (NatsError, TimeoutError) as error:
        return Answer.of(unavailable(error, "interaction"))
    RECEIVED.labels(account.tenant_id, "duplicate" if duplicate else "accepted").inc()
    PUBLISH_SECONDS.observe(time.perf_counter() - started)
    log.info(
        "interaction accepted",
        extra={"interaction_id": event.interaction_id, "account_id": account.id, "duplicate": duplicate},
    )
    return Answer(
        202,
        {"status": "accepted", "interaction_id": event.interaction_id, "duplicate": duplicate},
        {CORRELATION_HEADER: correlation_id.get()},
    )


def request_correlation_id(request: Request) -> str:
    """The sender's correlation id when it is a sane one, else a new one."""
    return correlation_id_of(request.headers)


def correlation_id_of(headers: Mapping[str, str]) -> str:
    """The correlation id in `headers` when it is a sane one, else a new one."""
    given = headers.get(CORRELATION_HEADER, "")
    if given and len(given) <= 64 and given.isascii() and given.isprintable():
        return given
    return new_id()
