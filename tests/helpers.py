"""Small helpers shared by the tests: unique ids, signing, polling, test configurations."""

import asyncio
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

T = TypeVar("T")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def generic_body(
    external_id: str,
    *,
    thread_id: str = "thread-1",
    direction: str = "inbound",
    created_at: datetime | None = None,
    text: str = "Is the oat latte back on the menu?",
    **extra: Any,
) -> bytes:
    document = {
        "external_id": external_id,
        "kind": "comment",
        "direction": direction,
        "thread_id": thread_id,
        "author": {"id": "author-1", "name": "Dana Reyes", "handle": "@dana"},
        "text": text,
        "created_at": (created_at or datetime.now(UTC)).isoformat(),
        **extra,
    }
    return json.dumps(document).encode()


def config_yaml(
    *,
    tenant: str,
    account: str,
    secret: str,
    people: list[str],
    first_response: str = "30m",
    team: str = "care",
    platform_accounts: tuple[tuple[str, str, str], ...] = (),
    api_token: str | None = None,
    capacity: int = 100_000,
) -> str:
    """A one-tenant configuration; `platform_accounts` adds (id, platform, platform id) accounts.

    People get room for every conversation a test sends, unless `capacity` says otherwise."""
    lines = ["people:"]
    for person in people:
        lines += [
            f"  - id: {person}",
            f"    name: Person {person}",
            f"    email: {person}@example.com",
            f"    capacity: {capacity}",
        ]
    lines += [
        "tenants:",
        f"  - id: {tenant}",
        f"    name: Tenant {tenant}",
        "    sla_policies:",
        "      - name: standard",
        f"        first_response: {first_response}",
        "    teams:",
        f"      - id: {team}",
        "        name: Care",
        "        sla_policy: standard",
        f"        members: [{', '.join(people)}]",
        "    accounts:",
        f"      - id: {account}",
        "        platform: facebook",
        "        handle: Brand",
        f"        team: {team}",
        f"        webhook_secret: {secret}",
    ]
    if api_token:
        at = lines.index("    accounts:")
        lines[at:at] = ["    api_tokens:", "      - name: importer", f"        token: {api_token}"]
    for account_id, platform, external_id in platform_accounts:
        lines += [
            f"      - id: {account_id}",
            f"        platform: {platform}",
            "        handle: Brand",
            f"        team: {team}",
            f"        webhook_secret: {secret}",
            f'        external_id: "{external_id}"',
        ]
    return "\n".join(lines) + "\n"


async def eventually(
    probe: Callable[[], Awaitable[T]], *, timeout: float = 10.0, interval: float = 0.05, what: str = ""
) -> T:
    """Poll until `probe` returns something truthy; fail with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or probe}; last: {last!r}")


def installation_keys() -> dict[str, str]:
    """New keys for an installation, as an operator sets them once for every process (services
    never make their own: `up` makes development keys, anything else is given these)."""
    from shared.secrets import new_key, new_vapid_pem

    return {"STAYHUMAN_SECRET_KEY": new_key(), "STAYHUMAN_VAPID_PRIVATE_KEY": new_vapid_pem()}


async def service_ready(port: int) -> bool:
    """True once the service whose readiness is on `port` answers /readyz with 200."""
    import httpx

    try:
        async with httpx.AsyncClient() as client:
            return (await client.get(f"http://127.0.0.1:{port}/readyz", timeout=2)).status_code == 200
    except httpx.HTTPError:
        return False


async def stored_on(nats_url: str, subject: str) -> list[Any]:
    """Every message a stream holds on `subject` (a wildcard is fine), read without consuming."""
    import nats
    from nats.errors import TimeoutError as NatsTimeout

    nc = await nats.connect(nats_url)
    found = []
    try:
        sub = await nc.jetstream().subscribe(subject, ordered_consumer=True)
        try:
            while True:
                found.append(await sub.next_msg(timeout=1))
        except NatsTimeout:
            pass
        await sub.unsubscribe()
    finally:
        await nc.close()
    return found
