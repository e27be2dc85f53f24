"""Generic and batch accounts: the reply goes to the operator's own endpoint, signed.

`POST <url>` with a JSON body and `X-StayHuman-Signature: sha256=<hex HMAC-SHA256(secret,
timestamp + "." + body)>`, `X-StayHuman-Timestamp` and `X-StayHuman-Delivery: <key>`. The
receiver dedupes on the delivery id, so posting again is always safe (`find` cannot read a
webhook back and says so).

The URL comes from configuration, so it must not become a way into the network StayHuman runs
in: its host is resolved here, every address it resolves to must be public (not private,
loopback, link-local, reserved or multicast, nor an IPv6 form of one) unless the operator
allows private addresses, and the request goes to the very address that was checked (the name
stays in `Host` and in TLS), so a name cannot resolve to something else in between. Redirects
are not followed and proxies from the environment are not used.
"""

import asyncio
import hashlib
import hmac
import ipaddress
import json
import socket
import time
from datetime import UTC, datetime
from typing import Any

import httpx

from services.outbound.platforms.base import (
    TIMEOUT,
    Credentials,
    CredentialsFailed,
    Lost,
    Outgoing,
    Posted,
    Refused,
    Unreadable,
)
from services.outbound.platforms.wire import body_of, mapping, retry_after, send, words
from shared.events import Platform

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
MAX_ID = 512


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """The `X-StayHuman-Signature` value: `sha256=` and the hex HMAC of `timestamp.body`."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def public(address: Address) -> bool:
    """An address anyone on the internet could reach: not private, loopback, link-local,
    reserved, shared or multicast, including an IPv4 one carried inside an IPv6 address."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return public(address.ipv4_mapped)
        if address.sixtofour is not None:
            return public(address.sixtofour)
        if address.teredo is not None:
            return public(address.teredo[1])
        if address in _NAT64:
            return public(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return address.is_global and not address.is_multicast


def delivery(outgoing: Outgoing, sent_at: datetime) -> dict[str, Any]:
    """The JSON body the operator's endpoint receives."""
    target = outgoing.target
    return {
        "reply_id": outgoing.reply_id,
        # Outgoing does not carry these yet; the receiver gets null until it does.
        "conversation_id": outgoing.conversation_id or None,
        "account_id": outgoing.account_id or None,
        "thread_id": target.thread_id,
        "in_reply_to": target.external_id,
        "text": outgoing.text,
        "person": {"id": outgoing.person_id, "name": outgoing.person_name},
        "sent_at": sent_at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    }


class WebhookClient:
    platform = Platform.other
    idempotent = True

    def __init__(self, *, allow_private: bool = False, timeout: httpx.Timeout = TIMEOUT) -> None:
        self.allow_private = allow_private
        self.timeout = timeout

    async def _addresses(self, url: httpx.URL) -> list[Address]:
        """The addresses to send to: the URL's host resolved, every address it has checked."""
        if url.scheme not in ("http", "https"):
            raise Refused(f"the webhook URL must be https, not {url.scheme or 'relative'}")
        if url.scheme == "http" and not self.allow_private:
            raise Refused("the webhook URL must be https (http only reaches the operator's own network)")
        if not url.host:
            raise Refused("the webhook URL has no host")
        try:
            addresses: list[Address] = [ipaddress.ip_address(url.host)]
        except ValueError:
            port = url.port or (443 if url.scheme == "https" else 80)
            try:
                found = await asyncio.get_running_loop().getaddrinfo(
                    url.raw_host.decode("ascii"), port, type=socket.SOCK_STREAM
                )
            except (socket.gaierror, UnicodeError) as error:
                raise Refused(
                    f"the webhook's host {url.host} could not be resolved: {error}", retry=True
                ) from None
            addresses = [ipaddress.ip_address(str(entry[4][0]).split("%", 1)[0]) for entry in found]
        if not addresses:
            raise Refused(f"the webhook's host {url.host} has no address", retry=True)
        if not self.allow_private:
            for address in addresses:
                if not public(address):
                    raise Refused(
                        f"the webhook's host {url.host} is at {address}, a private or local address; "
                        "StayHuman only calls public addresses unless the operator allows private ones"
                    )
        return list(dict.fromkeys(addresses))

    async def post(self, outgoing: Outgoing, credentials: Credentials) -> Posted:
        try:
            url = httpx.URL(credentials.get("url"))
        except httpx.InvalidURL as error:
            raise Refused(f"the webhook URL is not a URL: {error}") from None
        secret = credentials.get("secret")
        addresses = await self._addresses(url)
        body = json.dumps(delivery(outgoing, datetime.now(UTC)), separators=(",", ":")).encode()
        timestamp = str(int(time.time()))
        headers = {
            "host": url.netloc.decode("ascii"),
            "content-type": "application/json",
            "user-agent": "StayHuman",
            "x-stayhuman-signature": signature(secret, timestamp, body),
            "x-stayhuman-timestamp": timestamp,
            "x-stayhuman-delivery": outgoing.key,
        }
        async with httpx.AsyncClient(timeout=self.timeout, follow_redirects=False, trust_env=False) as http:

            async def to(address: Address) -> httpx.Response:
                request = http.build_request(
                    "POST",
                    url.copy_with(host=str(address)),
                    content=body,
                    headers=headers,
                    extensions={"sni_hostname": url.raw_host.decode("ascii")}
                    if url.scheme == "https"
                    else {},
                )
                return await send(http, request, platform="The webhook")

            for address in addresses[:-1]:
                try:
                    return self._answer(await to(address), outgoing)
                except Refused as refused:
                    if refused.retry and refused.status is None:
                        continue  # no connection to this address, nothing sent: the next may answer
                    raise
            return self._answer(await to(addresses[-1]), outgoing)

    @staticmethod
    def _answer(response: httpx.Response, outgoing: Outgoing) -> Posted:
        status = response.status_code
        if response.is_success:
            given = mapping(body_of(response)).get("id")
            if isinstance(given, str | int) and not isinstance(given, bool) and 0 < len(str(given)) <= MAX_ID:
                return Posted(platform_id=str(given))
            return Posted(platform_id=f"webhook:{outgoing.key}")
        if status >= 500:
            raise Lost(f"the webhook answered {status}: the receiver may have taken it")
        if status in (408, 429):
            raise Refused(
                f"the webhook answered {status}", retry=True, retry_after=retry_after(response), status=status
            )
        if response.is_redirect:
            raise Refused(f"the webhook answered {status} (a redirect, not followed)", status=status)
        raise Refused(f"the webhook answered {status}: {words(response, 'error', 'message')}", status=status)

    async def find(self, outgoing: Outgoing, credentials: Credentials, since: datetime) -> Posted | None:
        raise Unreadable(
            "a webhook cannot be read back; posting again is safe: the receiver dedupes on X-StayHuman-Delivery"
        )

    async def refresh(self, credentials: Credentials) -> Credentials:
        raise CredentialsFailed("the webhook's URL and secret do not expire: the endpoint refused them")
