"""Web Push at send time, against a real HTTPS push service: the connection goes to the address
that was checked, so a host whose DNS changes after registration, an address written in the
URL, or a redirect cannot make notify post to a private address; a trusted relay is reached
and the device reads what it was sent; a forgotten subscription is removed."""

import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from py_vapid import Vapid
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from services.notify.endpoints import check_endpoint
from services.notify.push import PushSender, Subscription, application_server_key
from shared.db.core import PUSH_SUBSCRIPTIONS, fetch_rows
from shared.db.session import create_engine, session_factory, transaction
from shared.events import utcnow
from shared.secrets import SecretBox, new_key
from stayhuman.config import apply_config, parse_config
from tests.helpers import config_yaml
from tests.push import Device, PushService

PAYLOAD = {"title": "Overdue", "body": "Dana: where is my parcel?", "url": "", "step": "breach"}


class Dns:
    """The test's resolver: what each name points at now (the operator's DNS may change)."""

    def __init__(self) -> None:
        self.names: dict[str, list[str]] = {}
        self.asked: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append(host)
        if host in self.names:
            return self.names[host]
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
        return [str(info[4][0]) for info in infos]


@pytest.fixture
def service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PushService]:
    running = PushService(tmp_path / "push", {"/gone": 410, "/moved": 307}, host="push.test")
    monkeypatch.setenv("SSL_CERT_FILE", str(running.ca_file))  # notify trusts the service's CA
    yield running
    running.stop()


@pytest.fixture
async def sessions(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(database_url)
    factory = session_factory(engine)
    yaml = config_yaml(tenant="acme", account="acme-fb", secret="s" * 20, people=["maria"])
    await apply_config(
        factory, parse_config(yaml, source="t.yaml"), source="t.yaml", box=SecretBox(new_key())
    )
    yield factory
    await engine.dispose()


async def subscribe(
    sessions: async_sessionmaker[AsyncSession], device: Device, endpoint: str
) -> Subscription:
    row = {"id": endpoint[-32:].rjust(32, "0"), "person_id": "maria", "endpoint": endpoint, **device.keys}
    async with transaction(sessions) as session:
        connection = await session.connection()
        await connection.execute(insert(PUSH_SUBSCRIPTIONS).values(**row, created_at=utcnow()))
    return Subscription(row["id"], "maria", endpoint, row["p256dh"], row["auth"])


def sender(sessions: async_sessionmaker[AsyncSession], dns: Dns, trusted: set[str]) -> PushSender:
    vapid = Vapid()
    vapid.generate_keys()
    return PushSender(
        vapid=vapid, contact="mailto:ops@example.com", sessions=sessions, timeout=5,
        trusted=frozenset(trusted), resolve=dns,
    )  # fmt: skip


async def test_a_trusted_relay_is_reached_and_the_device_reads_the_push(
    service: PushService, sessions: async_sessionmaker[AsyncSession]
) -> None:
    dns, device = Dns(), Device()
    dns.names["push.test"] = ["127.0.0.1"]
    push = sender(sessions, dns, {"push.test"})
    subscription = await subscribe(sessions, device, service.url("/send/maria"))
    assert await push.send([subscription], PAYLOAD) == 1
    path, headers, body = service.posts[0]
    assert path == "/send/maria" and headers["content-encoding"] == "aes128gcm" and headers["ttl"] == "3600"
    assert headers["authorization"].startswith("vapid t=")
    assert f"k={application_server_key(push.vapid)}" in headers["authorization"]
    assert device.read(body) == PAYLOAD


async def test_a_dns_change_after_registration_gains_nothing(
    service: PushService, sessions: async_sessionmaker[AsyncSession]
) -> None:
    dns = Dns()
    endpoint = service.url("/send/maria")
    dns.names["push.test"] = ["93.184.216.34"]  # public when the browser registered it
    assert await check_endpoint(endpoint, resolve=dns, trusted=frozenset()) == ["93.184.216.34"]
    subscription = await subscribe(sessions, Device(), endpoint)
    dns.names["push.test"] = ["127.0.0.1"]  # then pointed at notify's own machine
    with pytest.raises(RuntimeError, match="non-public"):
        await sender(sessions, dns, set()).send([subscription], PAYLOAD)
    dns.names["push.test"] = ["93.184.216.34", "10.0.0.7"]  # or at a private address among public ones
    with pytest.raises(RuntimeError, match="non-public"):
        await sender(sessions, dns, set()).send([subscription], PAYLOAD)
    assert service.posts == []  # nothing reached the private address


async def test_an_address_in_the_url_is_checked_as_a_name_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sessions: async_sessionmaker[AsyncSession]
) -> None:
    local = PushService(tmp_path / "local")  # a certificate for 127.0.0.1 itself
    monkeypatch.setenv("SSL_CERT_FILE", str(local.ca_file))
    try:
        subscription = await subscribe(sessions, Device(), local.url("/send/maria"))
        with pytest.raises(RuntimeError, match="non-public"):
            await sender(sessions, Dns(), set()).send([subscription], PAYLOAD)
        assert local.posts == []
        assert await sender(sessions, Dns(), {"127.0.0.1"}).send([subscription], PAYLOAD) == 1
    finally:
        local.stop()


async def test_a_redirect_is_not_followed(
    service: PushService, sessions: async_sessionmaker[AsyncSession]
) -> None:
    dns = Dns()
    dns.names["push.test"] = ["127.0.0.1"]
    subscription = await subscribe(sessions, Device(), service.url("/moved"))
    with pytest.raises(RuntimeError, match="307"):
        await sender(sessions, dns, {"push.test"}).send([subscription], PAYLOAD)
    assert [path for path, _, _ in service.posts] == ["/moved"]  # never "/redirected"


async def test_a_forgotten_subscription_is_removed(
    service: PushService, sessions: async_sessionmaker[AsyncSession]
) -> None:
    dns = Dns()
    dns.names["push.test"] = ["127.0.0.1"]
    live = await subscribe(sessions, Device(), service.url("/send/live"))
    gone = await subscribe(sessions, Device(), service.url("/gone"))
    assert await sender(sessions, dns, {"push.test"}).send([live, gone], PAYLOAD) == 1
    async with sessions() as session:
        left = [row.endpoint for row in await fetch_rows(session, select(PUSH_SUBSCRIPTIONS))]
    assert left == [service.url("/send/live")]


async def test_the_connection_uses_the_addresses_that_were_checked(
    service: PushService, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """DNS rebinding: the name answers a public address to the check and a private one to the
    connection right after. The connection's own resolution is the one checked: refused."""

    class Rebinding(Dns):
        async def __call__(self, host: str, port: int) -> list[str]:
            self.asked.append(host)
            return ["93.184.216.34"] if len(self.asked) == 1 else ["127.0.0.1"]

    dns = Rebinding()
    subscription = await subscribe(sessions, Device(), service.url("/send/maria"))
    with pytest.raises(RuntimeError, match="non-public"):
        await sender(sessions, dns, set()).send([subscription], PAYLOAD)
    assert dns.asked == ["push.test", "push.test"] and service.posts == []
