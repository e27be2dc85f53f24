"""Web Push: VAPID keys, subscriptions registered over HTTP, and encrypted pushes.

Notify serves the registration until the operator API exists. A person opens
their push link (in every alert email, or from `stayhuman push-link PERSON`):
the page asks the browser for a push subscription with notify's VAPID public key
and registers it. The link is signed with the installation's link key and names
the person and the generation of their links: it lasts 30 days, and `stayhuman push
revoke PERSON` moves the generation on, which ends every link issued before and removes
the devices registered through them.

A subscription belongs to the person who registered it: an endpoint registered by
someone else is refused, never moved. Every field is bounded and checked (the endpoint
by the rules of `endpoints.py`), and every refusal is a 4xx JSON body naming the problem.

Pushes are encrypted for each subscription (aes128gcm) and signed with the
VAPID key; a push service that answers 404 or 410 has forgotten the
subscription, which is then removed.
"""

import base64
import binascii
import html
import json
import logging
import re
import ssl
import time
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Literal, Protocol
from urllib.parse import urlsplit

import aiohttp
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from py_vapid import Vapid
from pywebpush import WebPusher
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from services.notify.endpoints import (
    EndpointRefused,
    GuardedResolver,
    Resolve,
    check_endpoint,
    split_endpoint,
    system_resolve,
)
from shared.db.core import PEOPLE, PUSH_LINKS, PUSH_SUBSCRIPTIONS, execute, fetch_rows
from shared.db.session import dialect_insert, transaction
from shared.events import utcnow
from shared.secrets import LinkSigner, vapid_key_text
from shared.settings import SettingsError

log = logging.getLogger(__name__)

LINK_MAX_AGE = 30 * 24 * 3600  # a push link lasts 30 days
MAX_BODY_BYTES = 4096  # a browser's subscription is a few hundred bytes
MAX_DEVICES = 20  # per person; `stayhuman push revoke` clears them
PUSH_TTL = 3600


def load_vapid(value: str) -> Vapid:
    """The VAPID key of STAYHUMAN_VAPID_PRIVATE_KEY (PEM, its base64 body, or the raw key)."""
    try:
        key = Vapid.from_string(vapid_key_text(value))
        if not isinstance(key.private_key.curve, ec.SECP256R1):
            raise ValueError("not a P-256 key")
    except Exception:
        raise SettingsError(
            "STAYHUMAN_VAPID_PRIVATE_KEY is not a P-256 private key (PEM, its base64 body, or the raw "
            "32-byte key in base64url)"
        ) from None
    return key


def application_server_key(vapid: Vapid) -> str:
    """The public key browsers subscribe with (uncompressed point, base64url)."""
    raw = vapid.public_key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def push_link(signer: LinkSigner, public_url: str, person_id: str, generation: int) -> str:
    return f"{public_url.rstrip('/')}/push/{signer.issue('push', f'{generation}:{person_id}')}"


_PERSON = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")


def read_push_token(signer: LinkSigner, token: str) -> tuple[str, int] | None:
    """The person and link generation a push token names, or None."""
    text = signer.read(token, purpose="push", max_age=LINK_MAX_AGE)
    if text is None:
        return None
    generation, _, person = text.partition(":")
    if not generation.isascii() or not generation.isdigit() or len(generation) > 9:
        return None
    if not _PERSON.fullmatch(person):
        return None
    return person, int(generation)


# Reading and writing subscriptions and link generations.


@dataclass(frozen=True)
class Subscription:
    id: str
    person_id: str
    endpoint: str
    p256dh: str
    auth: str


async def subscriptions_of(*, session: AsyncSession, people: list[str]) -> dict[str, list[Subscription]]:
    rows = await fetch_rows(
        session, select(PUSH_SUBSCRIPTIONS).where(PUSH_SUBSCRIPTIONS.c.person_id.in_(people))
    )
    result: dict[str, list[Subscription]] = {}
    for row in rows:
        result.setdefault(row.person_id, []).append(
            Subscription(row.id, row.person_id, row.endpoint, row.p256dh, row.auth)
        )
    return result


async def link_generations(*, session: AsyncSession, people: Collection[str]) -> dict[str, int]:
    """The current generation of each person's push links (0 until a first revocation)."""
    rows = await fetch_rows(
        session,
        select(PUSH_LINKS.c.person_id, PUSH_LINKS.c.generation).where(
            PUSH_LINKS.c.person_id.in_(list(people))
        ),
    )
    found = {row.person_id: int(row.generation) for row in rows}
    return {person: found.get(person, 0) for person in people}


async def revoke_push_links(*, session: AsyncSession, person_id: str) -> int:
    """End every push link issued to `person_id` so far, and remove the devices registered
    through them; returns how many devices were removed."""
    now = utcnow()
    statement = dialect_insert(session, PUSH_LINKS).values(person_id=person_id, generation=1, revoked_at=now)
    statement = statement.on_conflict_do_update(
        index_elements=["person_id"],
        set_={"generation": PUSH_LINKS.c.generation + 1, "revoked_at": now},
    )
    await execute(session, statement)
    removed = await execute(
        session, delete(PUSH_SUBSCRIPTIONS).where(PUSH_SUBSCRIPTIONS.c.person_id == person_id)
    )
    return int(removed.rowcount or 0)


@dataclass(frozen=True)
class Registration:
    person_id: str
    generation: int  # of the link it came through
    endpoint: str
    p256dh: str
    auth: str


Registered = Literal["registered", "updated", "taken", "revoked", "full", "unknown_person"]


class PushStoreStarting(RuntimeError):
    """notify is starting: its database is not there yet."""


class PushStore(Protocol):
    """Where registrations live: the database in production."""

    async def generation(self, person_id: str) -> int | None:
        """The current generation of an active person's links; None for no such person."""
        ...

    async def register(self, registration: Registration) -> Registered: ...


@dataclass
class SqlPushStore:
    sessions: Callable[[], async_sessionmaker[AsyncSession] | None]

    def _factory(self) -> async_sessionmaker[AsyncSession]:
        factory = self.sessions()
        if factory is None:
            raise PushStoreStarting("notify is starting")
        return factory

    async def generation(self, person_id: str) -> int | None:
        async with self._factory()() as session:
            person = await fetch_rows(session, select(PEOPLE.c.active).where(PEOPLE.c.id == person_id))
            if not person or not person[0].active:
                return None
            return (await link_generations(session=session, people=[person_id]))[person_id]

    async def register(self, registration: Registration) -> Registered:
        r = registration
        async with transaction(self._factory()) as session:
            person = await fetch_rows(session, select(PEOPLE.c.active).where(PEOPLE.c.id == r.person_id))
            if not person or not person[0].active:
                return "unknown_person"
            # The link generation row, locked: a revocation running now either comes first
            # (this link is then refused) or waits and removes what this registers.
            await execute(
                session,
                dialect_insert(session, PUSH_LINKS)
                .values(person_id=r.person_id, generation=0)
                .on_conflict_do_nothing(index_elements=["person_id"]),
            )
            current = await fetch_rows(
                session,
                select(PUSH_LINKS.c.generation)
                .where(PUSH_LINKS.c.person_id == r.person_id)
                .with_for_update(),
            )
            if int(current[0].generation) != r.generation:
                return "revoked"
            owner = await fetch_rows(
                session,
                select(PUSH_SUBSCRIPTIONS.c.person_id).where(PUSH_SUBSCRIPTIONS.c.endpoint == r.endpoint),
            )
            if owner:
                if owner[0].person_id != r.person_id:
                    return "taken"
                await execute(
                    session,
                    PUSH_SUBSCRIPTIONS.update()
                    .where(PUSH_SUBSCRIPTIONS.c.endpoint == r.endpoint)
                    .values(p256dh=r.p256dh, auth=r.auth),
                )
                return "updated"
            count = await fetch_rows(
                session,
                select(func.count())
                .select_from(PUSH_SUBSCRIPTIONS)
                .where(PUSH_SUBSCRIPTIONS.c.person_id == r.person_id),
            )
            if int(count[0][0]) >= MAX_DEVICES:
                return "full"
            inserted = await fetch_rows(
                session,
                dialect_insert(session, PUSH_SUBSCRIPTIONS)
                .values(
                    id=uuid.uuid4().hex,
                    person_id=r.person_id,
                    endpoint=r.endpoint,
                    p256dh=r.p256dh,
                    auth=r.auth,
                    created_at=utcnow(),
                )
                .on_conflict_do_nothing(index_elements=["endpoint"])
                .returning(PUSH_SUBSCRIPTIONS.c.id),
            )
            return "registered" if inserted else "taken"  # registered by someone else meanwhile


# What a registration body must be.


class InvalidSubscription(ValueError):
    def __init__(self, status: int, error: str, problems: list[dict[str, str]]) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.problems = problems

    def answer(self) -> JSONResponse:
        return JSONResponse({"error": self.error, "problems": self.problems}, self.status)


_BASE64 = re.compile(r"[A-Za-z0-9_\-+/]+={0,2}")


def _key_bytes(value: object, field_name: str, size: int, problems: list[dict[str, str]]) -> bytes | None:
    longest = (size * 4 + 2) // 3 + 2
    if not isinstance(value, str):
        problems.append({"field": f"keys.{field_name}", "problem": "required, a base64url string"})
        return None
    if len(value) > longest or not _BASE64.fullmatch(value):
        problems.append({"field": f"keys.{field_name}", "problem": f"must be {size} bytes in base64url"})
        return None
    text = value.rstrip("=").replace("+", "-").replace("/", "_")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != size:
        problems.append({"field": f"keys.{field_name}", "problem": f"must be {size} bytes in base64url"})
        return None
    return raw


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def parse_subscription(raw: bytes) -> tuple[str, str, str]:
    """The endpoint, p256dh and auth of a registration body (a browser's PushSubscription as
    JSON), normalised; or InvalidSubscription naming every problem. Pure: no resolution."""
    try:
        document = json.loads(raw)
    except (ValueError, RecursionError):  # not JSON, not UTF-8, nested too deep, huge numbers
        raise InvalidSubscription(
            400, "invalid_json", [{"field": "body", "problem": "not a JSON document in UTF-8"}]
        ) from None
    if not isinstance(document, dict):
        raise InvalidSubscription(
            422, "invalid_subscription", [{"field": "body", "problem": "must be a JSON object"}]
        )
    problems: list[dict[str, str]] = []
    endpoint = document.get("endpoint")
    if not isinstance(endpoint, str):
        problems.append({"field": "endpoint", "problem": "required, an https URL"})
    else:
        try:
            split_endpoint(endpoint)
        except EndpointRefused as error:
            problems.append({"field": "endpoint", "problem": str(error)})
    keys = document.get("keys")
    p256dh = auth = None
    if not isinstance(keys, dict):
        problems.append({"field": "keys", "problem": "required, an object with p256dh and auth"})
    else:
        point = _key_bytes(keys.get("p256dh"), "p256dh", 65, problems)
        if point is not None:
            try:
                ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
                if point[0] != 4:
                    raise ValueError("compressed")
                p256dh = _b64(point)
            except ValueError:
                problems.append(
                    {"field": "keys.p256dh", "problem": "must be an uncompressed P-256 public key"}
                )
        secret = _key_bytes(keys.get("auth"), "auth", 16, problems)
        auth = _b64(secret) if secret is not None else None
    if problems or not isinstance(endpoint, str) or p256dh is None or auth is None:
        raise InvalidSubscription(422, "invalid_subscription", problems)
    return endpoint, p256dh, auth


async def read_body(request: Request, limit: int) -> bytes | None:
    """The request body, or None as soon as it proves longer than `limit` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and (len(declared) > 9 or int(declared) > limit):
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


# Sending.


@dataclass
class PushSender:
    vapid: Vapid
    contact: str  # mailto: or https: where the push service can reach the operator
    sessions: async_sessionmaker[AsyncSession]
    timeout: float = 10.0
    trusted: Collection[str] = frozenset()
    resolve: Resolve = field(default=system_resolve)

    async def send(self, subscriptions: list[Subscription], payload: dict[str, str]) -> int:
        """Push to each subscription; returns how many took it. Forgotten ones are removed;
        one whose host now resolves to a non-public address is not reached."""
        delivered, gone, errors = 0, [], []
        data = json.dumps(payload).encode()
        connector = aiohttp.TCPConnector(
            resolver=GuardedResolver(self.resolve, self.trusted),
            ssl=ssl.create_default_context(),
            use_dns_cache=False,
        )
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
            for subscription in subscriptions:
                try:
                    status, detail = await self._push(http, subscription, data)
                except EndpointRefused as error:
                    errors.append(f"refused: {error}")
                    log.warning(
                        "push endpoint refused", extra={"person": subscription.person_id, "error": str(error)}
                    )
                    continue
                except Exception as error:  # a push service unreachable, a timeout
                    errors.append(f"{type(error).__name__}: {error}")
                    continue
                if status in (200, 201, 202):
                    delivered += 1
                elif status in (404, 410):
                    gone.append(subscription.id)
                else:
                    errors.append(f"{status}: {detail}")
        if gone:
            async with transaction(self.sessions) as session:
                await execute(session, delete(PUSH_SUBSCRIPTIONS).where(PUSH_SUBSCRIPTIONS.c.id.in_(gone)))
            log.info("push subscriptions removed: the push service forgot them", extra={"count": len(gone)})
        if delivered == 0 and errors:
            raise RuntimeError("; ".join(errors)[:1000])
        return delivered

    async def _push(
        self, http: aiohttp.ClientSession, subscription: Subscription, data: bytes
    ) -> tuple[int, str]:
        # An address in the URL never goes through the resolver: it is checked here.
        await check_endpoint(subscription.endpoint, resolve=self.resolve, trusted=self.trusted)
        info = {
            "endpoint": subscription.endpoint,
            "keys": {"p256dh": subscription.p256dh, "auth": subscription.auth},
        }
        body = WebPusher(info).encode(data, "aes128gcm")["body"]
        parts = urlsplit(subscription.endpoint)
        claims = {
            "sub": self.contact,
            "aud": f"{parts.scheme}://{parts.netloc}",
            "exp": int(time.time()) + 12 * 3600,
        }
        headers = {
            "TTL": str(PUSH_TTL),
            "Content-Encoding": "aes128gcm",
            "Content-Type": "application/octet-stream",
            **self.vapid.sign(claims),
        }
        async with http.post(
            subscription.endpoint, data=body, headers=headers, allow_redirects=False
        ) as answer:
            detail = (await answer.content.read(500)).decode(errors="replace")
            return answer.status, detail


# The pages and the registration endpoint.


_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>StayHuman alerts on this device</title></head>
<body style="font-family: sans-serif">
<h1>Alerts for {name} on this device</h1>
<p id="state">Press the button to get StayHuman's alerts here as notifications.</p>
<button id="go">Turn on notifications</button>
<script>
const key = "{key}";
function bytes(b64) {{
  const pad = "=".repeat((4 - b64.length % 4) % 4);
  const raw = atob((b64 + pad).replace(/-/g, "+").replace(/_/g, "/"));
  return Uint8Array.from([...raw].map(c => c.charCodeAt(0)));
}}
document.getElementById("go").onclick = async () => {{
  const worker = await navigator.serviceWorker.register("/push/sw.js");
  const sub = await worker.pushManager.subscribe({{userVisibleOnly: true, applicationServerKey: bytes(key)}});
  const answer = await fetch(location.pathname + "/subscriptions", {{
    method: "POST", headers: {{"Content-Type": "application/json"}}, body: JSON.stringify(sub)
  }});
  const said = await answer.json().catch(() => ({{}}));
  document.getElementById("state").textContent = answer.ok
    ? "Done: alerts will show here."
    : "Failed: " + ((said.problems || []).map(p => p.field + ": " + p.problem).join("; ") || said.error || answer.status);
}};
</script></body></html>
"""

_WORKER = """self.addEventListener("push", event => {
  const alert = event.data ? event.data.json() : {title: "StayHuman", body: ""};
  event.waitUntil(self.registration.showNotification(alert.title, {body: alert.body, data: alert}));
});
self.addEventListener("notificationclick", event => {
  event.notification.close();
  const url = event.notification.data && event.notification.data.url;
  if (url && /^https?:\\/\\//i.test(url)) clients.openWindow(url);
});
"""


def _problem(status: int, error: str, detail: str) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status)


_REFUSED: dict[str, tuple[int, str, str]] = {
    "taken": (409, "endpoint_taken", "this push endpoint is registered to someone else"),
    "revoked": (410, "link_revoked", "this push link was revoked; ask for a new one"),
    "full": (
        409,
        "too_many_devices",
        f"{MAX_DEVICES} devices are registered already; an operator can clear them (`stayhuman push revoke`)",
    ),
    "unknown_person": (404, "unknown_person", "this link's person is not an active person any more"),
}


def push_router(
    *,
    signer: LinkSigner,
    vapid: Vapid,
    store: PushStore,
    resolve: Resolve = system_resolve,
    trusted: Collection[str] = frozenset(),
) -> APIRouter:
    router = APIRouter()

    @router.get("/push/vapid-public-key")
    async def public_key() -> dict[str, str]:
        return {"publicKey": application_server_key(vapid)}

    @router.get("/push/sw.js")
    async def worker() -> Response:
        return Response(_WORKER, media_type="text/javascript")

    @router.get("/push/{token}", response_class=HTMLResponse)
    async def page(token: str) -> HTMLResponse:
        found = read_push_token(signer, token)
        invalid = HTMLResponse(
            "<h1>This link is not valid</h1><p>It may be damaged, too old or revoked.</p>", 404
        )
        if found is None:
            return invalid
        person, generation = found
        try:
            current = await store.generation(person)
        except PushStoreStarting:
            return HTMLResponse("<h1>Starting</h1><p>Try again in a moment.</p>", 503)
        if current != generation:
            return invalid
        return HTMLResponse(_PAGE.format(name=html.escape(person), key=application_server_key(vapid)))

    @router.post("/push/{token}/subscriptions", status_code=201)
    async def register(token: str, request: Request) -> JSONResponse:
        found = read_push_token(signer, token)
        if found is None:
            return _problem(404, "invalid_link", "this push link is not valid (damaged, too old or revoked)")
        person, generation = found
        raw = await read_body(request, MAX_BODY_BYTES)
        if raw is None:
            return _problem(413, "body_too_large", f"a subscription is at most {MAX_BODY_BYTES} bytes")
        try:
            endpoint, p256dh, auth = parse_subscription(raw)
            await check_endpoint(endpoint, resolve=resolve, trusted=trusted)
        except InvalidSubscription as error:
            return error.answer()
        except EndpointRefused as error:
            return InvalidSubscription(
                422, "invalid_subscription", [{"field": "endpoint", "problem": str(error)}]
            ).answer()
        try:
            outcome = await store.register(Registration(person, generation, endpoint, p256dh, auth))
        except PushStoreStarting:
            return _problem(503, "starting", "notify is starting; try again in a moment")
        if outcome in _REFUSED:
            return _problem(*_REFUSED[outcome])
        log.info("push subscription registered", extra={"person": person, "outcome": outcome})
        return JSONResponse({"registered": True, "person": person}, 201 if outcome == "registered" else 200)

    return router
