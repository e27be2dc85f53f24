"""Web Push: VAPID keys, subscriptions registered over HTTP, and encrypted pushes.

Notify serves the registration until the operator API exists. A person opens
their push link (in every alert email, or from `stayhuman push-link PERSON`):
the page asks the browser for a push subscription with notify's VAPID public key
and registers it. The link carries a token sealed with the installation's key
that names the person, so nobody registers a device for someone else.

Pushes are encrypted for each subscription (aes128gcm) and signed with the
VAPID key; a push service that answers 404 or 410 has forgotten the
subscription, which is then removed.
"""

import base64
import html
import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from py_vapid import Vapid
from pydantic import BaseModel, Field, ValidationError
from pywebpush import WebPushException, webpush_async
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.db.core import PEOPLE, PUSH_SUBSCRIPTIONS, execute, fetch_rows
from shared.db.session import dialect_insert, transaction
from shared.events import utcnow
from shared.secrets import SecretBox

log = logging.getLogger(__name__)

LINK_MAX_AGE = 365 * 24 * 3600


def load_vapid(*, pem: str | None, state_dir: Path) -> Vapid:
    """The configured VAPID private key (PEM), or this machine's key file, made on first use."""
    if pem:
        return Vapid.from_pem(pem.encode())
    path = state_dir / "vapid.pem"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        key = Vapid()
        key.generate_keys()
        path.write_bytes(key.private_pem())
        path.chmod(0o600)
    return Vapid.from_file(str(path))


def application_server_key(vapid: Vapid) -> str:
    """The public key browsers subscribe with (uncompressed point, base64url)."""
    raw = vapid.public_key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def push_link(box: SecretBox, public_url: str, person_id: str) -> str:
    return f"{public_url.rstrip('/')}/push/{box.token(f'push:{person_id}')}"


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


@dataclass
class PushSender:
    vapid: Vapid
    contact: str  # mailto: or https: where the push service can reach the operator
    sessions: async_sessionmaker[AsyncSession]
    timeout: float = 10.0

    async def send(self, subscriptions: list[Subscription], payload: dict[str, str]) -> int:
        """Push to each subscription; returns how many took it. Forgotten ones are removed."""
        delivered, gone, errors = 0, [], []
        for subscription in subscriptions:
            try:
                await webpush_async(
                    subscription_info={
                        "endpoint": subscription.endpoint,
                        "keys": {"p256dh": subscription.p256dh, "auth": subscription.auth},
                    },
                    data=json.dumps(payload),
                    vapid_private_key=self.vapid,
                    vapid_claims={"sub": self.contact},
                    ttl=3600,
                    timeout=self.timeout,
                )
                delivered += 1
            except WebPushException as error:
                status = getattr(error.response, "status", None)
                if status in (404, 410):
                    gone.append(subscription.id)
                else:
                    errors.append(f"{status}: {error}")
            except Exception as error:  # a push service unreachable, a timeout
                errors.append(f"{type(error).__name__}: {error}")
        if gone:
            async with transaction(self.sessions) as session:
                await execute(session, delete(PUSH_SUBSCRIPTIONS).where(PUSH_SUBSCRIPTIONS.c.id.in_(gone)))
            log.info("push subscriptions removed: the push service forgot them", extra={"count": len(gone)})
        if delivered == 0 and errors:
            raise RuntimeError("; ".join(errors)[:1000])
        return delivered


class SubscriptionBody(BaseModel):
    endpoint: str = Field(min_length=10, max_length=1024, pattern=r"^https?://")
    keys: dict[str, str]


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
  document.getElementById("state").textContent = answer.ok ? "Done: alerts will show here." : "Failed.";
}};
</script></body></html>
"""

_WORKER = """self.addEventListener("push", event => {
  const alert = event.data ? event.data.json() : {title: "StayHuman", body: ""};
  event.waitUntil(self.registration.showNotification(alert.title, {body: alert.body, data: alert}));
});
self.addEventListener("notificationclick", event => {
  event.notification.close();
  if (event.notification.data && event.notification.data.url) clients.openWindow(event.notification.data.url);
});
"""


def push_router(
    *, box: SecretBox, vapid: Vapid, sessions: Callable[[], async_sessionmaker[AsyncSession] | None]
) -> APIRouter:
    router = APIRouter()

    def person_of(token: str) -> str | None:
        text = box.read_token(token, max_age=LINK_MAX_AGE)
        return text.removeprefix("push:") if text and text.startswith("push:") else None

    @router.get("/push/vapid-public-key")
    async def public_key() -> dict[str, str]:
        return {"publicKey": application_server_key(vapid)}

    @router.get("/push/sw.js")
    async def worker() -> Response:
        return Response(_WORKER, media_type="text/javascript")

    @router.get("/push/{token}", response_class=HTMLResponse)
    async def page(token: str) -> HTMLResponse:
        person = person_of(token)
        if person is None:
            return HTMLResponse("<h1>This link is not valid</h1>", status_code=404)
        return HTMLResponse(_PAGE.format(name=html.escape(person), key=application_server_key(vapid)))

    @router.post("/push/{token}/subscriptions", status_code=201)
    async def register(token: str, request: Request) -> JSONResponse:
        person = person_of(token)
        if person is None:
            return JSONResponse({"error": "invalid_link", "detail": "this push link is not valid"}, 404)
        try:
            body = SubscriptionBody.model_validate_json(await request.body())
        except ValidationError as error:
            problems = [{"field": ".".join(map(str, e["loc"])), "problem": e["msg"]} for e in error.errors()]
            return JSONResponse({"error": "invalid_subscription", "problems": problems}, 422)
        if not body.keys.get("p256dh") or not body.keys.get("auth"):
            return JSONResponse(
                {
                    "error": "invalid_subscription",
                    "problems": [{"field": "keys", "problem": "needs p256dh and auth"}],
                },
                422,
            )
        factory = sessions()
        if factory is None:
            return JSONResponse({"error": "starting", "detail": "notify is starting"}, 503)
        async with transaction(factory) as session:
            known = await fetch_rows(session, select(PEOPLE.c.id).where(PEOPLE.c.id == person))
            if not known:
                return JSONResponse({"error": "unknown_person", "detail": f"no person {person!r}"}, 404)
            statement = dialect_insert(session, PUSH_SUBSCRIPTIONS).values(
                id=uuid.uuid4().hex,
                person_id=person,
                endpoint=body.endpoint,
                p256dh=body.keys["p256dh"],
                auth=body.keys["auth"],
                created_at=utcnow(),
            )
            statement = statement.on_conflict_do_update(
                index_elements=["endpoint"],
                set_={"person_id": person, "p256dh": body.keys["p256dh"], "auth": body.keys["auth"]},
            )
            await execute(session, statement)
        log.info("push subscription registered", extra={"person": person})
        return JSONResponse({"registered": True, "person": person}, 201)

    return router
