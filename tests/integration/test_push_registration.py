"""Web Push registration against each database, through notify's HTTP routes in process: only
https endpoints on public addresses, a subscription bound to its person, every field bounded,
every refusal a 4xx JSON body; push links that last 30 days and can be revoked."""

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from py_vapid import Vapid
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from services.notify.push import (
    LINK_MAX_AGE,
    MAX_DEVICES,
    SqlPushStore,
    link_generations,
    push_link,
    push_router,
    revoke_push_links,
)
from shared.db.core import PEOPLE, PUSH_SUBSCRIPTIONS, fetch_rows
from shared.db.session import create_engine, session_factory, transaction
from shared.runtime import install_error_handlers
from shared.secrets import LinkSigner, SecretBox, new_key
from stayhuman.config import apply_config, parse_config
from tests.helpers import config_yaml
from tests.push import Device, b64

# What the test's resolver answers: the names a push endpoint may use, and where they point.
DNS = {
    "push.example": ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"],
    "internal.example": ["10.0.0.5"],
    "mixed.example": ["93.184.216.34", "192.168.1.10"],
    "metadata.example": ["169.254.169.254"],
    "relay.internal": ["10.1.2.3"],
}


async def resolve(host: str, port: int) -> list[str]:
    """The test's DNS; addresses in any form the system reads (127.1, 2130706433, ::1) as it does."""
    await asyncio.sleep(0)
    if host in DNS:
        return DNS[host]
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
    except socket.gaierror:
        raise OSError(f"no such host {host}") from None
    return [str(info[4][0]) for info in infos]


@dataclass
class Notify:
    client: httpx.AsyncClient
    signer: LinkSigner
    sessions: async_sessionmaker[AsyncSession]

    async def link(self, person: str) -> str:
        async with self.sessions() as session:
            generation = (await link_generations(session=session, people=[person]))[person]
        return push_link(self.signer, "http://notify", person, generation).removeprefix("http://notify")

    async def register(self, link: str, body: Any = None, *, content: bytes | None = None) -> httpx.Response:
        if content is not None:
            return await self.client.post(f"{link}/subscriptions", content=content)
        return await self.client.post(f"{link}/subscriptions", json=body)

    async def subscriptions(self) -> dict[str, Any]:
        async with self.sessions() as session:
            return {row.endpoint: row for row in await fetch_rows(session, select(PUSH_SUBSCRIPTIONS))}


@pytest.fixture
async def notify(database_url: str) -> AsyncIterator[Notify]:
    engine = create_engine(database_url)
    sessions = session_factory(engine)
    yaml = config_yaml(tenant="acme", account="acme-fb", secret="s" * 20, people=["maria", "li", "olga"])
    await apply_config(
        sessions, parse_config(yaml, source="t.yaml"), source="t.yaml", box=SecretBox(new_key())
    )
    async with transaction(sessions) as session:
        connection = await session.connection()
        await connection.execute(update(PEOPLE).where(PEOPLE.c.id == "olga").values(active=False))
    signer = LinkSigner(new_key())
    vapid = Vapid()
    vapid.generate_keys()
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(
        push_router(
            signer=signer,
            vapid=vapid,
            store=SqlPushStore(lambda: sessions),
            resolve=resolve,
            trusted=frozenset({"relay.internal"}),
        )
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://notify") as client:
        yield Notify(client, signer, sessions)
    await engine.dispose()


def refused(response: httpx.Response, status: int, error: str, field: str | None = None) -> str:
    """The refusal is `status` with a JSON body naming the problem; returns the problem's text."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == error, body
    if field is None:
        return str(body.get("detail") or body)
    problems = {p["field"]: p["problem"] for p in body["problems"]}
    assert field in problems, body
    return problems[field]


@pytest.mark.parametrize(
    ("endpoint", "says"),
    [
        ("http://push.example/send/1", "https"),
        ("ftp://push.example/send/1", "https"),
        ("https://user:pw@push.example/send/1", "user name"),
        ("https:///send/1", "no host"),
        ("https://push.example/send/ 1", "spaces"),
        ("https://127.0.0.1/send", "non-public"),
        ("https://127.1/send", "non-public"),
        ("https://2130706433/send", "non-public"),
        ("https://[::1]/send", "non-public"),
        ("https://[::ffff:127.0.0.1]/send", "non-public"),
        ("https://[fe80::1]/send", "non-public"),
        ("https://[fc00::1]/send", "non-public"),
        ("https://[64:ff9b::a00:1]/send", "non-public"),  # NAT64 of 10.0.0.1
        ("https://[2002:a00:1::]/send", "non-public"),  # 6to4 of 10.0.0.1
        ("https://0.0.0.0/send", "non-public"),
        ("https://224.0.0.251/send", "non-public"),
        ("https://100.64.0.1/send", "non-public"),
        ("https://240.0.0.1/send", "non-public"),
        ("https://169.254.169.254/latest/meta-data", "non-public"),
        ("https://metadata.example/", "non-public"),
        ("https://internal.example/send", "non-public"),
        ("https://mixed.example/send", "non-public"),  # one private address among public ones
        ("https://nowhere.example/send", "does not resolve"),
        ("https://push.example:99999/send", "not a valid URL"),
        ("https://push.example/" + "a" * 1100, "longer than 1024"),
    ],
)
async def test_only_https_endpoints_of_public_hosts_are_accepted(
    notify: Notify, endpoint: str, says: str
) -> None:
    link = await notify.link("maria")
    problem = refused(
        await notify.register(link, Device().subscription(endpoint)), 422, "invalid_subscription", "endpoint"
    )
    assert says in problem
    assert await notify.subscriptions() == {}


async def test_a_public_endpoint_and_a_trusted_relay_are_registered(notify: Notify) -> None:
    link = await notify.link("maria")
    for endpoint in ("https://push.example/send/1", "https://relay.internal:8443/push/1"):
        answer = await notify.register(link, Device().subscription(endpoint))
        assert answer.status_code == 201 and answer.json() == {"registered": True, "person": "maria"}
    # trusted means exempt from the address rule, not from https
    refused(
        await notify.register(link, Device().subscription("http://relay.internal/push/2")),
        422, "invalid_subscription", "endpoint",
    )  # fmt: skip
    assert set(await notify.subscriptions()) == {
        "https://push.example/send/1",
        "https://relay.internal:8443/push/1",
    }


async def test_someone_elses_endpoint_is_refused_never_moved(notify: Notify) -> None:
    endpoint = "https://push.example/send/maria-phone"
    mine, theirs = Device(), Device()
    assert (await notify.register(await notify.link("maria"), mine.subscription(endpoint))).status_code == 201
    taken = await notify.register(await notify.link("li"), theirs.subscription(endpoint))
    assert "someone else" in refused(taken, 409, "endpoint_taken")
    row = (await notify.subscriptions())[endpoint]
    assert (row.person_id, row.p256dh, row.auth) == ("maria", mine.keys["p256dh"], mine.keys["auth"])
    # the owner may renew the keys of their own subscription
    renewed = Device()
    again = await notify.register(await notify.link("maria"), renewed.subscription(endpoint))
    assert again.status_code == 200
    assert (await notify.subscriptions())[endpoint].p256dh == renewed.keys["p256dh"]


async def test_every_field_is_bounded_and_checked(notify: Notify) -> None:
    link = await notify.link("maria")
    good = Device().subscription("https://push.example/send/1")
    point = bytes.fromhex("04") + bytes(64)  # 65 bytes, not a point of the curve
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({**good, "keys": {**good["keys"], "p256dh": "A" * 60_000}}, "keys.p256dh", "65 bytes"),
        ({**good, "keys": {**good["keys"], "p256dh": b64(bytes(33))}}, "keys.p256dh", "65 bytes"),
        ({**good, "keys": {**good["keys"], "p256dh": b64(point)}}, "keys.p256dh", "P-256"),
        ({**good, "keys": {**good["keys"], "p256dh": "not base64!"}}, "keys.p256dh", "65 bytes"),
        ({**good, "keys": {**good["keys"], "auth": b64(bytes(15))}}, "keys.auth", "16 bytes"),
        ({**good, "keys": {**good["keys"], "auth": b64(bytes(17))}}, "keys.auth", "16 bytes"),
        ({**good, "keys": {"p256dh": good["keys"]["p256dh"]}}, "keys.auth", "required"),
        ({**good, "keys": "nope"}, "keys", "required"),
        ({"keys": good["keys"]}, "endpoint", "required"),
        ({**good, "endpoint": 12}, "endpoint", "required"),
    ]
    for body, field, says in cases:
        answer = await notify.register(link, body)
        if answer.status_code == 413:  # the 60,000-character key makes the body too large
            assert field == "keys.p256dh"
            continue
        assert says in refused(answer, 422, "invalid_subscription", field), body
    assert "JSON" in refused(await notify.register(link, content=b"{not json"), 400, "invalid_json", "body")
    assert "UTF-8" in refused(
        await notify.register(link, content=b'{"a": "\xff"}'), 400, "invalid_json", "body"
    )
    assert "object" in refused(await notify.register(link, [good]), 422, "invalid_subscription", "body")
    assert "object" in refused(await notify.register(link, "x" * 10), 422, "invalid_subscription", "body")
    assert await notify.subscriptions() == {}


async def test_a_huge_body_is_refused_without_reading_it(notify: Notify) -> None:
    link = await notify.link("maria")
    good = Device().subscription("https://push.example/send/1")
    huge = {**good, "keys": {**good["keys"], "p256dh": "A" * 60_000_000}}  # the review's 60 MB key
    content = httpx.Request("POST", "http://x", json=huge).content
    started = time.monotonic()
    answer = await notify.register(link, content=content)
    assert "4096 bytes" in refused(answer, 413, "body_too_large")
    assert time.monotonic() - started < 5

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it comes
        for _ in range(10_000):
            yield b"A" * 6_000

    streamed = await notify.client.post(f"{link}/subscriptions", content=chunks())
    refused(streamed, 413, "body_too_large")
    assert await notify.subscriptions() == {}


async def test_links_are_refused_when_forged_too_old_for_someone_else_or_inactive(notify: Notify) -> None:
    body = Device().subscription("https://push.example/send/1")
    other = LinkSigner(new_key())
    forged = push_link(other, "http://n", "maria", 0).removeprefix("http://n")
    old = "/push/" + notify.signer.issue("push", "0:maria", at=int(time.time()) - LINK_MAX_AGE - 60)
    ack = "/push/" + notify.signer.issue("ack", "0:maria")  # signed, but not a push link
    for link in (forged, old, ack, "/push/nonsense", "/push/" + "A" * 5000):
        refused(await notify.register(link, body), 404, "invalid_link")
        assert (await notify.client.get(link)).status_code == 404
    fresh = "/push/" + notify.signer.issue("push", "0:maria", at=int(time.time()) - LINK_MAX_AGE + 3600)
    assert (await notify.register(fresh, body)).status_code == 201  # 29 days and 23 hours old
    inactive = await notify.link("olga")
    refused(
        await notify.register(inactive, Device().subscription("https://push.example/2")),
        404,
        "unknown_person",
    )


async def test_revoking_ends_every_link_issued_so_far_and_removes_their_devices(notify: Notify) -> None:
    first, second = await notify.link("maria"), await notify.link("maria")
    li = await notify.link("li")
    for n, link in enumerate((first, second)):
        body = Device().subscription(f"https://push.example/send/maria-{n}")
        assert (await notify.register(link, body)).status_code == 201
    assert (
        await notify.register(li, Device().subscription("https://push.example/send/li"))
    ).status_code == 201

    async with transaction(notify.sessions) as session:
        removed = await revoke_push_links(session=session, person_id="maria")
    assert removed == 2
    assert set(await notify.subscriptions()) == {"https://push.example/send/li"}  # li keeps hers
    for link in (first, second):
        assert (await notify.client.get(link)).status_code == 404
        refused(
            await notify.register(link, Device().subscription("https://push.example/x")), 410, "link_revoked"
        )
    new = await notify.link("maria")
    assert (await notify.client.get(new)).status_code == 200
    assert (
        await notify.register(new, Device().subscription("https://push.example/send/m"))
    ).status_code == 201
    assert (
        await notify.register(li, Device().subscription("https://push.example/send/li2"))
    ).status_code == 201


async def test_a_person_has_a_bounded_number_of_devices(notify: Notify) -> None:
    link = await notify.link("maria")
    for n in range(MAX_DEVICES):
        assert (
            await notify.register(link, Device().subscription(f"https://push.example/{n}"))
        ).status_code == 201
    full = await notify.register(link, Device().subscription("https://push.example/one-more"))
    assert "stayhuman push revoke" in refused(full, 409, "too_many_devices")
