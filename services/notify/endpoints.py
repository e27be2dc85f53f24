"""Which Web Push endpoints notify may reach: https on public addresses only.

A push subscription names a URL that notify will POST to, and anyone with a push link
chooses it. Without a rule that is a blind SSRF: notify would post to its own loopback,
the cluster's services or the cloud's metadata address. So an endpoint must be https, and
its host must resolve only to public addresses (IPv4 and IPv6: never private, loopback,
link-local, multicast, reserved, shared or unspecified, nor an IPv6 form that embeds
such an IPv4 address). The rule holds at registration and again at every send, on the
addresses the connection then uses, so a DNS change after registration gains nothing.

Hosts the operator lists in STAYHUMAN_PUSH_TRUSTED_HOSTS (a private push relay) are
exempt from the address rule, not from https.
"""

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Collection
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult

MAX_ENDPOINT_LENGTH = 1024  # what the database column holds; real endpoints are a few hundred
RESOLVE_TIMEOUT = 5.0

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolve = Callable[[str, int], Awaitable[list[str]]]  # host, port -> addresses

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")


class EndpointRefused(ValueError):
    """The endpoint may not be used; the message says why, for the person registering it."""


def is_public(address: IpAddress) -> bool:
    """True only for an address reachable on the public internet."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = [address.ipv4_mapped, address.sixtofour]
        if address.teredo is not None:
            embedded += list(address.teredo)
        if address in _NAT64:
            embedded.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
        if address in _NAT64_LOCAL:
            return False
        if any(inner is not None and not is_public(inner) for inner in embedded):
            return False
        if address.is_site_local:
            return False
    return address.is_global and not (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


def split_endpoint(url: str) -> tuple[str, int]:
    """The host and port of an endpoint whose form is acceptable, or EndpointRefused."""
    if len(url) > MAX_ENDPOINT_LENGTH:
        raise EndpointRefused(f"longer than {MAX_ENDPOINT_LENGTH} characters")
    if not url.isascii() or not url.isprintable() or any(c.isspace() for c in url):
        raise EndpointRefused("must be a URL of printable ASCII characters without spaces")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise EndpointRefused(f"not a valid URL ({error})") from None
    if parts.scheme.lower() != "https":
        raise EndpointRefused("must be an https:// URL")
    if parts.username is not None or parts.password is not None:
        raise EndpointRefused("must not carry a user name or password")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise EndpointRefused("has no host")
    return host, port or 443


async def system_resolve(host: str, port: int) -> list[str]:
    """The addresses the system resolver gives for `host` (an address gives itself)."""
    loop = asyncio.get_running_loop()
    infos = await asyncio.wait_for(
        loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), timeout=RESOLVE_TIMEOUT
    )
    return [str(info[4][0]) for info in infos]


async def allowed_addresses(host: str, port: int, *, resolve: Resolve, trusted: Collection[str]) -> list[str]:
    """The addresses of `host` notify may connect to, or EndpointRefused.

    Every address the name resolves to must be public: a name with one private address
    among public ones is refused, since any of them may be the one connected to."""
    try:
        addresses = await resolve(host, port)
    except (OSError, TimeoutError, UnicodeError, ValueError):
        raise EndpointRefused(f"its host {host!r} does not resolve") from None
    if not addresses:
        raise EndpointRefused(f"its host {host!r} does not resolve")
    if host.lower() in trusted:
        return addresses
    for text in addresses:
        try:
            address = ipaddress.ip_address(text.partition("%")[0])
        except ValueError:
            raise EndpointRefused(f"its host {host!r} resolves to something that is not an address") from None
        if not is_public(address):
            raise EndpointRefused(
                f"its host {host!r} resolves to a non-public address; only public push services are "
                "reached (an operator may trust a private relay with STAYHUMAN_PUSH_TRUSTED_HOSTS)"
            )
    return addresses


async def check_endpoint(url: str, *, resolve: Resolve, trusted: Collection[str]) -> list[str]:
    """The addresses a push to `url` may use, or EndpointRefused naming the problem."""
    host, port = split_endpoint(url)
    return await allowed_addresses(host, port, resolve=resolve, trusted=trusted)


class GuardedResolver(AbstractResolver):
    """aiohttp's resolver for pushes: the connection goes to the addresses that were checked,
    so nothing between the check and the connection can point it elsewhere."""

    def __init__(self, resolve: Resolve, trusted: Collection[str]) -> None:
        self._resolve = resolve
        self._trusted = trusted

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        addresses = await allowed_addresses(host, port, resolve=self._resolve, trusted=self._trusted)
        results: list[ResolveResult] = []
        for text in addresses:
            address = ipaddress.ip_address(text.partition("%")[0])
            results.append(
                {
                    "hostname": host,
                    "host": str(address),
                    "port": port,
                    "family": socket.AF_INET6 if address.version == 6 else socket.AF_INET,
                    "proto": 0,
                    "flags": socket.AI_NUMERICHOST,
                }
            )
        return results

    async def close(self) -> None:
        return None
